// jetmoe-bench-train: training-step throughput (forward + backward + clipping + AdamW) on random
// weights and random tokens.
//
// A benchmark, not a test: it prints a table and (with --json) writes its raw numbers; the peer is
// scripts/bench/bench_hf_train.py (HF transformers + torch.optim.AdamW, same config, same threads),
// and scripts/bench/run_cpu_train_bench.sh runs both side by side.
//
//   jetmoe-bench-train --preset small --batch 4 --seq-len 256 --steps 5 --warmup 1 --json out.json
//   jetmoe-bench-train --preset small --batch 1 --seq-len 128 --steps 3 --profile-kernels
//
// One step = zero gradients, Network::run (forward, cross-entropy and the original JetMoE router
// losses, backward), global gradient norm, AdamW (lr 1e-4, betas 0.9/0.95, weight decay 0.1) on the
// gradients clipped to norm 1.0 (clip_grad_norm_'s factor applied inside the update). Reported:
// median step time over --steps timed steps after --warmup untimed ones, tokens/s = batch x seq_len /
// step time, model FLOP/s (6 x active matmul parameters + causal attention per token), peak RSS, the
// per-phase table (Region timers) and the median of each top-level phase per step.
//
// --profile-kernels adds one instrumented step after the timed ones: wall time per Kokkos kernel (by
// label) and per BLAS call (KokkosBlas::gemm/gemv regions, named after the phase and the kernel that
// ran before them), through the Kokkos Tools callbacks; host kernels are synchronous, so begin/end
// wall times are exact.
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
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "core/build_info.hpp"
#include "core/error.hpp"
#include "core/kokkos_compat.hpp"
#include "core/profiling.hpp"
#include "jetmoe/build_config.hpp"
#include "model/config.hpp"
#include "parallel/comm.hpp"
#include "train/losses.hpp"
#include "train/network.hpp"
#include "train/optimizer.hpp"

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

double peak_rss_mb() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) / 1024.0;  // Linux: KiB
}

double median(std::vector<double> v) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string env_or(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v && *v ? v : fallback;
}

[[noreturn]] void usage(const char* msg) {
  std::fprintf(stderr,
               "jetmoe-bench-train: %s\nusage: jetmoe-bench-train [--preset tiny|small|jetmoe-8b] [--batch B] "
               "[--seq-len T] [--steps N] [--warmup W] [--seed S] [--recompute] [--profile-kernels] [--json FILE]\n",
               msg);
  std::exit(2);
}

// ---- Region and kernel timing through the Kokkos Tools callbacks -------------------------------------
namespace tools {

struct Entry {
  long calls = 0;
  double seconds = 0;
};
std::vector<std::pair<std::string, double>> region_stack;  // (label, start)
std::map<std::string, double> step_phases;                  // top-level regions of the current step
bool profile = false;                                       // kernel profile on
std::map<std::string, Entry> kernels;
std::vector<std::pair<std::string, double>> open_kernels;
std::string last_kernel;

std::string phase_path() {
  std::string p;
  for (const auto& r : region_stack)
    if (r.first.rfind("gemm", 0) != 0 && r.first.rfind("gemv", 0) != 0) p += (p.empty() ? "" : "/") + r.first;
  return p;
}
bool inside_blas() {
  for (const auto& r : region_stack)
    if (r.first.rfind("gemm", 0) == 0 || r.first.rfind("gemv", 0) == 0) return true;
  return false;
}

void begin_kernel(const char* name, const std::uint32_t, std::uint64_t* id) {
  *id = open_kernels.size();
  open_kernels.emplace_back(name, now());
}
void end_kernel(std::uint64_t id) {
  const double t = now();
  if (id >= open_kernels.size()) return;
  const std::string name = open_kernels[id].first;
  if (profile && !inside_blas()) {  // a BLAS call's own kernels are part of its time
    std::string group = name;
    if (name.rfind("Kokkos::View::initialization", 0) == 0) group = "view allocation (zero fill)";
    else if (name.rfind("Kokkos::View::destruction", 0) == 0) group = "view destruction";
    else if (name.rfind("Kokkos::", 0) == 0) group = name.substr(0, 40);
    Entry& e = kernels[group];
    e.calls += 1;
    e.seconds += t - open_kernels[id].second;
  }
  if (name.rfind("Kokkos::", 0) != 0 && name.rfind("KokkosBlas::", 0) != 0) last_kernel = name;
  if (id + 1 == open_kernels.size()) open_kernels.pop_back();
}
void push_region(const char* name) {
  std::string label = name;
  // "KokkosBlas::gemm[TPL_BLAS,...]" reaches the BLAS library; otherwise Kokkos Kernels' own kernel.
  const bool tpl = label.find("TPL") != std::string::npos;
  const bool gemm = label.rfind("KokkosBlas::gemm", 0) == 0, gemv = label.rfind("KokkosBlas::gemv", 0) == 0;
  if (gemm || gemv) {
    label = std::string(gemm ? "gemm" : "gemv") + (tpl ? "" : "(native KK)") + " [" + phase_path() + "] after " +
            last_kernel;
  }
  region_stack.emplace_back(label, now());
}
void pop_region() {
  if (region_stack.empty()) return;
  const auto [label, start] = region_stack.back();
  region_stack.pop_back();
  const double seconds = now() - start;
  if (region_stack.empty()) step_phases[label] += seconds;
  if (profile && (label.rfind("gemm", 0) == 0 || label.rfind("gemv", 0) == 0) && !inside_blas()) {
    Entry& e = kernels[label];
    e.calls += 1;
    e.seconds += seconds;
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

json report(double wall) {
  std::vector<std::pair<std::string, Entry>> rows(kernels.begin(), kernels.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.seconds > b.second.seconds; });
  double covered = 0;
  for (const auto& r : rows) covered += r.second.seconds;
  std::printf("\nprofiled step: %.1f ms wall; by kernel / BLAS call ([phase] after the kernel before it)\n", 1e3 * wall);
  std::printf("  %-78s %6s %9s %7s\n", "kernel or BLAS call", "calls", "ms", "share");
  json out = json::array();
  for (const auto& [name, e] : rows) {
    std::printf("  %-78s %6ld %9.2f %6.1f%%\n", name.substr(0, 78).c_str(), e.calls, 1e3 * e.seconds,
                100.0 * e.seconds / wall);
    out.push_back({{"name", name}, {"calls", e.calls}, {"seconds", e.seconds}});
  }
  std::printf("  %-78s %6s %9.2f %6.1f%%\n", "(host code between kernels)", "", 1e3 * (wall - covered),
              100.0 * (wall - covered) / wall);
  out.push_back({{"name", "(host code between kernels)"}, {"calls", 0}, {"seconds", wall - covered}});
  return out;
}

}  // namespace tools

}  // namespace

int main(int argc, char** argv) {
  MpiSession mpi(&argc, &argv);
  const double rss_start = peak_rss_mb();
  Kokkos::initialize(argc, argv);
  int status = 0;
  {
    std::string preset = "small", json_path;
    std::int64_t B = 4, T = 256, steps = 5, warmup = 1;
    std::uint64_t seed = 1234;
    bool recompute = false, profile_kernels = false;
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) usage((a + " needs a value").c_str());
        return argv[++i];
      };
      if (a == "--preset") preset = value();
      else if (a == "--batch") B = std::stoll(value());
      else if (a == "--seq-len") T = std::stoll(value());
      else if (a == "--steps") steps = std::stoll(value());
      else if (a == "--warmup") warmup = std::stoll(value());
      else if (a == "--seed") seed = std::stoull(value());
      else if (a == "--recompute") recompute = true;
      else if (a == "--profile-kernels") profile_kernels = true;
      else if (a == "--json") json_path = value();
      else if (a.rfind("--kokkos", 0) == 0) continue;
      else usage(("unknown argument " + a).c_str());
    }
    if (steps < 1 || B < 1 || T < 2) usage("need --steps >= 1, --batch >= 1, --seq-len >= 2");
    try {
      tools::install();
      const ModelConfig c = ModelConfig::preset(preset);
      ModelWeights w(c), g(c, true);
      w.init_random(c, seed);
      Network<float> net(c, 0.01, 0.001, recompute);
      AdamW adam(c, AdamWSettings{0.9, 0.95, 1e-8, 0.1});
      IntView2 ids("ids", B, T);
      IntView1 targets("targets", B * T);
      {
        auto hi = Kokkos::create_mirror_view(ids);
        auto ht = Kokkos::create_mirror_view(targets);
        std::uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
        for (std::int64_t i = 0; i < B * T; ++i) {
          x ^= x << 13, x ^= x >> 7, x ^= x << 17;
          hi.data()[i] = std::int32_t(x % std::uint64_t(c.vocab_size));
        }
        for (std::int64_t b = 0; b < B; ++b)
          for (std::int64_t t = 0; t < T; ++t) ht(b * T + t) = t + 1 < T ? hi(b, t + 1) : std::int32_t(ignore_index);
        Kokkos::deep_copy(ids, hi);
        Kokkos::deep_copy(targets, ht);
      }
      const double rss_after_setup = peak_rss_mb();
      auto one_step = [&]() {
        {
          Region region("zero_grad");
          zero_gradients(c, g);
        }
        const LossTerms terms = net.run(w, ids, targets, &g, 1.0 / double(B * (T - 1)), 1.0);
        double norm = 0;
        {
          Region region("clip");
          norm = global_grad_norm(c, g);
        }
        adam.step(w, g, 1e-4, clip_factor(norm, 1.0));
        Kokkos::fence();
        return terms;
      };
      std::vector<double> times, cpu_times;
      std::map<std::string, std::vector<double>> phase_times;
      double loss0 = 0, loss_last = 0;
      const Comm comm = Comm::world();
      for (std::int64_t s = 0; s < warmup + steps; ++s) {
        if (s == warmup) phases::reset();
        tools::step_phases.clear();
        const double t0 = now(), c0 = cpu_seconds();
        const LossTerms terms = one_step();
        const double dt = now() - t0, dc = cpu_seconds() - c0;
        if (s == 0) loss0 = terms.ce();
        loss_last = terms.ce();
        if (s >= warmup) {
          times.push_back(dt);
          cpu_times.push_back(dc);
          for (const auto& [name, sec] : tools::step_phases) phase_times[name].push_back(sec);
        }
      }
      const double peak = peak_rss_mb();  // before the optional profile step (its bookkeeping is not the model's)
      const double med = median(times);
      const double tokens_per_s = double(B * T) / med;
      const double flops = training_flops_per_token(c, T) * double(B * T) / med;
      const std::string coretype = env_or("OPENBLAS_CORETYPE", "(unset: auto-detect)");
      std::printf("jetmoe-bench-train  preset %s (%s)\n", preset.c_str(), c.summary().c_str());
      std::printf("  Kokkos %s %s (concurrency %d), %s build, %s; BLAS %s (%s); OPENBLAS_CORETYPE %s, "
                  "OPENBLAS_NUM_THREADS %s, OMP_NUM_THREADS %s\n",
                  Kokkos::DefaultExecutionSpace::name(), JETMOE_KOKKOS_VERSION_CMAKE,
                  int(Kokkos::DefaultExecutionSpace().concurrency()), JETMOE_BUILD_TYPE, JETMOE_CXX_COMPILER,
                  JETMOE_BLAS_LIBRARIES, jetmoe::host_blas().describe().c_str(), coretype.c_str(),
                  env_or("OPENBLAS_NUM_THREADS", "(unset)").c_str(), env_or("OMP_NUM_THREADS", "(unset)").c_str());
      std::printf("  batch %lld x seq %lld, %lld timed steps after %lld warm-up, recompute %s\n", (long long)B,
                  (long long)T, (long long)steps, (long long)warmup, recompute ? "on" : "off");
      std::printf("  step median %.4f s (min %.4f, max %.4f) | %.1f tokens/s | %.2f GFLOP/s model | cpu/wall %.2f | "
                  "peak RSS %.1f MB\n",
                  med, *std::min_element(times.begin(), times.end()), *std::max_element(times.begin(), times.end()),
                  tokens_per_s, flops / 1e9, median(cpu_times) / med, peak);
      std::printf("  loss %.4f -> %.4f (first and last step)\n", loss0, loss_last);
      double wall = 0;
      for (double t : times) wall += t;
      std::printf("%s", phases::table(comm, wall).c_str());

      json result;
      result["impl"] = "jetmoe";
      result["preset"] = preset;
      result["model"] = c.summary();
      result["parameters"] = c.parameter_count();
      result["active_parameters"] = c.active_parameter_count();
      result["batch"] = B;
      result["seq_len"] = T;
      result["steps"] = steps;
      result["warmup"] = warmup;
      result["seed"] = seed;
      result["recompute"] = recompute;
      result["step_seconds"] = times;
      result["step_cpu_seconds"] = cpu_times;
      result["step_median_s"] = med;
      result["tokens_per_s"] = tokens_per_s;
      result["model_gflops"] = flops / 1e9;
      json phase_median = json::object(), phase_all = json::object();
      for (const auto& [name, v] : phase_times) {
        phase_median[name] = median(v);
        phase_all[name] = v;
      }
      result["phases_median_s"] = phase_median;
      result["phases_seconds"] = phase_all;
      result["peak_rss_mb"] = peak;
      result["rss_at_start_mib"] = rss_start;
      result["rss_after_setup_mib"] = rss_after_setup;
      result["loss_first"] = loss0;
      result["loss_last"] = loss_last;
      result["blas"] = JETMOE_BLAS_LIBRARIES;
      result["environment"] = {
          {"OPENBLAS_CORETYPE", env_or("OPENBLAS_CORETYPE", "")},
          {"OPENBLAS_NUM_THREADS", env_or("OPENBLAS_NUM_THREADS", "")},
          {"OMP_NUM_THREADS", env_or("OMP_NUM_THREADS", "")},
          {"kokkos_backend", Kokkos::DefaultExecutionSpace::name()},
          {"kokkos_concurrency", int(Kokkos::DefaultExecutionSpace().concurrency())},
          {"kokkos_version", JETMOE_KOKKOS_VERSION_CMAKE},
          {"blas", JETMOE_BLAS_LIBRARIES},
          {"openblas", jetmoe::host_blas().describe()},
          {"build_type", JETMOE_BUILD_TYPE},
          {"compiler", JETMOE_CXX_COMPILER},
          {"cores_online", sysconf(_SC_NPROCESSORS_ONLN)}};
      if (profile_kernels) {
        tools::kernels.clear();
        tools::profile = true;
        const double t0 = now();
        one_step();
        const double dt = now() - t0;
        tools::profile = false;
        result["kernel_profile"] = tools::report(dt);
      }
      result["process_cpu_seconds"] = cpu_seconds();  // the whole process, profile step included
      if (!json_path.empty()) std::ofstream(json_path) << result.dump(2) << "\n";
    } catch (const Error& e) {
      std::fprintf(stderr, "jetmoe-bench-train: %s\n", e.what());
      status = 1;
    }
  }
  Kokkos::finalize();
  return status;
}
