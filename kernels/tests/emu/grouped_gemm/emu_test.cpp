// The real GPU test program (small-shape copy) on the emulated kernels and a fake host CUDA runtime.
#include "emu_runtime.hpp"
#include <cstdlib>
namespace emu {
inline float bf16_to_f(std::uint16_t b) { return bf(b); }
inline std::uint16_t f_to_bf16(float f) {  // RNE (no NaN in these paths)
  std::uint32_t u = f2u(f);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}
// cublasLtMatmul semantics, column-major: D[m x n] = op(A) op(B) + beta D, fp32 accumulation.
inline cudaError_t lt_gemm_host(cublasOperation_t op_a, cublasOperation_t op_b, std::int64_t m, std::int64_t n,
                                std::int64_t kk, const void* a, std::int64_t lda, const void* b, std::int64_t ldb, void* d,
                                cudaDataType_t d_type, std::int64_t ldd, float beta) {
  const auto* A = static_cast<const std::uint16_t*>(a);
  const auto* B = static_cast<const std::uint16_t*>(b);
  for (std::int64_t j = 0; j < n; ++j)
    for (std::int64_t i = 0; i < m; ++i) {
      float s = 0.0f;
      for (std::int64_t l = 0; l < kk; ++l) {
        const float av = bf16_to_f(op_a == CUBLAS_OP_N ? A[i + l * lda] : A[l + i * lda]);
        const float bv2 = bf16_to_f(op_b == CUBLAS_OP_N ? B[l + j * ldb] : B[j + l * ldb]);
        s += av * bv2;
      }
      if (d_type == CUDA_R_32F) {
        float* D = static_cast<float*>(d) + i + j * ldd;
        *D = beta != 0.0f ? s + beta * *D : s;
      } else {
        std::uint16_t* D = static_cast<std::uint16_t*>(d) + i + j * ldd;
        *D = f_to_bf16(beta != 0.0f ? s + beta * bf16_to_f(*D) : s);
      }
    }
  return cudaSuccess;
}
inline cudaError_t fake_malloc(void** p, std::size_t n) { *p = std::aligned_alloc(256, (n + 255) / 256 * 256 + 256); return cudaSuccess; }
}  // namespace emu
#define cudaMalloc(pp, n) emu::fake_malloc(reinterpret_cast<void**>(pp), n)
#define cudaFree(p) (std::free(p), cudaSuccess)
#define cudaMemset(p, v, n) (std::memset(p, v, n), cudaSuccess)
#define cudaMemsetAsync(p, v, n, s) (std::memset(p, v, n), cudaSuccess)
#define cudaMemcpy(d, s, n, k) (std::memcpy(d, s, n), cudaSuccess)
#define cudaStreamCreateWithFlags(ps, f) (*(ps) = nullptr, cudaSuccess)
#define cudaStreamDestroy(s) cudaSuccess
#define cudaStreamSynchronize(s) cudaSuccess
#define cudaDeviceSynchronize() cudaSuccess  // harness poison()/upload() synchronise the device

#include "grouped_gemm_emu.cu.inc"

// The runtime report: one fake device whose image is fine.
cudaError_t jk_runtime_info(jk_runtime_info_t* info) {
  std::memset(info, 0, sizeof(*info));
  info->device_count = 1;
  info->kernel_image_ok = 1;
  std::strcpy(info->device_name, "host emulation");
  return cudaSuccess;
}
int jk_runtime_info_describe(const jk_runtime_info_t*, char* buf, size_t size) { return std::snprintf(buf, size, "host emulation of the kernels\n"); }
const char* jk_compiled_architectures() { return "emu"; }

#include "test_emu.cu.inc"
