// Benchmark of the 'embedding' kernels at JetMoE-8B shapes (V = 32000, D = 2048, N = 16384 tokens per
// micro-batch): forward gather (bf16 and fp32 tables), the device grouping alone, and the deterministic
// backward (bf16 and fp32 dx; beta 1 touching only the ids present, and beta 0 with the full zeroing of
// the untouched rows), with uniform and Zipf-like ids. Median of cudaEvent-timed launches after a
// warm-up, fresh random non-zero inputs. Prints a table (time, GB/s of the minimal traffic, % of the
// H100 SXM HBM3 peak 3.35 TB/s) and writes the raw rows with --out FILE.csv. The same columns as
// kernels/bench/peer_embedding.py (PyTorch F.embedding on the same GPU). There are no FLOPs to speak
// of (one add per dx element), so no TFLOP/s column.
// Exit: 0 done, 2 bad arguments, 77 no CUDA device.
#include "bench_timing.cuh"
#include "harness.cuh"

#include <set>

namespace {

constexpr double kHbmPeak = 3.35e12;  // bytes/s, H100 SXM HBM3

struct Row {
  std::string op, ids;
  long long N, V, D;
  double us, gbs, hbm_pct;
};

using jkb::median_us;

template <typename T>
T* device_upload(const std::vector<T>& v) {
  T* d = nullptr;
  CHECK_CUDA(cudaMalloc(&d, std::max<std::size_t>(v.size(), 1) * sizeof(T)));
  CHECK_CUDA(cudaMemcpy(d, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

std::vector<float> random_floats(std::size_t n, std::mt19937_64& gen, float lo, float hi) {
  std::uniform_real_distribution<float> m(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = (gen() & 1u) ? m(gen) : -m(gen);
  return v;
}

// uniform: ids uniform over [0, V); zipf: P(id = k) ~ 1 / (k + 1) (a Zipf law with s = 1, like token
// frequencies), drawn by inverting the cumulative distribution.
std::vector<std::int32_t> make_ids(long long N, long long V, bool zipf, std::mt19937_64& gen) {
  std::vector<std::int32_t> ids(static_cast<std::size_t>(N));
  if (!zipf) {
    for (auto& id : ids) id = static_cast<std::int32_t>(gen() % static_cast<std::uint64_t>(V));
    return ids;
  }
  std::vector<double> cdf(static_cast<std::size_t>(V));
  double acc = 0;
  for (long long k = 0; k < V; ++k) cdf[static_cast<std::size_t>(k)] = (acc += 1.0 / static_cast<double>(k + 1));
  std::uniform_real_distribution<double> u(0.0, acc);
  for (auto& id : ids) {
    const auto it = std::lower_bound(cdf.begin(), cdf.end(), u(gen));
    id = static_cast<std::int32_t>(std::min<long long>(V - 1, it - cdf.begin()));
  }
  return ids;
}

}  // namespace

int main(int argc, char** argv) {
  jkb::Args args{nullptr, 50, 5};
  jkb::ArgRules rules;
  rules.reject_bad_counts = true;
  if (const int rc = jkb::parse_args(argc, argv, args, rules); rc != jkb::kContinue) return rc;
  const char* out_path = args.out;
  const int reps = args.reps, warmup = args.warmup;
  jk_runtime_info_t info;
  if (const int rc = jkb::open_device("jetmoe-embedding-bench", info); rc != jkb::kContinue) return rc;
  std::printf("jetmoe-embedding-bench: median of %d cudaEvent-timed runs after %d warm-up runs\n%s", reps, warmup,
              jkb::describe(info).c_str());

  cudaStream_t s;
  CHECK_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  std::mt19937_64 gen(1234);
  std::vector<Row> rows;
  const long long N = 16384, V = 32000, D = 2048;
  const auto nx = static_cast<std::size_t>(N * D), ne = static_cast<std::size_t>(V * D);
  const auto table = random_floats(ne, gen, 1.0f / 64, 0.05f);
  const auto grad = random_floats(nx, gen, 1.0f / 64, 1.0f);
  auto* emb32 = device_upload(table);
  auto* emb16 = device_upload(jkt::to_bf16(table));
  auto* dx32 = device_upload(grad);
  auto* dx16 = device_upload(jkt::to_bf16(grad));
  float* x32 = nullptr;
  std::uint16_t* x16 = nullptr;
  float* demb = nullptr;
  std::int32_t* count = nullptr;
  CHECK_CUDA(cudaMalloc(&x32, nx * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&x16, nx * sizeof(std::uint16_t)));
  CHECK_CUDA(cudaMalloc(&demb, ne * sizeof(float)));
  CHECK_CUDA(cudaMalloc(&count, sizeof(std::int32_t)));
  CHECK_CUDA(cudaMemset(demb, 0, ne * sizeof(float)));
  const std::size_t ws_bytes = jk_embedding_bwd_workspace_bytes(N, V);
  void* ws = nullptr;
  CHECK_CUDA(cudaMalloc(&ws, ws_bytes));
  std::int32_t* offsets = nullptr;
  std::int32_t* sorted = nullptr;
  CHECK_CUDA(cudaMalloc(&offsets, static_cast<std::size_t>(V + 1) * sizeof(std::int32_t)));
  CHECK_CUDA(cudaMalloc(&sorted, static_cast<std::size_t>(N) * sizeof(std::int32_t)));
  CHECK_CUDA(cudaDeviceSynchronize());  // the uploads ran on the legacy stream, which s does not wait for

  const auto add = [&](const std::string& op, const std::string& ids, double us, double bytes) {
    const double gbs = bytes / (us * 1e-6) / 1e9;
    rows.push_back({op, ids, N, V, D, us, gbs, 100.0 * gbs * 1e9 / kHbmPeak});
  };
  for (const bool zipf : {false, true}) {
    const auto ids = make_ids(N, V, zipf, gen);
    const std::size_t U = std::set<std::int32_t>(ids.begin(), ids.end()).size();
    std::int32_t* d_ids = device_upload(ids);
    CHECK_CUDA(cudaDeviceSynchronize());
    const std::string name = zipf ? "zipf" : "uniform";
    const double id_bytes = static_cast<double>(N) * 4;
    const double row16 = static_cast<double>(D) * 2, row32 = static_cast<double>(D) * 4;
    std::printf("ids %s: %zu distinct of %lld\n", name.c_str(), U, V);
    // Forward: read N rows (the table rows, cached when repeated: counted once per token), write N rows.
    add("fwd_bf16", name, median_us([&] { CHECK_CUDA(jk_embedding_fwd_bf16(emb16, d_ids, x16, N, V, D, count, jk_embedding_path_auto, s)); }, s, warmup, reps),
        id_bytes + 2.0 * static_cast<double>(N) * row16);
    add("fwd_f32", name, median_us([&] { CHECK_CUDA(jk_embedding_fwd_f32(emb32, d_ids, x32, N, V, D, count, jk_embedding_path_auto, s)); }, s, warmup, reps),
        id_bytes + 2.0 * static_cast<double>(N) * row32);
    add("fwd_bf16_simple", name, median_us([&] { CHECK_CUDA(jk_embedding_fwd_bf16(emb16, d_ids, x16, N, V, D, count, jk_embedding_path_simple, s)); }, s, warmup, reps),
        id_bytes + 2.0 * static_cast<double>(N) * row16);
    // Grouping alone (ids in, offsets and order out: a few hundred KB; reported for its time).
    add("group_tokens", name, median_us([&] { CHECK_CUDA(jk_embedding_group_tokens(d_ids, N, V, offsets, sorted, count, ws, ws_bytes, s)); }, s, warmup, reps),
        id_bytes + static_cast<double>(V + 1) * 4 * 3 + static_cast<double>(N) * 4);
    // Backward, beta 1: read dx, read + write the U touched dEmb rows.
    const double touched = 2.0 * static_cast<double>(U) * row32;
    add("bwd_bf16_beta1", name, median_us([&] { CHECK_CUDA(jk_embedding_bwd_bf16(dx16, d_ids, demb, N, V, D, 1.0f, 0, count, ws, ws_bytes, jk_embedding_path_auto, s)); }, s, warmup, reps),
        id_bytes + static_cast<double>(N) * row16 + touched);
    add("bwd_f32_beta1", name, median_us([&] { CHECK_CUDA(jk_embedding_bwd_f32(dx32, d_ids, demb, N, V, D, 1.0f, 0, count, ws, ws_bytes, jk_embedding_path_auto, s)); }, s, warmup, reps),
        id_bytes + static_cast<double>(N) * row32 + touched);
    add("bwd_bf16_beta1_simple", name, median_us([&] { CHECK_CUDA(jk_embedding_bwd_bf16(dx16, d_ids, demb, N, V, D, 1.0f, 0, count, ws, ws_bytes, jk_embedding_path_simple, s)); }, s, warmup, reps),
        id_bytes + static_cast<double>(N) * row16 + touched);
    // Backward, beta 0 with zero_untouched: read dx, write every dEmb row.
    add("bwd_bf16_beta0_zero", name, median_us([&] { CHECK_CUDA(jk_embedding_bwd_bf16(dx16, d_ids, demb, N, V, D, 0.0f, 1, count, ws, ws_bytes, jk_embedding_path_auto, s)); }, s, warmup, reps),
        id_bytes + static_cast<double>(N) * row16 + static_cast<double>(V) * row32);
    CHECK_CUDA(cudaFree(d_ids));
  }

  std::printf("%-24s %-8s %6s %6s %6s %10s %9s %7s\n", "op", "ids", "N", "V", "D", "time_us", "GB/s", "%HBM");
  for (const auto& r : rows)
    std::printf("%-24s %-8s %6lld %6lld %6lld %10.1f %9.1f %6.1f%%\n", r.op.c_str(), r.ids.c_str(), r.N, r.V, r.D, r.us, r.gbs, r.hbm_pct);
  if (out_path != nullptr) {
    FILE* f = std::fopen(out_path, "w");
    if (f == nullptr) {
      std::printf("cannot write %s\n", out_path);
      return 1;
    }
    std::fprintf(f, "impl,op,ids,N,V,D,time_us,gbs,hbm_pct\n");
    for (const auto& r : rows)
      std::fprintf(f, "jk,%s,%s,%lld,%lld,%lld,%.3f,%.3f,%.3f\n", r.op.c_str(), r.ids.c_str(), r.N, r.V, r.D, r.us, r.gbs, r.hbm_pct);
    std::fclose(f);
    std::printf("wrote %s\n", out_path);
  }
  for (void* p : {static_cast<void*>(emb32), static_cast<void*>(emb16), static_cast<void*>(dx32), static_cast<void*>(dx16),
                  static_cast<void*>(x32), static_cast<void*>(x16), static_cast<void*>(demb), static_cast<void*>(count), ws,
                  static_cast<void*>(offsets), static_cast<void*>(sorted)})
    CHECK_CUDA(cudaFree(p));
  CHECK_CUDA(cudaStreamDestroy(s));
  return 0;
}
