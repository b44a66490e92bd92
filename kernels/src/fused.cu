// Family 'fused': RMSNorm backward, RoPE forward/backward, cross-entropy over the vocabulary, global
// gradient norm and multi-tensor AdamW (interface and numerics: include/jetmoe/fused.h; design and
// measurements: notes/fused.md).
//
// Rounding is spelled out with __fmul_rn/__fadd_rn/__fmaf_rn wherever the result must equal another
// implementation bit for bit (HF's bf16 sequences, the CPU AdamW, the simple vs tuned dw): those
// intrinsics are never contracted or reordered by nvcc.
#include "common.cuh"
#include "jetmoe/kernels.h"

#include <algorithm>
#include <climits>
#include <new>
#include <cmath>
#include <type_traits>

namespace jk::detail {
namespace {

// ---- storage <-> fp32 -----------------------------------------------------------------------------

template <typename T>
struct Io;

template <>
struct Io<float> {
  static __device__ __forceinline__ float load(float v) { return v; }
  static __device__ __forceinline__ float store(float v) { return v; }
  static __device__ __forceinline__ float round(float v) { return v; }  // rounding to the storage type
};

template <>
struct Io<std::uint16_t> {  // bf16 bits
  static __device__ __forceinline__ float load(std::uint16_t v) { return bf16_bits_to_float(v); }
  static __device__ __forceinline__ std::uint16_t store(float v) { return float_to_bf16_bits(v); }
  static __device__ __forceinline__ float round(float v) { return bf16_bits_to_float(float_to_bf16_bits(v)); }
};

__device__ __forceinline__ std::int64_t imin(std::int64_t a, std::int64_t b) { return a < b ? a : b; }

unsigned grid_for(std::int64_t work, int per_block, std::int64_t cap = 65535LL * 32) {
  const std::int64_t blocks = (work + per_block - 1) / per_block;
  return static_cast<unsigned>(std::max<std::int64_t>(1, std::min(blocks, cap)));
}

// =====================================================================================================
// RMSNorm backward
// =====================================================================================================

constexpr int kNormThreads = 256;
constexpr std::int64_t kNormRowBlock = 32;  // rows per dw partial (fixed: the sum order depends on it)

// The value the forward multiplied by w: fp32 x*r, rounded to bf16 for bf16 (as rmsnorm.cu does).
template <typename T>
__device__ __forceinline__ float normed_value(T x, float r) {
  return Io<T>::round(__fmul_rn(Io<T>::load(x), r));
}

// dx, one block per row. dx may alias dy: every dy of the row is read before the block_sum barrier,
// and in the second loop each thread reads dy[c] before writing dx[c] for its own c.
template <typename T>
__global__ void __launch_bounds__(kNormThreads)
rmsnorm_bwd_dx_kernel(const T* __restrict__ x, const T* __restrict__ w, const float* __restrict__ rstd, const T* dy,
                      T* dx, std::int64_t rows, std::int64_t hidden) {
  __shared__ float scratch[kWarpSize];
  for (std::int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = x + row * hidden;
    const T* dyr = dy + row * hidden;
    T* dxr = dx + row * hidden;
    const float r = rstd[row];
    float dot = 0.0f;
    for (std::int64_t c = threadIdx.x; c < hidden; c += blockDim.x) {
      const float g = __fmul_rn(Io<T>::load(dyr[c]), Io<T>::load(w[c]));
      dot = __fmaf_rn(g, __fmul_rn(Io<T>::load(xr[c]), r), dot);
    }
    dot = block_sum(dot, scratch);
    const float mean = __fdiv_rn(dot, static_cast<float>(hidden));
    for (std::int64_t c = threadIdx.x; c < hidden; c += blockDim.x) {
      const float g = __fmul_rn(Io<T>::load(dyr[c]), Io<T>::load(w[c]));
      const float xhat = __fmul_rn(Io<T>::load(xr[c]), r);
      dxr[c] = Io<T>::store(__fmul_rn(r, __fsub_rn(g, __fmul_rn(xhat, mean))));
    }
  }
}

// dw partials, simple path: thread = column, block row = kNormRowBlock rows, rows in order.
template <typename T>
__global__ void __launch_bounds__(kNormThreads)
rmsnorm_bwd_dw_partial_kernel(const T* __restrict__ x, const float* __restrict__ rstd, const T* __restrict__ dy,
                              float* __restrict__ partial, std::int64_t rows, std::int64_t hidden) {
  // Grid-stride over the columns too: grid.x is capped on the host.
  for (std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < hidden;
       c += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    for (std::int64_t rb = blockIdx.y; rb * kNormRowBlock < rows; rb += gridDim.y) {
      const std::int64_t end = imin(rows, (rb + 1) * kNormRowBlock);
      float acc = 0.0f;
      for (std::int64_t row = rb * kNormRowBlock; row < end; ++row) {
        acc = __fmaf_rn(Io<T>::load(dy[row * hidden + c]), normed_value(x[row * hidden + c], rstd[row]), acc);
      }
      partial[rb * hidden + c] = acc;
    }
  }
}

// dw = beta dw + sum over the row blocks of the partials, in row-block order.
__global__ void __launch_bounds__(kNormThreads)
rmsnorm_bwd_dw_final_kernel(const float* __restrict__ partial, float* __restrict__ dw, std::int64_t num_blocks,
                            std::int64_t hidden, bool accumulate) {
  for (std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < hidden;
       c += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    float sum = 0.0f;
    for (std::int64_t b = 0; b < num_blocks; ++b) sum = __fadd_rn(sum, partial[b * hidden + c]);
    dw[c] = accumulate ? __fadd_rn(dw[c], sum) : sum;
  }
}

// Tuned path: one block per kNormRowBlock rows; each thread owns up to K vectors of VEC columns and
// keeps their x, dy in registers for the row and their dw partial across the rows (same order and
// operations as rmsnorm_bwd_dw_partial_kernel, so the partials are bit-identical).
template <typename T, int VEC, int K>
__global__ void __launch_bounds__(kNormThreads)
rmsnorm_bwd_fused_kernel(const T* __restrict__ x, const T* __restrict__ w, const float* __restrict__ rstd,
                         const T* dy, T* dx, float* __restrict__ partial, std::int64_t rows, std::int64_t hidden) {
  using V = Pack<T, VEC>;
  __shared__ float scratch[kWarpSize];
  const std::int64_t num_vec = hidden / VEC;
  const V* w_vec = reinterpret_cast<const V*>(w);
  float wv[K][VEC];
  float dw_acc[K][VEC];
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const std::int64_t v = threadIdx.x + static_cast<std::int64_t>(k) * kNormThreads;
    V pack{};
    if (v < num_vec) pack = w_vec[v];
#pragma unroll
    for (int e = 0; e < VEC; ++e) {
      wv[k][e] = Io<T>::load(pack.v[e]);
      dw_acc[k][e] = 0.0f;
    }
  }
  const std::int64_t rb = blockIdx.x;
  const std::int64_t end = imin(rows, (rb + 1) * kNormRowBlock);
  for (std::int64_t row = rb * kNormRowBlock; row < end; ++row) {
    const V* x_vec = reinterpret_cast<const V*>(x + row * hidden);
    const V* dy_vec = reinterpret_cast<const V*>(dy + row * hidden);
    V* dx_vec = reinterpret_cast<V*>(dx + row * hidden);
    const float r = rstd[row];
    V xp[K], dyp[K];
    float dot = 0.0f;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const std::int64_t v = threadIdx.x + static_cast<std::int64_t>(k) * kNormThreads;
      if (v < num_vec) {
        xp[k] = x_vec[v];
        dyp[k] = dy_vec[v];
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          const float g = __fmul_rn(Io<T>::load(dyp[k].v[e]), wv[k][e]);
          dot = __fmaf_rn(g, __fmul_rn(Io<T>::load(xp[k].v[e]), r), dot);
        }
      }
    }
    dot = block_sum(dot, scratch);
    const float mean = __fdiv_rn(dot, static_cast<float>(hidden));
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const std::int64_t v = threadIdx.x + static_cast<std::int64_t>(k) * kNormThreads;
      if (v < num_vec) {
        V out;
#pragma unroll
        for (int e = 0; e < VEC; ++e) {
          const float dyf = Io<T>::load(dyp[k].v[e]);
          const float g = __fmul_rn(dyf, wv[k][e]);
          const float xhat = __fmul_rn(Io<T>::load(xp[k].v[e]), r);
          out.v[e] = Io<T>::store(__fmul_rn(r, __fsub_rn(g, __fmul_rn(xhat, mean))));
          dw_acc[k][e] = __fmaf_rn(dyf, Io<T>::round(xhat), dw_acc[k][e]);
        }
        dx_vec[v] = out;
      }
    }
  }
  if (partial == nullptr) return;
#pragma unroll
  for (int k = 0; k < K; ++k) {
    const std::int64_t v = threadIdx.x + static_cast<std::int64_t>(k) * kNormThreads;
    if (v < num_vec) {
#pragma unroll
      for (int e = 0; e < VEC; ++e) partial[rb * hidden + v * VEC + e] = dw_acc[k][e];
    }
  }
}

bool valid_rmsnorm_bwd_args(const void* x, const void* w, const void* rstd, const void* dy, const void* dx,
                            const float* dw, float beta, const float* workspace, std::int64_t rows,
                            std::int64_t hidden) {
  if (rows < 0 || hidden <= 0) return false;
  if (!(beta == 0.0f || beta == 1.0f)) return false;
  if (rows > 0 && (x == nullptr || w == nullptr || rstd == nullptr || dy == nullptr || dx == nullptr)) return false;
  if (rows > 0 && dw != nullptr && workspace == nullptr) return false;  // rows == 0: no workspace (0 elements)
  if (rows > 0 && dx == x) return false;  // rows == 0: a no-op, null pointers allowed
  return true;
}

template <typename T>
cudaError_t launch_dw_final(const float* partial, float* dw, std::int64_t rows, std::int64_t hidden, float beta,
                            cudaStream_t stream) {
  const std::int64_t num_blocks = (rows + kNormRowBlock - 1) / kNormRowBlock;
  rmsnorm_bwd_dw_final_kernel<<<grid_for(hidden, kNormThreads), kNormThreads, 0, stream>>>(
      partial, dw, num_blocks, hidden, beta == 1.0f);
  return cudaGetLastError();
}

template <typename T>
cudaError_t rmsnorm_bwd_simple_ordered(const T* x, const T* w, const float* rstd, const T* dy, T* dx, float* dw,
                                       float beta, float* workspace, std::int64_t rows, std::int64_t hidden,
                                       cudaStream_t stream) {
  if (!valid_rmsnorm_bwd_args(x, w, rstd, dy, dx, dw, beta, workspace, rows, hidden)) return cudaErrorInvalidValue;
  if (rows == 0) {
    if (dw != nullptr && beta == 0.0f) return cudaMemsetAsync(dw, 0, static_cast<std::size_t>(hidden) * sizeof(float), stream);
    return cudaSuccess;
  }
  if (dw != nullptr) {  // before dx: dx may overwrite dy (in place)
    const std::int64_t num_blocks = (rows + kNormRowBlock - 1) / kNormRowBlock;
    const dim3 grid(grid_for(hidden, kNormThreads, 65535), static_cast<unsigned>(std::min<std::int64_t>(num_blocks, 65535)));
    rmsnorm_bwd_dw_partial_kernel<T><<<grid, kNormThreads, 0, stream>>>(x, rstd, dy, workspace, rows, hidden);
    JK_RETURN_IF_ERROR(cudaGetLastError());
    JK_RETURN_IF_ERROR(launch_dw_final<T>(workspace, dw, rows, hidden, beta, stream));
  }
  const unsigned row_grid = static_cast<unsigned>(std::min<std::int64_t>(rows, INT_MAX));
  rmsnorm_bwd_dx_kernel<T><<<row_grid, kNormThreads, 0, stream>>>(x, w, rstd, dy, dx, rows, hidden);
  return cudaGetLastError();
}

template <typename T, int VEC>
cudaError_t rmsnorm_bwd_tuned(const T* x, const T* w, const float* rstd, const T* dy, T* dx, float* dw, float beta,
                              float* workspace, std::int64_t rows, std::int64_t hidden, cudaStream_t stream) {
  if (!valid_rmsnorm_bwd_args(x, w, rstd, dy, dx, dw, beta, workspace, rows, hidden)) return cudaErrorInvalidValue;
  const bool aligned = hidden % VEC == 0 && is_aligned(x, 16) && is_aligned(w, 16) && is_aligned(dy, 16) &&
                       is_aligned(dx, 16);
  const std::int64_t vec_per_thread = (hidden / VEC + kNormThreads - 1) / kNormThreads;
  if (rows == 0 || !aligned || vec_per_thread > 4) {
    return rmsnorm_bwd_simple_ordered<T>(x, w, rstd, dy, dx, dw, beta, workspace, rows, hidden, stream);
  }
  const std::int64_t num_blocks = (rows + kNormRowBlock - 1) / kNormRowBlock;
  if (num_blocks > INT_MAX) return cudaErrorInvalidValue;
  const unsigned grid = static_cast<unsigned>(num_blocks);
  float* partial = dw != nullptr ? workspace : nullptr;
  switch (vec_per_thread) {
    case 1: rmsnorm_bwd_fused_kernel<T, VEC, 1><<<grid, kNormThreads, 0, stream>>>(x, w, rstd, dy, dx, partial, rows, hidden); break;
    case 2: rmsnorm_bwd_fused_kernel<T, VEC, 2><<<grid, kNormThreads, 0, stream>>>(x, w, rstd, dy, dx, partial, rows, hidden); break;
    default: rmsnorm_bwd_fused_kernel<T, VEC, 4><<<grid, kNormThreads, 0, stream>>>(x, w, rstd, dy, dx, partial, rows, hidden); break;
  }
  JK_RETURN_IF_ERROR(cudaGetLastError());
  if (dw == nullptr) return cudaSuccess;
  return launch_dw_final<T>(workspace, dw, rows, hidden, beta, stream);
}

// =====================================================================================================
// RoPE
// =====================================================================================================

constexpr int kRopeThreads = 256;

// One thread per (token, head, VEC consecutive i < half): reads and writes the pairs (i, i + half), so in
// place is race free. BACKWARD applies the transposed rotation. table [max_positions, half, 2] holds
// (cos, sin) in fp32; a position outside [0, max_positions) makes the pairs NaN (visible, never a stray
// read). VEC = 1: the simple path; VEC = 16 bytes / sizeof(T) (half a multiple of VEC, q / k aligned):
// 16-byte loads and stores of each half and of the table. Every element's arithmetic is the same, so
// both give the same bits.
template <typename T, bool BACKWARD, int VEC>
__global__ void __launch_bounds__(kRopeThreads)
rope_kernel(T* __restrict__ v, const std::int32_t* __restrict__ positions, const float2* __restrict__ table,
            std::int64_t max_positions, std::int64_t tokens, std::int64_t heads, std::int64_t half) {
  using P = Pack<T, VEC>;
  using C = Pack<float2, VEC>;
  const std::int64_t nvec = half / VEC;
  const std::int64_t total = tokens * heads * nvec;
  for (std::int64_t idx = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t i = idx % nvec * VEC;
    const std::int64_t token_head = idx / nvec;
    const std::int64_t token = token_head / heads;
    const std::int32_t pos = positions[token];
    C cs;
    if (pos >= 0 && pos < max_positions) {
      cs = *reinterpret_cast<const C*>(table + pos * half + i);
    } else {
#pragma unroll
      for (int q = 0; q < VEC; ++q) cs.v[q] = make_float2(NAN, NAN);
    }
    T* base = v + token_head * 2 * half;
    P* pa = reinterpret_cast<P*>(base + i);
    P* pb = reinterpret_cast<P*>(base + i + half);
    const P va = *pa, vb = *pb;
    P oa, ob;
#pragma unroll
    for (int q = 0; q < VEC; ++q) {
      const float c = Io<T>::round(cs.v[q].x);
      const float s = Io<T>::round(cs.v[q].y);
      const float a = Io<T>::load(va.v[q]);
      const float b = Io<T>::load(vb.v[q]);
      // HF: each product rounded to the storage type, the sum in fp32 rounded to the storage type.
      const float ac = Io<T>::round(__fmul_rn(a, c)), as = Io<T>::round(__fmul_rn(a, s));
      const float bc = Io<T>::round(__fmul_rn(b, c)), bs = Io<T>::round(__fmul_rn(b, s));
      if (BACKWARD) {
        oa.v[q] = Io<T>::store(__fadd_rn(ac, bs));
        ob.v[q] = Io<T>::store(__fsub_rn(bc, as));
      } else {
        oa.v[q] = Io<T>::store(__fsub_rn(ac, bs));
        ob.v[q] = Io<T>::store(__fadd_rn(bc, as));
      }
    }
    *pa = oa;
    *pb = ob;
  }
}

// One tensor (q or k) of `heads` heads: the vector path where the shapes and pointers allow, or `simple`.
template <typename T, bool BACKWARD>
cudaError_t launch_rope_one(T* v, const std::int32_t* positions, const float2* table, std::int64_t max_positions,
                            std::int64_t tokens, std::int64_t heads, std::int64_t half, bool simple,
                            cudaStream_t stream) {
  constexpr int kVec = 16 / static_cast<int>(sizeof(T));  // 8 bf16 / 4 fp32
  if (!simple && half % kVec == 0 && is_aligned(v, 16) && is_aligned(table, sizeof(float2) * kVec)) {
    rope_kernel<T, BACKWARD, kVec><<<grid_for(tokens * heads * (half / kVec), kRopeThreads), kRopeThreads, 0, stream>>>(
        v, positions, table, max_positions, tokens, heads, half);
  } else {
    rope_kernel<T, BACKWARD, 1><<<grid_for(tokens * heads * half, kRopeThreads), kRopeThreads, 0, stream>>>(
        v, positions, table, max_positions, tokens, heads, half);
  }
  return cudaGetLastError();
}

template <typename T, bool BACKWARD>
cudaError_t launch_rope(T* q, T* k, const std::int32_t* positions, const float* table, std::int64_t max_positions,
                        std::int64_t tokens, std::int64_t q_heads, std::int64_t k_heads, std::int64_t head_dim,
                        bool simple, cudaStream_t stream) {
  if (tokens < 0 || q_heads < 0 || k_heads < 0 || head_dim <= 0 || head_dim % 2 != 0 || max_positions <= 0)
    return cudaErrorInvalidValue;
  if (tokens > 0 && (positions == nullptr || table == nullptr)) return cudaErrorInvalidValue;
  if (tokens > 0 && q_heads > 0 && q == nullptr) return cudaErrorInvalidValue;
  if (tokens > 0 && k_heads > 0 && k == nullptr) return cudaErrorInvalidValue;
  if (!is_aligned(table, 8)) return cudaErrorInvalidValue;
  if (tokens == 0) return cudaSuccess;
  const std::int64_t half = head_dim / 2;
  const float2* cs = reinterpret_cast<const float2*>(table);
  if (q_heads > 0)
    JK_RETURN_IF_ERROR((launch_rope_one<T, BACKWARD>(q, positions, cs, max_positions, tokens, q_heads, half, simple,
                                                     stream)));
  if (k_heads > 0)
    JK_RETURN_IF_ERROR((launch_rope_one<T, BACKWARD>(k, positions, cs, max_positions, tokens, k_heads, half, simple,
                                                     stream)));
  return cudaSuccess;
}

// =====================================================================================================
// Cross-entropy
// =====================================================================================================

constexpr int kCeThreads = 512;
constexpr int kCeMeanThreads = 1024;
constexpr std::int32_t kIgnoreIndex = -100;

// Online (max, sum of exp(x - max)) pair; merging is exact up to the fp32 roundings.
struct MaxSum {
  float m;
  float s;
};

__device__ __forceinline__ MaxSum merge(MaxSum a, MaxSum b) {
  const float m = fmaxf(a.m, b.m);
  if (m == -INFINITY) return {m, 0.0f};
  const float sa = a.s == 0.0f ? 0.0f : __fmul_rn(a.s, expf(__fsub_rn(a.m, m)));
  const float sb = b.s == 0.0f ? 0.0f : __fmul_rn(b.s, expf(__fsub_rn(b.m, m)));
  return {m, __fadd_rn(sa, sb)};
}

__device__ __forceinline__ void online_add(MaxSum& acc, float x) {
  if (x == -INFINITY) return;  // a masked logit adds exp(-inf) = 0 (and must not make -inf - -inf = NaN)
  if (x > acc.m) {
    acc.s = __fadd_rn(__fmul_rn(acc.s, expf(__fsub_rn(acc.m, x))), 1.0f);
    acc.m = x;
  } else {
    acc.s = __fadd_rn(acc.s, expf(__fsub_rn(x, acc.m)));  // NaN x propagates through here
  }
}

// One block per row: per-thread online pairs, merged over a fixed xor tree in the warp and then over
// the warps in order.
template <typename T>
__global__ void __launch_bounds__(kCeThreads)
cross_entropy_fwd_kernel(const T* __restrict__ logits, const std::int32_t* __restrict__ labels,
                         float* __restrict__ loss_rows, float* __restrict__ lse_out, std::int64_t rows,
                         std::int64_t vocab) {
  __shared__ MaxSum warp_pairs[kCeThreads / kWarpSize];
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  for (std::int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const T* xr = logits + row * vocab;
    MaxSum acc{-INFINITY, 0.0f};
    for (std::int64_t c = threadIdx.x; c < vocab; c += blockDim.x) online_add(acc, Io<T>::load(xr[c]));
#pragma unroll
    for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
      const MaxSum other{__shfl_xor_sync(0xffffffffu, acc.m, offset), __shfl_xor_sync(0xffffffffu, acc.s, offset)};
      acc = merge(acc, other);
    }
    if (lane == 0) warp_pairs[warp] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
      MaxSum total = warp_pairs[0];
      for (int i = 1; i < static_cast<int>(blockDim.x / kWarpSize); ++i) total = merge(total, warp_pairs[i]);
      const float lse = __fadd_rn(total.m, logf(total.s));
      const std::int32_t label = labels[row];
      float loss = 0.0f;
      if (label != kIgnoreIndex) {
        loss = (label >= 0 && label < vocab) ? __fsub_rn(lse, Io<T>::load(xr[label])) : NAN;
      }
      lse_out[row] = lse;
      loss_rows[row] = loss;
    }
    __syncthreads();  // warp_pairs is reused by the next row
  }
}

// Mean over the valid rows: one block; thread t sums rows t, t + 1024, ... in order, then a fixed tree.
__global__ void __launch_bounds__(kCeMeanThreads)
cross_entropy_mean_kernel(const float* __restrict__ loss_rows, const std::int32_t* __restrict__ labels,
                          std::int64_t rows, float* __restrict__ loss_mean, std::int32_t* __restrict__ n_valid,
                          float* __restrict__ inv_valid) {
  __shared__ float scratch[kWarpSize];
  __shared__ int count_scratch[kWarpSize];
  float sum = 0.0f;
  int count = 0;
  for (std::int64_t r = threadIdx.x; r < rows; r += blockDim.x) {
    if (labels[r] != kIgnoreIndex) {
      sum = __fadd_rn(sum, loss_rows[r]);
      ++count;
    }
  }
  sum = block_sum(sum, scratch);
  // Integer block sum (exact, so any order).
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) count += __shfl_xor_sync(0xffffffffu, count, offset);
  if (threadIdx.x % kWarpSize == 0) count_scratch[threadIdx.x / kWarpSize] = count;
  __syncthreads();
  if (threadIdx.x == 0) {
    int total = 0;
    for (int i = 0; i < static_cast<int>(blockDim.x / kWarpSize); ++i) total += count_scratch[i];
    if (n_valid != nullptr) *n_valid = total;
    if (loss_mean != nullptr) *loss_mean = total > 0 ? __fdiv_rn(sum, static_cast<float>(total)) : 0.0f;
    if (inv_valid != nullptr) *inv_valid = total > 0 ? __fdiv_rn(1.0f, static_cast<float>(total)) : 0.0f;
  }
}

template <typename Tin, typename Tout>
__global__ void __launch_bounds__(kCeThreads)
cross_entropy_bwd_kernel(const Tin* logits, const std::int32_t* __restrict__ labels, const float* __restrict__ lse,
                         Tout* dlogits, const float* __restrict__ scale_device, float scale_host,
                         const float* __restrict__ row_scale, std::int64_t rows, std::int64_t vocab) {
  const float base = scale_device != nullptr ? *scale_device : scale_host;
  for (std::int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const float scale = row_scale != nullptr ? __fmul_rn(base, row_scale[row]) : base;
    const Tin* xr = logits + row * vocab;
    Tout* dr = dlogits + row * vocab;
    const std::int32_t label = labels[row];
    const float l = lse[row];
    if (label == kIgnoreIndex) {
      for (std::int64_t c = threadIdx.x; c < vocab; c += blockDim.x) dr[c] = Io<Tout>::store(0.0f);
    } else if (label < 0 || label >= vocab) {
      for (std::int64_t c = threadIdx.x; c < vocab; c += blockDim.x) dr[c] = Io<Tout>::store(NAN);
    } else {
      // In place (dr == xr): each element is read and then written by the same thread.
      for (std::int64_t c = threadIdx.x; c < vocab; c += blockDim.x) {
        const float p = expf(__fsub_rn(Io<Tin>::load(xr[c]), l));
        const float g = c == label ? __fsub_rn(p, 1.0f) : p;
        dr[c] = Io<Tout>::store(__fmul_rn(g, scale));
      }
    }
  }
}

bool valid_ce_args(const void* logits, const void* labels, std::int64_t rows, std::int64_t vocab) {
  if (rows < 0 || vocab <= 0 || vocab > INT_MAX) return false;
  if (rows > 0 && (logits == nullptr || labels == nullptr)) return false;
  return true;
}

template <typename T>
cudaError_t cross_entropy_fwd(const T* logits, const std::int32_t* labels, float* loss_rows, float* lse,
                              float* loss_mean, std::int32_t* n_valid, float* inv_valid, std::int64_t rows,
                              std::int64_t vocab, cudaStream_t stream) {
  if (!valid_ce_args(logits, labels, rows, vocab)) return cudaErrorInvalidValue;
  if (rows > 0 && (loss_rows == nullptr || lse == nullptr)) return cudaErrorInvalidValue;
  if (rows > INT_MAX) return cudaErrorInvalidValue;  // n_valid is int32
  if (rows > 0) {
    const unsigned grid = static_cast<unsigned>(std::min<std::int64_t>(rows, INT_MAX));
    cross_entropy_fwd_kernel<T><<<grid, kCeThreads, 0, stream>>>(logits, labels, loss_rows, lse, rows, vocab);
    JK_RETURN_IF_ERROR(cudaGetLastError());
  }
  if (loss_mean == nullptr && n_valid == nullptr && inv_valid == nullptr) return cudaSuccess;
  // Also for rows == 0: the scalars are defined (0 valid rows).
  cross_entropy_mean_kernel<<<1, kCeMeanThreads, 0, stream>>>(loss_rows, labels, rows, loss_mean, n_valid, inv_valid);
  return cudaGetLastError();
}

template <typename Tin, typename Tout>
cudaError_t cross_entropy_bwd(const Tin* logits, const std::int32_t* labels, const float* lse, Tout* dlogits,
                              const float* scale_device, float scale_host, std::int64_t rows, std::int64_t vocab,
                              cudaStream_t stream, const float* row_scale = nullptr) {
  if (!valid_ce_args(logits, labels, rows, vocab)) return cudaErrorInvalidValue;
  if (rows > 0 && (lse == nullptr || dlogits == nullptr)) return cudaErrorInvalidValue;
  if (scale_device == nullptr && !std::isfinite(scale_host)) return cudaErrorInvalidValue;
  if (!std::is_same_v<Tin, Tout> && static_cast<const void*>(logits) == static_cast<const void*>(dlogits))
    return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  const unsigned grid = static_cast<unsigned>(std::min<std::int64_t>(rows, INT_MAX));
  cross_entropy_bwd_kernel<Tin, Tout><<<grid, kCeThreads, 0, stream>>>(logits, labels, lse, dlogits, scale_device,
                                                                       scale_host, row_scale, rows, vocab);
  return cudaGetLastError();
}

// =====================================================================================================
// Global gradient norm (float-float) and multi-tensor AdamW
// =====================================================================================================

constexpr int kNormBlocks = static_cast<int>(jk_fused_grad_norm_workspace_elems / 2);  // fixed: sets the order
constexpr int kNormBlockThreads = 256;
constexpr std::int64_t kNormChunk = 4096;  // elements per warp task (as the CPU's partial blocks)

// Float-float (hi + lo, |lo| <= ulp(hi)/2): about 44 significant bits, enough to stand in for the
// CPU's double accumulation. Every operation is an explicit round-to-nearest intrinsic.
struct FF {
  float hi;
  float lo;
};

__device__ __forceinline__ FF ff_add(FF a, FF b) {
  const float s = __fadd_rn(a.hi, b.hi);
  const float bb = __fsub_rn(s, a.hi);
  float e = __fadd_rn(__fsub_rn(a.hi, __fsub_rn(s, bb)), __fsub_rn(b.hi, bb));
  e = __fadd_rn(e, __fadd_rn(a.lo, b.lo));
  const float hi = __fadd_rn(s, e);
  return {hi, __fsub_rn(e, __fsub_rn(hi, s))};
}

__device__ __forceinline__ FF ff_square(float g) {
  const float p = __fmul_rn(g, g);
  return {p, __fmaf_rn(g, g, -p)};  // exact: g*g = p + lo
}

__device__ __forceinline__ FF ff_shfl_xor(FF v, int offset) {
  return {__shfl_xor_sync(0xffffffffu, v.hi, offset), __shfl_xor_sync(0xffffffffu, v.lo, offset)};
}

// Warp w (global) takes chunks w, w + W, ... of the concatenated tensor list (W = all warps of the
// fixed grid); lane l sums elements l, l + 32, ... of the chunk; the warp's lanes are combined over a
// fixed xor tree; the block's warps in order; one (hi, lo) per block into the workspace.
__global__ void __launch_bounds__(kNormBlockThreads)
grad_norm_partial_kernel(const jk_adamw_tensor_t* __restrict__ tensors, std::int64_t num_tensors,
                         float* __restrict__ workspace) {
  __shared__ FF warp_sums[kNormBlockThreads / kWarpSize];
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  const std::int64_t warps_per_block = kNormBlockThreads / kWarpSize;
  const std::int64_t global_warp = static_cast<std::int64_t>(blockIdx.x) * warps_per_block + warp;
  const std::int64_t total_warps = static_cast<std::int64_t>(gridDim.x) * warps_per_block;
  FF acc{0.0f, 0.0f};
  std::int64_t chunk_base = 0;  // global index of the tensor's first chunk
  for (std::int64_t t = 0; t < num_tensors; ++t) {
    const std::int64_t n = tensors[t].numel;
    if (n <= 0) continue;
    const float* g = tensors[t].grad;
    const std::int64_t chunks = (n + kNormChunk - 1) / kNormChunk;
    // First chunk of this tensor owned by this warp: the smallest c >= chunk_base with c % W == global_warp.
    std::int64_t c = chunk_base + ((global_warp - chunk_base % total_warps) + total_warps) % total_warps;
    for (; c < chunk_base + chunks; c += total_warps) {
      const std::int64_t begin = (c - chunk_base) * kNormChunk;
      const std::int64_t end = imin(n, begin + kNormChunk);
      FF chunk{0.0f, 0.0f};
      for (std::int64_t j = begin + lane; j < end; j += kWarpSize) chunk = ff_add(chunk, ff_square(g[j]));
      acc = ff_add(acc, chunk);
    }
    chunk_base += chunks;
  }
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) acc = ff_add(acc, ff_shfl_xor(acc, offset));
  if (lane == 0) warp_sums[warp] = acc;
  __syncthreads();
  if (threadIdx.x == 0) {
    FF total = warp_sums[0];
    for (int i = 1; i < kNormBlockThreads / kWarpSize; ++i) total = ff_add(total, warp_sums[i]);
    workspace[2 * blockIdx.x] = total.hi;
    workspace[2 * blockIdx.x + 1] = total.lo;
  }
}

// One block of kNormBlocks threads: the block partials over a fixed xor tree, then the norm and the
// clip factor in float-float. max_norm and the 1e-6 of clip_grad_norm_ arrive as (hi, lo) pairs.
__global__ void __launch_bounds__(kNormBlocks)
grad_norm_final_kernel(const float* __restrict__ workspace, float max_hi, float max_lo, float eps_hi, float eps_lo,
                       bool clip, float* __restrict__ norm_out, float* __restrict__ clip_out,
                       float* __restrict__ sum_sq_out) {
  __shared__ FF warp_sums[kNormBlocks / kWarpSize];
  const int lane = threadIdx.x % kWarpSize, warp = threadIdx.x / kWarpSize;
  FF acc{workspace[2 * threadIdx.x], workspace[2 * threadIdx.x + 1]};
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) acc = ff_add(acc, ff_shfl_xor(acc, offset));
  if (lane == 0) warp_sums[warp] = acc;
  __syncthreads();
  if (threadIdx.x != 0) return;
  FF sum = warp_sums[0];
  for (int i = 1; i < kNormBlocks / kWarpSize; ++i) sum = ff_add(sum, warp_sums[i]);
  // norm = sqrt(sum): n0 = sqrt(hi), corrected by (sum - n0^2) / (2 n0).
  FF norm{0.0f, 0.0f};
  if (sum.hi > 0.0f) {
    const float n0 = __fsqrt_rn(sum.hi);
    const float residual = __fadd_rn(__fmaf_rn(-n0, n0, sum.hi), sum.lo);
    const float n1 = __fdiv_rn(residual, __fmul_rn(2.0f, n0));
    const float hi = __fadd_rn(n0, n1);
    norm = {hi, __fsub_rn(n1, __fsub_rn(hi, n0))};
  } else if (!(sum.hi == 0.0f)) {
    norm = {sum.hi, 0.0f};  // NaN stays NaN
  }
  if (norm_out != nullptr) *norm_out = norm.hi;
  if (sum_sq_out != nullptr) {
    sum_sq_out[0] = sum.hi;
    sum_sq_out[1] = sum.lo;
  }
  if (clip_out != nullptr) {
    float factor = 1.0f;
    if (clip) {
      // q = max_norm / (norm + 1e-6) in float-float: q0 = a.hi / d.hi, then one correction step.
      const FF d = ff_add(norm, FF{eps_hi, eps_lo});
      const float q0 = __fdiv_rn(max_hi, d.hi);
      // r = a - q0 d (the product's error from an FMA)
      const float p = __fmul_rn(q0, d.hi);
      const float p_err = __fmaf_rn(q0, d.hi, -p);
      const float r = __fadd_rn(__fsub_rn(__fsub_rn(max_hi, p), p_err), __fsub_rn(max_lo, __fmul_rn(q0, d.lo)));
      const float q = __fadd_rn(q0, __fdiv_rn(r, d.hi));
      factor = fminf(1.0f, q);
      if (q != q) factor = q;  // NaN norm: NaN factor (fminf would hide it)
    }
    *clip_out = factor;
  }
}

struct AdamWScalars {
  float decay;      // 1 - lr wd, rounded once
  float b1w;        // 1 - beta1
  float b2;         // beta2
  float b2w;        // 1 - beta2
  float eps;
  float neg_step_size;  // -(lr / (1 - beta1^t))
  float bc2_sqrt;   // sqrt(1 - beta2^t)
};

constexpr int kAdamThreads = 256;
constexpr std::int64_t kAdamChunk = kAdamThreads * 8;

// Blocks take chunks of the concatenated list round robin; each element is independent.
__global__ void __launch_bounds__(kAdamThreads)
adamw_kernel(const jk_adamw_tensor_t* __restrict__ tensors, std::int64_t num_tensors, AdamWScalars s,
             const float* __restrict__ grad_scale_device) {
  const float grad_scale = grad_scale_device != nullptr ? *grad_scale_device : 1.0f;
  std::int64_t chunk_base = 0;
  for (std::int64_t t = 0; t < num_tensors; ++t) {
    const jk_adamw_tensor_t d = tensors[t];
    if (d.numel <= 0) continue;
    const std::int64_t chunks = (d.numel + kAdamChunk - 1) / kAdamChunk;
    const float decay = d.weight_decay != 0 ? s.decay : 1.0f;
    std::int64_t c = chunk_base + ((blockIdx.x - chunk_base % gridDim.x) + gridDim.x) % gridDim.x;
    for (; c < chunk_base + chunks; c += gridDim.x) {
      const std::int64_t begin = (c - chunk_base) * kAdamChunk;
      const std::int64_t end = imin(d.numel, begin + kAdamChunk);
      for (std::int64_t j = begin + threadIdx.x; j < end; j += kAdamThreads) {
        // The CPU AdamW::step, operation for operation (no contraction).
        const float g = __fmul_rn(d.grad[j], grad_scale);
        const float m_old = d.exp_avg[j];
        const float p = __fmul_rn(d.param[j], decay);
        const float m = __fadd_rn(m_old, __fmul_rn(s.b1w, __fsub_rn(g, m_old)));
        const float v = __fadd_rn(__fmul_rn(d.exp_avg_sq[j], s.b2), __fmul_rn(__fmul_rn(s.b2w, g), g));
        const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), s.bc2_sqrt), s.eps);
        const float p_new = __fadd_rn(p, __fmul_rn(s.neg_step_size, __fdiv_rn(m, denom)));
        d.exp_avg[j] = m;
        d.exp_avg_sq[j] = v;
        d.param[j] = p_new;
        if (d.param_bf16 != nullptr) d.param_bf16[j] = float_to_bf16_bits(p_new);
      }
    }
    chunk_base += chunks;
  }
}

void split_double(double v, float* hi, float* lo) {
  *hi = static_cast<float>(v);
  *lo = static_cast<float>(v - static_cast<double>(*hi));
}

}  // namespace
}  // namespace jk::detail

// ---- public entry points ------------------------------------------------------------------------------

using namespace jk::detail;

std::int64_t jk_fused_rmsnorm_bwd_workspace_elems(std::int64_t rows, std::int64_t hidden) {
  if (rows <= 0 || hidden <= 0) return 0;
  return (rows + kNormRowBlock - 1) / kNormRowBlock * hidden;
}

cudaError_t jk_fused_rmsnorm_bwd_f32(const float* x, const float* weight, const float* rstd, const float* dy,
                                     float* dx, float* dw, float beta, float* workspace, std::int64_t rows,
                                     std::int64_t hidden, cudaStream_t stream) {
  return rmsnorm_bwd_tuned<float, 4>(x, weight, rstd, dy, dx, dw, beta, workspace, rows, hidden, stream);
}

cudaError_t jk_fused_rmsnorm_bwd_bf16(const std::uint16_t* x, const std::uint16_t* weight, const float* rstd,
                                      const std::uint16_t* dy, std::uint16_t* dx, float* dw, float beta,
                                      float* workspace, std::int64_t rows, std::int64_t hidden, cudaStream_t stream) {
  return rmsnorm_bwd_tuned<std::uint16_t, 8>(x, weight, rstd, dy, dx, dw, beta, workspace, rows, hidden, stream);
}

cudaError_t jk_fused_rmsnorm_bwd_f32_simple(const float* x, const float* weight, const float* rstd, const float* dy,
                                            float* dx, float* dw, float beta, float* workspace, std::int64_t rows,
                                            std::int64_t hidden, cudaStream_t stream) {
  return rmsnorm_bwd_simple_ordered<float>(x, weight, rstd, dy, dx, dw, beta, workspace, rows, hidden, stream);
}

cudaError_t jk_fused_rmsnorm_bwd_bf16_simple(const std::uint16_t* x, const std::uint16_t* weight, const float* rstd,
                                             const std::uint16_t* dy, std::uint16_t* dx, float* dw, float beta,
                                             float* workspace, std::int64_t rows, std::int64_t hidden,
                                             cudaStream_t stream) {
  return rmsnorm_bwd_simple_ordered<std::uint16_t>(x, weight, rstd, dy, dx, dw, beta, workspace, rows, hidden,
                                                   stream);
}

std::int64_t jk_fused_rope_table_elems(std::int64_t max_positions, std::int64_t head_dim) {
  if (max_positions <= 0 || head_dim <= 0 || head_dim % 2 != 0) return 0;
  return max_positions * head_dim;
}

cudaError_t jk_fused_rope_table_host(float* table, std::int64_t max_positions, std::int64_t head_dim, float theta) {
  if (table == nullptr || max_positions <= 0 || head_dim <= 0 || head_dim % 2 != 0 || !std::isfinite(theta) ||
      theta <= 0.0f)
    return cudaErrorInvalidValue;
  const std::int64_t half = head_dim / 2;
  for (std::int64_t i = 0; i < half; ++i) {
    // HF: inv_freq = 1 / theta^(float(2i) / float(d)), each step in fp32 (the fp32 power as the double
    // power rounded once); angle = float(pos) * inv_freq in fp32 (exact in double, rounded once).
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    const float power = static_cast<float>(std::pow(static_cast<double>(theta), static_cast<double>(exponent)));
    const float inv_freq = 1.0f / power;
    for (std::int64_t p = 0; p < max_positions; ++p) {
      const float angle = static_cast<float>(static_cast<double>(static_cast<float>(p)) * static_cast<double>(inv_freq));
      table[2 * (p * half + i)] = static_cast<float>(std::cos(static_cast<double>(angle)));
      table[2 * (p * half + i) + 1] = static_cast<float>(std::sin(static_cast<double>(angle)));
    }
  }
  return cudaSuccess;
}

cudaError_t jk_fused_rope_table(float* table, std::int64_t max_positions, std::int64_t head_dim, float theta) {
  const std::int64_t n = jk_fused_rope_table_elems(max_positions, head_dim);
  if (table == nullptr || n == 0) return cudaErrorInvalidValue;
  float* host = new (std::nothrow) float[static_cast<std::size_t>(n)];
  if (host == nullptr) return cudaErrorMemoryAllocation;
  cudaError_t status = jk_fused_rope_table_host(host, max_positions, head_dim, theta);
  if (status == cudaSuccess)
    status = cudaMemcpy(table, host, static_cast<std::size_t>(n) * sizeof(float), cudaMemcpyHostToDevice);
  // A pageable host-to-device cudaMemcpy may return before the DMA has landed, and kernels on a
  // non-blocking stream do not wait for it: synchronise so the table is complete on return.
  if (status == cudaSuccess) status = cudaDeviceSynchronize();
  delete[] host;
  return status;
}

#define JK_ROPE_ENTRY(name, T, BWD, SIMPLE)                                                                    \
  cudaError_t name(T* q, T* k, const std::int32_t* positions, const float* table, std::int64_t max_positions,  \
                   std::int64_t tokens, std::int64_t q_heads, std::int64_t k_heads, std::int64_t head_dim,      \
                   cudaStream_t stream) {                                                                     \
    return launch_rope<T, BWD>(q, k, positions, table, max_positions, tokens, q_heads, k_heads, head_dim, SIMPLE, \
                               stream);                                                                       \
  }
JK_ROPE_ENTRY(jk_fused_rope_fwd_f32, float, false, false)
JK_ROPE_ENTRY(jk_fused_rope_bwd_f32, float, true, false)
JK_ROPE_ENTRY(jk_fused_rope_fwd_bf16, std::uint16_t, false, false)
JK_ROPE_ENTRY(jk_fused_rope_bwd_bf16, std::uint16_t, true, false)
JK_ROPE_ENTRY(jk_fused_rope_fwd_f32_simple, float, false, true)
JK_ROPE_ENTRY(jk_fused_rope_bwd_f32_simple, float, true, true)
JK_ROPE_ENTRY(jk_fused_rope_fwd_bf16_simple, std::uint16_t, false, true)
JK_ROPE_ENTRY(jk_fused_rope_bwd_bf16_simple, std::uint16_t, true, true)
#undef JK_ROPE_ENTRY

cudaError_t jk_fused_cross_entropy_fwd_f32(const float* logits, const std::int32_t* labels, float* loss_rows,
                                           float* lse, float* loss_mean, std::int32_t* n_valid, float* inv_valid,
                                           std::int64_t rows, std::int64_t vocab, cudaStream_t stream) {
  return cross_entropy_fwd<float>(logits, labels, loss_rows, lse, loss_mean, n_valid, inv_valid, rows, vocab, stream);
}
cudaError_t jk_fused_cross_entropy_fwd_bf16(const std::uint16_t* logits, const std::int32_t* labels, float* loss_rows,
                                            float* lse, float* loss_mean, std::int32_t* n_valid, float* inv_valid,
                                            std::int64_t rows, std::int64_t vocab, cudaStream_t stream) {
  return cross_entropy_fwd<std::uint16_t>(logits, labels, loss_rows, lse, loss_mean, n_valid, inv_valid, rows, vocab,
                                          stream);
}
cudaError_t jk_fused_cross_entropy_bwd_f32(const float* logits, const std::int32_t* labels, const float* lse,
                                           float* dlogits, const float* scale_device, float scale_host,
                                           std::int64_t rows, std::int64_t vocab, cudaStream_t stream) {
  return cross_entropy_bwd<float, float>(logits, labels, lse, dlogits, scale_device, scale_host, rows, vocab, stream);
}
cudaError_t jk_fused_cross_entropy_bwd_bf16(const std::uint16_t* logits, const std::int32_t* labels, const float* lse,
                                            std::uint16_t* dlogits, const float* scale_device, float scale_host,
                                            std::int64_t rows, std::int64_t vocab, cudaStream_t stream) {
  return cross_entropy_bwd<std::uint16_t, std::uint16_t>(logits, labels, lse, dlogits, scale_device, scale_host, rows,
                                                         vocab, stream);
}
cudaError_t jk_fused_cross_entropy_bwd_bf16_f32(const std::uint16_t* logits, const std::int32_t* labels,
                                                const float* lse, float* dlogits, const float* scale_device,
                                                float scale_host, std::int64_t rows, std::int64_t vocab,
                                                cudaStream_t stream) {
  return cross_entropy_bwd<std::uint16_t, float>(logits, labels, lse, dlogits, scale_device, scale_host, rows, vocab,
                                                 stream);
}

cudaError_t jk_fused_cross_entropy_bwd_bf16_weighted(const std::uint16_t* logits, const std::int32_t* labels,
                                                     const float* lse, std::uint16_t* dlogits, const float* row_weight,
                                                     int64_t rows, int64_t vocab, cudaStream_t stream) {
  if (rows > 0 && row_weight == nullptr) return cudaErrorInvalidValue;
  return cross_entropy_bwd<std::uint16_t, std::uint16_t>(logits, labels, lse, dlogits, nullptr, 1.0f, rows, vocab,
                                                         stream, row_weight);
}

cudaError_t jk_fused_grad_norm(const jk_adamw_tensor_t* tensors, std::int64_t num_tensors, double max_norm,
                               float* workspace, float* norm, float* clip_factor, float* sum_sq,
                               cudaStream_t stream) {
  if (num_tensors < 0 || std::isnan(max_norm)) return cudaErrorInvalidValue;
  if (num_tensors > 0 && tensors == nullptr) return cudaErrorInvalidValue;
  if (workspace == nullptr) return cudaErrorInvalidValue;
  if (norm == nullptr && clip_factor == nullptr && sum_sq == nullptr) return cudaSuccess;
  grad_norm_partial_kernel<<<kNormBlocks, kNormBlockThreads, 0, stream>>>(tensors, num_tensors, workspace);
  JK_RETURN_IF_ERROR(cudaGetLastError());
  float max_hi = 0, max_lo = 0, eps_hi = 0, eps_lo = 0;
  split_double(max_norm, &max_hi, &max_lo);
  split_double(1e-6, &eps_hi, &eps_lo);
  grad_norm_final_kernel<<<1, kNormBlocks, 0, stream>>>(workspace, max_hi, max_lo, eps_hi, eps_lo, max_norm > 0.0 && std::isfinite(max_norm),
                                                        norm, clip_factor, sum_sq);  // max_norm = inf: factor 1, as the CPU
  return cudaGetLastError();
}

cudaError_t jk_fused_adamw(const jk_adamw_tensor_t* tensors, std::int64_t num_tensors, jk_adamw_hyper_t h,
                           const float* grad_scale_device, cudaStream_t stream) {
  if (num_tensors < 0) return cudaErrorInvalidValue;
  if (num_tensors > 0 && tensors == nullptr) return cudaErrorInvalidValue;
  if (!std::isfinite(h.lr) || h.lr < 0 || !(h.beta1 >= 0 && h.beta1 < 1) || !(h.beta2 >= 0 && h.beta2 < 1) ||
      !std::isfinite(h.eps) || h.eps < 0 || !std::isfinite(h.weight_decay) || h.weight_decay < 0 || h.step < 1)
    return cudaErrorInvalidValue;
  if (num_tensors == 0) return cudaSuccess;
  // The scalars exactly as AdamW::step computes them (double, then one rounding to fp32).
  const double bias_correction1 = 1.0 - std::pow(h.beta1, static_cast<double>(h.step));
  const double bias_correction2 = 1.0 - std::pow(h.beta2, static_cast<double>(h.step));
  AdamWScalars s{};
  s.decay = static_cast<float>(1.0 - h.lr * h.weight_decay);
  s.b1w = static_cast<float>(1.0 - h.beta1);
  s.b2 = static_cast<float>(h.beta2);
  s.b2w = static_cast<float>(1.0 - h.beta2);
  s.eps = static_cast<float>(h.eps);
  s.neg_step_size = -static_cast<float>(h.lr / bias_correction1);
  s.bc2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
  int sms = 0;
  JK_RETURN_IF_ERROR(multiprocessor_count(&sms));
  const unsigned grid = static_cast<unsigned>(std::max(1, sms) * 8);
  adamw_kernel<<<grid, kAdamThreads, 0, stream>>>(tensors, num_tensors, s, grad_scale_device);
  return cudaGetLastError();
}
