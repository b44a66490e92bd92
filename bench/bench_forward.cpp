// jetmoe-bench-forward: prefill and decode throughput of the JetMoE forward pass on random weights.
//
// A benchmark, not a test: it prints a table and (with --json) writes its raw numbers; the peer
// measurement is scripts/bench/bench_hf.py, and scripts/bench/run_cpu_bench.sh runs both side by side.
//
//   jetmoe-bench-forward --preset small --batch 4 --prompt 128 --new 32 --repeats 5 --json out.json
//   jetmoe-bench-forward --preset small --seed 1234 --export DIR   # HF checkpoint of the same weights, then exit
//
// What is measured (wall time, median over --repeats after --warmup untimed rounds):
//   prefill   B x T prompt ids through Model::forward into a fresh KvCache (cache and logits allocation
//             included; logits for all B*T positions, as transformers' model(input_ids) computes them)
//   decode    after that prefill, --new single-token steps: Model::forward of [B, 1] from the cache,
//             logits to the host, arg-max (greedy); tokens/s = B * new / time
//   generate  jetmoe::generate() end to end (prefill + new-1 decode steps, greedy, EOS disabled)
// plus peak RSS (getrusage ru_maxrss), process CPU time and the CPU/wall ratio of each phase.
// --profile-kernels adds one instrumented prefill and decode round (after the timed ones) and prints
// where the time goes: each Kokkos kernel by label, and each BLAS GEMM by the layer it belongs to.
#include <Kokkos_Core.hpp>

#include <nlohmann/json.hpp>

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "core/build_info.hpp"
#include "core/error.hpp"
#include "core/profiling.hpp"
#include "infer/generate.hpp"
#include "jetmoe/build_config.hpp"
#include "model/config.hpp"
#include "model/hf_checkpoint.hpp"
#include "model/model.hpp"
#include "model/weights.hpp"
#include "parallel/comm.hpp"

namespace {

using namespace jetmoe;
using json = nlohmann::ordered_json;

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_utime.tv_sec) + 1e-6 * double(u.ru_utime.tv_usec) + double(u.ru_stime.tv_sec) +
         1e-6 * double(u.ru_stime.tv_usec);
}

double peak_rss_mib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) / 1024.0;  // Linux: KiB
}

// VmRSS / VmHWM from /proc/self/status, MiB (0 when unavailable).
double proc_status_mib(const char* key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  const std::size_t n = std::strlen(key);
  while (std::getline(in, line))
    if (line.compare(0, n, key) == 0 && line.size() > n && line[n] == ':') return std::atof(line.c_str() + n + 1) / 1024.0;
  return 0.0;
}

// The BLAS as it runs (jetmoe::host_blas), with OpenBLAS's build configuration.
std::string blas_report() {
  const jetmoe::HostBlas b = jetmoe::host_blas();
  return b.describe() + (b.config.empty() ? "" : " [" + b.config + "]");
}

std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

// The prompt ids: a counter-based hash of (seed, sequence, position), so that scripts/bench/bench_hf.py
// derives exactly the same ids (ids_for there is this function) without reading a file.
std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
std::int32_t prompt_id(std::uint64_t seed, std::int64_t b, std::int64_t t, std::int64_t vocab) {
  const std::uint64_t key = (seed << 32) ^ (std::uint64_t(b) << 20) ^ std::uint64_t(t);
  return std::int32_t(3 + splitmix64(key) % std::uint64_t(vocab - 3));  // 3..V-1: never BOS/EOS/PAD
}

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct Options {
  std::string preset = "small";
  std::int64_t layers = 0, hidden = 0, experts = 0, top_k = 0, ffn = 0, kv_heads = 0, head_dim = 0, vocab = 0;
  std::int64_t batch = 1, prompt = 128, new_tokens = 32, repeats = 5, warmup = 1, generate_repeats = 3;
  std::uint64_t seed = 1234;
  double init_std = 0.05;
  std::string export_dir, load_dir, json_path;
  bool profile_kernels = false, skip_generate = false;
};

[[noreturn]] void usage(int status) {
  std::fprintf(status ? stderr : stdout,
               "Usage: jetmoe-bench-forward [options]\n"
               "  --preset NAME        tiny | small (default; ~100M parameters) | jetmoe-8b\n"
               "  --layers N --hidden N --experts N --top-k N --ffn N --kv-heads N --head-dim N --vocab N\n"
               "                       override the preset's shape\n"
               "  --batch B            sequences per batch (default 1)\n"
               "  --prompt T           prompt length (default 128)\n"
               "  --new N              decode steps / generated tokens (default 32)\n"
               "  --repeats R          timed rounds; the median is reported (default 5)\n"
               "  --warmup W           untimed rounds first (default 1)\n"
               "  --generate-repeats G timed generate() calls (after W warm-up ones; default 3)\n"
               "  --seed S             weights (ModelWeights::init_random) and prompt ids (default 1234)\n"
"  --init-std X         std of the random matrices and embedding (default 0.05; the preset's\n"
               "                       0.01 makes greedy decoding repeat one token, a weak sanity check)\n"
               "  --export DIR         write the random weights as an HF checkpoint (fp32 config.json +\n"
               "                       model.safetensors) and bench_inputs.json, then exit (no benchmark)\n"
               "  --load DIR           take the weights from an HF checkpoint instead of init_random\n"
               "  --json FILE          write the raw results (every sample) as JSON\n"
               "  --profile-kernels    one extra instrumented round: time per Kokkos kernel and per GEMM\n"
               "  --no-generate        skip the jetmoe::generate() end-to-end measurement\n"
               "  --kokkos-*           passed to Kokkos\n"
               "Threads: OPENBLAS_NUM_THREADS (GEMMs) and the Kokkos backend's own setting.\n");
  std::exit(status);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a.rfind("--kokkos-", 0) == 0) continue;
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "jetmoe-bench-forward: %s needs a value\n", a.c_str());
        usage(2);
      }
      return argv[++i];
    };
    auto integer = [&]() -> std::int64_t {
      const std::string v = value();
      char* end = nullptr;
      const long long x = std::strtoll(v.c_str(), &end, 10);
      if (end == v.c_str() || *end || x < 0) {
        std::fprintf(stderr, "jetmoe-bench-forward: %s expects a non-negative integer, found '%s'\n", a.c_str(), v.c_str());
        usage(2);
      }
      return x;
    };
    if (a == "-h" || a == "--help") usage(0);
    else if (a == "--preset") o.preset = value();
    else if (a == "--layers") o.layers = integer();
    else if (a == "--hidden") o.hidden = integer();
    else if (a == "--experts") o.experts = integer();
    else if (a == "--top-k") o.top_k = integer();
    else if (a == "--ffn") o.ffn = integer();
    else if (a == "--kv-heads") o.kv_heads = integer();
    else if (a == "--head-dim") o.head_dim = integer();
    else if (a == "--vocab") o.vocab = integer();
    else if (a == "--batch") o.batch = integer();
    else if (a == "--prompt") o.prompt = integer();
    else if (a == "--new") o.new_tokens = integer();
    else if (a == "--repeats") o.repeats = integer();
    else if (a == "--warmup") o.warmup = integer();
    else if (a == "--generate-repeats") o.generate_repeats = integer();
    else if (a == "--seed") o.seed = std::uint64_t(integer());
    else if (a == "--init-std") {
      const std::string v = value();
      o.init_std = std::atof(v.c_str());
      if (!(o.init_std > 0)) {
        std::fprintf(stderr, "jetmoe-bench-forward: --init-std expects a positive number, found '%s'\n", v.c_str());
        usage(2);
      }
    }
    else if (a == "--export") o.export_dir = value();
    else if (a == "--load") o.load_dir = value();
    else if (a == "--json") o.json_path = value();
    else if (a == "--profile-kernels") o.profile_kernels = true;
    else if (a == "--no-generate") o.skip_generate = true;
    else {
      std::fprintf(stderr, "jetmoe-bench-forward: unknown option '%s'\n", a.c_str());
      usage(2);
    }
  }
  if (o.batch < 1 || o.prompt < 1 || o.repeats < 1) {
    std::fprintf(stderr, "jetmoe-bench-forward: --batch, --prompt and --repeats must be at least 1\n");
    usage(2);
  }
  return o;
}

ModelConfig make_config(const Options& o) {
  ModelConfig c = ModelConfig::preset(o.preset);
  if (o.layers) c.num_layers = o.layers;
  if (o.hidden) c.hidden_size = o.hidden;
  if (o.experts) c.num_experts = o.experts;
  if (o.top_k) c.top_k = o.top_k;
  if (o.ffn) c.ffn_hidden_size = o.ffn;
  if (o.kv_heads) c.num_kv_heads = o.kv_heads;
  if (o.head_dim) c.head_dim = o.head_dim;
  if (o.vocab) c.vocab_size = o.vocab;
  c.initializer_range = o.init_std;
  c.max_position_embeddings = std::max(c.max_position_embeddings, o.prompt + o.new_tokens);
  c.validate("benchmark shape");
  return c;
}

// ---- Kernel-level profile through the Kokkos Tools callbacks ----------------------------------------
// Kernels on the host backends are synchronous, so begin/end wall times are exact. GEMMs reach
// OpenBLAS inside the regions "KokkosBlas::gemm[...]" / "KokkosBlas::gemv[...]" that Kokkos Kernels pushes;
// each is named after the model step it belongs to (from the kernel that ran just before it, see gemm_label).
namespace kprof {

struct Entry {
  long calls = 0;
  double seconds = 0;
};
bool active = false;
std::map<std::string, Entry> entries;
std::vector<std::pair<std::string, double>> open_kernels;  // by kernel id
std::vector<std::pair<std::string, double>> region_stack;
std::string last_kernel;
int gathers_in_layer = 0;

std::string kernel_group(const std::string& name) {
  if (name.rfind("Kokkos::View::initialization", 0) == 0) return "view allocation (zero fill)";
  if (name.rfind("Kokkos::View::destruction", 0) == 0) return "view destruction";
  return name;
}

// The model step a BLAS call belongs to; `kind` is "gemm" or "gemv" (one-row linears).
std::string gemm_label(const std::string& kind) {
  for (auto it = region_stack.rbegin(); it != region_stack.rend(); ++it) {
    if (it->first == "router") return kind + " router";
    if (it->first == "lm_head") return kind + " lm_head";
    if (it->first == "layer") break;
  }
  if (last_kernel == "gather_rows") return kind + (gathers_in_layer <= 1 ? " MoA W_q (experts)" : " MoE W_in (experts)");
  if (last_kernel == "scatter_queries") return kind + " kv_proj";
  if (last_kernel == "gather_attention") return kind + " MoA W_o (experts)";
  if (last_kernel == "swiglu_forward") return kind + " MoE W_out (experts)";
  if (last_kernel == "attn_gather_q") return kind + " attention Q K^T";
  if (last_kernel == "attn_softmax") return kind + " attention P V";
  return kind + " after " + last_kernel;
}

void begin_kernel(const char* name, const std::uint32_t, std::uint64_t* id) {
  *id = open_kernels.size();
  open_kernels.emplace_back(name, now());
}
void end_kernel(std::uint64_t id) {
  const double t = now();
  if (id >= open_kernels.size()) return;
  const std::string name = open_kernels[id].first;
  bool inside_blas = false;  // a BLAS call's own kernels are part of its time, not listed twice
  for (const auto& r : region_stack) inside_blas = inside_blas || r.first.rfind("gemm", 0) == 0 || r.first.rfind("gemv", 0) == 0;
  if (active && !inside_blas) {
    Entry& e = entries[kernel_group(name)];
    e.calls += 1;
    e.seconds += t - open_kernels[id].second;
  }
  if (name.rfind("Kokkos::View::", 0) != 0 && name.rfind("KokkosBlas::", 0) != 0) last_kernel = name;
  if (name == "gather_rows") ++gathers_in_layer;
  if (id + 1 == open_kernels.size()) open_kernels.pop_back();
}
void push_region(const char* name) {
  if (std::strcmp(name, "layer") == 0) gathers_in_layer = 0;
  std::string label = name;
  // "KokkosBlas::gemm[TPL_BLAS,float]" reaches the BLAS library; "[ETI]" / "[noETI]" is Kokkos Kernels' own
  // (native) implementation, whose kernels then show up as "KokkosBlas::..." lines of their own.
  const bool tpl = label.find("TPL") != std::string::npos;
  if (label.rfind("KokkosBlas::gemm", 0) == 0) label = gemm_label(tpl ? "gemm" : "gemm(native KK)");
  else if (label.rfind("KokkosBlas::gemv", 0) == 0) label = gemm_label(tpl ? "gemv" : "gemv(native KK)");
  region_stack.emplace_back(label, now());
}
void pop_region() {
  if (region_stack.empty()) return;
  const auto [label, start] = region_stack.back();
  region_stack.pop_back();
  if (active && (label.rfind("gemm", 0) == 0 || label.rfind("gemv", 0) == 0)) {
    Entry& e = entries[label];
    e.calls += 1;
    e.seconds += now() - start;
  }
}
void init_cb(const int, const std::uint64_t, const std::uint32_t, Kokkos_Profiling_KokkosPDeviceInfo*) {}

void install() {
  namespace X = Kokkos::Tools::Experimental;
  X::set_init_callback(init_cb);
  X::set_begin_parallel_for_callback(begin_kernel);
  X::set_end_parallel_for_callback(end_kernel);
  X::set_begin_parallel_reduce_callback(begin_kernel);
  X::set_end_parallel_reduce_callback(end_kernel);
  X::set_begin_parallel_scan_callback(begin_kernel);
  X::set_end_parallel_scan_callback(end_kernel);
  X::set_push_region_callback(push_region);
  X::set_pop_region_callback(pop_region);
}

json report(const char* title, double wall, std::int64_t tokens) {
  std::vector<std::pair<std::string, Entry>> rows(entries.begin(), entries.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
  double covered = 0;
  for (const auto& r : rows) covered += r.second.seconds;
  std::printf("\n%s: %.1f ms wall for %" PRId64 " tokens; by kernel / GEMM\n", title, 1e3 * wall, tokens);
  std::printf("  %-34s %8s %10s %7s\n", "kernel or GEMM", "calls", "ms", "share");
  json out = json::array();
  for (const auto& [name, e] : rows) {
    std::printf("  %-34s %8ld %10.2f %6.1f%%\n", name.c_str(), e.calls, 1e3 * e.seconds, 100.0 * e.seconds / wall);
    out.push_back({{"name", name}, {"calls", e.calls}, {"seconds", e.seconds}});
  }
  std::printf("  %-34s %8s %10.2f %6.1f%%\n", "(host code between kernels)", "", 1e3 * (wall - covered),
              100.0 * (wall - covered) / wall);
  out.push_back({{"name", "(host code between kernels)"}, {"calls", 0}, {"seconds", wall - covered}});
  entries.clear();
  return out;
}

}  // namespace kprof

// ---- The measured work -----------------------------------------------------------------------------
struct Bench {
  Model& model;
  const ModelConfig& c;
  std::int64_t B, T, N;
  IntView2 ids;

  // Prefill into a fresh cache; returns the cache and the greedy next token of every sequence.
  std::vector<std::int32_t> prefill(KvCache& cache) {
    cache = KvCache(c, B, T + N);
    View2 logits(Kokkos::view_alloc("bench_prefill_logits", Kokkos::WithoutInitializing), B * T, c.vocab_size);
    model.forward(ids, cache, logits);
    return argmax_rows(logits, T);
  }

  // N single-token steps from `first`; returns the N+1 greedy tokens (first included) per sequence.
  std::vector<std::vector<std::int32_t>> decode(KvCache& cache, std::vector<std::int32_t> next) {
    std::vector<std::vector<std::int32_t>> tokens(static_cast<std::size_t>(B));
    for (std::int64_t b = 0; b < B; ++b) tokens[b].push_back(next[b]);
    IntView2 step_ids("bench_step_ids", B, 1);
    auto h_step = Kokkos::create_mirror_view(step_ids);
    View2 logits(Kokkos::view_alloc("bench_step_logits", Kokkos::WithoutInitializing), B, c.vocab_size);
    for (std::int64_t s = 0; s < N; ++s) {
      for (std::int64_t b = 0; b < B; ++b) h_step(b, 0) = next[b];
      Kokkos::deep_copy(step_ids, h_step);
      model.forward(step_ids, cache, logits);
      next = argmax_rows(logits, 1);
      for (std::int64_t b = 0; b < B; ++b) tokens[b].push_back(next[b]);
    }
    Kokkos::fence();
    return tokens;
  }

  // Arg-max (first index on ties, as torch.argmax) of the last row of each sequence.
  std::vector<std::int32_t> argmax_rows(const View2& logits, std::int64_t rows_per_seq) {
    auto host = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), logits);
    std::vector<std::int32_t> out(static_cast<std::size_t>(B));
    const std::int64_t V = c.vocab_size;
    for (std::int64_t b = 0; b < B; ++b) {
      const float* row = &host((b + 1) * rows_per_seq - 1, 0);
      out[b] = std::int32_t(std::max_element(row, row + V) - row);
    }
    return out;
  }
};

struct Samples {
  std::vector<double> wall, cpu;
  void add(double w, double c) {
    wall.push_back(w);
    cpu.push_back(c);
  }
  json to_json(double tokens) const {
    const double w = median(wall);
    return {{"tokens", tokens},        {"median_seconds", w},
            {"tokens_per_second", w > 0 ? tokens / w : 0.0},
            {"median_cpu_seconds", median(cpu)},
            {"cpu_per_wall", w > 0 ? median(cpu) / w : 0.0},
            {"seconds", wall},          {"cpu_seconds", cpu}};
  }
};

int run(const Options& o) {
  const ModelConfig c = make_config(o);
  const std::int64_t B = o.batch, T = o.prompt, N = o.new_tokens;

  if (!o.export_dir.empty()) {
    ModelWeights w(c);
    w.init_random(c, o.seed);
    save_hf_checkpoint(o.export_dir, c, w, "fp32");
    json inputs = {{"seed", o.seed},
                   {"generator", "prompt_id(seed,b,t) = 3 + splitmix64((seed<<32) ^ (b<<20) ^ t) % (V-3)"},
                   {"batch", B},
                   {"prompt", T},
                   {"new_tokens", N},
                   {"input_ids", json::array()}};
    for (std::int64_t b = 0; b < B; ++b) {
      json row = json::array();
      for (std::int64_t t = 0; t < T; ++t) row.push_back(prompt_id(o.seed, b, t, c.vocab_size));
      inputs["input_ids"].push_back(row);
    }
    std::ofstream(std::filesystem::path(o.export_dir) / "bench_inputs.json") << inputs.dump(1) << "\n";
    std::printf("exported %s (seed %" PRIu64 ", %s) to %s (fp32)\n", o.preset.c_str(), o.seed, c.summary().c_str(),
                o.export_dir.c_str());
    return 0;
  }

  const double rss_start = peak_rss_mib();
  const double t_setup = now();
  ModelWeights weights;
  if (o.load_dir.empty()) {
    weights = ModelWeights(c);
    weights.init_random(c, o.seed);
  } else {
    const ModelConfig loaded = load_hf_config(o.load_dir);
    if (loaded.summary() != c.summary())
      fail(ErrorKind::Input, o.load_dir + ": its config.json (" + loaded.summary() + ") is not the benchmark shape (" +
                                 c.summary() + ")");
    weights = load_hf_weights(o.load_dir, c);
  }
  Model model(c, std::move(weights));
  const double setup_seconds = now() - t_setup;
  const double rss_after_setup = proc_status_mib("VmRSS");

  IntView2 ids("bench_ids", B, T);
  {
    auto h = Kokkos::create_mirror_view(ids);
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t t = 0; t < T; ++t) h(b, t) = prompt_id(o.seed, b, t, c.vocab_size);
    Kokkos::deep_copy(ids, h);
  }
  Bench bench{model, c, B, T, N, ids};

  // Warm-up, then the timed rounds: each round is one prefill and N decode steps from its cache.
  Samples prefill_s, decode_s, generate_s;
  std::vector<std::vector<std::int32_t>> greedy;
  for (std::int64_t r = 0; r < o.warmup + o.repeats; ++r) {
    KvCache cache;
    double w0 = now(), c0 = cpu_seconds();
    std::vector<std::int32_t> next = bench.prefill(cache);
    Kokkos::fence();
    const double pw = now() - w0, pc = cpu_seconds() - c0;
    w0 = now(), c0 = cpu_seconds();
    std::vector<std::vector<std::int32_t>> tokens;
    if (N > 0) tokens = bench.decode(cache, next);
    else for (std::int32_t t : next) tokens.push_back({t});
    const double dw = now() - w0, dc = cpu_seconds() - c0;
    if (r >= o.warmup) {
      prefill_s.add(pw, pc);
      decode_s.add(dw, dc);
    }
    if (r == 0) greedy = tokens;
  }
  GenerationResult gen_result;
  if (!o.skip_generate && N > 0 && o.generate_repeats > 0) {
    std::vector<std::vector<std::int32_t>> prompts(static_cast<std::size_t>(B));
    auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), ids);
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t t = 0; t < T; ++t) prompts[b].push_back(h(b, t));
    GenerationParams gp;
    gp.max_new_tokens = N;
    gp.eos_id = -1;  // never stop early: exactly N tokens, as HF with eos disabled
    for (std::int64_t r = 0; r < o.warmup + std::max<std::int64_t>(1, o.generate_repeats); ++r) {
      const double w0 = now(), c0 = cpu_seconds();
      gen_result = generate(model, prompts, gp);
      const double gw = now() - w0, gc = cpu_seconds() - c0;
      if (r >= o.warmup) generate_s.add(gw, gc);
    }
  }
  const double peak_rss = peak_rss_mib();  // before the optional profile round (its bookkeeping is not the model's)

  bool generate_agrees = true;
  for (std::int64_t b = 0; b < B && !gen_result.tokens.empty(); ++b)
    for (std::int64_t s = 0; s < N; ++s)
      generate_agrees = generate_agrees && gen_result.tokens[b][std::size_t(s)] == greedy[b][std::size_t(s)];

  // ---- Report ----------------------------------------------------------------------------------------
  const std::string coretype = env_or("OPENBLAS_CORETYPE", "(unset: auto-detect)");
  const std::string blas_threads = env_or("OPENBLAS_NUM_THREADS", "(unset: all cores)");
  const std::string omp_threads = env_or("OMP_NUM_THREADS", "(unset)");
  const int concurrency = int(Kokkos::DefaultExecutionSpace::concurrency());
  std::printf("\njetmoe-bench-forward: jetmoe %s, %s build, %s, Kokkos %s backend (%s), concurrency %d\n",
              JETMOE_VERSION, JETMOE_BUILD_TYPE, JETMOE_CXX_COMPILER, Kokkos::DefaultExecutionSpace::name(),
              JETMOE_KOKKOS_VERSION_CMAKE, concurrency);
  std::printf("BLAS %s: OPENBLAS_CORETYPE=%s OPENBLAS_NUM_THREADS=%s OMP_NUM_THREADS=%s; cores online %ld\n",
              JETMOE_BLAS_LIBRARIES, coretype.c_str(), blas_threads.c_str(), omp_threads.c_str(),
              sysconf(_SC_NPROCESSORS_ONLN));
  std::printf("%s\n", blas_report().c_str());
  std::printf("model: %s (preset %s, seed %" PRIu64 ", weights %s)\n", c.summary().c_str(), o.preset.c_str(), o.seed,
              o.load_dir.empty() ? "init_random" : o.load_dir.c_str());
  std::printf("batch %" PRId64 ", prompt %" PRId64 ", new tokens %" PRId64 "; median of %" PRId64 " (generate: %" PRId64
              ") after %" PRId64 " warm-up; setup %.2f s\n\n",
              B, T, N, o.repeats, o.generate_repeats, o.warmup, setup_seconds);
  const double prefill_tokens = double(B * T), decode_tokens = double(B * N), generate_tokens = double(B * N);
  std::printf("  %-10s %10s %12s %12s %9s\n", "phase", "tokens", "median ms", "tokens/s", "cpu/wall");
  auto row = [](const char* name, double tokens, const Samples& s) {
    if (s.wall.empty()) return;
    const double w = median(s.wall);
    std::printf("  %-10s %10.0f %12.2f %12.1f %9.2f\n", name, tokens, 1e3 * w, tokens / w, median(s.cpu) / w);
  };
  row("prefill", prefill_tokens, prefill_s);
  row("decode", decode_tokens, decode_s);
  row("generate", generate_tokens, generate_s);
  std::printf("\npeak RSS %.1f MiB (at start %.1f, after setup %.1f); process CPU %.2f s\n", peak_rss, rss_start,
              rss_after_setup, cpu_seconds());
  std::printf("greedy tokens of sequence 0: ");
  for (std::size_t i = 0; i < greedy[0].size() && i < 12; ++i) std::printf("%d ", greedy[0][i]);
  std::printf("%s\n", greedy[0].size() > 12 ? "..." : "");
  if (!gen_result.tokens.empty())
    std::printf("generate() tokens %s the manual decode loop's\n", generate_agrees ? "match" : "DIFFER FROM");

  json result = {
      {"implementation", "jetmoe"},
      {"environment",
       {{"OPENBLAS_CORETYPE", env_or("OPENBLAS_CORETYPE", "")},
        {"OPENBLAS_NUM_THREADS", env_or("OPENBLAS_NUM_THREADS", "")},
        {"OMP_NUM_THREADS", env_or("OMP_NUM_THREADS", "")},
        {"kokkos_backend", Kokkos::DefaultExecutionSpace::name()},
        {"kokkos_concurrency", concurrency},
        {"kokkos_version", JETMOE_KOKKOS_VERSION_CMAKE},
        {"blas", JETMOE_BLAS_LIBRARIES},
        {"openblas", blas_report()},
        {"build_type", JETMOE_BUILD_TYPE},
        {"compiler", JETMOE_CXX_COMPILER},
        {"cores_online", sysconf(_SC_NPROCESSORS_ONLN)}}},
      {"model",
       {{"preset", o.preset},
        {"summary", c.summary()},
        {"parameters", c.parameter_count()},
        {"active_parameters", c.active_parameter_count()},
        {"seed", o.seed},
        {"init_std", o.init_std},
        {"weights", o.load_dir.empty() ? "init_random" : o.load_dir}}},
      {"batch", B},
      {"prompt", T},
      {"new_tokens", N},
      {"repeats", o.repeats},
      {"warmup", o.warmup},
      {"generate_repeats", o.generate_repeats},
      {"setup_seconds", setup_seconds},
      {"prefill", prefill_s.to_json(prefill_tokens)},
      {"decode", decode_s.to_json(decode_tokens)},
      {"peak_rss_mib", peak_rss},
      {"rss_at_start_mib", rss_start},
      {"rss_after_setup_mib", rss_after_setup},
      {"process_cpu_seconds", cpu_seconds()},
      {"input_ids_first_row", json::array()},
      {"greedy_tokens", greedy},
  };
  for (std::int64_t t = 0; t < T; ++t) result["input_ids_first_row"].push_back(prompt_id(o.seed, 0, t, c.vocab_size));
  if (!generate_s.wall.empty()) {
    result["generate"] = generate_s.to_json(generate_tokens);
    result["generate"]["agrees_with_decode_loop"] = generate_agrees;
  }

  if (o.profile_kernels) {
    kprof::install();
    json profile;
    KvCache cache;
    kprof::active = true;
    double w0 = now();
    std::vector<std::int32_t> next = bench.prefill(cache);
    kprof::active = false;
    profile["prefill"] = kprof::report("profiled prefill", now() - w0, B * T);
    if (N > 0) {
      kprof::active = true;
      w0 = now();
      bench.decode(cache, next);
      kprof::active = false;
      profile["decode"] = kprof::report("profiled decode", now() - w0, B * N);
    }
    result["kernel_profile"] = profile;
  }

  if (!o.json_path.empty()) {
    std::ofstream out(o.json_path);
    out << result.dump(1) << "\n";
    if (!out) fail(ErrorKind::Input, o.json_path + ": cannot write");
    std::printf("raw results: %s\n", o.json_path.c_str());
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const Options options = parse(argc, argv);
  jetmoe::MpiSession mpi(&argc, &argv);
  int status = 0;
  {
    Kokkos::ScopeGuard kokkos(argc, argv);
    const double t0 = now();
    try {
      status = run(options);
    } catch (const jetmoe::Error& e) {
      std::fprintf(stderr, "jetmoe-bench-forward: error: %s\n", e.what());
      status = e.exit_code();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "jetmoe-bench-forward: error: %s\n", e.what());
      status = 1;
    }
    if (status == 0 && options.export_dir.empty()) {
      std::printf("\ntime by phase (jetmoe::Region, all rounds incl. warm-up):\n%s",
                  jetmoe::phases::table(jetmoe::Comm::world(), now() - t0).c_str());
    }
  }
  return status;
}
