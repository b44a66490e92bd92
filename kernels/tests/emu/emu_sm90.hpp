// sm_90 asynchronous helpers for emu_cuda.hpp (the WGMMA kernels of grouped_gemm and attention):
// mbarriers, TMA tile loads (cp.async.bulk.tensor) and warpgroup MMA (wgmma.mma_async m64nNk16, bf16 ->
// fp32, operands from shared memory through descriptors, or A from registers), from the PTX ISA:
//   * mbarrier: init(count), arrive, arrive.expect_tx(bytes), try_wait.parity(P) (true once the phase of
//     parity P has completed: a fresh barrier is in phase 0, so waiting for parity 1 passes at once).
//     A phase completes when its pending arrivals and its transaction bytes are both 0; then the next
//     phase starts with `count` arrivals pending. A waiting thread blocks (St::Mbar) until then; if no
//     thread can run and a wait is left, the launch fails as a deadlock. Arrivals beyond the count, use
//     before init, or a barrier outside the dynamic shared memory fail the launch.
//   * TMA (rank 1..5): the whole box is written (elements outside the tensor zero-filled), in the 128-byte
//     swizzle when the map has it (16-byte chunk c of a 128-byte row goes to c ^ ((address >> 7) & 7),
//     computed on the shared address, so a 1024-byte aligned destination gives chunk c ^ (row & 7)), then
//     completes the box's bytes on the mbarrier. The destination must be 128-byte aligned. When it lands
//     (Config): at issue (EMU_TMA=issue, the default: a stage refilled while still being read shows), or
//     as late as possible (EMU_TMA=late: only when no thread of the block can run, so a thread reading a
//     stage without waiting for its mbarrier sees the old bytes; a block that exits with copies in flight
//     fails).
//   * wgmma: each thread computes its own accumulator elements (row 16 (t / 32) + (t % 32) / 4 +
//     8 ((i / 2) % 2), column 8 (i / 4) + 2 (t % 4) + i % 2 of d[i], t the thread's index in its
//     warpgroup), in k order with fp32 sums. Descriptors in the 128-byte swizzle only (layout type 1,
//     base offset 0), element (r, k) before the swizzle at (PTX ISA canonical layouts, in bytes)
//       K-major  (transpose bit 0): start + (r / 8) SBO + (r % 8) 128 + 2 k, a k16 slice inside its
//                128-byte row;
//       MN-major (transpose bit 1): start + (r / 64) LBO + (k / 8) SBO + (k % 8) 128 + 2 (r % 64), start
//                at a 128-byte row.
//     Asynchrony (EMU_WGMMA=async, the default), as the PTX ISA states it: a wgmma.mma_async is only
//     recorded at issue and runs at the wgmma.wait_group that covers its commit group, reading its
//     shared-memory operands then (a stage released or overwritten before that wait shows as wrong
//     products). Between issue and completion the accumulator registers hold a poison (NaN): reading
//     them before the wait is UB on the GPU and shows here; writes there are lost at completion. Chained
//     wgmmas of one shape on accumulators in flight are ordered, as on the GPU. A wgmma that starts on
//     registers not in flight needs a wgmma.fence since the thread's last completed wait_group handed
//     registers back; a thread that exits with wgmmas in flight fails. A register A is read at issue
//     (changing it before the wait, UB on the GPU, is not caught). EMU_WGMMA=issue runs them at issue.
//   * the async proxy: TMA writes and wgmma reads go through a second copy of the dynamic shared memory
//     (Runtime::async_view); fence.proxy.async copies the ordinary (generic) view into it. A wgmma
//     operand byte that differs between the two views was written by an ordinary store without a
//     fence.proxy.async after it (or while an in-flight wgmma read it): the launch fails.
//   * bar.sync id, count (named barriers 1..15): completes when `count` threads have arrived.
// What it cannot show: the hardware's reading of the layouts if the PTX tables were misread, and
// interleavings other than these two extremes (copies at issue or at the last moment; wgmmas at the
// wait).
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

// Completes the phase if nothing is pending, and wakes the threads waiting for it; true if it woke any.
inline bool mbar_progress(std::uint32_t bar, Mbar& b) {
  if (b.pending != 0 || b.tx != 0) return false;
  b.phase ^= 1u;
  b.pending = b.expected;
  bool woke = false;
  for (auto& f : rt().fibers)
    if (f.st == St::Mbar && f.wait_bar == bar && f.wait_parity != b.phase) f.st = St::Ready, woke = true;
  return woke;
}

// An arrival that completed a phase others wait for lets them run first (the calling thread stays
// ready): a thread that goes on using what it has just released (a stage whose wgmmas are still in
// flight, say) then sees the refill.
inline void run_woken_first(bool woke) {
  if (woke) yield();
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
  run_woken_first(mbar_progress(bar, b));
}

inline void mbar_arrive_expect_tx(std::uint32_t bar, std::uint32_t bytes) {
  Mbar& b = mbar_at(bar, "mbarrier.arrive.expect_tx");
  b.tx += bytes;
  if (b.pending == 0) fail("mbarrier.arrive.expect_tx: more arrivals than the phase's count");
  --b.pending;
  run_woken_first(mbar_progress(bar, b));
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

// fence.proxy.async: the ordinary stores made so far become visible to the async proxy (all threads'
// stores here: the emulator does not track which thread wrote what).
inline void fence_proxy_async() {
  Runtime& r = rt();
  if (r.dyn_bytes > 0) std::memcpy(r.async_view.data(), r.dyn, r.dyn_bytes);
}

inline std::uint32_t tma_box_bytes(const TensorMapNd& m) {
  std::uint64_t elems = 1;
  for (std::uint32_t i = 0; i < m.rank; ++i) elems *= m.box[i];
  return static_cast<std::uint32_t>(elems * m.elem_bytes);
}

// Writes the box into both views of the shared memory and completes its bytes on the barrier.
inline void tma_land(const TmaCopy& c) {
  const TensorMapNd& m = c.map;
  const std::uint64_t elems = tma_box_bytes(m) / m.elem_bytes;
  for (std::uint64_t e = 0; e < elems; ++e) {  // the box densely, dimension 0 fastest
    std::uint64_t rest = e, src = 0;
    bool in = true;
    for (std::uint32_t i = 0; i < m.rank; ++i) {
      const long long g = static_cast<long long>(c.coords[i]) + static_cast<long long>(rest % m.box[i]);
      rest /= m.box[i];
      in = in && g >= 0 && static_cast<std::uint64_t>(g) < m.dim[i];
      if (in) src += static_cast<std::uint64_t>(g) * m.stride[i];
    }
    std::uint32_t a = c.dst + static_cast<std::uint32_t>(e) * m.elem_bytes;
    if (m.swizzle == CU_TENSOR_MAP_SWIZZLE_128B) a = swizzle128(a);
    unsigned char* d = shared_at(a, m.elem_bytes, "TMA load");
    if (in) std::memcpy(d, m.base + src, m.elem_bytes);
    else std::memset(d, 0, m.elem_bytes);
    std::memcpy(rt().async_view.data() + a, d, m.elem_bytes);
  }
  mbar_complete_tx(c.bar, tma_box_bytes(m));
}

// EMU_TMA=late: every copy in flight lands, in issue order (the scheduler calls this when no thread of
// the block can run).
inline void tma_land_inflight() {
  std::vector<TmaCopy> copies;
  copies.swap(rt().tma_inflight);
  for (const TmaCopy& c : copies) tma_land(c);
}

// cp.async.bulk.tensor.Nd.shared::cluster.global.mbarrier::complete_tx::bytes [dst], [map, {coords}], [bar]
inline void tma_load(std::uint32_t dst, const void* map_ptr, std::initializer_list<int> coords, std::uint32_t bar) {
  TmaCopy c;
  std::memcpy(&c.map, map_ptr, sizeof c.map);
  const TensorMapNd& m = c.map;
  if (m.magic != kTensorMapMagic) fail("TMA load: not a tensor map made by cuTensorMapEncodeTiled");
  if (coords.size() != m.rank) fail("TMA load: the instruction's rank is not the map's");
  if (dst % 128 != 0) fail("TMA load: shared destination not 128-byte aligned");
  shared_at(dst, tma_box_bytes(m), "TMA load");
  if (m.swizzle != CU_TENSOR_MAP_SWIZZLE_NONE && m.swizzle != CU_TENSOR_MAP_SWIZZLE_128B)
    fail("TMA load: swizzle mode not emulated (NONE and 128B are)");
  if (m.swizzle == CU_TENSOR_MAP_SWIZZLE_128B && m.box[0] * m.elem_bytes != 128)
    fail("TMA load: the 128-byte swizzle is emulated for 128-byte box rows only");
  mbar_at(bar, "TMA load");
  c.dst = dst;
  c.bar = bar;
  std::copy(coords.begin(), coords.end(), c.coords);
  if (!cfg().tma_late) return tma_land(c);
  rt().tma_inflight.push_back(c);
  rt().land_tma = tma_land_inflight;
}

// The bf16 element (r, k) of an operand described by a 128-byte-swizzle descriptor (mn_major: the
// transpose bit), as the async proxy reads it; an ordinary store not fenced to it fails the launch.
inline float wgmma_operand(std::uint64_t desc, bool mn_major, int r, int k) {
  const std::uint32_t start = static_cast<std::uint32_t>(desc & 0x3fffu) << 4;
  const std::uint32_t lbo = static_cast<std::uint32_t>((desc >> 16) & 0x3fffu) << 4;
  const std::uint32_t sbo = static_cast<std::uint32_t>((desc >> 32) & 0x3fffu) << 4;
  const auto u = [](int v) { return static_cast<std::uint32_t>(v); };
  const std::uint32_t addr = swizzle128(mn_major ? start + u(r / 64) * lbo + u(k / 8) * sbo + u(k % 8) * 128u + 2u * u(r % 64)
                                                 : start + u(r / 8) * sbo + u(r % 8) * 128u + 2u * u(k));
  std::uint16_t v, seen;
  std::memcpy(&v, shared_at(addr, 2, "wgmma operand"), 2);
  std::memcpy(&seen, rt().async_view.data() + addr, 2);
  if (v != seen) {
    char b[240];
    std::snprintf(b, sizeof b,
                  "wgmma reads shared byte 0x%x, changed by an ordinary store that no fence.proxy.async made visible to "
                  "the async proxy (or while an in-flight wgmma read it)",
                  addr);
    fail(b);
  }
  return bf(seen);
}

inline void wgmma_check_desc(std::uint64_t desc, bool mn_major, const char* which) {
  if ((desc >> 62) != 1u) fail(std::string("wgmma: ") + which + " descriptor not in the 128-byte swizzle (only one emulated)");
  if (((desc >> 49) & 7u) != 0) fail(std::string("wgmma: ") + which + " descriptor with a matrix base offset");
  const std::uint32_t start = static_cast<std::uint32_t>(desc & 0x3fffu) << 4;
  if (!mn_major && (start % 128u) + 32u > 128u) fail(std::string("wgmma: ") + which + " k16 slice crosses its 128-byte row");
  if (mn_major && start % 128u != 0) fail(std::string("wgmma: ") + which + " MN-major start not at a 128-byte row");
}

// D += A B^T for the calling thread's accumulator elements acc[0 .. op.n).
inline void wgmma_execute(const AsyncMma& op, float* acc) {
  const int t = rt().cur->linear % 128;
  const int w = t / 32, lane = t % 32;
  float a[2][16];
  for (int h = 0; h < 2; ++h)
    for (int k = 0; k < 16; ++k)
      a[h][k] = op.reg_a ? op.a[h][k] : wgmma_operand(op.desc_a, op.trans_a, 16 * w + lane / 4 + 8 * h, k);
  for (int i = 0; i < op.n; ++i) {
    const int h = (i / 2) % 2;
    const int col = 8 * (i / 4) + 2 * (lane % 4) + i % 2;
    float s = acc[i];
    for (int k = 0; k < 16; ++k) s += a[h][k] * wgmma_operand(op.desc_b, op.trans_b, col, k);
    acc[i] = s;
  }
}

// Issue: at once (EMU_WGMMA=issue), or recorded with the accumulators put in flight.
template <int R>
inline void wgmma_issue(AsyncMma op, float (&d)[R]) {
  if (!cfg().wgmma_async) {
    op.n = R;
    return wgmma_execute(op, d);
  }
  Fiber* f = rt().cur;
  auto it = f->inflight.find(d);
  if (it == f->inflight.end()) {
    if (!f->mma_fenced)
      fail("wgmma.mma_async on registers the thread may have accessed since its last wgmma.wait_group, without a "
           "wgmma.fence in between (UB)");
    f->inflight.emplace(d, std::vector<float>(d, d + R));
  } else if (it->second.size() != static_cast<std::size_t>(R)) {
    fail("wgmma.mma_async of another shape on accumulators already in flight");
  }
  for (float& x : d) x = u2f(static_cast<std::uint32_t>(kPoison));
  op.d = d;
  op.n = R;
  f->mma.push_back(op);
}

inline void wgmma_fence() { rt().cur->mma_fenced = true; }

// wgmma.commit_group: the uncommitted wgmmas form the next group.
inline void wgmma_commit() { commit_group(rt().cur->mma, rt().cur->mma_groups); }

// wgmma.wait_group N: every committed group but the newest N completes, in issue order; accumulators
// with nothing left in flight get their values back.
inline void wgmma_wait(int n) {
  if (!cfg().wgmma_async) return;
  Fiber* f = rt().cur;
  wait_group(f->mma, f->mma_groups, n, [f](const AsyncMma& op) { wgmma_execute(op, f->inflight.at(op.d).data()); });
  for (auto it = f->inflight.begin(); it != f->inflight.end();) {
    bool busy = false;
    for (const AsyncMma& op : f->mma) busy = busy || op.d == it->first;
    if (busy) {
      ++it;
      continue;
    }
    std::copy(it->second.begin(), it->second.end(), it->first);
    it = f->inflight.erase(it);
    f->mma_fenced = false;
  }
}

// wgmma.mma_async.sync.aligned.m64nNk16.f32.bf16.bf16 d, desc_a, desc_b, 1, 1, 1, trans_a, trans_b
// (D += A B^T, N = 2 R).
template <int R>
inline void wgmma_ss(float (&d)[R], std::uint64_t desc_a, std::uint64_t desc_b, int trans_a, int trans_b) {
  wgmma_check_desc(desc_a, trans_a != 0, "A");
  wgmma_check_desc(desc_b, trans_b != 0, "B");
  AsyncMma op;
  op.desc_a = desc_a, op.desc_b = desc_b, op.trans_a = trans_a != 0, op.trans_b = trans_b != 0;
  wgmma_issue(op, d);
}

// wgmma.mma_async.sync.aligned.m64nNk16.f32.bf16.bf16 d, {a0, a1, a2, a3}, desc_b, 1, 1, 1, trans_b: A from
// registers, each warp's 16 rows in the m16n8k16 A fragment layout (lane = 4 g + t: a0 = (g, 2t..2t+1),
// a1 = (g + 8, 2t..), a2 = (g, 2t + 8..), a3 = (g + 8, 2t + 8..), the lower column in the low half). The
// warp's lanes exchange their fragments at issue (a full-warp collective); each keeps its two rows.
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
  AsyncMma op;
  op.desc_b = desc_b, op.trans_b = trans_b != 0, op.reg_a = true;
  for (int h = 0; h < 2; ++h)
    for (int k = 0; k < 16; ++k) op.a[h][k] = A[(lane / 4 + 8 * h) * 16 + k];
  wgmma_issue(op, d);
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
