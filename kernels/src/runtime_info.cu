// Runtime, driver and device report. Must work on a machine with no driver or no GPU: there it
// reports device_count = 0 and the reason, and succeeds.
#include "common.cuh"
#include "jetmoe/kernels.h"

#include <cstdio>
#include <cstring>

#ifndef JK_CUDA_ARCHITECTURES
#define JK_CUDA_ARCHITECTURES "unknown"
#endif

namespace jk::detail {
namespace {

// An empty kernel compiled like every other kernel of the library: if its image cannot be loaded on
// a device, none of them can.
__global__ void probe_kernel() {}

}  // namespace
}  // namespace jk::detail

const char* jk_compiled_architectures() { return JK_CUDA_ARCHITECTURES; }

cudaError_t jk_runtime_info(jk_runtime_info_t* info) {
  if (info == nullptr) return cudaErrorInvalidValue;
  std::memset(info, 0, sizeof(*info));
  info->device_status = cudaSuccess;
  info->kernel_image_status = cudaErrorNoDevice;

  JK_RETURN_IF_ERROR(cudaRuntimeGetVersion(&info->runtime_version));
  // Sets 0 (and succeeds) when no driver is installed.
  JK_RETURN_IF_ERROR(cudaDriverGetVersion(&info->driver_version));

  int count = 0;
  const cudaError_t count_status = cudaGetDeviceCount(&count);
  if (count_status != cudaSuccess || count <= 0) {
    // No driver (cudaErrorInsufficientDriver), no device (cudaErrorNoDevice), ...: not an error here.
    (void)cudaGetLastError();  // the failed query must not surface as the error of a later call
    info->device_count = 0;
    info->device_status = count_status != cudaSuccess ? count_status : cudaErrorNoDevice;
    return cudaSuccess;
  }
  info->device_count = count;

  JK_RETURN_IF_ERROR(cudaGetDevice(&info->device_index));
  cudaDeviceProp prop{};
  JK_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, info->device_index));
  std::snprintf(info->device_name, sizeof(info->device_name), "%s", prop.name);
  info->sm_major = prop.major;
  info->sm_minor = prop.minor;
  info->multiprocessor_count = prop.multiProcessorCount;
  info->total_global_mem = prop.totalGlobalMem;
  info->shared_mem_per_block_optin = prop.sharedMemPerBlockOptin;
  info->memory_bus_width_bits = prop.memoryBusWidth;
  info->l2_cache_bytes = prop.l2CacheSize;

  cudaFuncAttributes attributes{};
  info->kernel_image_status = cudaFuncGetAttributes(&attributes, jk::detail::probe_kernel);
  if (info->kernel_image_status == cudaSuccess) {
    info->kernel_image_ok = 1;
    info->kernel_binary_version = attributes.binaryVersion;
  } else {
    (void)cudaGetLastError();  // reported in the struct, not left behind for the next call
  }
  return cudaSuccess;
}

int jk_runtime_info_describe(const jk_runtime_info_t* info, char* buf, std::size_t buf_size) {
  if (info == nullptr) return std::snprintf(buf, buf_size, "(no runtime info)\n");
  const auto version = [](int v, char* out, std::size_t n) {
    if (v <= 0) {
      std::snprintf(out, n, "none");
    } else {
      std::snprintf(out, n, "%d.%d", v / 1000, (v % 1000) / 10);
    }
  };
  char runtime[32];
  char driver[32];
  version(info->runtime_version, runtime, sizeof(runtime));
  version(info->driver_version, driver, sizeof(driver));

  if (info->device_count == 0) {
    return std::snprintf(buf, buf_size,
                         "CUDA runtime %s, driver %s, kernels built for %s\n"
                         "devices: 0 (%s: %s)\n",
                         runtime, driver, jk_compiled_architectures(), cudaGetErrorName(info->device_status),
                         cudaGetErrorString(info->device_status));
  }
  return std::snprintf(
      buf, buf_size,
      "CUDA runtime %s, driver %s, kernels built for %s\n"
      "devices: %d; device %d: %s, sm_%d%d, %d SMs, %.1f GiB, %d-bit bus, L2 %.0f MiB, smem/block %zu KiB\n"
      "kernel image for this device: %s (%s, binary sm_%d)\n",
      runtime, driver, jk_compiled_architectures(), info->device_count, info->device_index, info->device_name,
      info->sm_major, info->sm_minor, info->multiprocessor_count,
      static_cast<double>(info->total_global_mem) / (1024.0 * 1024.0 * 1024.0), info->memory_bus_width_bits,
      static_cast<double>(info->l2_cache_bytes) / (1024.0 * 1024.0), info->shared_mem_per_block_optin / 1024,
      info->kernel_image_ok ? "yes" : "NO", cudaGetErrorName(info->kernel_image_status),
      info->kernel_binary_version);
}
