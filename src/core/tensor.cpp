#include "core/tensor.hpp"

#include <KokkosBlas2_gemv.hpp>
#include <KokkosBlas3_gemm.hpp>

#include "core/error.hpp"

namespace jetmoe {

namespace {
void check(bool ok, const char* what) { JETMOE_ASSERT(ok, what); }
}  // namespace

void linear(const View2& x, const View2& w, const View2& y, float beta) {
  check(x.extent(1) == w.extent(1) && y.extent(0) == x.extent(0) && y.extent(1) == w.extent(0), "linear: shapes");
  if (x.extent(0) == 0 || w.extent(0) == 0) return;
  // Few rows (decoding): matrix-vector products read W once each; GEMM would also pack W on every call.
  // W [N, K] row-major is W^T [K, N] column-major: with LayoutLeft views of W^T, x and y the three layouts
  // agree and KokkosBlas::gemv reaches the vendor BLAS (Kokkos Kernels unifies rank-1 views to LayoutLeft,
  // so a LayoutRight W would fall back to its slow native kernel).
  const std::size_t M = x.extent(0), N = w.extent(0), K = w.extent(1);
  const bool small_w = N * K <= (std::size_t(2) << 20);  // <= 8 MB: stays in cache across the M calls
  if ((M == 1 || (M <= 4 && small_w)) && w.stride(0) == K && x.stride(1) == 1 && y.stride(1) == 1) {
    using LeftMatrix = Kokkos::View<const float**, Kokkos::LayoutLeft, MemSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
    using LeftIn = Kokkos::View<const float*, Kokkos::LayoutLeft, MemSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
    using LeftOut = Kokkos::View<float*, Kokkos::LayoutLeft, MemSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>;
    const LeftMatrix wt(w.data(), K, N);
    for (std::size_t m = 0; m < M; ++m)
      KokkosBlas::gemv("T", 1.0f, wt, LeftIn(x.data() + m * x.stride(0), K), beta, LeftOut(y.data() + m * y.stride(0), N));
    return;
  }
  KokkosBlas::gemm("N", "T", 1.0f, x, w, beta, y);
}

void matmul_nn(const View2& x, const View2& w, const View2& y, float beta) {
  check(x.extent(1) == w.extent(0) && y.extent(0) == x.extent(0) && y.extent(1) == w.extent(1), "matmul_nn: shapes");
  if (x.extent(0) == 0 || w.extent(1) == 0) return;
  KokkosBlas::gemm("N", "N", 1.0f, x, w, beta, y);
}

void matmul_tn(const View2& x, const View2& w, const View2& y, float beta) {
  check(x.extent(0) == w.extent(0) && y.extent(0) == x.extent(1) && y.extent(1) == w.extent(1), "matmul_tn: shapes");
  if (y.extent(0) == 0 || y.extent(1) == 0) return;
  if (x.extent(0) == 0) {  // empty sum: y = beta * y
    Kokkos::View<float**, Kokkos::LayoutRight, MemSpace> yy = y;
    Kokkos::parallel_for("matmul_tn_scale", Kokkos::MDRangePolicy<ExecSpace, Kokkos::Rank<2>>({0, 0}, {y.extent(0), y.extent(1)}),
                         KOKKOS_LAMBDA(int i, int j) { yy(i, j) *= beta; });
    return;
  }
  KokkosBlas::gemm("T", "N", 1.0f, x, w, beta, y);
}

}  // namespace jetmoe
