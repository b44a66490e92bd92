// MoA causal attention with shared (tiled) K/V heads: forward, deterministic backward, decode.
// Interface and conventions: include/jetmoe/attention.h. Design and numerics: notes/attention.md.
//
// Two implementations behind one API:
//  - SIMPLE (this file, first half): one warp per query row (forward, dq) or per key row (dk/dv), the
//    head dimension spread over the lanes (d/32 values per lane), fp32 online softmax, fixed-order
//    loops. Obviously correct, any d <= 256, and the fallback for shapes the tuned kernels do not take.
//  - TUNED (second half): FlashAttention-2 style tiles with mma.sync m16n8k16 bf16 tensor cores
//    (d in {64, 128}, 16-byte aligned pointers).
//  - WGMMA (end of the file): the sm_90a kernels, TMA + mbarriers + wgmma (FA3 style), forward and
//    backward, on an sm_90 device for the tuned path's shapes; elsewhere TUNED's path.
//
// JK_ATTENTION_EMULATE: when defined (only by tests/kernel_reference/test_attention.cpp, host C++), this
// file provides just the kernels (simple, decode and tuned), compiled for a host emulator of the warp
// primitives (ldmatrix, mma.sync, cp.async, shuffles, barriers, bf16 helpers) that runs them on the CPU
// against the double reference. The PTX wrappers and all host/launch code are left out then.
#ifndef JK_ATTENTION_EMULATE
#include "common.cuh"
#include "jetmoe/kernels.h"
#include "sm90.cuh"

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdint>
#include <type_traits>

#define JK_ATTENTION_DYNAMIC_SMEM(name) extern __shared__ __align__(16) std::uint16_t name[]
#define JK_UNROLL _Pragma("unroll")
#endif

namespace jk::detail {
namespace {

// Length of sequence b (null: T), clamped to [0, T].
__device__ __forceinline__ std::int64_t clamp_len(const std::int32_t* seq_len, std::int64_t b, std::int64_t T) {
  if (seq_len == nullptr) return T;
  const std::int64_t len = seq_len[b];
  return len < 0 ? 0 : (len > T ? T : len);
}

}  // namespace
}  // namespace jk::detail

namespace jk::detail {
namespace {

constexpr int kSimpleWarps = 4;  // warps per block of the simple kernels
constexpr int kMaxHeadDim = 256;
constexpr int kDecodeChunk = 256;  // keys per split of the decode kernel
constexpr int kDecodeKeys = 4;     // keys per warp iteration of the decode kernel (loads in flight)

__device__ __forceinline__ float bf(std::uint16_t b) { return bf16_bits_to_float(b); }

template <typename T>
__device__ __forceinline__ T store_as(float v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else {
    return float_to_bf16_bits(v);
  }
}

// Loads the d values of one row, lane-strided (c = lane + 32 j), zero beyond d.
template <int PER_LANE>
__device__ __forceinline__ void load_row(const std::uint16_t* row, int d, int lane, float (&x)[PER_LANE]) {
  JK_UNROLL
  for (int j = 0; j < PER_LANE; ++j) {
    const int c = lane + kWarpSize * j;
    x[j] = c < d ? bf(row[c]) : 0.0f;
  }
}

template <int PER_LANE>
__device__ __forceinline__ float row_dot(const float (&x)[PER_LANE], const std::uint16_t* row, int d, int lane) {
  float s = 0.0f;
  JK_UNROLL
  for (int j = 0; j < PER_LANE; ++j) {
    const int c = lane + kWarpSize * j;
    if (c < d) s += x[j] * bf(row[c]);
  }
  return warp_sum(s);  // butterfly: every lane gets the same (fixed-order) result
}

// ---- simple forward: one warp per query row (b, t, i) ------------------------------------------------
template <int PER_LANE>
__global__ void __launch_bounds__(kSimpleWarps* kWarpSize)
    attn_fwd_simple_kernel(const std::uint16_t* __restrict__ q, const std::uint16_t* __restrict__ k,
                           const std::uint16_t* __restrict__ v, const std::int32_t* __restrict__ seq_len,
                           std::uint16_t* __restrict__ out, float* __restrict__ lse, std::int64_t B, std::int64_t T,
                           std::int64_t Hq, std::int64_t Hkv, int d, float scale) {
  const int lane = threadIdx.x % kWarpSize;
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * kSimpleWarps + threadIdx.x / kWarpSize;
  if (row >= B * T * Hq) return;
  const std::int64_t i = row % Hq;
  const std::int64_t t = (row / Hq) % T;
  const std::int64_t b = row / (Hq * T);
  const std::int64_t h = i % Hkv;  // tiled K/V heads
  const std::int64_t len = clamp_len(seq_len, b, T);
  std::uint16_t* out_row = out + row * d;
  if (t >= len) {
    for (int c = lane; c < d; c += kWarpSize) out_row[c] = 0;
    if (lse != nullptr && lane == 0) lse[(b * Hq + i) * T + t] = -INFINITY;
    return;
  }
  float qr[PER_LANE], acc[PER_LANE];
  load_row(q + row * d, d, lane, qr);
  JK_UNROLL
  for (int j = 0; j < PER_LANE; ++j) acc[j] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  for (std::int64_t u = 0; u <= t; ++u) {
    const std::int64_t kv_off = ((b * T + u) * Hkv + h) * d;
    const float s = row_dot(qr, k + kv_off, d, lane) * scale;
    const float m_new = fmaxf(m, s);
    const float corr = expf(m - m_new);  // 0 on the first key (m = -inf)
    const float p = expf(s - m_new);
    l = l * corr + p;
    JK_UNROLL
    for (int j = 0; j < PER_LANE; ++j) {
      const int c = lane + kWarpSize * j;
      acc[j] = acc[j] * corr + (c < d ? p * bf(v[kv_off + c]) : 0.0f);
    }
    m = m_new;
  }
  const float inv = 1.0f / l;  // l >= 1 (the maximum contributes exp(0))
  JK_UNROLL
  for (int j = 0; j < PER_LANE; ++j) {
    const int c = lane + kWarpSize * j;
    if (c < d) out_row[c] = float_to_bf16_bits(acc[j] * inv);
  }
  if (lse != nullptr && lane == 0) lse[(b * Hq + i) * T + t] = m + logf(l);
}

// ---- backward preprocess: delta[b, i, t] = sum_c dout * out (0 on padded rows) ----------------------------
__global__ void __launch_bounds__(kSimpleWarps* kWarpSize)
    attn_bwd_delta_kernel(const std::uint16_t* __restrict__ out, const std::uint16_t* __restrict__ dout,
                          const std::int32_t* __restrict__ seq_len, float* __restrict__ delta, std::int64_t B,
                          std::int64_t T, std::int64_t Hq, int d) {
  const int lane = threadIdx.x % kWarpSize;
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * kSimpleWarps + threadIdx.x / kWarpSize;
  if (row >= B * T * Hq) return;
  const std::int64_t i = row % Hq;
  const std::int64_t t = (row / Hq) % T;
  const std::int64_t b = row / (Hq * T);
  float s = 0.0f;
  if (t < clamp_len(seq_len, b, T)) {
    for (int c = lane; c < d; c += kWarpSize) s += bf(out[row * d + c]) * bf(dout[row * d + c]);
  }
  s = warp_sum(s);
  if (lane == 0) delta[(b * Hq + i) * T + t] = s;
}

// ---- simple backward dq: one warp per query row, keys in ascending order -----------------------------------
template <int PER_LANE, typename TOut>
__global__ void __launch_bounds__(kSimpleWarps* kWarpSize)
    attn_bwd_dq_simple_kernel(const std::uint16_t* __restrict__ q, const std::uint16_t* __restrict__ k,
                              const std::uint16_t* __restrict__ v, const float* __restrict__ lse,
                              const std::uint16_t* __restrict__ dout, const float* __restrict__ delta,
                              const std::int32_t* __restrict__ seq_len, TOut* __restrict__ dq, std::int64_t B,
                              std::int64_t T, std::int64_t Hq, std::int64_t Hkv, int d, float scale) {
  const int lane = threadIdx.x % kWarpSize;
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * kSimpleWarps + threadIdx.x / kWarpSize;
  if (row >= B * T * Hq) return;
  const std::int64_t i = row % Hq;
  const std::int64_t t = (row / Hq) % T;
  const std::int64_t b = row / (Hq * T);
  const std::int64_t h = i % Hkv;
  float acc[PER_LANE];
  JK_UNROLL
  for (int j = 0; j < PER_LANE; ++j) acc[j] = 0.0f;
  if (t < clamp_len(seq_len, b, T)) {
    float qr[PER_LANE], dor[PER_LANE];
    load_row(q + row * d, d, lane, qr);
    load_row(dout + row * d, d, lane, dor);
    const float row_lse = lse[(b * Hq + i) * T + t];
    const float row_delta = delta[(b * Hq + i) * T + t];
    for (std::int64_t u = 0; u <= t; ++u) {
      const std::int64_t kv_off = ((b * T + u) * Hkv + h) * d;
      const float p = expf(row_dot(qr, k + kv_off, d, lane) * scale - row_lse);
      const float dp = row_dot(dor, v + kv_off, d, lane);
      const float ds = p * (dp - row_delta);
      JK_UNROLL
      for (int j = 0; j < PER_LANE; ++j) {
        const int c = lane + kWarpSize * j;
        if (c < d) acc[j] += ds * bf(k[kv_off + c]);
      }
    }
  }
  JK_UNROLL
  for (int j = 0; j < PER_LANE; ++j) {
    const int c = lane + kWarpSize * j;
    if (c < d) dq[row * d + c] = store_as<TOut>(acc[j] * scale);
  }
}

// ---- simple backward dk/dv: one warp per key row (b, u, h); slots in order, then queries in order ----------
template <int PER_LANE, typename TOut>
__global__ void __launch_bounds__(kSimpleWarps* kWarpSize)
    attn_bwd_dkdv_simple_kernel(const std::uint16_t* __restrict__ q, const std::uint16_t* __restrict__ k,
                                const std::uint16_t* __restrict__ v, const float* __restrict__ lse,
                                const std::uint16_t* __restrict__ dout, const float* __restrict__ delta,
                                const std::int32_t* __restrict__ seq_len, TOut* __restrict__ dk, TOut* __restrict__ dv,
                                std::int64_t B, std::int64_t T, std::int64_t Hq, std::int64_t Hkv, int d, float scale) {
  const int lane = threadIdx.x % kWarpSize;
  const std::int64_t row = static_cast<std::int64_t>(blockIdx.x) * kSimpleWarps + threadIdx.x / kWarpSize;
  if (row >= B * T * Hkv) return;
  const std::int64_t h = row % Hkv;
  const std::int64_t u = (row / Hkv) % T;
  const std::int64_t b = row / (Hkv * T);
  const std::int64_t len = clamp_len(seq_len, b, T);
  float dk_acc[PER_LANE], dv_acc[PER_LANE];
  JK_UNROLL
  for (int j = 0; j < PER_LANE; ++j) dk_acc[j] = dv_acc[j] = 0.0f;
  if (u < len) {
    float kr[PER_LANE], vr[PER_LANE];
    load_row(k + row * d, d, lane, kr);
    load_row(v + row * d, d, lane, vr);
    for (std::int64_t i = h; i < Hq; i += Hkv) {  // the query heads on K/V head h, slot order
      for (std::int64_t t = u; t < len; ++t) {
        const std::int64_t q_off = ((b * T + t) * Hq + i) * d;
        const float p = expf(row_dot(kr, q + q_off, d, lane) * scale - lse[(b * Hq + i) * T + t]);
        const float dp = row_dot(vr, dout + q_off, d, lane);
        const float ds = p * (dp - delta[(b * Hq + i) * T + t]);
        JK_UNROLL
        for (int j = 0; j < PER_LANE; ++j) {
          const int c = lane + kWarpSize * j;
          if (c < d) {
            dv_acc[j] += p * bf(dout[q_off + c]);
            dk_acc[j] += ds * bf(q[q_off + c]);
          }
        }
      }
    }
  }
  JK_UNROLL
  for (int j = 0; j < PER_LANE; ++j) {
    const int c = lane + kWarpSize * j;
    if (c < d) {
      dk[row * d + c] = store_as<TOut>(dk_acc[j] * scale);
      dv[row * d + c] = store_as<TOut>(dv_acc[j]);
    }
  }
}

// ---- decode: split-K partials, then a fixed-order combine ---------------------------------------------------
// Column c of lane `lane`, value j: lane-strided (c = lane + 32 j, any d) or, when d == 32 PER_LANE and the
// rows are aligned, contiguous (c = lane PER_LANE + j) so each lane reads its PER_LANE values with one
// vector load (a whole 256-byte row per warp instruction at d = 128).
template <int N>
struct alignas(2 * N) Bf16Pack {
  std::uint16_t v[N];
};

template <int PER_LANE, bool CONTIG>
__device__ __forceinline__ int decode_col(int lane, int j) {
  return CONTIG ? lane * PER_LANE + j : lane + kWarpSize * j;
}

template <int PER_LANE, bool CONTIG>
__device__ __forceinline__ void decode_load(const std::uint16_t* row, int d, int lane, float (&x)[PER_LANE]) {
  if constexpr (CONTIG) {
    const Bf16Pack<PER_LANE> pk = *reinterpret_cast<const Bf16Pack<PER_LANE>*>(row + lane * PER_LANE);
    JK_UNROLL
    for (int j = 0; j < PER_LANE; ++j) x[j] = bf(pk.v[j]);
  } else {
    load_row(row, d, lane, x);
  }
}

// Partial (b, i, chunk) at workspace + ((b*Hq + i)*chunks + chunk)*(d + 2): [max, sum, acc[0..d)].
template <int PER_LANE, bool CONTIG>
__global__ void __launch_bounds__(kSimpleWarps* kWarpSize)
    attn_decode_partial_kernel(const std::uint16_t* __restrict__ q, const std::uint16_t* __restrict__ k_cache,
                               const std::uint16_t* __restrict__ v_cache, const std::int32_t* __restrict__ cache_len,
                               float* __restrict__ partial, std::int64_t Tmax, std::int64_t Hq, std::int64_t Hkv, int d,
                               float scale) {
  __shared__ float warp_m[kSimpleWarps], warp_l[kSimpleWarps];
  __shared__ float warp_acc[kSimpleWarps][kMaxHeadDim];
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  const std::int64_t chunk = blockIdx.x, i = blockIdx.y, b = blockIdx.z;
  const std::int64_t chunks = gridDim.x;
  const std::int64_t h = i % Hkv;
  const std::int64_t len = clamp_len(cache_len, b, Tmax);
  const std::int64_t begin = chunk * kDecodeChunk;
  const std::int64_t end = begin + kDecodeChunk < len ? begin + kDecodeChunk : len;
  float qr[PER_LANE], acc[PER_LANE];
  decode_load<PER_LANE, CONTIG>(q + (b * Hq + i) * d, d, lane, qr);
  JK_UNROLL
  for (int j = 0; j < PER_LANE; ++j) acc[j] = 0.0f;
  float m = -INFINITY, l = 0.0f;
  // Each warp takes groups of kDecodeKeys consecutive keys (a fixed subset), the group's K and V rows
  // loaded together so that several loads are in flight per warp.
  for (std::int64_t u0 = begin + warp * kDecodeKeys; u0 < end; u0 += kSimpleWarps * kDecodeKeys) {
    float s[kDecodeKeys];
    float vv[kDecodeKeys][PER_LANE];
    JK_UNROLL
    for (int j = 0; j < kDecodeKeys; ++j) {
      const std::int64_t u = u0 + j;
      float kk[PER_LANE];
      if (u < end) {
        decode_load<PER_LANE, CONTIG>(k_cache + ((b * Tmax + u) * Hkv + h) * d, d, lane, kk);
        decode_load<PER_LANE, CONTIG>(v_cache + ((b * Tmax + u) * Hkv + h) * d, d, lane, vv[j]);
      } else {
        JK_UNROLL
        for (int x = 0; x < PER_LANE; ++x) kk[x] = vv[j][x] = 0.0f;
      }
      float dot = 0.0f;
      JK_UNROLL
      for (int x = 0; x < PER_LANE; ++x) dot += qr[x] * kk[x];
      const float total = warp_sum(dot);  // u is the same for the whole warp: no divergence
      s[j] = u < end ? total * scale : -INFINITY;
    }
    float m_new = m;
    JK_UNROLL
    for (int j = 0; j < kDecodeKeys; ++j) m_new = fmaxf(m_new, s[j]);  // finite: key u0 < end exists
    const float corr = expf(m - m_new);
    float p[kDecodeKeys];
    float p_sum = 0.0f;
    JK_UNROLL
    for (int j = 0; j < kDecodeKeys; ++j) p_sum += (p[j] = expf(s[j] - m_new));  // 0 for keys past the end
    l = l * corr + p_sum;
    JK_UNROLL
    for (int x = 0; x < PER_LANE; ++x) {
      float a = acc[x] * corr;
      JK_UNROLL
      for (int j = 0; j < kDecodeKeys; ++j) a += p[j] * vv[j][x];
      acc[x] = a;
    }
    m = m_new;
  }
  if (lane == 0) {
    warp_m[warp] = m;
    warp_l[warp] = l;
  }
  JK_UNROLL
  for (int j = 0; j < PER_LANE; ++j) {
    const int c = decode_col<PER_LANE, CONTIG>(lane, j);
    if (c < d) warp_acc[warp][c] = acc[j];
  }
  __syncthreads();
  // Merge the warps in warp order (fixed): thread c owns column c of [max, sum, acc[0..d)].
  __shared__ float merged_m, weight[kSimpleWarps];
  if (threadIdx.x == 0) {
    float mm = -INFINITY;
    for (int w = 0; w < kSimpleWarps; ++w) mm = fmaxf(mm, warp_m[w]);
    merged_m = mm;
    for (int w = 0; w < kSimpleWarps; ++w)
      weight[w] = mm == -INFINITY ? 0.0f : expf(warp_m[w] - mm);  // empty chunk: all 0
  }
  __syncthreads();
  float* dst = partial + ((b * Hq + i) * chunks + chunk) * (d + 2);
  for (int c = threadIdx.x; c < d + 2; c += blockDim.x) {
    float value = 0.0f;
    if (c == 0) {
      value = merged_m;
    } else {
      for (int w = 0; w < kSimpleWarps; ++w) value += weight[w] * (c == 1 ? warp_l[w] : warp_acc[w][c - 2]);
    }
    dst[c] = value;
  }
}

__global__ void __launch_bounds__(kMaxHeadDim)
    attn_decode_combine_kernel(const float* __restrict__ partial, std::uint16_t* __restrict__ out,
                               float* __restrict__ lse, std::int64_t Hq, int chunks, int d) {
  const std::int64_t i = blockIdx.x, b = blockIdx.y;
  const float* src = partial + (b * Hq + i) * static_cast<std::int64_t>(chunks) * (d + 2);
  float mm = -INFINITY;
  for (int c = 0; c < chunks; ++c) mm = fmaxf(mm, src[c * (d + 2)]);
  float l = 0.0f;
  for (int c = 0; c < chunks; ++c) {
    const float m = src[c * (d + 2)];
    if (m != -INFINITY) l += expf(m - mm) * src[c * (d + 2) + 1];
  }
  for (int col = threadIdx.x; col < d; col += blockDim.x) {
    float acc = 0.0f;
    for (int c = 0; c < chunks; ++c) {
      const float m = src[c * (d + 2)];
      if (m != -INFINITY) acc += expf(m - mm) * src[c * (d + 2) + 2 + col];
    }
    out[(b * Hq + i) * d + col] = float_to_bf16_bits(l > 0.0f ? acc / l : 0.0f);
  }
  if (lse != nullptr && threadIdx.x == 0) lse[b * Hq + i] = l > 0.0f ? mm + logf(l) : -INFINITY;
}

#ifndef JK_ATTENTION_EMULATE
// ---- host side --------------------------------------------------------------------------------------------

bool valid_shape(const jk_attention_shape_t& s) {
  return s.batch >= 0 && s.seq >= 0 && s.q_heads >= 1 && s.kv_heads >= 1 && s.head_dim >= 1 &&
         s.head_dim <= kMaxHeadDim && s.q_heads % s.kv_heads == 0;
}

bool is_empty(const jk_attention_shape_t& s) { return s.batch == 0 || s.seq == 0; }

unsigned warp_blocks(std::int64_t rows) { return static_cast<unsigned>((rows + kSimpleWarps - 1) / kSimpleWarps); }

constexpr int kSimpleThreads = kSimpleWarps * kWarpSize;

// Dispatches F<PER_LANE>() on the head dimension.
template <typename F>
cudaError_t with_per_lane(int d, F&& f) {
  if (d <= 32) return f(std::integral_constant<int, 1>{});
  if (d <= 64) return f(std::integral_constant<int, 2>{});
  if (d <= 128) return f(std::integral_constant<int, 4>{});
  return f(std::integral_constant<int, 8>{});
}

cudaError_t fwd_simple(const std::uint16_t* q, const std::uint16_t* k, const std::uint16_t* v,
                       const std::int32_t* seq_len, std::uint16_t* out, float* lse, const jk_attention_shape_t& s,
                       cudaStream_t stream) {
  const int d = static_cast<int>(s.head_dim);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const std::int64_t rows = s.batch * s.seq * s.q_heads;
  if (warp_blocks(rows) > static_cast<unsigned>(INT_MAX)) return cudaErrorInvalidValue;
  return with_per_lane(d, [&](auto per_lane) {
    attn_fwd_simple_kernel<decltype(per_lane)::value><<<warp_blocks(rows), kSimpleThreads, 0, stream>>>(
        q, k, v, seq_len, out, lse, s.batch, s.seq, s.q_heads, s.kv_heads, d, scale);
    return cudaGetLastError();
  });
}

template <typename TOut>
cudaError_t bwd_simple(const std::uint16_t* q, const std::uint16_t* k, const std::uint16_t* v, const float* lse,
                       const std::uint16_t* dout, const std::int32_t* seq_len, const float* delta, TOut* dq, TOut* dk,
                       TOut* dv, const jk_attention_shape_t& s, cudaStream_t stream) {
  const int d = static_cast<int>(s.head_dim);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const std::int64_t q_rows = s.batch * s.seq * s.q_heads;
  const std::int64_t kv_rows = s.batch * s.seq * s.kv_heads;
  return with_per_lane(d, [&](auto per_lane) {
    constexpr int P = decltype(per_lane)::value;
    attn_bwd_dq_simple_kernel<P, TOut><<<warp_blocks(q_rows), kSimpleThreads, 0, stream>>>(
        q, k, v, lse, dout, delta, seq_len, dq, s.batch, s.seq, s.q_heads, s.kv_heads, d, scale);
    JK_RETURN_IF_ERROR(cudaGetLastError());
    attn_bwd_dkdv_simple_kernel<P, TOut><<<warp_blocks(kv_rows), kSimpleThreads, 0, stream>>>(
        q, k, v, lse, dout, delta, seq_len, dk, dv, s.batch, s.seq, s.q_heads, s.kv_heads, d, scale);
    return cudaGetLastError();
  });
}

#endif  // JK_ATTENTION_EMULATE
}  // namespace

#ifndef JK_ATTENTION_EMULATE
// Tuned kernels (defined below, in the second part of this file).
bool attention_tuned_supported(const jk_attention_shape_t& s, const void* const* pointers, int count);
cudaError_t attention_wgmma_supported(const jk_attention_shape_t& s, const void* const* pointers, int count,
                                      bool* ok);
cudaError_t attention_fwd_wgmma(const std::uint16_t* q, const std::uint16_t* k, const std::uint16_t* v,
                                const std::int32_t* seq_len, std::uint16_t* out, float* lse,
                                const jk_attention_shape_t& s, cudaStream_t stream);
cudaError_t attention_fwd_tuned(const std::uint16_t* q, const std::uint16_t* k, const std::uint16_t* v,
                                const std::int32_t* seq_len, std::uint16_t* out, float* lse,
                                const jk_attention_shape_t& s, cudaStream_t stream);
template <typename TOut>
cudaError_t attention_bwd_tuned(const std::uint16_t* q, const std::uint16_t* k, const std::uint16_t* v,
                                const float* lse, const std::uint16_t* dout, const std::int32_t* seq_len,
                                const float* delta, TOut* dq, TOut* dk, TOut* dv, const jk_attention_shape_t& s,
                                cudaStream_t stream);
template <typename TOut>
cudaError_t attention_bwd_wgmma(const std::uint16_t* q, const std::uint16_t* k, const std::uint16_t* v,
                                const float* lse, const std::uint16_t* dout, const std::int32_t* seq_len,
                                const float* delta, TOut* dq, TOut* dk, TOut* dv, const jk_attention_shape_t& s,
                                cudaStream_t stream);

template <typename TOut>
cudaError_t attention_bwd(const std::uint16_t* q, const std::uint16_t* k, const std::uint16_t* v,
                          const std::uint16_t* out, const float* lse, const std::uint16_t* dout,
                          const std::int32_t* seq_len, float* delta, TOut* dq, TOut* dk, TOut* dv,
                          const jk_attention_shape_t& s, jk_attention_path_t path, cudaStream_t stream) {
  if (!valid_shape(s)) return cudaErrorInvalidValue;
  if (path != JK_ATTENTION_AUTO && path != JK_ATTENTION_SIMPLE && path != JK_ATTENTION_TUNED &&
      path != JK_ATTENTION_WGMMA)
    return cudaErrorInvalidValue;
  if (is_empty(s)) return cudaSuccess;
  if (!q || !k || !v || !out || !lse || !dout || !delta || !dq || !dk || !dv) return cudaErrorInvalidValue;
  const void* const pointers[] = {q, k, v, out, dout, dq, dk, dv};
  const bool tuned_ok = attention_tuned_supported(s, pointers, 8);
  if (path == JK_ATTENTION_TUNED && !tuned_ok) return cudaErrorInvalidValue;
  const std::int64_t rows = s.batch * s.seq * s.q_heads;
  if (warp_blocks(rows) > static_cast<unsigned>(INT_MAX)) return cudaErrorInvalidValue;
  attn_bwd_delta_kernel<<<warp_blocks(rows), kSimpleThreads, 0, stream>>>(out, dout, seq_len, delta, s.batch, s.seq,
                                                                          s.q_heads, static_cast<int>(s.head_dim));
  JK_RETURN_IF_ERROR(cudaGetLastError());
  if (path == JK_ATTENTION_WGMMA) {
    bool wgmma_ok = false;
    JK_RETURN_IF_ERROR(attention_wgmma_supported(s, pointers, 8, &wgmma_ok));
    if (wgmma_ok) return attention_bwd_wgmma<TOut>(q, k, v, lse, dout, seq_len, delta, dq, dk, dv, s, stream);
  }
  if (path != JK_ATTENTION_SIMPLE && tuned_ok)
    return attention_bwd_tuned<TOut>(q, k, v, lse, dout, seq_len, delta, dq, dk, dv, s, stream);
  return bwd_simple<TOut>(q, k, v, lse, dout, seq_len, delta, dq, dk, dv, s, stream);
}

cudaError_t attention_fwd(const std::uint16_t* q, const std::uint16_t* k, const std::uint16_t* v,
                          const std::int32_t* seq_len, std::uint16_t* out, float* lse, const jk_attention_shape_t& s,
                          jk_attention_path_t path, cudaStream_t stream) {
  if (!valid_shape(s)) return cudaErrorInvalidValue;
  if (path != JK_ATTENTION_AUTO && path != JK_ATTENTION_SIMPLE && path != JK_ATTENTION_TUNED &&
      path != JK_ATTENTION_WGMMA)
    return cudaErrorInvalidValue;
  if (is_empty(s)) return cudaSuccess;
  if (!q || !k || !v || !out) return cudaErrorInvalidValue;
  const void* const pointers[] = {q, k, v, out};
  const bool tuned_ok = attention_tuned_supported(s, pointers, 4);
  if (path == JK_ATTENTION_TUNED && !tuned_ok) return cudaErrorInvalidValue;
  if (path == JK_ATTENTION_WGMMA) {
    bool wgmma_ok = false;
    JK_RETURN_IF_ERROR(attention_wgmma_supported(s, pointers, 4, &wgmma_ok));
    if (wgmma_ok) return attention_fwd_wgmma(q, k, v, seq_len, out, lse, s, stream);
  }
  if (path != JK_ATTENTION_SIMPLE && tuned_ok) return attention_fwd_tuned(q, k, v, seq_len, out, lse, s, stream);
  return fwd_simple(q, k, v, seq_len, out, lse, s, stream);
}

cudaError_t attention_decode(const std::uint16_t* q, const std::uint16_t* k_cache, const std::uint16_t* v_cache,
                             const std::int32_t* cache_len, std::uint16_t* out, float* lse, std::int64_t B,
                             std::int64_t Tmax, std::int64_t Hq, std::int64_t Hkv, std::int64_t d, void* workspace,
                             std::size_t workspace_bytes, cudaStream_t stream) {
  if (B < 0 || Tmax < 0 || Hq < 1 || Hkv < 1 || d < 1 || d > kMaxHeadDim || Hq % Hkv != 0) return cudaErrorInvalidValue;
  if (B == 0) return cudaSuccess;
  if (!q || !out || !cache_len || (Tmax > 0 && (!k_cache || !v_cache || !workspace))) return cudaErrorInvalidValue;
  const std::int64_t chunks64 = std::max<std::int64_t>(1, (Tmax + kDecodeChunk - 1) / kDecodeChunk);
  if (B > 65535 || Hq > 65535 || chunks64 > INT_MAX) return cudaErrorInvalidValue;
  if (Tmax > 0 && workspace_bytes < jk_attention_decode_workspace_bytes(B, Hq, Tmax, d)) return cudaErrorInvalidValue;
  if (Tmax > 0 && !is_aligned(workspace, 16)) return cudaErrorInvalidValue;
  const int chunks = static_cast<int>(chunks64);
  const int di = static_cast<int>(d);
  if (Tmax == 0) {  // empty caches: out = 0, lse = -inf, through the combine of zero chunks
    attn_decode_combine_kernel<<<dim3(static_cast<unsigned>(Hq), static_cast<unsigned>(B)), kMaxHeadDim, 0, stream>>>(
        nullptr, out, lse, Hq, 0, di);
    return cudaGetLastError();
  }
  float* partial = static_cast<float*>(workspace);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const dim3 grid(static_cast<unsigned>(chunks), static_cast<unsigned>(Hq), static_cast<unsigned>(B));
  JK_RETURN_IF_ERROR(with_per_lane(di, [&](auto per_lane) {
    constexpr int P = decltype(per_lane)::value;
    // contiguous columns (one vector load per lane and row) when d fills the lanes exactly and the rows align
    const std::size_t vec_bytes = 2 * P;
    if (di == kWarpSize * P && is_aligned(q, vec_bytes) && is_aligned(k_cache, vec_bytes) &&
        is_aligned(v_cache, vec_bytes)) {
      attn_decode_partial_kernel<P, true>
          <<<grid, kSimpleThreads, 0, stream>>>(q, k_cache, v_cache, cache_len, partial, Tmax, Hq, Hkv, di, scale);
    } else {
      attn_decode_partial_kernel<P, false>
          <<<grid, kSimpleThreads, 0, stream>>>(q, k_cache, v_cache, cache_len, partial, Tmax, Hq, Hkv, di, scale);
    }
    return cudaGetLastError();
  }));
  attn_decode_combine_kernel<<<dim3(static_cast<unsigned>(Hq), static_cast<unsigned>(B)), kMaxHeadDim, 0, stream>>>(
      partial, out, lse, Hq, chunks, di);
  return cudaGetLastError();
}

#endif  // JK_ATTENTION_EMULATE
}  // namespace jk::detail

// ================================================================================================
// Tuned forward and backward: FlashAttention-2 with mma.sync m16n8k16 (bf16 in, fp32 accumulate).
// ================================================================================================
namespace jk::detail {
namespace {

constexpr int kTileM = 64;  // query rows per head per CTA (4 warps x 16 rows)
constexpr int kTileN = 64;  // keys per K/V tile

#ifndef JK_ATTENTION_EMULATE
__device__ __forceinline__ std::uint32_t smem_address(const void* p) {
  return static_cast<std::uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte global -> shared copy; src_bytes 0 writes zeros (rows past the end).
__device__ __forceinline__ void cp_async_16(std::uint32_t dst, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(std::uint32_t addr, std::uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t addr, std::uint32_t (&r)[4]) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// D = A B + D, m16n8k16, bf16 inputs, fp32 accumulators (PTX ISA fragment layouts).
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0,
                                               std::uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Two floats -> bf16x2 (round to nearest even); `lo` goes to the low half (the lower column).
__device__ __forceinline__ std::uint32_t pack_bf16x2(float lo, float hi) {
  std::uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;\n" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
#endif  // JK_ATTENTION_EMULATE

// FlashAttention-2 forward. CTA = (query block of kTileM positions, K/V head h and a group of G query
// heads that share it, sequence b); 4 warps per query head, each warp 16 query rows. The G heads'
// warps read the same K/V tiles from shared memory, so K/V are loaded once for G heads (G = 2 for
// JetMoE: both slots' heads h and h + H_kv). K/V tiles are double-buffered with cp.async; S = Q K^T
// and O += P V use mma.sync with ldmatrix (V through ldmatrix.trans); the online softmax is FA2's
// (running max per row, thread-local row sums reduced at the end in a fixed butterfly).
// Causal block skipping: query block m sees key tiles 0..ceil(min(m0 + kTileM, len) / kTileN) - 1.
template <int D, int G>
__global__ void __launch_bounds__(G * 128, 1)
    attn_fwd_tuned_kernel(const std::uint16_t* __restrict__ q, const std::uint16_t* __restrict__ k,
                          const std::uint16_t* __restrict__ v, const std::int32_t* __restrict__ seq_len,
                          std::uint16_t* __restrict__ out, float* __restrict__ lse, std::int64_t T, std::int64_t Hq,
                          std::int64_t Hkv, float scale) {
  constexpr int kStride = D + 8;  // padded smem row (bf16): conflict-free ldmatrix
  constexpr int kThreads = G * 128;
  constexpr int kChunksPerRow = D / 8;  // 16-byte chunks per row
  constexpr int kKSteps = D / 16;       // k-steps of S = Q K^T
  constexpr int kNTilesS = kTileN / 8;  // n8 tiles of S
  constexpr int kNTilesO = D / 8;       // n8 tiles of O
  JK_ATTENTION_DYNAMIC_SMEM(smem);
  std::uint16_t* k_s = smem;                         // [2][kTileN][kStride]
  std::uint16_t* v_s = smem + 2 * kTileN * kStride;  // [2][kTileN][kStride]

  const int tid = threadIdx.x;
  const int warp = tid / kWarpSize, lane = tid % kWarpSize;
  const int g = lane / 4, tq = lane % 4;  // mma groupID and thread-in-group
  const std::int64_t b = blockIdx.z;
  const std::int64_t h = blockIdx.y % Hkv;
  const std::int64_t group = blockIdx.y / Hkv;
  const std::int64_t head = (group * G + warp / 4) * Hkv + h;  // this warp's query head (tiled pairing)
  const std::int64_t m_block = static_cast<std::int64_t>(gridDim.x) - 1 - blockIdx.x;  // longest rows first
  const std::int64_t m0 = m_block * kTileM;
  const std::int64_t len = clamp_len(seq_len, b, T);
  const std::int64_t row0 = m0 + (warp % 4) * 16 + g;  // this thread's rows: row0 and row0 + 8

  const float scale_log2 = scale * 1.4426950408889634f;
  float o_acc[kNTilesO][4];
  JK_UNROLL
  for (int n = 0; n < kNTilesO; ++n) o_acc[n][0] = o_acc[n][1] = o_acc[n][2] = o_acc[n][3] = 0.0f;
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.0f, 0.0f};  // thread-local partial sums (this thread's columns)

  const std::int64_t kv_limit = len;  // keys >= len are masked (and zero-filled)
  const std::int64_t q_end = m0 + kTileM < len ? m0 + kTileM : len;
  const int num_tiles = q_end > m0 ? static_cast<int>((q_end + kTileN - 1) / kTileN) : 0;

  const auto load_tile = [&](int tile, int stage) {
    const std::int64_t n0 = static_cast<std::int64_t>(tile) * kTileN;
    for (int c = tid; c < kTileN * kChunksPerRow; c += kThreads) {
      const int r = c / kChunksPerRow, col = (c % kChunksPerRow) * 8;
      const std::int64_t key = n0 + r;
      const bool valid = key < kv_limit;
      const std::int64_t off = valid ? ((b * T + key) * Hkv + h) * D + col : 0;
      cp_async_16(smem_address(k_s + (stage * kTileN + r) * kStride + col), k + off, valid ? 16 : 0);
      cp_async_16(smem_address(v_s + (stage * kTileN + r) * kStride + col), v + off, valid ? 16 : 0);
    }
  };

  if (num_tiles > 0) {
    load_tile(0, 0);
    cp_async_commit();
  }

  // Q fragments (A operand, row-major 16 x 16 per k-step), straight from global into registers.
  std::uint32_t q_frag[kKSteps][4];
  {
    const bool ok0 = row0 < len, ok8 = row0 + 8 < len;  // rows past the end: zeros, no address formed
    const std::uint32_t* q_row0 =
        reinterpret_cast<const std::uint32_t*>(q + (ok0 ? ((b * T + row0) * Hq + head) * D : 0));
    const std::uint32_t* q_row8 =
        reinterpret_cast<const std::uint32_t*>(q + (ok8 ? ((b * T + row0 + 8) * Hq + head) * D : 0));
    JK_UNROLL
    for (int ks = 0; ks < kKSteps; ++ks) {
      const int w = ks * 8 + tq;  // 32-bit word index of column ks*16 + 2 tq
      q_frag[ks][0] = ok0 ? q_row0[w] : 0u;
      q_frag[ks][1] = ok8 ? q_row8[w] : 0u;
      q_frag[ks][2] = ok0 ? q_row0[w + 4] : 0u;
      q_frag[ks][3] = ok8 ? q_row8[w + 4] : 0u;
    }
  }

  for (int tile = 0; tile < num_tiles; ++tile) {
    const int stage = tile & 1;
    if (tile + 1 < num_tiles) {
      load_tile(tile + 1, stage ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const std::uint16_t* kt = k_s + stage * kTileN * kStride;
    const std::uint16_t* vt = v_s + stage * kTileN * kStride;
    const std::int64_t n0 = static_cast<std::int64_t>(tile) * kTileN;

    // S = Q K^T (16 x kTileN per warp)
    float s_acc[kNTilesS][4];
    JK_UNROLL
    for (int n = 0; n < kNTilesS; ++n) s_acc[n][0] = s_acc[n][1] = s_acc[n][2] = s_acc[n][3] = 0.0f;
    const int mi = lane / 8, mr = lane % 8;
    JK_UNROLL
    for (int ks = 0; ks < kKSteps; ++ks) {
      JK_UNROLL
      for (int np = 0; np < kNTilesS / 2; ++np) {
        // matrices: (keys np*16+0..7, cols ks*16), (same keys, cols +8), (keys +8..15, cols ks*16), (+8, +8)
        std::uint32_t bk[4];
        ldmatrix_x4(smem_address(kt + (np * 16 + (mi / 2) * 8 + mr) * kStride + ks * 16 + (mi % 2) * 8), bk);
        mma_bf16_16816(s_acc[2 * np], q_frag[ks], bk[0], bk[1]);
        mma_bf16_16816(s_acc[2 * np + 1], q_frag[ks], bk[2], bk[3]);
      }
    }

    // Mask (causal and padding) on the tiles that reach the diagonal or the end of the sequence.
    if (n0 + kTileN > m0 || n0 + kTileN > len) {
      JK_UNROLL
      for (int n = 0; n < kNTilesS; ++n) JK_UNROLL
      for (int e = 0; e < 4; ++e) {
        const std::int64_t key = n0 + n * 8 + tq * 2 + (e & 1);
        const std::int64_t row = row0 + (e >= 2 ? 8 : 0);
        if (key > row || key >= len) s_acc[n][e] = -INFINITY;
      }
    }

    // Online softmax (per row: the 4 threads of a group hold its kTileN columns).
    JK_UNROLL
    for (int rr = 0; rr < 2; ++rr) {
      float mx = row_max[rr];
      JK_UNROLL
      for (int n = 0; n < kNTilesS; ++n) mx = fmaxf(mx, fmaxf(s_acc[n][2 * rr], s_acc[n][2 * rr + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_scaled = mx == -INFINITY ? 0.0f : mx * scale_log2;  // fully masked row: p = 0, no NaN
      const float corr = exp2f(row_max[rr] * scale_log2 - m_scaled);    // 0 when the old max is -inf
      row_max[rr] = mx;
      float sum = 0.0f;
      JK_UNROLL
      for (int n = 0; n < kNTilesS; ++n) {
        const float p0 = exp2f(fmaf(s_acc[n][2 * rr], scale_log2, -m_scaled));
        const float p1 = exp2f(fmaf(s_acc[n][2 * rr + 1], scale_log2, -m_scaled));
        s_acc[n][2 * rr] = p0;
        s_acc[n][2 * rr + 1] = p1;
        sum += p0 + p1;
      }
      row_sum[rr] = row_sum[rr] * corr + sum;
      JK_UNROLL
      for (int n = 0; n < kNTilesO; ++n) {
        o_acc[n][2 * rr] *= corr;
        o_acc[n][2 * rr + 1] *= corr;
      }
    }

    // O += P V: P (bf16) from the S accumulators (the C layout of two n8 tiles is the A layout of k16).
    JK_UNROLL
    for (int kk = 0; kk < kTileN / 16; ++kk) {
      const std::uint32_t a[4] = {pack_bf16x2(s_acc[2 * kk][0], s_acc[2 * kk][1]),
                                  pack_bf16x2(s_acc[2 * kk][2], s_acc[2 * kk][3]),
                                  pack_bf16x2(s_acc[2 * kk + 1][0], s_acc[2 * kk + 1][1]),
                                  pack_bf16x2(s_acc[2 * kk + 1][2], s_acc[2 * kk + 1][3])};
      JK_UNROLL
      for (int dp = 0; dp < kNTilesO / 2; ++dp) {
        // matrices: (keys kk*16+0..7, cols dp*16), (keys +8..15, cols dp*16), (keys 0..7, cols +8), (+8, +8)
        std::uint32_t bv[4];
        ldmatrix_x4_trans(smem_address(vt + (kk * 16 + (mi % 2) * 8 + mr) * kStride + dp * 16 + (mi / 2) * 8), bv);
        mma_bf16_16816(o_acc[2 * dp], a, bv[0], bv[1]);
        mma_bf16_16816(o_acc[2 * dp + 1], a, bv[2], bv[3]);
      }
    }
    __syncthreads();  // this stage is refilled by the next iteration's prefetch
  }

  // Finish: full row sums (fixed butterfly over the 4 threads of the row), normalise, store.
  JK_UNROLL
  for (int rr = 0; rr < 2; ++rr) {
    float l = row_sum[rr];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const std::int64_t row = row0 + rr * 8;
    if (row >= T) continue;
    const bool valid = row < len;  // valid rows have l >= 1 (their own key)
    const float inv = valid ? 1.0f / l : 0.0f;
    std::uint32_t* dst = reinterpret_cast<std::uint32_t*>(out + ((b * T + row) * Hq + head) * D);
    JK_UNROLL
    for (int n = 0; n < kNTilesO; ++n)
      dst[n * 4 + tq] = pack_bf16x2(o_acc[n][2 * rr] * inv, o_acc[n][2 * rr + 1] * inv);
    if (lse != nullptr && tq == 0) lse[(b * Hq + head) * T + row] = valid ? row_max[rr] * scale + logf(l) : -INFINITY;
  }
}

#ifndef JK_ATTENTION_EMULATE
template <int D, int G>
cudaError_t launch_fwd_tuned(const std::uint16_t* q, const std::uint16_t* k, const std::uint16_t* v,
                             const std::int32_t* seq_len, std::uint16_t* out, float* lse, const jk_attention_shape_t& s,
                             cudaStream_t stream) {
  constexpr int kSmem = 2 * 2 * kTileN * (D + 8) * static_cast<int>(sizeof(std::uint16_t));
  JK_RETURN_IF_ERROR(
      cudaFuncSetAttribute(attn_fwd_tuned_kernel<D, G>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  const std::int64_t groups = s.q_heads / s.kv_heads / G;
  const dim3 grid(static_cast<unsigned>((s.seq + kTileM - 1) / kTileM), static_cast<unsigned>(s.kv_heads * groups),
                  static_cast<unsigned>(s.batch));
  attn_fwd_tuned_kernel<D, G><<<grid, G * 128, kSmem, stream>>>(q, k, v, seq_len, out, lse, s.seq, s.q_heads,
                                                                s.kv_heads, 1.0f / std::sqrt(static_cast<float>(D)));
  return cudaGetLastError();
}

#endif  // JK_ATTENTION_EMULATE

// ---- tuned backward -------------------------------------------------------------------------------------
constexpr int kBwdKeys = 64;     // dK/dV kernel: keys per CTA (4 warps x 16)
constexpr int kBwdQueries = 32;  // dK/dV kernel: queries per tile
constexpr int kDqKeys = 32;      // dQ kernel: keys per tile

template <typename TOut>
__device__ __forceinline__ void store_pair(TOut* dst, float a, float b) {
  if constexpr (std::is_same_v<TOut, float>) {
    *reinterpret_cast<float2*>(dst) = make_float2(a, b);
  } else {
    *reinterpret_cast<std::uint32_t*>(dst) = pack_bf16x2(a, b);
  }
}

// dK, dV: CTA = (key block of kBwdKeys, K/V head h, sequence b), 4 warps x 16 keys. Loops over the
// query heads on h in slot order and, for each, over the query tiles from the key block to the end of
// the sequence (both in ascending order): the sum over the heads that share h happens in registers in
// a fixed order, and every dK/dV element is written once (no atomics). Per query tile (transposed FA2):
//   S^T = K Q^T, P^T = exp(S^T scale - lse), dV += P^T dO, dP^T = V dO^T, dS^T = P^T (dP^T - D),
//   dK += dS^T Q; dK is scaled by 1/sqrt(d) at the end. P^T and dS^T are rounded to bf16 for the mma.
template <int D, typename TOut>
__global__ void __launch_bounds__(128, 1)
    attn_bwd_dkdv_tuned_kernel(const std::uint16_t* __restrict__ q, const std::uint16_t* __restrict__ k,
                               const std::uint16_t* __restrict__ v, const float* __restrict__ lse,
                               const std::uint16_t* __restrict__ dout, const float* __restrict__ delta,
                               const std::int32_t* __restrict__ seq_len, TOut* __restrict__ dk, TOut* __restrict__ dv,
                               std::int64_t T, std::int64_t Hq, std::int64_t Hkv, float scale) {
  constexpr int kStride = D + 8;
  constexpr int kChunksPerRow = D / 8;
  constexpr int kKSteps = D / 16;
  constexpr int kNTilesS = kBwdQueries / 8;  // n8 tiles of S^T (queries)
  constexpr int kNTilesO = D / 8;            // n8 tiles of dK, dV
  JK_ATTENTION_DYNAMIC_SMEM(smem);
  std::uint16_t* k_s = smem;                                                  // [kBwdKeys][kStride]
  std::uint16_t* v_s = k_s + kBwdKeys * kStride;                              // [kBwdKeys][kStride]
  std::uint16_t* q_s = v_s + kBwdKeys * kStride;                              // [2][kBwdQueries][kStride]
  std::uint16_t* do_s = q_s + 2 * kBwdQueries * kStride;                      // [2][kBwdQueries][kStride]
  float* lse_s = reinterpret_cast<float*>(do_s + 2 * kBwdQueries * kStride);  // [2][kBwdQueries], log2 units
  float* delta_s = lse_s + 2 * kBwdQueries;                                   // [2][kBwdQueries]

  const int tid = threadIdx.x;
  const int warp = tid / kWarpSize, lane = tid % kWarpSize;
  const int g = lane / 4, tq = lane % 4, mi = lane / 8, mr = lane % 8;
  const std::int64_t b = blockIdx.z, h = blockIdx.y;
  const std::int64_t k0 = static_cast<std::int64_t>(blockIdx.x) * kBwdKeys;  // block 0 (most work) first
  const std::int64_t len = clamp_len(seq_len, b, T);
  const std::int64_t slots = Hq / Hkv;
  const float log2e = 1.4426950408889634f;
  const float scale_log2 = scale * log2e;
  const std::int64_t key0 = k0 + warp * 16 + g;  // this thread's key rows: key0 and key0 + 8

  float dk_acc[kNTilesO][4], dv_acc[kNTilesO][4];
  JK_UNROLL
  for (int n = 0; n < kNTilesO; ++n) JK_UNROLL
  for (int e = 0; e < 4; ++e) dk_acc[n][e] = dv_acc[n][e] = 0.0f;

  const std::int64_t m_tiles = k0 < len ? (len - k0 + kBwdQueries - 1) / kBwdQueries : 0;
  const std::int64_t iters = slots * m_tiles;

  // K and V rows of this block (zero past len), then the query tiles, double-buffered.
  if (iters > 0) {
    for (int c = tid; c < kBwdKeys * kChunksPerRow; c += 128) {
      const int r = c / kChunksPerRow, col = (c % kChunksPerRow) * 8;
      const std::int64_t key = k0 + r;
      const bool valid = key < len;
      const std::int64_t off = valid ? ((b * T + key) * Hkv + h) * D + col : 0;
      cp_async_16(smem_address(k_s + r * kStride + col), k + off, valid ? 16 : 0);
      cp_async_16(smem_address(v_s + r * kStride + col), v + off, valid ? 16 : 0);
    }
  }
  const auto load_tile = [&](std::int64_t it, int stage) {
    const std::int64_t head = (it / m_tiles) * Hkv + h;
    const std::int64_t m0 = k0 + (it % m_tiles) * kBwdQueries;
    for (int c = tid; c < kBwdQueries * kChunksPerRow; c += 128) {
      const int r = c / kChunksPerRow, col = (c % kChunksPerRow) * 8;
      const std::int64_t row = m0 + r;
      const bool valid = row < len;
      const std::int64_t off = valid ? ((b * T + row) * Hq + head) * D + col : 0;
      cp_async_16(smem_address(q_s + (stage * kBwdQueries + r) * kStride + col), q + off, valid ? 16 : 0);
      cp_async_16(smem_address(do_s + (stage * kBwdQueries + r) * kStride + col), dout + off, valid ? 16 : 0);
    }
    if (tid < kBwdQueries) {
      const std::int64_t row = m0 + tid;
      const bool valid = row < len;
      lse_s[stage * kBwdQueries + tid] = valid ? lse[(b * Hq + head) * T + row] * log2e : 0.0f;
      delta_s[stage * kBwdQueries + tid] = valid ? delta[(b * Hq + head) * T + row] : 0.0f;
    }
  };
  if (iters > 0) {
    load_tile(0, 0);
    cp_async_commit();
  }

  for (std::int64_t it = 0; it < iters; ++it) {
    const int stage = static_cast<int>(it & 1);
    if (it + 1 < iters) {
      load_tile(it + 1, stage ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const std::int64_t m0 = k0 + (it % m_tiles) * kBwdQueries;
    const std::uint16_t* qt = q_s + stage * kBwdQueries * kStride;
    const std::uint16_t* dot = do_s + stage * kBwdQueries * kStride;
    const float* lse_t = lse_s + stage * kBwdQueries;
    const float* delta_t = delta_s + stage * kBwdQueries;

    // S^T = K Q^T and dP^T = V dO^T (16 keys x kBwdQueries per warp); K, V A-fragments by ldmatrix.
    float s_acc[kNTilesS][4], dp_acc[kNTilesS][4];
    JK_UNROLL
    for (int n = 0; n < kNTilesS; ++n) JK_UNROLL
    for (int e = 0; e < 4; ++e) s_acc[n][e] = dp_acc[n][e] = 0.0f;
    JK_UNROLL
    for (int ks = 0; ks < kKSteps; ++ks) {
      std::uint32_t ka[4], va[4];
      const int a_off = (warp * 16 + (mi % 2) * 8 + mr) * kStride + ks * 16 + (mi / 2) * 8;
      ldmatrix_x4(smem_address(k_s + a_off), ka);
      ldmatrix_x4(smem_address(v_s + a_off), va);
      JK_UNROLL
      for (int np = 0; np < kNTilesS / 2; ++np) {
        const int b_off = (np * 16 + (mi / 2) * 8 + mr) * kStride + ks * 16 + (mi % 2) * 8;
        std::uint32_t bq[4], bd[4];
        ldmatrix_x4(smem_address(qt + b_off), bq);
        ldmatrix_x4(smem_address(dot + b_off), bd);
        mma_bf16_16816(s_acc[2 * np], ka, bq[0], bq[1]);
        mma_bf16_16816(s_acc[2 * np + 1], ka, bq[2], bq[3]);
        mma_bf16_16816(dp_acc[2 * np], va, bd[0], bd[1]);
        mma_bf16_16816(dp_acc[2 * np + 1], va, bd[2], bd[3]);
      }
    }
    // P^T and dS^T (in place). Masked: query < key (causal) or query >= len (padding).
    const bool need_mask = m0 < k0 + kBwdKeys || m0 + kBwdQueries > len;
    JK_UNROLL
    for (int n = 0; n < kNTilesS; ++n) JK_UNROLL
    for (int e = 0; e < 4; ++e) {
      const int col = n * 8 + tq * 2 + (e & 1);
      const std::int64_t query = m0 + col;
      const std::int64_t key = key0 + (e >= 2 ? 8 : 0);
      float p = exp2f(fmaf(s_acc[n][e], scale_log2, -lse_t[col]));
      if (need_mask && (query < key || query >= len)) p = 0.0f;
      s_acc[n][e] = p;
      dp_acc[n][e] = p * (dp_acc[n][e] - delta_t[col]);
    }
    // dV += P^T dO and dK += dS^T Q (A from the accumulators, B by ldmatrix.trans of the query tiles)
    JK_UNROLL
    for (int kk = 0; kk < kBwdQueries / 16; ++kk) {
      const std::uint32_t pa[4] = {pack_bf16x2(s_acc[2 * kk][0], s_acc[2 * kk][1]),
                                   pack_bf16x2(s_acc[2 * kk][2], s_acc[2 * kk][3]),
                                   pack_bf16x2(s_acc[2 * kk + 1][0], s_acc[2 * kk + 1][1]),
                                   pack_bf16x2(s_acc[2 * kk + 1][2], s_acc[2 * kk + 1][3])};
      const std::uint32_t da[4] = {pack_bf16x2(dp_acc[2 * kk][0], dp_acc[2 * kk][1]),
                                   pack_bf16x2(dp_acc[2 * kk][2], dp_acc[2 * kk][3]),
                                   pack_bf16x2(dp_acc[2 * kk + 1][0], dp_acc[2 * kk + 1][1]),
                                   pack_bf16x2(dp_acc[2 * kk + 1][2], dp_acc[2 * kk + 1][3])};
      JK_UNROLL
      for (int dp = 0; dp < kNTilesO / 2; ++dp) {
        const int t_off = (kk * 16 + (mi % 2) * 8 + mr) * kStride + dp * 16 + (mi / 2) * 8;
        std::uint32_t bdo[4], bq[4];
        ldmatrix_x4_trans(smem_address(dot + t_off), bdo);
        ldmatrix_x4_trans(smem_address(qt + t_off), bq);
        mma_bf16_16816(dv_acc[2 * dp], pa, bdo[0], bdo[1]);
        mma_bf16_16816(dv_acc[2 * dp + 1], pa, bdo[2], bdo[3]);
        mma_bf16_16816(dk_acc[2 * dp], da, bq[0], bq[1]);
        mma_bf16_16816(dk_acc[2 * dp + 1], da, bq[2], bq[3]);
      }
    }
    __syncthreads();  // this stage is refilled by the next iteration's prefetch
  }

  JK_UNROLL
  for (int rr = 0; rr < 2; ++rr) {
    const std::int64_t key = key0 + rr * 8;
    if (key >= T) continue;
    const std::int64_t off = ((b * T + key) * Hkv + h) * D;
    JK_UNROLL
    for (int n = 0; n < kNTilesO; ++n) {
      const int col = n * 8 + tq * 2;
      store_pair(dk + off + col, dk_acc[n][2 * rr] * scale, dk_acc[n][2 * rr + 1] * scale);
      store_pair(dv + off + col, dv_acc[n][2 * rr], dv_acc[n][2 * rr + 1]);
    }
  }
}

// dQ: CTA = (query block of kTileM, K/V head h and G query heads on it, sequence b), as the forward;
// loops over key tiles of kDqKeys in ascending order: S = Q K^T, P = exp(S scale - lse),
// dP = dO V^T, dS = P (dP - D), dQ += dS K; dQ scaled by 1/sqrt(d) at the end.
template <int D, int G, typename TOut>
__global__ void __launch_bounds__(G * 128, 1)
    attn_bwd_dq_tuned_kernel(const std::uint16_t* __restrict__ q, const std::uint16_t* __restrict__ k,
                             const std::uint16_t* __restrict__ v, const float* __restrict__ lse,
                             const std::uint16_t* __restrict__ dout, const float* __restrict__ delta,
                             const std::int32_t* __restrict__ seq_len, TOut* __restrict__ dq, std::int64_t T,
                             std::int64_t Hq, std::int64_t Hkv, float scale) {
  constexpr int kStride = D + 8;
  constexpr int kThreads = G * 128;
  constexpr int kChunksPerRow = D / 8;
  constexpr int kKSteps = D / 16;
  constexpr int kNTilesS = kDqKeys / 8;
  constexpr int kNTilesO = D / 8;
  JK_ATTENTION_DYNAMIC_SMEM(smem);
  std::uint16_t* k_s = smem;                          // [2][kDqKeys][kStride]
  std::uint16_t* v_s = smem + 2 * kDqKeys * kStride;  // [2][kDqKeys][kStride]

  const int tid = threadIdx.x;
  const int warp = tid / kWarpSize, lane = tid % kWarpSize;
  const int g = lane / 4, tq = lane % 4, mi = lane / 8, mr = lane % 8;
  const std::int64_t b = blockIdx.z;
  const std::int64_t h = blockIdx.y % Hkv;
  const std::int64_t group = blockIdx.y / Hkv;
  const std::int64_t head = (group * G + warp / 4) * Hkv + h;
  const std::int64_t m_block = static_cast<std::int64_t>(gridDim.x) - 1 - blockIdx.x;
  const std::int64_t m0 = m_block * kTileM;
  const std::int64_t len = clamp_len(seq_len, b, T);
  const std::int64_t row0 = m0 + (warp % 4) * 16 + g;
  const float log2e = 1.4426950408889634f;
  const float scale_log2 = scale * log2e;

  const std::int64_t q_end = m0 + kTileM < len ? m0 + kTileM : len;
  const int num_tiles = q_end > m0 ? static_cast<int>((q_end + kDqKeys - 1) / kDqKeys) : 0;
  const auto load_tile = [&](int tile, int stage) {
    const std::int64_t n0 = static_cast<std::int64_t>(tile) * kDqKeys;
    for (int c = tid; c < kDqKeys * kChunksPerRow; c += kThreads) {
      const int r = c / kChunksPerRow, col = (c % kChunksPerRow) * 8;
      const std::int64_t key = n0 + r;
      const bool valid = key < len;
      const std::int64_t off = valid ? ((b * T + key) * Hkv + h) * D + col : 0;
      cp_async_16(smem_address(k_s + (stage * kDqKeys + r) * kStride + col), k + off, valid ? 16 : 0);
      cp_async_16(smem_address(v_s + (stage * kDqKeys + r) * kStride + col), v + off, valid ? 16 : 0);
    }
  };
  if (num_tiles > 0) {
    load_tile(0, 0);
    cp_async_commit();
  }

  // Q and dO fragments (A operands) and the row statistics, in registers.
  std::uint32_t q_frag[kKSteps][4], do_frag[kKSteps][4];
  float row_lse2[2], row_delta[2];
  {
    const bool ok0 = row0 < len, ok8 = row0 + 8 < len;
    const std::int64_t off0 = ((b * T + row0) * Hq + head) * D, off8 = ((b * T + row0 + 8) * Hq + head) * D;
    const std::uint32_t* q0 = reinterpret_cast<const std::uint32_t*>(q + (ok0 ? off0 : 0));
    const std::uint32_t* q8 = reinterpret_cast<const std::uint32_t*>(q + (ok8 ? off8 : 0));
    const std::uint32_t* d0 = reinterpret_cast<const std::uint32_t*>(dout + (ok0 ? off0 : 0));
    const std::uint32_t* d8 = reinterpret_cast<const std::uint32_t*>(dout + (ok8 ? off8 : 0));
    JK_UNROLL
    for (int ks = 0; ks < kKSteps; ++ks) {
      const int w = ks * 8 + tq;
      q_frag[ks][0] = ok0 ? q0[w] : 0u;
      q_frag[ks][1] = ok8 ? q8[w] : 0u;
      q_frag[ks][2] = ok0 ? q0[w + 4] : 0u;
      q_frag[ks][3] = ok8 ? q8[w + 4] : 0u;
      do_frag[ks][0] = ok0 ? d0[w] : 0u;
      do_frag[ks][1] = ok8 ? d8[w] : 0u;
      do_frag[ks][2] = ok0 ? d0[w + 4] : 0u;
      do_frag[ks][3] = ok8 ? d8[w + 4] : 0u;
    }
    // padded rows: lse2 = +inf makes P = 0 (and no -inf - -inf)
    row_lse2[0] = ok0 ? lse[(b * Hq + head) * T + row0] * log2e : INFINITY;
    row_lse2[1] = ok8 ? lse[(b * Hq + head) * T + row0 + 8] * log2e : INFINITY;
    row_delta[0] = ok0 ? delta[(b * Hq + head) * T + row0] : 0.0f;
    row_delta[1] = ok8 ? delta[(b * Hq + head) * T + row0 + 8] : 0.0f;
  }
  float dq_acc[kNTilesO][4];
  JK_UNROLL
  for (int n = 0; n < kNTilesO; ++n) dq_acc[n][0] = dq_acc[n][1] = dq_acc[n][2] = dq_acc[n][3] = 0.0f;

  for (int tile = 0; tile < num_tiles; ++tile) {
    const int stage = tile & 1;
    if (tile + 1 < num_tiles) {
      load_tile(tile + 1, stage ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const std::uint16_t* kt = k_s + stage * kDqKeys * kStride;
    const std::uint16_t* vt = v_s + stage * kDqKeys * kStride;
    const std::int64_t n0 = static_cast<std::int64_t>(tile) * kDqKeys;

    float s_acc[kNTilesS][4], dp_acc[kNTilesS][4];
    JK_UNROLL
    for (int n = 0; n < kNTilesS; ++n) JK_UNROLL
    for (int e = 0; e < 4; ++e) s_acc[n][e] = dp_acc[n][e] = 0.0f;
    JK_UNROLL
    for (int ks = 0; ks < kKSteps; ++ks) {
      JK_UNROLL
      for (int np = 0; np < kNTilesS / 2; ++np) {
        const int b_off = (np * 16 + (mi / 2) * 8 + mr) * kStride + ks * 16 + (mi % 2) * 8;
        std::uint32_t bk[4], bv[4];
        ldmatrix_x4(smem_address(kt + b_off), bk);
        ldmatrix_x4(smem_address(vt + b_off), bv);
        mma_bf16_16816(s_acc[2 * np], q_frag[ks], bk[0], bk[1]);
        mma_bf16_16816(s_acc[2 * np + 1], q_frag[ks], bk[2], bk[3]);
        mma_bf16_16816(dp_acc[2 * np], do_frag[ks], bv[0], bv[1]);
        mma_bf16_16816(dp_acc[2 * np + 1], do_frag[ks], bv[2], bv[3]);
      }
    }
    const bool need_mask = n0 + kDqKeys > m0 || n0 + kDqKeys > len;
    JK_UNROLL
    for (int n = 0; n < kNTilesS; ++n) JK_UNROLL
    for (int e = 0; e < 4; ++e) {
      const int rr = e >= 2 ? 1 : 0;
      const std::int64_t key = n0 + n * 8 + tq * 2 + (e & 1);
      const std::int64_t row = row0 + rr * 8;
      float p = exp2f(fmaf(s_acc[n][e], scale_log2, -row_lse2[rr]));
      if (need_mask && (key > row || key >= len)) p = 0.0f;
      dp_acc[n][e] = p * (dp_acc[n][e] - row_delta[rr]);
    }
    JK_UNROLL
    for (int kk = 0; kk < kDqKeys / 16; ++kk) {
      const std::uint32_t da[4] = {pack_bf16x2(dp_acc[2 * kk][0], dp_acc[2 * kk][1]),
                                   pack_bf16x2(dp_acc[2 * kk][2], dp_acc[2 * kk][3]),
                                   pack_bf16x2(dp_acc[2 * kk + 1][0], dp_acc[2 * kk + 1][1]),
                                   pack_bf16x2(dp_acc[2 * kk + 1][2], dp_acc[2 * kk + 1][3])};
      JK_UNROLL
      for (int dp = 0; dp < kNTilesO / 2; ++dp) {
        std::uint32_t bk[4];
        ldmatrix_x4_trans(smem_address(kt + (kk * 16 + (mi % 2) * 8 + mr) * kStride + dp * 16 + (mi / 2) * 8), bk);
        mma_bf16_16816(dq_acc[2 * dp], da, bk[0], bk[1]);
        mma_bf16_16816(dq_acc[2 * dp + 1], da, bk[2], bk[3]);
      }
    }
    __syncthreads();
  }

  JK_UNROLL
  for (int rr = 0; rr < 2; ++rr) {
    const std::int64_t row = row0 + rr * 8;
    if (row >= T) continue;
    TOut* dst = dq + ((b * T + row) * Hq + head) * D;
    JK_UNROLL
    for (int n = 0; n < kNTilesO; ++n)
      store_pair(dst + n * 8 + tq * 2, dq_acc[n][2 * rr] * scale, dq_acc[n][2 * rr + 1] * scale);
  }
}

#ifndef JK_ATTENTION_EMULATE
template <int D, int G, typename TOut>
cudaError_t launch_bwd_tuned(const std::uint16_t* q, const std::uint16_t* k, const std::uint16_t* v, const float* lse,
                             const std::uint16_t* dout, const std::int32_t* seq_len, const float* delta, TOut* dq,
                             TOut* dk, TOut* dv, const jk_attention_shape_t& s, cudaStream_t stream) {
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  constexpr int kSmemDkdv = (2 * kBwdKeys + 4 * kBwdQueries) * (D + 8) * 2 + 4 * kBwdQueries * 4;
  JK_RETURN_IF_ERROR(cudaFuncSetAttribute(attn_bwd_dkdv_tuned_kernel<D, TOut>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemDkdv));
  const dim3 grid_kv(static_cast<unsigned>((s.seq + kBwdKeys - 1) / kBwdKeys), static_cast<unsigned>(s.kv_heads),
                     static_cast<unsigned>(s.batch));
  attn_bwd_dkdv_tuned_kernel<D, TOut><<<grid_kv, 128, kSmemDkdv, stream>>>(q, k, v, lse, dout, delta, seq_len, dk, dv,
                                                                           s.seq, s.q_heads, s.kv_heads, scale);
  JK_RETURN_IF_ERROR(cudaGetLastError());
  constexpr int kSmemDq = 2 * 2 * kDqKeys * (D + 8) * 2;
  JK_RETURN_IF_ERROR(
      cudaFuncSetAttribute(attn_bwd_dq_tuned_kernel<D, G, TOut>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemDq));
  const std::int64_t groups = s.q_heads / s.kv_heads / G;
  const dim3 grid_q(static_cast<unsigned>((s.seq + kTileM - 1) / kTileM), static_cast<unsigned>(s.kv_heads * groups),
                    static_cast<unsigned>(s.batch));
  attn_bwd_dq_tuned_kernel<D, G, TOut><<<grid_q, G * 128, kSmemDq, stream>>>(q, k, v, lse, dout, delta, seq_len, dq,
                                                                             s.seq, s.q_heads, s.kv_heads, scale);
  return cudaGetLastError();
}


// ================================================================================================
// sm_90a forward and backward (JK_ATTENTION_WGMMA): TMA + mbarriers + wgmma, FlashAttention-3 style.
// ================================================================================================
#ifndef JK_ATTENTION_EMULATE
// CTA = (64 query rows, K/V head h, a group of G query heads sharing it, sequence b), (1 + G) warpgroups:
// warpgroup 0 the producer (one thread: the G heads' Q tiles once, then the K and V tiles of 128 keys
// into a 2-stage ring), warpgroup 1 + c the consumer for query head slot c: S = Q K^T by wgmma from
// shared memory (m64n128k16, Q and K K-major), the online softmax on the S accumulators in registers
// (FA2's, as the tuned kernel: unnormalised P rounded to bf16), O += P V by wgmma with P from
// registers (the S accumulator layout of two n8 column groups is the A fragment of one k16 step) and
// V N-major from shared memory (transpose bit). Tiles in the 128-byte swizzle: Q and K as rows of 64
// head-dim elements (d = 128: two halves, 8 / 16 KB apart), V read along its rows (LBO 16 KB between the
// two 64-column halves). TMA maps are 4D (d, heads, T, B), so rows past T are zero-filled and a box never
// crosses into the next sequence. The G consumers share every K/V tile (K/V read once for G heads).
// empty[s] needs the 128 G threads of the consumers after their P V wgmmas have completed.
constexpr int kWgAttnQ = 64;      // query rows per CTA (one wgmma M)
constexpr int kWgAttnKeys = 128;  // keys per K/V tile (S: N = 128)
constexpr int kWgAttnStages = 2;

// The query block of a CTA shaped like the forward's: sequence b (blockIdx.z), K/V head h and group of
// query heads (blockIdx.y), ROWS query rows from m0 (the last block first: the longest rows start first),
// the sequence's length, and the key tiles of KEYS that the block's rows see (causal, up to len).
template <int ROWS, int KEYS>
struct WgQueryBlock {
  std::int64_t b, h, group, m0, len;
  int key_tiles;
  __device__ WgQueryBlock(const std::int32_t* seq_len, std::int64_t T, std::int64_t Hkv)
      : b(blockIdx.z), h(blockIdx.y % Hkv), group(blockIdx.y / Hkv),
        m0((static_cast<std::int64_t>(gridDim.x) - 1 - blockIdx.x) * ROWS), len(clamp_len(seq_len, b, T)) {
    const std::int64_t q_end = m0 + ROWS < len ? m0 + ROWS : len;
    key_tiles = q_end > m0 ? static_cast<int>((q_end + KEYS - 1) / KEYS) : 0;
  }
};

// The producer of a K/V ring (forward, dQ): for each of `num_tiles` tiles of KEYS keys of K/V head h of
// sequence b, waits until its stage is free (empty[s] at full0 + 8 (STAGES + s)), then loads K and V,
// each HALVES rows of 128 bytes per key, into stage s at ring + 2 s kv_bytes (K, then V) on full[s].
template <int KEYS, int HALVES, int STAGES>
__device__ __forceinline__ void produce_kv_tiles(int num_tiles, std::uint32_t full0, std::uint32_t ring,
                                                 const CUtensorMap* map_k, const CUtensorMap* map_v, int h, int b) {
  constexpr std::uint32_t kKvBytes = HALVES * KEYS * 128;
  for (int tile = 0; tile < num_tiles; ++tile) {
    const int st = tile % STAGES;
    mbar_wait(full0 + 8 * (STAGES + st), ((tile / STAGES) & 1) ^ 1u);
    const std::uint32_t full = full0 + 8 * st, k_t = ring + st * 2 * kKvBytes, v_t = k_t + kKvBytes;
    mbar_arrive_expect_tx(full, 2 * kKvBytes);
    for (int half = 0; half < HALVES; ++half) {
      tma_load_4d(k_t + half * KEYS * 128, map_k, 64 * half, h, tile * KEYS, b, full);
      tma_load_4d(v_t + half * KEYS * 128, map_v, 64 * half, h, tile * KEYS, b, full);
    }
  }
}

template <int D, int G>
struct WgAttnLayout {
  static constexpr int kHalves = D / 64;                          // 128-byte rows per head-dim
  static constexpr int kQBytes = G * kHalves * kWgAttnQ * 128;    // Q tiles of the G heads
  static constexpr int kKvBytes = kHalves * kWgAttnKeys * 128;    // one K (or V) tile
  static constexpr int kStageBytes = 2 * kKvBytes;                // K then V
  static constexpr int kBarrierOffset = kQBytes + kWgAttnStages * kStageBytes;
  static constexpr int kSmemBytes = 1024 + kBarrierOffset + (1 + 2 * kWgAttnStages) * 8;
};

template <int D, int G>
__global__ void __launch_bounds__((G + 1) * 128, 1)
    attn_fwd_wgmma_kernel(const __grid_constant__ CUtensorMap map_q, const __grid_constant__ CUtensorMap map_k,
                          const __grid_constant__ CUtensorMap map_v, const std::int32_t* __restrict__ seq_len,
                          std::uint16_t* __restrict__ out, float* __restrict__ lse, std::int64_t T, std::int64_t Hq,
                          std::int64_t Hkv, float scale) {
  using L = WgAttnLayout<D, G>;
  constexpr int kHalves = L::kHalves;
#ifdef JK_WGMMA_UNAVAILABLE
  __trap();
#else
  extern __shared__ __align__(128) unsigned char attn_wg_smem[];
  const std::uint32_t smem = swizzle_aligned(attn_wg_smem);
  const std::uint32_t q_s = smem, kv_s = smem + L::kQBytes;
  const std::uint32_t q_full = smem + L::kBarrierOffset;
  const std::uint32_t full0 = q_full + 8, empty0 = full0 + 8 * kWgAttnStages;
  const WgQueryBlock<kWgAttnQ, kWgAttnKeys> blk(seq_len, T, Hkv);
  const std::int64_t b = blk.b, h = blk.h, group = blk.group, m0 = blk.m0, len = blk.len;
  const int num_tiles = blk.key_tiles;
  init_ring_barriers(full0, kWgAttnStages, G * 128, q_full);
  __syncthreads();
  const int warpgroup = threadIdx.x / 128;

  if (warpgroup == 0) {  // ---- producer
    if (threadIdx.x != 0) return;
    mbar_arrive_expect_tx(q_full, L::kQBytes);
    for (int c = 0; c < G; ++c) {
      const int head = static_cast<int>((group * G + c) * Hkv + h);
      for (int half = 0; half < kHalves; ++half)
        tma_load_4d(q_s + (c * kHalves + half) * kWgAttnQ * 128, &map_q, 64 * half, head, static_cast<int>(m0),
                    static_cast<int>(b), q_full);
    }
    produce_kv_tiles<kWgAttnKeys, kHalves, kWgAttnStages>(num_tiles, full0, kv_s, &map_k, &map_v, static_cast<int>(h),
                                                          static_cast<int>(b));
    return;
  }

  // ---- consumer c: query head slot c, its 64 rows
  const int c = warpgroup - 1;
  const std::int64_t head = (group * G + c) * Hkv + h;
  const int wt = threadIdx.x % 128;
  const int w = wt / 32, lane = wt % 32;
  const int g = lane / 4, tq = lane % 4;
  const std::int64_t row0 = m0 + 16 * w + g;  // this thread's rows: row0 and row0 + 8
  const float scale_log2 = scale * 1.4426950408889634f;
  float o[D / 2];
  JK_UNROLL
  for (int i = 0; i < D / 2; ++i) {
    o[i] = 0.0f;
    fence_operand(o[i]);
  }
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.0f, 0.0f};  // thread-local partial sums (this thread's columns)
  mbar_wait(q_full, 0);
  for (int tile = 0; tile < num_tiles; ++tile) {
    const int stage = tile % kWgAttnStages;
    mbar_wait(full0 + 8 * stage, (tile / kWgAttnStages) & 1);
    const std::uint32_t k_tile = kv_s + stage * L::kStageBytes, v_tile = k_tile + L::kKvBytes;
    const std::int64_t n0 = static_cast<std::int64_t>(tile) * kWgAttnKeys;

    // S = Q K^T: 64 x 128, reduction over d in k16 steps (32 bytes inside a half's swizzled rows).
    float s[kWgAttnKeys / 2];
    JK_UNROLL
    for (int i = 0; i < kWgAttnKeys / 2; ++i) {
      s[i] = 0.0f;
      fence_operand(s[i]);
    }
    wgmma_fence();
    JK_UNROLL
    for (int ks = 0; ks < D / 16; ++ks) {
      const int half = ks / 4, kk = ks % 4;
      wgmma_ss_m64n128k16<0, 0>(s, wgmma_desc_sw128(q_s + (c * kHalves + half) * kWgAttnQ * 128 + 32 * kk, 16),
                                wgmma_desc_sw128(k_tile + half * kWgAttnKeys * 128 + 32 * kk, 16));
    }
    wgmma_commit();
    wgmma_wait<0>();
    JK_UNROLL
    for (int i = 0; i < kWgAttnKeys / 2; ++i) fence_operand(s[i]);

    // Mask (causal and padding) where the tile reaches the diagonal or the sequence's end.
    if (n0 + kWgAttnKeys > m0 || n0 + kWgAttnKeys > len) {
      JK_UNROLL
      for (int i = 0; i < kWgAttnKeys / 2; ++i) {
        const std::int64_t key = n0 + 8 * (i / 4) + 2 * tq + (i % 2);
        const std::int64_t row = row0 + 8 * ((i / 2) % 2);
        if (key > row || key >= len) s[i] = -INFINITY;
      }
    }

    // Online softmax: row rr's values are s[4 j + 2 rr + e]; the 4 threads of a quad hold its 128 columns.
    JK_UNROLL
    for (int rr = 0; rr < 2; ++rr) {
      float mx = row_max[rr];
      JK_UNROLL
      for (int j = 0; j < kWgAttnKeys / 8; ++j) mx = fmaxf(mx, fmaxf(s[4 * j + 2 * rr], s[4 * j + 2 * rr + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_scaled = mx == -INFINITY ? 0.0f : mx * scale_log2;  // fully masked row: p = 0, no NaN
      const float corr = exp2f(row_max[rr] * scale_log2 - m_scaled);    // 0 when the old max is -inf
      row_max[rr] = mx;
      float sum = 0.0f;
      JK_UNROLL
      for (int j = 0; j < kWgAttnKeys / 8; ++j) {
        const float p0 = exp2f(fmaf(s[4 * j + 2 * rr], scale_log2, -m_scaled));
        const float p1 = exp2f(fmaf(s[4 * j + 2 * rr + 1], scale_log2, -m_scaled));
        s[4 * j + 2 * rr] = p0;
        s[4 * j + 2 * rr + 1] = p1;
        sum += p0 + p1;
      }
      row_sum[rr] = row_sum[rr] * corr + sum;
      JK_UNROLL
      for (int j = 0; j < D / 8; ++j) {
        o[4 * j + 2 * rr] *= corr;
        o[4 * j + 2 * rr + 1] *= corr;
      }
    }

    // O += P V: P (bf16) from registers, packed before the fence (the S registers are then free), 8 k16
    // steps of 16 keys (V rows: 2 KB apart), N = D.
    std::uint32_t pa[kWgAttnKeys / 16][4];
    JK_UNROLL
    for (int kk = 0; kk < kWgAttnKeys / 16; ++kk) {
      pa[kk][0] = pack_bf16x2(s[8 * kk], s[8 * kk + 1]);
      pa[kk][1] = pack_bf16x2(s[8 * kk + 2], s[8 * kk + 3]);
      pa[kk][2] = pack_bf16x2(s[8 * kk + 4], s[8 * kk + 5]);
      pa[kk][3] = pack_bf16x2(s[8 * kk + 6], s[8 * kk + 7]);
    }
    wgmma_fence();
    JK_UNROLL
    for (int kk = 0; kk < kWgAttnKeys / 16; ++kk) {
      const std::uint64_t desc_v = wgmma_desc_sw128(v_tile + 2048 * kk, kWgAttnKeys * 128);
      if constexpr (D == 128) {
        wgmma_rs_m64n128k16<1>(o, pa[kk], desc_v);
      } else {
        wgmma_rs_m64n64k16<1>(o, pa[kk], desc_v);
      }
    }
    wgmma_commit();
    wgmma_wait<0>();
    JK_UNROLL
    for (int i = 0; i < D / 2; ++i) fence_operand(o[i]);
    mbar_arrive(empty0 + 8 * stage);  // this consumer is done with the stage's K and V
  }

  // Finish: full row sums (fixed butterfly over the quad), normalise, store (rows < T; zeros past len).
  JK_UNROLL
  for (int rr = 0; rr < 2; ++rr) {
    float l = row_sum[rr];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const std::int64_t row = row0 + rr * 8;
    if (row >= T) continue;
    const bool valid = row < len;  // valid rows have l >= 1 (their own key)
    const float inv = valid ? 1.0f / l : 0.0f;
    std::uint32_t* dst = reinterpret_cast<std::uint32_t*>(out + ((b * T + row) * Hq + head) * D);
    JK_UNROLL
    for (int j = 0; j < D / 8; ++j) dst[4 * j + tq] = pack_bf16x2(o[4 * j + 2 * rr] * inv, o[4 * j + 2 * rr + 1] * inv);
    if (lse != nullptr && tq == 0) lse[(b * Hq + head) * T + row] = valid ? row_max[rr] * scale + logf(l) : -INFINITY;
  }
#endif
}

// ---- sm_90a backward (JK_ATTENTION_WGMMA) -----------------------------------------------------------------
// The tuned backward's algorithm and numerics (P^T and dS^T rounded to bf16 for the tensor cores, dK and
// dQ scaled at the end, every output written once in a fixed order: no atomics) on TMA tiles and wgmma.
// Tiles of 64 keys x 64 queries; head-dim rows of 64 elements in the 128-byte swizzle as in the forward.
constexpr int kWgBwdRows = 64;  // keys per dK/dV CTA, queries per tile; queries per dQ CTA, keys per tile
constexpr int kWgBwdStages = 2;

template <int D>
struct WgBwdLayout {
  static constexpr int kHalves = D / 64;
  static constexpr int kTileBytes = kHalves * kWgBwdRows * 128;  // one 64-row tile of q, k, v or dout
};

// The P (or dS) values i of a 64 x 64 accumulator (this thread's 32) packed as the A fragments of its
// four k16 steps: step kk takes columns 16 kk .. 16 kk + 15, i.e. accumulators 8 kk .. 8 kk + 7.
__device__ __forceinline__ void pack_a_fragments(const float (&x)[32], std::uint32_t (&a)[4][4]) {
  JK_UNROLL
  for (int kk = 0; kk < 4; ++kk) {
    a[kk][0] = pack_bf16x2(x[8 * kk], x[8 * kk + 1]);
    a[kk][1] = pack_bf16x2(x[8 * kk + 2], x[8 * kk + 3]);
    a[kk][2] = pack_bf16x2(x[8 * kk + 4], x[8 * kk + 5]);
    a[kk][3] = pack_bf16x2(x[8 * kk + 6], x[8 * kk + 7]);
  }
}

// acc += A B over the 64-long reduction, A from registers (4 k16 steps), B an MN-major 64-row tile whose
// two head-dim halves (d = 128) are 8 KB apart.
template <int D>
__device__ __forceinline__ void wgmma_rows_times_tile(float (&acc)[D / 2], const std::uint32_t (&a)[4][4],
                                                      std::uint32_t tile) {
  JK_UNROLL
  for (int kk = 0; kk < 4; ++kk) {
    const std::uint64_t desc = wgmma_desc_sw128(tile + 2048 * kk, kWgBwdRows * 128);
    if constexpr (D == 128) {
      wgmma_rs_m64n128k16<1>(acc, a[kk], desc);
    } else {
      wgmma_rs_m64n64k16<1>(acc, a[kk], desc);
    }
  }
}

// x += A B^T over the head dimension for two 64-row K-major tiles (d / 16 k16 steps).
template <int D>
__device__ __forceinline__ void wgmma_tile_times_tile(float (&x)[32], std::uint32_t a_tile, std::uint32_t b_tile) {
  JK_UNROLL
  for (int ks = 0; ks < D / 16; ++ks) {
    const std::uint32_t step = (ks / 4) * kWgBwdRows * 128 + 32 * (ks % 4);
    wgmma_ss_m64n64k16<0, 0>(x, wgmma_desc_sw128(a_tile + step, 16), wgmma_desc_sw128(b_tile + step, 16));
  }
}

// dK, dV: CTA = (64 keys, K/V head h, sequence b), warpgroup 0 the producer (K and V once, then the q and
// dout tiles of every (query head slot, query tile) in slot order and ascending queries, from the key
// block on, into a 2-stage ring), warpgroup 1 the consumer: S^T = K Q^T and dP^T = V dO^T (wgmma from
// shared memory), P^T = exp(S^T scale - lse), dS^T = P^T (dP^T - D), dV += P^T dO and dK += dS^T Q (P^T
// and dS^T from registers, dO and Q N-major).
template <int D, typename TOut>
__global__ void __launch_bounds__(256, 1)
    attn_bwd_dkdv_wgmma_kernel(const __grid_constant__ CUtensorMap map_q, const __grid_constant__ CUtensorMap map_k,
                               const __grid_constant__ CUtensorMap map_v, const __grid_constant__ CUtensorMap map_do,
                               const float* __restrict__ lse, const float* __restrict__ delta,
                               const std::int32_t* __restrict__ seq_len, TOut* __restrict__ dk, TOut* __restrict__ dv,
                               std::int64_t T, std::int64_t Hq, std::int64_t Hkv, float scale) {
  using L = WgBwdLayout<D>;
  constexpr int kHalves = L::kHalves, kTile = L::kTileBytes;
#ifdef JK_WGMMA_UNAVAILABLE
  __trap();
#else
  extern __shared__ __align__(128) unsigned char attn_wg_smem[];
  const std::uint32_t smem = swizzle_aligned(attn_wg_smem);
  const std::uint32_t k_s = smem, v_s = smem + kTile, ring = smem + 2 * kTile;  // stage s: q, then dout
  const std::uint32_t kv_full = ring + kWgBwdStages * 2 * kTile;
  const std::uint32_t full0 = kv_full + 8, empty0 = full0 + 8 * kWgBwdStages;
  const std::int64_t b = blockIdx.z, h = blockIdx.y;
  const std::int64_t k0 = static_cast<std::int64_t>(blockIdx.x) * kWgBwdRows;  // block 0 (most work) first
  const std::int64_t len = clamp_len(seq_len, b, T);
  const std::int64_t slots = Hq / Hkv;
  const std::int64_t m_tiles = k0 < len ? (len - k0 + kWgBwdRows - 1) / kWgBwdRows : 0;
  const int iters = static_cast<int>(slots * m_tiles);
  init_ring_barriers(full0, kWgBwdStages, 128, kv_full);
  __syncthreads();

  if (threadIdx.x < 128) {  // ---- producer
    if (threadIdx.x != 0 || iters == 0) return;
    mbar_arrive_expect_tx(kv_full, 2 * kTile);
    for (int half = 0; half < kHalves; ++half) {
      tma_load_4d(k_s + half * kWgBwdRows * 128, &map_k, 64 * half, static_cast<int>(h), static_cast<int>(k0),
                  static_cast<int>(b), kv_full);
      tma_load_4d(v_s + half * kWgBwdRows * 128, &map_v, 64 * half, static_cast<int>(h), static_cast<int>(k0),
                  static_cast<int>(b), kv_full);
    }
    for (int it = 0; it < iters; ++it) {
      const int st = it % kWgBwdStages;
      mbar_wait(empty0 + 8 * st, ((it / kWgBwdStages) & 1) ^ 1u);
      const std::uint32_t full = full0 + 8 * st, q_t = ring + st * 2 * kTile, do_t = q_t + kTile;
      const int head = static_cast<int>((it / m_tiles) * Hkv + h);
      const int m0 = static_cast<int>(k0 + (it % m_tiles) * kWgBwdRows);
      mbar_arrive_expect_tx(full, 2 * kTile);
      for (int half = 0; half < kHalves; ++half) {
        tma_load_4d(q_t + half * kWgBwdRows * 128, &map_q, 64 * half, head, m0, static_cast<int>(b), full);
        tma_load_4d(do_t + half * kWgBwdRows * 128, &map_do, 64 * half, head, m0, static_cast<int>(b), full);
      }
    }
    return;
  }

  // ---- consumer
  const int wt = threadIdx.x - 128;
  const int w = wt / 32, lane = wt % 32;
  const int g = lane / 4, tq = lane % 4;
  const std::int64_t key0 = k0 + 16 * w + g;  // this thread's key rows: key0 and key0 + 8
  const float log2e = 1.4426950408889634f;
  const float scale_log2 = scale * log2e;
  float dk_acc[D / 2], dv_acc[D / 2];
  JK_UNROLL
  for (int i = 0; i < D / 2; ++i) {
    dk_acc[i] = dv_acc[i] = 0.0f;
    fence_operand(dk_acc[i]);
    fence_operand(dv_acc[i]);
  }
  if (iters > 0) mbar_wait(kv_full, 0);
  for (int it = 0; it < iters; ++it) {
    const int st = it % kWgBwdStages;
    mbar_wait(full0 + 8 * st, (it / kWgBwdStages) & 1);
    const std::uint32_t q_t = ring + st * 2 * kTile, do_t = q_t + kTile;
    const std::int64_t head = (it / m_tiles) * Hkv + h;
    const std::int64_t m0 = k0 + (it % m_tiles) * kWgBwdRows;

    // In an order that keeps few 64 x 64 tiles live (the accumulators of dK and dV take D registers):
    // S^T; P^T in place; dV += P^T dO together with dP^T = V dO^T; dS^T into dP^T; dK += dS^T Q.
    float st_acc[32], dpt_acc[32];
    JK_UNROLL
    for (int i = 0; i < 32; ++i) {
      st_acc[i] = dpt_acc[i] = 0.0f;
      fence_operand(st_acc[i]);
      fence_operand(dpt_acc[i]);
    }
    wgmma_fence();
    wgmma_tile_times_tile<D>(st_acc, k_s, q_t);
    wgmma_commit();
    wgmma_wait<0>();
    JK_UNROLL
    for (int i = 0; i < 32; ++i) fence_operand(st_acc[i]);
    // P^T in place; column (query) 8 j + 2 tq + e; masked: query < key or query >= len.
    const bool need_mask = m0 < k0 + kWgBwdRows || m0 + kWgBwdRows > len;
    const float* lse_h = lse + (b * Hq + head) * T;
    const float* delta_h = delta + (b * Hq + head) * T;
    JK_UNROLL
    for (int j = 0; j < 8; ++j) {
      JK_UNROLL
      for (int e = 0; e < 2; ++e) {
        const std::int64_t query = m0 + 8 * j + 2 * tq + e;
        const bool valid = query < len;
        const float lse_q = valid ? lse_h[query] * log2e : 0.0f;
        JK_UNROLL
        for (int r = 0; r < 2; ++r) {
          const int i = 4 * j + 2 * r + e;
          const float p = exp2f(fmaf(st_acc[i], scale_log2, -lse_q));
          st_acc[i] = need_mask && (query < key0 + 8 * r || !valid) ? 0.0f : p;
        }
      }
    }
    {
      std::uint32_t pa[4][4];
      pack_a_fragments(st_acc, pa);
      wgmma_fence();
      wgmma_rows_times_tile<D>(dv_acc, pa, do_t);
      wgmma_tile_times_tile<D>(dpt_acc, v_s, do_t);
      wgmma_commit();
      wgmma_wait<0>();
    }
    JK_UNROLL
    for (int i = 0; i < 32; ++i) fence_operand(dpt_acc[i]);
    JK_UNROLL
    for (int j = 0; j < 8; ++j) {
      JK_UNROLL
      for (int e = 0; e < 2; ++e) {
        const std::int64_t query = m0 + 8 * j + 2 * tq + e;
        const float delta_q = query < len ? delta_h[query] : 0.0f;
        JK_UNROLL
        for (int r = 0; r < 2; ++r) {
          const int i = 4 * j + 2 * r + e;
          dpt_acc[i] = st_acc[i] * (dpt_acc[i] - delta_q);
        }
      }
    }
    std::uint32_t da[4][4];
    pack_a_fragments(dpt_acc, da);
    wgmma_fence();
    wgmma_rows_times_tile<D>(dk_acc, da, q_t);
    wgmma_commit();
    wgmma_wait<0>();
    JK_UNROLL
    for (int i = 0; i < D / 2; ++i) {
      fence_operand(dk_acc[i]);
      fence_operand(dv_acc[i]);
    }
    mbar_arrive(empty0 + 8 * st);
  }

  // Keys < T (zero past len: every P there was masked); column 8 j + 2 tq of rows key0 + 8 r.
  JK_UNROLL
  for (int r = 0; r < 2; ++r) {
    const std::int64_t key = key0 + 8 * r;
    if (key >= T) continue;
    const std::int64_t off = ((b * T + key) * Hkv + h) * D;
    JK_UNROLL
    for (int j = 0; j < D / 8; ++j) {
      const int col = 8 * j + 2 * tq, i = 4 * j + 2 * r;
      store_pair(dk + off + col, dk_acc[i] * scale, dk_acc[i + 1] * scale);
      store_pair(dv + off + col, dv_acc[i], dv_acc[i + 1]);
    }
  }
#endif
}

// dQ: CTA = (64 queries, K/V head h and G query heads on it, sequence b) as the forward, (1 + G) warpgroups:
// the producer loads the G heads' q and dout tiles once, then the K and V tiles of 64 keys in ascending
// order into a 2-stage ring; consumer c (head slot c): S = Q K^T, dP = dO V^T (wgmma from shared memory),
// P = exp(S scale - lse), dS = P (dP - D), dQ += dS K (dS from registers, K N-major).
template <int D, int G, typename TOut>
__global__ void __launch_bounds__((G + 1) * 128, 1)
    attn_bwd_dq_wgmma_kernel(const __grid_constant__ CUtensorMap map_q, const __grid_constant__ CUtensorMap map_k,
                             const __grid_constant__ CUtensorMap map_v, const __grid_constant__ CUtensorMap map_do,
                             const float* __restrict__ lse, const float* __restrict__ delta,
                             const std::int32_t* __restrict__ seq_len, TOut* __restrict__ dq, std::int64_t T,
                             std::int64_t Hq, std::int64_t Hkv, float scale) {
  using L = WgBwdLayout<D>;
  constexpr int kHalves = L::kHalves, kTile = L::kTileBytes;
#ifdef JK_WGMMA_UNAVAILABLE
  __trap();
#else
  extern __shared__ __align__(128) unsigned char attn_wg_smem[];
  const std::uint32_t smem = swizzle_aligned(attn_wg_smem);
  const std::uint32_t q_s = smem, do_s = smem + G * kTile, ring = smem + 2 * G * kTile;  // stage s: k, then v
  const std::uint32_t q_full = ring + kWgBwdStages * 2 * kTile;
  const std::uint32_t full0 = q_full + 8, empty0 = full0 + 8 * kWgBwdStages;
  const WgQueryBlock<kWgBwdRows, kWgBwdRows> blk(seq_len, T, Hkv);
  const std::int64_t b = blk.b, h = blk.h, group = blk.group, m0 = blk.m0, len = blk.len;
  const int num_tiles = blk.key_tiles;
  init_ring_barriers(full0, kWgBwdStages, G * 128, q_full);
  __syncthreads();
  const int warpgroup = threadIdx.x / 128;

  if (warpgroup == 0) {  // ---- producer
    // Nothing to load for a query block past the sequence's end: the consumers neither wait for q/dO
    // nor read it, and a CTA must not exit with TMA loads still writing into its shared memory.
    if (threadIdx.x != 0 || num_tiles == 0) return;
    mbar_arrive_expect_tx(q_full, 2 * G * kTile);
    for (int c = 0; c < G; ++c) {
      const int head = static_cast<int>((group * G + c) * Hkv + h);
      for (int half = 0; half < kHalves; ++half) {
        tma_load_4d(q_s + c * kTile + half * kWgBwdRows * 128, &map_q, 64 * half, head, static_cast<int>(m0),
                    static_cast<int>(b), q_full);
        tma_load_4d(do_s + c * kTile + half * kWgBwdRows * 128, &map_do, 64 * half, head, static_cast<int>(m0),
                    static_cast<int>(b), q_full);
      }
    }
    produce_kv_tiles<kWgBwdRows, kHalves, kWgBwdStages>(num_tiles, full0, ring, &map_k, &map_v, static_cast<int>(h),
                                                        static_cast<int>(b));
    return;
  }

  // ---- consumer c
  const int c = warpgroup - 1;
  const std::int64_t head = (group * G + c) * Hkv + h;
  const int wt = threadIdx.x % 128;
  const int w = wt / 32, lane = wt % 32;
  const int g = lane / 4, tq = lane % 4;
  const std::int64_t row0 = m0 + 16 * w + g;  // this thread's query rows: row0 and row0 + 8
  const float log2e = 1.4426950408889634f;
  const float scale_log2 = scale * log2e;
  float lse_r[2], delta_r[2];
  JK_UNROLL
  for (int r = 0; r < 2; ++r) {
    const std::int64_t row = row0 + 8 * r;
    const bool valid = row < len;
    lse_r[r] = valid ? lse[(b * Hq + head) * T + row] * log2e : 0.0f;
    delta_r[r] = valid ? delta[(b * Hq + head) * T + row] : 0.0f;
  }
  float dq_acc[D / 2];
  JK_UNROLL
  for (int i = 0; i < D / 2; ++i) {
    dq_acc[i] = 0.0f;
    fence_operand(dq_acc[i]);
  }
  if (num_tiles > 0) mbar_wait(q_full, 0);
  for (int tile = 0; tile < num_tiles; ++tile) {
    const int st = tile % kWgBwdStages;
    mbar_wait(full0 + 8 * st, (tile / kWgBwdStages) & 1);
    const std::uint32_t k_t = ring + st * 2 * kTile, v_t = k_t + kTile;
    const std::int64_t n0 = static_cast<std::int64_t>(tile) * kWgBwdRows;
    float s_acc[32], dp_acc[32];
    JK_UNROLL
    for (int i = 0; i < 32; ++i) {
      s_acc[i] = dp_acc[i] = 0.0f;
      fence_operand(s_acc[i]);
      fence_operand(dp_acc[i]);
    }
    // S first and P in place, then dP and dS (fewer live tiles than both products at once).
    wgmma_fence();
    wgmma_tile_times_tile<D>(s_acc, q_s + c * kTile, k_t);
    wgmma_commit();
    wgmma_wait<0>();
    JK_UNROLL
    for (int i = 0; i < 32; ++i) fence_operand(s_acc[i]);
    // P in place; masked: key > query, key >= len or query >= len.
    const bool need_mask = n0 + kWgBwdRows > m0 || n0 + kWgBwdRows > len || m0 + kWgBwdRows > len;
    JK_UNROLL
    for (int i = 0; i < 32; ++i) {
      const int r = (i / 2) % 2;
      const std::int64_t key = n0 + 8 * (i / 4) + 2 * tq + (i % 2);
      const std::int64_t row = row0 + 8 * r;
      const float p = exp2f(fmaf(s_acc[i], scale_log2, -lse_r[r]));
      s_acc[i] = need_mask && (key > row || key >= len || row >= len) ? 0.0f : p;
    }
    wgmma_fence();
    wgmma_tile_times_tile<D>(dp_acc, do_s + c * kTile, v_t);
    wgmma_commit();
    wgmma_wait<0>();
    JK_UNROLL
    for (int i = 0; i < 32; ++i) {
      fence_operand(dp_acc[i]);
      dp_acc[i] = s_acc[i] * (dp_acc[i] - delta_r[(i / 2) % 2]);
    }
    std::uint32_t da[4][4];
    pack_a_fragments(dp_acc, da);
    wgmma_fence();
    wgmma_rows_times_tile<D>(dq_acc, da, k_t);
    wgmma_commit();
    wgmma_wait<0>();
    JK_UNROLL
    for (int i = 0; i < D / 2; ++i) fence_operand(dq_acc[i]);
    mbar_arrive(empty0 + 8 * st);
  }

  JK_UNROLL
  for (int r = 0; r < 2; ++r) {
    const std::int64_t row = row0 + 8 * r;
    if (row >= T) continue;
    TOut* dst = dq + ((b * T + row) * Hq + head) * D;
    JK_UNROLL
    for (int j = 0; j < D / 8; ++j) {
      const int i = 4 * j + 2 * r;
      store_pair(dst + 8 * j + 2 * tq, dq_acc[i] * scale, dq_acc[i + 1] * scale);
    }
  }
#endif
}

// q [B, T, Hq, d] or k, v [B, T, Hkv, d] as a 4D TMA map (d, heads, T, B) with boxes of 64 x 1 x rows x 1.
cudaError_t make_attention_map(CUtensorMap* map, const std::uint16_t* base, std::int64_t B, std::int64_t T,
                               std::int64_t heads, std::int64_t D, int rows) {
  const std::int64_t dims[4] = {D, heads, T, B};
  const std::int64_t strides[3] = {D * 2, heads * D * 2, T * heads * D * 2};
  const int box[4] = {64, 1, rows, 1};
  return make_bf16_map(map, base, 4, dims, strides, box);
}

template <int D, int G>
cudaError_t launch_fwd_wgmma(const std::uint16_t* q, const std::uint16_t* k, const std::uint16_t* v,
                             const std::int32_t* seq_len, std::uint16_t* out, float* lse, const jk_attention_shape_t& s,
                             cudaStream_t stream) {
  constexpr int kSmem = WgAttnLayout<D, G>::kSmemBytes;
  CUtensorMap map_q, map_k, map_v;
  JK_RETURN_IF_ERROR(make_attention_map(&map_q, q, s.batch, s.seq, s.q_heads, D, kWgAttnQ));
  JK_RETURN_IF_ERROR(make_attention_map(&map_k, k, s.batch, s.seq, s.kv_heads, D, kWgAttnKeys));
  JK_RETURN_IF_ERROR(make_attention_map(&map_v, v, s.batch, s.seq, s.kv_heads, D, kWgAttnKeys));
  JK_RETURN_IF_ERROR(
      cudaFuncSetAttribute(attn_fwd_wgmma_kernel<D, G>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  const std::int64_t groups = s.q_heads / s.kv_heads / G;
  const dim3 grid(static_cast<unsigned>((s.seq + kWgAttnQ - 1) / kWgAttnQ), static_cast<unsigned>(s.kv_heads * groups),
                  static_cast<unsigned>(s.batch));
  attn_fwd_wgmma_kernel<D, G><<<grid, (G + 1) * 128, kSmem, stream>>>(
      map_q, map_k, map_v, seq_len, out, lse, s.seq, s.q_heads, s.kv_heads, 1.0f / std::sqrt(static_cast<float>(D)));
  return cudaGetLastError();
}
template <int D, int G, typename TOut>
cudaError_t launch_bwd_wgmma(const std::uint16_t* q, const std::uint16_t* k, const std::uint16_t* v, const float* lse,
                             const std::uint16_t* dout, const std::int32_t* seq_len, const float* delta, TOut* dq,
                             TOut* dk, TOut* dv, const jk_attention_shape_t& s, cudaStream_t stream) {
  using L = WgBwdLayout<D>;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  CUtensorMap map_q, map_k, map_v, map_do;
  JK_RETURN_IF_ERROR(make_attention_map(&map_q, q, s.batch, s.seq, s.q_heads, D, kWgBwdRows));
  JK_RETURN_IF_ERROR(make_attention_map(&map_do, dout, s.batch, s.seq, s.q_heads, D, kWgBwdRows));
  JK_RETURN_IF_ERROR(make_attention_map(&map_k, k, s.batch, s.seq, s.kv_heads, D, kWgBwdRows));
  JK_RETURN_IF_ERROR(make_attention_map(&map_v, v, s.batch, s.seq, s.kv_heads, D, kWgBwdRows));
  // dK/dV: K, V, then 2 stages of q + dout; dQ: the G heads' q and dout, then 2 stages of K + V.
  constexpr int kSmemDkdv = 1024 + (2 + 2 * kWgBwdStages) * L::kTileBytes + (1 + 2 * kWgBwdStages) * 8;
  constexpr int kSmemDq = 1024 + (2 * G + 2 * kWgBwdStages) * L::kTileBytes + (1 + 2 * kWgBwdStages) * 8;
  JK_RETURN_IF_ERROR(cudaFuncSetAttribute(attn_bwd_dkdv_wgmma_kernel<D, TOut>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemDkdv));
  const dim3 grid_kv(static_cast<unsigned>((s.seq + kWgBwdRows - 1) / kWgBwdRows), static_cast<unsigned>(s.kv_heads),
                     static_cast<unsigned>(s.batch));
  attn_bwd_dkdv_wgmma_kernel<D, TOut><<<grid_kv, 256, kSmemDkdv, stream>>>(
      map_q, map_k, map_v, map_do, lse, delta, seq_len, dk, dv, s.seq, s.q_heads, s.kv_heads, scale);
  JK_RETURN_IF_ERROR(cudaGetLastError());
  JK_RETURN_IF_ERROR(
      cudaFuncSetAttribute(attn_bwd_dq_wgmma_kernel<D, G, TOut>, cudaFuncAttributeMaxDynamicSharedMemorySize, kSmemDq));
  const std::int64_t groups = s.q_heads / s.kv_heads / G;
  const dim3 grid_q(static_cast<unsigned>((s.seq + kWgBwdRows - 1) / kWgBwdRows),
                    static_cast<unsigned>(s.kv_heads * groups), static_cast<unsigned>(s.batch));
  attn_bwd_dq_wgmma_kernel<D, G, TOut><<<grid_q, (G + 1) * 128, kSmemDq, stream>>>(
      map_q, map_k, map_v, map_do, lse, delta, seq_len, dq, s.seq, s.q_heads, s.kv_heads, scale);
  return cudaGetLastError();
}
#endif  // JK_ATTENTION_EMULATE
#endif  // JK_ATTENTION_EMULATE
}  // namespace

#ifndef JK_ATTENTION_EMULATE
bool attention_tuned_supported(const jk_attention_shape_t& s, const void* const* pointers, int count) {
  if (s.head_dim != 64 && s.head_dim != 128) return false;
  for (int i = 0; i < count; ++i)
    if (!is_aligned(pointers[i], 16)) return false;
  const std::int64_t slots = s.q_heads / s.kv_heads;
  const std::int64_t group = slots % 2 == 0 ? 2 : 1;
  return (s.seq + kTileM - 1) / kTileM <= INT_MAX && s.kv_heads * (slots / group) <= 65535 && s.batch <= 65535;
}

// The sm_90a forward: the tuned path's shapes on an sm_90 device with sm_90a code, coordinates in int32.
cudaError_t attention_wgmma_supported(const jk_attention_shape_t& s, const void* const* pointers, int count,
                                      bool* ok) {
  *ok = false;
  if (!attention_tuned_supported(s, pointers, count) || s.seq > INT_MAX || s.q_heads > INT_MAX) return cudaSuccess;
  return sm90a_available(ok);
}

// Calls f(D, G) with the kernels' compile-time head dim (64 or 128) and query heads per CTA: two query
// heads of one K/V head share a CTA when the slots pair up, else one.
template <typename F>
cudaError_t with_tile_shape(const jk_attention_shape_t& s, F&& f) {
  using D64 = std::integral_constant<int, 64>;
  using D128 = std::integral_constant<int, 128>;
  using G1 = std::integral_constant<int, 1>;
  using G2 = std::integral_constant<int, 2>;
  const bool pair = (s.q_heads / s.kv_heads) % 2 == 0;
  if (s.head_dim == 128) return pair ? f(D128{}, G2{}) : f(D128{}, G1{});
  return pair ? f(D64{}, G2{}) : f(D64{}, G1{});
}

cudaError_t attention_fwd_wgmma(const std::uint16_t* q, const std::uint16_t* k, const std::uint16_t* v,
                                const std::int32_t* seq_len, std::uint16_t* out, float* lse,
                                const jk_attention_shape_t& s, cudaStream_t stream) {
  return with_tile_shape(s, [&](auto d, auto g) {
    return launch_fwd_wgmma<decltype(d)::value, decltype(g)::value>(q, k, v, seq_len, out, lse, s, stream);
  });
}

template <typename TOut>
cudaError_t attention_bwd_wgmma(const std::uint16_t* q, const std::uint16_t* k, const std::uint16_t* v,
                                const float* lse, const std::uint16_t* dout, const std::int32_t* seq_len,
                                const float* delta, TOut* dq, TOut* dk, TOut* dv, const jk_attention_shape_t& s,
                                cudaStream_t stream) {
  return with_tile_shape(s, [&](auto d, auto g) {
    return launch_bwd_wgmma<decltype(d)::value, decltype(g)::value, TOut>(q, k, v, lse, dout, seq_len, delta, dq, dk,
                                                                          dv, s, stream);
  });
}

cudaError_t attention_fwd_tuned(const std::uint16_t* q, const std::uint16_t* k, const std::uint16_t* v,
                                const std::int32_t* seq_len, std::uint16_t* out, float* lse,
                                const jk_attention_shape_t& s, cudaStream_t stream) {
  return with_tile_shape(s, [&](auto d, auto g) {
    return launch_fwd_tuned<decltype(d)::value, decltype(g)::value>(q, k, v, seq_len, out, lse, s, stream);
  });
}

template <typename TOut>
cudaError_t attention_bwd_tuned(const std::uint16_t* q, const std::uint16_t* k, const std::uint16_t* v,
                                const float* lse, const std::uint16_t* dout, const std::int32_t* seq_len,
                                const float* delta, TOut* dq, TOut* dk, TOut* dv, const jk_attention_shape_t& s,
                                cudaStream_t stream) {
  return with_tile_shape(s, [&](auto d, auto g) {
    return launch_bwd_tuned<decltype(d)::value, decltype(g)::value, TOut>(q, k, v, lse, dout, seq_len, delta, dq, dk,
                                                                          dv, s, stream);
  });
}

#endif  // JK_ATTENTION_EMULATE
}  // namespace jk::detail

#ifndef JK_ATTENTION_EMULATE

// ---- public API ---------------------------------------------------------------------------------------------

cudaError_t jk_attention_fwd_bf16(const uint16_t* q, const uint16_t* k, const uint16_t* v, const int32_t* seq_len,
                                  uint16_t* out, float* lse, jk_attention_shape_t shape, jk_attention_path_t path,
                                  cudaStream_t stream) {
  return jk::detail::attention_fwd(q, k, v, seq_len, out, lse, shape, path, stream);
}

cudaError_t jk_attention_bwd_bf16(const uint16_t* q, const uint16_t* k, const uint16_t* v, const uint16_t* out,
                                  const float* lse, const uint16_t* dout, const int32_t* seq_len, float* delta,
                                  uint16_t* dq, uint16_t* dk, uint16_t* dv, jk_attention_shape_t shape,
                                  jk_attention_path_t path, cudaStream_t stream) {
  return jk::detail::attention_bwd<std::uint16_t>(q, k, v, out, lse, dout, seq_len, delta, dq, dk, dv, shape, path,
                                                  stream);
}

cudaError_t jk_attention_bwd_f32out(const uint16_t* q, const uint16_t* k, const uint16_t* v, const uint16_t* out,
                                    const float* lse, const uint16_t* dout, const int32_t* seq_len, float* delta,
                                    float* dq, float* dk, float* dv, jk_attention_shape_t shape,
                                    jk_attention_path_t path, cudaStream_t stream) {
  return jk::detail::attention_bwd<float>(q, k, v, out, lse, dout, seq_len, delta, dq, dk, dv, shape, path, stream);
}

int64_t jk_attention_decode_chunk(void) { return jk::detail::kDecodeChunk; }

size_t jk_attention_decode_workspace_bytes(int64_t batch, int64_t q_heads, int64_t max_seq, int64_t head_dim) {
  if (batch <= 0 || q_heads <= 0 || max_seq <= 0 || head_dim <= 0) return 0;
  const int64_t chunks = (max_seq + jk::detail::kDecodeChunk - 1) / jk::detail::kDecodeChunk;
  return static_cast<size_t>(batch * q_heads * chunks * (head_dim + 2)) * sizeof(float);
}

cudaError_t jk_attention_decode_bf16(const uint16_t* q, const uint16_t* k_cache, const uint16_t* v_cache,
                                     const int32_t* cache_len, uint16_t* out, float* lse, int64_t batch,
                                     int64_t max_seq, int64_t q_heads, int64_t kv_heads, int64_t head_dim,
                                     void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  return jk::detail::attention_decode(q, k_cache, v_cache, cache_len, out, lse, batch, max_seq, q_heads, kv_heads,
                                      head_dim, workspace, workspace_bytes, stream);
}
#endif  // JK_ATTENTION_EMULATE
