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
// Whether host code may touch MemSpace's memory directly: true on the host backends (Serial, OpenMP),
// false on Kokkos::Cuda, whose views are GPU memory (host code then goes through host mirrors).
constexpr bool host_memory = Kokkos::SpaceAccessibility<Kokkos::HostSpace, MemSpace>::accessible;

// Views of scalar R: the model runs in float; the training code is also instantiated in double so that
// finite-difference gradient checks can run in double precision.
template <class R> using Vec = Kokkos::View<R*, Kokkos::LayoutRight, MemSpace>;
template <class R> using Mat = Kokkos::View<R**, Kokkos::LayoutRight, MemSpace>;
template <class R> using Ten3 = Kokkos::View<R***, Kokkos::LayoutRight, MemSpace>;
template <class R> using Ten4 = Kokkos::View<R****, Kokkos::LayoutRight, MemSpace>;
using View1 = Vec<float>;
using View2 = Mat<float>;
using View3 = Ten3<float>;
using View4 = Ten4<float>;
using IntView1 = Kokkos::View<std::int32_t*, Kokkos::LayoutRight, MemSpace>;
using IntView2 = Kokkos::View<std::int32_t**, Kokkos::LayoutRight, MemSpace>;
using IndexView1 = Kokkos::View<std::int64_t*, Kokkos::LayoutRight, MemSpace>;

// Rows [begin, end) of a row-major matrix: contiguous, still LayoutRight.
template <class R>
Mat<R> rows(const Mat<R>& m, std::int64_t begin, std::int64_t end) {
  return Kokkos::subview(m, std::make_pair(begin, end), Kokkos::ALL());
}
// Expert e of an [E, out, in] weight.
template <class R>
Mat<R> expert(const Ten3<R>& w, std::int64_t e) {
  return Kokkos::subview(w, e, Kokkos::ALL(), Kokkos::ALL());
}
// A contiguous view seen as a flat array.
template <class V>
Vec<typename V::value_type> flat(const V& v) {
  return Vec<typename V::value_type>(v.data(), v.size());
}

// Copies `from` (MemSpace: host or GPU memory) into `out`, host memory of from.extent(0) floats.
inline void copy_to_host(const Vec<float>& from, float* out) {
  Kokkos::deep_copy(Kokkos::View<float*, Kokkos::HostSpace, Kokkos::MemoryTraits<Kokkos::Unmanaged>>(out, from.extent(0)),
                    from);
}

// sum_c x[c] y[c] over 8 interleaved lanes added in a fixed order: independent chains that the compiler
// vectorises, and the same result on every backend and thread count.
template <class R>
KOKKOS_INLINE_FUNCTION R dot_lanes(const R* x, const R* y, std::int64_t n) {
  constexpr int lanes = 8;
  R acc[lanes];
  for (int l = 0; l < lanes; ++l) acc[l] = 0;
  std::int64_t c = 0;
  for (; c + lanes <= n; c += lanes)
    for (int l = 0; l < lanes; ++l) acc[l] += x[c + l] * y[c + l];
  for (int l = 0; c < n; ++c, ++l) acc[l] += x[c] * y[c];
  return ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
}

// Instantiated for R = float and double.
// y = beta * y + x * W^T   (x [M, K], W [N, K], y [M, N]): a linear layer without bias.
template <class R>
void linear(const Mat<R>& x, const Mat<R>& w, const Mat<R>& y, double beta = 0.0);
// y = beta * y + x * W     (x [M, K], W [K, N], y [M, N]).
template <class R>
void matmul_nn(const Mat<R>& x, const Mat<R>& w, const Mat<R>& y, double beta = 0.0);
// y = beta * y + x^T * W   (x [K, M], W [K, N], y [M, N]): weight gradients.
template <class R>
void matmul_tn(const Mat<R>& x, const Mat<R>& w, const Mat<R>& y, double beta = 0.0);

}  // namespace jetmoe
