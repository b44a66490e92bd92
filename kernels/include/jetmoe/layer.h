#pragma once
// jetmoe kernels, family 'layer': one JetMoE block (jetmoe-spec.md section 3) on the device, composed
// from the other families (router, grouped_gemm, attention, fused) plus a few glue kernels (residual
// adds, index maps, K/V packing, gradient accumulation). Training forward (keeping what the backward
// needs), backward, and a single-token decode step against a KV cache.
//
// Conventions of kernels.h: device pointers, int64_t sizes, asynchronous on `stream`, returns
// cudaSuccess / cudaErrorInvalidValue (bad arguments) / the first failing launch's error; B * T == 0
// is a no-op. bf16 = uint16_t raw bits. No call synchronises with the host.
//
// Block (N = B * T tokens, D hidden, E experts, k = top_k, H_kv K/V heads, d head dim, A = H_kv * d,
// Hq = k * H_kv query heads, F expert FFN width):
//   u1 = RMSNorm_in(x)                                    (bf16, eps cfg.eps, HF rounding)
//   MoA router on u1 -> expert_ids, gates, plan           (jk_router_fwd_bf16)
//   q_sorted = gather(u1) W_q[e]^T                        (grouped rows [N k, A])
//   q[t, j*H_kv + h] = q_sorted[position[t, j]] head h    (query head i = slot j * H_kv + h)
//   K = u1 W_kv[0:A]^T, V = u1 W_kv[A:2A]^T               (one-expert grouped GEMMs, offsets {0, N})
//   RoPE(q), RoPE(K) at position t (0..T-1 in each sequence; half-split, HF bf16 sequence)
//   attn = causal attention, query head i uses K/V head i mod H_kv (tiled)
//   y_attn[row] = attn[token, slot heads] W_o[e]^T        (grouped rows [N k, D])
//   x_mid = bf16(x + combine(y_attn, gates) + b_attn)     (HF bf16 combine, bf16 residual add)
//   u2 = RMSNorm_post(x_mid); MoE router; z = gather(u2) W_in[e]^T; h = SwiGLU(z) (gate half first)
//   y_mlp = h W_out[e]^T;  out = bf16(x_mid + combine(y_mlp, gates') + b_mlp)
//   losses (original JetMoE form, unscaled): [moa switch, moa z, moe switch, moe z]
// Backward: the exact chain rule of the above (bf16 roundings straight-through), with the aux-loss
// gradients aux_switch_coef * d switch + aux_z_coef * d z added to both routers' logits.
//
// Numerics: every stage uses the family kernel's documented numerics (HF bf16 sequences where the
// family is bit-exact with HF: RMSNorm, router logits/top-k/gates, combine, SwiGLU, RoPE; fp32
// accumulation with one bf16 rounding in the GEMMs; attention within a few bf16 ulps of HF eager).
// The residual adds are bf16(fp32(a) + fp32(b)) as PyTorch's bf16 add. In the backward, the three
// gradient contributions to u1 (q-proj via the gather, K/V projection, router) and the two to u2
// (experts, router) are summed in fp32 and rounded to bf16 once; HF sums bf16 tensors in autograd.
// kernels/notes/layer.md lists what is bit-exact with HF and what is not.
//
// Determinism: every family kernel and glue kernel is run-to-run bit-reproducible (no float atomics),
// so the whole layer is (for a fixed gemm algo / attention path, GPU and build).
// Aliasing: no output may overlap an input or another output. Weights are not modified.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

// C linkage: the library exports these functions under their plain names (ctypes, other languages).
extern "C" {

// Weights of one block, bf16, HF layouts (jetmoe-spec.md section 2). All required.
struct jk_layer_weights_t {
  const uint16_t* input_norm;  // [D]          input_layernorm.weight
  const uint16_t* moa_router;  // [E, D]       self_attention.experts.router.layer.weight
  const uint16_t* moa_q;       // [E, A, D]    self_attention.experts.input_linear.weight
  const uint16_t* kv_proj;     // [2A, D]      self_attention.kv_proj.weight (rows 0..A-1 K, A..2A-1 V)
  const uint16_t* moa_o;       // [E, D, A]    self_attention.experts.output_linear.weight
  const uint16_t* moa_bias;    // [D]          self_attention.experts.bias
  const uint16_t* post_norm;   // [D]          post_attention_layernorm.weight
  const uint16_t* moe_router;  // [E, D]       mlp.router.layer.weight
  const uint16_t* moe_in;      // [E, 2F, D]   mlp.input_linear.weight (rows 0..F-1 gate, F..2F-1 up)
  const uint16_t* moe_out;     // [E, D, F]    mlp.output_linear.weight
  const uint16_t* moe_bias;    // [D]          mlp.bias
};

// Weight gradients, fp32, the same shapes as jk_layer_weights_t. All required for jk_layer_bwd.
// With grad_beta = 0 they are overwritten (old contents never read, NaN allowed); with 1 accumulated.
struct jk_layer_grads_t {
  float* input_norm;  // [D]
  float* moa_router;  // [E, D]
  float* moa_q;       // [E, A, D]
  float* kv_proj;     // [2A, D]
  float* moa_o;       // [E, D, A]
  float* moa_bias;    // [D]
  float* post_norm;   // [D]
  float* moe_router;  // [E, D]
  float* moe_in;      // [E, 2F, D]
  float* moe_out;     // [E, D, F]
  float* moe_bias;    // [D]
};

// Which implementation of the heavy families to use. JK_LAYER_TUNED: grouped GEMM AUTO and
// attention AUTO (the tuned kernels where they take the shape). JK_LAYER_SIMPLE: the families'
// simple kernels (JK_GROUPED_GEMM_SIMPLE, JK_ATTENTION_SIMPLE, and the router's jk_router_*_simple,
// which give the same bits as its tuned path): slower, kept as a fallback and as a cross-check of the
// tuned path. JK_LAYER_WGMMA: the sm_90a kernels where they can run (grouped GEMM
// JK_GROUPED_GEMM_WGMMA, attention forward JK_ATTENTION_WGMMA), else as TUNED; not yet run on a GPU, so
// TUNED does not choose them yet. All are deterministic; they differ by fp32 summation order and the
// attention path's bf16 rounding of P (see attention.h).
typedef enum jk_layer_path_t {
  JK_LAYER_TUNED = 0,
  JK_LAYER_SIMPLE = 1,
  JK_LAYER_WGMMA = 2,
} jk_layer_path_t;

// Optional per-stage timing: when passed, the layer records events[count] on `stream` after each
// stage and sets names[count] (a static string), count++ (at most JK_LAYER_MAX_STAGES; events must be
// created by the caller, count set to 0 before the call). Stage i takes events[i-1] -> events[i]
// (record a start event yourself before the call).
#define JK_LAYER_MAX_STAGES 64
struct jk_layer_profile_t {
  cudaEvent_t events[JK_LAYER_MAX_STAGES];
  const char* names[JK_LAYER_MAX_STAGES];
  int count;
};

struct jk_layer_config_t {
  int64_t hidden;         // D  (JetMoE-8B 2048); multiple of 8
  int64_t num_experts;    // E  (8), 1..64 (router limit)
  int64_t top_k;          // k  (2), 1..E
  int64_t kv_heads;       // H_kv (16)
  int64_t head_dim;       // d  (128), even
  int64_t ffn;            // F  (5632)
  float eps;              // block RMSNorm eps (1e-6 in HF / JM)
  float aux_switch_coef;  // coefficient of d switch in the backward (JetMoE: 0.01), >= 0
  float aux_z_coef;       // coefficient of d z (JetMoE: 0.001), >= 0
  // RoPE (cos, sin) table from jk_fused_rope_table(table, max_positions, head_dim, theta = 10000);
  // positions used are 0..T-1 (training) or cache_len[b] (decode), all < max_positions.
  const float* rope_table;
  int64_t rope_max_positions;
  jk_layer_path_t path;
};

// ---- training: forward, then backward ------------------------------------------------------------
// Two device buffers, both at least 256-byte aligned (cudaMalloc):
//   saved:   what the forward keeps for the backward (u1, u2, x_mid, q, K, V, attention out and lse,
//            routing of both routers, gathered u1 and u2, y_attn, z, h, y_mlp, rstd); it must stay untouched between
//            jk_layer_fwd and jk_layer_bwd of the same micro-batch.
//   scratch: temporaries of either call (may be shared by all layers; contents not kept).
// Sizes for B sequences of T tokens (N = B T). For JetMoE-8B at N = 8192: saved 1.13 GB, scratch
// 1.20 GB (both scale with N; jk_layer_train_bytes gives the exact numbers).
cudaError_t jk_layer_train_bytes(const jk_layer_config_t* cfg, int64_t batch, int64_t seq, size_t* saved_bytes,
                                 size_t* scratch_bytes);

// x [B, T, D] bf16 -> out [B, T, D] bf16. losses: device fp32 [4] (may be null): the unscaled aux
// losses [moa switch, moa z, moe switch, moe z] of this micro-batch. profile may be null.
cudaError_t jk_layer_fwd(const jk_layer_weights_t* w, const jk_layer_config_t* cfg, const uint16_t* x, int64_t batch,
                         int64_t seq, uint16_t* out, float* losses, void* saved, size_t saved_bytes, void* scratch,
                         size_t scratch_bytes, jk_layer_profile_t* profile, cudaStream_t stream);

// From dout [B, T, D] bf16 (gradient of the block output) and the forward's saved buffer:
//   dx [B, T, D] bf16 (gradient of the block input, written), grads (fp32, grad_beta 0 or 1).
// x must be the forward's input. dx may not alias dout or x.
cudaError_t jk_layer_bwd(const jk_layer_weights_t* w, const jk_layer_config_t* cfg, const uint16_t* x,
                         const uint16_t* dout, int64_t batch, int64_t seq, uint16_t* dx, const jk_layer_grads_t* grads,
                         float grad_beta, const void* saved, size_t saved_bytes, void* scratch, size_t scratch_bytes,
                         jk_layer_profile_t* profile, cudaStream_t stream);

// Where the forward's saved buffer keeps the expert choices of the two routers: device int32 [N, k]
// (top-k order, as jk_router_fwd_bf16 writes them). For statistics and tests; valid after jk_layer_fwd
// has run on `stream`. Returns cudaErrorInvalidValue for bad arguments.
cudaError_t jk_layer_saved_expert_ids(const jk_layer_config_t* cfg, int64_t batch, int64_t seq, const void* saved,
                                      const int32_t** moa_ids, const int32_t** moe_ids);

// Where the forward's saved buffer keeps K (after RoPE) and V: device bf16 [B, T, H_kv, d] each, the
// layout of a KV cache's rows (jk_layer_decode). Valid after jk_layer_fwd has run on `stream`.
cudaError_t jk_layer_saved_kv(const jk_layer_config_t* cfg, int64_t batch, int64_t seq, const void* saved,
                              const uint16_t** k, const uint16_t** v);

// ---- decode: one new token per sequence against a KV cache ----------------------------------------
// x [B, D] bf16: the new token of each of the B sequences; out [B, D] bf16.
// k_cache, v_cache [B, max_seq, H_kv, d] bf16 (K after RoPE, as the training K); cache_len [B] int32
// device: valid rows BEFORE this step. The step uses position p = cache_len[b] for RoPE, writes the new
// K/V at row p of each cache and attends over rows 0..p (jk_attention_decode_bf16). cache_len is not
// modified (the caller increments it); p must be < max_seq and < rope_max_positions (a larger p skips
// the append, and its RoPE gives NaN). scratch: jk_layer_decode_bytes(cfg, B, max_seq) bytes.
size_t jk_layer_decode_bytes(const jk_layer_config_t* cfg, int64_t batch, int64_t max_seq);
cudaError_t jk_layer_decode(const jk_layer_weights_t* w, const jk_layer_config_t* cfg, const uint16_t* x, int64_t batch,
                            uint16_t* k_cache, uint16_t* v_cache, const int32_t* cache_len, int64_t max_seq,
                            uint16_t* out, void* scratch, size_t scratch_bytes, jk_layer_profile_t* profile,
                            cudaStream_t stream);

// Model FLOPs of one block per token (forward, matmul and attention terms, as performance.md counts:
// 2 * active matmul parameters + attention 2 * 2 * T/2 * Hq * d for causal sequences of length T).
// Training = 3x this. Host function.
double jk_layer_flops_per_token(const jk_layer_config_t* cfg, int64_t seq);

}  // extern "C"
