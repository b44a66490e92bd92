#pragma once
// jetmoe kernels: hand-written CUDA for JetMoE, behind a small host interface.
//
// Conventions (every function below):
//  - Pointers are device pointers (cudaMalloc'd or managed), sizes are element counts.
//  - bf16 tensors are stored as uint16_t holding the raw bfloat16 bits (upper half of an IEEE fp32).
//  - Work is enqueued on `stream` (0 = the legacy default stream) and runs asynchronously: synchronise
//    the stream before reading results on the host.
//  - The return value is cudaSuccess, cudaErrorInvalidValue for bad arguments (null pointer with a
//    non-zero size, negative size, non-positive hidden size, non-finite or negative eps), or the error
//    reported by the CUDA runtime for the launch. A zero-size call is a no-op that returns cudaSuccess.
//    Errors of earlier asynchronous work on the same thread may surface here (CUDA's sticky errors).
//  - The header is plain C++17 and needs only the CUDA runtime headers (from CUDA::cudart), so code
//    compiled by the host compiler (the Kokkos side) can include it. The functions have C linkage:
//    libjetmoe_kernels.so exports them under their plain names, for ctypes and other languages, which
//    check jk_abi_version() and jk_struct_size() against what they were written for.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

// C linkage: the library exports these functions under their plain names (ctypes, other languages).
extern "C" {

// The interface's version: raised whenever a function's parameters or a structure's layout change.
// 2: jk_model_grads_t::ready (events recorded as the backward's gradients become final).
// 3: jk_model_config_t::head_chunk (the LM head and cross-entropy a chunk of rows at a time).
#define JK_ABI_VERSION 3

// ---- runtime and device report ------------------------------------------------------------------

struct jk_runtime_info_t {
  int runtime_version;         // CUDA runtime linked in, e.g. 13000 for 13.0
  int driver_version;          // newest CUDA the driver supports; 0 when there is no driver
  int device_count;            // 0 when there is no driver or no device (never an error)
  cudaError_t device_status;   // why device_count is 0 (cudaErrorNoDevice, cudaErrorInsufficientDriver, ...)
  // The calling thread's current device (cudaGetDevice: 0 unless cudaSetDevice chose another);
  // the fields below are valid only when device_count > 0.
  int device_index;
  char device_name[256];
  int sm_major, sm_minor;      // compute capability, 9.0 for H100/H200
  int multiprocessor_count;
  size_t total_global_mem;     // bytes
  size_t shared_mem_per_block_optin;  // bytes (the largest dynamic shared memory a kernel can opt into)
  int memory_bus_width_bits;
  int l2_cache_bytes;
  // Whether this library's device code can run on that device (the binary must carry SASS or PTX
  // for its architecture; the default build carries only sm_90a SASS, which runs on sm_90 only).
  // Finding out creates the device's primary context, as any first kernel launch would.
  int kernel_image_ok;
  cudaError_t kernel_image_status;  // cudaErrorNoKernelImageForDevice when it cannot
  int kernel_binary_version;   // SM version of the image that would run, e.g. 90; 0 if none
};

// Fills *info. Returns cudaSuccess also when there is no driver or no device (device_count = 0);
// returns an error only for a null pointer or when a query of an existing device fails.
cudaError_t jk_runtime_info(jk_runtime_info_t* info);

// Writes a few human-readable lines describing *info into buf (always NUL-terminated when
// buf_size > 0). Returns the number of characters that the full text needs (like snprintf).
int jk_runtime_info_describe(const jk_runtime_info_t* info, char* buf, size_t buf_size);

// The CUDA architectures this library was compiled for (CMAKE_CUDA_ARCHITECTURES, e.g. "90a").
const char* jk_compiled_architectures(void);

// JK_ABI_VERSION as this library was compiled.
int jk_abi_version(void);

// sizeof the interface structure called `name` (e.g. "jk_layer_config_t") in this library, 0 for a
// name it does not know.
size_t jk_struct_size(const char* name);

// ---- bf16 <-> fp32 --------------------------------------------------------------------------------

// out[i] = fp32(in[i]): exact (bits << 16); NaN payloads are kept as they are.
cudaError_t jk_bf16_to_f32(const uint16_t* in, float* out, int64_t n, cudaStream_t stream);

// out[i] = bf16(in[i]), round to nearest, ties to even; overflow rounds to +-Inf; subnormals are
// rounded like any other value (no flush to zero). A NaN stays a NaN: sign and the top 7 payload
// bits are kept and the quiet bit is set, so it can never turn into an Inf.
cudaError_t jk_f32_to_bf16(const float* in, uint16_t* out, int64_t n, cudaStream_t stream);

// ---- RMSNorm forward ----------------------------------------------------------------------------
// Shapes: x, y [rows, hidden] row-major contiguous; weight [hidden]; rstd [rows] (optional).
// Per row: r = 1 / sqrt(mean(x^2) + eps), the mean accumulated in fp32.
// HF JetMoeRMSNorm numerics (jetmoe-spec.md section 3):
//   fp32:  y = w * (x * r)
//   bf16:  y = bf16( w * bf16(x * r) )   (normalise in fp32, cast to bf16, then the weight multiply
//          in bf16: the fp32 product of two bf16 values is exact, so it is rounded once)
// rstd, when not null, receives r per row (for the backward pass). y may alias x exactly (in place);
// no other overlap is allowed. Any hidden size works; rows of 16-byte-aligned data whose hidden size
// is a multiple of the vector width (4 fp32 / 8 bf16) take the vectorised path.
// JetMoE uses eps = 1e-6 for the two block norms and 1e-5 for the final norm.
cudaError_t jk_rmsnorm_fwd_f32(const float* x, const float* weight, float* y, float* rstd,
                               int64_t rows, int64_t hidden, float eps, cudaStream_t stream);

cudaError_t jk_rmsnorm_fwd_bf16(const uint16_t* x, const uint16_t* weight, uint16_t* y, float* rstd,
                                int64_t rows, int64_t hidden, float eps, cudaStream_t stream);

}  // extern "C"

// ---- kernel families (one header each, keep sorted) -----------------------------------------------
#include "jetmoe/attention.h"
#include "jetmoe/embedding.h"
#include "jetmoe/fused.h"
#include "jetmoe/grouped_gemm.h"
#include "jetmoe/layer.h"
#include "jetmoe/model.h"
#include "jetmoe/router.h"
