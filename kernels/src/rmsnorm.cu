// RMSNorm forward, one thread block per row (grid-stride over rows).
// Two passes over the row: the sum of squares, then normalise and scale. The second read of x hits
// L1/L2 (a JetMoE row is 4 KB in bf16); a register-resident single-pass variant is future tuning.
#include "common.cuh"
#include "jetmoe/kernels.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <type_traits>

namespace jk::detail {
namespace {

constexpr int kMaxRmsnormThreads = 512;

// Storage type <-> fp32 compute type.
template <typename T>
struct Storage;

template <>
struct Storage<float> {
  static __device__ __forceinline__ float load(float v) { return v; }
  static __device__ __forceinline__ float store(float v) { return v; }
};

template <>
struct Storage<std::uint16_t> {  // bf16 bits
  static __device__ __forceinline__ float load(std::uint16_t v) { return bf16_bits_to_float(v); }
  static __device__ __forceinline__ std::uint16_t store(float v) { return float_to_bf16_bits(v); }
};

// HF order: normalise in fp32, cast to the input dtype, multiply by the weight in the input dtype.
// For bf16 the product of two bf16 values is exact in fp32, so one rounding gives the bf16 product.
template <typename T>
__device__ __forceinline__ T normalise_and_scale(T x, T w, float r) {
  float normed = Storage<T>::load(x) * r;
  if constexpr (std::is_same_v<T, std::uint16_t>) normed = bf16_bits_to_float(float_to_bf16_bits(normed));
  return Storage<T>::store(Storage<T>::load(w) * normed);
}

// x and y are not __restrict__: in-place use (y == x) is allowed. Each element is read and then
// written by the same thread in the second pass, so in place is race free.
template <typename T, int VEC>
__global__ void __launch_bounds__(kMaxRmsnormThreads)
rmsnorm_fwd_kernel(const T* x, const T* __restrict__ weight, T* y, float* __restrict__ rstd,
                   std::int64_t rows, std::int64_t hidden, float eps) {
  using V = Pack<T, VEC>;
  __shared__ float scratch[kWarpSize];
  const std::int64_t num_vec = hidden / VEC;  // VEC divides hidden (checked by the launcher)
  const float inv_hidden = 1.0f / static_cast<float>(hidden);
  const V* w_vec = reinterpret_cast<const V*>(weight);

  for (std::int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const V* x_vec = reinterpret_cast<const V*>(x + row * hidden);
    V* y_vec = reinterpret_cast<V*>(y + row * hidden);

    float sum_sq = 0.0f;
    for (std::int64_t i = threadIdx.x; i < num_vec; i += blockDim.x) {
      const V xv = x_vec[i];
#pragma unroll
      for (int k = 0; k < VEC; ++k) {
        const float v = Storage<T>::load(xv.v[k]);
        sum_sq += v * v;
      }
    }
    sum_sq = block_sum(sum_sq, scratch);
    const float r = rsqrtf(sum_sq * inv_hidden + eps);
    if (rstd != nullptr && threadIdx.x == 0) rstd[row] = r;

    for (std::int64_t i = threadIdx.x; i < num_vec; i += blockDim.x) {
      const V xv = x_vec[i];
      const V wv = w_vec[i];
      V yv;
#pragma unroll
      for (int k = 0; k < VEC; ++k) yv.v[k] = normalise_and_scale(xv.v[k], wv.v[k], r);
      y_vec[i] = yv;
    }
  }
}

bool valid_rmsnorm_args(const void* x, const void* weight, const void* y, std::int64_t rows,
                        std::int64_t hidden, float eps) {
  if (rows < 0 || hidden <= 0 || !std::isfinite(eps) || eps < 0.0f) return false;
  if (rows > 0 && (x == nullptr || weight == nullptr || y == nullptr)) return false;
  return true;
}

// VEC_WIDE elements make 16 bytes; the wide path needs every row start 16-byte aligned.
template <typename T, int VEC_WIDE>
cudaError_t launch_rmsnorm_fwd(const T* x, const T* weight, T* y, float* rstd, std::int64_t rows,
                               std::int64_t hidden, float eps, cudaStream_t stream) {
  if (!valid_rmsnorm_args(x, weight, y, rows, hidden, eps)) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  const bool wide = hidden % VEC_WIDE == 0 && is_aligned(x, 16) && is_aligned(y, 16) && is_aligned(weight, 16);
  const std::int64_t work_per_row = wide ? hidden / VEC_WIDE : hidden;
  const std::int64_t warps = (work_per_row + kWarpSize - 1) / kWarpSize;
  const int threads = static_cast<int>(std::clamp<std::int64_t>(warps * kWarpSize, kWarpSize, kMaxRmsnormThreads));
  const unsigned blocks = static_cast<unsigned>(std::min<std::int64_t>(rows, INT_MAX));
  if (wide) {
    rmsnorm_fwd_kernel<T, VEC_WIDE><<<blocks, threads, 0, stream>>>(x, weight, y, rstd, rows, hidden, eps);
  } else {
    rmsnorm_fwd_kernel<T, 1><<<blocks, threads, 0, stream>>>(x, weight, y, rstd, rows, hidden, eps);
  }
  return cudaGetLastError();
}

}  // namespace
}  // namespace jk::detail

cudaError_t jk_rmsnorm_fwd_f32(const float* x, const float* weight, float* y, float* rstd, std::int64_t rows,
                               std::int64_t hidden, float eps, cudaStream_t stream) {
  return jk::detail::launch_rmsnorm_fwd<float, 4>(x, weight, y, rstd, rows, hidden, eps, stream);
}

cudaError_t jk_rmsnorm_fwd_bf16(const std::uint16_t* x, const std::uint16_t* weight, std::uint16_t* y,
                                float* rstd, std::int64_t rows, std::int64_t hidden, float eps,
                                cudaStream_t stream) {
  return jk::detail::launch_rmsnorm_fwd<std::uint16_t, 8>(x, weight, y, rstd, rows, hidden, eps, stream);
}
