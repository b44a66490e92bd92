// Family 'router': fused router logits + top-k + gates, the dispatch plan (device counting sort),
// gather / combine of expert rows, the router backward and the auxiliary losses. Interface and
// numerics: include/jetmoe/router.h; design notes: kernels/notes/router.md.
//
// Determinism everywhere: integer counting (order-free), fp32 sums in a fixed order (per-thread
// sequential loops, xor-shuffle warp trees, block partials reduced in block order). No float atomics.
#include "common.cuh"
#include "jetmoe/kernels.h"

#include <algorithm>
#include <climits>
#include <cmath>
#include <type_traits>

namespace jk::detail {
namespace {

constexpr int kMaxExperts = jk_router_max_experts;  // 64: two register slots per lane
constexpr int kExpertGroup = 8;                      // experts accumulated together in one pass

// Storage type <-> fp32.
template <typename T>
__device__ __forceinline__ float to_f32(T v) {
  if constexpr (std::is_same_v<T, std::uint16_t>) return bf16_bits_to_float(v);
  else return v;
}
template <typename T>
__device__ __forceinline__ T from_f32(float v) {
  if constexpr (std::is_same_v<T, std::uint16_t>) return float_to_bf16_bits(v);
  else return v;
}
__device__ __forceinline__ float round_bf16(float v) { return bf16_bits_to_float(float_to_bf16_bits(v)); }

template <typename T>
constexpr int vec_width() { return 16 / static_cast<int>(sizeof(T)); }  // 8 bf16 or 4 fp32 per 16 bytes

__device__ __forceinline__ std::int64_t dmin(std::int64_t a, std::int64_t b) { return a < b ? a : b; }

std::size_t align256(std::size_t bytes) { return (bytes + 255) / 256 * 256; }

unsigned grid_for(std::int64_t work, int per_block) {
  const std::int64_t blocks = (work + per_block - 1) / per_block;
  return static_cast<unsigned>(std::min<std::int64_t>(std::max<std::int64_t>(blocks, 1), INT_MAX));
}

// ============================== forward: logits + top-k + gates ==============================

// Candidate of the warp arg-max: larger value first, then the lower expert index.
struct Cand {
  float v;
  int e;  // -1: none
};
// Not transitive with NaN (which compares neither way), but antisymmetric for distinct experts: each
// xor-butterfly exchange makes both partners keep the same candidate, so every lane still ends with the
// same winner and the k choices stay distinct (checked by the GPU test variant "nan").
__device__ __forceinline__ bool better(const Cand& a, const Cand& b) {
  if ((a.e >= 0) != (b.e >= 0)) return a.e >= 0;
  if (a.v > b.v) return true;
  if (a.v < b.v) return false;
  return a.e < b.e;  // ties (and NaN, which compares neither way): the lower index
}

// Top-k of one token's logits (lane l holds experts l and l + 32: mine0, mine1; every lane the same
// values, as the xor-tree sums give), then the gates: k rounds of warp arg-max, softmax over the k
// chosen values. Writes the token's logits, ids and gates. Called by the whole warp.
__device__ __forceinline__ void topk_gates_write(int lane, std::int64_t t, float mine0, float mine1, int E, int k,
                                                 float* __restrict__ logits, std::int32_t* __restrict__ ids,
                                                 float* __restrict__ gates_f32, std::uint16_t* __restrict__ gates_bf16) {
  if (lane < E) logits[t * E + lane] = mine0;
  if (lane + kWarpSize < E) logits[t * E + lane + kWarpSize] = mine1;

  // Top-k by repeated warp arg-max; chosen values stay with lane j % 32 (slot j / 32).
  bool taken0 = lane >= E, taken1 = lane + kWarpSize >= E;
  float chosen0 = 0.0f, chosen1 = 0.0f;
  float top = 0.0f, sum = 0.0f;
  for (int j = 0; j < k; ++j) {
    Cand c{0.0f, -1};
    if (!taken0) c = Cand{mine0, lane};
    if (!taken1) {
      const Cand c1{mine1, lane + kWarpSize};
      if (better(c1, c)) c = c1;
    }
#pragma unroll
    for (int offset = kWarpSize / 2; offset > 0; offset /= 2) {
      const Cand o{__shfl_xor_sync(0xffffffffu, c.v, offset), __shfl_xor_sync(0xffffffffu, c.e, offset)};
      if (better(o, c)) c = o;
    }
    if (c.e == lane) taken0 = true;
    if (c.e == lane + kWarpSize) taken1 = true;
    if (j == 0) top = c.v;
    sum += expf(c.v - top);  // the same order on every lane
    if (lane == j % kWarpSize) {
      if (j < kWarpSize) chosen0 = c.v;
      else chosen1 = c.v;
      ids[t * k + j] = c.e;
    }
  }
  for (int j = lane; j < k; j += kWarpSize) {
    const float g = expf((j < kWarpSize ? chosen0 : chosen1) - top) / sum;
    gates_f32[t * k + j] = g;
    if (gates_bf16 != nullptr) gates_bf16[t * k + j] = float_to_bf16_bits(g);
  }
}

// One warp per TOK consecutive tokens. Lane l holds the logits of experts l and l + 32.
// VEC elements per load (8 bf16 / 4 fp32 = 16 bytes when D and the pointers allow, else 1).
// Every logit is summed in the same order whatever TOK and SMEM_W: lane l adds the products of the
// vectors i = l, l + 32, ... (elements in order), then the xor tree; so every instance gives the same bits.
//   simple: TOK = 1, W read from global memory (L1/L2) for each token: E * D elements per token.
//   tuned:  TOK = 4 (each W load serves four tokens) and, when E * D fits (SMEM_W), W copied once per
//           block into shared memory, the blocks persistent over the tokens.
template <typename T, int VEC, bool ROUND_BF16, int TOK, bool SMEM_W>
// (256, 1): without the occupancy hint ptxas caps this kernel at 64 registers and spills (fp32, VEC 4).
__global__ void __launch_bounds__(256, 1)
router_logits_topk_kernel(const T* __restrict__ u, const T* __restrict__ w, std::int64_t N, std::int64_t D, int E,
                          int k, float* __restrict__ logits, std::int32_t* __restrict__ ids,
                          float* __restrict__ gates_f32, std::uint16_t* __restrict__ gates_bf16) {
  using V = Pack<T, VEC>;
  extern __shared__ __align__(16) unsigned char router_w_smem[];
  const std::int64_t nvec = D / VEC;
  if constexpr (SMEM_W) {  // W [E, D] into shared memory, 16-byte vectors (SMEM_W needs VEC * sizeof(T) = 16)
    V* dst = reinterpret_cast<V*>(router_w_smem);
    const V* src = reinterpret_cast<const V*>(w);
    for (std::int64_t i = threadIdx.x; i < E * nvec; i += blockDim.x) dst[i] = src[i];
    __syncthreads();
  }
  // The W vector i of expert e, from shared or global memory.
  const auto w_vec = [&](int e, std::int64_t i) -> V {
    if constexpr (SMEM_W) return reinterpret_cast<const V*>(router_w_smem)[e * nvec + i];
    else return reinterpret_cast<const V*>(w + static_cast<std::int64_t>(e) * D)[i];
  };
  const int lane = threadIdx.x % kWarpSize;
  const std::int64_t warps_per_block = blockDim.x / kWarpSize;
  const std::int64_t step = static_cast<std::int64_t>(gridDim.x) * warps_per_block * TOK;
  for (std::int64_t t0 = (static_cast<std::int64_t>(blockIdx.x) * warps_per_block + threadIdx.x / kWarpSize) * TOK;
       t0 < N; t0 += step) {
    float mine0[TOK], mine1[TOK];  // logits of experts lane, lane + 32 of token t0 + tt
#pragma unroll
    for (int tt = 0; tt < TOK; ++tt) mine0[tt] = mine1[tt] = 0.0f;
    for (int e0 = 0; e0 < E; e0 += kExpertGroup) {
      float acc[TOK][kExpertGroup];
#pragma unroll
      for (int tt = 0; tt < TOK; ++tt)
#pragma unroll
        for (int g = 0; g < kExpertGroup; ++g) acc[tt][g] = 0.0f;
      for (std::int64_t i = lane; i < nvec; i += kWarpSize) {
        V uv[TOK];
#pragma unroll
        for (int tt = 0; tt < TOK; ++tt) {
          if (TOK == 1 || t0 + tt < N) uv[tt] = reinterpret_cast<const V*>(u + (t0 + tt) * D)[i];
          else uv[tt] = V{};  // past the last token: computed, never written
        }
#pragma unroll
        for (int g = 0; g < kExpertGroup; ++g) {
          if (e0 + g < E) {
            const V wv = w_vec(e0 + g, i);
#pragma unroll
            for (int tt = 0; tt < TOK; ++tt)
#pragma unroll
              for (int q = 0; q < VEC; ++q) acc[tt][g] = fmaf(to_f32(uv[tt].v[q]), to_f32(wv.v[q]), acc[tt][g]);
          }
        }
      }
#pragma unroll
      for (int tt = 0; tt < TOK; ++tt) {
#pragma unroll
        for (int g = 0; g < kExpertGroup; ++g) {
          const float s = warp_sum(acc[tt][g]);  // xor tree: every lane gets the same bits
          const float value = ROUND_BF16 ? round_bf16(s) : s;
          if (lane == e0 + g) mine0[tt] = value;
          if (lane + kWarpSize == e0 + g) mine1[tt] = value;
        }
      }
    }
#pragma unroll
    for (int tt = 0; tt < TOK; ++tt)
      if (TOK == 1 || t0 + tt < N) topk_gates_write(lane, t0 + tt, mine0[tt], mine1[tt], E, k, logits, ids, gates_f32, gates_bf16);
  }
}

// ============================== dispatch plan (stable counting sort) ==============================

constexpr int kPlanThreads = 256;
constexpr int kPlanChunks = 16;
constexpr std::int64_t kPlanTile = static_cast<std::int64_t>(kPlanThreads) * kPlanChunks;  // assignments per block

std::int64_t plan_tiles(std::int64_t nk) { return (nk + kPlanTile - 1) / kPlanTile; }

// tile_counts[b * E + e] = number of assignments of expert e in tile b.
__global__ void __launch_bounds__(kPlanThreads)
plan_histogram_kernel(const std::int32_t* __restrict__ ids, std::int64_t nk, int E, std::int32_t* __restrict__ tile_counts) {
  __shared__ int counts[kMaxExperts];
  for (int e = threadIdx.x; e < E; e += blockDim.x) counts[e] = 0;
  __syncthreads();
  const std::int64_t begin = static_cast<std::int64_t>(blockIdx.x) * kPlanTile;
  const std::int64_t end = dmin(begin + kPlanTile, nk);
  for (std::int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const int e = ids[i];
    if (e >= 0 && e < E) atomicAdd(&counts[e], 1);  // integer: order-free, deterministic
  }
  __syncthreads();
  for (int e = threadIdx.x; e < E; e += blockDim.x) tile_counts[static_cast<std::int64_t>(blockIdx.x) * E + e] = counts[e];
}

// One block: counts, offsets, and per tile the first row of each expert (in place over tile_counts).
__global__ void __launch_bounds__(kMaxExperts)
plan_scan_kernel(std::int32_t* __restrict__ tile_counts, std::int64_t tiles, int E, std::int32_t* __restrict__ counts,
                 std::int32_t* __restrict__ offsets) {
  __shared__ int total[kMaxExperts];
  const int e = threadIdx.x;
  int running = 0;
  if (e < E) {
    for (std::int64_t b = 0; b < tiles; ++b) {
      const int c = tile_counts[b * E + e];
      tile_counts[b * E + e] = running;
      running += c;
    }
    total[e] = running;
    counts[e] = running;
  }
  __syncthreads();
  if (e < E) {
    int base = 0;
    for (int m = 0; m < e; ++m) base += total[m];
    offsets[e] = base;
    if (e == E - 1) offsets[E] = base + total[e];
    for (std::int64_t b = 0; b < tiles; ++b) tile_counts[b * E + e] += base;
  }
}

// Rows in (token, slot) order inside each expert: within a chunk of 256 assignments, the rank among
// the warp's lanes with the same expert (match_any) plus the counts of the earlier warps and chunks.
__global__ void __launch_bounds__(kPlanThreads)
plan_scatter_kernel(const std::int32_t* __restrict__ ids, std::int64_t nk, int E, int k,
                    const std::int32_t* __restrict__ tile_base, std::int32_t* __restrict__ sorted_token,
                    std::int32_t* __restrict__ sorted_slot, std::int32_t* __restrict__ position) {
  constexpr int kWarps = kPlanThreads / kWarpSize;
  __shared__ int warp_count[kWarps][kMaxExperts];
  __shared__ int warp_first[kWarps][kMaxExperts];
  __shared__ int next_row[kMaxExperts];
  const int lane = threadIdx.x % kWarpSize;
  const int warp = threadIdx.x / kWarpSize;
  for (int e = threadIdx.x; e < E; e += blockDim.x) next_row[e] = tile_base[static_cast<std::int64_t>(blockIdx.x) * E + e];
  const std::int64_t begin = static_cast<std::int64_t>(blockIdx.x) * kPlanTile;
  for (int chunk = 0; chunk < kPlanChunks; ++chunk) {
    const std::int64_t i = begin + static_cast<std::int64_t>(chunk) * kPlanThreads + threadIdx.x;
    for (int x = threadIdx.x; x < kWarps * kMaxExperts; x += blockDim.x) (&warp_count[0][0])[x] = 0;
    __syncthreads();
    int e = -1;
    if (i < nk) {
      e = ids[i];
      if (e < 0 || e >= E) e = -1;
    }
    const unsigned peers = __match_any_sync(0xffffffffu, e);
    const int rank = __popc(peers & ((1u << lane) - 1u));
    if (e >= 0 && rank == 0) warp_count[warp][e] = __popc(peers);
    __syncthreads();
    for (int ex = threadIdx.x; ex < E; ex += blockDim.x) {
      int run = next_row[ex];
      for (int wp = 0; wp < kWarps; ++wp) {
        warp_first[wp][ex] = run;
        run += warp_count[wp][ex];
      }
      next_row[ex] = run;
    }
    __syncthreads();
    if (i < nk) {
      if (e >= 0) {
        const int row = warp_first[warp][e] + rank;
        sorted_token[row] = static_cast<std::int32_t>(i / k);
        sorted_slot[row] = static_cast<std::int32_t>(i % k);
        position[i] = row;
      } else {
        position[i] = -1;
      }
    }
  }
}

cudaError_t launch_plan(const std::int32_t* ids, std::int64_t N, int E, int k, std::int32_t* counts,
                        std::int32_t* offsets, std::int32_t* sorted_token, std::int32_t* sorted_slot,
                        std::int32_t* position, std::int32_t* host_offsets, void* workspace, cudaStream_t stream) {
  const std::int64_t nk = N * k;
  const std::int64_t tiles = plan_tiles(nk);
  auto* tile_counts = static_cast<std::int32_t*>(workspace);
  if (tiles > 0) {
    plan_histogram_kernel<<<static_cast<unsigned>(tiles), kPlanThreads, 0, stream>>>(ids, nk, E, tile_counts);
    JK_RETURN_IF_ERROR(cudaGetLastError());
  }
  plan_scan_kernel<<<1, kMaxExperts, 0, stream>>>(tile_counts, tiles, E, counts, offsets);
  JK_RETURN_IF_ERROR(cudaGetLastError());
  if (tiles > 0) {
    plan_scatter_kernel<<<static_cast<unsigned>(tiles), kPlanThreads, 0, stream>>>(ids, nk, E, k, tile_counts,
                                                                                   sorted_token, sorted_slot, position);
    JK_RETURN_IF_ERROR(cudaGetLastError());
  }
  if (host_offsets != nullptr) {
    JK_RETURN_IF_ERROR(cudaMemcpyAsync(host_offsets, offsets, sizeof(std::int32_t) * static_cast<std::size_t>(E + 1),
                                       cudaMemcpyDeviceToHost, stream));
  }
  return cudaSuccess;
}

bool plan_args_ok(std::int64_t N, int E, int k) {
  return N >= 0 && E >= 1 && E <= kMaxExperts && k >= 1 && k <= E && N <= INT32_MAX / k;
}

bool plan_ptrs_ok(std::int64_t N, const void* workspace, std::size_t workspace_bytes, std::int32_t* counts,
                  std::int32_t* offsets, std::int32_t* sorted_token, std::int32_t* sorted_slot, std::int32_t* position,
                  int E, int k) {
  if (counts == nullptr || offsets == nullptr) return false;
  if (workspace_bytes < jk_router_fwd_workspace_bytes(N, E, k)) return false;
  if (N > 0 && (workspace == nullptr || sorted_token == nullptr || sorted_slot == nullptr || position == nullptr))
    return false;
  return true;
}

// Largest W [E, D] the tuned forward stages in shared memory (fp32 E = 8, D = 2048 is 64 KB; three
// 64 KB blocks fit in an H100 SM's 228 KB). Larger routers read W from L1/L2 as the simple path does.
constexpr std::size_t kRouterSmemW = 96 * 1024;
constexpr int kRouterTokensPerWarp = 4;  // tuned: tokens per warp sharing each W load
constexpr int kRouterThreads = 256;

template <typename T, int VEC, bool ROUND, int TOK, bool SMEM_W>
cudaError_t launch_logits(const T* u, const T* w, std::int64_t N, std::int64_t D, int E, int k,
                          const jk_router_outputs_t* out, unsigned grid, std::size_t smem, cudaStream_t stream) {
  if constexpr (SMEM_W) {
    JK_RETURN_IF_ERROR(cudaFuncSetAttribute(router_logits_topk_kernel<T, VEC, ROUND, TOK, SMEM_W>,
                                            cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  }
  router_logits_topk_kernel<T, VEC, ROUND, TOK, SMEM_W><<<grid, kRouterThreads, smem, stream>>>(
      u, w, N, D, E, k, out->logits, out->expert_ids, out->gates_f32, out->gates_bf16);
  return cudaGetLastError();
}

template <typename T>
cudaError_t router_fwd(const T* u, const T* w, std::int64_t N, std::int64_t D, int E, int k,
                       const jk_router_outputs_t* out, void* workspace, std::size_t workspace_bytes, bool tuned,
                       cudaStream_t stream) {
  if (out == nullptr || !plan_args_ok(N, E, k) || D < 1) return cudaErrorInvalidValue;
  if (!plan_ptrs_ok(N, workspace, workspace_bytes, out->counts, out->offsets, out->sorted_token, out->sorted_slot,
                    out->position, E, k))
    return cudaErrorInvalidValue;
  if (N > 0 && (u == nullptr || w == nullptr || out->logits == nullptr || out->expert_ids == nullptr ||
                out->gates_f32 == nullptr))
    return cudaErrorInvalidValue;
  if (N > 0) {
    constexpr int kWarps = kRouterThreads / kWarpSize;
    constexpr bool kRound = std::is_same_v<T, std::uint16_t>;
    constexpr int kVec = vec_width<T>();
    constexpr int kTok = kRouterTokensPerWarp;
    const bool vec_ok = D % kVec == 0 && is_aligned(u, 16) && is_aligned(w, 16);
    const std::size_t w_bytes = static_cast<std::size_t>(E) * static_cast<std::size_t>(D) * sizeof(T);
    if (!tuned) {
      const unsigned grid = grid_for(N, kWarps);
      JK_RETURN_IF_ERROR((vec_ok ? launch_logits<T, kVec, kRound, 1, false>(u, w, N, D, E, k, out, grid, 0, stream)
                                 : launch_logits<T, 1, kRound, 1, false>(u, w, N, D, E, k, out, grid, 0, stream)));
    } else if (vec_ok && w_bytes <= kRouterSmemW) {
      // Persistent blocks (two per SM): each copies W once, then walks its share of the tokens.
      int sms = 0;
      JK_RETURN_IF_ERROR(multiprocessor_count(&sms));
      const unsigned grid = std::min(grid_for(N, kWarps * kTok), static_cast<unsigned>(std::max(sms, 1) * 2));
      JK_RETURN_IF_ERROR((launch_logits<T, kVec, kRound, kTok, true>(u, w, N, D, E, k, out, grid, w_bytes, stream)));
    } else {
      const unsigned grid = grid_for(N, kWarps * kTok);
      JK_RETURN_IF_ERROR((vec_ok ? launch_logits<T, kVec, kRound, kTok, false>(u, w, N, D, E, k, out, grid, 0, stream)
                                 : launch_logits<T, 1, kRound, kTok, false>(u, w, N, D, E, k, out, grid, 0, stream)));
    }
  }
  return launch_plan(out->expert_ids, N, E, k, out->counts, out->offsets, out->sorted_token, out->sorted_slot,
                     out->position, out->host_offsets, workspace, stream);
}

// ============================== auxiliary losses ==============================

constexpr int kAuxThreads = 256;  // one token per thread

struct AuxWorkspace {
  float* partial_p;        // [blocks, E]
  float* partial_z;        // [blocks]
  std::int32_t* partial_count;  // [blocks, E]
  float* f;                // [E]
};

std::int64_t aux_blocks(std::int64_t N) { return (N + kAuxThreads - 1) / kAuxThreads; }

AuxWorkspace aux_layout(void* workspace, std::int64_t N, int E) {
  const std::size_t nb = static_cast<std::size_t>(aux_blocks(N));
  char* base = static_cast<char*>(workspace);
  AuxWorkspace ws;
  ws.partial_p = reinterpret_cast<float*>(base);
  base += align256(nb * E * sizeof(float));
  ws.partial_z = reinterpret_cast<float*>(base);
  base += align256(nb * sizeof(float));
  ws.partial_count = reinterpret_cast<std::int32_t*>(base);
  base += align256(nb * E * sizeof(std::int32_t));
  ws.f = reinterpret_cast<float*>(base);
  return ws;
}

// Stable log-sum-exp of one row.
__device__ __forceinline__ float row_lse(const float* x, int E) {
  float m = x[0];
  for (int e = 1; e < E; ++e) m = fmaxf(m, x[e]);
  float s = 0.0f;
  for (int e = 0; e < E; ++e) s += expf(x[e] - m);
  return m + logf(s);
}

__global__ void __launch_bounds__(kAuxThreads)
aux_partial_kernel(const float* __restrict__ logits, const std::int32_t* __restrict__ ids, std::int64_t N, int E, int k,
                   AuxWorkspace ws) {
  __shared__ float scratch[kWarpSize];
  __shared__ int counts[kMaxExperts];
  for (int e = threadIdx.x; e < E; e += blockDim.x) counts[e] = 0;
  __syncthreads();
  const std::int64_t t = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const bool active = t < N;
  float lse = 0.0f;
  if (active) {
    lse = row_lse(logits + t * E, E);
    for (int j = 0; j < k; ++j) {
      const int e = ids[t * k + j];
      if (e >= 0 && e < E) atomicAdd(&counts[e], 1);  // integer: deterministic
    }
  }
  const float z = block_sum(active ? lse * lse : 0.0f, scratch);
  if (threadIdx.x == 0) ws.partial_z[blockIdx.x] = z;
  for (int e = 0; e < E; ++e) {
    const float p = block_sum(active ? expf(logits[t * E + e] - lse) : 0.0f, scratch);
    if (threadIdx.x == 0) ws.partial_p[static_cast<std::int64_t>(blockIdx.x) * E + e] = p;
  }
  __syncthreads();
  for (int e = threadIdx.x; e < E; e += blockDim.x) ws.partial_count[static_cast<std::int64_t>(blockIdx.x) * E + e] = counts[e];
}

// One block of kMaxExperts threads: block partials summed in block order.
__global__ void __launch_bounds__(kMaxExperts)
aux_finish_kernel(std::int64_t N, int E, int k, std::int64_t blocks, AuxWorkspace ws, float* __restrict__ losses) {
  __shared__ float pf[kMaxExperts];
  const int e = threadIdx.x;
  if (e < E) {
    float p = 0.0f;
    long long c = 0;
    for (std::int64_t b = 0; b < blocks; ++b) {
      p += ws.partial_p[b * E + e];
      c += ws.partial_count[b * E + e];
    }
    const float f = static_cast<float>(c) / static_cast<float>(N * k);
    ws.f[e] = f;
    pf[e] = (p / static_cast<float>(N)) * f;
  }
  __syncthreads();
  if (e == 0) {
    float s = 0.0f;
    for (int m = 0; m < E; ++m) s += pf[m];
    float z = 0.0f;
    for (std::int64_t b = 0; b < blocks; ++b) z += ws.partial_z[b];
    losses[0] = static_cast<float>(E) * s;
    losses[1] = z / static_cast<float>(N);
  }
}

__global__ void __launch_bounds__(kAuxThreads)
aux_grad_kernel(const float* __restrict__ logits, std::int64_t N, int E, float a, float b, const float* __restrict__ f,
                float* __restrict__ dlogits) {
  const std::int64_t t = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= N) return;
  const float* x = logits + t * E;
  const float lse = row_lse(x, E);
  float pf = 0.0f;
  for (int e = 0; e < E; ++e) pf += expf(x[e] - lse) * f[e];
  for (int e = 0; e < E; ++e) {
    const float p = expf(x[e] - lse);
    dlogits[t * E + e] += a * p * (f[e] - pf) + b * lse * p;
  }
}

// ============================== gather and its backward ==============================

template <typename T, int VEC>
__global__ void __launch_bounds__(256)
gather_kernel(const T* __restrict__ x, const std::int32_t* __restrict__ sorted_token, std::int64_t rows, std::int64_t C,
              T* __restrict__ xp) {
  using V = Pack<T, VEC>;
  const std::int64_t nvec = C / VEC;
  const std::int64_t total = rows * nvec;
  for (std::int64_t idx = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t row = idx / nvec, i = idx % nvec;
    const std::int64_t src = sorted_token[row];
    reinterpret_cast<V*>(xp + row * C)[i] = reinterpret_cast<const V*>(x + src * C)[i];
  }
}

template <typename TIn, typename TOut, int VEC>
__global__ void __launch_bounds__(256)
gather_bwd_kernel(const TIn* __restrict__ dxp, const std::int32_t* __restrict__ position, std::int64_t N, int k,
                  std::int64_t C, TOut* __restrict__ dx, int accumulate) {
  using VI = Pack<TIn, VEC>;
  using VO = Pack<TOut, VEC>;
  const std::int64_t nvec = C / VEC;
  const std::int64_t total = N * nvec;
  for (std::int64_t idx = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t t = idx / nvec, i = idx % nvec;
    float acc[VEC];
#pragma unroll
    for (int q = 0; q < VEC; ++q) acc[q] = 0.0f;
    for (int j = 0; j < k; ++j) {
      const std::int64_t row = position[t * k + j];
      const VI v = reinterpret_cast<const VI*>(dxp + row * C)[i];
#pragma unroll
      for (int q = 0; q < VEC; ++q) acc[q] += to_f32(v.v[q]);
    }
    VO* out = reinterpret_cast<VO*>(dx + t * C) + i;
    VO o;
    if (accumulate) {
      const VO old = *out;
#pragma unroll
      for (int q = 0; q < VEC; ++q) o.v[q] = from_f32<TOut>(to_f32(old.v[q]) + acc[q]);
    } else {
#pragma unroll
      for (int q = 0; q < VEC; ++q) o.v[q] = from_f32<TOut>(acc[q]);
    }
    *out = o;
  }
}

// ============================== combine and its backward ==============================

// bf16: HF's sequence of roundings. fp32: plain fp32 sum. One thread per (token, VEC columns).
template <typename T, int VEC>
__global__ void __launch_bounds__(256)
combine_kernel(const T* __restrict__ y, const T* __restrict__ gates, const std::int32_t* __restrict__ position,
               const T* __restrict__ bias, std::int64_t N, int k, std::int64_t C, T* __restrict__ out) {
  using V = Pack<T, VEC>;
  constexpr bool kBf16 = std::is_same_v<T, std::uint16_t>;
  const std::int64_t nvec = C / VEC;
  const std::int64_t total = N * nvec;
  for (std::int64_t idx = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t t = idx / nvec, i = idx % nvec;
    float acc[VEC];
#pragma unroll
    for (int q = 0; q < VEC; ++q) acc[q] = 0.0f;
    for (int j = 0; j < k; ++j) {
      const float g = to_f32(gates[t * k + j]);
      const V v = reinterpret_cast<const V*>(y + static_cast<std::int64_t>(position[t * k + j]) * C)[i];
#pragma unroll
      for (int q = 0; q < VEC; ++q) {
        if constexpr (kBf16) acc[q] = round_bf16(acc[q] + round_bf16(g * to_f32(v.v[q])));
        else acc[q] = fmaf(g, v.v[q], acc[q]);
      }
    }
    V o;
    if (bias != nullptr) {
      const V b = reinterpret_cast<const V*>(bias)[i];
#pragma unroll
      for (int q = 0; q < VEC; ++q) o.v[q] = from_f32<T>(acc[q] + to_f32(b.v[q]));
    } else {
#pragma unroll
      for (int q = 0; q < VEC; ++q) o.v[q] = from_f32<T>(acc[q]);
    }
    reinterpret_cast<V*>(out + t * C)[i] = o;
  }
}

// One warp per token: dy rows, dgate dot products (per-lane sequential, xor-tree across lanes), and the
// softmax backward into the token's dlogits row. gates_dy: the gates multiplying dout (bf16 for the
// bf16 path); gates_f32: the softmax values.
template <typename T, int VEC>
__global__ void __launch_bounds__(256)
combine_bwd_kernel(const T* __restrict__ dout, const T* __restrict__ y, const T* __restrict__ gates_dy,
                   const float* __restrict__ gates_f32, const std::int32_t* __restrict__ ids,
                   const std::int32_t* __restrict__ position, std::int64_t N, int E, int k, std::int64_t C,
                   T* __restrict__ dy, float* __restrict__ dgate, float* __restrict__ dlogits) {
  using V = Pack<T, VEC>;
  const int lane = threadIdx.x % kWarpSize;
  const std::int64_t warps_per_grid = static_cast<std::int64_t>(gridDim.x) * (blockDim.x / kWarpSize);
  const std::int64_t nvec = C / VEC;
  for (std::int64_t t = static_cast<std::int64_t>(blockIdx.x) * (blockDim.x / kWarpSize) + threadIdx.x / kWarpSize;
       t < N; t += warps_per_grid) {
    const V* drow = reinterpret_cast<const V*>(dout + t * C);
    float dg0 = 0.0f, dg1 = 0.0f;  // dgate of slots lane, lane + 32
    float weighted = 0.0f;
    for (int j = 0; j < k; ++j) {
      const std::int64_t row = position[t * k + j];
      const float g = to_f32(gates_dy[t * k + j]);
      const V* yrow = reinterpret_cast<const V*>(y + row * C);
      V* dyrow = reinterpret_cast<V*>(dy + row * C);
      float dot = 0.0f;
      for (std::int64_t i = lane; i < nvec; i += kWarpSize) {
        const V dv = drow[i];
        const V yv = yrow[i];
        V o;
#pragma unroll
        for (int q = 0; q < VEC; ++q) {
          const float d = to_f32(dv.v[q]);
          o.v[q] = from_f32<T>(g * d);
          dot = fmaf(d, to_f32(yv.v[q]), dot);
        }
        dyrow[i] = o;
      }
      dot = warp_sum(dot);
      if (lane == j % kWarpSize) {
        if (j < kWarpSize) dg0 = dot;
        else dg1 = dot;
      }
      weighted = fmaf(gates_f32[t * k + j], dot, weighted);  // the same order on every lane
    }
    if (dgate != nullptr) {
      for (int j = lane; j < k; j += kWarpSize) dgate[t * k + j] = j < kWarpSize ? dg0 : dg1;
    }
    // Every lane runs this loop (the shuffles need the whole warp); lane l owns experts l, l + 32.
    float value0 = 0.0f, value1 = 0.0f;
    for (int j = 0; j < k; ++j) {
      const float dgj = __shfl_sync(0xffffffffu, j < kWarpSize ? dg0 : dg1, j % kWarpSize);
      const int e = ids[t * k + j];
      const float value = gates_f32[t * k + j] * (dgj - weighted);
      if (e == lane) value0 = value;
      if (e == lane + kWarpSize) value1 = value;
    }
    if (lane < E) dlogits[t * E + lane] = value0;
    if (lane + kWarpSize < E) dlogits[t * E + lane + kWarpSize] = value1;
  }
}

// Column sums of a [rows, C] matrix in two fixed-order passes: per chunk of rows, then over chunks.
constexpr int kColThreads = 256;
constexpr std::int64_t kColChunkRows = 256;

// gridDim.y is capped at kMaxGridY: chunk loops stride by gridDim.y (each chunk's sum is unchanged).
constexpr std::int64_t kMaxGridY = 65535;

template <typename T>
__global__ void __launch_bounds__(kColThreads)
column_partial_kernel(const T* __restrict__ m, std::int64_t rows, std::int64_t C, float* __restrict__ partial) {
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  for (std::int64_t chunk = blockIdx.y; chunk * kColChunkRows < rows; chunk += gridDim.y) {
    const std::int64_t r0 = chunk * kColChunkRows;
    const std::int64_t r1 = dmin(r0 + kColChunkRows, rows);
    float s = 0.0f;
    for (std::int64_t r = r0; r < r1; ++r) s += to_f32(m[r * C + c]);
    partial[chunk * C + c] = s;
  }
}

__global__ void __launch_bounds__(kColThreads)
column_finish_kernel(const float* __restrict__ partial, std::int64_t chunks, std::int64_t C, float* __restrict__ out,
                     int accumulate) {
  const std::int64_t c = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= C) return;
  float s = 0.0f;
  for (std::int64_t b = 0; b < chunks; ++b) s += partial[b * C + c];
  out[c] = accumulate ? out[c] + s : s;
}

std::int64_t column_chunks(std::int64_t rows) { return (rows + kColChunkRows - 1) / kColChunkRows; }

template <typename T>
cudaError_t column_sum(const T* m, std::int64_t rows, std::int64_t C, float* out, void* workspace, cudaStream_t stream) {
  const std::int64_t chunks = column_chunks(rows);
  auto* partial = static_cast<float*>(workspace);
  const unsigned gx = grid_for(C, kColThreads);
  if (chunks > 0) {
    const unsigned gy = static_cast<unsigned>(std::min(chunks, kMaxGridY));
    column_partial_kernel<T><<<dim3(gx, gy), kColThreads, 0, stream>>>(m, rows, C, partial);
    JK_RETURN_IF_ERROR(cudaGetLastError());
  }
  column_finish_kernel<<<gx, kColThreads, 0, stream>>>(partial, chunks, C, out, 0);
  return cudaGetLastError();
}

// ============================== router backward ==============================

constexpr int kDwThreads = 256;                // one column d per thread
constexpr std::int64_t kDwChunkTokens = 1024;  // tokens per partial
constexpr int kDwStage = 64;                   // tokens of dlogits staged in shared memory at a time

std::int64_t dw_chunks(std::int64_t N) { return (N + kDwChunkTokens - 1) / kDwChunkTokens; }

// partial[chunk, e, d] = sum over the chunk's tokens (ascending) of dlogits[t, e] u[t, d].
template <typename T>
__global__ void __launch_bounds__(kDwThreads)
router_dw_partial_kernel(const T* __restrict__ u, const float* __restrict__ dlogits, std::int64_t N, std::int64_t D,
                         int E, float* __restrict__ partial) {
  __shared__ float dl[kDwStage][kExpertGroup];
  const std::int64_t d = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  // Chunk loop uniform over the block (blockIdx.y), so the __syncthreads below stay block-uniform.
  for (std::int64_t chunk = blockIdx.y; chunk * kDwChunkTokens < N; chunk += gridDim.y) {
    const std::int64_t t0 = chunk * kDwChunkTokens;
    const std::int64_t t1 = dmin(t0 + kDwChunkTokens, N);
    for (int e0 = 0; e0 < E; e0 += kExpertGroup) {
      float acc[kExpertGroup];
#pragma unroll
      for (int g = 0; g < kExpertGroup; ++g) acc[g] = 0.0f;
      for (std::int64_t s0 = t0; s0 < t1; s0 += kDwStage) {
        const int stage = static_cast<int>(dmin(kDwStage, t1 - s0));
        __syncthreads();
        for (int x = threadIdx.x; x < kDwStage * kExpertGroup; x += blockDim.x) {
          const int tt = x / kExpertGroup, g = x % kExpertGroup;
          dl[tt][g] = (tt < stage && e0 + g < E) ? dlogits[(s0 + tt) * E + e0 + g] : 0.0f;
        }
        __syncthreads();
        if (d < D) {
          for (int tt = 0; tt < stage; ++tt) {
            const float uv = to_f32(u[(s0 + tt) * D + d]);
#pragma unroll
            for (int g = 0; g < kExpertGroup; ++g) acc[g] = fmaf(dl[tt][g], uv, acc[g]);
          }
        }
      }
      if (d < D) {
#pragma unroll
        for (int g = 0; g < kExpertGroup; ++g)
          if (e0 + g < E) partial[(chunk * E + e0 + g) * D + d] = acc[g];
      }
    }
  }
}

// du[t, d] += sum_e dlogits[t, e] w[e, d], experts in order, one thread per VEC consecutive columns of a
// token. Simple path: VEC = 1 (one element per thread). Tuned: a 16-byte vector of W columns (8 bf16 /
// 4 fp32) and the matching du vector; each element's sum runs in the same order, so the bits are the same.
template <typename T, typename TOut, int VEC>
__global__ void __launch_bounds__(256)
router_du_kernel(const T* __restrict__ w, const float* __restrict__ dlogits, std::int64_t N, std::int64_t D, int E,
                     TOut* __restrict__ du) {
  using WV = Pack<T, VEC>;
  using OV = Pack<TOut, VEC>;
  const std::int64_t nvec = D / VEC;
  const std::int64_t total = N * nvec;
  for (std::int64_t idx = static_cast<std::int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; idx < total;
       idx += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t t = idx / nvec, i = idx % nvec;
    float s[VEC];
#pragma unroll
    for (int q = 0; q < VEC; ++q) s[q] = 0.0f;
    for (int e = 0; e < E; ++e) {
      const float g = dlogits[t * E + e];
      const WV wv = reinterpret_cast<const WV*>(w + static_cast<std::int64_t>(e) * D)[i];
#pragma unroll
      for (int q = 0; q < VEC; ++q) s[q] = fmaf(g, to_f32(wv.v[q]), s[q]);
    }
    OV* dst = reinterpret_cast<OV*>(du + t * D) + i;
    OV o = *dst;
#pragma unroll
    for (int q = 0; q < VEC; ++q) o.v[q] = from_f32<TOut>(to_f32(o.v[q]) + s[q]);
    *dst = o;
  }
}

template <typename T, typename TOut>
cudaError_t launch_du(const T* w, const float* dlogits, std::int64_t N, std::int64_t D, int E, TOut* du, bool tuned,
                      cudaStream_t stream) {
  constexpr int kVec = vec_width<T>();  // 8 bf16 / 4 fp32 columns of W per 16-byte load
  if (tuned && D % kVec == 0 && is_aligned(w, 16) && is_aligned(du, sizeof(TOut) * kVec)) {
    router_du_kernel<T, TOut, kVec><<<grid_for(N * (D / kVec), 256), 256, 0, stream>>>(w, dlogits, N, D, E, du);
  } else {
    router_du_kernel<T, TOut, 1><<<grid_for(N * D, 256), 256, 0, stream>>>(w, dlogits, N, D, E, du);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t router_bwd(const T* u, const T* w, const float* dlogits, std::int64_t N, std::int64_t D, int E, float* dw,
                       int accumulate_dw, float* du_f32, std::uint16_t* du_bf16, void* workspace,
                       std::size_t workspace_bytes, bool tuned, cudaStream_t stream) {
  if (N < 0 || D < 1 || E < 1 || E > kMaxExperts) return cudaErrorInvalidValue;
  if (du_f32 != nullptr && du_bf16 != nullptr) return cudaErrorInvalidValue;
  if (dw != nullptr && workspace_bytes < jk_router_bwd_workspace_bytes(N, D, E)) return cudaErrorInvalidValue;
  if (dw != nullptr && N > 0 && workspace == nullptr) return cudaErrorInvalidValue;
  if (N > 0 && (dlogits == nullptr || (dw != nullptr && u == nullptr) ||
                ((du_f32 != nullptr || du_bf16 != nullptr) && w == nullptr)))
    return cudaErrorInvalidValue;
  if (dw != nullptr) {
    const std::int64_t chunks = dw_chunks(N);
    auto* partial = static_cast<float*>(workspace);
    if (chunks > 0) {
      const unsigned gy = static_cast<unsigned>(std::min(chunks, kMaxGridY));
      router_dw_partial_kernel<T><<<dim3(grid_for(D, kDwThreads), gy), kDwThreads, 0, stream>>>(u, dlogits, N, D, E,
                                                                                                 partial);
      JK_RETURN_IF_ERROR(cudaGetLastError());
    }
    // Reduce over chunks: the [chunks, E * D] partials are column sums of an E*D-wide matrix.
    column_finish_kernel<<<grid_for(E * D, kColThreads), kColThreads, 0, stream>>>(partial, chunks, E * D, dw,
                                                                                   accumulate_dw);
    JK_RETURN_IF_ERROR(cudaGetLastError());
  }
  if (N > 0 && du_f32 != nullptr) JK_RETURN_IF_ERROR(launch_du(w, dlogits, N, D, E, du_f32, tuned, stream));
  if (N > 0 && du_bf16 != nullptr) JK_RETURN_IF_ERROR(launch_du(w, dlogits, N, D, E, du_bf16, tuned, stream));
  return cudaSuccess;
}

template <typename T>
cudaError_t gather(const T* x, const std::int32_t* sorted_token, std::int64_t rows, std::int64_t C, T* xp,
                   cudaStream_t stream) {
  if (rows < 0 || C < 0) return cudaErrorInvalidValue;
  if (rows == 0 || C == 0) return cudaSuccess;
  if (x == nullptr || sorted_token == nullptr || xp == nullptr) return cudaErrorInvalidValue;
  constexpr int kVec = vec_width<T>();
  if (C % kVec == 0 && is_aligned(x, 16) && is_aligned(xp, 16)) {
    gather_kernel<T, kVec><<<grid_for(rows * (C / kVec), 256), 256, 0, stream>>>(x, sorted_token, rows, C, xp);
  } else {
    gather_kernel<T, 1><<<grid_for(rows * C, 256), 256, 0, stream>>>(x, sorted_token, rows, C, xp);
  }
  return cudaGetLastError();
}

template <typename TIn, typename TOut>
cudaError_t gather_bwd(const TIn* dxp, const std::int32_t* position, std::int64_t N, int k, std::int64_t C, TOut* dx,
                       int accumulate, cudaStream_t stream) {
  if (N < 0 || C < 0 || k < 1 || k > kMaxExperts) return cudaErrorInvalidValue;
  if (N == 0 || C == 0) return cudaSuccess;
  if (dxp == nullptr || position == nullptr || dx == nullptr) return cudaErrorInvalidValue;
  // Vector width: 16 bytes of the wider side (bf16 -> bf16: 8 columns; bf16 -> fp32 and fp32: 4 columns,
  // 8- / 16-byte loads of dxp and 16-byte accesses of dx).
  constexpr int kVec = 16 / static_cast<int>(std::max(sizeof(TIn), sizeof(TOut)));
  if (C % kVec == 0 && is_aligned(dxp, 16) && is_aligned(dx, 16)) {
    gather_bwd_kernel<TIn, TOut, kVec><<<grid_for(N * (C / kVec), 256), 256, 0, stream>>>(dxp, position, N, k, C, dx,
                                                                                          accumulate);
  } else {
    gather_bwd_kernel<TIn, TOut, 1><<<grid_for(N * C, 256), 256, 0, stream>>>(dxp, position, N, k, C, dx, accumulate);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t combine(const T* y, const T* gates, const std::int32_t* position, const T* bias, std::int64_t N, int k,
                    std::int64_t C, T* out, cudaStream_t stream) {
  if (N < 0 || C < 0 || k < 1 || k > kMaxExperts) return cudaErrorInvalidValue;
  if (N == 0 || C == 0) return cudaSuccess;
  if (y == nullptr || gates == nullptr || position == nullptr || out == nullptr) return cudaErrorInvalidValue;
  constexpr int kVec = vec_width<T>();
  if (C % kVec == 0 && is_aligned(y, 16) && is_aligned(out, 16) && (bias == nullptr || is_aligned(bias, 16))) {
    combine_kernel<T, kVec><<<grid_for(N * (C / kVec), 256), 256, 0, stream>>>(y, gates, position, bias, N, k, C, out);
  } else {
    combine_kernel<T, 1><<<grid_for(N * C, 256), 256, 0, stream>>>(y, gates, position, bias, N, k, C, out);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t combine_bwd(const T* dout, const T* y, const T* gates_dy, const float* gates_f32, const std::int32_t* ids,
                        const std::int32_t* position, std::int64_t N, int E, int k, std::int64_t C, T* dy, float* dgate,
                        float* dlogits, float* dbias, void* workspace, std::size_t workspace_bytes,
                        cudaStream_t stream) {
  if (N < 0 || C < 0 || E < 1 || E > kMaxExperts || k < 1 || k > E) return cudaErrorInvalidValue;
  if (dbias != nullptr && workspace_bytes < jk_router_combine_bwd_workspace_bytes(N, C)) return cudaErrorInvalidValue;
  if (N == 0 && C == 0) return cudaSuccess;
  if (N > 0 && (dout == nullptr || y == nullptr || gates_dy == nullptr || gates_f32 == nullptr || ids == nullptr ||
                position == nullptr || dy == nullptr || dlogits == nullptr))
    return cudaErrorInvalidValue;
  if (dbias != nullptr && N > 0 && workspace == nullptr) return cudaErrorInvalidValue;
  if (N > 0) {
    constexpr int kVec = vec_width<T>();
    constexpr int kThreads = 256;
    const unsigned grid = grid_for(N, kThreads / kWarpSize);
    if (C % kVec == 0 && is_aligned(dout, 16) && is_aligned(y, 16) && is_aligned(dy, 16)) {
      combine_bwd_kernel<T, kVec><<<grid, kThreads, 0, stream>>>(dout, y, gates_dy, gates_f32, ids, position, N, E, k,
                                                                 C, dy, dgate, dlogits);
    } else {
      combine_bwd_kernel<T, 1><<<grid, kThreads, 0, stream>>>(dout, y, gates_dy, gates_f32, ids, position, N, E, k, C,
                                                              dy, dgate, dlogits);
    }
    JK_RETURN_IF_ERROR(cudaGetLastError());
  }
  if (dbias != nullptr && C > 0) JK_RETURN_IF_ERROR(column_sum(dout, N, C, dbias, workspace, stream));
  return cudaSuccess;
}

}  // namespace
}  // namespace jk::detail

using namespace jk::detail;

std::size_t jk_router_fwd_workspace_bytes(std::int64_t N, int E, int k) {
  if (N <= 0 || E < 1 || k < 1) return 0;
  return align256(static_cast<std::size_t>(plan_tiles(N * k)) * static_cast<std::size_t>(E) * sizeof(std::int32_t));
}

cudaError_t jk_router_fwd_bf16(const std::uint16_t* u, const std::uint16_t* w, std::int64_t N, std::int64_t D, int E,
                               int k, const jk_router_outputs_t* out, void* workspace, std::size_t workspace_bytes,
                               cudaStream_t stream) {
  return router_fwd(u, w, N, D, E, k, out, workspace, workspace_bytes, true, stream);
}
cudaError_t jk_router_fwd_f32(const float* u, const float* w, std::int64_t N, std::int64_t D, int E, int k,
                              const jk_router_outputs_t* out, void* workspace, std::size_t workspace_bytes,
                              cudaStream_t stream) {
  return router_fwd(u, w, N, D, E, k, out, workspace, workspace_bytes, true, stream);
}
cudaError_t jk_router_fwd_bf16_simple(const std::uint16_t* u, const std::uint16_t* w, std::int64_t N, std::int64_t D,
                                      int E, int k, const jk_router_outputs_t* out, void* workspace,
                                      std::size_t workspace_bytes, cudaStream_t stream) {
  return router_fwd(u, w, N, D, E, k, out, workspace, workspace_bytes, false, stream);
}
cudaError_t jk_router_fwd_f32_simple(const float* u, const float* w, std::int64_t N, std::int64_t D, int E, int k,
                                     const jk_router_outputs_t* out, void* workspace, std::size_t workspace_bytes,
                                     cudaStream_t stream) {
  return router_fwd(u, w, N, D, E, k, out, workspace, workspace_bytes, false, stream);
}

cudaError_t jk_router_plan(const std::int32_t* expert_ids, std::int64_t N, int E, int k, std::int32_t* counts,
                           std::int32_t* offsets, std::int32_t* sorted_token, std::int32_t* sorted_slot,
                           std::int32_t* position, std::int32_t* host_offsets, void* workspace,
                           std::size_t workspace_bytes, cudaStream_t stream) {
  if (!plan_args_ok(N, E, k) ||
      !plan_ptrs_ok(N, workspace, workspace_bytes, counts, offsets, sorted_token, sorted_slot, position, E, k))
    return cudaErrorInvalidValue;
  if (N > 0 && expert_ids == nullptr) return cudaErrorInvalidValue;
  return launch_plan(expert_ids, N, E, k, counts, offsets, sorted_token, sorted_slot, position, host_offsets, workspace,
                     stream);
}

std::size_t jk_router_aux_workspace_bytes(std::int64_t N, int E) {
  if (N <= 0 || E < 1) return 0;
  const std::size_t nb = static_cast<std::size_t>(aux_blocks(N));
  return align256(nb * E * sizeof(float)) + align256(nb * sizeof(float)) + align256(nb * E * sizeof(std::int32_t)) +
         align256(E * sizeof(float));
}

cudaError_t jk_router_aux_loss(const float* logits, const std::int32_t* expert_ids, std::int64_t N, int E, int k,
                               float alpha, float beta, float* losses, float* dlogits, void* workspace,
                               std::size_t workspace_bytes, cudaStream_t stream) {
  if (!plan_args_ok(N, E, k) || losses == nullptr || !std::isfinite(alpha) || !std::isfinite(beta))
    return cudaErrorInvalidValue;
  if (N == 0) return cudaMemsetAsync(losses, 0, 2 * sizeof(float), stream);
  if (logits == nullptr || expert_ids == nullptr || workspace == nullptr ||
      workspace_bytes < jk_router_aux_workspace_bytes(N, E))
    return cudaErrorInvalidValue;
  const AuxWorkspace ws = aux_layout(workspace, N, E);
  const std::int64_t blocks = aux_blocks(N);
  aux_partial_kernel<<<static_cast<unsigned>(blocks), kAuxThreads, 0, stream>>>(logits, expert_ids, N, E, k, ws);
  JK_RETURN_IF_ERROR(cudaGetLastError());
  aux_finish_kernel<<<1, kMaxExperts, 0, stream>>>(N, E, k, blocks, ws, losses);
  JK_RETURN_IF_ERROR(cudaGetLastError());
  if (dlogits != nullptr) {
    const float a = alpha * static_cast<float>(E) / static_cast<float>(N);
    const float b = beta * 2.0f / static_cast<float>(N);
    aux_grad_kernel<<<static_cast<unsigned>(blocks), kAuxThreads, 0, stream>>>(logits, N, E, a, b, ws.f, dlogits);
    JK_RETURN_IF_ERROR(cudaGetLastError());
  }
  return cudaSuccess;
}

cudaError_t jk_router_gather_bf16(const std::uint16_t* x, const std::int32_t* sorted_token, std::int64_t rows,
                                  std::int64_t C, std::uint16_t* xp, cudaStream_t stream) {
  return gather(x, sorted_token, rows, C, xp, stream);
}
cudaError_t jk_router_gather_f32(const float* x, const std::int32_t* sorted_token, std::int64_t rows, std::int64_t C,
                                 float* xp, cudaStream_t stream) {
  return gather(x, sorted_token, rows, C, xp, stream);
}

cudaError_t jk_router_gather_bwd_bf16(const std::uint16_t* dxp, const std::int32_t* position, std::int64_t N, int k,
                                      std::int64_t C, std::uint16_t* dx, int accumulate, cudaStream_t stream) {
  return gather_bwd(dxp, position, N, k, C, dx, accumulate, stream);
}
cudaError_t jk_router_gather_bwd_bf16_f32(const std::uint16_t* dxp, const std::int32_t* position, std::int64_t N,
                                          int k, std::int64_t C, float* dx, int accumulate, cudaStream_t stream) {
  return gather_bwd(dxp, position, N, k, C, dx, accumulate, stream);
}
cudaError_t jk_router_gather_bwd_f32(const float* dxp, const std::int32_t* position, std::int64_t N, int k,
                                     std::int64_t C, float* dx, int accumulate, cudaStream_t stream) {
  return gather_bwd(dxp, position, N, k, C, dx, accumulate, stream);
}

cudaError_t jk_router_combine_bf16(const std::uint16_t* y, const std::uint16_t* gates_bf16,
                                   const std::int32_t* position, const std::uint16_t* bias, std::int64_t N, int k,
                                   std::int64_t C, std::uint16_t* out, cudaStream_t stream) {
  return combine(y, gates_bf16, position, bias, N, k, C, out, stream);
}
cudaError_t jk_router_combine_f32(const float* y, const float* gates, const std::int32_t* position, const float* bias,
                                  std::int64_t N, int k, std::int64_t C, float* out, cudaStream_t stream) {
  return combine(y, gates, position, bias, N, k, C, out, stream);
}

std::size_t jk_router_combine_bwd_workspace_bytes(std::int64_t N, std::int64_t C) {
  if (N < 0 || C <= 0) return 0;
  return align256(static_cast<std::size_t>(column_chunks(N)) * static_cast<std::size_t>(C) * sizeof(float));
}

cudaError_t jk_router_combine_bwd_bf16(const std::uint16_t* dout, const std::uint16_t* y,
                                       const std::uint16_t* gates_bf16, const float* gates_f32,
                                       const std::int32_t* expert_ids, const std::int32_t* position, std::int64_t N,
                                       int E, int k, std::int64_t C, std::uint16_t* dy, float* dgate, float* dlogits,
                                       float* dbias, void* workspace, std::size_t workspace_bytes,
                                       cudaStream_t stream) {
  return combine_bwd(dout, y, gates_bf16, gates_f32, expert_ids, position, N, E, k, C, dy, dgate, dlogits, dbias,
                     workspace, workspace_bytes, stream);
}
cudaError_t jk_router_combine_bwd_f32(const float* dout, const float* y, const float* gates,
                                      const std::int32_t* expert_ids, const std::int32_t* position, std::int64_t N,
                                      int E, int k, std::int64_t C, float* dy, float* dgate, float* dlogits,
                                      float* dbias, void* workspace, std::size_t workspace_bytes,
                                      cudaStream_t stream) {
  return combine_bwd(dout, y, gates, gates, expert_ids, position, N, E, k, C, dy, dgate, dlogits, dbias, workspace,
                     workspace_bytes, stream);
}

std::size_t jk_router_bwd_workspace_bytes(std::int64_t N, std::int64_t D, int E) {
  if (N <= 0 || D <= 0 || E < 1) return 0;
  return align256(static_cast<std::size_t>(dw_chunks(N)) * static_cast<std::size_t>(E) * static_cast<std::size_t>(D) *
                  sizeof(float));
}

cudaError_t jk_router_bwd_bf16(const std::uint16_t* u, const std::uint16_t* w, const float* dlogits, std::int64_t N,
                               std::int64_t D, int E, float* dw, int accumulate_dw, float* du_f32,
                               std::uint16_t* du_bf16, void* workspace, std::size_t workspace_bytes,
                               cudaStream_t stream) {
  return router_bwd(u, w, dlogits, N, D, E, dw, accumulate_dw, du_f32, du_bf16, workspace, workspace_bytes, true,
                    stream);
}
cudaError_t jk_router_bwd_f32(const float* u, const float* w, const float* dlogits, std::int64_t N, std::int64_t D,
                              int E, float* dw, int accumulate_dw, float* du, void* workspace,
                              std::size_t workspace_bytes, cudaStream_t stream) {
  return router_bwd(u, w, dlogits, N, D, E, dw, accumulate_dw, du, static_cast<std::uint16_t*>(nullptr), workspace,
                    workspace_bytes, true, stream);
}
cudaError_t jk_router_bwd_bf16_simple(const std::uint16_t* u, const std::uint16_t* w, const float* dlogits,
                                      std::int64_t N, std::int64_t D, int E, float* dw, int accumulate_dw,
                                      float* du_f32, std::uint16_t* du_bf16, void* workspace,
                                      std::size_t workspace_bytes, cudaStream_t stream) {
  return router_bwd(u, w, dlogits, N, D, E, dw, accumulate_dw, du_f32, du_bf16, workspace, workspace_bytes, false,
                    stream);
}
cudaError_t jk_router_bwd_f32_simple(const float* u, const float* w, const float* dlogits, std::int64_t N,
                                     std::int64_t D, int E, float* dw, int accumulate_dw, float* du, void* workspace,
                                     std::size_t workspace_bytes, cudaStream_t stream) {
  return router_bwd(u, w, dlogits, N, D, E, dw, accumulate_dw, du, static_cast<std::uint16_t*>(nullptr), workspace,
                    workspace_bytes, false, stream);
}
