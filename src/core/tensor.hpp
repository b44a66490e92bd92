#pragma once
// The one set of view aliases and the one GEMM wrapper the model code uses.
//
// Activations and weights are row-major (LayoutRight) float views in the default execution space's
// memory. Expert weights are [E, out, in] as in the checkpoints; subview(W, e, ALL, ALL) is a
// contiguous row-major matrix, and so is a block of rows of an activation, so every GEMM reaches the
// vendor BLAS (OpenBLAS on the host, cuBLAS through Kokkos Kernels on CUDA).
#include <Kokkos_Core.hpp>

#include <cstdint>
#include <utility>

namespace jetmoe {

using ExecSpace = Kokkos::DefaultExecutionSpace;
using MemSpace = ExecSpace::memory_space;
using Range = Kokkos::RangePolicy<ExecSpace>;

using View1 = Kokkos::View<float*, Kokkos::LayoutRight, MemSpace>;
using View2 = Kokkos::View<float**, Kokkos::LayoutRight, MemSpace>;
using View3 = Kokkos::View<float***, Kokkos::LayoutRight, MemSpace>;
using View4 = Kokkos::View<float****, Kokkos::LayoutRight, MemSpace>;
using IntView1 = Kokkos::View<std::int32_t*, Kokkos::LayoutRight, MemSpace>;
using IntView2 = Kokkos::View<std::int32_t**, Kokkos::LayoutRight, MemSpace>;
using IndexView1 = Kokkos::View<std::int64_t*, Kokkos::LayoutRight, MemSpace>;

// Rows [begin, end) of a row-major matrix: contiguous, still LayoutRight.
inline View2 rows(const View2& m, std::int64_t begin, std::int64_t end) {
  return Kokkos::subview(m, std::make_pair(begin, end), Kokkos::ALL());
}
// Expert e of an [E, out, in] weight.
inline View2 expert(const View3& w, std::int64_t e) { return Kokkos::subview(w, e, Kokkos::ALL(), Kokkos::ALL()); }

// y = beta * y + x * W^T   (x [M, K], W [N, K], y [M, N]): a linear layer without bias.
void linear(const View2& x, const View2& w, const View2& y, float beta = 0.0f);
// y = beta * y + x * W     (x [M, K], W [K, N], y [M, N]).
void matmul_nn(const View2& x, const View2& w, const View2& y, float beta = 0.0f);
// y = beta * y + x^T * W   (x [K, M], W [K, N], y [M, N]): weight gradients.
void matmul_tn(const View2& x, const View2& w, const View2& y, float beta = 0.0f);

}  // namespace jetmoe
