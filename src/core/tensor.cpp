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
  if (x.extent(0) == 1) {
    // One row (decoding one token): a matrix-vector product reads W once; GEMM would also pack it.
    KokkosBlas::gemv("N", 1.0f, w, Kokkos::subview(x, 0, Kokkos::ALL()), beta, Kokkos::subview(y, 0, Kokkos::ALL()));
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
