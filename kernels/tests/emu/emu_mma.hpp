// Tensor-core and async-copy helpers for emu_cuda.hpp (families with inline asm: grouped_gemm, attention):
// mma.sync.m16n8k16 bf16 -> fp32, ldmatrix.x4(.trans), cp.async (16 bytes, src-size 0..16, with
// commit_group / wait_group: lands at issue, or with EMU_CP_ASYNC=wait at the wait that covers it),
// cvt.rn.bf16x2.f32,
// __cvta_generic_to_shared, all from the PTX ISA fragment layouts (as kernels/tests/emu/grouped_gemm
// did with OS threads), as full-warp collectives with the mask/exit rules of emu_cuda.hpp.
#pragma once
#include "emu_cuda.hpp"

namespace emu {

// Shared addresses are offsets into the launch's dynamic shared memory (the only memory the asm
// helpers address); anything else is a failure.
inline std::uint32_t cvta_shared(const void* p) {
  Runtime& r = rt();
  const auto* b = r.dyn;
  const auto* q = static_cast<const unsigned char*>(p);
  if (q < b || q > b + r.dyn_bytes) fail("__cvta_generic_to_shared: not dynamic shared memory");
  return static_cast<std::uint32_t>(q - b);
}
inline unsigned char* shared_at(std::uint32_t addr, std::size_t bytes, const char* what) {
  Runtime& r = rt();
  if (static_cast<std::size_t>(addr) + bytes > r.dyn_bytes) fail(std::string(what) + ": shared address past the launched dynamic size");
  return r.dyn + addr;
}

// A 16-byte copy into shared memory: at issue (EMU_CP_ASYNC=issue), or recorded until the issuing
// thread's cp.async.wait_group that covers it (=wait: a read of the stage before that wait, or by another
// thread before the barrier after it, sees the old bytes).
inline void cp_async_issue(std::uint32_t dst, const unsigned char (&bytes)[16]) {
  unsigned char* d = shared_at(dst, 16, "cp.async");
  if (!cfg().cp_async_late) {
    std::memcpy(d, bytes, 16);
    return;
  }
  CpCopy c;
  c.dst = dst;
  std::memcpy(c.bytes, bytes, 16);
  rt().cur->cp.push_back(c);
}

inline void cp_async_16(std::uint32_t dst, const void* src, bool valid) {
  if (dst % 16 != 0) fail("cp.async: shared address not 16-byte aligned");
  if (valid && reinterpret_cast<std::uintptr_t>(src) % 16 != 0) fail("cp.async: global source not 16-byte aligned");
  unsigned char b[16] = {};
  if (valid) std::memcpy(b, src, 16);
  cp_async_issue(dst, b);
}

// cp.async.cg.shared.global [dst], [src], 16, src_bytes: the first src_bytes (0..16) bytes from src,
// the rest of the 16 zero-filled (PTX ISA, cp.async: src-size); attention.cu passes 16 or 0.
inline void cp_async_16_bytes(std::uint32_t dst, const void* src, int src_bytes) {
  if (src_bytes < 0 || src_bytes > 16) fail("cp.async: src-size outside 0..16");
  if (dst % 16 != 0) fail("cp.async: shared address not 16-byte aligned");
  if (src_bytes > 0 && reinterpret_cast<std::uintptr_t>(src) % 16 != 0) fail("cp.async: global source not 16-byte aligned");
  unsigned char b[16] = {};
  if (src_bytes > 0) std::memcpy(b, src, static_cast<std::size_t>(src_bytes));
  cp_async_issue(dst, b);
}

// cp.async.commit_group / cp.async.wait_group N (the thread's copies; wait: all but the newest N groups land).
inline void cp_async_commit() { commit_group(rt().cur->cp, rt().cur->cp_groups); }
inline void cp_async_wait(int n) {
  Fiber* f = rt().cur;
  wait_group(f->cp, f->cp_groups, n, [](const CpCopy& c) { std::memcpy(shared_at(c.dst, 16, "cp.async"), c.bytes, 16); });
}

// cvt.rn.bf16x2.f32 d, a, b: a -> the upper half, b -> the lower half, round to nearest even,
// NaN -> the canonical 0x7fff (PTX ISA, cvt).
inline std::uint16_t cvt_rn_bf16(float f) {
  const std::uint32_t u = f2u(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return 0x7fff;
  return static_cast<std::uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
inline std::uint32_t cvt_rn_bf16x2(float a, float b) {
  return (static_cast<std::uint32_t>(cvt_rn_bf16(a)) << 16) | cvt_rn_bf16(b);
}

inline float bf(std::uint16_t b) { return u2f(static_cast<std::uint32_t>(b) << 16); }

inline void ldmatrix(std::uint32_t (&reg)[4], std::uint32_t addr, bool trans) {
  if (addr % 16 != 0) fail("ldmatrix: row address not 16-byte aligned");
  std::uint32_t out[4];
  collective(trans ? kLdmatrixT : kLdmatrix, 0xffffffffu, addr, 0, 32, [trans](Group& g) {
    for (int l = 0; l < 32; ++l)
      for (int j = 0; j < 4; ++j) {
        const auto at = [&](int who, int elem) {
          std::uint16_t v;
          std::memcpy(&v, shared_at(static_cast<std::uint32_t>(g.val[8 * j + who]), 16, "ldmatrix") + 2 * elem, 2);
          return v;
        };
        std::uint16_t e0, e1;
        if (!trans) { e0 = at(l / 4, 2 * (l % 4)); e1 = at(l / 4, 2 * (l % 4) + 1); }
        else { e0 = at(2 * (l % 4), l / 4); e1 = at(2 * (l % 4) + 1, l / 4); }
        g.out[l][j] = static_cast<std::uint32_t>(e0) | (static_cast<std::uint32_t>(e1) << 16);
      }
  }, nullptr, 0, out, 4);
  for (int j = 0; j < 4; ++j) reg[j] = out[j];
}

// D = A B + C, A 16x16 row, B 16x8 col, bf16 in, fp32 accumulate in k order.
inline void mma(float (&d)[4], const std::uint32_t (&a)[4], const std::uint32_t (&b)[2]) {
  std::uint32_t in[10], out[4];
  for (int i = 0; i < 4; ++i) in[i] = a[i];
  in[4] = b[0];
  in[5] = b[1];
  for (int i = 0; i < 4; ++i) in[6 + i] = f2u(d[i]);
  collective(kMma, 0xffffffffu, 0, 0, 32, [](Group& g) {
    float A[16][16], B[16][8];
    const auto lo = [](std::uint32_t v) { return bf(static_cast<std::uint16_t>(v & 0xffff)); };
    const auto hi = [](std::uint32_t v) { return bf(static_cast<std::uint16_t>(v >> 16)); };
    for (int q = 0; q < 32; ++q) {
      const int gr = q / 4, t = q % 4;
      const std::uint32_t* x = g.in[q];
      A[gr][2 * t] = lo(x[0]); A[gr][2 * t + 1] = hi(x[0]);
      A[gr + 8][2 * t] = lo(x[1]); A[gr + 8][2 * t + 1] = hi(x[1]);
      A[gr][2 * t + 8] = lo(x[2]); A[gr][2 * t + 9] = hi(x[2]);
      A[gr + 8][2 * t + 8] = lo(x[3]); A[gr + 8][2 * t + 9] = hi(x[3]);
      B[2 * t][gr] = lo(x[4]); B[2 * t + 1][gr] = hi(x[4]);
      B[2 * t + 8][gr] = lo(x[5]); B[2 * t + 9][gr] = hi(x[5]);
    }
    for (int l = 0; l < 32; ++l) {
      const int gr = l / 4, t = l % 4;
      const int rows[4] = {gr, gr, gr + 8, gr + 8}, cols[4] = {2 * t, 2 * t + 1, 2 * t, 2 * t + 1};
      for (int i = 0; i < 4; ++i) {
        float s = u2f(g.in[l][6 + i]);
        for (int k = 0; k < 16; ++k) s += A[rows[i]][k] * B[k][cols[i]];
        g.out[l][i] = f2u(s);
      }
    }
  }, in, 10, out, 4);
  for (int i = 0; i < 4; ++i) d[i] = u2f(out[i]);
}

}  // namespace emu

#undef __cvta_generic_to_shared
#define __cvta_generic_to_shared(p) ::emu::cvta_shared(p)
