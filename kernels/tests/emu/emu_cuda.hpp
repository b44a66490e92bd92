// CPU emulation of CUDA for the real kernels/src/FAMILY.cu and kernels/tests/test_FAMILY.cu
// (family-independent; transform.py makes the host-compilable copies, run.sh builds and runs them).
//
// Execution model: a launch runs its blocks one after the other; every CUDA thread of a block is a
// fiber (ucontext) on one OS thread, run until it blocks at __syncthreads, a warp collective or its
// end. The scheduler order of the fibers between two synchronisation points (and of the blocks) is
// EMU_ORDER=forward|reverse|random, so a missing __syncthreads/__syncwarp (a thread reading what
// another thread has not written yet) changes the result between orders.
//   * __syncthreads completes only when every live thread of the block has arrived; if some threads
//     have exited, or live threads wait at different barriers/collectives, the launch fails (UB on a
//     GPU: hang or garbage) and the test sees cudaErrorLaunchFailure.
//   * warp collectives (__shfl*_sync, __ballot_sync, __any/__all_sync, __match_any_sync,
//     __syncwarp) follow the PTX rules: the calling lane must be in the mask, the collective completes
//     when every (existing) lane of the mask has arrived at a collective of the same kind with the
//     same mask, a lane that has exited or is in another collective deadlocks (reported), reading from
//     a lane outside the mask gives an undefined value (here: a poison value, counted and reported).
//   * shared memory (static __shared__ per declaration, dynamic as launched) is fresh per block and
//     filled with EMU_FILL (default 0xff: NaN for floats, -1 for ints); the static total must fit in
//     48 KiB, a dynamic size over 48 KiB needs cudaFuncSetAttribute.
//   * launch configuration checks as on sm_90 (block <= 1024 threads, grid.y/z <= 65535, ...).
//   * the host runtime is fake: cudaMalloc = aligned malloc (one address space), copies and memsets
//     are immediate, streams and events are no-ops, one device with EMU_SMS (default 4) SMs.
//   * cases too large to emulate are skipped (emu::Skip): a cudaMalloc over EMU_MAX_BYTES or more than
//     EMU_MAX_THREADS emulated threads in one case.
//   * asynchronous operations (emu_mma.hpp, emu_sm90.hpp; Config): a wgmma completes at the
//     wgmma.wait_group covering it (EMU_WGMMA), TMA boxes land at issue or when nothing else can run
//     (EMU_TMA), cp.async copies at issue or at their thread's cp.async.wait_group (EMU_CP_ASYNC); a
//     thread may not exit with wgmmas or copies in flight, nor a block with TMA loads in flight.
#pragma once
#include <cuda.h>  // CUtensorMap (TMA descriptors: emu_sm90.hpp, the fake encoder in emu_host.hpp)
#include <cuda_runtime.h>
#include <ucontext.h>
#include <sys/mman.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

namespace emu {

struct Skip {
  std::string why;
};

struct Config {
  int order = 0;  // 0 forward, 1 reverse, 2 random
  unsigned char fill = 0xff;
  std::uint64_t seed = 1;
  std::size_t max_bytes = 128u << 20;
  std::uint64_t max_threads = 4u << 20;
  std::size_t device_memory = 0;  // the emulated GPU's memory: cudaMalloc fails beyond it (0: no limit)
  int sms = 4;
  // sm_90 asynchrony (emu_sm90.hpp): EMU_WGMMA=async (default) completes a wgmma at the wgmma.wait_group
  // that covers it, =issue at issue (the older model); EMU_TMA=issue (default) lands a TMA copy at issue,
  // =late only when no thread of the block can run any more.
  bool wgmma_async = true;
  bool tma_late = false;
  // cp.async (emu_mma.hpp): EMU_CP_ASYNC=issue (default) lands a copy at issue, =wait at the issuing
  // thread's cp.async.wait_group that covers it.
  bool cp_async_late = false;
  // Streams (emu_host.hpp): EMU_STREAMS=eager (default) runs every operation when it is enqueued;
  // =lazy queues it on its stream and runs it only when something needs it (a synchronisation, an
  // event another stream waits for), other streams' ready work first (see the emulator README).
  bool streams_lazy = false;
};
inline Config& cfg() {
  static Config c = [] {
    Config k;
    if (const char* o = std::getenv("EMU_ORDER")) k.order = std::strcmp(o, "reverse") == 0 ? 1 : std::strcmp(o, "random") == 0 ? 2 : 0;
    if (const char* f = std::getenv("EMU_FILL")) k.fill = static_cast<unsigned char>(std::strtoul(f, nullptr, 0));
    if (const char* s = std::getenv("EMU_SEED")) k.seed = std::strtoull(s, nullptr, 0);
    if (const char* b = std::getenv("EMU_MAX_BYTES")) k.max_bytes = std::strtoull(b, nullptr, 0);
    if (const char* t = std::getenv("EMU_MAX_THREADS")) k.max_threads = std::strtoull(t, nullptr, 0);
    if (const char* m = std::getenv("EMU_SMS")) k.sms = std::atoi(m);
    if (const char* d = std::getenv("EMU_DEVICE_MEMORY")) k.device_memory = std::strtoull(d, nullptr, 0);
    if (const char* w = std::getenv("EMU_WGMMA")) k.wgmma_async = std::strcmp(w, "issue") != 0;
    if (const char* t = std::getenv("EMU_TMA")) k.tma_late = std::strcmp(t, "late") == 0;
    if (const char* c = std::getenv("EMU_CP_ASYNC")) k.cp_async_late = std::strcmp(c, "wait") == 0;
    if (const char* q = std::getenv("EMU_STREAMS")) k.streams_lazy = std::strcmp(q, "lazy") == 0;
    return k;
  }();
  return c;
}

enum class St { Ready, Block, Warp, Mbar, Done };
enum Op { kShflIdx, kShflUp, kShflDown, kShflXor, kBallot, kAny, kAll, kMatchAny, kSyncWarp, kLdmatrix, kLdmatrixT, kMma,
          kWgmmaA };

struct Group {
  int op = 0;
  unsigned mask = 0, arrived = 0;
  int width = 32;
  std::uint64_t val[32] = {};
  int arg[32] = {};
  std::uint64_t res[32] = {};
  std::uint32_t in[32][12];   // wider per-lane operands (mma.sync, ldmatrix: emu_mma.hpp)
  std::uint32_t out[32][4];
};

// A wgmma a thread has issued and that has not completed (emu_sm90.hpp, EMU_WGMMA=async): its
// accumulator registers, its operands (A from shared memory by descriptor, or this thread's two rows of
// a register A), its commit group (-1 until wgmma.commit_group).
struct AsyncMma {
  float* d = nullptr;
  int n = 0;
  std::uint64_t desc_a = 0, desc_b = 0;
  bool trans_a = false, trans_b = false, reg_a = false;
  float a[2][16] = {};
  long long group = -1;
};

// A 16-byte cp.async a thread has issued and that has not landed (emu_mma.hpp, EMU_CP_ASYNC=wait): the
// shared destination, the bytes (read from global memory at issue), its commit group (-1 until
// cp.async.commit_group).
struct CpCopy {
  std::uint32_t dst = 0;
  unsigned char bytes[16] = {};
  long long group = -1;
};

struct Fiber {
  ucontext_t ctx;
  St st = St::Ready;
  dim3 tid;
  int linear = 0;
  std::shared_ptr<Group> g;
  std::uint32_t wait_bar = 0, wait_parity = 0;  // St::Mbar: the mbarrier and the phase parity awaited
  // wgmma state (emu_sm90.hpp): the issued, uncompleted wgmmas in issue order; the accumulators they
  // write (the registers hold a poison meanwhile) with their values after the completed ones; the
  // commit groups made; whether a wgmma.fence came after the last time registers were handed back.
  std::vector<AsyncMma> mma;
  std::map<float*, std::vector<float>> inflight;
  long long mma_groups = 0;
  bool mma_fenced = false;
  std::vector<CpCopy> cp;  // cp.async issued, not landed (EMU_CP_ASYNC=wait), in issue order
  long long cp_groups = 0;
};

// An mbarrier (emu_sm90.hpp) in the block's shared memory, by its shared address: the arrival count of
// a phase, arrivals still pending, the transaction bytes still expected (expect_tx adds, a TMA copy's
// complete_tx subtracts), the current phase's parity. A phase completes when both pending counts are 0.
struct Mbar {
  int expected = 0, pending = 0;
  long long tx = 0;
  std::uint32_t phase = 0;
};

// What the fake cuTensorMapEncodeTiled (emu_host.hpp) stores in a CUtensorMap's 128 opaque bytes and the
// emulated TMA load (emu_sm90.hpp) reads: tiled maps of rank 1..5 without element strides.
struct TensorMapNd {
  std::uint64_t magic;  // kTensorMapMagic
  const unsigned char* base;
  std::uint32_t rank;
  std::uint32_t elem_bytes;
  std::uint32_t swizzle;     // CUtensorMapSwizzle
  std::uint32_t box[5];      // elements
  std::uint64_t dim[5];      // elements: dim[0] innermost
  std::uint64_t stride[5];   // bytes; stride[0] = the element size
};
constexpr std::uint64_t kTensorMapMagic = 0x454d55544d41504eull;  // "EMUTMAPN"
static_assert(sizeof(TensorMapNd) <= sizeof(CUtensorMap), "emulated tensor map larger than CUtensorMap");

// A TMA load issued and not landed yet (EMU_TMA=late; emu_sm90.hpp): destination, map, box coordinates,
// the mbarrier its bytes complete on.
struct TmaCopy {
  std::uint32_t dst = 0, bar = 0;
  TensorMapNd map{};
  int coords[5] = {};
};

struct Runtime {
  dim3 grid, block, bidx;
  int nthreads = 0;
  std::vector<Fiber> fibers;
  char* stacks = nullptr;
  std::size_t stack_size = 256 * 1024;
  Fiber* cur = nullptr;
  ucontext_t sched;
  std::vector<std::vector<std::shared_ptr<Group>>> open;  // per warp
  std::vector<unsigned> exists;                           // per warp: lanes that exist
  std::vector<unsigned char> dyn_store;
  unsigned char* dyn = nullptr;  // 128-byte aligned, dyn_bytes long
  std::size_t dyn_bytes = 0;
  std::vector<std::unique_ptr<unsigned char[]>> statics;
  std::size_t static_bytes = 0;
  std::uint64_t block_serial = 0;
  std::function<void()> body;
  std::string error;
  const char* kernel = "";
  cudaError_t sticky = cudaSuccess, last = cudaSuccess;
  std::uint64_t case_threads = 0;
  std::uint64_t undefined_reads = 0;
  std::mt19937_64 rng{1};
  bool in_kernel = false;
  std::map<std::uint32_t, Mbar> mbars;  // the block's mbarriers by shared address (emu_sm90.hpp)
  std::map<int, std::vector<float>> wgmma_a;  // per warp: the 16 x 16 A of its last register-A wgmma
  // The dynamic shared memory as the async proxy (TMA, wgmma) sees it: TMA writes both, a
  // fence.proxy.async copies the generic view into it, a wgmma operand read that finds the two different
  // is an ordinary store not made visible by a fence (or one racing an in-flight wgmma).
  std::vector<unsigned char> async_view;
  std::vector<TmaCopy> tma_inflight;  // EMU_TMA=late: issued, not landed, in issue order
  void (*land_tma)() = nullptr;       // lands them (emu_sm90.hpp): when no thread of the block can run
  std::vector<std::pair<const void*, int>> max_dyn;  // cudaFuncSetAttribute(MaxDynamicSharedMemorySize)
  // Stream capture (cudaStreamBeginCapture .. cudaStreamEndCapture): launches and async copies are
  // recorded here instead of run, and replayed in order by cudaGraphLaunch.
  std::vector<std::function<void()>>* capture = nullptr;
};
inline Runtime& rt() {
  static Runtime r;
  return r;
}

// Commit groups of a thread's asynchronous operations (cp.async: CpCopy, wgmma: AsyncMma; both have a
// `group`, -1 until committed): commit_group makes the uncommitted ones group number `groups`;
// wait_group(n) completes, by `done` and in issue order, every committed one but the newest n groups'.
template <class Op>
inline void commit_group(std::vector<Op>& ops, long long& groups) {
  for (Op& op : ops)
    if (op.group < 0) op.group = groups;
  ++groups;
}
template <class Op, class Done>
inline void wait_group(std::vector<Op>& ops, long long groups, int n, Done done) {
  std::vector<Op> left;
  for (const Op& op : ops) {
    if (op.group >= 0 && op.group < groups - n) done(op);
    else left.push_back(op);
  }
  ops.swap(left);
}

inline int lane_of(const Fiber* f) { return f->linear % 32; }
inline int warp_of(const Fiber* f) { return f->linear / 32; }

inline void yield() { swapcontext(&rt().cur->ctx, &rt().sched); }

[[noreturn]] inline void fail(const std::string& what) {
  Runtime& r = rt();
  if (r.error.empty()) {
    char where[160];
    std::snprintf(where, sizeof where, " [kernel %s, block (%u,%u,%u), thread (%u,%u,%u)]", r.kernel, r.bidx.x, r.bidx.y,
                  r.bidx.z, r.cur->tid.x, r.cur->tid.y, r.cur->tid.z);
    r.error = what + where;
  }
  r.cur->st = St::Done;
  yield();  // never resumed: the scheduler abandons the launch
  std::abort();
}

// ---- shared memory ----------------------------------------------------------------------------------
inline void* alloc_static(std::size_t bytes, std::size_t align) {
  Runtime& r = rt();
  r.static_bytes += (bytes + 15) / 16 * 16;
  if (r.static_bytes > 48 * 1024) fail("static __shared__ memory over 48 KiB");
  r.statics.emplace_back(new unsigned char[bytes + align]);
  unsigned char* p = r.statics.back().get();
  p += (align - reinterpret_cast<std::uintptr_t>(p) % align) % align;
  std::memset(p, cfg().fill, bytes);
  return p;
}
struct SharedSlot {
  std::uint64_t serial = ~0ull;
  void* p = nullptr;
  void* get(std::size_t bytes, std::size_t align) {
    if (serial != rt().block_serial) {
      p = alloc_static(bytes, std::max<std::size_t>(align, 16));
      serial = rt().block_serial;
    }
    return p;
  }
};
inline void* dynamic_smem() { return rt().dyn; }

// ---- block barrier -----------------------------------------------------------------------------------
inline void syncthreads() {
  rt().cur->st = St::Block;
  yield();
}

// ---- warp collectives ----------------------------------------------------------------------------------
template <class Compute>
inline std::uint64_t collective(int op, unsigned mask, std::uint64_t v, int arg, int width, Compute compute,
                                const std::uint32_t* words = nullptr, int nwords = 0, std::uint32_t* out_words = nullptr,
                                int nout = 0) {
  Runtime& r = rt();
  Fiber* f = r.cur;
  const int l = lane_of(f), w = warp_of(f);
  if (((mask >> l) & 1u) == 0) fail("warp collective: the calling lane is not in the mask (UB)");
  if (width < 1 || width > 32 || (width & (width - 1)) != 0) fail("warp collective: width not a power of 2 <= 32");
  const unsigned need = mask & r.exists[w];
  std::shared_ptr<Group> g;
  for (auto& x : r.open[w])
    if (x->mask == mask) g = x;
  if (!g) {
    g = std::make_shared<Group>();
    g->op = op;
    g->mask = mask;
    g->width = width;
    r.open[w].push_back(g);
  } else if (g->op != op || g->width != width) {
    fail("warp collective: lanes of one mask at different collectives (divergent)");
  }
  g->val[l] = v;
  g->arg[l] = arg;
  for (int q = 0; q < nwords; ++q) g->in[l][q] = words[q];
  g->arrived |= 1u << l;
  if (g->arrived == need) {
    compute(*g);
    auto& o = r.open[w];
    o.erase(std::find(o.begin(), o.end(), g));
    for (int q = 0; q < 32; ++q) {
      const int t = w * 32 + q;
      if (t < r.nthreads && r.fibers[t].g == g) {
        r.fibers[t].g.reset();
        r.fibers[t].st = St::Ready;
      }
    }
  } else {
    f->g = g;
    f->st = St::Warp;
    yield();
  }
  for (int q = 0; q < nout; ++q) out_words[q] = g->out[l][q];
  return g->res[l];
}

constexpr std::uint64_t kPoison = 0xffc0dead7fc0deadull;  // NaN as float/double, absurd as integer

// PTX shfl.sync: c = ((32 - width) << 8) | 0x1f (up: (32 - width) << 8).
inline void shfl_compute(Group& g) {
  Runtime& r = rt();
  const unsigned segmask = static_cast<unsigned>(32 - g.width) & 31u;
  for (int lane = 0; lane < 32; ++lane) {
    if (((g.arrived >> lane) & 1u) == 0) continue;
    const int b = g.arg[lane];
    const int cval = g.op == kShflUp ? 0 : 31;
    const int maxl = (lane & segmask) | (cval & ~segmask);
    const int minl = lane & segmask;
    int j = lane;
    bool p = true;
    switch (g.op) {
      case kShflUp: j = lane - b; p = j >= maxl; break;
      case kShflDown: j = lane + b; p = j <= maxl; break;
      case kShflXor: j = lane ^ b; p = j <= maxl; break;
      default: j = minl | (b & 31 & ~static_cast<int>(segmask)); p = j <= maxl; break;
    }
    if (!p) j = lane;
    if (j < 0 || j > 31 || ((g.arrived >> j) & 1u) == 0) {
      g.res[lane] = kPoison;  // source lane inactive: undefined
      ++r.undefined_reads;
    } else {
      g.res[lane] = g.val[j];
    }
  }
}

template <class T>
inline std::uint64_t to_bits(T v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of an unsupported type");
  std::uint64_t u = 0;
  std::memcpy(&u, &v, sizeof(T));
  return u;
}
template <class T>
inline T from_bits(std::uint64_t u) {
  T v;
  std::memcpy(&v, &u, sizeof(T));
  return v;
}
template <class T>
inline T shfl(int op, unsigned mask, T v, int arg, int width) {
  return from_bits<T>(collective(op, mask, to_bits(v), arg, width, shfl_compute));
}
inline unsigned ballot(int op, unsigned mask, int pred) {
  return static_cast<unsigned>(collective(op, mask, pred != 0, 0, 32, [](Group& g) {
    unsigned b = 0;
    for (int q = 0; q < 32; ++q)
      if (((g.arrived >> q) & 1u) && g.val[q]) b |= 1u << q;
    for (int q = 0; q < 32; ++q) {
      if (g.op == kBallot) g.res[q] = b;
      else if (g.op == kAny) g.res[q] = b != 0;
      else g.res[q] = b == g.arrived;
    }
  }));
}

// ---- kernel launch ----------------------------------------------------------------------------------------
inline void fiber_main() {
  rt().body();
  if (!rt().cur->mma.empty()) fail("thread exited with wgmma.mma_async not completed by a wgmma.wait_group (UB)");
  if (!rt().cur->cp.empty()) fail("thread exited with cp.async copies that no cp.async.wait_group waited for");
  rt().cur->st = St::Done;
}

inline std::string describe_states() {
  Runtime& r = rt();
  std::string s;
  int counts[5] = {0, 0, 0, 0, 0};
  for (auto& f : r.fibers) counts[static_cast<int>(f.st)]++;
  char b[200];
  std::snprintf(b, sizeof b, "%d at __syncthreads, %d in warp collectives, %d waiting on mbarriers, %d exited",
                counts[1], counts[2], counts[3], counts[4]);
  s = b;
  for (auto& f : r.fibers)
    if (f.st == St::Warp) {
      std::snprintf(b, sizeof b, "; e.g. thread %d waits in a collective with mask 0x%08x (arrived 0x%08x)", f.linear,
                    f.g->mask, f.g->arrived);
      s += b;
      break;
    }
  return s;
}

inline bool run_block() {
  Runtime& r = rt();
  const int n = r.nthreads;
  r.fibers.assign(static_cast<std::size_t>(n), Fiber{});
  r.open.assign(static_cast<std::size_t>((n + 31) / 32), {});
  r.exists.assign(static_cast<std::size_t>((n + 31) / 32), 0u);
  for (int t = 0; t < n; ++t) r.exists[t / 32] |= 1u << (t % 32);
  r.statics.clear();
  r.static_bytes = 0;
  r.mbars.clear();
  ++r.block_serial;
  r.dyn_store.assign(r.dyn_bytes + 128, cfg().fill);
  r.dyn = r.dyn_store.data() + (128 - reinterpret_cast<std::uintptr_t>(r.dyn_store.data()) % 128) % 128;
  r.async_view.assign(r.dyn_bytes, cfg().fill);
  r.tma_inflight.clear();
  for (int t = 0; t < n; ++t) {
    Fiber& f = r.fibers[t];
    f.linear = t;
    f.tid = dim3(t % r.block.x, (t / r.block.x) % r.block.y, t / (r.block.x * r.block.y));
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = r.stacks + static_cast<std::size_t>(t) * r.stack_size;
    f.ctx.uc_stack.ss_size = r.stack_size;
    f.ctx.uc_link = &r.sched;
    makecontext(&f.ctx, fiber_main, 0);
  }
  std::vector<int> order(static_cast<std::size_t>(n));
  for (int t = 0; t < n; ++t) order[t] = cfg().order == 1 ? n - 1 - t : t;
  for (;;) {
    if (cfg().order == 2) std::shuffle(order.begin(), order.end(), r.rng);
    bool ran = false;
    for (int t : order) {
      Fiber& f = r.fibers[t];
      if (f.st != St::Ready) continue;
      ran = true;
      r.cur = &f;
      swapcontext(&r.sched, &f.ctx);
      if (!r.error.empty()) return false;
    }
    if (ran) continue;
    int block = 0, done = 0, warp = 0, mbar = 0;
    for (auto& f : r.fibers) {
      block += f.st == St::Block;
      done += f.st == St::Done;
      warp += f.st == St::Warp;
      mbar += f.st == St::Mbar;
    }
    if (!r.tma_inflight.empty()) {  // EMU_TMA=late: the copies land once nothing else can run
      if (done < n) {
        r.land_tma();
        if (!r.error.empty()) return false;
        continue;
      }
      char b[200];
      std::snprintf(b, sizeof b, "every thread exited with %zu TMA loads in flight (never waited for) [kernel %s, block (%u,%u,%u)]",
                    r.tma_inflight.size(), r.kernel, r.bidx.x, r.bidx.y, r.bidx.z);
      r.error = b;
      return false;
    }
    if (done == n) return true;
    if (block > 0 && warp == 0 && mbar == 0 && done == 0) {
      for (auto& f : r.fibers) f.st = St::Ready;
      continue;
    }
    r.cur = &r.fibers[0];
    char b[300];
    std::snprintf(b, sizeof b, "%s [kernel %s, block (%u,%u,%u)]",
                  block > 0 && warp == 0 && mbar == 0
                      ? "__syncthreads not reached by every thread of the block (UB)"
                  : mbar > 0 && block == 0 && warp == 0
                      ? "deadlock: mbarrier waits that no arrival or copy left can complete"
                      : "deadlock: threads wait at different barriers or for exited lanes",
                  r.kernel, r.bidx.x, r.bidx.y, r.bidx.z);
    r.error = std::string(b) + ": " + describe_states();
    return false;
  }
}

// What the launch itself refuses (at the launch, before anything runs): a bad grid or block, more
// dynamic shared memory than the kernel's attribute allows.
inline cudaError_t launch_error(const void* key, dim3 g, dim3 b, std::size_t smem) {
  const std::uint64_t threads = static_cast<std::uint64_t>(b.x) * b.y * b.z;
  const std::uint64_t blocks = static_cast<std::uint64_t>(g.x) * g.y * g.z;
  if (threads == 0 || blocks == 0 || threads > 1024 || b.x > 1024 || b.y > 1024 || b.z > 64 || g.x > 2147483647u ||
      g.y > 65535 || g.z > 65535)
    return cudaErrorInvalidConfiguration;
  std::size_t allowed = 48 * 1024;
  for (auto& m : rt().max_dyn)
    if (m.first == key) allowed = static_cast<std::size_t>(m.second);
  return smem > allowed ? cudaErrorInvalidValue : cudaSuccess;
}

// The case's budget of emulated threads (EMU_MAX_THREADS): a case over it is skipped (Skip is thrown).
inline void charge_threads(const char* name, dim3 g, dim3 b) {
  const std::uint64_t threads = static_cast<std::uint64_t>(b.x) * b.y * b.z;
  const std::uint64_t blocks = static_cast<std::uint64_t>(g.x) * g.y * g.z;
  rt().case_threads += threads * blocks;
  if (rt().case_threads > cfg().max_threads) {
    char w[160];
    std::snprintf(w, sizeof w, "over EMU_MAX_THREADS emulated threads (kernel %s: %llu blocks x %llu)", name,
                  static_cast<unsigned long long>(blocks), static_cast<unsigned long long>(threads));
    throw Skip{w};
  }
}

// `checked`: the launch already checked its errors and counted its threads (a launch does both when
// it is made, so a queued kernel's Skip is thrown inside the case, not from a later synchronisation,
// perhaps in a destructor); a graph's kernel node is checked here, at each replay.
inline cudaError_t run_kernel(const char* name, const void* key, dim3 g, dim3 b, std::size_t smem, std::function<void()> body,
                              bool checked) {
  Runtime& r = rt();
  const std::uint64_t threads = static_cast<std::uint64_t>(b.x) * b.y * b.z;
  const std::uint64_t blocks = static_cast<std::uint64_t>(g.x) * g.y * g.z;
  if (!checked) {
    if (const cudaError_t e = launch_error(key, g, b, smem); e != cudaSuccess) return r.last = e;
    charge_threads(name, g, b);
  }
  if (!r.stacks) {
    r.stacks = static_cast<char*>(mmap(nullptr, 1024 * r.stack_size, PROT_READ | PROT_WRITE,
                                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0));
    if (r.stacks == MAP_FAILED) std::abort();
  }
  r.kernel = name;
  r.grid = g;
  r.block = b;
  r.nthreads = static_cast<int>(threads);
  r.dyn_bytes = smem;
  r.body = std::move(body);
  r.error.clear();
  const std::uint64_t undefined_before = r.undefined_reads;
  r.in_kernel = true;
  for (std::uint64_t i = 0; i < blocks; ++i) {
    const std::uint64_t k = cfg().order == 1 ? blocks - 1 - i : i;
    r.bidx = dim3(static_cast<unsigned>(k % g.x), static_cast<unsigned>((k / g.x) % g.y),
                  static_cast<unsigned>(k / (static_cast<std::uint64_t>(g.x) * g.y)));
    if (!run_block()) break;
  }
  r.in_kernel = false;
  if (r.error.empty() && r.undefined_reads != undefined_before) {
    char w[200];
    std::snprintf(w, sizeof w, "kernel %s: %llu shuffle reads from lanes outside the mask (undefined values)", name,
                  static_cast<unsigned long long>(r.undefined_reads - undefined_before));
    std::printf("EMU WARNING %s\n", w);
  }
  if (!r.error.empty()) {
    std::printf("EMU ERROR %s\n", r.error.c_str());
    r.sticky = cudaErrorLaunchFailure;
  }
  return cudaSuccess;
}

// EMU_STREAMS=lazy: queues `op` on `stream` (emu_host.hpp, which defines it) and returns true; false in
// eager mode, where the caller runs it now.
bool stream_defer(cudaStream_t stream, std::function<void()> op);

template <class... P, class... A>
inline void launch(const char* name, void (*k)(P...), dim3 g, dim3 b, std::size_t smem, cudaStream_t stream, A&&... a) {
  std::tuple<std::decay_t<P>...> params(std::forward<A>(a)...);
  auto make_run = [name, k, g, b, smem, &params](bool checked) {
    return [name, k, g, b, smem, params, checked] {
      const cudaError_t e = run_kernel(name, reinterpret_cast<const void*>(k), g, b, smem, [&] {
        std::tuple<std::decay_t<P>...> mine = params;  // parameters are per thread
        std::apply(k, mine);
      }, checked);
      if (e != cudaSuccess) rt().last = e;
    };
  };
  if (rt().capture) {  // recorded with its parameters' values, as a graph's kernel node (checked at each replay)
    rt().capture->push_back(make_run(false));
    return;
  }
  // The launch's own errors and thread budget now; the kernel now, or when its stream gets to it.
  if (const cudaError_t e = launch_error(reinterpret_cast<const void*>(k), g, b, smem); e != cudaSuccess) {
    rt().last = e;
    return;
  }
  charge_threads(name, g, b);
  const std::function<void()> run = make_run(true);
  if (!stream_defer(stream, run)) run();
}

inline void begin_case() {
  rt().case_threads = 0;
  rt().sticky = cudaSuccess;
  rt().last = cudaSuccess;
}

inline float u2f(std::uint32_t u) { return from_bits<float>(u); }
inline std::uint32_t f2u(float f) { return static_cast<std::uint32_t>(to_bits(f)); }

}  // namespace emu

// ---- device language ----------------------------------------------------------------------------------------
#undef __global__
#define __global__
#undef __device__
#define __device__
#undef __host__
#define __host__
#undef __forceinline__
#define __forceinline__ inline
#undef __noinline__
#define __noinline__
#undef __launch_bounds__
#define __launch_bounds__(...)
#undef __grid_constant__
#define __grid_constant__
// The emulated library stands for an sm_90a build (the wgmma/TMA path of grouped_gemm.cu is enabled).
#ifndef JK_CUDA_ARCHITECTURES
#define JK_CUDA_ARCHITECTURES "90a"
#endif
#undef __shared__
#define __shared__ EMU_SHARED_NOT_TRANSFORMED
#define threadIdx (::emu::rt().cur->tid)
#define blockIdx (::emu::rt().bidx)
#define gridDim (::emu::rt().grid)
#define blockDim (::emu::rt().block)
#define warpSize 32

inline void __syncthreads() { emu::syncthreads(); }
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  emu::collective(emu::kSyncWarp, mask, 0, 0, 32, [](emu::Group&) {});
}
template <class T> inline T __shfl_sync(unsigned m, T v, int src, int w = 32) { return emu::shfl(emu::kShflIdx, m, v, src, w); }
template <class T> inline T __shfl_up_sync(unsigned m, T v, unsigned d, int w = 32) { return emu::shfl(emu::kShflUp, m, v, static_cast<int>(d), w); }
template <class T> inline T __shfl_down_sync(unsigned m, T v, unsigned d, int w = 32) { return emu::shfl(emu::kShflDown, m, v, static_cast<int>(d), w); }
template <class T> inline T __shfl_xor_sync(unsigned m, T v, int x, int w = 32) { return emu::shfl(emu::kShflXor, m, v, x, w); }
inline unsigned __ballot_sync(unsigned m, int p) { return emu::ballot(emu::kBallot, m, p); }
inline int __any_sync(unsigned m, int p) { return static_cast<int>(emu::ballot(emu::kAny, m, p)); }
inline int __all_sync(unsigned m, int p) { return static_cast<int>(emu::ballot(emu::kAll, m, p)); }
template <class T>
inline unsigned __match_any_sync(unsigned m, T v) {
  static_assert(sizeof(T) == 4 || sizeof(T) == 8, "__match_any_sync: 32- or 64-bit values");
  return static_cast<unsigned>(emu::collective(emu::kMatchAny, m, emu::to_bits(v), 0, 32, [](emu::Group& g) {
    for (int a = 0; a < 32; ++a) {
      if (((g.arrived >> a) & 1u) == 0) continue;
      unsigned r = 0;
      for (int b = 0; b < 32; ++b)
        if (((g.arrived >> b) & 1u) && g.val[b] == g.val[a]) r |= 1u << b;
      g.res[a] = r;
    }
  }));
}
inline unsigned __activemask() = delete;  // not emulable: divergence is not tracked

inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
inline float __uint_as_float(unsigned u) { return emu::u2f(u); }
inline unsigned __float_as_uint(float f) { return emu::f2u(f); }
inline float __int_as_float(int i) { return emu::u2f(static_cast<unsigned>(i)); }
inline int __float_as_int(float f) { return static_cast<int>(emu::f2u(f)); }
inline double __longlong_as_double(long long v) { return emu::from_bits<double>(static_cast<std::uint64_t>(v)); }
inline long long __double_as_longlong(double d) { return static_cast<long long>(emu::to_bits(d)); }
// IEEE round-to-nearest operations: exact on the host (compiled with -ffp-contract=off).
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float __frcp_rn(float a) { return 1.0f / a; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
// Approximate device functions: the host's (more accurate) values; tolerances must cover the GPU's.
inline float __expf(float x) { return std::exp(x); }
inline float __logf(float x) { return std::log(x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }  // rmsnorm.cu (the GPU's: 2 ulp)
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : x > 1.0f ? 1.0f : x; }
template <class T> inline T __ldg(const T* p) { return *p; }
// Atomics: fibers of one OS thread, so a plain read-modify-write is atomic.
template <class T> inline T atomicAdd(T* p, T v) { T o = *p; *p = o + v; return o; }
template <class T> inline T atomicMax(T* p, T v) { T o = *p; *p = o > v ? o : v; return o; }
template <class T> inline T atomicMin(T* p, T v) { T o = *p; *p = o < v ? o : v; return o; }
template <class T> inline T atomicExch(T* p, T v) { T o = *p; *p = v; return o; }
template <class T> inline T atomicCAS(T* p, T c, T v) { T o = *p; if (o == c) *p = v; return o; }
inline void __threadfence() {}
inline void __threadfence_block() {}
#define __cvta_generic_to_shared(p) EMU_CVTA_NOT_SUPPORTED

// The runtime's template overloads taking a kernel (cuda_runtime.h has them only for nvcc).
template <class T>
inline cudaError_t cudaFuncSetAttribute(T* f, enum cudaFuncAttribute a, int v) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(f), a, v);
}
template <class T>
inline cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, T* f, int threads, size_t smem) {
  return ::cudaOccupancyMaxActiveBlocksPerMultiprocessor(n, reinterpret_cast<const void*>(f), threads, smem);
}
