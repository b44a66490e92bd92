// Self-test of the CUDA emulation (run.sh selftest): CUDA-syntax kernels with known results under the
// CUDA/PTX rules the emulator claims to follow (warp shuffles with widths and masks, ballot, match,
// barriers, shared memory as garbage, launch checks, failure detection). Not a GPU program.
#include <cmath>
#include <cstdio>
#include <string>

namespace {
int failures = 0;
void expect(bool ok, const char* what) {
  std::printf("%s %s\n", ok ? "PASS" : "FAIL", what);
  failures += !ok;
}

__global__ void shuffles(int* out) {
  const int l = threadIdx.x % 32;
  float v = static_cast<float>(l);
  for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
  out[0 * 32 + l] = static_cast<int>(v);                          // 496 everywhere
  out[1 * 32 + l] = __shfl_down_sync(0xffffffffu, l, 1, 16);       // l+1, own value at the segment end
  out[2 * 32 + l] = __shfl_up_sync(0xffffffffu, l, 2);             // l-2, own value for lanes 0, 1
  out[3 * 32 + l] = __shfl_sync(0xffffffffu, l, 3, 8);             // lane 3 of each group of 8
  out[4 * 32 + l] = static_cast<int>(__ballot_sync(0xffffffffu, l % 3 == 0));
  out[5 * 32 + l] = static_cast<int>(__match_any_sync(0xffffffffu, l / 4));
  if (l < 16) {  // divergent halves, each with its own mask
    out[6 * 32 + l] = __shfl_xor_sync(0x0000ffffu, l, 1);
  } else {
    out[6 * 32 + l] = __shfl_xor_sync(0xffff0000u, l, 2) + 100;
  }
  out[7 * 32 + l] = __any_sync(0xffffffffu, l == 31) + 2 * __all_sync(0xffffffffu, l < 31);
}

__global__ void undefined_source(int* out) {
  const int l = threadIdx.x % 32;
  if (l < 16) out[l] = __shfl_xor_sync(0x0000ffffu, l, 16);  // source lanes 16..31 are not in the mask
}

__global__ void early_exit_then_barrier(int* out) {
  if (threadIdx.x >= 32) return;
  __syncthreads();  // UB: the exited threads never arrive
  out[threadIdx.x] = 1;
}

__global__ void exited_lane_in_mask(int* out) {
  if (threadIdx.x % 32 == 5) return;
  out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1, 1);  // lane 5 has exited: deadlock on a GPU
}

__global__ void shared_garbage(unsigned* out) {
  __shared__ unsigned s[64];
  out[threadIdx.x] = s[threadIdx.x];  // never written: the fill pattern
}

__global__ void missing_barrier(int* out) {
  __shared__ int s;
  if (threadIdx.x == 0) s = 42;
  // no __syncthreads here: a race
  out[threadIdx.x] = s;
}

__global__ void with_barrier(int* out) {
  __shared__ int s;
  if (threadIdx.x == 0) s = 42;
  __syncthreads();
  out[threadIdx.x] = s;
}

// ---- sm_90 asynchronous helpers (emu_sm90.hpp) ----

// A 2-slot ring: thread 0 produces 8 items, threads 32..63 consume each (full: count 1, empty: count 32).
__global__ void mbarrier_ring(int* out) {
  extern __shared__ int ring_smem[];
  const std::uint32_t base = __cvta_generic_to_shared(ring_smem);
  const std::uint32_t full = base + 64, empty = base + 80;  // 2 barriers each, 8 bytes apart
  if (threadIdx.x == 0) {
    for (int s = 0; s < 2; ++s) emu::mbar_init(full + 8 * s, 1), emu::mbar_init(empty + 8 * s, 32);
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int i = 0; i < 8; ++i) {
      const int s = i % 2;
      emu::mbar_wait(empty + 8 * s, ((i / 2) & 1) ^ 1);  // fresh: parity 1 passes at once
      ring_smem[s] = 10 * (i + 1);
      emu::mbar_arrive(full + 8 * s);
    }
  } else if (threadIdx.x >= 32) {
    int sum = 0;
    for (int i = 0; i < 8; ++i) {
      const int s = i % 2;
      emu::mbar_wait(full + 8 * s, (i / 2) & 1);
      sum += ring_smem[s];
      emu::mbar_arrive(empty + 8 * s);
    }
    out[threadIdx.x - 32] = sum;
  }
}

// Count 1 with 16 transaction bytes still expected: a second arrival in the same phase is one too many.
__global__ void mbarrier_overarrive(int* out) {
  extern __shared__ int over_smem[];
  const std::uint32_t bar = __cvta_generic_to_shared(over_smem);
  emu::mbar_init(bar, 1);
  emu::mbar_arrive_expect_tx(bar, 16);
  emu::mbar_arrive(bar);
  out[0] = 1;
}

__global__ void mbarrier_wrong_parity(int* out) {
  extern __shared__ int parity_smem[];
  const std::uint32_t bar = __cvta_generic_to_shared(parity_smem);
  if (threadIdx.x == 0) emu::mbar_init(bar, 32);
  __syncthreads();
  emu::mbar_arrive(bar);
  emu::mbar_wait(bar, 1);  // phase 0 completed; phase 1 (parity 1) never will
  out[threadIdx.x] = 1;
}

// TMA box (64 x 8 at (32, 5)) of a 10 x 72 bf16 tensor in the 128-byte swizzle, then wgmma.
__global__ void tma_box(const CUtensorMap map, std::uint16_t* out) {
  extern __shared__ __align__(128) unsigned char tma_smem[];
  const std::uint32_t base = __cvta_generic_to_shared(tma_smem);
  const std::uint32_t bar = base + 1024;
  emu::mbar_init(bar, 1);
  emu::mbar_arrive_expect_tx(bar, 64 * 8 * 2);
  emu::tma_load(base, &map, {32, 5}, bar);
  emu::mbar_wait(bar, 0);
  for (int i = 0; i < 64 * 8; ++i) std::memcpy(out + i, tma_smem + 2 * i, 2);
}

// C = A B^T with A [64 x 64], B [256 x 64] loaded by TMA, K-major (trans_b 0: four k16 steps 32 bytes
// apart inside the swizzled rows) or B as [64 x 256] N-major boxes of 64 x 64, 8 KB apart (trans_b 1:
// steps of 16 rows, 2 KB), or with A from registers (trans_b 2: each thread's m16n8k16 fragments, read from
// the copy of A after the output); one warpgroup, d[i] of thread t written to out[t * 128 + i].
__global__ void wgmma_product(const CUtensorMap map_a, const CUtensorMap map_b, int trans_b, float* out) {
  extern __shared__ __align__(128) unsigned char mma_smem[];
  const std::uint32_t base = __cvta_generic_to_shared(mma_smem);
  const std::uint32_t a = base, b = base + 8192, bar = base + 8192 + 32768;
  if (threadIdx.x == 0) {
    emu::mbar_init(bar, 1);
    emu::mbar_arrive_expect_tx(bar, 8192 + 32768);
    emu::tma_load(a, &map_a, {0, 0}, bar);
    if (trans_b == 1) for (int h = 0; h < 4; ++h) emu::tma_load(b + 8192 * h, &map_b, {64 * h, 0}, bar);
    else emu::tma_load(b, &map_b, {0, 0}, bar);
  }
  __syncthreads();
  emu::mbar_wait(bar, 0);
  const auto desc = [](std::uint32_t addr, std::uint32_t lbo) {
    return static_cast<std::uint64_t>(addr >> 4) | (static_cast<std::uint64_t>(lbo >> 4) << 16) |
           (static_cast<std::uint64_t>(1024 >> 4) << 32) | (1ull << 62);
  };
  float d[128];
  for (float& x : d) x = 0.0f;
  if (trans_b == 2) {  // A from registers: each thread's m16n8k16 A fragment of its warp's 16 rows
    const int w = threadIdx.x / 32, g = threadIdx.x % 32 / 4, t = threadIdx.x % 4;
    const std::uint16_t* A = reinterpret_cast<const std::uint16_t*>(out + 128 * 128);  // the A matrix [64][64]
    const auto pair = [&](int r, int k) { return A[r * 64 + k] | static_cast<std::uint32_t>(A[r * 64 + k + 1]) << 16; };
    for (int ks = 0; ks < 4; ++ks) {
      const int r = 16 * w + g, k = 16 * ks + 2 * t;
      const std::uint32_t a[4] = {pair(r, k), pair(r + 8, k), pair(r, k + 8), pair(r + 8, k + 8)};
      if (ks == 0) emu::wgmma_fence();
      emu::wgmma_rs(d, a, desc(b + 32 * ks, 16), 0);
    }
    emu::wgmma_commit();
    emu::wgmma_wait(0);
    for (int i = 0; i < 128; ++i) out[threadIdx.x * 128 + i] = d[i];
    return;
  }
  emu::wgmma_fence();
  for (int ks = 0; ks < 4; ++ks)
    emu::wgmma_ss(d, desc(a + 32 * ks, 16), trans_b ? desc(b + 2048 * ks, 8192) : desc(b + 32 * ks, 16), 0, trans_b);
  emu::wgmma_commit();
  emu::wgmma_wait(0);
  for (int i = 0; i < 128; ++i) out[threadIdx.x * 128 + i] = d[i];
}

// The asynchrony of wgmma and TMA (PTX ISA: wgmma.mma_async completes at a wgmma.wait_group covering its
// commit group; its accumulators may not be accessed before; a wgmma on registers the thread accessed
// needs a wgmma.fence first; ordinary shared-memory stores reach the async proxy through
// fence.proxy.async). A [64 x 64] and B [256 x 64] K-major by TMA as in wgmma_product; `mode`:
//   0  d[0] read between issue and wait (-> out[16384 + t]), then d after the wait;
//   1  B replaced by a second TMA load (map_b2) between issue and wait: the wgmma reads it at the wait;
//   2  no wgmma.fence before the first wgmma (UB: the launch fails);
//   3  the thread exits with its wgmmas in flight (fails);
//   4  thread 0 stores into A after the TMA, without fence.proxy.async (fails at the wgmma's read);
//   5  the same store followed by fence.proxy.async (the wgmma reads the new value);
//   6  two groups on two accumulators, wait_group 1 then 0: after the first wait the older group's
//      accumulators are back (d), the newer's still in flight (e[0] -> out[16384 + t]); then e = d.
__global__ void wgmma_async(const CUtensorMap map_a, const CUtensorMap map_b, const CUtensorMap map_b2, int mode,
                            float* out) {
  extern __shared__ __align__(128) unsigned char async_smem[];
  const std::uint32_t base = __cvta_generic_to_shared(async_smem);
  const std::uint32_t a = base, b = base + 8192, bar = base + 8192 + 32768, bar2 = bar + 8;
  if (threadIdx.x == 0) {
    emu::mbar_init(bar, 1);
    emu::mbar_init(bar2, 1);
    emu::mbar_arrive_expect_tx(bar, 8192 + 32768);
    emu::tma_load(a, &map_a, {0, 0}, bar);
    emu::tma_load(b, &map_b, {0, 0}, bar);
  }
  __syncthreads();
  emu::mbar_wait(bar, 0);
  if (mode == 4 || mode == 5) {
    if (threadIdx.x == 0) {  // A(0, 0) = 3: row 0, chunk 0 (the swizzle keeps row 0's chunks in place)
      const std::uint16_t three = 0x4040;
      std::memcpy(async_smem, &three, 2);
      if (mode == 5) emu::fence_proxy_async();
    }
    __syncthreads();
  }
  const auto desc = [](std::uint32_t addr) {
    return static_cast<std::uint64_t>(addr >> 4) | (1ull << 16) | (static_cast<std::uint64_t>(1024 >> 4) << 32) | (1ull << 62);
  };
  float d[128], e[128];
  for (int i = 0; i < 128; ++i) d[i] = e[i] = 0.0f;
  if (mode != 2) emu::wgmma_fence();
  for (int ks = 0; ks < 4; ++ks) emu::wgmma_ss(d, desc(a + 32 * ks), desc(b + 32 * ks), 0, 0);
  emu::wgmma_commit();
  if (mode == 3) return;
  if (mode == 0) out[16384 + threadIdx.x] = d[0];
  if (mode == 1) {
    __syncthreads();
    if (threadIdx.x == 0) {
      emu::mbar_arrive_expect_tx(bar2, 32768);
      emu::tma_load(b, &map_b2, {0, 0}, bar2);
    }
    emu::mbar_wait(bar2, 0);
  }
  if (mode == 6) {
    for (int ks = 0; ks < 4; ++ks) emu::wgmma_ss(e, desc(a + 32 * ks), desc(b + 32 * ks), 0, 0);
    emu::wgmma_commit();
    emu::wgmma_wait(1);
    out[16384 + threadIdx.x] = e[0];
  }
  emu::wgmma_wait(0);
  bool same = true;
  for (int i = 0; i < 128; ++i) same = same && (mode != 6 || e[i] == d[i]);
  for (int i = 0; i < 128; ++i) out[threadIdx.x * 128 + i] = same ? d[i] : -1.0f;
}

// EMU_CP_ASYNC=wait: a cp.async lands at its thread's cp.async.wait_group: two groups of one copy each,
// read before any wait (out[0]), after wait_group 1 (out[1]: the first group's bytes, the second's not yet)
// and after wait_group 0 (out[2]); `no_wait`: the thread exits with copies in flight (fails).
__global__ void cp_async_groups(const int* src, int* out, int no_wait) {
  extern __shared__ __align__(16) int cp_smem[];
  const std::uint32_t base = __cvta_generic_to_shared(cp_smem);
  emu::cp_async_16(base, src, true);
  emu::cp_async_commit();
  emu::cp_async_16(base + 16, src + 4, true);
  emu::cp_async_commit();
  out[0] = cp_smem[0] + cp_smem[4];
  if (no_wait) return;
  emu::cp_async_wait(1);
  out[1] = cp_smem[0] + cp_smem[4];
  emu::cp_async_wait(0);
  out[2] = cp_smem[0] + cp_smem[4];
}

// EMU_TMA=late: a TMA load lands only when no thread can run: a read of the box before the mbarrier wait
// sees the old bytes (out[0]), after it the tensor's (out[1]); `no_wait`: the thread exits with the copy in
// flight (fails).
__global__ void tma_late(const CUtensorMap map, std::uint16_t* out, int no_wait) {
  extern __shared__ __align__(128) unsigned char late_smem[];
  const std::uint32_t base = __cvta_generic_to_shared(late_smem);
  const std::uint32_t bar = base + 1024;
  emu::mbar_init(bar, 1);
  emu::mbar_arrive_expect_tx(bar, 64 * 8 * 2);
  emu::tma_load(base, &map, {0, 0}, bar);
  std::memcpy(out, late_smem, 2);
  if (no_wait) return;
  emu::mbar_wait(bar, 0);
  std::memcpy(out + 1, late_smem, 2);
}

// Two groups of 64 threads, each through its own named barrier; `missing`: one thread of group 2 skips.
__global__ void named_barriers(int* out, int missing) {
  __shared__ int v[128];
  v[threadIdx.x] = static_cast<int>(threadIdx.x);
  const int group = threadIdx.x / 64;
  if (!(missing && threadIdx.x == 127)) emu::named_barrier(1 + group, 64);
  out[threadIdx.x] = v[(threadIdx.x + 1) % 64 + 64 * group];
}

__global__ void dynamic_smem(int* out, int n) {
  extern __shared__ int dyn[];
  for (int i = threadIdx.x; i < n; i += blockDim.x) dyn[i] = i;
  __syncthreads();
  if (threadIdx.x == 0) out[blockIdx.y * gridDim.x + blockIdx.x] = dyn[n - 1] + static_cast<int>(blockDim.x);
}

// ---- cross-check of the sm_90 rules against public sources, written independently of emu_sm90.hpp's own
// formulas (the emulator and the kernels had one author; these cases encode what NVIDIA's CUTLASS/CuTe and
// the PTX ISA state, not the emulator's restatement of it):
//   * CuTe include/cute/atom/mma_traits_sm90_gmma.hpp: CLayout_64xN (the f32 accumulators) and
//     ALayout_64x16 (A from registers, 16-bit types) as (thread, value) -> m + 64 n (m + 64 k) layouts;
//     make_gmma_desc's canonical shared layouts for the 128-byte swizzle, in 16-byte units:
//       K-major  ((8,m),(T,2)) : ((8T,SBO),(1,T))        (LBO unused: "assumed 1")
//       MN-major ((T,8,m),(8,k)) : ((1,T,LBO),(8T,SBO))   (LBO between 64-element MN blocks, SBO between
//                                                         groups of 8 k)
//     composed with Swizzle<3,4,3> on the byte address (bits 7..9 xor-ed into bits 4..6);
//   * cute/arch/mma_sm90_desc.hpp (GmmaDescriptor): start >> 4 in bits 0..13, LBO >> 4 in 16..29, SBO >> 4
//     in 32..45, base offset 49..51, layout type 62..63 with 1 = 128-byte swizzle;
//   * PTX ISA (wgmma, shared memory matrix layout): imm-trans-a/b 0 = K-major, 1 = M-/N-major;
//     mbarrier.try_wait.parity waits for the phase of the given parity among the current and the
//     immediately preceding phase; a phase needs its pending arrivals and its tx-count at zero;
//     cvt.rn.bf16x2.f32 d, a, b puts a in the upper half;
//   * cuda.h (cuTensorMapEncodeTiled): boxDim[0] innermost; TMA fills out-of-bound elements per dimension;
//     CUTLASS's TmaTransactionBytes (gemm/collective/sm90_mma_tma_gmma_ss_warpspecialized.hpp) is the whole
//     box, zero-filled parts included.

// A CuTe layout written as its flat modes: index i -> sum_j ((i / prod(shape[<j])) % shape[j]) * stride[j].
struct FlatLayout {
  int n;
  int shape[3], stride[3];
  int operator()(int i) const {
    int off = 0;
    for (int j = 0; j < n; ++j) off += (i % shape[j]) * stride[j], i /= shape[j];
    return off;
  }
};
// CuTe CLayout_64xN / ALayout_64x16: thread mode (4,8,4):(128,1,16) (both); value modes
// (2,2,N/8):(64,8,512) (C) and (2,2,2):(64,8,512) (A); the result is m + 64 n (C) or m + 64 k (A).
constexpr FlatLayout kGmmaThreads{3, {4, 8, 4}, {128, 1, 16}};
inline FlatLayout gmma_c_values(int n) { return FlatLayout{3, {2, 2, n / 8}, {64, 8, 512}}; }
constexpr FlatLayout kGmmaAValues{3, {2, 2, 2}, {64, 8, 512}};

// Swizzle<3,4,3> (cute/swizzle.hpp): offset ^ ((offset & (7 << 7)) >> 3), on byte offsets from a 1024-byte
// aligned base.
inline std::uint32_t cute_sw128(std::uint32_t off) { return off ^ ((off & (7u << 7)) >> 3); }
// The canonical layouts above in bytes (bf16: T = 8 elements per 16 bytes), before the swizzle.
inline std::uint32_t kmajor_byte(int r, int k, std::uint32_t sbo) {
  return static_cast<std::uint32_t>(r % 8) * 128 + static_cast<std::uint32_t>(r / 8) * sbo + 2 * (k % 8) + 16 * (k / 8);
}
inline std::uint32_t mnmajor_byte(int r, int k, std::uint32_t lbo, std::uint32_t sbo) {
  return 2 * static_cast<std::uint32_t>(r % 8) + 16 * static_cast<std::uint32_t>((r / 8) % 8) +
         static_cast<std::uint32_t>(r / 64) * lbo + static_cast<std::uint32_t>(k % 8) * 128 +
         static_cast<std::uint32_t>(k / 8) * sbo;
}
// GmmaDescriptor's bit fields.
inline std::uint64_t gmma_desc(std::uint32_t start, std::uint32_t lbo, std::uint32_t sbo) {
  return static_cast<std::uint64_t>((start >> 4) & 0x3fff) | static_cast<std::uint64_t>((lbo >> 4) & 0x3fff) << 16 |
         static_cast<std::uint64_t>((sbo >> 4) & 0x3fff) << 32 | 1ull << 62;
}

// The operands' strides in the cases below, chosen unlike the kernels' (SBO 1024, MN-major LBO 8 / 16 KB)
// so that swapped LBO/SBO roles or an ignored SBO would show: K-major SBO 2048 with LBO garbage (unused);
// MN-major A: SBO 2048; MN-major B: LBO 1024 (the 64-wide N blocks adjacent), SBO (N / 64 + 1) KB.
constexpr std::uint32_t kKSbo = 2048, kKLboGarbage = 0x5a50, kMnLbo = 1024;
inline std::uint32_t mn_sbo(int n) { return static_cast<std::uint32_t>(n / 64 + 1) * 1024; }

// D[64 x N] = A[64 x 32] B[N x 32]^T in two k16 steps (global A [64][32], B [N][32] bf16, row-major), N = 2 R:
// a_mode 0 = A K-major in shared memory, 1 = A M-major (trans-a 1), 2 = A from registers by ALayout_64x16;
// b_mode 0 = B K-major, 1 = B N-major (trans-b 1). Thread 0 stores the operands in the canonical layouts;
// d[v] of thread t goes to out[t * R + v].
template <int R>
__global__ void cute_gmma_product(const std::uint16_t* ga, const std::uint16_t* gb, int a_mode, int b_mode, float* out) {
  constexpr int N = 2 * R;
  extern __shared__ __align__(128) unsigned char cute_smem[];
  const std::uint32_t raw = __cvta_generic_to_shared(cute_smem);
  const std::uint32_t s = (raw + 1023u) & ~1023u;
  unsigned char* const p = cute_smem + (s - raw);
  const std::uint32_t a_off = 0, b_off = 16384;  // A <= 16 KB (K-major, SBO 2 KB), B after it
  if (threadIdx.x == 0) {
    const auto put = [&](std::uint32_t off, std::uint16_t v) { std::memcpy(p + cute_sw128(off), &v, 2); };
    for (int m = 0; m < 64; ++m)
      for (int k = 0; k < 32; ++k)
        put(a_off + (a_mode == 1 ? mnmajor_byte(m, k, kMnLbo, kKSbo) : kmajor_byte(m, k % 16, kKSbo) + 32 * (k / 16)),
            ga[m * 32 + k]);
    for (int n = 0; n < N; ++n)
      for (int k = 0; k < 32; ++k)
        put(b_off + (b_mode == 1 ? mnmajor_byte(n, k, kMnLbo, mn_sbo(N)) : kmajor_byte(n, k % 16, kKSbo) + 32 * (k / 16)),
            gb[n * 32 + k]);
    emu::fence_proxy_async();  // ordinary stores read by wgmma (the async proxy)
  }
  __syncthreads();
  float d[R];
  for (float& x : d) x = 0.0f;
  const int t = threadIdx.x;
  for (int j = 0; j < 2; ++j) {  // k16 step j: K-major +32 bytes inside the swizzled rows, MN-major +2 SBO
    const std::uint64_t db = b_mode == 1 ? gmma_desc(s + b_off + 2 * mn_sbo(N) * j, kMnLbo, mn_sbo(N))
                                         : gmma_desc(s + b_off + 32 * j, kKLboGarbage, kKSbo);
    if (a_mode == 2) {
      std::uint32_t a[4] = {0, 0, 0, 0};
      for (int v = 0; v < 8; ++v) {  // value v: register v / 2, the lower value in the low half
        const int idx = kGmmaThreads(t) + kGmmaAValues(v), m = idx % 64, k = idx / 64;
        a[v / 2] |= static_cast<std::uint32_t>(ga[m * 32 + 16 * j + k]) << (16 * (v % 2));
      }
      if (j == 0) emu::wgmma_fence();
      emu::wgmma_rs(d, a, db, b_mode);
    } else {
      const std::uint64_t da = a_mode == 1 ? gmma_desc(s + a_off + 2 * kKSbo * j, kMnLbo, kKSbo)
                                           : gmma_desc(s + a_off + 32 * j, kKLboGarbage, kKSbo);
      if (j == 0) emu::wgmma_fence();
      emu::wgmma_ss(d, da, db, a_mode, b_mode);
    }
  }
  emu::wgmma_commit();
  emu::wgmma_wait(0);
  for (int v = 0; v < R; ++v) out[t * R + v] = d[v];
}

// 4D TMA box {64, 1, 8, 1} at (64, 2, 5, 1) of a (d 128, heads 3, T 10, B 2) bf16 tensor, as the attention
// kernels map q/k/v: expect_tx of the whole box (rows T >= 10 are zero-filled, yet counted).
__global__ void tma_box_4d(const CUtensorMap map, std::uint16_t* out) {
  extern __shared__ __align__(128) unsigned char tma4_smem[];
  const std::uint32_t base = __cvta_generic_to_shared(tma4_smem);
  const std::uint32_t bar = base + 1024;
  emu::mbar_init(bar, 1);
  emu::mbar_arrive_expect_tx(bar, 64 * 8 * 2);
  emu::tma_load(base, &map, {64, 2, 5, 1}, bar);
  emu::mbar_wait(bar, 0);
  std::memcpy(out, tma4_smem, 1024);
}

// Parity after two completed phases (count 1): the current phase is 2 (parity 0, open), the preceding one
// (parity 1) has completed. `wait_open`: also wait for parity 0, which never completes (a deadlock).
__global__ void mbarrier_two_phases(int* out, int wait_open) {
  extern __shared__ int two_smem[];
  const std::uint32_t bar = __cvta_generic_to_shared(two_smem);
  emu::mbar_init(bar, 1);
  emu::mbar_arrive(bar);
  emu::mbar_arrive(bar);
  emu::mbar_wait(bar, 1);
  out[0] = 7;
  if (wait_open) emu::mbar_wait(bar, 0);
  out[1] = 8;
}

// expect_tx of 2048 bytes, a 1024-byte box: the arrival count is met but the tx-count is not (a deadlock).
__global__ void mbarrier_tx_short(const CUtensorMap map, int* out) {
  extern __shared__ __align__(128) unsigned char txs_smem[];
  const std::uint32_t base = __cvta_generic_to_shared(txs_smem);
  const std::uint32_t bar = base + 1024;
  emu::mbar_init(bar, 1);
  emu::mbar_arrive_expect_tx(bar, 2048);
  emu::tma_load(base, &map, {64, 2, 5, 1}, bar);
  emu::mbar_wait(bar, 0);
  out[0] = 1;
}
}  // namespace

// Streams (emu_host.hpp, EMU_STREAMS): one thread writes a value, or copies one.
__global__ void set_value(int* p, int v) {
  if (threadIdx.x == 0) *p = v;
}
__global__ void copy_value(const int* from, int* to) {
  if (threadIdx.x == 0) *to = *from;
}

int main() {
  int* d = nullptr;
  cudaMalloc(&d, 4096 * sizeof(int));
  emu::begin_case();
  shuffles<<<1, 64>>>(d);
  bool ok[8] = {true, true, true, true, true, true, true, true};
  for (int t = 0; t < 64; ++t) {
    const int l = t % 32;
    ok[0] &= d[0 * 32 + l] == 496;
    ok[1] &= d[1 * 32 + l] == ((l % 16) == 15 ? l : l + 1);
    ok[2] &= d[2 * 32 + l] == (l < 2 ? l : l - 2);
    ok[3] &= d[3 * 32 + l] == (l / 8) * 8 + 3;
    ok[4] &= static_cast<unsigned>(d[4 * 32 + l]) == 0x49249249u;
    ok[5] &= static_cast<unsigned>(d[5 * 32 + l]) == (0xfu << (l / 4 * 4));
    ok[6] &= d[6 * 32 + l] == (l < 16 ? (l ^ 1) : (l ^ 2) + 100);
    ok[7] &= d[7 * 32 + l] == 1;
  }
  expect(ok[0], "__shfl_xor_sync butterfly sum");
  expect(ok[1], "__shfl_down_sync width 16 keeps the own value at a segment end");
  expect(ok[2], "__shfl_up_sync keeps the own value below delta");
  expect(ok[3], "__shfl_sync width 8 indexes within the segment");
  expect(ok[4], "__ballot_sync");
  expect(ok[5], "__match_any_sync");
  expect(ok[6], "divergent halves with disjoint masks");
  expect(ok[7], "__any_sync/__all_sync");
  expect(cudaDeviceSynchronize() == cudaSuccess, "no error after the valid kernels");

  const auto before = emu::rt().undefined_reads;
  undefined_source<<<1, 32>>>(d);
  expect(emu::rt().undefined_reads - before == 16 && static_cast<std::uint32_t>(d[0]) == static_cast<std::uint32_t>(emu::kPoison),
         "reading a lane outside the mask is undefined (poison, counted)");

  early_exit_then_barrier<<<1, 64>>>(d);
  expect(cudaDeviceSynchronize() == cudaErrorLaunchFailure, "__syncthreads after some threads exited is reported");
  emu::begin_case();
  exited_lane_in_mask<<<1, 32>>>(d);
  expect(cudaDeviceSynchronize() == cudaErrorLaunchFailure, "a full-mask shuffle with an exited lane deadlocks (reported)");
  emu::begin_case();

  shared_garbage<<<1, 64>>>(reinterpret_cast<unsigned*>(d));
  bool garbage = true;
  for (int t = 0; t < 64; ++t) garbage &= static_cast<unsigned>(d[t]) == 0x01010101u * emu::cfg().fill;
  expect(garbage, "static shared memory starts as the fill pattern");

  const int saved = emu::cfg().order;
  emu::cfg().order = 0;
  missing_barrier<<<1, 64>>>(d);
  bool fwd = true;
  for (int t = 0; t < 64; ++t) fwd &= d[t] == 42;
  emu::cfg().order = 1;
  missing_barrier<<<1, 64>>>(d);
  bool rev = true;
  for (int t = 0; t < 64; ++t) rev &= d[t] == 42;
  with_barrier<<<1, 64>>>(d);
  bool fixed = true;
  for (int t = 0; t < 64; ++t) fixed &= d[t] == 42;
  emu::cfg().order = saved;
  expect(fwd && !rev && fixed, "a missing __syncthreads shows in reverse order (forward hides it)");

  dynamic_smem<<<dim3(3, 2), 32, 40 * sizeof(int)>>>(d, 40);
  bool dyn = true;
  for (int b = 0; b < 6; ++b) dyn &= d[b] == 39 + 32;
  expect(dyn && cudaGetLastError() == cudaSuccess, "dynamic shared memory as launched, 2D grid");
  dynamic_smem<<<1, 32, 64 * 1024>>>(d, 40);
  expect(cudaGetLastError() == cudaErrorInvalidValue, "dynamic shared memory over 48 KiB without opt-in is refused");
  with_barrier<<<1, 1025>>>(d);
  expect(cudaGetLastError() == cudaErrorInvalidConfiguration, "1025 threads per block is refused");
  with_barrier<<<dim3(1, 65536), 32>>>(d);
  expect(cudaGetLastError() == cudaErrorInvalidConfiguration, "grid.y 65536 is refused");
  // ---- sm_90 asynchronous helpers
  for (int order : {0, 1}) {
    emu::cfg().order = order;
    cudaFuncSetAttribute(mbarrier_ring, cudaFuncAttributeMaxDynamicSharedMemorySize, 96);
    mbarrier_ring<<<1, 64, 96>>>(d);
    bool ring = cudaDeviceSynchronize() == cudaSuccess;
    for (int t = 0; t < 32; ++t) ring &= d[t] == 360;
    expect(ring, order == 0 ? "mbarrier ring: 8 items through 2 slots (forward order)"
                            : "mbarrier ring: 8 items through 2 slots (reverse order)");
  }
  emu::cfg().order = saved;
  mbarrier_overarrive<<<1, 1, 8>>>(d);
  expect(cudaDeviceSynchronize() == cudaErrorLaunchFailure, "more mbarrier arrivals than its count fail the launch");
  emu::begin_case();
  mbarrier_wrong_parity<<<1, 32, 8>>>(d);
  expect(cudaDeviceSynchronize() == cudaErrorLaunchFailure, "waiting for a phase that never completes is a deadlock");
  emu::begin_case();

  using Encode = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*, const cuuint64_t*,
                              const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                              CUtensorMapL2promotion, CUtensorMapFloatOOBfill);
  void* fn = nullptr;
  cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault, nullptr);
  const auto encode = reinterpret_cast<Encode>(fn);
  const auto make_map = [&](CUtensorMap* m, void* p, cuuint64_t inner, cuuint64_t outer, cuuint32_t box_inner,
                            cuuint32_t box_outer) {
    const cuuint64_t dim[2] = {inner, outer}, stride[1] = {inner * 2};
    const cuuint32_t box[2] = {box_inner, box_outer}, one[2] = {1, 1};
    return encode(m, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, p, dim, stride, box, one, CU_TENSOR_MAP_INTERLEAVE_NONE,
                  CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_NONE, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  };
  std::uint16_t* t = nullptr;
  cudaMalloc(reinterpret_cast<void**>(&t), 10 * 72 * 2 + 64 * 8 * 2);
  for (int i = 0; i < 10 * 72; ++i) t[i] = static_cast<std::uint16_t>(i + 1);
  CUtensorMap map;
  expect(make_map(&map, t, 72, 10, 64, 8) == CUDA_SUCCESS, "cuTensorMapEncodeTiled: a valid 2D map");
  CUtensorMap bad;
  expect(make_map(&bad, t, 70, 10, 64, 8) == CUDA_ERROR_INVALID_VALUE, "cuTensorMapEncodeTiled: row stride not 16-byte");
  expect(make_map(&bad, t, 72, 10, 72, 8) == CUDA_ERROR_INVALID_VALUE, "cuTensorMapEncodeTiled: box over the swizzle");
  cudaFuncSetAttribute(tma_box, cudaFuncAttributeMaxDynamicSharedMemorySize, 1032);
  std::uint16_t* box = t + 10 * 72;
  tma_box<<<1, 1, 1032>>>(map, box);
  bool placed = cudaDeviceSynchronize() == cudaSuccess;
  for (int y = 0; y < 8; ++y)
    for (int x = 0; x < 64; ++x) {
      const int gx = 32 + x, gy = 5 + y;
      const std::uint16_t want = gx < 72 && gy < 10 ? static_cast<std::uint16_t>(gy * 72 + gx + 1) : 0;
      const int byte = y * 128 + ((((2 * x) / 16) ^ (y & 7)) * 16) + (2 * x) % 16;  // chunk c -> c ^ (row & 7)
      placed &= box[byte / 2] == want;
    }
  expect(placed, "TMA box: 128-byte swizzle placement, zero fill outside the tensor");

  // A [64 x 64], B [256 x 64] of small integers (exact fp32 sums); B also stored N-major [64 x 256].
  std::uint16_t *a = nullptr, *b = nullptr, *bt = nullptr;
  float* c = nullptr;
  cudaMalloc(reinterpret_cast<void**>(&a), 64 * 64 * 2);
  cudaMalloc(reinterpret_cast<void**>(&b), 256 * 64 * 2);
  cudaMalloc(reinterpret_cast<void**>(&bt), 256 * 64 * 2);
  cudaMalloc(reinterpret_cast<void**>(&c), 128 * 128 * 4 + 64 * 64 * 2);  // + a copy of A for the register case
  const auto bf16 = [](int v) { return static_cast<std::uint16_t>(emu::f2u(static_cast<float>(v)) >> 16); };
  for (int r = 0; r < 64; ++r)
    for (int k = 0; k < 64; ++k) a[r * 64 + k] = bf16((r * 7 + k * 3) % 11 - 5);
  for (int n = 0; n < 256; ++n)
    for (int k = 0; k < 64; ++k) b[n * 64 + k] = bt[k * 256 + n] = bf16((n * 5 + k * 13) % 9 - 4);
  CUtensorMap ma, mb, mbt;
  make_map(&ma, a, 64, 64, 64, 64);
  make_map(&mb, b, 64, 256, 64, 256);
  make_map(&mbt, bt, 256, 64, 64, 64);
  std::memcpy(c + 128 * 128, a, 64 * 64 * 2);
  for (int trans_b : {0, 1, 2}) {
    cudaFuncSetAttribute(wgmma_product, cudaFuncAttributeMaxDynamicSharedMemorySize, 8192 + 32768 + 8);
    wgmma_product<<<1, 128, 8192 + 32768 + 8>>>(ma, trans_b == 1 ? mbt : mb, trans_b, c);
    bool exact = cudaDeviceSynchronize() == cudaSuccess;
    for (int th = 0; th < 128; ++th)
      for (int i = 0; i < 128; ++i) {
        const int row = 16 * (th / 32) + (th % 32) / 4 + 8 * ((i / 2) % 2), col = 8 * (i / 4) + 2 * (th % 4) + i % 2;
        int want = 0;
        for (int k = 0; k < 64; ++k) want += ((row * 7 + k * 3) % 11 - 5) * ((col * 5 + k * 13) % 9 - 4);
        exact &= c[th * 128 + i] == static_cast<float>(want);
      }
    expect(exact, trans_b == 1 ? "wgmma m64n256k16 x 4: N-major B (transpose bit) from TMA boxes = the product"
                  : trans_b == 2 ? "wgmma m64n256k16 x 4: A from registers (m16n8k16 fragments) = the product"
                                 : "wgmma m64n256k16 x 4: K-major A and B from TMA = the product in the accumulator layout");
    emu::begin_case();
  }

  // wgmma and TMA asynchrony (wgmma_async, tma_late above).
  {
    std::uint16_t* b2 = nullptr;
    cudaMalloc(reinterpret_cast<void**>(&b2), 256 * 64 * 2);
    for (int n = 0; n < 256; ++n)
      for (int k = 0; k < 64; ++k) b2[n * 64 + k] = bf16((n * 3 + k * 7) % 5 - 2);
    CUtensorMap mb2;
    make_map(&mb2, b2, 64, 256, 64, 256);
    const auto product = [&](bool second_b, bool a00_three) {  // the exact product in the accumulator layout
      bool exact = true;
      for (int th = 0; th < 128; ++th)
        for (int i = 0; i < 128; ++i) {
          const int row = 16 * (th / 32) + (th % 32) / 4 + 8 * ((i / 2) % 2), col = 8 * (i / 4) + 2 * (th % 4) + i % 2;
          int want = 0;
          for (int k = 0; k < 64; ++k) {
            const int av = a00_three && row == 0 && k == 0 ? 3 : (row * 7 + k * 3) % 11 - 5;
            want += av * (second_b ? (col * 3 + k * 7) % 5 - 2 : (col * 5 + k * 13) % 9 - 4);
          }
          exact &= c[th * 128 + i] == static_cast<float>(want);
        }
      return exact;
    };
    const int smem_bytes = 8192 + 32768 + 16;
    cudaFuncSetAttribute(wgmma_async, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes);
    const auto run = [&](int mode) {
      emu::begin_case();
      wgmma_async<<<1, 128, smem_bytes>>>(ma, mb, mb2, mode, c);
      return cudaDeviceSynchronize();
    };
    for (const bool late : {false, true}) {
      emu::cfg().tma_late = late;
      const std::string when = late ? " (EMU_TMA=late)" : " (EMU_TMA=issue)";
      bool poisoned = run(0) == cudaSuccess && product(false, false);
      for (int th = 0; th < 128; ++th) poisoned &= std::isnan(c[16384 + th]);
      expect(poisoned, ("wgmma: accumulators read before wgmma.wait_group are a poison (NaN), right after it" + when).c_str());
      expect(run(1) == cudaSuccess && product(true, false),
             ("wgmma: operands are read at the wait_group (a stage refilled in between shows)" + when).c_str());
      expect(run(2) == cudaErrorLaunchFailure, ("wgmma: no wgmma.fence before the first wgmma fails the launch" + when).c_str());
      expect(run(3) == cudaErrorLaunchFailure, ("wgmma: a thread exiting with wgmmas in flight fails the launch" + when).c_str());
      expect(run(4) == cudaErrorLaunchFailure,
             ("async proxy: an ordinary store read by wgmma without fence.proxy.async fails the launch" + when).c_str());
      expect(run(5) == cudaSuccess && product(false, true),
             ("async proxy: the same store after fence.proxy.async is what wgmma reads" + when).c_str());
      bool newest = run(6) == cudaSuccess && product(false, false);
      for (int th = 0; th < 128; ++th) newest &= std::isnan(c[16384 + th]);
      expect(newest, ("wgmma.wait_group 1 completes the older group only, 0 the rest" + when).c_str());
    }
    emu::cfg().wgmma_async = false;
    bool at_issue = run(0) == cudaSuccess;
    for (int th = 0; th < 128; ++th) at_issue &= !std::isnan(c[16384 + th]);
    expect(at_issue && run(1) == cudaSuccess && product(false, false),
           "EMU_WGMMA=issue: the older model, wgmmas complete at issue");
    emu::cfg().wgmma_async = true;

    std::uint16_t* late_out = b2;  // reused: 2 values
    cudaFuncSetAttribute(tma_late, cudaFuncAttributeMaxDynamicSharedMemorySize, 1032);
    emu::begin_case();
    emu::cfg().tma_late = true;
    tma_late<<<1, 1, 1032>>>(map, late_out, 0);
    expect(cudaDeviceSynchronize() == cudaSuccess && late_out[0] == 0x0101u * emu::cfg().fill && late_out[1] == 1,
           "EMU_TMA=late: the box lands at the mbarrier wait, not at issue");
    tma_late<<<1, 1, 1032>>>(map, late_out, 1);
    expect(cudaDeviceSynchronize() == cudaErrorLaunchFailure, "EMU_TMA=late: a block exiting with a TMA load in flight fails");
    emu::begin_case();
    emu::cfg().tma_late = false;
    tma_late<<<1, 1, 1032>>>(map, late_out, 0);
    expect(cudaDeviceSynchronize() == cudaSuccess && late_out[0] == 1 && late_out[1] == 1,
           "EMU_TMA=issue: the box lands at issue");
  }

  // cp.async groups (cp_async_groups above): src[0] = 10, src[4] = 1000; shared memory filled with 0.
  {
    int* src = nullptr;
    cudaMalloc(reinterpret_cast<void**>(&src), 8 * sizeof(int));
    for (int i = 0; i < 8; ++i) src[i] = i == 0 ? 10 : i == 4 ? 1000 : 0;
    const unsigned char fill = emu::cfg().fill;
    emu::cfg().fill = 0;
    emu::cfg().cp_async_late = true;
    emu::begin_case();
    cp_async_groups<<<1, 1, 32>>>(src, d, 0);
    expect(cudaDeviceSynchronize() == cudaSuccess && d[0] == 0 && d[1] == 10 && d[2] == 1010,
           "EMU_CP_ASYNC=wait: cp.async.wait_group 1 lands all but the newest group, 0 the rest");
    cp_async_groups<<<1, 1, 32>>>(src, d, 1);
    expect(cudaDeviceSynchronize() == cudaErrorLaunchFailure, "EMU_CP_ASYNC=wait: a thread exiting with copies in flight fails");
    emu::begin_case();
    emu::cfg().cp_async_late = false;
    cp_async_groups<<<1, 1, 32>>>(src, d, 0);
    expect(cudaDeviceSynchronize() == cudaSuccess && d[0] == 1010 && d[1] == 1010 && d[2] == 1010,
           "EMU_CP_ASYNC=issue: copies land at issue");
    emu::cfg().fill = fill;
  }

  // ---- streams: EMU_STREAMS=lazy keeps CUDA's ordering rules only (emu_host.hpp)
  {
    int* a = nullptr;  // a[0] value, a[1] copy, a[2] spare
    cudaMalloc(reinterpret_cast<void**>(&a), 4 * sizeof(int));
    int* pinned = nullptr;
    cudaMallocHost(reinterpret_cast<void**>(&pinned), sizeof(int));
    cudaStream_t producer = nullptr, consumer = nullptr, blocking = nullptr;
    cudaStreamCreateWithFlags(&producer, cudaStreamNonBlocking);
    cudaStreamCreateWithFlags(&consumer, cudaStreamNonBlocking);
    cudaStreamCreate(&blocking);
    cudaEvent_t e = nullptr;
    cudaEventCreate(&e);
    emu::begin_case();
    const bool lazy = emu::cfg().streams_lazy;
    // A consumer behind a wait: the record's value (lazy: it runs right after the record), or the last.
    const auto behind_wait = [&] {
      a[0] = a[1] = 0;
      set_value<<<1, 32, 0, producer>>>(a, 1);
      cudaEventRecord(e, producer);
      set_value<<<1, 32, 0, producer>>>(a, 2);
      cudaStreamWaitEvent(consumer, e, 0);
      copy_value<<<1, 32, 0, consumer>>>(a, a + 1);
      cudaDeviceSynchronize();
      return a[1];
    };
    const auto no_wait = [&] {  // the same without the wait: lazy runs the consumer first
      a[0] = a[1] = 0;
      set_value<<<1, 32, 0, producer>>>(a, 5);
      copy_value<<<1, 32, 0, consumer>>>(a, a + 1);
      cudaStreamSynchronize(producer);
      cudaStreamSynchronize(consumer);
      return a[1];
    };
    const auto plain_copy = [&] {  // cudaMemcpy on the legacy stream with a non-blocking stream's kernel pending
      a[0] = 0;
      int host = -1;
      set_value<<<1, 32, 0, producer>>>(a, 7);
      cudaMemcpy(&host, a, sizeof host, cudaMemcpyDeviceToHost);
      cudaStreamSynchronize(producer);
      return host;
    };
    emu::cfg().streams_lazy = true;
    expect(behind_wait() == 1, "EMU_STREAMS=lazy: a consumer behind cudaStreamWaitEvent runs right after the record");
    expect(no_wait() == 0, "EMU_STREAMS=lazy: a consumer with no wait runs before the producer");
    expect(plain_copy() == 0, "EMU_STREAMS=lazy: a plain cudaMemcpy does not wait for a non-blocking stream");
    {
      a[0] = 0;
      int host = -1;
      set_value<<<1, 32, 0, blocking>>>(a, 9);
      cudaMemcpy(&host, a, sizeof host, cudaMemcpyDeviceToHost);
      expect(host == 9, "EMU_STREAMS=lazy: a plain cudaMemcpy waits for a blocking stream");
    }
    {
      a[0] = 0;
      int host = -1;
      set_value<<<1, 32, 0, producer>>>(a, 11);
      const bool queued = a[0] == 0;
      cudaMemcpyAsync(&host, a, sizeof host, cudaMemcpyDeviceToHost, producer);
      expect(queued && host == 11, "EMU_STREAMS=lazy: kernels wait in their queue; a copy into pageable memory returns landed");
    }
    {
      int host = 21;
      *pinned = 31;
      cudaMemcpyAsync(a, &host, sizeof host, cudaMemcpyHostToDevice, producer);
      cudaMemcpyAsync(a + 1, pinned, sizeof host, cudaMemcpyHostToDevice, producer);
      host = 22, *pinned = 32;
      cudaStreamSynchronize(producer);
      expect(a[0] == 21 && a[1] == 32,
             "EMU_STREAMS=lazy: a copy reads pageable memory when enqueued (staged), pinned memory when it runs");
    }
    {
      a[0] = 0;
      set_value<<<1, 32, 0, producer>>>(a, 1);
      cudaEventRecord(e, producer);
      set_value<<<1, 32, 0, producer>>>(a, 2);
      cudaEventSynchronize(e);
      const int at_event = a[0];
      cudaStreamSynchronize(producer);
      expect(at_event == 1 && a[0] == 2, "EMU_STREAMS=lazy: cudaEventSynchronize runs the stream up to the record");
    }
    {
      a[0] = 0;
      cudaMemsetAsync(a, 0x01, sizeof(int), producer);
      int* scratch = nullptr;
      cudaMalloc(reinterpret_cast<void**>(&scratch), sizeof(int));
      const bool pending = a[0] == 0;
      cudaFree(scratch);
      expect(pending && a[0] == 0x01010101, "EMU_STREAMS=lazy: cudaFree waits for every stream");
    }
    {
      set_value<<<1, 1025, 0, producer>>>(a, 3);
      expect(cudaGetLastError() == cudaErrorInvalidConfiguration, "EMU_STREAMS=lazy: a bad launch fails at the launch");
      early_exit_then_barrier<<<1, 64, 0, producer>>>(a);
      const bool launched = cudaGetLastError() == cudaSuccess;
      expect(launched && cudaStreamSynchronize(producer) == cudaErrorLaunchFailure,
             "EMU_STREAMS=lazy: a kernel's failure shows at the synchronisation");
      emu::begin_case();
    }
    emu::cfg().streams_lazy = false;
    expect(behind_wait() == 2 && no_wait() == 5 && plain_copy() == 7,
           "EMU_STREAMS=eager: every operation runs when enqueued");
    emu::cfg().streams_lazy = lazy;
    cudaEventDestroy(e);
    cudaStreamDestroy(producer);
    cudaStreamDestroy(consumer);
    cudaStreamDestroy(blocking);
    cudaFreeHost(pinned);
    cudaFree(a);
  }

  // ---- cross-check against CuTe / PTX / cuda.h (see the kernels' comment above)
  {
    std::uint16_t *ga = nullptr, *gb = nullptr;
    float* out = nullptr;
    cudaMalloc(reinterpret_cast<void**>(&ga), 64 * 32 * 2);
    cudaMalloc(reinterpret_cast<void**>(&gb), 256 * 32 * 2);
    cudaMalloc(reinterpret_cast<void**>(&out), 128 * 128 * 4);
    const auto av = [](int m, int k) { return (m * 5 + k * 7) % 13 - 6; };
    const auto bv = [](int n, int k) { return (n * 3 + k * 11) % 7 - 3; };
    for (int m = 0; m < 64; ++m)
      for (int k = 0; k < 32; ++k) ga[m * 32 + k] = bf16(av(m, k));
    for (int n = 0; n < 256; ++n)
      for (int k = 0; k < 32; ++k) gb[n * 32 + k] = bf16(bv(n, k));
    const int smem_bytes = 1024 + 16384 + 256 / 8 * 2048;
    struct Case { int n, a_mode, b_mode; const char* what; };
    const Case cases[] = {
        {64, 0, 0, "CuTe: m64n64k16 SS, A and B K-major (SBO 2 KB, LBO unused) -> CLayout_64x64"},
        {128, 1, 1, "CuTe: m64n128k16 SS, A M-major (trans-a 1) and B N-major (trans-b 1, LBO 1 KB, SBO 3 KB) -> CLayout_64x128"},
        {256, 0, 1, "CuTe: m64n256k16 SS, A K-major, B N-major (LBO 1 KB between N blocks, SBO 5 KB) -> CLayout_64x256"},
        {64, 2, 1, "CuTe: m64n64k16 RS, A by ALayout_64x16, B N-major (the attention P V / dS K use) -> CLayout_64x64"},
        {128, 2, 0, "CuTe: m64n128k16 RS, A by ALayout_64x16, B K-major -> CLayout_64x128"},
        {256, 1, 0, "CuTe: m64n256k16 SS, A M-major, B K-major -> CLayout_64x256"},
    };
    for (const Case& cs : cases) {
      const int r = cs.n / 2;
      for (int i = 0; i < 128 * 128; ++i) out[i] = -1.0f;
      if (r == 32) {
        cudaFuncSetAttribute(cute_gmma_product<32>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes);
        cute_gmma_product<32><<<1, 128, smem_bytes>>>(ga, gb, cs.a_mode, cs.b_mode, out);
      } else if (r == 64) {
        cudaFuncSetAttribute(cute_gmma_product<64>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes);
        cute_gmma_product<64><<<1, 128, smem_bytes>>>(ga, gb, cs.a_mode, cs.b_mode, out);
      } else {
        cudaFuncSetAttribute(cute_gmma_product<128>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem_bytes);
        cute_gmma_product<128><<<1, 128, smem_bytes>>>(ga, gb, cs.a_mode, cs.b_mode, out);
      }
      bool exact = cudaDeviceSynchronize() == cudaSuccess;
      const FlatLayout cv = gmma_c_values(cs.n);
      for (int th = 0; th < 128; ++th)
        for (int v = 0; v < r; ++v) {
          const int idx = kGmmaThreads(th) + cv(v), m = idx % 64, n = idx / 64;  // C(m, n), column-major 64 x N
          int want = 0;
          for (int k = 0; k < 32; ++k) want += av(m, k) * bv(n, k);
          exact &= out[th * r + v] == static_cast<float>(want);
        }
      expect(exact, cs.what);
      emu::begin_case();
    }

    // 4D TMA map as make_attention_map builds it: dims (d, heads, T, B), byte strides of dims 1..3.
    std::uint16_t* q = nullptr;
    cudaMalloc(reinterpret_cast<void**>(&q), 2 * 10 * 3 * 128 * 2 + 1024);
    for (int i = 0; i < 2 * 10 * 3 * 128; ++i) q[i] = static_cast<std::uint16_t>(i + 1);
    const cuuint64_t dim4[4] = {128, 3, 10, 2}, stride4[3] = {128 * 2, 3 * 128 * 2, 10 * 3 * 128 * 2};
    const cuuint32_t box4[4] = {64, 1, 8, 1}, one4[4] = {1, 1, 1, 1};
    CUtensorMap m4;
    expect(encode(&m4, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4, q, dim4, stride4, box4, one4, CU_TENSOR_MAP_INTERLEAVE_NONE,
                  CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) ==
               CUDA_SUCCESS,
           "cuTensorMapEncodeTiled: the attention kernels' 4D map (64 x 1 x 8 x 1 box)");
    const cuuint32_t box_big[4] = {64, 1, 257, 1};
    CUtensorMap m4bad;
    expect(encode(&m4bad, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4, q, dim4, stride4, box_big, one4, CU_TENSOR_MAP_INTERLEAVE_NONE,
                  CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) ==
               CUDA_ERROR_INVALID_VALUE,
           "cuTensorMapEncodeTiled: a box dimension over 256 is refused (cuda.h)");
    std::uint16_t* box_out = q + 2 * 10 * 3 * 128;
    cudaFuncSetAttribute(tma_box_4d, cudaFuncAttributeMaxDynamicSharedMemorySize, 1032);
    tma_box_4d<<<1, 1, 1032>>>(m4, box_out);
    bool placed4 = cudaDeviceSynchronize() == cudaSuccess;
    for (int y = 0; y < 8; ++y)
      for (int x = 0; x < 64; ++x) {
        const int d = 64 + x, h = 2, t = 5 + y, b = 1;
        const std::uint16_t want = t < 10 ? static_cast<std::uint16_t>(((b * 10 + t) * 3 + h) * 128 + d + 1) : 0;
        const std::uint32_t byte = cute_sw128(static_cast<std::uint32_t>(y * 128 + 2 * x));  // dim 0 innermost, dense
        placed4 &= box_out[byte / 2] == want;
      }
    expect(placed4, "TMA 4D box: dims in boxDim order, rows past T zero-filled (not the next sequence), whole box on the tx-count");
    emu::begin_case();
    mbarrier_tx_short<<<1, 1, 1032>>>(m4, d);
    expect(cudaDeviceSynchronize() == cudaErrorLaunchFailure, "mbarrier: arrivals met but tx-count short -> the phase stays open");
    emu::begin_case();

    mbarrier_two_phases<<<1, 1, 8>>>(d, 0);
    expect(cudaDeviceSynchronize() == cudaSuccess && d[0] == 7 && d[1] == 8,
           "mbarrier: after two phases, try_wait.parity 1 (the preceding phase) passes");
    emu::begin_case();
    mbarrier_two_phases<<<1, 1, 8>>>(d, 1);
    expect(cudaDeviceSynchronize() == cudaErrorLaunchFailure, "mbarrier: after two phases, parity 0 (the current phase) waits");
    emu::begin_case();

    expect(emu::cvt_rn_bf16x2(1.0f, 2.0f) == 0x3f804000u, "cvt.rn.bf16x2.f32 d, a, b: a in the upper half (PTX)");
  }

  named_barriers<<<1, 128>>>(d, 0);
  bool named = cudaDeviceSynchronize() == cudaSuccess;
  for (int th = 0; th < 128; ++th) named &= d[th] == (th + 1) % 64 + 64 * (th / 64);
  expect(named, "named barriers: two groups of 64 threads");
  named_barriers<<<1, 128>>>(d, 1);
  expect(cudaDeviceSynchronize() == cudaErrorLaunchFailure, "a named barrier missing one thread is a deadlock");
  emu::begin_case();
  std::printf("%d failed\n", failures);
  return failures != 0;
}
