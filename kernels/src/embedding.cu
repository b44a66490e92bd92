// Family 'embedding': token embedding gather (forward) and its deterministic backward
// (include/jetmoe/embedding.h). See kernels/notes/embedding.md for the design and the numerics.
#include "common.cuh"
#include "jetmoe/kernels.h"

#include <algorithm>
#include <climits>
#include <type_traits>

namespace {

using jk::detail::bf16_bits_to_float;
using jk::detail::is_aligned;

constexpr int kFwdThreads = 128;
constexpr int kRankThreads = 256;
constexpr int kScanThreads = 1024;
constexpr int kBwdThreads = 128;
constexpr std::size_t kAlign = 256;
constexpr int kMaxGridY = 65535;

__host__ __device__ inline int imin(int a, int b) { return a < b ? a : b; }

std::size_t round_up(std::size_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

// Workspace layout: histogram [V + 1], offsets [V + 1], grouped order [N], per-token rank [N] (int32,
// each 256-aligned).
struct Workspace {
  std::int32_t* hist;
  std::int32_t* offsets;
  std::int32_t* order;
  std::int32_t* rank;
};

std::size_t workspace_bytes(std::int64_t N, std::int64_t V) {
  const std::size_t ids = static_cast<std::size_t>(V + 1) * sizeof(std::int32_t);
  return 2 * round_up(ids) + 2 * round_up(static_cast<std::size_t>(N) * sizeof(std::int32_t));
}

Workspace carve(void* workspace, std::int64_t N, std::int64_t V) {
  const std::size_t ids = round_up(static_cast<std::size_t>(V + 1) * sizeof(std::int32_t));
  const std::size_t tokens = round_up(static_cast<std::size_t>(N) * sizeof(std::int32_t));
  auto* base = static_cast<unsigned char*>(workspace);
  return {reinterpret_cast<std::int32_t*>(base), reinterpret_cast<std::int32_t*>(base + ids),
          reinterpret_cast<std::int32_t*>(base + 2 * ids), reinterpret_cast<std::int32_t*>(base + 2 * ids + tokens)};
}

bool sizes_ok(std::int64_t N, std::int64_t V, std::int64_t D) {
  return N >= 0 && V >= 0 && D >= 0 && N <= INT_MAX && V <= INT_MAX && D <= INT_MAX;
}

// ---- forward --------------------------------------------------------------------------------------

// One block per token (grid-stride over tokens); the threads copy the row in units of U (a 16-byte
// vector or one element). Rows of out-of-range ids are zero-filled and counted once.
template <typename U>
__global__ void embedding_fwd_kernel(const U* __restrict__ emb, const std::int32_t* __restrict__ ids,
                                     U* __restrict__ out, int N, int V, int units_per_row,
                                     std::int32_t* invalid_count) {
  for (int t = blockIdx.x; t < N; t += gridDim.x) {
    const int id = ids[t];
    U* dst = out + static_cast<std::int64_t>(t) * units_per_row;
    if (id >= 0 && id < V) {
      const U* src = emb + static_cast<std::int64_t>(id) * units_per_row;
      for (int c = threadIdx.x; c < units_per_row; c += blockDim.x) dst[c] = src[c];
    } else {
      const U zero{};
      for (int c = threadIdx.x; c < units_per_row; c += blockDim.x) dst[c] = zero;
      if (threadIdx.x == 0 && invalid_count != nullptr) atomicAdd(invalid_count, 1);
    }
  }
}

template <typename T>
cudaError_t embedding_fwd(const T* emb, const std::int32_t* ids, T* out, std::int64_t N, std::int64_t V,
                          std::int64_t D, std::int32_t* invalid_count, jk_embedding_path_t path,
                          cudaStream_t stream) {
  if (!sizes_ok(N, V, D)) return cudaErrorInvalidValue;
  if (path != jk_embedding_path_auto && path != jk_embedding_path_simple) return cudaErrorInvalidValue;
  if (N > 0 && (ids == nullptr || (D > 0 && out == nullptr))) return cudaErrorInvalidValue;
  if (N > 0 && D > 0 && V > 0 && emb == nullptr) return cudaErrorInvalidValue;
  if (invalid_count != nullptr) JK_RETURN_IF_ERROR(cudaMemsetAsync(invalid_count, 0, sizeof(std::int32_t), stream));
  if (N == 0) return cudaSuccess;
  // D == 0: nothing to copy, but out-of-range ids are still counted (the scalar kernel does both).
  const int grid = static_cast<int>(std::min<std::int64_t>(N, 1 << 20));
  const bool vector = path == jk_embedding_path_auto && D > 0 && (D * static_cast<std::int64_t>(sizeof(T))) % 16 == 0 &&
                      is_aligned(emb, 16) && is_aligned(out, 16);
  if (vector) {
    const int units = static_cast<int>(D * static_cast<std::int64_t>(sizeof(T)) / 16);
    embedding_fwd_kernel<uint4><<<grid, kFwdThreads, 0, stream>>>(reinterpret_cast<const uint4*>(emb), ids,
                                                                  reinterpret_cast<uint4*>(out), static_cast<int>(N),
                                                                  static_cast<int>(V), units, invalid_count);
  } else {
    embedding_fwd_kernel<T><<<grid, kFwdThreads, 0, stream>>>(emb, ids, out, static_cast<int>(N), static_cast<int>(V),
                                                              static_cast<int>(D), invalid_count);
  }
  return cudaGetLastError();
}

// ---- grouping: counting sort of the tokens by id ------------------------------------------------------

// hist[id] += 1 per in-range token (integer atomics: the counts do not depend on the order).
__global__ void embedding_histogram_kernel(const std::int32_t* __restrict__ ids, int N, int V,
                                           std::int32_t* __restrict__ hist, std::int32_t* invalid_count) {
  for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < N; t += gridDim.x * blockDim.x) {
    const int id = ids[t];
    if (id >= 0 && id < V) {
      atomicAdd(&hist[id], 1);
    } else if (invalid_count != nullptr) {
      atomicAdd(invalid_count, 1);
    }
  }
}

// offsets[v] = sum of hist[0 .. v), offsets[V] = total. One block of kScanThreads: each thread sums a
// contiguous chunk, the chunk totals are scanned with warp shuffles (integers: exact in any order), then
// each thread writes its chunk's running offsets.
__device__ __forceinline__ std::int32_t warp_inclusive_scan(std::int32_t v) {
  const int lane = threadIdx.x % jk::detail::kWarpSize;
#pragma unroll
  for (int d = 1; d < jk::detail::kWarpSize; d *= 2) {
    const std::int32_t up = __shfl_up_sync(0xffffffffu, v, d);
    if (lane >= d) v += up;
  }
  return v;
}

__global__ void embedding_scan_kernel(const std::int32_t* __restrict__ hist, int V, std::int32_t* __restrict__ offsets) {
  constexpr int kWarps = kScanThreads / jk::detail::kWarpSize;
  __shared__ std::int32_t warp_total[kWarps];
  const int lane = threadIdx.x % jk::detail::kWarpSize;
  const int warp = threadIdx.x / jk::detail::kWarpSize;
  const int per = (V + kScanThreads - 1) / kScanThreads;
  const long long first = static_cast<long long>(threadIdx.x) * per;
  const int begin = first < V ? static_cast<int>(first) : V;
  const int end = begin + per < V ? begin + per : V;
  std::int32_t sum = 0;
  for (int v = begin; v < end; ++v) sum += hist[v];
  const std::int32_t inclusive = warp_inclusive_scan(sum);
  if (lane == jk::detail::kWarpSize - 1) warp_total[warp] = inclusive;
  __syncthreads();
  if (warp == 0) {
    const std::int32_t t = lane < kWarps ? warp_total[lane] : 0;
    const std::int32_t scanned = warp_inclusive_scan(t);
    if (lane < kWarps) warp_total[lane] = scanned - t;  // exclusive prefix of the warp totals
  }
  __syncthreads();
  std::int32_t running = warp_total[warp] + inclusive - sum;
  for (int v = begin; v < end; ++v) {
    offsets[v] = running;
    running += hist[v];
  }
  if (threadIdx.x == kScanThreads - 1) offsets[V] = running;
}

// Stable scatter: token t goes to offsets[id] + (number of tokens j < t with ids[j] == id). The rank
// is counted over shared-memory tiles of the ids (O(N^2 / 2) compares in all, broadcast reads).
// Positions from offsets[V] on (as many as there are out-of-range tokens) get -1.
__global__ void embedding_rank_scatter_kernel(const std::int32_t* __restrict__ ids, int N, int V,
                                              const std::int32_t* __restrict__ offsets,
                                              std::int32_t* __restrict__ sorted_token) {
  __shared__ std::int32_t tile[kRankThreads];
  const int block_begin = blockIdx.x * kRankThreads;
  const int t = block_begin + static_cast<int>(threadIdx.x);
  const int id = t < N ? ids[t] : -1;
  const bool valid = t < N && id >= 0 && id < V;
  const int block_end = imin(N, block_begin + kRankThreads);
  int rank = 0;
  for (int j0 = 0; j0 < block_end; j0 += kRankThreads) {
    const int j = j0 + static_cast<int>(threadIdx.x);
    tile[threadIdx.x] = j < N ? ids[j] : -1;
    __syncthreads();
    const int limit = imin(kRankThreads, t - j0);  // tokens j0 + k < t
    if (valid) {
      for (int k = 0; k < limit; ++k) rank += tile[k] == id ? 1 : 0;
    }
    __syncthreads();
  }
  if (valid) sorted_token[offsets[id] + rank] = t;
  if (t < N && t >= offsets[V]) sorted_token[t] = -1;
}

// Tuned rank: the same count split over a second grid dimension so that the work (which grows with the
// token index) is spread over all SMs. Block (x, y) counts, for the tokens of block x, the matches in
// tiles [y * kRankTilesPerBlock, (y + 1) * kRankTilesPerBlock) that precede them, and adds its partial
// count to rank[t] with an integer atomic (exact and order-independent, so deterministic).
constexpr int kRankTilesPerBlock = 4;

__global__ void embedding_rank_split_kernel(const std::int32_t* __restrict__ ids, int N, int V,
                                            std::int32_t* __restrict__ rank_out) {
  __shared__ std::int32_t tile[kRankThreads];
  const int first_tile = blockIdx.y * kRankTilesPerBlock;
  if (first_tile > static_cast<int>(blockIdx.x)) return;  // every token of those tiles comes later (whole block)
  const int t = blockIdx.x * kRankThreads + static_cast<int>(threadIdx.x);
  const int id = t < N ? ids[t] : -1;
  const bool valid = t < N && id >= 0 && id < V;
  const int last_tile = imin(first_tile + kRankTilesPerBlock - 1, static_cast<int>(blockIdx.x));
  int rank = 0;
  for (int tile_index = first_tile; tile_index <= last_tile; ++tile_index) {
    const int j0 = tile_index * kRankThreads;
    const int j = j0 + static_cast<int>(threadIdx.x);
    tile[threadIdx.x] = j < N ? ids[j] : -1;
    __syncthreads();
    const int limit = imin(kRankThreads, t - j0);
    if (valid) {
      for (int k = 0; k < limit; ++k) rank += tile[k] == id ? 1 : 0;
    }
    __syncthreads();
  }
  if (valid && rank > 0) atomicAdd(&rank_out[t], rank);
}

__global__ void embedding_scatter_kernel(const std::int32_t* __restrict__ ids, int N, int V,
                                         const std::int32_t* __restrict__ offsets, const std::int32_t* __restrict__ rank,
                                         std::int32_t* __restrict__ sorted_token) {
  for (int t = blockIdx.x * blockDim.x + threadIdx.x; t < N; t += gridDim.x * blockDim.x) {
    const int id = ids[t];
    if (id >= 0 && id < V) sorted_token[offsets[id] + rank[t]] = t;
    if (t >= offsets[V]) sorted_token[t] = -1;
  }
}

// rank == nullptr: the simple single-pass rank kernel; otherwise the split count into rank [N].
cudaError_t group_tokens(const std::int32_t* ids, int N, int V, std::int32_t* hist, std::int32_t* offsets,
                         std::int32_t* sorted_token, std::int32_t* rank, std::int32_t* invalid_count,
                         cudaStream_t stream) {
  if (invalid_count != nullptr) JK_RETURN_IF_ERROR(cudaMemsetAsync(invalid_count, 0, sizeof(std::int32_t), stream));
  JK_RETURN_IF_ERROR(cudaMemsetAsync(hist, 0, static_cast<std::size_t>(V) * sizeof(std::int32_t), stream));
  if (N > 0) {
    const int grid = std::min((N + 255) / 256, 4096);
    embedding_histogram_kernel<<<grid, 256, 0, stream>>>(ids, N, V, hist, invalid_count);
    JK_RETURN_IF_ERROR(cudaGetLastError());
  }
  embedding_scan_kernel<<<1, kScanThreads, 0, stream>>>(hist, V, offsets);
  JK_RETURN_IF_ERROR(cudaGetLastError());
  if (N == 0) return cudaSuccess;
  const int token_blocks = (N + kRankThreads - 1) / kRankThreads;
  const int tile_blocks = (token_blocks + kRankTilesPerBlock - 1) / kRankTilesPerBlock;
  if (rank == nullptr || tile_blocks > kMaxGridY) {  // the split grid's y extent is limited to 65535
    embedding_rank_scatter_kernel<<<token_blocks, kRankThreads, 0, stream>>>(ids, N, V, offsets, sorted_token);
    return cudaGetLastError();
  }
  JK_RETURN_IF_ERROR(cudaMemsetAsync(rank, 0, static_cast<std::size_t>(N) * sizeof(std::int32_t), stream));
  embedding_rank_split_kernel<<<dim3(static_cast<unsigned>(token_blocks), static_cast<unsigned>(tile_blocks)),
                                kRankThreads, 0, stream>>>(ids, N, V, rank);
  JK_RETURN_IF_ERROR(cudaGetLastError());
  embedding_scatter_kernel<<<std::min((N + 255) / 256, 4096), 256, 0, stream>>>(ids, N, V, offsets, rank, sorted_token);
  return cudaGetLastError();
}

// ---- backward: per-id fixed-order sums ---------------------------------------------------------------

// Loads VEC consecutive dx values (widened to fp32) starting at element index i (i % VEC == 0 and
// 16-byte aligned when VEC > 1).
template <int VEC>
__device__ __forceinline__ void load_dx(const float* dx, std::int64_t i, float (&v)[VEC]) {
  if constexpr (VEC == 4) {
    const float4 p = *reinterpret_cast<const float4*>(dx + i);
    v[0] = p.x; v[1] = p.y; v[2] = p.z; v[3] = p.w;
  } else {
#pragma unroll
    for (int k = 0; k < VEC; ++k) v[k] = dx[i + k];
  }
}

template <int VEC>
__device__ __forceinline__ void load_dx(const std::uint16_t* dx, std::int64_t i, float (&v)[VEC]) {
  if constexpr (VEC == 8) {
    const uint4 p = *reinterpret_cast<const uint4*>(dx + i);
    const std::uint32_t w[4] = {p.x, p.y, p.z, p.w};
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      v[2 * k] = __uint_as_float(w[k] << 16);              // low half: element 2k (little endian)
      v[2 * k + 1] = __uint_as_float(w[k] & 0xffff0000u);  // high half: element 2k + 1
    }
  } else {
#pragma unroll
    for (int k = 0; k < VEC; ++k) v[k] = bf16_bits_to_float(dx[i + k]);
  }
}

// Block (v, y): id v, columns in units of VEC (grid-stride over the column units in y). Each thread
// owns VEC columns and sums the id's tokens in ascending order: acc = 0; acc += dx[t][c]; then
// dEmb[v][c] = acc or dEmb[v][c] + acc. Four tokens' loads are issued before their (in-order) adds.
template <typename T, int VEC>
__global__ void embedding_bwd_kernel(const T* __restrict__ dx, const std::int32_t* __restrict__ offsets,
                                     const std::int32_t* __restrict__ sorted_token, float* __restrict__ demb, int D,
                                     int accumulate, int zero_untouched) {
  const int v = blockIdx.x;
  const int begin = offsets[v];
  const int end = offsets[v + 1];
  if (begin == end && !zero_untouched) return;
  const int units = D / VEC;
  float* row = demb + static_cast<std::int64_t>(v) * D;
  for (int u = blockIdx.y * blockDim.x + threadIdx.x; u < units; u += gridDim.y * blockDim.x) {
    const int c = u * VEC;
    float acc[VEC];
#pragma unroll
    for (int k = 0; k < VEC; ++k) acc[k] = 0.0f;
    if (begin == end) {  // untouched id with zero_untouched (only reached with beta 0)
#pragma unroll
      for (int k = 0; k < VEC; ++k) row[c + k] = 0.0f;
      continue;
    }
    int i = begin;
    for (; i + 4 <= end; i += 4) {
      float x[4][VEC];
#pragma unroll
      for (int s = 0; s < 4; ++s) load_dx<VEC>(dx, static_cast<std::int64_t>(sorted_token[i + s]) * D + c, x[s]);
#pragma unroll
      for (int s = 0; s < 4; ++s) {
#pragma unroll
        for (int k = 0; k < VEC; ++k) acc[k] = __fadd_rn(acc[k], x[s][k]);
      }
    }
    for (; i < end; ++i) {
      float x[VEC];
      load_dx<VEC>(dx, static_cast<std::int64_t>(sorted_token[i]) * D + c, x);
#pragma unroll
      for (int k = 0; k < VEC; ++k) acc[k] = __fadd_rn(acc[k], x[k]);
    }
    if constexpr (VEC == 1) {
      row[c] = accumulate ? __fadd_rn(row[c], acc[0]) : acc[0];
    } else {
#pragma unroll
      for (int k = 0; k < VEC; k += 4) {
        float4* p = reinterpret_cast<float4*>(row + c + k);
        float4 o = make_float4(acc[k], acc[k + 1], acc[k + 2], acc[k + 3]);
        if (accumulate) {
          const float4 old = *p;
          o.x = __fadd_rn(old.x, o.x);
          o.y = __fadd_rn(old.y, o.y);
          o.z = __fadd_rn(old.z, o.z);
          o.w = __fadd_rn(old.w, o.w);
        }
        *p = o;
      }
    }
  }
}

template <typename T, int VEC>
cudaError_t launch_bwd(const T* dx, const Workspace& ws, float* demb, int V, int D, int accumulate,
                       int zero_untouched, cudaStream_t stream) {
  const int units = D / VEC;
  const int grid_y = std::min((units + kBwdThreads - 1) / kBwdThreads, kMaxGridY);
  embedding_bwd_kernel<T, VEC><<<dim3(static_cast<unsigned>(V), static_cast<unsigned>(grid_y)), kBwdThreads, 0, stream>>>(
      dx, ws.offsets, ws.order, demb, D, accumulate, zero_untouched);
  return cudaGetLastError();
}

template <typename T>
cudaError_t embedding_bwd(const T* dx, const std::int32_t* ids, float* demb, std::int64_t N, std::int64_t V,
                          std::int64_t D, float beta, int zero_untouched, std::int32_t* invalid_count,
                          void* workspace, std::size_t workspace_bytes_given, jk_embedding_path_t path,
                          cudaStream_t stream) {
  if (!sizes_ok(N, V, D)) return cudaErrorInvalidValue;
  if (path != jk_embedding_path_auto && path != jk_embedding_path_simple) return cudaErrorInvalidValue;
  if (!(beta == 0.0f || beta == 1.0f)) return cudaErrorInvalidValue;
  if (N > 0 && ids == nullptr) return cudaErrorInvalidValue;
  if (N > 0 && D > 0 && dx == nullptr) return cudaErrorInvalidValue;
  if (V > 0 && D > 0 && demb == nullptr) return cudaErrorInvalidValue;
  if (V > 0 && (workspace == nullptr || workspace_bytes_given < workspace_bytes(N, V))) return cudaErrorInvalidValue;
  if (V == 0) {  // every token is out of range: nothing to write, only the count
    if (invalid_count != nullptr) {
      JK_RETURN_IF_ERROR(cudaMemsetAsync(invalid_count, 0, sizeof(std::int32_t), stream));
      if (N > 0) {
        const int grid = std::min<int>((static_cast<int>(N) + 255) / 256, 4096);
        embedding_histogram_kernel<<<grid, 256, 0, stream>>>(ids, static_cast<int>(N), 0, nullptr, invalid_count);
        JK_RETURN_IF_ERROR(cudaGetLastError());
      }
    }
    return cudaSuccess;
  }
  const Workspace ws = carve(workspace, N, V);
  JK_RETURN_IF_ERROR(group_tokens(ids, static_cast<int>(N), static_cast<int>(V), ws.hist, ws.offsets, ws.order,
                                  path == jk_embedding_path_simple ? nullptr : ws.rank, invalid_count, stream));
  if (D == 0) return cudaSuccess;
  const int accumulate = beta == 1.0f ? 1 : 0;
  const int zero = accumulate ? 0 : (zero_untouched != 0 ? 1 : 0);
  const int Vi = static_cast<int>(V);
  const int Di = static_cast<int>(D);
  constexpr int kVec = std::is_same_v<T, float> ? 4 : 8;
  const bool vector = path == jk_embedding_path_auto && D % kVec == 0 && is_aligned(dx, 16) && is_aligned(demb, 16);
  if (vector) return launch_bwd<T, kVec>(dx, ws, demb, Vi, Di, accumulate, zero, stream);
  return launch_bwd<T, 1>(dx, ws, demb, Vi, Di, accumulate, zero, stream);
}

}  // namespace

cudaError_t jk_embedding_fwd_bf16(const std::uint16_t* emb, const std::int32_t* ids, std::uint16_t* out,
                                  std::int64_t N, std::int64_t V, std::int64_t D, std::int32_t* invalid_count,
                                  jk_embedding_path_t path, cudaStream_t stream) {
  return embedding_fwd(emb, ids, out, N, V, D, invalid_count, path, stream);
}

cudaError_t jk_embedding_fwd_f32(const float* emb, const std::int32_t* ids, float* out, std::int64_t N,
                                 std::int64_t V, std::int64_t D, std::int32_t* invalid_count,
                                 jk_embedding_path_t path, cudaStream_t stream) {
  return embedding_fwd(emb, ids, out, N, V, D, invalid_count, path, stream);
}

std::size_t jk_embedding_bwd_workspace_bytes(std::int64_t N, std::int64_t V) {
  if (N < 0 || V < 0) return 0;
  return workspace_bytes(N, V);
}

cudaError_t jk_embedding_bwd_bf16(const std::uint16_t* dx, const std::int32_t* ids, float* demb, std::int64_t N,
                                  std::int64_t V, std::int64_t D, float beta, int zero_untouched,
                                  std::int32_t* invalid_count, void* workspace, std::size_t workspace_bytes_given,
                                  jk_embedding_path_t path, cudaStream_t stream) {
  return embedding_bwd(dx, ids, demb, N, V, D, beta, zero_untouched, invalid_count, workspace, workspace_bytes_given,
                       path, stream);
}

cudaError_t jk_embedding_bwd_f32(const float* dx, const std::int32_t* ids, float* demb, std::int64_t N,
                                 std::int64_t V, std::int64_t D, float beta, int zero_untouched,
                                 std::int32_t* invalid_count, void* workspace, std::size_t workspace_bytes_given,
                                 jk_embedding_path_t path, cudaStream_t stream) {
  return embedding_bwd(dx, ids, demb, N, V, D, beta, zero_untouched, invalid_count, workspace, workspace_bytes_given,
                       path, stream);
}

cudaError_t jk_embedding_group_tokens(const std::int32_t* ids, std::int64_t N, std::int64_t V,
                                      std::int32_t* offsets, std::int32_t* sorted_token,
                                      std::int32_t* invalid_count, void* workspace, std::size_t workspace_bytes_given,
                                      cudaStream_t stream) {
  if (N < 0 || V < 0 || N > INT_MAX || V > INT_MAX) return cudaErrorInvalidValue;
  if (offsets == nullptr || (N > 0 && (ids == nullptr || sorted_token == nullptr))) return cudaErrorInvalidValue;
  if (workspace == nullptr || workspace_bytes_given < workspace_bytes(N, V)) return cudaErrorInvalidValue;
  const Workspace ws = carve(workspace, N, V);
  return group_tokens(ids, static_cast<int>(N), static_cast<int>(V), ws.hist, offsets, sorted_token, ws.rank,
                      invalid_count, stream);
}
