// Grouped expert GEMMs (bf16 in, fp32 accumulate) with a linearised tile scheduler over all experts
// that reads the device offsets (no host synchronisation), the SwiGLU epilogue fused into fc1, the
// standalone SwiGLU forward/backward, and a cuBLASLt per-expert baseline.
//
// Problem geometry (one "problem" per API entry; C = A B^T in tile terms, all row-major):
//   mode        tile rows (M)     tile cols (N)   reduction (K)   A(m, kk)                 B(n, kk)
//   fwd         rows of expert e  n               k               in[r0+m, kk]             W[e][n, kk]
//   fwd_swiglu  rows of expert e  f (pairs)       k               in[r0+m, kk]             W[e][gate|up row, kk]
//   bwd_data    rows of expert e  k               n               dout[r0+m, kk]           W[e][kk, n]
//   bwd_weight  n                 k               rows of e       dout[r0+kk, m]           in[r0+kk, n]
// "K-major" operands have kk contiguous in memory, "MN-major" ones have m (or n) contiguous.
//
// Tiles are numbered expert by expert (prefix over the experts, computed per block in shared memory
// from the device offsets), and within an expert with the M tile fastest, so blocks that run at the
// same time share the weight tile (read once from HBM) and stream the expert's rows from L2.
// A persistent grid (a few blocks per SM) strides over the tile numbers.
#include "common.cuh"
#include "jetmoe/kernels.h"
#include "sm90.cuh"

#include <cublasLt.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <vector>

namespace jk::detail {
namespace {

enum class GgMode { kFwd, kFwdSwiglu, kBwdData, kBwdWeight };

struct GgParams {
  const std::uint16_t* a;         // fwd/swiglu: in [rows, k]; bwd_data, bwd_weight: dout [rows, n]
  const std::uint16_t* b;         // fwd/swiglu/bwd_data: w [E, n, k] (swiglu: n = 2f); bwd_weight: in [rows, k]
  void* out;                      // fwd: [rows, n]; swiglu: h [rows, f]; bwd_data: din [rows, k]; bwd_weight: dw [E, n, k]
  std::uint16_t* z;               // swiglu only: bf16(z) [rows, 2f] or null
  const std::int32_t* offsets;    // device [E + 1]
  std::int64_t rows, n, k;        // API sizes (swiglu: n = 2f)
  int num_experts;
  float beta;                     // bwd_weight only
};

// ---- small device helpers -------------------------------------------------------------------------

__device__ __forceinline__ float bf16_round(float v) { return bf16_bits_to_float(float_to_bf16_bits(v)); }

// HF bf16 SwiGLU (torch: F.silu on bf16 computes x / (1 + exp(-x)) in fp32 and rounds; the bf16 multiply
// of two bf16 values is exact in fp32 and rounded once).
__device__ __forceinline__ std::uint16_t swiglu_bits(float a, float b) {
  const float s = bf16_round(a / (1.0f + expf(-a)));
  return float_to_bf16_bits(s * b);
}

__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const std::uint32_t (&a)[4], const std::uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ std::int64_t ceil_div(std::int64_t a, std::int64_t b) { return (a + b - 1) / b; }

// Per-block tile schedule over the experts: clamped offsets and the tile prefix, in shared memory.
struct Schedule {
  std::int64_t tile_prefix[JK_GROUPED_GEMM_MAX_EXPERTS + 1];
  std::int32_t row_offset[JK_GROUPED_GEMM_MAX_EXPERTS + 1];
};

// Tiles of expert e: row modes ceil(rows_e / BM) * tiles_n; bwd_weight ceil(n / BM) * ceil(k / BN).
template <GgMode MODE, int BM, int BN>
__device__ __forceinline__ void build_schedule(const GgParams& p, Schedule& s) {
  if (threadIdx.x == 0) {
    std::int64_t prev = 0;
    std::int64_t total = 0;
    s.tile_prefix[0] = 0;
    for (int e = 0; e <= p.num_experts; ++e) {
      std::int64_t o = p.offsets[e];
      o = o < prev ? prev : (o > p.rows ? p.rows : o);  // clamp: non-decreasing, inside [0, rows]
      s.row_offset[e] = static_cast<std::int32_t>(o);
      if (e > 0) {
        const std::int64_t rows_e = o - prev;
        std::int64_t tiles;
        if constexpr (MODE == GgMode::kBwdWeight) {
          tiles = ceil_div(p.n, BM) * ceil_div(p.k, BN);
          (void)rows_e;
        } else if constexpr (MODE == GgMode::kFwdSwiglu) {
          tiles = ceil_div(rows_e, BM) * ceil_div(p.n / 2, BN / 2);
        } else if constexpr (MODE == GgMode::kFwd) {
          tiles = ceil_div(rows_e, BM) * ceil_div(p.n, BN);
        } else {
          tiles = ceil_div(rows_e, BM) * ceil_div(p.k, BN);
        }
        total += tiles;
        s.tile_prefix[e] = total;
      }
      prev = o;
    }
  }
  __syncthreads();
}

// The expert that owns tile number `tile` (prefix[e] <= tile < prefix[e + 1]).
__device__ __forceinline__ int expert_of_tile(const Schedule& s, int num_experts, std::int64_t tile) {
  int lo = 0;
  int hi = num_experts - 1;
  while (lo < hi) {  // first e with prefix[e + 1] > tile
    const int mid = (lo + hi) / 2;
    if (s.tile_prefix[mid + 1] > tile) hi = mid; else lo = mid + 1;
  }
  return lo;
}

// Geometry of one tile, shared by both kernels.
struct TileInfo {
  int e;
  std::int64_t row0;    // first row of the expert
  std::int64_t rows_e;  // rows of the expert
  std::int64_t m0, n0;  // tile origin in the C matrix (swiglu: n0 is the first H column j0)
  std::int64_t m_lim;   // number of valid C rows (row modes: rows_e; bwd_weight: n)
  std::int64_t n_lim;   // number of valid C columns (fwd: n; swiglu: f; bwd_data: k; bwd_weight: k)
  std::int64_t k_lim;   // reduction length (fwd/swiglu: k; bwd_data: n; bwd_weight: rows_e)
};

template <GgMode MODE, int BM, int BN>
__device__ __forceinline__ TileInfo tile_info(const GgParams& p, const Schedule& s, std::int64_t tile) {
  TileInfo t;
  t.e = expert_of_tile(s, p.num_experts, tile);
  t.row0 = s.row_offset[t.e];
  t.rows_e = s.row_offset[t.e + 1] - t.row0;
  const std::int64_t local = tile - s.tile_prefix[t.e];
  std::int64_t tiles_m;
  if constexpr (MODE == GgMode::kBwdWeight) {
    t.m_lim = p.n;
    t.n_lim = p.k;
    t.k_lim = t.rows_e;
  } else if constexpr (MODE == GgMode::kFwdSwiglu) {
    t.m_lim = t.rows_e;
    t.n_lim = p.n / 2;
    t.k_lim = p.k;
  } else if constexpr (MODE == GgMode::kFwd) {
    t.m_lim = t.rows_e;
    t.n_lim = p.n;
    t.k_lim = p.k;
  } else {
    t.m_lim = t.rows_e;
    t.n_lim = p.k;
    t.k_lim = p.n;
  }
  tiles_m = ceil_div(t.m_lim, BM);
  t.m0 = (local % tiles_m) * BM;
  t.n0 = (local / tiles_m) * (MODE == GgMode::kFwdSwiglu ? BN / 2 : BN);
  return t;
}

// Tile-local column of the B tile -> global row of W for the fused SwiGLU: each warp's WN columns are
// WN/2 gate columns followed by the WN/2 matching up columns, so accumulator fragment ni (gate) and
// ni + NF/2 (up) of the same thread hold columns j and f + j.
template <int WN>
__device__ __forceinline__ std::int64_t swiglu_w_row(int n_local, std::int64_t j0, std::int64_t f, bool* valid) {
  const int warp_n = n_local / WN;
  const int within = n_local % WN;
  const bool up = within >= WN / 2;
  const std::int64_t j = j0 + warp_n * (WN / 2) + (up ? within - WN / 2 : within);
  *valid = j < f;
  return up ? f + j : j;
}

// Stores of two adjacent output elements: one 32-bit (bf16 pair) or 64-bit (fp32 pair) store when both
// are inside the output and the address allows it, else element by element.
__device__ __forceinline__ void store2(std::uint16_t* dst, std::uint16_t x, std::uint16_t y, bool both) {
  if (both && (reinterpret_cast<std::uintptr_t>(dst) & 3u) == 0) {
    *reinterpret_cast<std::uint32_t*>(dst) = static_cast<std::uint32_t>(x) | (static_cast<std::uint32_t>(y) << 16);
  } else {
    dst[0] = x;
    if (both) dst[1] = y;
  }
}
__device__ __forceinline__ void store2(float* dst, float x, float y, bool both) {
  if (both && (reinterpret_cast<std::uintptr_t>(dst) & 7u) == 0) {
    *reinterpret_cast<float2*>(dst) = make_float2(x, y);
  } else {
    dst[0] = x;
    if (both) dst[1] = y;
  }
}

// Epilogue for one accumulator pair: columns n_local, n_local + 1 of tile row m_local (swiglu: H columns
// j, j + 1 with the gate values v0, v1 and the up values up0, up1).
template <GgMode MODE, typename OutT>
__device__ __forceinline__ void store_pair(const GgParams& p, const TileInfo& t, int m_local, int n_local,
                                           float v0, float v1, float up0, float up1) {
  const std::int64_t m = t.m0 + m_local;
  const std::int64_t col = t.n0 + n_local;
  if (m >= t.m_lim || col >= t.n_lim) return;
  const bool both = col + 1 < t.n_lim;
  if constexpr (MODE == GgMode::kBwdWeight) {
    float* dw = static_cast<float*>(p.out) + (static_cast<std::int64_t>(t.e) * p.n + m) * p.k + col;
    if (p.beta != 0.0f) {  // beta == 1: accumulate; the old values are only read in this case
      v0 = fmaf(p.beta, dw[0], v0);
      if (both) v1 = fmaf(p.beta, dw[1], v1);
    }
    store2(dw, v0, v1, both);
  } else if constexpr (MODE == GgMode::kFwdSwiglu) {
    const std::int64_t row = t.row0 + m;
    const std::int64_t f = p.n / 2;
    const std::uint16_t a0 = float_to_bf16_bits(v0), a1 = float_to_bf16_bits(v1);
    const std::uint16_t b0 = float_to_bf16_bits(up0), b1 = float_to_bf16_bits(up1);
    const std::uint16_t h0 = swiglu_bits(bf16_bits_to_float(a0), bf16_bits_to_float(b0));
    const std::uint16_t h1 = swiglu_bits(bf16_bits_to_float(a1), bf16_bits_to_float(b1));
    store2(static_cast<std::uint16_t*>(p.out) + row * f + col, h0, h1, both);
    if (p.z != nullptr) {
      store2(p.z + row * p.n + col, a0, a1, both);
      store2(p.z + row * p.n + f + col, b0, b1, both);
    }
  } else {
    const std::int64_t row = t.row0 + m;
    const std::int64_t ld = MODE == GgMode::kFwd ? p.n : p.k;
    OutT* out = static_cast<OutT*>(p.out) + row * ld + col;
    if constexpr (std::is_same_v<OutT, float>) {
      store2(out, v0, v1, both);
    } else {
      store2(out, float_to_bf16_bits(v0), float_to_bf16_bits(v1), both);
    }
  }
}

// ---- the simple kernel: 64x64x32 tiles, 4 warps of 32x32, plain loads into shared memory ----------

constexpr int kSimpleBM = 64;
constexpr int kSimpleBN = 64;
constexpr int kSimpleBK = 32;
constexpr int kSimpleLd = kSimpleBK + 8;  // padded row (80 bytes): 32-bit fragment reads stay aligned
constexpr int kSimpleThreads = 128;
constexpr int kSimpleWN = 32;

template <GgMode MODE, typename OutT>
__global__ void __launch_bounds__(kSimpleThreads)
gg_simple_kernel(const GgParams p) {
  __shared__ Schedule sched;
  __shared__ __align__(16) std::uint16_t As[kSimpleBM][kSimpleLd];
  __shared__ __align__(16) std::uint16_t Bs[kSimpleBN][kSimpleLd];
  build_schedule<MODE, kSimpleBM, kSimpleBN>(p, sched);
  const std::int64_t total = sched.tile_prefix[p.num_experts];

  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int warp_m = warp / 2;
  const int warp_n = warp % 2;
  const int g = lane / 4;  // groupID
  const int tq = lane % 4; // thread in group

  for (std::int64_t tile = blockIdx.x; tile < total; tile += gridDim.x) {
    const TileInfo t = tile_info<MODE, kSimpleBM, kSimpleBN>(p, sched, tile);
    float acc[2][4][4];
#pragma unroll
    for (int mi = 0; mi < 2; ++mi)
#pragma unroll
      for (int ni = 0; ni < 4; ++ni)
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[mi][ni][c] = 0.0f;

    for (std::int64_t k0 = 0; k0 < t.k_lim; k0 += kSimpleBK) {
      // A tile [BM][BK]: As[m][kk] = A(m0 + m, k0 + kk), zero outside.
      for (int i = threadIdx.x; i < kSimpleBM * kSimpleBK; i += kSimpleThreads) {
        int m, kk;
        if constexpr (MODE == GgMode::kBwdWeight) {  // MN-major: consecutive threads take consecutive m
          m = i % kSimpleBM;
          kk = i / kSimpleBM;
        } else {
          m = i / kSimpleBK;
          kk = i % kSimpleBK;
        }
        const std::int64_t gm = t.m0 + m;
        const std::int64_t gk = k0 + kk;
        std::uint16_t v = 0;
        if (gm < t.m_lim && gk < t.k_lim) {
          if constexpr (MODE == GgMode::kBwdWeight) {
            v = p.a[(t.row0 + gk) * p.n + gm];
          } else {
            v = p.a[(t.row0 + gm) * (MODE == GgMode::kBwdData ? p.n : p.k) + gk];
          }
        }
        As[m][kk] = v;
      }
      // B tile [BN][BK]: Bs[n][kk] = B(n0 + n, k0 + kk), zero outside.
      for (int i = threadIdx.x; i < kSimpleBN * kSimpleBK; i += kSimpleThreads) {
        int nl, kk;
        if constexpr (MODE == GgMode::kBwdWeight || MODE == GgMode::kBwdData) {  // MN-major
          nl = i % kSimpleBN;
          kk = i / kSimpleBN;
        } else {
          nl = i / kSimpleBK;
          kk = i % kSimpleBK;
        }
        const std::int64_t gk = k0 + kk;
        std::uint16_t v = 0;
        if (gk < t.k_lim) {
          if constexpr (MODE == GgMode::kFwdSwiglu) {
            bool valid = false;
            const std::int64_t wrow = swiglu_w_row<kSimpleWN>(nl, t.n0, p.n / 2, &valid);
            if (valid) v = p.b[(static_cast<std::int64_t>(t.e) * p.n + wrow) * p.k + gk];
          } else {
            const std::int64_t gn = t.n0 + nl;
            if (gn < t.n_lim) {
              if constexpr (MODE == GgMode::kFwd) {
                v = p.b[(static_cast<std::int64_t>(t.e) * p.n + gn) * p.k + gk];
              } else if constexpr (MODE == GgMode::kBwdData) {
                v = p.b[(static_cast<std::int64_t>(t.e) * p.n + gk) * p.k + gn];
              } else {
                v = p.b[(t.row0 + gk) * p.k + gn];
              }
            }
          }
        }
        Bs[nl][kk] = v;
      }
      __syncthreads();
#pragma unroll
      for (int ks = 0; ks < kSimpleBK; ks += 16) {
        std::uint32_t af[2][4];
        std::uint32_t bfr[4][2];
#pragma unroll
        for (int mi = 0; mi < 2; ++mi) {
          const int r = warp_m * 32 + mi * 16 + g;
          af[mi][0] = *reinterpret_cast<const std::uint32_t*>(&As[r][ks + 2 * tq]);
          af[mi][1] = *reinterpret_cast<const std::uint32_t*>(&As[r + 8][ks + 2 * tq]);
          af[mi][2] = *reinterpret_cast<const std::uint32_t*>(&As[r][ks + 2 * tq + 8]);
          af[mi][3] = *reinterpret_cast<const std::uint32_t*>(&As[r + 8][ks + 2 * tq + 8]);
        }
#pragma unroll
        for (int ni = 0; ni < 4; ++ni) {
          const int c = warp_n * 32 + ni * 8 + g;
          bfr[ni][0] = *reinterpret_cast<const std::uint32_t*>(&Bs[c][ks + 2 * tq]);
          bfr[ni][1] = *reinterpret_cast<const std::uint32_t*>(&Bs[c][ks + 2 * tq + 8]);
        }
#pragma unroll
        for (int mi = 0; mi < 2; ++mi)
#pragma unroll
          for (int ni = 0; ni < 4; ++ni) mma_bf16_16816(acc[mi][ni], af[mi], bfr[ni]);
      }
      __syncthreads();
    }

    // Epilogue: fragment (mi, ni) element c sits at row g (+8 for c >= 2), column 2*tq + (c & 1).
#pragma unroll
    for (int mi = 0; mi < 2; ++mi) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int m_local = warp_m * 32 + mi * 16 + g + half * 8;
        if constexpr (MODE == GgMode::kFwdSwiglu) {
#pragma unroll
          for (int ni = 0; ni < 2; ++ni) {  // gate fragments 0, 1 pair with up fragments 2, 3
            const int j_local = warp_n * (kSimpleWN / 2) + ni * 8 + 2 * tq;
            store_pair<MODE, OutT>(p, t, m_local, j_local, acc[mi][ni][2 * half], acc[mi][ni][2 * half + 1],
                                   acc[mi][ni + 2][2 * half], acc[mi][ni + 2][2 * half + 1]);
          }
        } else {
#pragma unroll
          for (int ni = 0; ni < 4; ++ni) {
            const int n_local = warp_n * 32 + ni * 8 + 2 * tq;
            store_pair<MODE, OutT>(p, t, m_local, n_local, acc[mi][ni][2 * half], acc[mi][ni][2 * half + 1], 0.0f,
                                   0.0f);
          }
        }
      }
    }
  }
}

// ---- the tuned kernel: 128x128x32 tiles, 8 warps of 64x32, cp.async 4-stage pipeline, ldmatrix,
// two blocks per SM (<= 128 registers, 2 x 67 KB shared memory) --------------------------------------
//
// Shared memory per stage: A and B tiles of 8 KB each, in one of two layouts:
//   K-major  [128 rows][32 k]  (64-byte rows of four 16-byte chunks; chunk c of row r is stored at
//            chunk c ^ ((r >> 1) & 3), so the 8 rows read by one ldmatrix phase hit 8 distinct bank groups)
//   MN-major [32 k][128 rows]  (256-byte k-rows of sixteen chunks; chunk c of k-row kr is stored at
//            c ^ (kr & 7), for the same reason with ldmatrix.trans)
// Global -> shared copies are 16-byte cp.async (zero-filled outside the problem), which needs 16-byte
// aligned bases and n, k multiples of 8: the launcher checks that and uses the simple kernel otherwise.
// Fragments: ldmatrix.x4 (K-major) or ldmatrix.x4.trans (MN-major) give exactly the m16n8k16 A/B
// register layouts (see the comments at the loads).

constexpr int kTunedBM = 128;
constexpr int kTunedBN = 128;
constexpr int kTunedBK = 32;
constexpr int kTunedStages = 4;
constexpr int kTunedThreads = 256;
constexpr int kTunedWN = 32;  // warp tile 64 x 32; warps 2 (M) x 4 (N)
constexpr int kTunedTileBytes = kTunedBM * kTunedBK * 2;  // 8 KB (BM == BN)
constexpr int kTunedStageBytes = 2 * kTunedTileBytes;
constexpr int kTunedSmemBytes = kTunedStages * kTunedStageBytes;  // 64 KB, dynamic

__device__ __forceinline__ void cp_async_16(std::uint32_t dst, const void* src, bool valid) {
  const int src_bytes = valid ? 16 : 0;  // 0: no global read, the 16 bytes are zero-filled
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes) : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory"); }

__device__ __forceinline__ void ldmatrix_x4(std::uint32_t (&r)[4], std::uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr) : "memory");
}
__device__ __forceinline__ void ldmatrix_x4_trans(std::uint32_t (&r)[4], std::uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr) : "memory");
}

// Byte offsets inside a tile.
__device__ __forceinline__ std::uint32_t kmajor_offset(int row, int chunk) {
  return static_cast<std::uint32_t>(row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4));
}
__device__ __forceinline__ std::uint32_t mnmajor_offset(int krow, int chunk) {
  return static_cast<std::uint32_t>(krow * 256 + ((chunk ^ (krow & 7)) << 4));
}

// Issues the cp.async copies of reduction tile `kt` into the stage at shared address `stage`.
template <GgMode MODE>
__device__ __forceinline__ void tuned_load_stage(const GgParams& p, const TileInfo& t, std::int64_t kt,
                                                 std::uint32_t stage) {
  constexpr bool kAKMajor = MODE != GgMode::kBwdWeight;
  constexpr bool kBKMajor = MODE == GgMode::kFwd || MODE == GgMode::kFwdSwiglu;
  const std::int64_t k0 = kt * kTunedBK;
  const std::uint32_t a_tile = stage;
  const std::uint32_t b_tile = stage + kTunedTileBytes;
#pragma unroll
  for (int it = 0; it < 2; ++it) {  // 512 chunks of 16 bytes per operand, 2 per thread
    const int i = threadIdx.x + it * kTunedThreads;
    // ---- A
    if constexpr (kAKMajor) {  // A(m, kk) = a[(row0 + m) * lda + kk]
      const int row = i >> 2, chunk = i & 3;
      const std::int64_t gm = t.m0 + row, gk = k0 + chunk * 8;
      const bool valid = gm < t.m_lim && gk < t.k_lim;
      const std::int64_t lda = MODE == GgMode::kBwdData ? p.n : p.k;
      const std::uint16_t* src = valid ? p.a + (t.row0 + gm) * lda + gk : p.a;
      cp_async_16(a_tile + kmajor_offset(row, chunk), src, valid);
    } else {  // bwd_weight: A(m, kk) = dout[(row0 + kk) * n + m]
      const int krow = i >> 4, chunk = i & 15;
      const std::int64_t gk = k0 + krow, gm = t.m0 + chunk * 8;
      const bool valid = gk < t.k_lim && gm < t.m_lim;
      const std::uint16_t* src = valid ? p.a + (t.row0 + gk) * p.n + gm : p.a;
      cp_async_16(a_tile + mnmajor_offset(krow, chunk), src, valid);
    }
    // ---- B
    if constexpr (kBKMajor) {  // B(n, kk) = w[e][wrow(n)][kk]
      const int row = i >> 2, chunk = i & 3;
      const std::int64_t gk = k0 + chunk * 8;
      bool valid = false;
      std::int64_t wrow = 0;
      if constexpr (MODE == GgMode::kFwdSwiglu) {
        wrow = swiglu_w_row<kTunedWN>(row, t.n0, p.n / 2, &valid);
      } else {
        wrow = t.n0 + row;
        valid = wrow < t.n_lim;
      }
      valid = valid && gk < t.k_lim;
      const std::uint16_t* src = valid ? p.b + (static_cast<std::int64_t>(t.e) * p.n + wrow) * p.k + gk : p.b;
      cp_async_16(b_tile + kmajor_offset(row, chunk), src, valid);
    } else {
      const int krow = i >> 4, chunk = i & 15;
      const std::int64_t gk = k0 + krow, gn = t.n0 + chunk * 8;
      const bool valid = gk < t.k_lim && gn < t.n_lim;
      const std::uint16_t* src = p.b;
      if (valid) {
        if constexpr (MODE == GgMode::kBwdData) {  // B(n, kk) = w[e][kk][n]
          src = p.b + (static_cast<std::int64_t>(t.e) * p.n + gk) * p.k + gn;
        } else {  // bwd_weight: B(n, kk) = in[(row0 + kk) * k + n]
          src = p.b + (t.row0 + gk) * p.k + gn;
        }
      }
      cp_async_16(b_tile + mnmajor_offset(krow, chunk), src, valid);
    }
  }
}

template <GgMode MODE, typename OutT>
__global__ void __launch_bounds__(kTunedThreads, 2)
gg_tuned_kernel(const GgParams p) {
  constexpr bool kAKMajor = MODE != GgMode::kBwdWeight;
  constexpr bool kBKMajor = MODE == GgMode::kFwd || MODE == GgMode::kFwdSwiglu;
  __shared__ Schedule sched;
  extern __shared__ __align__(128) unsigned char tuned_smem[];
  build_schedule<MODE, kTunedBM, kTunedBN>(p, sched);
  const std::int64_t total = sched.tile_prefix[p.num_experts];
  const std::uint32_t smem_base = static_cast<std::uint32_t>(__cvta_generic_to_shared(tuned_smem));

  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int warp_m = warp / 4;  // 0..1: rows warp_m * 64
  const int warp_n = warp % 4;  // 0..3: cols warp_n * 32
  const int g = lane / 4;
  const int tq = lane % 4;
  const int mat = lane >> 3;    // which 8x8 matrix of an x4 ldmatrix this lane addresses

  for (std::int64_t tile = blockIdx.x; tile < total; tile += gridDim.x) {
    const TileInfo t = tile_info<MODE, kTunedBM, kTunedBN>(p, sched, tile);
    const std::int64_t k_tiles = (t.k_lim + kTunedBK - 1) / kTunedBK;
    float acc[4][4][4];
#pragma unroll
    for (int mi = 0; mi < 4; ++mi)
#pragma unroll
      for (int ni = 0; ni < 4; ++ni)
#pragma unroll
        for (int c = 0; c < 4; ++c) acc[mi][ni][c] = 0.0f;

    // Prologue: the first STAGES - 1 reduction tiles in flight (one commit group each, empty or not).
#pragma unroll
    for (int s = 0; s < kTunedStages - 1; ++s) {
      if (s < k_tiles) tuned_load_stage<MODE>(p, t, s, smem_base + s * kTunedStageBytes);
      cp_async_commit();
    }
    for (std::int64_t kt = 0; kt < k_tiles; ++kt) {
      cp_async_wait<kTunedStages - 2>();  // tile kt has landed (for this thread) ...
      __syncthreads();                    // ... for every thread, and stage (kt - 1) is no longer read
      const std::int64_t next = kt + kTunedStages - 1;
      if (next < k_tiles) {
        tuned_load_stage<MODE>(p, t, next, smem_base + static_cast<std::uint32_t>(next % kTunedStages) * kTunedStageBytes);
      }
      cp_async_commit();
      const std::uint32_t a_tile = smem_base + static_cast<std::uint32_t>(kt % kTunedStages) * kTunedStageBytes;
      const std::uint32_t b_tile = a_tile + kTunedTileBytes;
#pragma unroll
      for (int ks = 0; ks < kTunedBK; ks += 16) {
        std::uint32_t af[4][4];
        std::uint32_t bfr[4][2];
#pragma unroll
        for (int mi = 0; mi < 4; ++mi) {
          const int m_base = warp_m * 64 + mi * 16;
          if constexpr (kAKMajor) {
            // matrices: 0 rows 0-7 k 0-7 (a0), 1 rows 8-15 k 0-7 (a1), 2 rows 0-7 k 8-15 (a2), 3 rows 8-15 k 8-15 (a3)
            const int row = m_base + (lane & 15);
            ldmatrix_x4(af[mi], a_tile + kmajor_offset(row, (ks >> 3) + (lane >> 4)));
          } else {
            // stored [k][m]; .trans hands thread (g, tq) the elements (m = g, k = 2 tq, 2 tq + 1): the A layout.
            // matrices: 0 k 0-7 m 0-7 (a0), 1 k 0-7 m 8-15 (a1), 2 k 8-15 m 0-7 (a2), 3 k 8-15 m 8-15 (a3)
            const int krow = ks + (lane & 7) + ((mat >> 1) << 3);
            ldmatrix_x4_trans(af[mi], a_tile + mnmajor_offset(krow, (m_base >> 3) + (mat & 1)));
          }
        }
#pragma unroll
        for (int nj = 0; nj < 4; nj += 2) {
          const int n_base = warp_n * kTunedWN + nj * 8;
          std::uint32_t r[4];
          if constexpr (kBKMajor) {
            // matrices: 0 n 0-7 k 0-7 (b[nj][0]), 1 n 0-7 k 8-15 (b[nj][1]), 2 n 8-15 k 0-7, 3 n 8-15 k 8-15
            const int row = n_base + (lane & 7) + ((mat >> 1) << 3);
            ldmatrix_x4(r, b_tile + kmajor_offset(row, (ks >> 3) + (mat & 1)));
          } else {
            // stored [k][n]; .trans gives (k = 2 tq, 2 tq + 1; n = g): the B layout.
            // matrices: 0 k 0-7 n 0-7, 1 k 8-15 n 0-7, 2 k 0-7 n 8-15, 3 k 8-15 n 8-15
            const int krow = ks + (lane & 7) + ((mat & 1) << 3);
            ldmatrix_x4_trans(r, b_tile + mnmajor_offset(krow, (n_base >> 3) + (mat >> 1)));
          }
          bfr[nj][0] = r[0];
          bfr[nj][1] = r[1];
          bfr[nj + 1][0] = r[2];
          bfr[nj + 1][1] = r[3];
        }
#pragma unroll
        for (int mi = 0; mi < 4; ++mi)
#pragma unroll
          for (int ni = 0; ni < 4; ++ni) mma_bf16_16816(acc[mi][ni], af[mi], bfr[ni]);
      }
    }
    cp_async_wait<0>();
    __syncthreads();  // every warp is done with the stages before the next tile's prologue refills them

#pragma unroll
    for (int mi = 0; mi < 4; ++mi) {
#pragma unroll
      for (int half = 0; half < 2; ++half) {
        const int m_local = warp_m * 64 + mi * 16 + g + half * 8;
        if constexpr (MODE == GgMode::kFwdSwiglu) {
#pragma unroll
          for (int ni = 0; ni < 2; ++ni) {  // gate fragments 0, 1 pair with up fragments 2, 3
            const int j_local = warp_n * (kTunedWN / 2) + ni * 8 + 2 * tq;
            store_pair<MODE, OutT>(p, t, m_local, j_local, acc[mi][ni][2 * half], acc[mi][ni][2 * half + 1],
                                   acc[mi][ni + 2][2 * half], acc[mi][ni + 2][2 * half + 1]);
          }
        } else {
#pragma unroll
          for (int ni = 0; ni < 4; ++ni) {
            const int n_local = warp_n * kTunedWN + ni * 8 + 2 * tq;
            store_pair<MODE, OutT>(p, t, m_local, n_local, acc[mi][ni][2 * half], acc[mi][ni][2 * half + 1], 0.0f,
                                   0.0f);
          }
        }
      }
    }
  }
}

// ---- the sm_90a kernel (JK_GROUPED_GEMM_WGMMA): TMA loads, an mbarrier ring, wgmma ----------------------
//
// Every mode. One CTA per SM (persistent, the same tile schedule as above), 3 warpgroups: warpgroup 0
// is the producer (one thread issues the TMA loads of each 64-deep reduction tile into a 4-stage ring),
// warpgroups 1 and 2 the consumers (64 tile rows each, wgmma.m64n256k16 with both operands from shared
// memory, fp32 accumulators in 128 registers per thread). Shared tiles are in the 128-byte swizzle
// that TMA writes and wgmma reads (16-byte chunk c of a 128-byte row r stored at chunk c ^ (r & 7),
// 1024-byte aligned atoms of 8 rows), as 128-byte rows of either
//   K-major  operands (fwd, swiglu: A and B; bwd_data: A): one row per tile row, 64 reduction elements;
//            A one box of 128 rows, B one box of 256 rows (SwiGLU: the 128 gate rows, then the 128
//            matching up rows, so column j and 128 + j of a thread's accumulators pair up);
//   MN-major operands (bwd_data: B = W[e] read along its rows; bwd_weight: A = dout, B = in): one row
//            per reduction index, 64 tile rows/columns; boxes of 64 x 64 side by side (8 KB apart),
//            read by wgmma with the transpose bit.
// full[s]: the producer's expect_tx + the TMA bytes complete it; empty[s]: the 256 consumer threads
// arrive once their wgmmas that read stage s have completed (wgmma.wait_group), then the producer
// refills it. Tile rows past an expert's end (the next expert's rows) and B rows past the tile's
// columns are loaded and discarded by the epilogue's clip (store_pair); TMA zero-fills past the
// tensors' ends, so partial tiles add zeros, except where the reduction runs over an expert's rows
// (bwd_weight: the next expert's rows follow), where the consumers zero those rows of their A box
// before the last wgmmas. Where the reduction runs over W's rows (bwd_data) the rows past n are the
// next expert's, but A (dout) is zero-filled there. Needs 16-byte aligned bases, the TMA row strides
// (k, and n for the backward modes) multiples of 8, an sm_90 device and sm_90a code; the dispatcher
// checks and otherwise runs the MMA kernel.

constexpr int kWgBM = 128;
constexpr int kWgBN = 256;
constexpr int kWgBK = 64;  // 128 bytes of bf16: one swizzle row
constexpr int kWgStages = 4;
constexpr int kWgThreads = 384;
constexpr int kWgATileBytes = kWgBM * kWgBK * 2;                          // 16 KB
constexpr int kWgBTileBytes = kWgBN * kWgBK * 2;                          // 32 KB
constexpr int kWgStageBytes = kWgATileBytes + kWgBTileBytes;              // 48 KB
// Dynamic shared memory: up to 1023 bytes of slack to align the ring to 1024, the ring, then the
// 2 x kWgStages mbarriers (8 bytes each).
constexpr int kWgSmemBytes = 1024 + kWgStages * kWgStageBytes + 2 * kWgStages * 8;


template <GgMode MODE, typename OutT>
__global__ void __launch_bounds__(kWgThreads, 1)
gg_wgmma_kernel(const __grid_constant__ CUtensorMap map_a, const __grid_constant__ CUtensorMap map_b, const GgParams p) {
  constexpr bool kATrans = MODE == GgMode::kBwdWeight;                            // A MN-major
  constexpr bool kBTrans = MODE == GgMode::kBwdData || MODE == GgMode::kBwdWeight;  // B MN-major
  constexpr int kBox = 64 * 128;  // bytes of one 64 x 64 MN-major box
#ifdef JK_WGMMA_UNAVAILABLE
  __trap();
#else
  __shared__ Schedule sched;
  extern __shared__ __align__(128) unsigned char wg_smem[];
  build_schedule<MODE, kWgBM, kWgBN>(p, sched);
  const std::int64_t total = sched.tile_prefix[p.num_experts];
  const std::uint32_t smem = swizzle_aligned(wg_smem);
  const std::uint32_t full0 = smem + kWgStages * kWgStageBytes;  // full[s] at full0 + 8 s
  const std::uint32_t empty0 = full0 + kWgStages * 8;             // empty[s] at empty0 + 8 s
  init_ring_barriers(full0, kWgStages, kWgThreads - 128);         // released by every consumer thread
  __syncthreads();
  const int warpgroup = threadIdx.x / 128;

  if (warpgroup == 0) {
    // ---- producer: one thread walks the CTA's tiles and reduction tiles and keeps the ring full
    if (threadIdx.x != 0) return;
    int stage = 0;
    std::uint32_t phase = 0;
    for (std::int64_t tile = blockIdx.x; tile < total; tile += gridDim.x) {
      const TileInfo t = tile_info<MODE, kWgBM, kWgBN>(p, sched, tile);
      const int k_tiles = static_cast<int>((t.k_lim + kWgBK - 1) / kWgBK);
      const std::int64_t w_rows = static_cast<std::int64_t>(t.e) * p.n;  // W[e]'s first row in [E * n, k]
      for (int kt = 0; kt < k_tiles; ++kt) {
        mbar_wait(empty0 + 8 * stage, phase ^ 1u);  // the consumers have released this stage
        const std::uint32_t full = full0 + 8 * stage;
        const std::uint32_t a_tile = smem + static_cast<std::uint32_t>(stage * kWgStageBytes);
        const std::uint32_t b_tile = a_tile + kWgATileBytes;
        const int k0 = kt * kWgBK;
        mbar_arrive_expect_tx(full, kWgStageBytes);  // TMA counts whole boxes, zero-filled parts included
        if constexpr (kATrans) {  // dout[row0 + k0 .., m0 + 64 h ..]
          for (int h = 0; h < 2; ++h)
            tma_load_2d(a_tile + h * kBox, &map_a, static_cast<int>(t.m0) + 64 * h, static_cast<int>(t.row0) + k0, full);
        } else {  // in / dout rows of the expert
          tma_load_2d(a_tile, &map_a, k0, static_cast<int>(t.row0 + t.m0), full);
        }
        if constexpr (MODE == GgMode::kFwdSwiglu) {
          const int gate_row = static_cast<int>(w_rows + t.n0);
          tma_load_2d(b_tile, &map_b, k0, gate_row, full);
          tma_load_2d(b_tile + kWgBTileBytes / 2, &map_b, k0, static_cast<int>(gate_row + p.n / 2), full);
        } else if constexpr (MODE == GgMode::kFwd) {
          tma_load_2d(b_tile, &map_b, k0, static_cast<int>(w_rows + t.n0), full);
        } else {  // bwd_data: W[e] rows k0 .. (the reduction), bwd_weight: in rows row0 + k0 ..
          const int row = static_cast<int>(MODE == GgMode::kBwdData ? w_rows + k0 : t.row0 + k0);
          for (int h = 0; h < 4; ++h) tma_load_2d(b_tile + h * kBox, &map_b, static_cast<int>(t.n0) + 64 * h, row, full);
        }
        if (++stage == kWgStages) stage = 0, phase ^= 1u;
      }
    }
    return;
  }

  // ---- consumers: warpgroup 1 takes tile rows 0-63, warpgroup 2 rows 64-127 (its own half of A:
  // 64 K-major rows, or the second MN-major box, 8 KB further either way)
  const int c = warpgroup - 1;
  const int wt = threadIdx.x % 128;
  const int w = wt / 32, lane = wt % 32;
  const int g = lane / 4, tq = lane % 4;
  // The generic pointer of the aligned ring (bwd_weight writes zeros into it).
  unsigned char* const ring = wg_smem + (smem - static_cast<std::uint32_t>(__cvta_generic_to_shared(wg_smem)));
  int stage = 0;
  std::uint32_t phase = 0;
  float acc[128];
  for (std::int64_t tile = blockIdx.x; tile < total; tile += gridDim.x) {
    const TileInfo t = tile_info<MODE, kWgBM, kWgBN>(p, sched, tile);
    const int k_tiles = static_cast<int>((t.k_lim + kWgBK - 1) / kWgBK);
#pragma unroll
    for (int i = 0; i < 128; ++i) {
      acc[i] = 0.0f;
      fence_operand(acc[i]);
    }
    int prev_stage = -1;
    for (int kt = 0; kt < k_tiles; ++kt) {
      mbar_wait(full0 + 8 * stage, phase);
      const std::uint32_t a_tile = smem + static_cast<std::uint32_t>(stage * kWgStageBytes) + c * (kWgATileBytes / 2);
      const std::uint32_t b_tile = smem + static_cast<std::uint32_t>(stage * kWgStageBytes) + kWgATileBytes;
      if constexpr (MODE == GgMode::kBwdWeight) {
        // The last reduction tile of an expert whose rows end inside it: the rows after the end belong
        // to the next expert; zero them in this warpgroup's A box (whole 128-byte rows: the swizzle
        // only permutes chunks within a row), then hand the writes to the async proxy.
        const int valid = static_cast<int>(t.k_lim - static_cast<std::int64_t>(kt) * kWgBK);
        if (valid < kWgBK) {
          unsigned char* box = ring + (a_tile - smem);
          for (int i = wt; i < (kWgBK - valid) * 8; i += 128)
            *reinterpret_cast<uint4*>(box + valid * 128 + 16 * i) = make_uint4(0u, 0u, 0u, 0u);
          fence_proxy_async();
          named_barrier_sync(1 + c, 128);
        }
      }
      wgmma_fence();
#pragma unroll
      for (int ks = 0; ks < kWgBK / 16; ++ks) {
        // k16 steps: K-major +32 bytes inside the swizzled 128-byte rows, MN-major +16 rows (2 KB)
        const std::uint32_t a_step = kATrans ? 2048 * ks : 32 * ks;
        const std::uint32_t b_step = kBTrans ? 2048 * ks : 32 * ks;
        wgmma_ss_m64n256k16<kATrans, kBTrans>(acc, wgmma_desc_sw128(a_tile + a_step, kATrans ? kBox : 16),
                                               wgmma_desc_sw128(b_tile + b_step, kBTrans ? kBox : 16));
      }
      wgmma_commit();
      wgmma_wait<1>();  // the previous reduction tile's wgmmas are done: release its stage
      if (prev_stage >= 0) mbar_arrive(empty0 + 8 * prev_stage);
      prev_stage = stage;
      if (++stage == kWgStages) stage = 0, phase ^= 1u;
    }
    wgmma_wait<0>();
#pragma unroll
    for (int i = 0; i < 128; ++i) fence_operand(acc[i]);
    if (prev_stage >= 0) mbar_arrive(empty0 + 8 * prev_stage);

    // Epilogue from the registers (SwiGLU: column j < 128 is gate column n0 + j, column 128 + j its up
    // column, held by the same thread in acc[i] and acc[i + 64]).
#pragma unroll
    for (int i = 0; i < (MODE == GgMode::kFwdSwiglu ? 64 : 128); i += 2) {
      const int m_local = c * 64 + 16 * w + g + 8 * ((i / 2) % 2);
      const int n_local = 8 * (i / 4) + 2 * tq;
      if constexpr (MODE == GgMode::kFwdSwiglu) {
        store_pair<MODE, OutT>(p, t, m_local, n_local, acc[i], acc[i + 1], acc[i + 64], acc[i + 65]);
      } else {
        store_pair<MODE, OutT>(p, t, m_local, n_local, acc[i], acc[i + 1], 0.0f, 0.0f);
      }
    }
  }
#endif
}

// ---- launch helpers -------------------------------------------------------------------------------

// An upper bound of the tile count that needs no look at the device offsets.
std::int64_t tile_upper_bound(GgMode mode, const GgParams& p, int bm, int bn) {
  const auto cdiv = [](std::int64_t a, std::int64_t b) { return (a + b - 1) / b; };
  switch (mode) {
    case GgMode::kFwd: return (cdiv(p.rows, bm) + p.num_experts) * cdiv(p.n, bn);
    case GgMode::kFwdSwiglu: return (cdiv(p.rows, bm) + p.num_experts) * cdiv(p.n / 2, bn / 2);
    case GgMode::kBwdData: return (cdiv(p.rows, bm) + p.num_experts) * cdiv(p.k, bn);
    case GgMode::kBwdWeight: return p.num_experts * cdiv(p.n, bm) * cdiv(p.k, bn);
  }
  return 0;
}

template <GgMode MODE, typename OutT>
cudaError_t launch_simple(const GgParams& p, cudaStream_t stream) {
  int sms = 0;
  JK_RETURN_IF_ERROR(multiprocessor_count(&sms));
  const std::int64_t bound = tile_upper_bound(MODE, p, kSimpleBM, kSimpleBN);
  if (bound == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>(std::min<std::int64_t>(bound, static_cast<std::int64_t>(sms) * 4));
  gg_simple_kernel<MODE, OutT><<<blocks, kSimpleThreads, 0, stream>>>(p);
  return cudaGetLastError();
}

// ---- standalone SwiGLU ----------------------------------------------------------------------------

constexpr int kEltThreads = 256;

// VEC consecutive columns j per thread: 16-byte loads and stores when VEC = 8 (f a multiple of 8 and
// every pointer 16-byte aligned), element by element otherwise.
template <int VEC>
__global__ void __launch_bounds__(kEltThreads)
swiglu_fwd_kernel(const std::uint16_t* __restrict__ z, std::uint16_t* __restrict__ h, std::int64_t rows, std::int64_t f) {
  using V = Pack<std::uint16_t, VEC>;
  const std::int64_t per_row = f / VEC;
  const std::int64_t total = rows * per_row;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / per_row;
    const std::int64_t j = (i - r * per_row) * VEC;
    const V a = *reinterpret_cast<const V*>(z + r * 2 * f + j);
    const V b = *reinterpret_cast<const V*>(z + r * 2 * f + f + j);
    V out;
#pragma unroll
    for (int q = 0; q < VEC; ++q) out.v[q] = swiglu_bits(bf16_bits_to_float(a.v[q]), bf16_bits_to_float(b.v[q]));
    *reinterpret_cast<V*>(h + r * f + j) = out;
  }
}

template <int VEC>
__global__ void __launch_bounds__(kEltThreads)
swiglu_bwd_kernel(const std::uint16_t* __restrict__ z, const std::uint16_t* __restrict__ dh,
                  std::uint16_t* __restrict__ dz, std::int64_t rows, std::int64_t f) {
  using V = Pack<std::uint16_t, VEC>;
  const std::int64_t per_row = f / VEC;
  const std::int64_t total = rows * per_row;
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < total;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    const std::int64_t r = i / per_row;
    const std::int64_t j = (i - r * per_row) * VEC;
    const V av = *reinterpret_cast<const V*>(z + r * 2 * f + j);
    const V bv = *reinterpret_cast<const V*>(z + r * 2 * f + f + j);
    const V gv = *reinterpret_cast<const V*>(dh + r * f + j);
    V da, db;
#pragma unroll
    for (int q = 0; q < VEC; ++q) {
      const float a = bf16_bits_to_float(av.v[q]);
      const float b = bf16_bits_to_float(bv.v[q]);
      const float g = bf16_bits_to_float(gv.v[q]);
      const float e = expf(-a);
      const float s = bf16_round(a / (1.0f + e));  // the saved forward output, as the forward computes it
      const float sig = 1.0f / (1.0f + e);
      const float ds = bf16_round(g * b);          // grad of silu's output (bf16 mul backward)
      da.v[q] = float_to_bf16_bits(ds * sig * (1.0f + a * (1.0f - sig)));
      db.v[q] = float_to_bf16_bits(g * s);
    }
    *reinterpret_cast<V*>(dz + r * 2 * f + j) = da;
    *reinterpret_cast<V*>(dz + r * 2 * f + f + j) = db;
  }
}

unsigned elementwise_blocks(std::int64_t total, int sms) {
  const std::int64_t want = (total + kEltThreads - 1) / kEltThreads;
  return static_cast<unsigned>(std::max<std::int64_t>(1, std::min<std::int64_t>(want, static_cast<std::int64_t>(sms) * 16)));
}

cudaError_t launch_swiglu_fwd(const std::uint16_t* z, std::uint16_t* h, std::int64_t rows, std::int64_t f,
                              cudaStream_t stream) {
  if (rows < 0 || f < 0) return cudaErrorInvalidValue;
  if (rows == 0 || f == 0) return cudaSuccess;
  if (z == nullptr || h == nullptr) return cudaErrorInvalidValue;
  int sms = 0;
  JK_RETURN_IF_ERROR(multiprocessor_count(&sms));
  if (f % 8 == 0 && is_aligned(z, 16) && is_aligned(h, 16)) {
    swiglu_fwd_kernel<8><<<elementwise_blocks(rows * f / 8, sms), kEltThreads, 0, stream>>>(z, h, rows, f);
  } else {
    swiglu_fwd_kernel<1><<<elementwise_blocks(rows * f, sms), kEltThreads, 0, stream>>>(z, h, rows, f);
  }
  return cudaGetLastError();
}

cudaError_t launch_swiglu_bwd(const std::uint16_t* z, const std::uint16_t* dh, std::uint16_t* dz, std::int64_t rows,
                              std::int64_t f, cudaStream_t stream) {
  if (rows < 0 || f < 0) return cudaErrorInvalidValue;
  if (rows == 0 || f == 0) return cudaSuccess;
  if (z == nullptr || dh == nullptr || dz == nullptr) return cudaErrorInvalidValue;
  int sms = 0;
  JK_RETURN_IF_ERROR(multiprocessor_count(&sms));
  if (f % 8 == 0 && is_aligned(z, 16) && is_aligned(dh, 16) && is_aligned(dz, 16)) {
    swiglu_bwd_kernel<8><<<elementwise_blocks(rows * f / 8, sms), kEltThreads, 0, stream>>>(z, dh, dz, rows, f);
  } else {
    swiglu_bwd_kernel<1><<<elementwise_blocks(rows * f, sms), kEltThreads, 0, stream>>>(z, dh, dz, rows, f);
  }
  return cudaGetLastError();
}

// ---- cuBLASLt baseline ------------------------------------------------------------------------------

cudaError_t lt_status(cublasStatus_t s) {
  switch (s) {
    case CUBLAS_STATUS_SUCCESS: return cudaSuccess;
    case CUBLAS_STATUS_INVALID_VALUE: return cudaErrorInvalidValue;
    case CUBLAS_STATUS_NOT_SUPPORTED: return cudaErrorNotSupported;
    case CUBLAS_STATUS_ALLOC_FAILED: return cudaErrorMemoryAllocation;
    case CUBLAS_STATUS_ARCH_MISMATCH: return cudaErrorNoKernelImageForDevice;
    default: return cudaErrorUnknown;
  }
}
#define JK_RETURN_IF_LT_ERROR(expr) JK_RETURN_IF_ERROR(lt_status(expr))

cudaError_t lt_handle(cublasLtHandle_t* out) {
  static std::once_flag once;
  static cublasLtHandle_t handle = nullptr;
  static cublasStatus_t status = CUBLAS_STATUS_SUCCESS;
  std::call_once(once, [] { status = cublasLtCreate(&handle); });
  *out = handle;
  return lt_status(status);
}

// RAII owners of the cuBLASLt descriptors.
struct LtDesc {
  cublasLtMatmulDesc_t d = nullptr;
  ~LtDesc() { if (d) cublasLtMatmulDescDestroy(d); }
};
struct LtLayout {
  cublasLtMatrixLayout_t l = nullptr;
  ~LtLayout() { if (l) cublasLtMatrixLayoutDestroy(l); }
};
struct LtPref {
  cublasLtMatmulPreference_t p = nullptr;
  ~LtPref() { if (p) cublasLtMatmulPreferenceDestroy(p); }
};

// Largest power of two <= 256 that divides both the address and the leading dimension in bytes.
std::uint32_t lt_alignment(const void* p, std::int64_t ld_bytes) {
  const std::uint64_t bits = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(p)) |
                             static_cast<std::uint64_t>(ld_bytes) | 256u;
  return static_cast<std::uint32_t>(bits & (~bits + 1));  // lowest set bit
}

// Column-major D[m x n] = op(A) op(B) + beta D, bf16 A and B, fp32 compute, D of type d_type.
// A is stored (opA == N ? m x kk : kk x m) with leading dimension lda; likewise B.
cudaError_t lt_gemm(cublasOperation_t op_a, cublasOperation_t op_b, std::int64_t m, std::int64_t n, std::int64_t kk,
                    const void* a, std::int64_t lda, const void* b, std::int64_t ldb, void* d, cudaDataType_t d_type,
                    std::int64_t ldd, float beta, cudaStream_t stream) {
  cublasLtHandle_t handle = nullptr;
  JK_RETURN_IF_ERROR(lt_handle(&handle));
  LtDesc desc;
  JK_RETURN_IF_LT_ERROR(cublasLtMatmulDescCreate(&desc.d, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  JK_RETURN_IF_LT_ERROR(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof(op_a)));
  JK_RETURN_IF_LT_ERROR(cublasLtMatmulDescSetAttribute(desc.d, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof(op_b)));
  LtLayout la, lb, ld;
  const bool na = op_a == CUBLAS_OP_N;
  const bool nb = op_b == CUBLAS_OP_N;
  JK_RETURN_IF_LT_ERROR(cublasLtMatrixLayoutCreate(&la.l, CUDA_R_16BF, na ? m : kk, na ? kk : m, lda));
  JK_RETURN_IF_LT_ERROR(cublasLtMatrixLayoutCreate(&lb.l, CUDA_R_16BF, nb ? kk : n, nb ? n : kk, ldb));
  JK_RETURN_IF_LT_ERROR(cublasLtMatrixLayoutCreate(&ld.l, d_type, m, n, ldd));
  LtPref pref;
  JK_RETURN_IF_LT_ERROR(cublasLtMatmulPreferenceCreate(&pref.p));
  const std::size_t no_workspace = 0;
  JK_RETURN_IF_LT_ERROR(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                                                             &no_workspace, sizeof(no_workspace)));
  // The heuristic assumes 256-byte aligned buffers unless told otherwise; the per-expert sub-matrices
  // (base + r0 * ld) and odd leading dimensions are often less aligned, and an algorithm chosen for
  // 256 bytes then fails (or is not allowed) at cublasLtMatmul. State the real alignment of each.
  const std::uint32_t align_a = lt_alignment(a, lda * 2);
  const std::uint32_t align_b = lt_alignment(b, ldb * 2);
  const std::uint32_t align_d = lt_alignment(d, ldd * (d_type == CUDA_R_32F ? 4 : 2));
  JK_RETURN_IF_LT_ERROR(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES,
                                                             &align_a, sizeof(align_a)));
  JK_RETURN_IF_LT_ERROR(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
                                                             &align_b, sizeof(align_b)));
  JK_RETURN_IF_LT_ERROR(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES,
                                                             &align_d, sizeof(align_d)));
  JK_RETURN_IF_LT_ERROR(cublasLtMatmulPreferenceSetAttribute(pref.p, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES,
                                                             &align_d, sizeof(align_d)));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  JK_RETURN_IF_LT_ERROR(
      cublasLtMatmulAlgoGetHeuristic(handle, desc.d, la.l, lb.l, ld.l, ld.l, pref.p, 1, &result, &found));
  if (found == 0) return cudaErrorNotSupported;
  const float alpha = 1.0f;
  JK_RETURN_IF_LT_ERROR(cublasLtMatmul(handle, desc.d, &alpha, a, la.l, b, lb.l, &beta, d, ld.l, d, ld.l,
                                       &result.algo, nullptr, 0, stream));
  return cudaSuccess;
}

bool host_offsets_valid(const std::int32_t* off, std::int64_t e_count, std::int64_t rows) {
  if (off == nullptr || off[0] != 0 || off[e_count] != rows) return false;
  for (std::int64_t e = 0; e < e_count; ++e) {
    if (off[e + 1] < off[e]) return false;
  }
  return true;
}

// ---- argument checks and dispatch ---------------------------------------------------------------------

bool valid_common(const std::int32_t* offsets_dev, const std::int32_t* offsets_host, std::int64_t rows,
                  std::int64_t num_experts, std::int64_t n, std::int64_t k, jk_grouped_gemm_algo_t algo) {
  if (rows < 0 || n < 0 || k < 0) return false;
  if (num_experts < 1 || num_experts > JK_GROUPED_GEMM_MAX_EXPERTS) return false;
  if (rows > INT32_MAX) return false;  // offsets are int32
  if (algo != JK_GROUPED_GEMM_AUTO && algo != JK_GROUPED_GEMM_SIMPLE && algo != JK_GROUPED_GEMM_MMA &&
      algo != JK_GROUPED_GEMM_CUBLASLT && algo != JK_GROUPED_GEMM_WGMMA) {
    return false;
  }
  if (algo == JK_GROUPED_GEMM_CUBLASLT) return host_offsets_valid(offsets_host, num_experts, rows);
  return offsets_dev != nullptr;
}

GgParams make_params(const void* a, const void* b, void* out, std::uint16_t* z, const std::int32_t* offsets,
                     std::int64_t rows, std::int64_t num_experts, std::int64_t n, std::int64_t k, float beta) {
  GgParams p;
  p.a = static_cast<const std::uint16_t*>(a);
  p.b = static_cast<const std::uint16_t*>(b);
  p.out = out;
  p.z = z;
  p.offsets = offsets;
  p.rows = rows;
  p.n = n;
  p.k = k;
  p.num_experts = static_cast<int>(num_experts);
  p.beta = beta;
  return p;
}

// Own kernels: the tuned path where its alignment needs hold, else the simple kernel.
template <GgMode MODE, typename OutT>
cudaError_t launch_tuned(const GgParams& p, cudaStream_t stream) {
  // Per call (a few microseconds): the attribute and the occupancy belong to the current device.
  JK_RETURN_IF_ERROR(cudaFuncSetAttribute(gg_tuned_kernel<MODE, OutT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          kTunedSmemBytes));
  int blocks_per_sm = 0;
  JK_RETURN_IF_ERROR(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks_per_sm, gg_tuned_kernel<MODE, OutT>,
                                                                   kTunedThreads, kTunedSmemBytes));
  blocks_per_sm = std::max(blocks_per_sm, 1);
  int sms = 0;
  JK_RETURN_IF_ERROR(multiprocessor_count(&sms));
  const std::int64_t bound = tile_upper_bound(MODE, p, kTunedBM, kTunedBN);
  if (bound == 0) return cudaSuccess;
  const unsigned blocks =
      static_cast<unsigned>(std::min<std::int64_t>(bound, static_cast<std::int64_t>(sms) * blocks_per_sm));
  gg_tuned_kernel<MODE, OutT><<<blocks, kTunedThreads, kTunedSmemBytes, stream>>>(p);
  return cudaGetLastError();
}

// The tuned kernel's cp.async copies need 16-byte aligned bases and rows (n, k multiples of 8).
bool tuned_path_ok(const GgParams& p) {
  return is_aligned(p.a, 16) && is_aligned(p.b, 16) && p.n % 8 == 0 && p.k % 8 == 0;
}

// ---- the wgmma kernel's host side -------------------------------------------------------------------------

// A row-major bf16 matrix [outer, inner] as a TMA map with boxes of box_outer rows x 64 elements.
cudaError_t make_tile_map(CUtensorMap* map, const std::uint16_t* base, std::int64_t inner, std::int64_t outer,
                          int box_outer) {
  const std::int64_t dims[2] = {inner, outer};
  const std::int64_t strides[1] = {inner * 2};
  const int box[2] = {kWgBK, box_outer};
  return make_bf16_map(map, base, 2, dims, strides, box);
}

// The wgmma kernel needs TMA-compatible operands (16-byte aligned bases, the mapped rows a multiple of
// 16 bytes: k, and n where dout is mapped; non-empty tensors; coordinates in int32) and an sm_90 device.
template <GgMode MODE>
cudaError_t wgmma_path_ok(const GgParams& p, bool* ok) {
  *ok = false;
  const bool fwd = MODE == GgMode::kFwd || MODE == GgMode::kFwdSwiglu;
  if (!is_aligned(p.a, 16) || !is_aligned(p.b, 16)) return cudaSuccess;
  if (p.k % 8 != 0 || p.k == 0 || p.rows == 0 || p.n == 0 || (!fwd && p.n % 8 != 0)) return cudaSuccess;
  if (static_cast<std::int64_t>(p.num_experts) * p.n > INT32_MAX || p.k > INT32_MAX) return cudaSuccess;
  return sm90a_available(ok);
}

// The kernel's maps (boxes in the kernel's comment): fwd/swiglu A = in [rows, k], B = W [E n, k];
// bwd_data A = dout [rows, n], B = W [E n, k] (64 x 64 MN-major boxes); bwd_weight A = dout [rows, n],
// B = in [rows, k] (both 64 x 64 MN-major boxes).
template <GgMode MODE, typename OutT>
cudaError_t launch_wgmma(const GgParams& p, cudaStream_t stream) {
  const bool fwd = MODE == GgMode::kFwd || MODE == GgMode::kFwdSwiglu;
  const std::int64_t a_inner = fwd ? p.k : p.n;                        // in, or dout
  const int a_box = MODE == GgMode::kBwdWeight ? kWgBK : kWgBM;         // MN-major 64 x 64 boxes, or 128 rows
  const std::int64_t b_outer = MODE == GgMode::kBwdWeight ? p.rows : static_cast<std::int64_t>(p.num_experts) * p.n;
  const int b_box = MODE == GgMode::kFwd ? kWgBN : MODE == GgMode::kFwdSwiglu ? kWgBN / 2 : kWgBK;
  CUtensorMap map_a, map_b;
  JK_RETURN_IF_ERROR(make_tile_map(&map_a, p.a, a_inner, p.rows, a_box));
  JK_RETURN_IF_ERROR(make_tile_map(&map_b, p.b, p.k, b_outer, b_box));
  JK_RETURN_IF_ERROR(cudaFuncSetAttribute(gg_wgmma_kernel<MODE, OutT>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          kWgSmemBytes));
  int sms = 0;
  JK_RETURN_IF_ERROR(multiprocessor_count(&sms));
  const std::int64_t bound = tile_upper_bound(MODE, p, kWgBM, kWgBN);
  if (bound == 0) return cudaSuccess;
  const unsigned blocks = static_cast<unsigned>(std::min<std::int64_t>(bound, sms));
  gg_wgmma_kernel<MODE, OutT><<<blocks, kWgThreads, kWgSmemBytes, stream>>>(map_a, map_b, p);
  return cudaGetLastError();
}

// Own kernels: WGMMA where asked for and its conditions hold, else the tuned path where its alignment
// needs hold, else the simple kernel.
template <GgMode MODE, typename OutT>
cudaError_t launch_own(const GgParams& p, jk_grouped_gemm_algo_t algo, cudaStream_t stream) {
  if (algo == JK_GROUPED_GEMM_WGMMA) {
    bool ok = false;
    JK_RETURN_IF_ERROR(wgmma_path_ok<MODE>(p, &ok));
    if (ok) return launch_wgmma<MODE, OutT>(p, stream);
  }
  if (algo != JK_GROUPED_GEMM_SIMPLE && tuned_path_ok(p)) return launch_tuned<MODE, OutT>(p, stream);
  return launch_simple<MODE, OutT>(p, stream);
}

}  // namespace
}  // namespace jk::detail

using namespace jk::detail;

const char* jk_grouped_gemm_algo_name(jk_grouped_gemm_algo_t algo) {
  switch (algo) {
    case JK_GROUPED_GEMM_AUTO: return "auto";
    case JK_GROUPED_GEMM_SIMPLE: return "simple";
    case JK_GROUPED_GEMM_MMA: return "mma";
    case JK_GROUPED_GEMM_CUBLASLT: return "cublaslt";
    case JK_GROUPED_GEMM_WGMMA: return "wgmma";
  }
  return "?";
}

namespace {

template <typename OutT>
cudaError_t grouped_fwd(const std::uint16_t* in, const std::uint16_t* w, OutT* out, const std::int32_t* offsets_dev,
                        const std::int32_t* offsets_host, std::int64_t rows, std::int64_t num_experts, std::int64_t n,
                        std::int64_t k, jk_grouped_gemm_algo_t algo, cudaStream_t stream) {
  if (!valid_common(offsets_dev, offsets_host, rows, num_experts, n, k, algo)) return cudaErrorInvalidValue;
  if (rows == 0 || n == 0) return cudaSuccess;
  if (out == nullptr || (k > 0 && (in == nullptr || w == nullptr))) return cudaErrorInvalidValue;
  if (algo == JK_GROUPED_GEMM_CUBLASLT) {
    if (k == 0) return cudaMemsetAsync(out, 0, static_cast<std::size_t>(rows * n) * sizeof(OutT), stream);
    const cudaDataType_t d_type = std::is_same_v<OutT, float> ? CUDA_R_32F : CUDA_R_16BF;
    for (std::int64_t e = 0; e < num_experts; ++e) {
      const std::int64_t r0 = offsets_host[e];
      const std::int64_t me = offsets_host[e + 1] - r0;
      if (me == 0) continue;
      // out_e^T (n x me) = W[e]^T-view (k x n, op T) * in_e^T-view (k x me)
      JK_RETURN_IF_ERROR(lt_gemm(CUBLAS_OP_T, CUBLAS_OP_N, n, me, k, w + e * n * k, k, in + r0 * k, k,
                                 out + r0 * n, d_type, n, 0.0f, stream));
    }
    return cudaSuccess;
  }
  const GgParams p = make_params(in, w, out, nullptr, offsets_dev, rows, num_experts, n, k, 0.0f);
  return launch_own<GgMode::kFwd, OutT>(p, algo, stream);
}

}  // namespace

cudaError_t jk_grouped_gemm_fwd_bf16(const std::uint16_t* in, const std::uint16_t* w, std::uint16_t* out,
                                     const std::int32_t* offsets_dev, const std::int32_t* offsets_host,
                                     std::int64_t rows, std::int64_t num_experts, std::int64_t n, std::int64_t k,
                                     jk_grouped_gemm_algo_t algo, cudaStream_t stream) {
  return grouped_fwd<std::uint16_t>(in, w, out, offsets_dev, offsets_host, rows, num_experts, n, k, algo, stream);
}

cudaError_t jk_grouped_gemm_fwd_f32out(const std::uint16_t* in, const std::uint16_t* w, float* out,
                                       const std::int32_t* offsets_dev, const std::int32_t* offsets_host,
                                       std::int64_t rows, std::int64_t num_experts, std::int64_t n, std::int64_t k,
                                       jk_grouped_gemm_algo_t algo, cudaStream_t stream) {
  return grouped_fwd<float>(in, w, out, offsets_dev, offsets_host, rows, num_experts, n, k, algo, stream);
}

cudaError_t jk_grouped_gemm_fc1_swiglu_bf16(const std::uint16_t* in, const std::uint16_t* w_in, std::uint16_t* h,
                                            std::uint16_t* z, const std::int32_t* offsets_dev,
                                            const std::int32_t* offsets_host, std::int64_t rows,
                                            std::int64_t num_experts, std::int64_t f, std::int64_t k,
                                            jk_grouped_gemm_algo_t algo, cudaStream_t stream) {
  if (f < 0 || f > INT64_MAX / 4) return cudaErrorInvalidValue;
  if (!valid_common(offsets_dev, offsets_host, rows, num_experts, 2 * f, k, algo)) return cudaErrorInvalidValue;
  if (rows == 0 || f == 0) return cudaSuccess;
  if (h == nullptr || (k > 0 && (in == nullptr || w_in == nullptr))) return cudaErrorInvalidValue;
  if (algo == JK_GROUPED_GEMM_CUBLASLT) {
    if (z == nullptr) return cudaErrorInvalidValue;  // the unfused path needs Z in memory
    JK_RETURN_IF_ERROR(grouped_fwd<std::uint16_t>(in, w_in, z, offsets_dev, offsets_host, rows, num_experts, 2 * f,
                                                  k, algo, stream));
    return launch_swiglu_fwd(z, h, rows, f, stream);
  }
  const GgParams p = make_params(in, w_in, h, z, offsets_dev, rows, num_experts, 2 * f, k, 0.0f);
  return launch_own<GgMode::kFwdSwiglu, std::uint16_t>(p, algo, stream);
}

cudaError_t jk_grouped_gemm_bwd_data_bf16(const std::uint16_t* dout, const std::uint16_t* w, std::uint16_t* din,
                                          const std::int32_t* offsets_dev, const std::int32_t* offsets_host,
                                          std::int64_t rows, std::int64_t num_experts, std::int64_t n, std::int64_t k,
                                          jk_grouped_gemm_algo_t algo, cudaStream_t stream) {
  if (!valid_common(offsets_dev, offsets_host, rows, num_experts, n, k, algo)) return cudaErrorInvalidValue;
  if (rows == 0 || k == 0) return cudaSuccess;
  if (din == nullptr || (n > 0 && (dout == nullptr || w == nullptr))) return cudaErrorInvalidValue;
  if (algo == JK_GROUPED_GEMM_CUBLASLT) {
    if (n == 0) return cudaMemsetAsync(din, 0, static_cast<std::size_t>(rows * k) * sizeof(std::uint16_t), stream);
    for (std::int64_t e = 0; e < num_experts; ++e) {
      const std::int64_t r0 = offsets_host[e];
      const std::int64_t me = offsets_host[e + 1] - r0;
      if (me == 0) continue;
      // din_e^T (k x me) = W[e]-view (k x n) * dout_e^T-view (n x me)
      JK_RETURN_IF_ERROR(lt_gemm(CUBLAS_OP_N, CUBLAS_OP_N, k, me, n, w + e * n * k, k, dout + r0 * n, n,
                                 din + r0 * k, CUDA_R_16BF, k, 0.0f, stream));
    }
    return cudaSuccess;
  }
  const GgParams p = make_params(dout, w, din, nullptr, offsets_dev, rows, num_experts, n, k, 0.0f);
  return launch_own<GgMode::kBwdData, std::uint16_t>(p, algo, stream);
}

cudaError_t jk_grouped_gemm_bwd_weight_f32(const std::uint16_t* dout, const std::uint16_t* in, float* dw, float beta,
                                           const std::int32_t* offsets_dev, const std::int32_t* offsets_host,
                                           std::int64_t rows, std::int64_t num_experts, std::int64_t n,
                                           std::int64_t k, jk_grouped_gemm_algo_t algo, cudaStream_t stream) {
  if (!valid_common(offsets_dev, offsets_host, rows, num_experts, n, k, algo)) return cudaErrorInvalidValue;
  if (beta != 0.0f && beta != 1.0f) return cudaErrorInvalidValue;
  if (n == 0 || k == 0) return cudaSuccess;
  if (dw == nullptr || (rows > 0 && (dout == nullptr || in == nullptr))) return cudaErrorInvalidValue;
  if (algo == JK_GROUPED_GEMM_CUBLASLT) {
    for (std::int64_t e = 0; e < num_experts; ++e) {
      const std::int64_t r0 = offsets_host[e];
      const std::int64_t me = offsets_host[e + 1] - r0;
      float* dw_e = dw + e * n * k;
      if (me == 0) {
        if (beta == 0.0f) JK_RETURN_IF_ERROR(cudaMemsetAsync(dw_e, 0, static_cast<std::size_t>(n * k) * sizeof(float), stream));
        continue;
      }
      // dW_e^T (k x n) = in_e^T-view (k x me) * (dout_e^T-view (n x me))^T
      JK_RETURN_IF_ERROR(lt_gemm(CUBLAS_OP_N, CUBLAS_OP_T, k, n, me, in + r0 * k, k, dout + r0 * n, n, dw_e,
                                 CUDA_R_32F, k, beta, stream));
    }
    return cudaSuccess;
  }
  const GgParams p = make_params(dout, in, dw, nullptr, offsets_dev, rows, num_experts, n, k, beta);
  return launch_own<GgMode::kBwdWeight, float>(p, algo, stream);
}

cudaError_t jk_swiglu_fwd_bf16(const std::uint16_t* z, std::uint16_t* h, std::int64_t rows, std::int64_t f,
                               cudaStream_t stream) {
  return launch_swiglu_fwd(z, h, rows, f, stream);
}

cudaError_t jk_swiglu_bwd_bf16(const std::uint16_t* z, const std::uint16_t* dh, std::uint16_t* dz, std::int64_t rows,
                               std::int64_t f, cudaStream_t stream) {
  return launch_swiglu_bwd(z, dh, dz, rows, f, stream);
}
