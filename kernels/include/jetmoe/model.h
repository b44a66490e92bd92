#pragma once
// jetmoe kernels, family 'model': a pipeline stage of the JetMoE causal LM on the device (jetmoe-spec.md
// sections 3-4): optionally the token embedding, a run of blocks (jk_layer_*), optionally the final
// RMSNorm, the LM head and the cross-entropy; forward keeping what the backward needs, and backward.
// The whole model is the stage with both ends. This is what the bf16 training path of the application
// runs per micro-batch (one stage per pipeline rank; src/train/network.hpp is the fp32 CPU twin).
//
// Conventions of kernels.h: device pointers, int64_t sizes, asynchronous on `stream`, returns
// cudaSuccess / cudaErrorInvalidValue (bad arguments) / the first failing call's error; B * T == 0 is a
// no-op. bf16 = uint16_t raw bits. No call synchronises with the host.
//
// Stage (N = B T tokens, D hidden, V vocabulary, L = num_layers of the stage):
//   x_0 = has_embedding ? Emb[ids] : x_in                       (bf16 [N, D]; out-of-range ids give 0 rows)
//   x_{l+1} = block_l(x_l)                                        (jk_layer_fwd, aux losses [l][4])
//   stage without head: out = x_L
//   stage with head:    h = RMSNorm_final(x_L) (eps final_eps, HF bf16 numerics)
//                       logits = bf16(h W_head^T)                 (bf16 [N, V], fp32 accumulation)
//                       loss_rows[t] = logsumexp(logits[t]) - logits[t, labels[t]]   (fp32; 0 for -100)
// Backward differentiates (ce_scale, or per-row weights w_t: sum_t w_t loss_rows[t])
//     ce_scale * sum_t loss_rows[t] + sum_l (aux_switch_coef * (moa + moe switch) + aux_z_coef * (moa + moe z))
// (+ sum(out * dout) for a stage without head), with HF's bf16 autograd roundings (straight-through):
//   dlogits = bf16((softmax - onehot) * ce_scale), dh = dlogits W_head, dW_head = dlogits^T h (fp32),
//   final norm backward, the blocks in reverse (jk_layer_bwd), then the embedding's scatter-add (fp32,
//   ascending token order per id: jk_embedding_bwd) or dx_in for a stage without embedding.
// ce_scale: 1 / (targets counted over the whole optimizer step) gives HF's mean loss, as the CPU trainer.
//
// Tied head: pass the embedding as weights.lm_head; when grads.lm_head == grads.embedding (both ends
// on this stage) the head's gradient is written first (grad_beta) and the embedding's scatter-add is
// added to it, which is the CPU network's order. On separate stages the two gradients are separate
// tensors and the pipeline sums them (as the CPU trainer does).
//
// Determinism: every kernel used is run-to-run bit-reproducible, so the stage is; splitting the model
// into stages at any layer boundary gives bit-identical results (the boundary is the bf16 x_l).
// Aliasing: no output may overlap an input or another output (except the tied gradient above).
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

#include "jetmoe/layer.h"

// C linkage: the library exports these functions under their plain names (ctypes, other languages).
extern "C" {

struct jk_model_config_t {
  jk_layer_config_t layer;  // the blocks' configuration (hidden, experts, heads, rope table, path, aux coefs)
  int64_t vocab;            // V (JetMoE-8B 32000), >= 1
  int64_t num_layers;       // blocks of this stage, >= 0
  int32_t has_embedding;    // 1: the stage starts with the token embedding (input ids); 0: input x_in
  int32_t has_head;         // 1: final norm, LM head and cross-entropy (input labels); 0: output x_L
  float final_eps;          // final RMSNorm eps (HF rms_norm_eps; JetMoE-8B 1e-5)
  int32_t recompute;        // 1: activation recomputation: the forward keeps only each block's input and
                            // jk_model_bwd runs each block's forward again before its backward (one
                            // block's saved buffer, in scratch, instead of L in saved; the same results
                            // bit for bit, about a third more block FLOPs); 0: every block's saved
                            // buffer is kept from forward to backward
  int64_t head_chunk;       // >= 0. The LM head and the cross-entropy of at most head_chunk rows at a time
                            // (has_head; jk_model_fwd/bwd and jk_model_eval): 0, or >= N = B T: all N rows
                            // at once, the forward keeping the logits [N, V] bf16 for the backward;
                            // 0 < head_chunk < N: only one chunk's logits [head_chunk, V] exist at a time
                            // (in scratch): the forward computes each chunk's logits, loss rows and lse
                            // and drops the logits; the backward computes them again chunk by chunk
                            // (one more head GEMM forward) and sums the head's weight gradient chunk by
                            // chunk. Every output is bit-identical to the unchunked stage's except
                            // grads.lm_head (and a tied embedding's gradient), whose fp32 sum over the
                            // rows is then rounded once per chunk. Decode and prefill ignore it (their
                            // head has B rows).
};

// bf16 weights (HF layouts). `layers` is a HOST array of num_layers entries (device pointers inside).
struct jk_model_weights_t {
  const uint16_t* embedding;          // [V, D]  has_embedding
  const jk_layer_weights_t* layers;   // [num_layers]
  const uint16_t* final_norm;         // [D]     has_head
  const uint16_t* lm_head;            // [V, D]  has_head (the embedding when the head is tied)
};

// fp32 gradients, same shapes; `layers` a HOST array. grad_beta 0 overwrites, 1 accumulates.
//
// `ready` (optional, null for none): a HOST array of num_layers + 2 events that jk_model_bwd records on
// `stream` (cudaEventRecord; a null entry is skipped) as soon as a part of the gradients is final for
// this call, so that another stream may wait for it (cudaStreamWaitEvent) and read that part while the
// backward goes on: the data-parallel sums of the last micro-batch overlapped with its backward pass.
//   ready[num_layers]      final_norm and lm_head (has_head), recorded first; a head tied on this stage
//                          (lm_head == embedding) is final only at ready[num_layers + 1]
//   ready[l]               block l's gradients (0 <= l < num_layers), recorded from the last block down
//   ready[num_layers + 1]  the embedding (has_embedding), recorded last
// Entries of parts the stage does not have are not recorded. Nothing later in the call writes a part
// after its event. The events are the caller's (cudaEventCreateWithFlags, cudaEventDisableTiming).
struct jk_model_grads_t {
  float* embedding;                 // has_embedding
  const jk_layer_grads_t* layers;   // [num_layers]
  float* final_norm;                // has_head
  float* lm_head;                   // has_head; may equal `embedding` (tied, see above)
  const cudaEvent_t* ready;         // [num_layers + 2] HOST, optional (see above)
};

// One micro-batch of B sequences of T tokens (positions 0..T-1 in each).
struct jk_model_batch_t {
  int64_t batch, seq;
  const int32_t* ids;     // [N] token ids          (has_embedding)
  const uint16_t* x_in;   // [N, D] bf16 stage input (no embedding)
  const int32_t* labels;  // [N] shifted targets, -100 = not counted (has_head); a label outside
                          // [0, V) gives a NaN loss row (the trainer validates labels on the host)
};

// Saved (kept from forward to backward, 256-byte aligned) and scratch (temporaries of either call)
// device bytes for a micro-batch of [B, T]. saved holds the stage input, every block's saved buffer
// (1.13 GB at JetMoE-8B, N = 8192; none with recompute, whose scratch holds one) and input (33.5 MB),
// the final norm output and the logits [N, V] bf16 (0.52 GB at N = 8192, V = 32000; with head_chunk
// < N none, and scratch holds one chunk's [head_chunk, V] instead: 16.4 MB for 256 rows).
cudaError_t jk_model_train_bytes(const jk_model_config_t* cfg, int64_t batch, int64_t seq, size_t* saved_bytes,
                                 size_t* scratch_bytes);

// Forward of one micro-batch. Outputs (device):
//   out       [N, D] bf16   stage output x_L (required without head; ignored with head)
//   loss_rows [N] fp32      per-token cross-entropy (required with head; ignored without)
//   aux       [L, 4] fp32   per block [moa switch, moa z, moe switch, moe z], unscaled (may be null)
//   invalid_ids int32 [1]   number of out-of-range ids (embedding stage; may be null)
cudaError_t jk_model_fwd(const jk_model_weights_t* w, const jk_model_config_t* cfg, const jk_model_batch_t* batch,
                         uint16_t* out, float* loss_rows, float* aux, int32_t* invalid_ids, void* saved,
                         size_t saved_bytes, void* scratch, size_t scratch_bytes, cudaStream_t stream);

// Backward of the micro-batch whose forward filled `saved` (same w, cfg and batch). It consumes the
// saved logits (overwritten by their gradient): run it once per forward. With head_chunk < N it
// computes the logits again from the saved final norm output, one chunk at a time.
//   dout  [N, D] bf16  gradient of the stage output (required without head; ignored with head)
//   dx_in [N, D] bf16  gradient of x_in, written (stage without embedding; may be null when not wanted)
//   ce_scale           the loss rows' weight (host value; with head)
//   ce_row_weights     [N] fp32 device, optional: per-row weights in place of ce_scale (objectives
//                      sum_t w_t loss_t such as DPO's; jk_fused_cross_entropy_bwd_bf16_weighted)
cudaError_t jk_model_bwd(const jk_model_weights_t* w, const jk_model_config_t* cfg, const jk_model_batch_t* batch,
                         const uint16_t* dout, float ce_scale, const float* ce_row_weights, uint16_t* dx_in,
                         const jk_model_grads_t* grads,
                         float grad_beta, void* saved, size_t saved_bytes, void* scratch, size_t scratch_bytes,
                         cudaStream_t stream);

// ---- decode: one new token per sequence through the whole model (has_embedding and has_head) ------
// ids [B] int32 device: each sequence's new token (an id outside [0, V) embeds as a zero row and is
// counted in *invalid_ids, optional, as jk_model_fwd does). k_caches, v_caches: HOST arrays of
// num_layers device pointers, block l's caches [B, max_seq, H_kv, d] bf16 (jk_layer_decode's layout:
// K after RoPE). cache_len [B] int32 device: rows valid before this step, which is the new token's
// position; each block writes its K/V at that row and attends over rows 0..cache_len[b]; the caller
// increments cache_len after the step. logits [B, V] fp32: the bf16 logits bf16(RMSNorm_final(x_L)
// W_head^T) widened, what HF's bf16 model returns (.float()) for the last position. Row b depends
// only on sequence b. scratch: jk_model_decode_bytes(cfg, B, max_seq) bytes (0 for bad arguments),
// 256-byte aligned. Stepping positions 0..T-1 reproduces jk_model_fwd's logits of the whole sequence
// up to the attention's summation order (the decode kernel's split-K).
size_t jk_model_decode_bytes(const jk_model_config_t* cfg, int64_t batch, int64_t max_seq);
cudaError_t jk_model_decode(const jk_model_weights_t* w, const jk_model_config_t* cfg, const int32_t* ids,
                            int64_t batch, uint16_t* const* k_caches, uint16_t* const* v_caches,
                            const int32_t* cache_len, int64_t max_seq, float* logits, int32_t* invalid_ids,
                            void* scratch, size_t scratch_bytes, cudaStream_t stream);

// ---- prefill: whole prompts through the model, filling the KV caches --------------------------------
// ids [B, T] int32 device: B prompts, right-padded to T tokens (positions 0..T-1; invalid ids as
// jk_model_decode, padding included: pad with any valid id).
// lens [B] int64 HOST, optional (null = every prompt has T tokens): prompt b is ids[b, 0..lens[b]-1],
// 1 <= lens[b] <= T; the rest of its row is padding. The attention is causal, so no prompt token sees
// padding: prompt b's results are those of the prompt alone (B = 1, T = lens[b]) bit for bit.
// k_caches, v_caches: as jk_model_decode's ([B, max_seq, H_kv, d] per block, T <= max_seq): rows 0..T-1
// of every sequence are written (K after RoPE, V), the others untouched; rows lens[b]..T-1 hold the
// padding's K/V, which decoding overwrites before reading (a step writes row cache_len[b] and attends
// over rows 0..cache_len[b]). Afterwards cache_len[b] = lens[b] and decoding goes on with
// jk_model_decode. logits [B, V] fp32: those of prompt b's last token (position lens[b] - 1), as
// jk_model_decode gives them. The blocks run jk_layer_fwd (flash attention over the prompt), so the
// result equals lens[b] decode steps up to the attention's summation order. scratch:
// jk_model_prefill_bytes(cfg, B, T) bytes (0 for bad arguments), 256-byte aligned; one block's
// forward buffers at a time.
size_t jk_model_prefill_bytes(const jk_model_config_t* cfg, int64_t batch, int64_t seq);
cudaError_t jk_model_prefill(const jk_model_weights_t* w, const jk_model_config_t* cfg, const int32_t* ids,
                             int64_t batch, int64_t seq, const int64_t* lens, uint16_t* const* k_caches,
                             uint16_t* const* v_caches, int64_t max_seq, float* logits, int32_t* invalid_ids,
                             void* scratch, size_t scratch_bytes, cudaStream_t stream);

// ---- eval: the logits of whole sequences, nothing kept for a backward --------------------------------
// ids [B, T] int32 device: B sequences of T tokens (positions 0..T-1; invalid ids as jk_model_decode)
// through the whole model (has_embedding and has_head) as jk_model_prefill runs it (one block's forward
// buffers at a time), then the head over all N = B T positions: jk_model_fwd's bf16 logits bit for bit
// (the same kernels in the same order). Outputs (device; each may be null):
//   logits    [N, V] fp32  the bf16 logits widened (what HF's bf16 model returns, .float())
//   loss_rows [N] fp32     given labels [N] int32 (shifted targets, -100 = not counted; both or neither):
//                          jk_model_fwd's per-token cross-entropy logsumexp(logits[t]) - logits[t, labels[t]]
// scratch: jk_model_eval_bytes(cfg, B, T) bytes (0 for bad arguments), 256-byte aligned: the block
// boundaries and the bf16 logits [N, V] (with 0 < head_chunk < N, one chunk's [head_chunk, V]: the
// head runs chunk by chunk, each chunk's logits widened into `logits` and scored; the same results bit
// for bit), one block's buffers rather than jk_model_train_bytes' L.
size_t jk_model_eval_bytes(const jk_model_config_t* cfg, int64_t batch, int64_t seq);
cudaError_t jk_model_eval(const jk_model_weights_t* w, const jk_model_config_t* cfg, const int32_t* ids,
                          int64_t batch, int64_t seq, const int32_t* labels, float* loss_rows, float* logits,
                          int32_t* invalid_ids, void* scratch, size_t scratch_bytes, cudaStream_t stream);

// Where the forward's saved buffer keeps the logits [N, V] bf16 (valid after jk_model_fwd, before
// jk_model_bwd; cudaErrorInvalidValue with 0 < head_chunk < N, which keeps none) and block l's saved
// buffer (for jk_layer_saved_expert_ids; cudaErrorInvalidValue with recompute, which keeps none). For
// evaluation and tests.
cudaError_t jk_model_saved_logits(const jk_model_config_t* cfg, int64_t batch, int64_t seq, const void* saved,
                                  const uint16_t** logits);
cudaError_t jk_model_saved_layer(const jk_model_config_t* cfg, int64_t batch, int64_t seq, const void* saved,
                                 int64_t layer, const void** layer_saved);

}  // extern "C"
