#include "core/tensor.hpp"

#include <KokkosBlas2_gemv.hpp>
#include <KokkosBlas3_gemm.hpp>

#include "core/error.hpp"

namespace jetmoe {

namespace {
void check(bool ok, const char* what) { JETMOE_ASSERT(ok, what); }
}  // namespace

template <class R>
void linear(const Mat<R>& x, const Mat<R>& w, const Mat<R>& y, double beta_) {
  const R beta = R(beta_);
  check(x.extent(1) == w.extent(1) && y.extent(0) == x.extent(0) && y.extent(1) == w.extent(0), "linear: shapes");
  if (x.extent(0) == 0 || w.extent(0) == 0) return;
  // Few rows (decoding): matrix-vector products read W once each; GEMM would also pack W on every call.
  // W [N, K] row-major is W^T [K, N] column-major: with LayoutLeft views of W^T, x and y the three layouts
  // agree and KokkosBlas::gemv reaches the vendor BLAS (Kokkos Kernels unifies rank-1 views to LayoutLeft,
  // so a LayoutRight W would fall back to its slow native kernel).
  const std::size_t M = x.extent(0), N = w.extent(0), K = w.extent(1);
  const bool small_w = N * K <= (std::size_t(2) << 20);  // <= 8 MB: stays in cache across the M calls
  const bool dense = w.stride(0) == K && x.stride(1) == 1 && y.stride(1) == 1;
  if ((M == 1 || (M <= 4 && small_w)) && dense) {
    using LeftMatrix = Kokkos::View<const R**, Kokkos::LayoutLeft, MemSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
    using LeftIn = Kokkos::View<const R*, Kokkos::LayoutLeft, MemSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
    using LeftOut = Kokkos::View<R*, Kokkos::LayoutLeft, MemSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
    const LeftMatrix wt(w.data(), K, N);
    for (std::size_t m = 0; m < M; ++m)
      KokkosBlas::gemv("T", R(1), wt, LeftIn(x.data() + m * x.stride(0), K), beta, LeftOut(y.data() + m * y.stride(0), N));
    return;
  }
  if (host_memory && M <= 4 && dense) {
    // 2-4 rows against a W too large for the cache (the LM head of a decoding batch, large experts):
    // one pass over W, each row of W against the M rows of x (which stay in L1). M GEMV calls would
    // read W M times, and OpenBLAS's GEMM packs W for so few rows (the small model's LM head, 4 x 512 x
    // 32000: 10.1 against GEMM's 12.6 ms per decode step, one core; bench/README.md, bottleneck 1).
    const std::int64_t rows_x = std::int64_t(M), k = std::int64_t(K);
    const Mat<R> xx = x, ww = w, yy = y;
    Kokkos::parallel_for(
        "linear_few_rows", Range(0, std::int64_t(N)), KOKKOS_LAMBDA(std::int64_t n) {
          for (std::int64_t m = 0; m < rows_x; ++m) {
            const R dot = dot_lanes(&xx(m, 0), &ww(n, 0), k);
            yy(m, n) = beta == R(0) ? dot : beta * yy(m, n) + dot;
          }
        });
    return;
  }
  KokkosBlas::gemm("N", "T", R(1), x, w, beta, y);
}

template <class R>
void matmul_nn(const Mat<R>& x, const Mat<R>& w, const Mat<R>& y, double beta_) {
  const R beta = R(beta_);
  check(x.extent(1) == w.extent(0) && y.extent(0) == x.extent(0) && y.extent(1) == w.extent(1), "matmul_nn: shapes");
  if (x.extent(0) == 0 || w.extent(1) == 0) return;
  KokkosBlas::gemm("N", "N", R(1), x, w, beta, y);
}

template <class R>
void matmul_tn(const Mat<R>& x, const Mat<R>& w, const Mat<R>& y, double beta_) {
  const R beta = R(beta_);
  check(x.extent(0) == w.extent(0) && y.extent(0) == x.extent(1) && y.extent(1) == w.extent(1), "matmul_tn: shapes");
  if (y.extent(0) == 0 || y.extent(1) == 0) return;
  if (x.extent(0) == 0) {  // empty sum: y = beta * y
    Mat<R> yy = y;
    Kokkos::parallel_for("matmul_tn_scale", Kokkos::MDRangePolicy<ExecSpace, Kokkos::Rank<2>>({0, 0}, {y.extent(0), y.extent(1)}),
                         KOKKOS_LAMBDA(int i, int j) { yy(i, j) *= beta; });
    return;
  }
  KokkosBlas::gemm("T", "N", R(1), x, w, beta, y);
}

#define JETMOE_INSTANTIATE(R)                                                       \
  template void linear<R>(const Mat<R>&, const Mat<R>&, const Mat<R>&, double);     \
  template void matmul_nn<R>(const Mat<R>&, const Mat<R>&, const Mat<R>&, double);  \
  template void matmul_tn<R>(const Mat<R>&, const Mat<R>&, const Mat<R>&, double);
JETMOE_INSTANTIATE(float)
JETMOE_INSTANTIATE(double)
#undef JETMOE_INSTANTIATE

}  // namespace jetmoe
