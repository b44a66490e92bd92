// jetmoe-bench-gemm: the GEMM shapes of the CPU benchmark model through jetmoe::linear (Kokkos Kernels ->
// OpenBLAS), next to plain sgemv for the skinny decode shapes (M <= 4: "M x sgemv" calls the BLAS directly,
// "KK gemv LL" goes through KokkosBlas::gemv with LayoutLeft views of W^T, which reaches the same BLAS). Answers "how far are the GEMM-heavy phases from
// what the BLAS can do, and what would a GEMV path for M <= 4 buy"; scripts/bench/bench_gemm_torch.py times
// the same shapes with torch.nn.functional.linear (MKL) for the peer's view.
//
//   OPENBLAS_NUM_THREADS=1 jetmoe-bench-gemm [--repeats 20] [--json FILE]
#include <KokkosBlas2_gemv.hpp>
#include <Kokkos_Core.hpp>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "core/tensor.hpp"
#include "jetmoe/build_config.hpp"
#include "parallel/comm.hpp"

extern "C" void sgemv_(const char* trans, const int* m, const int* n, const float* alpha, const float* a,
                       const int* lda, const float* x, const int* incx, const float* beta, float* y, const int* incy);

namespace {

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

template <class F>
double median_seconds(int repeats, F&& f) {
  f();  // warm-up
  std::vector<double> t;
  for (int r = 0; r < repeats; ++r) {
    const double t0 = now();
    f();
    Kokkos::fence();
    t.push_back(now() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

void fill(const jetmoe::View2& v, unsigned seed) {
  auto h = Kokkos::create_mirror_view(v);
  unsigned s = seed;
  for (std::size_t i = 0; i < h.extent(0); ++i)
    for (std::size_t j = 0; j < h.extent(1); ++j) {
      s = s * 1664525u + 1013904223u;
      h(i, j) = float(int(s >> 9) - (1 << 22)) / float(1 << 22) * 0.05f;
    }
  Kokkos::deep_copy(v, h);
}

}  // namespace

int main(int argc, char** argv) {
  int repeats = 20;
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--repeats" && i + 1 < argc) repeats = std::max(1, std::atoi(argv[++i]));
    else if (a == "--json" && i + 1 < argc) json_path = argv[++i];
    else if (a.rfind("--kokkos-", 0) == 0) continue;
    else {
      std::fprintf(stderr, "usage: jetmoe-bench-gemm [--repeats N] [--json FILE]\n");
      return 2;
    }
  }
  jetmoe::MpiSession mpi(&argc, &argv);
  Kokkos::ScopeGuard kokkos(argc, argv);
  const char* ct = std::getenv("OPENBLAS_CORETYPE");
  const char* nt = std::getenv("OPENBLAS_NUM_THREADS");
  std::printf("jetmoe-bench-gemm: %s build, BLAS %s, OPENBLAS_CORETYPE=%s OPENBLAS_NUM_THREADS=%s, median of %d\n\n",
              JETMOE_BUILD_TYPE, JETMOE_BLAS_LIBRARIES, ct ? ct : "(unset)", nt ? nt : "(unset)", repeats);
  // {M, K, N, what}: y[M, N] = x[M, K] * W[N, K]^T, W row-major as the checkpoints store it.
  struct Shape {
    int M, K, N;
    const char* what;
  };
  const std::vector<Shape> shapes = {
      {1, 512, 32000, "lm_head, decode b1"},     {4, 512, 32000, "lm_head, decode b4"},
      {128, 512, 32000, "lm_head, prefill b1"},  {512, 512, 32000, "lm_head, prefill b4"},
      {1, 512, 1536, "MoE W_in, 1 row"},         {32, 512, 1536, "MoE W_in, 32 rows"},
      {128, 512, 1536, "MoE W_in, 128 rows"},    {1, 768, 512, "MoE W_out, 1 row"},
      {128, 768, 512, "MoE W_out, 128 rows"},    {1, 512, 512, "MoA W_q, 1 row"},
      {128, 512, 512, "MoA W_q, 128 rows"},      {512, 512, 1024, "kv_proj, prefill b4"},
      {1024, 1024, 1024, "square 1024"},
  };
  std::printf("  %-22s %5s %5s %6s %10s %9s %9s %12s %9s %12s\n", "shape", "M", "K", "N", "linear ms", "GFLOP/s",
              "W GB/s", "M x sgemv ms", "speed-up", "KK gemv LL");
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const Shape& s : shapes) {
    jetmoe::View2 x("x", s.M, s.K), w("w", s.N, s.K), y("y", s.M, s.N);
    fill(x, 1), fill(w, 2);
    const double t = median_seconds(repeats, [&] { jetmoe::linear(x, w, y); });
    const double flops = 2.0 * s.M * s.K * s.N, wbytes = 4.0 * s.K * s.N;
    nlohmann::ordered_json row = {{"what", s.what}, {"M", s.M}, {"K", s.K}, {"N", s.N}, {"linear_seconds", t},
                                  {"gflops", flops / t * 1e-9}, {"weight_gbytes_per_s", wbytes / t * 1e-9}};
    if (s.M <= 4) {
      // y[m, :] = W x[m, :]: column-major, W is a K x N matrix with lda K, so y = W^T x is sgemv "T".
      const float one = 1.0f, zero = 0.0f;
      const int inc = 1;
      const double tv = median_seconds(repeats, [&] {
        for (int m = 0; m < s.M; ++m)
          sgemv_("T", &s.K, &s.N, &one, w.data(), &s.K, x.data() + std::size_t(m) * s.K, &inc, &zero,
                 y.data() + std::size_t(m) * s.N, &inc);
      });
      row["sgemv_seconds"] = tv;
      // The same through Kokkos Kernels, portably: W [N, K] row-major is W^T [K, N] column-major, so with
      // LayoutLeft views of W^T, x and y all three layouts agree and KokkosBlas::gemv("T") reaches the BLAS
      // (Kokkos Kernels 3.4 unifies rank-1 views to LayoutLeft, so a LayoutRight W never matches its TPL).
      using LeftMatrix = Kokkos::View<const float**, Kokkos::LayoutLeft, jetmoe::MemSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
      using LeftIn = Kokkos::View<const float*, Kokkos::LayoutLeft, jetmoe::MemSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
      using LeftOut = Kokkos::View<float*, Kokkos::LayoutLeft, jetmoe::MemSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
      const LeftMatrix wt(w.data(), s.K, s.N);
      const double tk = median_seconds(repeats, [&] {
        for (int m = 0; m < s.M; ++m)
          KokkosBlas::gemv("T", 1.0f, wt, LeftIn(x.data() + std::size_t(m) * s.K, s.K), 0.0f,
                           LeftOut(y.data() + std::size_t(m) * s.N, s.N));
      });
      row["kokkos_gemv_layoutleft_seconds"] = tk;
      std::printf("  %-22s %5d %5d %6d %10.3f %9.1f %9.1f %12.3f %8.2fx %12.3f\n", s.what, s.M, s.K, s.N, 1e3 * t,
                  flops / t * 1e-9, wbytes / t * 1e-9, 1e3 * tv, t / tv, 1e3 * tk);
    } else {
      std::printf("  %-22s %5d %5d %6d %10.3f %9.1f %9.1f\n", s.what, s.M, s.K, s.N, 1e3 * t, flops / t * 1e-9,
                  wbytes / t * 1e-9);
    }
    out.push_back(row);
  }
  if (!json_path.empty()) std::ofstream(json_path) << out.dump(1) << "\n";
  return 0;
}
