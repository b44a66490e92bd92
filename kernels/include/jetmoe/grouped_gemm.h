#pragma once
// jetmoe kernels, family 'grouped_gemm': the expert GEMMs of MoE / MoA in bf16 with fp32 accumulation,
// the SwiGLU epilogue fused into fc1, a standalone SwiGLU forward/backward, and the backward GEMMs.
//
// Conventions: those of kernels.h (device pointers, int64_t element counts, asynchronous on `stream`,
// cudaSuccess / cudaErrorInvalidValue / the launch error, bf16 = uint16_t raw bits).
//
// Grouping. Rows are grouped by expert: expert e owns rows [offsets[e], offsets[e+1]) of the
// permuted activations (row-major, contiguous). `offsets_dev` is a DEVICE int32 array [E+1] with
// offsets[0] = 0, non-decreasing, offsets[E] = rows (the router writes it; it is read on the device,
// so the own kernels need no host synchronisation). The kernels clamp every offset to [0, rows], so
// bad offsets can never make them read or write outside the tensors, but the result is then
// unspecified. `offsets_host` is an optional HOST copy of the same array (null when there is none);
// only JK_GROUPED_GEMM_CUBLASLT needs it (it launches one vendor GEMM per non-empty expert).
// Experts may be empty; E <= JK_GROUPED_GEMM_MAX_EXPERTS.
//
// Weights are stored [E, out, in] (row-major, contiguous) and applied as y = x W[e]^T (HF
// JetMoeParallelExperts / F.linear), as in jetmoe-spec.md section 2.
//
// Numerics. Inputs bf16, products exact in fp32, accumulation in fp32 (the order depends on the
// algorithm: tensor-core k16 steps in increasing k for the own kernels, the vendor's order for
// cuBLASLt), then one rounding to the output type (bf16 round-to-nearest-even, or fp32 as is).
// Determinism: every output element is computed by exactly one thread in a fixed order (no atomics,
// no split-K), so the same inputs give bit-identical outputs from run to run for a given algorithm
// (cuBLASLt: the heuristic's first algorithm for the shape, which is deterministic for a fixed
// shape, device and library version).
//
// Aliasing: outputs must not overlap inputs or each other.
//
// Alignment: the tuned path (JK_GROUPED_GEMM_MMA) needs 16-byte aligned base pointers and
// reduction/leading dimensions that are multiples of 8 elements; where that does not hold it falls
// back to the simple kernel (same results up to fp32 summation order). Any shape works.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

// C linkage: the library exports these functions under their plain names (ctypes, other languages).
extern "C" {

// Largest E accepted (the tile scheduler keeps a prefix over the experts in shared memory).
#define JK_GROUPED_GEMM_MAX_EXPERTS 256

typedef enum jk_grouped_gemm_algo_t {
  JK_GROUPED_GEMM_AUTO = 0,      // the fastest own path for the arguments (currently MMA)
  JK_GROUPED_GEMM_SIMPLE = 1,    // own straightforward mma.sync kernel: 64x64x32 tiles, plain loads (fallback)
  JK_GROUPED_GEMM_MMA = 2,       // own tuned mma.sync kernel: cp.async multi-stage pipeline, ldmatrix, 128x128 tiles
  JK_GROUPED_GEMM_CUBLASLT = 3,  // one cuBLASLt GEMM per non-empty expert (vendor baseline; needs offsets_host)
  JK_GROUPED_GEMM_WGMMA = 4,     // own sm_90a kernel: TMA loads into an mbarrier ring, wgmma 128x256 tiles, on
                                 // an sm_90 device with 16-byte aligned operands, k % 8 == 0 (and n % 8 == 0
                                 // for the backward calls); any other call runs MMA's path (not yet run on a GPU)
} jk_grouped_gemm_algo_t;

// Name of an algorithm ("auto", "simple", "mma", "cublaslt", "wgmma", or "?").
const char* jk_grouped_gemm_algo_name(jk_grouped_gemm_algo_t algo);

// ---- forward: out[r, :] = in[r, :] W[e]^T for the rows r of expert e -------------------------------
// in [rows, k] bf16; w [E, n, k] bf16; out [rows, n] bf16 (rounded once) or fp32.
// rows, n, k >= 0; num_experts in [1, JK_GROUPED_GEMM_MAX_EXPERTS].
// Zero sizes: rows == 0 or n == 0 is a no-op; k == 0 writes out = 0 (the empty sum).
cudaError_t jk_grouped_gemm_fwd_bf16(const uint16_t* in, const uint16_t* w, uint16_t* out,
                                     const int32_t* offsets_dev, const int32_t* offsets_host, int64_t rows,
                                     int64_t num_experts, int64_t n, int64_t k, jk_grouped_gemm_algo_t algo,
                                     cudaStream_t stream);

cudaError_t jk_grouped_gemm_fwd_f32out(const uint16_t* in, const uint16_t* w, float* out,
                                       const int32_t* offsets_dev, const int32_t* offsets_host, int64_t rows,
                                       int64_t num_experts, int64_t n, int64_t k, jk_grouped_gemm_algo_t algo,
                                       cudaStream_t stream);

// ---- fc1 with the SwiGLU epilogue fused ------------------------------------------------------------
// w_in [E, 2f, k] bf16: rows 0..f-1 of each expert are the gate (activated), rows f..2f-1 the up
// projection (jetmoe-spec.md section 2). For the rows r of expert e, z = in[r] W_in[e]^T (fp32 acc);
// HF bf16 numerics (torch: chunk, F.silu, multiply, all in bf16):
//   a = bf16(z[j]),  b = bf16(z[f + j]),  s = bf16(silu(a)) with silu(a) = a / (1 + exp(-a)) in fp32,
//   h[r, j] = bf16(s * b)   (the fp32 product of two bf16 values is exact, so this is one rounding).
// h [rows, f] bf16; z [rows, 2f] bf16 (optional: null skips it) receives bf16(z) for the backward.
// The own kernels tile the output columns in gate/up pairs (each warp's accumulator holds gate column
// j and up column f + j in the same thread), so Z never travels through memory unless asked for.
// JK_GROUPED_GEMM_CUBLASLT computes Z with cuBLASLt into `z` (which must then be non-null) and runs
// jk_swiglu_fwd_bf16 on it. Zero sizes: rows == 0 or f == 0 is a no-op; k == 0 writes z = 0, h = 0.
cudaError_t jk_grouped_gemm_fc1_swiglu_bf16(const uint16_t* in, const uint16_t* w_in, uint16_t* h, uint16_t* z,
                                            const int32_t* offsets_dev, const int32_t* offsets_host,
                                            int64_t rows, int64_t num_experts, int64_t f, int64_t k,
                                            jk_grouped_gemm_algo_t algo, cudaStream_t stream);

// ---- backward ------------------------------------------------------------------------------------
// Data gradient: din[r, :] = dout[r, :] W[e] for the rows r of expert e.
// dout [rows, n] bf16; w [E, n, k] bf16; din [rows, k] bf16 (rounded once). n == 0 writes din = 0.
cudaError_t jk_grouped_gemm_bwd_data_bf16(const uint16_t* dout, const uint16_t* w, uint16_t* din,
                                          const int32_t* offsets_dev, const int32_t* offsets_host,
                                          int64_t rows, int64_t num_experts, int64_t n, int64_t k,
                                          jk_grouped_gemm_algo_t algo, cudaStream_t stream);

// Weight gradient: dw[e] = beta * dw[e] + dout[rows of e]^T in[rows of e]   (fp32, [E, n, k]).
// dout [rows, n] bf16; in [rows, k] bf16. beta must be 0 or 1 (1 accumulates across micro-batches;
// with beta == 0 the old dw is never read, so it may hold anything, NaN included). An expert with no
// rows gets dw[e] = 0 (beta 0) or keeps dw[e] (beta 1). n == 0 or k == 0 is a no-op.
// The sum over an expert's rows is in fp32 in increasing row order within each k16 step.
cudaError_t jk_grouped_gemm_bwd_weight_f32(const uint16_t* dout, const uint16_t* in, float* dw, float beta,
                                           const int32_t* offsets_dev, const int32_t* offsets_host,
                                           int64_t rows, int64_t num_experts, int64_t n, int64_t k,
                                           jk_grouped_gemm_algo_t algo, cudaStream_t stream);

// ---- standalone SwiGLU (the unfused path) ----------------------------------------------------------
// z [rows, 2f] bf16 (gate half first); h [rows, f] bf16, with the HF bf16 sequence above.
cudaError_t jk_swiglu_fwd_bf16(const uint16_t* z, uint16_t* h, int64_t rows, int64_t f, cudaStream_t stream);

// Backward (jetmoe-spec.md section 4), HF bf16 autograd numerics: with a = z[j], b = z[f + j] (bf16),
// s = bf16(silu(a)), sig = sigmoid(a) in fp32:
//   dz[r, f + j] = db = bf16(dh * s)
//   dz[r, j]     = da = bf16( bf16(dh * b) * sig * (1 + a * (1 - sig)) )   (silu_backward in fp32)
// dh [rows, f] bf16; dz [rows, 2f] bf16 (written completely).
cudaError_t jk_swiglu_bwd_bf16(const uint16_t* z, const uint16_t* dh, uint16_t* dz, int64_t rows, int64_t f,
                               cudaStream_t stream);

}  // extern "C"
