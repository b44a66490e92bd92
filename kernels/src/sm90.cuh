#pragma once
// sm_90a (Hopper) building blocks of the WGMMA kernels (grouped_gemm.cu, attention.cu): mbarriers, TMA
// tile loads, warpgroup MMA (wgmma) with operands from shared-memory descriptors or registers, the
// 128-byte swizzle's descriptors; on the host, TMA maps through the driver's encoder (taken from the
// runtime, so the library does not link libcuda) and whether the WGMMA kernels can run.
//
// Conventions (PTX ISA): shared tiles in the 128-byte swizzle, as TMA writes them (16-byte chunk c of a
// 128-byte row r at chunk c ^ (r & 7), atoms of 8 rows 1024-byte aligned). wgmma m64nNk16 f32
// accumulators: thread t of the warpgroup holds d[i] at row 16 (t / 32) + (t % 32) / 4 + 8 ((i / 2) % 2),
// column 8 (i / 4) + 2 (t % 4) + i % 2. A from registers: each warp's 16 rows in the m16n8k16 A fragment
// layout. In a device pass without sm_90a the wrappers are empty and JK_WGMMA_UNAVAILABLE is defined
// (the kernels trap there; the host never launches them: sm90a_available).
// Not part of the public interface.
#include "common.cuh"

#include <cuda.h>  // CUtensorMap and its enums (the encoder comes from the driver at run time)

#include <mutex>
#include <string>

#if defined(__CUDA_ARCH__) && !defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define JK_WGMMA_UNAVAILABLE 1  // this device pass (not sm_90a) cannot hold wgmma/TMA: kernels trap
#endif

namespace jk::detail {

__device__ __forceinline__ void mbar_init(std::uint32_t bar, std::uint32_t count) {
#ifndef JK_WGMMA_UNAVAILABLE
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
#endif
}
// Makes the initialised barriers visible to the async proxy (TMA) and the other threads.
__device__ __forceinline__ void mbar_fence_init() {
#ifndef JK_WGMMA_UNAVAILABLE
  asm volatile("fence.mbarrier_init.release.cluster;\nfence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void mbar_arrive(std::uint32_t bar) {
#ifndef JK_WGMMA_UNAVAILABLE
  asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.shared::cta.b64 state, [%0];\n}\n" ::"r"(bar) : "memory");
#endif
}
__device__ __forceinline__ void mbar_arrive_expect_tx(std::uint32_t bar, std::uint32_t bytes) {
#ifndef JK_WGMMA_UNAVAILABLE
  asm volatile("{\n.reg .b64 state;\nmbarrier.arrive.expect_tx.shared::cta.b64 state, [%0], %1;\n}\n" ::"r"(bar),
               "r"(bytes)
               : "memory");
#endif
}
// Waits until the phase of parity `parity` has completed (a fresh barrier: parity 1 passes at once).
__device__ __forceinline__ void mbar_wait(std::uint32_t bar, std::uint32_t parity) {
#ifndef JK_WGMMA_UNAVAILABLE
  asm volatile(
      "{\n.reg .pred done;\n"
      "JK_MBAR_WAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra JK_MBAR_WAIT_%=;\n}\n" ::"r"(bar),
      "r"(parity)
      : "memory");
#endif
}
// The shared address of the dynamic shared memory `dynamic_smem` rounded up to 1024 bytes, where the
// 128-byte swizzle's pattern starts (the launches reserve 1024 bytes of slack for it).
__device__ __forceinline__ std::uint32_t swizzle_aligned(const void* dynamic_smem) {
  const std::uint32_t raw = static_cast<std::uint32_t>(__cvta_generic_to_shared(dynamic_smem));
  return (raw + 1023u) & ~1023u;
}

// By thread 0: the barriers of a `stages`-stage ring, full[s] at full0 + 8 s (count 1: the producer's
// arrive.expect_tx) and empty[s] at full0 + 8 (stages + s) (count `consumers`: the threads that release
// a stage), and, when `once` is not 0, a one-shot barrier there (count 1: one arrive.expect_tx); then
// the fence that makes them visible to TMA. The caller synchronises the block before using them.
__device__ __forceinline__ void init_ring_barriers(std::uint32_t full0, int stages, std::uint32_t consumers,
                                                   std::uint32_t once = 0) {
  if (threadIdx.x != 0) return;
  if (once != 0) mbar_init(once, 1);
  for (int s = 0; s < stages; ++s) {
    mbar_init(full0 + 8 * s, 1);
    mbar_init(full0 + 8 * (stages + s), consumers);
  }
  mbar_fence_init();
}

// 2D tile load: box at (c0 = innermost element, c1 = row) of `map` into shared `dst`, completing
// `bytes` of transaction on `bar`.
__device__ __forceinline__ void tma_load_2d(std::uint32_t dst, const CUtensorMap* map, int c0, int c1,
                                            std::uint32_t bar) {
#ifndef JK_WGMMA_UNAVAILABLE
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(
          dst),
      "l"(reinterpret_cast<std::uint64_t>(map)), "r"(c0), "r"(c1), "r"(bar)
      : "memory");
#endif
}

// 4D tile load: box at (c0 innermost, c1, c2, c3) of `map` into shared `dst`, completing on `bar`.
__device__ __forceinline__ void tma_load_4d(std::uint32_t dst, const CUtensorMap* map, int c0, int c1, int c2, int c3,
                                            std::uint32_t bar) {
#ifndef JK_WGMMA_UNAVAILABLE
  asm volatile(
      "cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4, %5}], "
      "[%6];\n" ::"r"(dst),
      "l"(reinterpret_cast<std::uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar)
      : "memory");
#endif
}

// Shared-memory matrix descriptor in the 128-byte swizzle (layout type 1 in bits 62-63), addresses in
// 16-byte units: start address, leading byte offset, stride byte offset 1024 (between 8-row groups).
// K-major operands: LBO unused (pass 16). MN-major operands: LBO = the bytes between 64-element blocks
// of the M/N dimension.
__device__ __forceinline__ std::uint64_t wgmma_desc_sw128(std::uint32_t addr, std::uint32_t lbo_bytes) {
  return static_cast<std::uint64_t>((addr >> 4) & 0x3fffu) | (static_cast<std::uint64_t>((lbo_bytes >> 4) & 0x3fffu) << 16) |
         (static_cast<std::uint64_t>(1024 >> 4) << 32) | (static_cast<std::uint64_t>(1) << 62);
}
// Makes this thread's ordinary shared-memory writes visible to the async proxy (wgmma operand reads).
__device__ __forceinline__ void fence_proxy_async() {
#ifndef JK_WGMMA_UNAVAILABLE
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
// Barrier `id` (1..15; 0 is __syncthreads) for `count` threads (a multiple of 32).
__device__ __forceinline__ void named_barrier_sync(int id, int count) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(count) : "memory");
}
__device__ __forceinline__ void wgmma_fence() {
#ifndef JK_WGMMA_UNAVAILABLE
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void wgmma_commit() {
#ifndef JK_WGMMA_UNAVAILABLE
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
#ifndef JK_WGMMA_UNAVAILABLE
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
#endif
}
// Keeps the compiler from moving accesses of an accumulator across the asynchronous wgmmas.
__device__ __forceinline__ void fence_operand(float& x) { asm volatile("" : "+f"(x)::"memory"); }
// D[64 x 256] += A[64 x 16] B[256 x 16]^T, both from shared memory (descriptors; TRANS_A / TRANS_B: the
// operand is MN-major). fp32 D in the accumulator layout (see the top of this file).
template <int TRANS_A, int TRANS_B>
__device__ __forceinline__ void wgmma_ss_m64n256k16(float (&d)[128], std::uint64_t desc_a, std::uint64_t desc_b) {
#ifndef JK_WGMMA_UNAVAILABLE
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
      "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
      "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "
      "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "
      "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
      "}, %128, %129, p, 1, 1, %130, %131;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
        "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
        "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
        "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
        "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),
        "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
        "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
        "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),
        "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
      : "l"(desc_a), "l"(desc_b), "n"(TRANS_A), "n"(TRANS_B));
#endif
}

// D[64 x 128] += A[64 x 16] B[128 x 16]^T, both from shared memory (descriptors; TRANS_A / TRANS_B: the
// operand is MN-major). fp32 D in the accumulator layout (see the top of this file).
template <int TRANS_A, int TRANS_B>
__device__ __forceinline__ void wgmma_ss_m64n128k16(float (&d)[64], std::uint64_t desc_a, std::uint64_t desc_b) {
#ifndef JK_WGMMA_UNAVAILABLE
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
      "}, %64, %65, p, 1, 1, %66, %67;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(desc_a), "l"(desc_b), "n"(TRANS_A), "n"(TRANS_B));
#endif
}

// D[64 x 64] += A[64 x 16] B[64 x 16]^T, both from shared memory (descriptors; TRANS_A / TRANS_B: the
// operand is MN-major). fp32 D in the accumulator layout (see the top of this file).
template <int TRANS_A, int TRANS_B>
__device__ __forceinline__ void wgmma_ss_m64n64k16(float (&d)[32], std::uint64_t desc_a, std::uint64_t desc_b) {
#ifndef JK_WGMMA_UNAVAILABLE
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
      "}, %32, %33, p, 1, 1, %34, %35;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "l"(desc_a), "l"(desc_b), "n"(TRANS_A), "n"(TRANS_B));
#endif
}

// D[64 x 128] += A[64 x 16] B[128 x 16]^T with A from registers (a[0..3]: the m16n8k16 A fragment of the
// thread's warp's 16 rows, bf16 pairs) and B from shared memory (TRANS_B: N-major).
template <int TRANS_B>
__device__ __forceinline__ void wgmma_rs_m64n128k16(float (&d)[64], const std::uint32_t (&a)[4], std::uint64_t desc_b) {
#ifndef JK_WGMMA_UNAVAILABLE
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
      "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
      "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
      "}, {%64, %65, %66, %67}, %68, p, 1, 1, %69;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
        "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
        "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
        "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "n"(TRANS_B));
#endif
}

// D[64 x 64] += A[64 x 16] B[64 x 16]^T with A from registers (a[0..3]: the m16n8k16 A fragment of the
// thread's warp's 16 rows, bf16 pairs) and B from shared memory (TRANS_B: N-major).
template <int TRANS_B>
__device__ __forceinline__ void wgmma_rs_m64n64k16(float (&d)[32], const std::uint32_t (&a)[4], std::uint64_t desc_b) {
#ifndef JK_WGMMA_UNAVAILABLE
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
      "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
      "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31"
      "}, {%32, %33, %34, %35}, %36, p, 1, 1, %37;\n"
      "}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
        "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
        "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
        "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "n"(TRANS_B));
#endif
}

// ---- host side ---------------------------------------------------------------------------------------------

// cuTensorMapEncodeTiled's signature (cuda.h), taken from the driver through the runtime (so the
// library does not link libcuda).
using EncodeTiledFn = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*, const cuuint64_t*,
                                   const cuuint64_t*, const cuuint32_t*, const cuuint32_t*, CUtensorMapInterleave,
                                   CUtensorMapSwizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

inline cudaError_t encode_tiled_fn(EncodeTiledFn* out) {
  static std::once_flag once;
  static EncodeTiledFn fn = nullptr;
  static cudaError_t status = cudaSuccess;
  std::call_once(once, [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult found = cudaDriverEntryPointSymbolNotFound;
    status = cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &found);
    if (status == cudaSuccess && (found != cudaDriverEntryPointSuccess || f == nullptr)) status = cudaErrorNotSupported;
    fn = reinterpret_cast<EncodeTiledFn>(f);
  });
  *out = fn;
  return status;
}

// A bf16 tensor of `rank` (1..5) dimensions as a TMA map: dims[0] innermost (elements), strides in bytes
// of dimensions 1.. (rank - 1 of them), box in elements (box[0] * 2 <= 128: one row of the 128-byte
// swizzle), zero fill outside, 256-byte L2 promotion.
inline cudaError_t make_bf16_map(CUtensorMap* map, const void* base, int rank, const std::int64_t* dims,
                                 const std::int64_t* strides, const int* box) {
  EncodeTiledFn encode = nullptr;
  JK_RETURN_IF_ERROR(encode_tiled_fn(&encode));
  cuuint64_t dim[5], stride[4];
  cuuint32_t box32[5], elem_stride[5];
  for (int i = 0; i < rank; ++i) {
    dim[i] = static_cast<cuuint64_t>(dims[i]);
    box32[i] = static_cast<cuuint32_t>(box[i]);
    elem_stride[i] = 1;
    if (i > 0) stride[i - 1] = static_cast<cuuint64_t>(strides[i - 1]);
  }
  const CUresult r = encode(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, static_cast<cuuint32_t>(rank), const_cast<void*>(base),
                            dim, stride, box32, elem_stride, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                            CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  return r == CUDA_SUCCESS ? cudaSuccess : cudaErrorInvalidValue;
}

// The library holds sm_90a code (and no plain sm_90 code the runtime could pick instead).
inline bool built_for_sm90a() {
#ifdef JK_CUDA_ARCHITECTURES
  const std::string list = std::string(",") + JK_CUDA_ARCHITECTURES + ",";
  return list.find(",90a,") != std::string::npos && list.find(",90,") == std::string::npos &&
         list.find(",90-real,") == std::string::npos && list.find(",90-virtual,") == std::string::npos;
#else
  return false;
#endif
}

// The current device is an sm_90 (Hopper) one and the library holds sm_90a code: the WGMMA kernels can run.
inline cudaError_t sm90a_available(bool* ok) {
  *ok = false;
  if (!built_for_sm90a()) return cudaSuccess;
  int device = 0, major = 0, minor = 0;
  JK_RETURN_IF_ERROR(cudaGetDevice(&device));
  JK_RETURN_IF_ERROR(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  JK_RETURN_IF_ERROR(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  *ok = major == 9 && minor == 0;
  return cudaSuccess;
}

}  // namespace jk::detail
