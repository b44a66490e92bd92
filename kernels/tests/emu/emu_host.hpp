// Fake host CUDA runtime for the emulation (definitions of the cuda_runtime_api.h functions the kernels
// and tests use; libcudart is not linked, so a call to anything else is a link error, never a silent
// no-op). One address space: device pointers are host pointers. Everything is synchronous. A kernel
// that failed in the emulator (see emu_cuda.hpp) leaves a sticky cudaErrorLaunchFailure, returned by the
// next synchronising call, as a device fault would be (reset at the start of each test case).
#pragma once
#include "emu_cuda.hpp"

namespace emu {
inline cudaError_t sync_status() { return rt().sticky; }
// Bytes live in cudaMalloc allocations (each block records its size in the 256 bytes before it).
inline std::size_t& live_bytes() {
  static std::size_t n = 0;
  return n;
}
inline std::size_t& peak_bytes() {  // the most live_bytes since the last reset (jk_emu_device_bytes_peak)
  static std::size_t n = 0;
  return n;
}
constexpr std::size_t kHeader = 256;
}  // namespace emu

cudaError_t cudaMalloc(void** p, size_t n) {
  if (!p) return cudaErrorInvalidValue;
  if (n > emu::cfg().max_bytes) {
    char w[120];
    std::snprintf(w, sizeof w, "cudaMalloc of %zu bytes over EMU_MAX_BYTES", n);
    throw emu::Skip{w};
  }
  // A full GPU: the allocation that would take the live total over EMU_DEVICE_MEMORY fails.
  if (emu::cfg().device_memory != 0 && emu::live_bytes() + n > emu::cfg().device_memory) {
    *p = nullptr;
    return cudaErrorMemoryAllocation;
  }
  char* block = static_cast<char*>(std::aligned_alloc(256, emu::kHeader + (n + 255) / 256 * 256 + 256));
  if (!block) return cudaErrorMemoryAllocation;
  std::memcpy(block, &n, sizeof n);
  emu::live_bytes() += n;
  emu::peak_bytes() = std::max(emu::peak_bytes(), emu::live_bytes());
  *p = block + emu::kHeader;
  return cudaSuccess;
}
cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  char* block = static_cast<char*>(p) - emu::kHeader;
  std::size_t n = 0;
  std::memcpy(&n, block, sizeof n);
  emu::live_bytes() -= n;
  std::free(block);
  return cudaSuccess;
}
cudaError_t cudaMallocHost(void** p, size_t n) { return cudaMalloc(p, n); }
cudaError_t cudaHostAlloc(void** p, size_t n, unsigned int) { return cudaMalloc(p, n); }
cudaError_t cudaFreeHost(void* p) { return cudaFree(p); }
cudaError_t cudaMemcpy(void* d, const void* s, size_t n, enum cudaMemcpyKind) {
  if (emu::rt().capture) return cudaErrorStreamCaptureUnsupported;  // a synchronous call while capturing
  if (emu::rt().sticky != cudaSuccess) return emu::rt().sticky;
  if (n) std::memmove(d, s, n);
  return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void* d, const void* s, size_t n, enum cudaMemcpyKind, cudaStream_t) {
  if (emu::rt().capture) {
    emu::rt().capture->push_back([d, s, n] { if (n) std::memmove(d, s, n); });
    return cudaSuccess;
  }
  return cudaMemcpy(d, s, n, cudaMemcpyDefault);
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
  if (emu::rt().sticky != cudaSuccess) return emu::rt().sticky;
  if (n) std::memset(d, v, n);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* d, int v, size_t n, cudaStream_t) {
  if (emu::rt().capture) {
    emu::rt().capture->push_back([d, v, n] { if (n) std::memset(d, v, n); });
    return cudaSuccess;
  }
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
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t) {
  if (emu::rt().sticky != cudaSuccess) return emu::rt().sticky;
  for (const auto& op : exec->ops) op();
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
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int) { *s = reinterpret_cast<cudaStream_t>(0x5000); return cudaSuccess; }
cudaError_t cudaStreamDestroy(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return emu::sync_status(); }
cudaError_t cudaDeviceSynchronize(void) { return emu::sync_status(); }
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
cudaError_t cudaEventCreate(cudaEvent_t* e) { *e = reinterpret_cast<cudaEvent_t>(0x6000); return cudaSuccess; }
cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
cudaError_t cudaEventSynchronize(cudaEvent_t) { return emu::sync_status(); }
cudaError_t cudaEventDestroy(cudaEvent_t) { return cudaSuccess; }
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
