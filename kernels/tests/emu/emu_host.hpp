// Fake host CUDA runtime for the emulation (definitions of the cuda_runtime_api.h functions the kernels
// and tests use; libcudart is not linked, so a call to anything else is a link error, never a silent
// no-op). One address space: device pointers are host pointers. A kernel that failed in the emulator
// (see emu_cuda.hpp) leaves a sticky cudaErrorLaunchFailure, returned by the next synchronising call, as
// a device fault would be (reset at the start of each test case).
//
// Streams. EMU_STREAMS=eager (the default) runs every operation when it is enqueued, in call order.
// EMU_STREAMS=lazy keeps CUDA's ordering rules and nothing more, and takes the latest schedule they
// allow for the work the host waits on and the earliest for everything else:
//   * kernels, async copies and memsets, event records and waits, graph launches and the emulated NCCL's
//     operations (nccl.cpp) queue on their stream and run only when something needs them:
//     cudaStreamSynchronize, cudaEventSynchronize, cudaDeviceSynchronize, cudaFree, a copy into pageable
//     host memory (which returns once it has landed), the legacy stream, or a stream waiting for an event;
//   * before each operation of a stream it is driving, the scheduler runs every other stream's ready
//     operations (so a consumer behind cudaStreamWaitEvent runs as soon as the event's record does, before
//     the producer's next operation, and a consumer with no wait at all before the producer);
//   * a copy from pageable host memory reads it when enqueued (CUDA stages it), from device or pinned
//     memory when it runs;
//   * the legacy default stream (0) waits for the blocking streams' work and they for it (here: its
//     operations run at once, after the blocking streams' queued work); non-blocking streams
//     (cudaStreamNonBlocking) do not wait for it, so a plain cudaMemcpy does not see their pending kernels.
// What this catches: an event recorded before the work it stands for, a missing cudaStreamWaitEvent, a
// host read of results before the synchronisation that makes them land, a plain cudaMemcpy racing a
// non-blocking stream.
#pragma once
#include "emu_cuda.hpp"

#include <deque>

struct CUstream_st;
struct CUevent_st;

namespace emu {
inline cudaError_t sync_status() { return rt().sticky; }
// Bytes live in cudaMalloc allocations (their sizes: allocations() below).
inline std::size_t& live_bytes() {
  static std::size_t n = 0;
  return n;
}
inline std::size_t& peak_bytes() {  // the most live_bytes since the last reset (jk_emu_device_bytes_peak)
  static std::size_t n = 0;
  return n;
}
// Where a pointer lives: a cudaMalloc allocation, pinned host memory (cudaMallocHost), or anything else
// (pageable host memory).
enum class Memory { Device, Pinned, Pageable };
inline std::map<std::uintptr_t, std::pair<std::size_t, bool>>& allocations() {  // begin -> (bytes, pinned)
  static std::map<std::uintptr_t, std::pair<std::size_t, bool>> m;
  return m;
}
inline Memory memory_of(const void* p) {
  const auto a = reinterpret_cast<std::uintptr_t>(p);
  auto& m = allocations();
  auto it = m.upper_bound(a);
  if (it == m.begin()) return Memory::Pageable;
  --it;
  if (a >= it->first + std::max<std::size_t>(it->second.first, 1)) return Memory::Pageable;
  return it->second.second ? Memory::Pinned : Memory::Device;
}

// One queued operation: work to run, or a wait until stream `wait_on` has run `upto` operations (an
// event's record, which is an operation with nothing to run: a position in its stream).
struct StreamOp {
  std::function<void()> run;
  CUstream_st* wait_on = nullptr;
  std::uint64_t upto = 0;
};
}  // namespace emu

struct CUstream_st {
  bool blocking = true;  // waits for the legacy stream (cudaStreamDefault); false: cudaStreamNonBlocking
  std::deque<emu::StreamOp> ops;
  std::uint64_t enqueued = 0, done = 0;
};
struct CUevent_st {
  CUstream_st* stream = nullptr;  // the newest record's stream and its position there (null: complete)
  std::uint64_t position = 0;
};

namespace emu {
inline std::vector<CUstream_st*>& streams() {  // the live created streams, in creation order
  static std::vector<CUstream_st*> v;
  return v;
}
inline std::vector<CUevent_st*>& events() {  // the live events
  static std::vector<CUevent_st*> v;
  return v;
}
inline bool lazy() { return cfg().streams_lazy && !rt().capture; }
// The legacy default stream (0, cudaStreamLegacy, cudaStreamPerThread): not a queue here.
inline bool legacy(cudaStream_t s) {
  return s == nullptr || s == cudaStreamLegacy || s == cudaStreamPerThread;
}
inline bool head_ready(const CUstream_st* s) {
  return !s->ops.empty() && (!s->ops.front().wait_on || s->ops.front().wait_on->done >= s->ops.front().upto);
}
inline void run_head(CUstream_st* s) {
  StreamOp op = std::move(s->ops.front());
  s->ops.pop_front();
  ++s->done;
  if (op.run) op.run();
}
inline void drive(CUstream_st* s, std::uint64_t upto);
// Every stream but `s` runs what it can, as early as possible.
inline void run_others(const CUstream_st* s) {
  for (bool progress = true; progress;) {
    progress = false;
    for (std::size_t i = 0; i < streams().size(); ++i) {
      CUstream_st* t = streams()[i];
      if (t != s && head_ready(t)) run_head(t), progress = true;
    }
  }
}
// Runs `s` until it has done `upto` operations, the other streams' ready work before each of them and
// the streams it waits for as far as needed.
inline void drive(CUstream_st* s, std::uint64_t upto) {
  while (s->done < upto) {
    run_others(s);
    const StreamOp& head = s->ops.front();
    if (head.wait_on && head.wait_on->done < head.upto) {
      drive(head.wait_on, head.upto);
      continue;
    }
    run_head(s);
  }
}
inline void finish(CUstream_st* s) { drive(s, s->enqueued); }
inline void finish_all(bool blocking_only) {
  for (bool left = true; left;) {
    left = false;
    for (std::size_t i = 0; i < streams().size(); ++i) {
      CUstream_st* t = streams()[i];
      if (blocking_only && !t->blocking) continue;
      if (t->done < t->enqueued) finish(t), left = true;
    }
  }
}
// Before an operation of the legacy stream, which runs at once: the blocking streams' work.
inline void legacy_wait() {
  if (cfg().streams_lazy) finish_all(true);
}
inline void push(CUstream_st* s, StreamOp op) {
  s->ops.push_back(std::move(op));
  ++s->enqueued;
}
}  // namespace emu

bool emu::stream_defer(cudaStream_t stream, std::function<void()> op) {
  if (!lazy()) return false;
  if (legacy(stream)) {
    legacy_wait();
    return false;
  }
  StreamOp q;
  q.run = std::move(op);
  push(stream, std::move(q));
  return true;
}

namespace emu {
inline cudaError_t allocate(void** p, size_t n, bool pinned) {
  if (!p) return cudaErrorInvalidValue;
  if (n > cfg().max_bytes) {
    char w[120];
    std::snprintf(w, sizeof w, "cudaMalloc of %zu bytes over EMU_MAX_BYTES", n);
    throw Skip{w};
  }
  // A full GPU: the allocation that would take the live total over EMU_DEVICE_MEMORY fails.
  if (cfg().device_memory != 0 && live_bytes() + n > cfg().device_memory) {
    *p = nullptr;
    return cudaErrorMemoryAllocation;
  }
  *p = std::aligned_alloc(256, (n + 255) / 256 * 256 + 256);
  if (!*p) return cudaErrorMemoryAllocation;
  live_bytes() += n;
  peak_bytes() = std::max(peak_bytes(), live_bytes());
  allocations()[reinterpret_cast<std::uintptr_t>(*p)] = {n, pinned};
  return cudaSuccess;
}
// The copy's operation: `from` read when it runs, or (pageable host memory, which CUDA stages) now.
inline std::function<void()> copy_op(void* d, const void* s, size_t n) {
  if (memory_of(s) != Memory::Pageable) return [d, s, n] { if (n) std::memmove(d, s, n); };
  auto staged = std::make_shared<std::vector<unsigned char>>(static_cast<const unsigned char*>(s),
                                                             static_cast<const unsigned char*>(s) + n);
  return [d, staged] { if (!staged->empty()) std::memcpy(d, staged->data(), staged->size()); };
}
}  // namespace emu

cudaError_t cudaMalloc(void** p, size_t n) { return emu::allocate(p, n, false); }
cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  const auto it = emu::allocations().find(reinterpret_cast<std::uintptr_t>(p));
  if (it == emu::allocations().end()) return cudaErrorInvalidValue;  // not an allocation's start
  if (emu::cfg().streams_lazy) emu::finish_all(false);  // cudaFree waits for the device
  emu::live_bytes() -= it->second.first;
  emu::allocations().erase(it);
  std::free(p);
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void** p, size_t n) { return emu::allocate(p, n, true); }
cudaError_t cudaHostAlloc(void** p, size_t n, unsigned int) { return emu::allocate(p, n, true); }
cudaError_t cudaFreeHost(void* p) { return cudaFree(p); }
cudaError_t cudaMemcpy(void* d, const void* s, size_t n, enum cudaMemcpyKind) {
  if (emu::rt().capture) return cudaErrorStreamCaptureUnsupported;  // a synchronous call while capturing
  emu::legacy_wait();  // the legacy stream: after the blocking streams' work, not the non-blocking ones'
  if (emu::rt().sticky != cudaSuccess) return emu::rt().sticky;
  if (n) std::memmove(d, s, n);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, enum cudaMemcpyKind, cudaStream_t stream) {
  if (emu::rt().capture) {
    emu::rt().capture->push_back([d, s, n] { if (n) std::memmove(d, s, n); });
    return cudaSuccess;
  }
  if (!emu::lazy() || emu::legacy(stream)) return cudaMemcpy(d, s, n, cudaMemcpyDefault);
  if (emu::memory_of(d) == emu::Memory::Pageable) {  // into pageable memory: returns once it has landed
    emu::finish(stream);
    return cudaMemcpy(d, s, n, cudaMemcpyDefault);
  }
  emu::stream_defer(stream, emu::copy_op(d, s, n));  // lazy, not the legacy stream: queued
  return cudaSuccess;
}
cudaError_t cudaMemcpy2DAsync(void* d, size_t dpitch, const void* s, size_t spitch, size_t width, size_t height,
                              enum cudaMemcpyKind k, cudaStream_t stream) {
  if (width > dpitch || width > spitch) return cudaErrorInvalidPitchValue;
  for (size_t r = 0; r < height; ++r) {
    const cudaError_t e = cudaMemcpyAsync(static_cast<char*>(d) + r * dpitch, static_cast<const char*>(s) + r * spitch,
                                          width, k, stream);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}
cudaError_t cudaMemset(void* d, int v, size_t n) {
  if (emu::rt().capture) return cudaErrorStreamCaptureUnsupported;
  emu::legacy_wait();
  if (emu::rt().sticky != cudaSuccess) return emu::rt().sticky;
  if (n) std::memset(d, v, n);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* d, int v, size_t n, cudaStream_t stream) {
  if (emu::rt().capture) {
    emu::rt().capture->push_back([d, v, n] { if (n) std::memset(d, v, n); });
    return cudaSuccess;
  }
  if (emu::stream_defer(stream, [d, v, n] { if (n) std::memset(d, v, n); })) return cudaSuccess;
  return cudaMemset(d, v, n);
}

// CUDA graphs from stream capture: the recorded operations, replayed in order.
struct CUgraph_st {
  std::vector<std::function<void()>> ops;
};
struct CUgraphExec_st {
  std::vector<std::function<void()>> ops;
};
cudaError_t cudaStreamBeginCapture(cudaStream_t, enum cudaStreamCaptureMode) {
  if (emu::rt().capture) return cudaErrorIllegalState;
  emu::rt().capture = new std::vector<std::function<void()>>();
  return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t* graph) {
  if (!emu::rt().capture) return cudaErrorIllegalState;
  *graph = new CUgraph_st{std::move(*emu::rt().capture)};
  delete emu::rt().capture;
  emu::rt().capture = nullptr;
  return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t* exec, cudaGraph_t graph, unsigned long long) {
  *exec = new CUgraphExec_st{graph->ops};
  return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t stream) {
  if (emu::rt().sticky != cudaSuccess) return emu::rt().sticky;
  auto ops = std::make_shared<std::vector<std::function<void()>>>(exec->ops);  // the exec may be destroyed first
  if (emu::stream_defer(stream, [ops] { for (const auto& op : *ops) op(); })) return cudaSuccess;
  for (const auto& op : *ops) op();
  return cudaSuccess;
}
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) {
  delete exec;
  return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t graph) {
  delete graph;
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int flags) {
  if (!s) return cudaErrorInvalidValue;
  *s = new CUstream_st;
  (*s)->blocking = (flags & cudaStreamNonBlocking) == 0;
  emu::streams().push_back(*s);
  return cudaSuccess;
}
cudaError_t cudaStreamCreate(cudaStream_t* s) { return cudaStreamCreateWithFlags(s, cudaStreamDefault); }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  if (emu::legacy(s)) return cudaErrorInvalidResourceHandle;
  emu::finish(s);  // its work completes (CUDA lets it finish after the call returns)
  auto& v = emu::streams();
  v.erase(std::remove(v.begin(), v.end(), s), v.end());
  for (CUstream_st* t : v)  // waits for it are satisfied now
    for (emu::StreamOp& op : t->ops)
      if (op.wait_on == s) op.wait_on = nullptr;
  for (CUevent_st* e : emu::events())  // and so are its events' records
    if (e->stream == s) e->stream = nullptr;
  delete s;
  return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t s) {
  if (emu::cfg().streams_lazy) {
    if (emu::legacy(s)) emu::finish_all(true);
    else emu::finish(s);
  }
  return emu::sync_status();
}
cudaError_t cudaDeviceSynchronize(void) {
  if (emu::cfg().streams_lazy) emu::finish_all(false);
  return emu::sync_status();
}
cudaError_t cudaGetLastError(void) {
  emu::Runtime& r = emu::rt();
  if (r.sticky != cudaSuccess) return r.sticky;
  const cudaError_t e = r.last;
  r.last = cudaSuccess;
  return e;
}
cudaError_t cudaPeekAtLastError(void) { return emu::rt().sticky != cudaSuccess ? emu::rt().sticky : emu::rt().last; }
cudaError_t cudaGetDevice(int* d) { *d = 0; return cudaSuccess; }
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
cudaError_t cudaDeviceGetAttribute(int* v, enum cudaDeviceAttr a, int) {
  switch (a) {
    case cudaDevAttrMultiProcessorCount: *v = emu::cfg().sms; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = 227 * 1024; break;
    case cudaDevAttrMaxThreadsPerBlock: *v = 1024; break;
    case cudaDevAttrComputeCapabilityMajor: *v = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *v = 0; break;
    case cudaDevAttrWarpSize: *v = 32; break;
    default: std::printf("EMU: cudaDeviceGetAttribute(%d) not emulated\n", static_cast<int>(a)); std::abort();
  }
  return cudaSuccess;
}
cudaError_t cudaFuncSetAttribute(const void* f, enum cudaFuncAttribute a, int v) {
  if (a == cudaFuncAttributeMaxDynamicSharedMemorySize) {
    if (v < 0 || v > 227 * 1024) return cudaErrorInvalidValue;
    emu::rt().max_dyn.emplace_back(f, v);
  }
  return cudaSuccess;
}
cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int* n, const void*, int threads, size_t) {
  *n = threads > 0 && threads <= 1024 ? 2 : 0;  // a fixed guess: the emulation has no occupancy model
  return cudaSuccess;
}
cudaError_t cudaEventCreateWithFlags(cudaEvent_t* e, unsigned int) {
  if (!e) return cudaErrorInvalidValue;
  *e = new CUevent_st;
  emu::events().push_back(*e);
  return cudaSuccess;
}
cudaError_t cudaEventCreate(cudaEvent_t* e) { return cudaEventCreateWithFlags(e, cudaEventDefault); }
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s) {
  if (!e) return cudaErrorInvalidResourceHandle;
  if (emu::rt().capture) return cudaSuccess;  // (not used inside a capture)
  if (!emu::cfg().streams_lazy || emu::legacy(s)) {  // complete now (after the blocking streams' work)
    emu::legacy_wait();
    e->stream = nullptr, e->position = 0;
    return cudaSuccess;
  }
  emu::push(s, emu::StreamOp{});  // the record: a position in the stream
  e->stream = s, e->position = s->enqueued;
  return cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned int) {
  if (!e) return cudaErrorInvalidResourceHandle;
  if (!emu::cfg().streams_lazy || e->stream == nullptr || e->stream->done >= e->position) return cudaSuccess;
  if (emu::legacy(s)) {  // the legacy stream's next operation runs at once: the record first
    emu::drive(e->stream, e->position);
    return cudaSuccess;
  }
  emu::StreamOp op;
  op.wait_on = e->stream, op.upto = e->position;
  emu::push(s, std::move(op));
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e) {
  if (!e) return cudaErrorInvalidResourceHandle;
  if (e->stream) emu::drive(e->stream, e->position);
  return emu::sync_status();
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  if (!e) return cudaErrorInvalidResourceHandle;
  if (e->stream) emu::drive(e->stream, e->position);  // its pending record refers to it
  auto& v = emu::events();
  v.erase(std::remove(v.begin(), v.end(), e), v.end());
  delete e;
  return cudaSuccess;
}
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t, cudaEvent_t) { *ms = 0.0f; return cudaSuccess; }
const char* cudaGetErrorName(cudaError_t e) {
  switch (e) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorInvalidConfiguration: return "cudaErrorInvalidConfiguration";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorInvalidDevice: return "cudaErrorInvalidDevice";
    default: return "cudaError(other)";
  }
}
const char* cudaGetErrorString(cudaError_t e) {
  return e == cudaErrorLaunchFailure ? "emulated kernel failed (see EMU ERROR above)" : cudaGetErrorName(e);
}

// cuTensorMapEncodeTiled as the driver documents its checks, for tiled maps of rank 1..5 with unit element
// strides and no interleave (what the kernels use), storing emu::TensorMapNd for the emulated TMA loads
// (emu_sm90.hpp); anything else, or anything the driver refuses, is CUDA_ERROR_INVALID_VALUE.
namespace emu {
inline CUresult encode_tiled(CUtensorMap* map, CUtensorMapDataType type, cuuint32_t rank, void* base,
                             const cuuint64_t* dim, const cuuint64_t* strides, const cuuint32_t* box,
                             const cuuint32_t* elem_strides, CUtensorMapInterleave interleave,
                             CUtensorMapSwizzle swizzle, CUtensorMapL2promotion, CUtensorMapFloatOOBfill) {
  if (map == nullptr || base == nullptr || rank < 1 || rank > 5 || interleave != CU_TENSOR_MAP_INTERLEAVE_NONE)
    return CUDA_ERROR_INVALID_VALUE;
  std::uint32_t elem = 0;
  switch (type) {
    case CU_TENSOR_MAP_DATA_TYPE_BFLOAT16:
    case CU_TENSOR_MAP_DATA_TYPE_FLOAT16: elem = 2; break;
    case CU_TENSOR_MAP_DATA_TYPE_FLOAT32: elem = 4; break;
    default: return CUDA_ERROR_INVALID_VALUE;
  }
  if (reinterpret_cast<std::uintptr_t>(base) % 16 != 0) return CUDA_ERROR_INVALID_VALUE;
  TensorMapNd m{};
  m.magic = kTensorMapMagic;
  m.base = static_cast<const unsigned char*>(base);
  m.rank = rank;
  m.elem_bytes = elem;
  m.swizzle = static_cast<std::uint32_t>(swizzle);
  m.stride[0] = elem;
  for (cuuint32_t i = 0; i < rank; ++i) {
    if (dim[i] == 0 || dim[i] > (1ull << 32)) return CUDA_ERROR_INVALID_VALUE;
    if (box[i] == 0 || box[i] > 256 || elem_strides[i] != 1) return CUDA_ERROR_INVALID_VALUE;
    if (i > 0) {
      const cuuint64_t st = strides[i - 1];
      if (st % 16 != 0 || st >= (1ull << 40) || st < dim[i - 1] * m.stride[i - 1]) return CUDA_ERROR_INVALID_VALUE;
      m.stride[i] = st;
    }
    m.dim[i] = dim[i];
    m.box[i] = box[i];
  }
  if ((box[0] * elem) % 16 != 0) return CUDA_ERROR_INVALID_VALUE;
  if (swizzle == CU_TENSOR_MAP_SWIZZLE_128B && box[0] * elem > 128) return CUDA_ERROR_INVALID_VALUE;
  if (swizzle != CU_TENSOR_MAP_SWIZZLE_NONE && swizzle != CU_TENSOR_MAP_SWIZZLE_128B) return CUDA_ERROR_INVALID_VALUE;
  std::memset(map, 0, sizeof(*map));
  std::memcpy(map, &m, sizeof m);
  return CUDA_SUCCESS;
}
}  // namespace emu

cudaError_t cudaGetDriverEntryPointByVersion(const char* symbol, void** fn, unsigned int, unsigned long long,
                                             cudaDriverEntryPointQueryResult* status) {
  if (std::strcmp(symbol, "cuTensorMapEncodeTiled") != 0) {
    std::printf("EMU: driver entry point %s not emulated\n", symbol);
    std::abort();
  }
  *fn = reinterpret_cast<void*>(&emu::encode_tiled);
  if (status) *status = cudaDriverEntryPointSuccess;
  return cudaSuccess;
}

// The runtime report: one fake sm_90 device whose image is fine.
cudaError_t jk_runtime_info(jk_runtime_info_t* info) {
  std::memset(info, 0, sizeof(*info));
  info->device_count = 1;
  info->kernel_image_ok = 1;
  info->sm_major = 9;
  info->sm_minor = 0;
  std::snprintf(info->device_name, sizeof(info->device_name), "host emulation");
  return cudaSuccess;
}
int jk_runtime_info_describe(const jk_runtime_info_t*, char* buf, size_t size) {
  return std::snprintf(buf, size, "CPU emulation of the kernels (kernels/tests/emu), order %s, smem fill 0x%02x, %d SMs\n",
                       emu::cfg().order == 0 ? "forward" : emu::cfg().order == 1 ? "reverse" : "random",
                       emu::cfg().fill, emu::cfg().sms);
}
const char* jk_compiled_architectures() { return "emu"; }
