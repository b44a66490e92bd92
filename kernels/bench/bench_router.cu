// Benchmark of the 'router' kernels at JetMoE-8B shapes (D = C = 2048, E = 8, k = 2, N = 4096 and
// 16384 tokens per micro-batch): router forward (logits + top-k + gates + plan), aux losses with
// gradient, gather and its backward, combine and its backward, router weight/input backward.
// The forward and the router backward also on their simple reference paths (the tuned / simple ratio
// of the optimisation log in kernels/notes/router.md). Median of cudaEvent-timed launches after a warm-up, fresh random non-zero inputs. Prints a table
// (time, GB/s of the minimal traffic, % of the H100 SXM HBM3 peak 3.35 TB/s, TFLOP/s and % of the
// bf16 dense peak 989 TFLOP/s where there are FLOPs) and writes the raw rows with --out FILE.csv.
// The same columns as kernels/bench/peer_router.py (PyTorch / HF on the same GPU).
// Exit: 0 done, 2 bad arguments, 77 no CUDA device.
#include "bench_timing.cuh"
#include "harness.cuh"

namespace {

constexpr double kHbmPeak = 3.35e12;    // bytes/s, H100 SXM HBM3
constexpr double kBf16Peak = 989e12;    // FLOP/s, H100 SXM dense bf16

struct Row {
  std::string op;
  long long N, C;
  double us, gbs, hbm_pct, tflops, flop_pct;
};

template <typename T>
T* device_random(std::size_t n, std::mt19937_64& gen, float lo, float hi) {
  std::vector<float> v(n);
  std::uniform_real_distribution<float> m(lo, hi);
  for (auto& x : v) x = (gen() & 1u) ? m(gen) : -m(gen);
  T* d = nullptr;
  CHECK_CUDA(cudaMalloc(&d, n * sizeof(T)));
  if constexpr (std::is_same_v<T, std::uint16_t>) {
    const auto b = jkt::to_bf16(v);
    CHECK_CUDA(cudaMemcpy(d, b.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  } else {
    CHECK_CUDA(cudaMemcpy(d, v.data(), n * sizeof(T), cudaMemcpyHostToDevice));
  }
  return d;
}

template <typename T>
T* device_alloc(std::size_t n) {
  T* d = nullptr;
  CHECK_CUDA(cudaMalloc(&d, std::max<std::size_t>(n, 1) * sizeof(T)));
  CHECK_CUDA(cudaMemset(d, 0, std::max<std::size_t>(n, 1) * sizeof(T)));
  return d;
}

using jkb::median_us;

}  // namespace

int main(int argc, char** argv) {
  jkb::Args args{nullptr, 50, 5};
  jkb::ArgRules rules;
  rules.reject_bad_counts = true;
  if (const int rc = jkb::parse_args(argc, argv, args, rules); rc != jkb::kContinue) return rc;
  const char* out_path = args.out;
  const int reps = args.reps, warmup = args.warmup;
  jk_runtime_info_t info;
  if (const int rc = jkb::open_device("jetmoe-router-bench", info); rc != jkb::kContinue) return rc;
  std::printf("jetmoe-router-bench: median of %d cudaEvent-timed runs after %d warm-up runs\n%s", reps, warmup,
              jkb::describe(info).c_str());

  cudaStream_t s;
  CHECK_CUDA(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  std::mt19937_64 gen(1234);
  std::vector<Row> rows;
  const int E = 8, k = 2;
  const long long D = 2048, C = 2048;
  for (long long N : {4096LL, 16384LL}) {
    const std::size_t nk = static_cast<std::size_t>(N * k);
    auto* u = device_random<std::uint16_t>(N * D, gen, 1.0f / 64, 1.0f);
    auto* w = device_random<std::uint16_t>(E * D, gen, 1.0f / 64, 0.05f);
    auto* logits = device_alloc<float>(N * E);
    auto* ids = device_alloc<std::int32_t>(nk);
    auto* gates = device_alloc<float>(nk);
    auto* gates16 = device_alloc<std::uint16_t>(nk);
    auto* counts = device_alloc<std::int32_t>(E);
    auto* offsets = device_alloc<std::int32_t>(E + 1);
    auto* stok = device_alloc<std::int32_t>(nk);
    auto* sslot = device_alloc<std::int32_t>(nk);
    auto* pos = device_alloc<std::int32_t>(nk);
    const std::size_t ws_bytes = std::max({jk_router_fwd_workspace_bytes(N, E, k), jk_router_aux_workspace_bytes(N, E),
                                           jk_router_combine_bwd_workspace_bytes(N, C),
                                           jk_router_bwd_workspace_bytes(N, D, E)});
    auto* ws = device_alloc<unsigned char>(ws_bytes);
    jk_router_outputs_t out{logits, ids, gates, gates16, counts, offsets, stok, sslot, pos, nullptr};
    // The cudaMemset / pageable cudaMemcpy above run on the legacy default stream, which the non-blocking
    // stream s does not wait for: finish them before the first launch on s.
    CHECK_CUDA(cudaDeviceSynchronize());
    CHECK_CUDA(jk_router_fwd_bf16(u, w, N, D, E, k, &out, ws, ws_bytes, s));  // a valid plan for the row ops
    CHECK_CUDA(cudaStreamSynchronize(s));
    auto* x = device_random<std::uint16_t>(N * C, gen, 1.0f / 64, 1.0f);
    auto* xp = device_alloc<std::uint16_t>(nk * C);
    auto* y = device_random<std::uint16_t>(nk * C, gen, 1.0f / 64, 1.0f);
    auto* bias = device_random<std::uint16_t>(C, gen, 1.0f / 64, 1.0f);
    auto* outb = device_alloc<std::uint16_t>(N * C);
    auto* dout = device_random<std::uint16_t>(N * C, gen, 1.0f / 64, 1.0f);
    auto* dy = device_alloc<std::uint16_t>(nk * C);
    auto* dgate = device_alloc<float>(nk);
    auto* dlog = device_alloc<float>(N * E);
    auto* dbias = device_alloc<float>(C);
    auto* dx32 = device_alloc<float>(N * C);
    auto* losses = device_alloc<float>(2);
    auto* dw = device_alloc<float>(E * D);
    auto* du32 = device_alloc<float>(N * D);
    CHECK_CUDA(cudaDeviceSynchronize());  // as above: the legacy-stream fills must land before s uses them

    const double bf = 2.0, f4 = 4.0;
    auto add = [&](const char* op, long long c, double bytes, double flops, const std::function<void()>& launch) {
      const double us = median_us(launch, s, warmup, reps);
      const double gbs = bytes / (us * 1e-6) / 1e9;
      const double tf = flops / (us * 1e-6) / 1e12;
      rows.push_back({op, N, c, us, gbs, 100.0 * gbs * 1e9 / kHbmPeak, tf, 100.0 * tf * 1e12 / kBf16Peak});
    };
    add("router_fwd_bf16 (logits+topk+plan)", D, N * D * bf + E * D * bf + N * E * f4 + nk * (4 * 4 + 2 + 4), 2.0 * N * D * E,
        [&] { CHECK_CUDA(jk_router_fwd_bf16(u, w, N, D, E, k, &out, ws, ws_bytes, s)); });
    add("router_fwd_bf16 (logits+topk+plan) simple", D, N * D * bf + E * D * bf + N * E * f4 + nk * (4 * 4 + 2 + 4), 2.0 * N * D * E,
        [&] { CHECK_CUDA(jk_router_fwd_bf16_simple(u, w, N, D, E, k, &out, ws, ws_bytes, s)); });
    add("router_plan", E, nk * 4.0 * 4, 0, [&] {
      CHECK_CUDA(jk_router_plan(ids, N, E, k, counts, offsets, stok, sslot, pos, nullptr, ws, ws_bytes, s));
    });
    add("aux_loss+grad", E, N * E * f4 * 4 + nk * 4.0 * 2, 0, [&] {
      CHECK_CUDA(jk_router_aux_loss(logits, ids, N, E, k, 0.01f, 0.001f, losses, dlog, ws, ws_bytes, s));
    });
    add("gather_bf16", C, 2.0 * nk * C * bf, 0,
        [&] { CHECK_CUDA(jk_router_gather_bf16(x, stok, static_cast<std::int64_t>(nk), C, xp, s)); });
    add("gather_bwd_bf16->f32", C, nk * C * bf + N * C * f4, 0,
        [&] { CHECK_CUDA(jk_router_gather_bwd_bf16_f32(xp, pos, N, k, C, dx32, 0, s)); });
    add("combine_bf16", C, nk * C * bf + N * C * bf, 0,
        [&] { CHECK_CUDA(jk_router_combine_bf16(y, gates16, pos, bias, N, k, C, outb, s)); });
    add("combine_bwd_bf16 (+dbias)", C, 2.0 * N * C * bf + 2.0 * nk * C * bf, 2.0 * nk * C, [&] {
      CHECK_CUDA(jk_router_combine_bwd_bf16(dout, y, gates16, gates, ids, pos, N, E, k, C, dy, dgate, dlog, dbias, ws,
                                            ws_bytes, s));
    });
    add("router_bwd_bf16 (dW + du f32)", D, N * D * bf + 2.0 * N * D * f4, 4.0 * N * D * E, [&] {
      CHECK_CUDA(jk_router_bwd_bf16(u, w, dlog, N, D, E, dw, 0, du32, nullptr, ws, ws_bytes, s));
    });
    add("router_bwd_bf16 (dW + du f32) simple", D, N * D * bf + 2.0 * N * D * f4, 4.0 * N * D * E, [&] {
      CHECK_CUDA(jk_router_bwd_bf16_simple(u, w, dlog, N, D, E, dw, 0, du32, nullptr, ws, ws_bytes, s));
    });
    add("memcpy_d2d (gather bytes)", C, 2.0 * nk * C * bf, 0, [&] {
      CHECK_CUDA(cudaMemcpyAsync(xp, y, nk * C * bf, cudaMemcpyDeviceToDevice, s));
    });
    for (void* p : std::initializer_list<void*>{u, w, logits, ids, gates, gates16, counts, offsets, stok, sslot, pos, ws, x, xp,
                                                y, bias, outb, dout, dy, dgate, dlog, dbias, dx32, losses, dw, du32})
      CHECK_CUDA(cudaFree(p));
  }
  CHECK_CUDA(cudaStreamDestroy(s));

  std::printf("%-43s %7s %6s %10s %9s %7s %9s %7s\n", "op", "N", "D/C", "time_us", "GB/s", "%HBM", "TFLOP/s", "%bf16");
  for (const Row& r : rows)
    std::printf("%-43s %7lld %6lld %10.2f %9.1f %7.1f %9.2f %7.2f\n", r.op.c_str(), r.N, r.C, r.us, r.gbs, r.hbm_pct,
                r.tflops, r.flop_pct);
  if (out_path) {
    FILE* f = std::fopen(out_path, "w");
    if (!f) {
      std::printf("cannot write %s\n", out_path);
      return 1;
    }
    std::fprintf(f, "op,N,C,time_us,GB_s,pct_hbm,TFLOP_s,pct_bf16\n");
    for (const Row& r : rows)
      std::fprintf(f, "%s,%lld,%lld,%.3f,%.2f,%.2f,%.4f,%.4f\n", r.op.c_str(), r.N, r.C, r.us, r.gbs, r.hbm_pct, r.tflops,
                   r.flop_pct);
    std::fclose(f);
    std::printf("wrote %s\n", out_path);
  }
  return 0;
}
