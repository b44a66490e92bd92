#pragma once
// jetmoe kernels, family 'fused': RMSNorm backward, RoPE forward/backward, cross-entropy over the
// vocabulary, global gradient norm and multi-tensor AdamW.
//
// Conventions of kernels.h hold for every function: device pointers, int64_t element counts, work
// enqueued on `stream`, cudaSuccess / cudaErrorInvalidValue (bad host-side arguments) / the launch
// error; a zero-size call is a no-op. bf16 tensors are uint16_t raw bits. Every result is
// deterministic: the same inputs give bit-identical outputs from run to run (no atomics; every
// reduction has a fixed order that depends only on the sizes).
// Numerics follow HF transformers (jetmoe-spec.md sections 3 and 9) and the project's CPU code
// (src/model/layers.*, src/train/losses.*, src/train/optimizer.*); kernels/notes/fused.md lists
// what is bit-exact and what is not.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

// C linkage: the library exports these functions under their plain names (ctypes, other languages).
extern "C" {

// ---- RMSNorm backward -----------------------------------------------------------------------------
// Shapes: x, dy, dx [rows, hidden] row-major contiguous; weight [hidden]; rstd [rows] (written by
// jk_rmsnorm_fwd_*); dw [hidden] fp32; workspace: jk_fused_rmsnorm_bwd_workspace_elems(rows, hidden)
// floats (device).
// With xhat = x * r (r = rstd[row], fp32, unrounded) and g = dy * w (exact in fp32 for bf16 inputs):
//   dx = r * (g - xhat * mean_c(g * xhat))                     fp32 math; stored in x's dtype
//   dw = beta * dw + sum_rows dy * n,   n = xhat (fp32) or n = bf16(x * r) (bf16, the value the
//        forward multiplied by w)                              fp32, per-row-block partial sums
//        in a fixed order, then a fixed-order sum of the partials (second kernel)
// The roundings of the bf16 forward are treated as identity (straight-through), as autograd does.
// beta must be 0 (overwrite; dw's old contents are ignored, NaN included) or 1 (accumulate).
// dx may alias dy exactly (in place); dx may not alias x. dw may be null (no weight gradient; the
// workspace may then be null too).
int64_t jk_fused_rmsnorm_bwd_workspace_elems(int64_t rows, int64_t hidden);

cudaError_t jk_fused_rmsnorm_bwd_f32(const float* x, const float* weight, const float* rstd, const float* dy,
                                     float* dx, float* dw, float beta, float* workspace, int64_t rows,
                                     int64_t hidden, cudaStream_t stream);

cudaError_t jk_fused_rmsnorm_bwd_bf16(const uint16_t* x, const uint16_t* weight, const float* rstd,
                                      const uint16_t* dy, uint16_t* dx, float* dw, float beta, float* workspace,
                                      int64_t rows, int64_t hidden, cudaStream_t stream);

// ---- RoPE (half-split / rotate_half layout), in place ----------------------------------------------
// q [tokens, q_heads, head_dim], k [tokens, k_heads, head_dim] contiguous (k may be null when
// k_heads == 0); positions int32 [tokens] (the position of each token).
// The angles come from a (cos, sin) table, fp32 [max_positions, head_dim / 2, 2] in device memory,
// built once by jk_fused_rope_table (synchronous: computes on the host, then cudaMemcpy) as HF does:
//   inv_freq_i = 1 / theta^(float(2i) / float(head_dim))   each step in fp32
//   angle      = float(position) * inv_freq_i              fp32
//   cos, sin   = correctly rounded fp32 cos(angle), sin(angle)   (from double; HF's fp32 cos/sin are
//                within an ulp of it: PyTorch CPU bit-exact on the fixtures, see notes/fused.md)
// (Device-side cosf/sinf would bring fp64 and local memory into the kernel through their
// large-argument reduction: a table is exact and cheap, 2 MB for 4096 positions x d = 128.)
// A position outside [0, max_positions) gives NaN for that token. For i < h = head_dim / 2:
//   forward:  out_i = v_i c - v_{i+h} s,   out_{i+h} = v_{i+h} c + v_i s
//   backward: dv_i  = g_i c + g_{i+h} s,   dv_{i+h}  = g_{i+h} c - g_i s   (the transposed rotation)
// bf16: c and s are rounded to bf16 first, each product is rounded to bf16, and the sum is computed in
// fp32 and rounded to bf16: HF apply_rotary_pos_emb bit for bit.
// fp32: the same sequence without the bf16 roundings (fp32 products and sum, no FMA contraction).
// table must be 8-byte aligned. theta > 0 and finite (JetMoE: 10000).
int64_t jk_fused_rope_table_elems(int64_t max_positions, int64_t head_dim);  // floats; 0 if invalid
// Fills a HOST array of jk_fused_rope_table_elems floats (no CUDA call).
cudaError_t jk_fused_rope_table_host(float* host_table, int64_t max_positions, int64_t head_dim, float theta);
// Fills a DEVICE array of jk_fused_rope_table_elems floats (synchronous).
cudaError_t jk_fused_rope_table(float* device_table, int64_t max_positions, int64_t head_dim, float theta);

cudaError_t jk_fused_rope_fwd_f32(float* q, float* k, const int32_t* positions, const float* table,
                                  int64_t max_positions, int64_t tokens, int64_t q_heads, int64_t k_heads,
                                  int64_t head_dim, cudaStream_t stream);
cudaError_t jk_fused_rope_bwd_f32(float* dq, float* dk, const int32_t* positions, const float* table,
                                  int64_t max_positions, int64_t tokens, int64_t q_heads, int64_t k_heads,
                                  int64_t head_dim, cudaStream_t stream);
cudaError_t jk_fused_rope_fwd_bf16(uint16_t* q, uint16_t* k, const int32_t* positions, const float* table,
                                   int64_t max_positions, int64_t tokens, int64_t q_heads, int64_t k_heads,
                                   int64_t head_dim, cudaStream_t stream);
cudaError_t jk_fused_rope_bwd_bf16(uint16_t* dq, uint16_t* dk, const int32_t* positions, const float* table,
                                   int64_t max_positions, int64_t tokens, int64_t q_heads, int64_t k_heads,
                                   int64_t head_dim, cudaStream_t stream);
// The four functions above take 16-byte vectors (8 bf16 / 4 fp32 elements of each half, and their
// table entries) per thread when head_dim / 2 is a multiple of that width, q (or k) is 16-byte aligned
// and the table 64-byte (bf16) / 32-byte (fp32) aligned (cudaMalloc gives 256); else one pair per
// thread. The _simple functions always take one pair per thread (reference and fallback). Every element
// is computed the same way, so all give the same bits.
cudaError_t jk_fused_rope_fwd_f32_simple(float* q, float* k, const int32_t* positions, const float* table,
                                         int64_t max_positions, int64_t tokens, int64_t q_heads, int64_t k_heads,
                                         int64_t head_dim, cudaStream_t stream);
cudaError_t jk_fused_rope_bwd_f32_simple(float* dq, float* dk, const int32_t* positions, const float* table,
                                         int64_t max_positions, int64_t tokens, int64_t q_heads, int64_t k_heads,
                                         int64_t head_dim, cudaStream_t stream);
cudaError_t jk_fused_rope_fwd_bf16_simple(uint16_t* q, uint16_t* k, const int32_t* positions, const float* table,
                                          int64_t max_positions, int64_t tokens, int64_t q_heads, int64_t k_heads,
                                          int64_t head_dim, cudaStream_t stream);
cudaError_t jk_fused_rope_bwd_bf16_simple(uint16_t* dq, uint16_t* dk, const int32_t* positions, const float* table,
                                          int64_t max_positions, int64_t tokens, int64_t q_heads, int64_t k_heads,
                                          int64_t head_dim, cudaStream_t stream);

// ---- cross-entropy over the vocabulary -----------------------------------------------------------
// logits [rows, vocab] (bf16 or fp32, read as fp32 as HF's logits.float() does), labels int32 [rows]
// (already shifted; -100 = ignored). No probabilities are materialised.
// Forward, per row (one pass, online max and sum of exp in fp32):
//   lse[row]  = max + log(sum_c exp(x_c - max))
//   loss[row] = lse - x[label]  (0 for an ignored row; NaN for a label outside [0, vocab))
// and, over the rows (a second, single-block kernel, fixed-order fp32 sum):
//   n_valid   = number of rows whose label is not -100 (int32)
//   loss_mean = sum(loss) / n_valid (0 when n_valid == 0, as the project's CPU code; PyTorch: NaN)
//   inv_valid = 1 / n_valid (0 when n_valid == 0): the backward scale for d loss_mean = 1
// loss_rows and lse are required; loss_mean, n_valid, inv_valid may each be null.
// Backward: dlogits = (exp(x - lse) - onehot(label)) * scale, zero rows for ignored labels, NaN rows for
// labels outside [0, vocab). scale = *scale_device when scale_device is not null (a device scalar,
// e.g. inv_valid of the forward, read by the kernel), else scale_host (e.g. dloss / n_valid).
// dlogits may alias logits exactly when the dtypes are the same (in place).
cudaError_t jk_fused_cross_entropy_fwd_f32(const float* logits, const int32_t* labels, float* loss_rows, float* lse,
                                           float* loss_mean, int32_t* n_valid, float* inv_valid, int64_t rows,
                                           int64_t vocab, cudaStream_t stream);
cudaError_t jk_fused_cross_entropy_fwd_bf16(const uint16_t* logits, const int32_t* labels, float* loss_rows,
                                            float* lse, float* loss_mean, int32_t* n_valid, float* inv_valid,
                                            int64_t rows, int64_t vocab, cudaStream_t stream);
cudaError_t jk_fused_cross_entropy_bwd_f32(const float* logits, const int32_t* labels, const float* lse,
                                           float* dlogits, const float* scale_device, float scale_host,
                                           int64_t rows, int64_t vocab, cudaStream_t stream);
cudaError_t jk_fused_cross_entropy_bwd_bf16(const uint16_t* logits, const int32_t* labels, const float* lse,
                                            uint16_t* dlogits, const float* scale_device, float scale_host,
                                            int64_t rows, int64_t vocab, cudaStream_t stream);
// Per-row weights (DPO-style objectives sum_r w_r loss_r): dlogits = bf16((softmax - onehot) * row_weight[row])
// (fp32 product, one rounding), zero rows for ignored labels whatever their weight; row_weight device fp32
// [rows]. With every weight equal to s, bit-identical to jk_fused_cross_entropy_bwd_bf16 with scale s.
cudaError_t jk_fused_cross_entropy_bwd_bf16_weighted(const uint16_t* logits, const int32_t* labels, const float* lse,
                                                     uint16_t* dlogits, const float* row_weight, int64_t rows,
                                                     int64_t vocab, cudaStream_t stream);
// bf16 logits, fp32 gradient (no bf16 rounding of dlogits).
cudaError_t jk_fused_cross_entropy_bwd_bf16_f32(const uint16_t* logits, const int32_t* labels, const float* lse,
                                                float* dlogits, const float* scale_device, float scale_host,
                                                int64_t rows, int64_t vocab, cudaStream_t stream);

// ---- global gradient norm and multi-tensor AdamW -------------------------------------------------
// One entry per parameter tensor; the list itself lives in DEVICE memory (cudaMemcpy it once, it
// changes only when the buffers move). Every pointer is a device pointer to `numel` elements;
// param_bf16 may be null (no bf16 copy). Entries with numel <= 0 are skipped. The descriptor
// contents are not validated on the host (they are device memory): null pointers in an entry with
// numel > 0 are undefined behaviour. No two entries may overlap.
struct jk_adamw_tensor_t {
  float* param;           // fp32 master weights
  uint16_t* param_bf16;   // bf16 copy written after the update (round to nearest even), or null
  const float* grad;      // fp32 gradient (not modified)
  float* exp_avg;         // m
  float* exp_avg_sq;      // v
  int64_t numel;
  int32_t weight_decay;   // non-zero: decoupled weight decay applies (matrices, embeddings); 0: norms, biases
  int32_t reserved;       // 0
};

// Hyper-parameters of one step (host struct, passed by value to the kernel).
struct jk_adamw_hyper_t {
  double lr;
  double beta1, beta2, eps, weight_decay;
  int64_t step;  // t of the bias corrections, >= 1 (the CPU AdamW increments before the update)
};

// Device workspace of the gradient norm: this many floats (fixed, independent of the tensors).
constexpr int64_t jk_fused_grad_norm_workspace_elems = 2 * 512;

// Sum of squares of every gradient in the list, in compensated float-float arithmetic (~44 bits, in
// place of the CPU's double: device code here avoids fp64): 4096-element chunks of the concatenated
// list go round robin to the warps of a fixed grid (512 x 8 warps), each warp sums its chunks in
// order (32 strided lanes), then fixed trees over lanes, warps and blocks: deterministic on any GPU.
// Equals the CPU's grad_sum_of_squares to ~1e-12 relative. A sum of squares above ~3.4e38 (the fp32
// range of the hi part) or an Inf gradient gives NaN (the CPU's double gives a finite norm or Inf).
// Writes (each optional, device):
//   norm[0]        = sqrt(sum of squares) rounded to fp32
//   clip_factor[0] = min(1, max_norm / (norm + 1e-6)) rounded to fp32 (the project's clip_factor and
//                    torch.nn.utils.clip_grad_norm_); 1 when max_norm <= 0 or +Inf (clipping off);
//                    NaN when the norm is NaN (as torch; the CPU's std::min gives 1)
//   sum_sq[0..1]   = the sum of squares as a float-float pair (hi, lo) (pipeline stages add theirs)
cudaError_t jk_fused_grad_norm(const jk_adamw_tensor_t* tensors, int64_t num_tensors, double max_norm,
                               float* workspace, float* norm, float* clip_factor, float* sum_sq,
                               cudaStream_t stream);

// One AdamW step over every tensor of the list in one launch. torch.optim.AdamW's single-tensor
// algorithm as the project's CPU AdamW::step, operation for operation in fp32 without contraction:
//   g = grad * grad_scale                    (grad_scale = *grad_scale_device, or 1 when null)
//   p = p * (1 - lr wd)   (wd only where weight_decay != 0; the factor rounded once from double)
//   m = m + (1 - b1) (g - m)
//   v = v b2 + ((1 - b2) g) g
//   p = p + (-step_size) (m / (sqrt(v) / sqrt(1 - b2^t) + eps)),   step_size = lr / (1 - b1^t)
// with every scalar computed in double on the host and rounded to fp32 once, as the CPU code does;
// then param_bf16 = bf16(p). Bit-identical to the CPU optimizer for the same grad_scale.
cudaError_t jk_fused_adamw(const jk_adamw_tensor_t* tensors, int64_t num_tensors, jk_adamw_hyper_t hyper,
                           const float* grad_scale_device, cudaStream_t stream);

// ---- simple reference paths (kept callable for tests and as a fallback) ---------------------------
// Same contracts as the functions above; straightforward kernels (one thread per element or pair,
// no vector loads). jk_fused_rmsnorm_bwd_*_simple computes dx with one block per row and dw with a
// separate column-reduction pass over the same per-row-block partition, so its dw equals the tuned
// path bit for bit.
cudaError_t jk_fused_rmsnorm_bwd_f32_simple(const float* x, const float* weight, const float* rstd, const float* dy,
                                            float* dx, float* dw, float beta, float* workspace, int64_t rows,
                                            int64_t hidden, cudaStream_t stream);
cudaError_t jk_fused_rmsnorm_bwd_bf16_simple(const uint16_t* x, const uint16_t* weight, const float* rstd,
                                             const uint16_t* dy, uint16_t* dx, float* dw, float beta,
                                             float* workspace, int64_t rows, int64_t hidden, cudaStream_t stream);

}  // extern "C"
