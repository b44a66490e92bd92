// CPU emulation of the real grouped_gemm.cu kernels (transformed copy: asm helpers and launches
// replaced), one OS thread per CUDA thread, std::barrier for __syncthreads and for warp collectives
// (ldmatrix, mma.sync emulated per the PTX m16n8k16 layouts). Checks the public API (own paths)
// against jkref on small shapes that exercise both kernels, all modes, partial tiles, empty experts.
#include <cuda_runtime.h>
#include <cublasLt.h>

#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <thread>
#include <vector>

namespace emu {
struct Dim { unsigned x = 0, y = 1, z = 1; };
thread_local Dim tIdx, bIdx;
Dim gDim, bDim;
struct WarpX { std::uint32_t a[32][4]; std::uint32_t b[32][2]; float c[32][4]; std::uint32_t addr[32]; };
struct Block {
  std::unique_ptr<std::barrier<>> bar;
  std::vector<std::unique_ptr<std::barrier<>>> warp_bars;
  std::vector<WarpX> wx;
};
Block* g_block = nullptr;
alignas(128) unsigned char g_smem[96 * 1024];
inline unsigned char* dynamic_smem() { return g_smem; }
inline std::uint32_t cvta(const void* p) { return static_cast<std::uint32_t>(static_cast<const unsigned char*>(p) - g_smem); }
inline void syncthreads() { g_block->bar->arrive_and_wait(); }
inline int warp() { return static_cast<int>(tIdx.x / 32); }
inline int lane() { return static_cast<int>(tIdx.x % 32); }
inline void warp_sync() { g_block->warp_bars[warp()]->arrive_and_wait(); }
inline float u2f(std::uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline std::uint32_t f2u(float f) { std::uint32_t u; std::memcpy(&u, &f, 4); return u; }
inline float bf(std::uint16_t b) { return u2f(static_cast<std::uint32_t>(b) << 16); }

inline void cp_async_16(std::uint32_t dst, const void* src, bool valid) {
  if (dst % 16 != 0 || dst + 16 > sizeof(g_smem)) { std::printf("cp.async: bad shared address %u\n", dst); std::abort(); }
  if (valid && (reinterpret_cast<std::uintptr_t>(src) % 16) != 0) { std::printf("cp.async: unaligned global source\n"); std::abort(); }
  if (valid) std::memcpy(g_smem + dst, src, 16); else std::memset(g_smem + dst, 0, 16);
}
inline void ldmatrix(std::uint32_t (&r)[4], std::uint32_t addr, bool trans) {
  WarpX& x = g_block->wx[warp()];
  const int l = lane();
  if (addr % 16 != 0) { std::printf("ldmatrix: unaligned row address\n"); std::abort(); }
  x.addr[l] = addr;
  warp_sync();
  for (int j = 0; j < 4; ++j) {
    std::uint16_t e0, e1;
    const auto at = [&](int who, int elem) { std::uint16_t v; std::memcpy(&v, g_smem + x.addr[8 * j + who] + 2 * elem, 2); return v; };
    if (!trans) { e0 = at(l / 4, 2 * (l % 4)); e1 = at(l / 4, 2 * (l % 4) + 1); }
    else { e0 = at(2 * (l % 4), l / 4); e1 = at(2 * (l % 4) + 1, l / 4); }
    r[j] = static_cast<std::uint32_t>(e0) | (static_cast<std::uint32_t>(e1) << 16);
  }
  warp_sync();
}
inline void mma(float (&d)[4], const std::uint32_t (&a)[4], const std::uint32_t (&b)[2]) {
  WarpX& x = g_block->wx[warp()];
  const int l = lane();
  for (int i = 0; i < 4; ++i) { x.a[l][i] = a[i]; x.c[l][i] = d[i]; }
  x.b[l][0] = b[0]; x.b[l][1] = b[1];
  warp_sync();
  float A[16][16], B[16][8];
  for (int q = 0; q < 32; ++q) {
    const int g = q / 4, t = q % 4;
    const auto lo = [](std::uint32_t v) { return bf(static_cast<std::uint16_t>(v & 0xffff)); };
    const auto hi = [](std::uint32_t v) { return bf(static_cast<std::uint16_t>(v >> 16)); };
    A[g][2 * t] = lo(x.a[q][0]); A[g][2 * t + 1] = hi(x.a[q][0]);
    A[g + 8][2 * t] = lo(x.a[q][1]); A[g + 8][2 * t + 1] = hi(x.a[q][1]);
    A[g][2 * t + 8] = lo(x.a[q][2]); A[g][2 * t + 9] = hi(x.a[q][2]);
    A[g + 8][2 * t + 8] = lo(x.a[q][3]); A[g + 8][2 * t + 9] = hi(x.a[q][3]);
    B[2 * t][g] = lo(x.b[q][0]); B[2 * t + 1][g] = hi(x.b[q][0]);
    B[2 * t + 8][g] = lo(x.b[q][1]); B[2 * t + 9][g] = hi(x.b[q][1]);
  }
  const int g = l / 4, t = l % 4;
  const int rows[4] = {g, g, g + 8, g + 8}, cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
  float out[4];
  for (int i = 0; i < 4; ++i) {
    float s = x.c[l][i];
    for (int k = 0; k < 16; ++k) s += A[rows[i]][k] * B[k][cols[i]];
    out[i] = s;
  }
  warp_sync();
  for (int i = 0; i < 4; ++i) d[i] = out[i];
}
inline void launch(const std::function<void()>& body, unsigned grid, unsigned threads, std::size_t smem = 0) {
  if (smem > sizeof(g_smem)) { std::printf("launch: too much dynamic shared memory\n"); std::abort(); }
  gDim = {grid, 1, 1};
  bDim = {threads, 1, 1};
  for (unsigned b = 0; b < grid; ++b) {
    Block blk;
    blk.bar = std::make_unique<std::barrier<>>(threads);
    for (unsigned w = 0; w < threads / 32; ++w) blk.warp_bars.push_back(std::make_unique<std::barrier<>>(32));
    blk.wx.resize(threads / 32);
    g_block = &blk;
    std::memset(g_smem, 0xcd, sizeof(g_smem));  // garbage: unfilled shared memory must never be used
    std::vector<std::thread> ts;
    for (unsigned i = 0; i < threads; ++i) ts.emplace_back([&, i, b] { tIdx.x = i; bIdx.x = b; body(); });
    for (auto& t : ts) t.join();
  }
}
}  // namespace emu

#define threadIdx emu::tIdx
#define blockIdx emu::bIdx
#define gridDim emu::gDim
#define blockDim emu::bDim
#define __syncthreads() emu::syncthreads()
#define __cvta_generic_to_shared(p) emu::cvta(p)
#undef __shared__
#define __shared__ static
#undef __global__
#define __global__
#undef __device__
#define __device__
#undef __forceinline__
#define __forceinline__ inline
#undef __launch_bounds__
#define __launch_bounds__(...)
#define __uint_as_float(u) emu::u2f(u)
#define __float_as_uint(f) emu::f2u(f)
#define cudaGetDevice(p) (*(p) = 0, cudaSuccess)
#define cudaDeviceGetAttribute(p, a, d) (*(p) = 2, cudaSuccess)
#define cudaFuncSetAttribute(...) cudaSuccess
#define cudaOccupancyMaxActiveBlocksPerMultiprocessor(p, ...) (*(p) = 2, cudaSuccess)
#define cudaGetLastError() cudaSuccess
#define __shfl_xor_sync(m, v, o) (v)  // unused by grouped_gemm (warp_sum in common.cuh)

