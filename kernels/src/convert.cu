// bf16 <-> fp32 conversion kernels. Memory bound: 16-byte loads and stores where the pointers allow,
// a grid-stride loop, and a scalar tail.
#include "common.cuh"
#include "jetmoe/kernels.h"

#include <algorithm>

namespace jk::detail {
namespace {

constexpr int kConvertThreads = 256;
constexpr std::int64_t kMaxConvertBlocks = 65536;  // grid-stride beyond this

// VEC elements per vector step; VEC == 1 is the plain scalar kernel for unaligned pointers.
template <int VEC>
__global__ void __launch_bounds__(kConvertThreads)
bf16_to_f32_kernel(const std::uint16_t* __restrict__ in, float* __restrict__ out, std::int64_t n) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t num_vec = n / VEC;
  for (std::int64_t i = first; i < num_vec; i += stride) {
    const auto packed = reinterpret_cast<const Pack<std::uint16_t, VEC>*>(in)[i];
    // One 16-byte load of 8 bf16 becomes two 16-byte stores of 4 fp32.
    constexpr int kOut = VEC < 4 ? VEC : 4;
#pragma unroll
    for (int h = 0; h < VEC / kOut; ++h) {
      Pack<float, kOut> result;
#pragma unroll
      for (int k = 0; k < kOut; ++k) result.v[k] = bf16_bits_to_float(packed.v[h * kOut + k]);
      reinterpret_cast<Pack<float, kOut>*>(out)[i * (VEC / kOut) + h] = result;
    }
  }
  for (std::int64_t i = num_vec * VEC + first; i < n; i += stride) out[i] = bf16_bits_to_float(in[i]);
}

template <int VEC>
__global__ void __launch_bounds__(kConvertThreads)
f32_to_bf16_kernel(const float* __restrict__ in, std::uint16_t* __restrict__ out, std::int64_t n) {
  const std::int64_t stride = static_cast<std::int64_t>(gridDim.x) * blockDim.x;
  const std::int64_t first = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const std::int64_t num_vec = n / VEC;
  for (std::int64_t i = first; i < num_vec; i += stride) {
    const auto packed = reinterpret_cast<const Pack<float, VEC>*>(in)[i];
    Pack<std::uint16_t, VEC> result;
#pragma unroll
    for (int k = 0; k < VEC; ++k) result.v[k] = float_to_bf16_bits(packed.v[k]);
    reinterpret_cast<Pack<std::uint16_t, VEC>*>(out)[i] = result;
  }
  for (std::int64_t i = num_vec * VEC + first; i < n; i += stride) out[i] = float_to_bf16_bits(in[i]);
}

unsigned convert_blocks(std::int64_t work_items) {
  const std::int64_t blocks = (work_items + kConvertThreads - 1) / kConvertThreads;
  return static_cast<unsigned>(std::clamp<std::int64_t>(blocks, 1, kMaxConvertBlocks));
}

}  // namespace
}  // namespace jk::detail

cudaError_t jk_bf16_to_f32(const std::uint16_t* in, float* out, std::int64_t n, cudaStream_t stream) {
  using namespace jk::detail;
  if (n < 0 || (n > 0 && (in == nullptr || out == nullptr))) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  // 8 bf16 (16 bytes) in, 2 x 4 fp32 (2 x 16 bytes) out.
  if (is_aligned(in, 16) && is_aligned(out, 16)) {
    bf16_to_f32_kernel<8><<<convert_blocks(n / 8 + 1), kConvertThreads, 0, stream>>>(in, out, n);
  } else {
    bf16_to_f32_kernel<1><<<convert_blocks(n), kConvertThreads, 0, stream>>>(in, out, n);
  }
  return cudaGetLastError();
}

cudaError_t jk_f32_to_bf16(const float* in, std::uint16_t* out, std::int64_t n, cudaStream_t stream) {
  using namespace jk::detail;
  if (n < 0 || (n > 0 && (in == nullptr || out == nullptr))) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  // 4 fp32 (16 bytes) in, 4 bf16 (8 bytes) out.
  if (is_aligned(in, 16) && is_aligned(out, 8)) {
    f32_to_bf16_kernel<4><<<convert_blocks(n / 4 + 1), kConvertThreads, 0, stream>>>(in, out, n);
  } else {
    f32_to_bf16_kernel<1><<<convert_blocks(n), kConvertThreads, 0, stream>>>(in, out, n);
  }
  return cudaGetLastError();
}
