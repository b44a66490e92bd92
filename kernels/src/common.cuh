#pragma once
// Internal helpers shared by the kernels: error propagation, alignment tests, vector packs, bf16 bit
// conversions and block reductions. Not part of the public interface.
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

// Returns the error of a CUDA runtime call from the enclosing function (which returns cudaError_t).
#define JK_RETURN_IF_ERROR(expr)                          \
  do {                                                    \
    const cudaError_t jk_status_ = (expr);                \
    if (jk_status_ != cudaSuccess) return jk_status_;     \
  } while (0)

namespace jk::detail {

constexpr int kWarpSize = 32;

inline bool is_aligned(const void* p, std::size_t bytes) {
  return reinterpret_cast<std::uintptr_t>(p) % bytes == 0;
}

// The current device's SM count (for persistent grids).
inline cudaError_t multiprocessor_count(int* sms) {
  int device = 0;
  JK_RETURN_IF_ERROR(cudaGetDevice(&device));
  return cudaDeviceGetAttribute(sms, cudaDevAttrMultiProcessorCount, device);
}

// Bump allocator carving typed, 256-byte aligned regions out of one device buffer (a workspace or a
// saved-activations buffer); with base == nullptr it only measures (used = the bytes needed).
struct Carver {
  char* base;
  std::size_t used = 0;
  template <typename T>
  T* take(std::int64_t n) {
    used = (used + 255) / 256 * 256;
    T* p = base ? reinterpret_cast<T*>(base + used) : nullptr;
    used += static_cast<std::size_t>(n > 1 ? n : 1) * sizeof(T);
    return p;
  }
};

// N values of T moved as one naturally aligned vector load/store (16 bytes for the widths used here).
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
  T v[N];
};

// bf16 bits -> fp32: exact, NaN payloads kept.
__device__ __forceinline__ float bf16_bits_to_float(std::uint16_t b) {
  return __uint_as_float(static_cast<std::uint32_t>(b) << 16);
}

// fp32 -> bf16 bits, round to nearest, ties to even. Bit arithmetic rather than cvt.rn.bf16.f32 so
// the NaN rule (keep sign and top payload, set the quiet bit) is ours and matches the host code.
__device__ __forceinline__ std::uint16_t float_to_bf16_bits(float f) {
  std::uint32_t u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);  // carries into the exponent give the right result, Inf included
  return static_cast<std::uint16_t>(u >> 16);
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sum over the whole block; every thread gets the result. blockDim.x must be a multiple of 32 and
// every thread of the block must call it. `scratch` holds 32 floats of shared memory; the function
// synchronises before returning, so scratch may be reused by the next call.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const int num_warps = blockDim.x / kWarpSize;
  v = warp_sum(v);
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < num_warps ? scratch[lane] : 0.0f;
  v = warp_sum(v);
  __syncthreads();
  return v;
}

}  // namespace jk::detail
