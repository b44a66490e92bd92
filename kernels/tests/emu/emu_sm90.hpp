// sm_90 asynchronous helpers for emu_cuda.hpp (grouped_gemm's wgmma kernel): mbarriers, TMA 2D tile
// loads (cp.async.bulk.tensor) and warpgroup MMA (wgmma.mma_async m64n256k16, bf16 -> fp32, both
// operands from shared memory through descriptors), from the PTX ISA's descriptions:
//   * mbarrier: init(count), arrive, arrive.expect_tx(bytes), try_wait.parity(P) (true once the phase of
//     parity P has completed: a fresh barrier is in phase 0, so waiting for parity 1 passes at once).
//     A phase completes when its pending arrivals and its transaction bytes are both 0; then the next
//     phase starts with `count` arrivals pending. A waiting thread blocks (St::Mbar) until then; if no
//     thread can run and a wait is left, the launch fails as a deadlock. Arrivals beyond the count, use
//     before init, or a barrier outside the dynamic shared memory fail the launch.
//   * TMA (rank 1..5): the whole box is written at issue (elements outside the tensor zero-filled), in the 128-byte
//     swizzle when the map has it (16-byte chunk c of a 128-byte row goes to c ^ ((address >> 7) & 7),
//     computed on the shared address, so a 1024-byte aligned destination gives chunk c ^ (row & 7)), then
//     completes the box's bytes on the mbarrier. The destination must be 128-byte aligned.
//   * wgmma (operands from shared memory, or A from registers): executed at issue by each thread for its
//     own accumulator elements (row 16 (t / 32) +
//     (t % 32) / 4 + 8 ((i / 2) % 2), column 8 (i / 4) + 2 (t % 4) + i % 2 of d[i], t the thread's index
//     in its warpgroup), in k order with fp32 sums. Descriptors in the 128-byte swizzle only (layout
//     type 1, base offset 0), element (r, k) before the swizzle at (PTX ISA canonical layouts, in bytes)
//       K-major  (transpose bit 0): start + (r / 8) SBO + (r % 8) 128 + 2 k, a k16 slice inside its
//                128-byte row;
//       MN-major (transpose bit 1): start + (r / 64) LBO + (k / 8) SBO + (k % 8) 128 + 2 (r % 64), start
//                at a 128-byte row.
//     fence/commit/wait are no-ops.
//   * bar.sync id, count (named barriers 1..15): completes when `count` threads have arrived.
// What it cannot show: asynchrony (a TMA copy or a wgmma that completes later on the GPU completes at
// once here, so reusing a stage too early goes unnoticed unless the barrier protocol itself is wrong),
// and the hardware's reading of the layouts if the PTX tables were misread.
#pragma once
#include <initializer_list>

#include "emu_cuda.hpp"
#include "emu_mma.hpp"

namespace emu {

inline Mbar& mbar_at(std::uint32_t bar, const char* what) {
  if (bar % 8 != 0) fail(std::string(what) + ": mbarrier address not 8-byte aligned");
  shared_at(bar, 8, what);
  auto it = rt().mbars.find(bar);
  if (it == rt().mbars.end()) fail(std::string(what) + ": mbarrier used before mbarrier.init");
  return it->second;
}

// Completes the phase if nothing is pending, and wakes the threads waiting for it.
inline void mbar_progress(std::uint32_t bar, Mbar& b) {
  if (b.pending != 0 || b.tx != 0) return;
  b.phase ^= 1u;
  b.pending = b.expected;
  for (auto& f : rt().fibers)
    if (f.st == St::Mbar && f.wait_bar == bar && f.wait_parity != b.phase) f.st = St::Ready;
}

inline void mbar_init(std::uint32_t bar, std::uint32_t count) {
  if (bar % 8 != 0) fail("mbarrier.init: address not 8-byte aligned");
  shared_at(bar, 8, "mbarrier.init");
  if (count < 1 || count > (1u << 20) - 1) fail("mbarrier.init: count outside 1 .. 2^20 - 1");
  Mbar b;
  b.expected = b.pending = static_cast<int>(count);
  rt().mbars[bar] = b;
}

inline void mbar_arrive(std::uint32_t bar) {
  Mbar& b = mbar_at(bar, "mbarrier.arrive");
  if (b.pending == 0) fail("mbarrier.arrive: more arrivals than the phase's count");
  --b.pending;
  mbar_progress(bar, b);
}

inline void mbar_arrive_expect_tx(std::uint32_t bar, std::uint32_t bytes) {
  Mbar& b = mbar_at(bar, "mbarrier.arrive.expect_tx");
  b.tx += bytes;
  if (b.pending == 0) fail("mbarrier.arrive.expect_tx: more arrivals than the phase's count");
  --b.pending;
  mbar_progress(bar, b);
}

inline void mbar_complete_tx(std::uint32_t bar, std::uint32_t bytes) {
  Mbar& b = mbar_at(bar, "complete_tx");
  b.tx -= bytes;
  mbar_progress(bar, b);
}

// Blocks the calling thread until barrier `key` (an mbarrier's shared address, or a named barrier's
// key) leaves the phase of parity `parity` (mbar_progress wakes it).
inline void block_until_phase_completes(std::uint32_t key, std::uint32_t parity) {
  Fiber* f = rt().cur;
  f->wait_bar = key;
  f->wait_parity = parity;
  f->st = St::Mbar;
  yield();
}

inline void mbar_wait(std::uint32_t bar, std::uint32_t parity) {
  Mbar& b = mbar_at(bar, "mbarrier.try_wait.parity");
  if (b.phase != (parity & 1u)) return;  // that phase has completed
  block_until_phase_completes(bar, parity & 1u);
}

inline std::uint32_t swizzle128(std::uint32_t addr) { return addr ^ (((addr >> 7) & 7u) << 4); }

// cp.async.bulk.tensor.Nd.shared::cluster.global.mbarrier::complete_tx::bytes [dst], [map, {coords}], [bar]
inline void tma_load(std::uint32_t dst, const void* map_ptr, std::initializer_list<int> coords, std::uint32_t bar) {
  TensorMapNd m;
  std::memcpy(&m, map_ptr, sizeof m);
  if (m.magic != kTensorMapMagic) fail("TMA load: not a tensor map made by cuTensorMapEncodeTiled");
  if (coords.size() != m.rank) fail("TMA load: the instruction's rank is not the map's");
  if (dst % 128 != 0) fail("TMA load: shared destination not 128-byte aligned");
  const std::uint32_t row_bytes = m.box[0] * m.elem_bytes;
  std::uint64_t elems = 1;
  for (std::uint32_t i = 0; i < m.rank; ++i) elems *= m.box[i];
  const std::uint32_t bytes = static_cast<std::uint32_t>(elems * m.elem_bytes);
  shared_at(dst, bytes, "TMA load");
  if (m.swizzle != CU_TENSOR_MAP_SWIZZLE_NONE && m.swizzle != CU_TENSOR_MAP_SWIZZLE_128B)
    fail("TMA load: swizzle mode not emulated (NONE and 128B are)");
  if (m.swizzle == CU_TENSOR_MAP_SWIZZLE_128B && row_bytes != 128)
    fail("TMA load: the 128-byte swizzle is emulated for 128-byte box rows only");
  const int* c = coords.begin();
  for (std::uint64_t e = 0; e < elems; ++e) {  // the box densely, dimension 0 fastest
    std::uint64_t rest = e, src = 0;
    bool in = true;
    for (std::uint32_t i = 0; i < m.rank; ++i) {
      const long long g = static_cast<long long>(c[i]) + static_cast<long long>(rest % m.box[i]);
      rest /= m.box[i];
      in = in && g >= 0 && static_cast<std::uint64_t>(g) < m.dim[i];
      if (in) src += static_cast<std::uint64_t>(g) * m.stride[i];
    }
    std::uint32_t a = dst + static_cast<std::uint32_t>(e) * m.elem_bytes;
    if (m.swizzle == CU_TENSOR_MAP_SWIZZLE_128B) a = swizzle128(a);
    unsigned char* d = shared_at(a, m.elem_bytes, "TMA load");
    if (in) std::memcpy(d, m.base + src, m.elem_bytes);
    else std::memset(d, 0, m.elem_bytes);
  }
  mbar_complete_tx(bar, bytes);
}

// The bf16 element (r, k) of an operand described by a 128-byte-swizzle descriptor (mn_major: the
// transpose bit).
inline float wgmma_operand(std::uint64_t desc, bool mn_major, int r, int k) {
  const std::uint32_t start = static_cast<std::uint32_t>(desc & 0x3fffu) << 4;
  const std::uint32_t lbo = static_cast<std::uint32_t>((desc >> 16) & 0x3fffu) << 4;
  const std::uint32_t sbo = static_cast<std::uint32_t>((desc >> 32) & 0x3fffu) << 4;
  const auto u = [](int v) { return static_cast<std::uint32_t>(v); };
  const std::uint32_t addr = mn_major ? start + u(r / 64) * lbo + u(k / 8) * sbo + u(k % 8) * 128u + 2u * u(r % 64)
                                      : start + u(r / 8) * sbo + u(r % 8) * 128u + 2u * u(k);
  std::uint16_t v;
  std::memcpy(&v, shared_at(swizzle128(addr), 2, "wgmma operand"), 2);
  return bf(v);
}

inline void wgmma_check_desc(std::uint64_t desc, bool mn_major, const char* which) {
  if ((desc >> 62) != 1u) fail(std::string("wgmma: ") + which + " descriptor not in the 128-byte swizzle (only one emulated)");
  if (((desc >> 49) & 7u) != 0) fail(std::string("wgmma: ") + which + " descriptor with a matrix base offset");
  const std::uint32_t start = static_cast<std::uint32_t>(desc & 0x3fffu) << 4;
  if (!mn_major && (start % 128u) + 32u > 128u) fail(std::string("wgmma: ") + which + " k16 slice crosses its 128-byte row");
  if (mn_major && start % 128u != 0) fail(std::string("wgmma: ") + which + " MN-major start not at a 128-byte row");
}

// wgmma.mma_async.sync.aligned.m64nNk16.f32.bf16.bf16 d, desc_a, desc_b, 1, 1, 1, trans_a, trans_b
// (D += A B^T, N = 2 R).
template <int R>
inline void wgmma_ss(float (&d)[R], std::uint64_t desc_a, std::uint64_t desc_b, int trans_a, int trans_b) {
  wgmma_check_desc(desc_a, trans_a != 0, "A");
  wgmma_check_desc(desc_b, trans_b != 0, "B");
  const int t = rt().cur->linear % 128;
  const int w = t / 32, lane = t % 32;
  float a[2][16];
  for (int h = 0; h < 2; ++h)
    for (int k = 0; k < 16; ++k) a[h][k] = wgmma_operand(desc_a, trans_a != 0, 16 * w + lane / 4 + 8 * h, k);
  for (int i = 0; i < R; ++i) {
    const int h = (i / 2) % 2;
    const int col = 8 * (i / 4) + 2 * (lane % 4) + i % 2;
    float s = d[i];
    for (int k = 0; k < 16; ++k) s += a[h][k] * wgmma_operand(desc_b, trans_b != 0, col, k);
    d[i] = s;
  }
}

// wgmma.mma_async.sync.aligned.m64nNk16.f32.bf16.bf16 d, {a0, a1, a2, a3}, desc_b, 1, 1, 1, trans_b: A from
// registers, each warp's 16 rows in the m16n8k16 A fragment layout (lane = 4 g + t: a0 = (g, 2t..2t+1),
// a1 = (g + 8, 2t..), a2 = (g, 2t + 8..), a3 = (g + 8, 2t + 8..), the lower column in the low half). The
// warp's lanes exchange their fragments (a full-warp collective), then each computes its own elements.
template <int R>
inline void wgmma_rs(float (&d)[R], const std::uint32_t (&a)[4], std::uint64_t desc_b, int trans_b) {
  wgmma_check_desc(desc_b, trans_b != 0, "B");
  collective(kWgmmaA, 0xffffffffu, 0, 0, 32, [](Group& g) {
    std::vector<float>& A = rt().wgmma_a[warp_of(rt().cur)];
    A.assign(256, 0.0f);
    const auto lo = [](std::uint32_t v) { return bf(static_cast<std::uint16_t>(v & 0xffff)); };
    const auto hi = [](std::uint32_t v) { return bf(static_cast<std::uint16_t>(v >> 16)); };
    for (int q = 0; q < 32; ++q) {
      const int gr = q / 4, t = q % 4;
      const std::uint32_t* x = g.in[q];
      A[gr * 16 + 2 * t] = lo(x[0]), A[gr * 16 + 2 * t + 1] = hi(x[0]);
      A[(gr + 8) * 16 + 2 * t] = lo(x[1]), A[(gr + 8) * 16 + 2 * t + 1] = hi(x[1]);
      A[gr * 16 + 2 * t + 8] = lo(x[2]), A[gr * 16 + 2 * t + 9] = hi(x[2]);
      A[(gr + 8) * 16 + 2 * t + 8] = lo(x[3]), A[(gr + 8) * 16 + 2 * t + 9] = hi(x[3]);
    }
  }, a, 4, nullptr, 0);
  // Read before this warp's next collective can overwrite it (every lane reads it right after returning).
  const std::vector<float>& A = rt().wgmma_a[warp_of(rt().cur)];
  const int lane = rt().cur->linear % 32;
  for (int i = 0; i < R; ++i) {
    const int row = lane / 4 + 8 * ((i / 2) % 2);
    const int col = 8 * (i / 4) + 2 * (lane % 4) + i % 2;
    float s = d[i];
    for (int k = 0; k < 16; ++k) s += A[row * 16 + k] * wgmma_operand(desc_b, trans_b != 0, col, k);
    d[i] = s;
  }
}

// bar.sync id, count: kept as an mbarrier-like object outside the shared address range.
inline void named_barrier(int id, int count) {
  if (id < 1 || id > 15) fail("bar.sync: barrier id outside 1..15 (0 is __syncthreads)");
  if (count < 32 || count % 32 != 0 || count > rt().nthreads) fail("bar.sync: thread count not a multiple of 32 in the block");
  const std::uint32_t key = 0x80000000u | static_cast<std::uint32_t>(id);
  auto it = rt().mbars.find(key);
  if (it == rt().mbars.end()) {
    Mbar b;
    b.expected = b.pending = count;
    it = rt().mbars.emplace(key, b).first;
  } else if (it->second.expected != count) {
    fail("bar.sync: the same barrier with different thread counts");
  }
  const std::uint32_t parity = it->second.phase;
  --it->second.pending;
  mbar_progress(key, it->second);
  if (it->second.phase != parity) return;  // this arrival completed it
  block_until_phase_completes(key, parity);
}

}  // namespace emu
