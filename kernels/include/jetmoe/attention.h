#pragma once
// jetmoe kernels, family 'attention': MoA causal attention with shared (tiled) K/V heads.
// Forward (bf16 in/out, fp32 softmax statistics), deterministic backward, and single-token decode
// against a KV cache. Conventions of jetmoe/kernels.h apply (device pointers, int64_t sizes,
// cudaStream_t, cudaErrorInvalidValue on bad arguments, zero sizes are no-ops, bf16 = uint16_t bits).
//
// Head pairing (jetmoe-spec.md sections 3 and 9): query head i uses K/V head i mod H_kv (K/V TILED
// along the head axis, `repeat(1, k, 1, 1)`), NOT Llama's repeat_kv interleave (i / (Hq/H_kv)).
// For JetMoE-8B: H_kv = 16, Hq = 32 (query head i = slot j * 16 + h), d = 128.
//
// Layouts (token major, contiguous, the CPU code's layout in src/model/layers.hpp):
//   q, out, dq, dout   [B, T, Hq, d]      element (b, t, i, c) at ((b*T + t)*Hq + i)*d + c
//   k, v, dk, dv       [B, T, H_kv, d]
//   lse, delta         [B, Hq, T]         fp32
//   seq_len            [B] int32, optional (null = every sequence has length T)
// Scores: s(t, u) = (q_t . k_u) / sqrt(d). Key u is visible to query t iff u <= t and u < len[b]
// (causal + right padding). Rows of padded queries (t >= len[b]) get out = 0 and lse = -INFINITY;
// their dout is ignored by the backward (dq = 0 there); keys u >= len[b] get dk = dv = 0.
// len[b] is read on the device and clamped to [0, T].
//
// Numerics: softmax statistics and every accumulation in fp32; the result is rounded to bf16 once.
//   lse[b, i, t] = log(sum_u exp(s(t, u))) (natural log, of the scaled scores), fp32.
//   The tuned forward (mma.sync, FlashAttention-2 style) rounds the unnormalised probabilities
//   exp(s - running_max) to bf16 before the P.V product (as FA2 does; HF eager rounds the normalised
//   probabilities to bf16 instead); the simple path keeps them in fp32. Neither is bit-exact with HF;
//   both are within a few bf16 ulps (kernels/notes/attention.md gives the tolerances and why).
// Determinism: every path is bit-reproducible run to run on the same GPU and build (no atomics; every
// sum has a fixed order). The tuned and simple paths give slightly different (both valid) results.
// Aliasing: outputs must not overlap inputs or each other.
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

// C linkage: the library exports these functions under their plain names (ctypes, other languages).
extern "C" {

struct jk_attention_shape_t {
  int64_t batch;     // B >= 0 (0: no-op)
  int64_t seq;       // T >= 0 (0: no-op); T of the query and the key sequences (self-attention)
  int64_t q_heads;   // Hq >= 1, a multiple of kv_heads
  int64_t kv_heads;  // H_kv >= 1
  int64_t head_dim;  // d: 1..256 on the simple path; the tuned paths take d in {64, 128}
};

// Which implementation runs. AUTO: the tuned path where it supports the shape (d in {64, 128}, 16-byte
// aligned pointers), else the simple one. SIMPLE: the reference-style fallback (one warp per row, fp32,
// online softmax), any d <= 256. TUNED: the tuned path or cudaErrorInvalidValue if it cannot take the
// shape (lets a test compare the two).
// WGMMA: the sm_90a kernels (TMA loads, wgmma; FlashAttention-3 style, the same algorithms and numerics
// as TUNED: P and dS rounded to bf16, no atomics) where they can run (TUNED's shapes on an sm_90 device,
// the library built for 90a), else as AUTO. Not yet run on a GPU: AUTO does not choose them.
typedef enum jk_attention_path_t {
  JK_ATTENTION_AUTO = 0,
  JK_ATTENTION_SIMPLE = 1,
  JK_ATTENTION_TUNED = 2,
  JK_ATTENTION_WGMMA = 3,
} jk_attention_path_t;

// ---- forward ----------------------------------------------------------------------------------------
// out[b, t, i, :] = sum_u softmax_u(s(t, u)) v[b, u, i mod H_kv, :]   (bf16, fp32 accumulation)
// lse (may be null) receives the log-sum-exp per (b, i, t) for the backward pass.
cudaError_t jk_attention_fwd_bf16(const uint16_t* q, const uint16_t* k, const uint16_t* v, const int32_t* seq_len,
                                  uint16_t* out, float* lse, jk_attention_shape_t shape, jk_attention_path_t path,
                                  cudaStream_t stream);

// ---- backward -----------------------------------------------------------------------------------------
// From q, k, v, the forward's out and lse, and dout: with P = exp(s - lse) and D = rowsum(dout * out),
//   dv[u] = sum_{i on head h} sum_t P[t,u] dout[t],   dS = P (dout.v - D),
//   dq[t] = sum_u dS[t,u] k[u] / sqrt(d),            dk[u] = sum_{i on head h} sum_t dS[t,u] q[t] / sqrt(d).
// The sum over the Hq/H_kv query heads that share K/V head h (the tiled-copy rule of the gradient) is
// done in registers in a fixed order (slot 0 first). delta is caller-provided scratch [B, Hq, T] fp32
// that receives D (computed from the bf16 out and dout). No atomics: dq, dk, dv are each written once.
// lse must be the forward's (from either path). Outputs bf16, or fp32 with the _f32out variant
// (the same fp32 accumulators, not rounded). The tuned path (d in {64, 128}) rounds P and dS to bf16 for
// its tensor-core products, as FlashAttention-2 does; the simple path keeps them in fp32.
// Kernels: a preprocess for D, then dK/dV (one CTA per batch, K/V head and 64 keys, looping over the
// query heads on that K/V head and their query tiles) and dQ (one CTA per batch, query heads, 64 queries).
cudaError_t jk_attention_bwd_bf16(const uint16_t* q, const uint16_t* k, const uint16_t* v, const uint16_t* out,
                                  const float* lse, const uint16_t* dout, const int32_t* seq_len, float* delta,
                                  uint16_t* dq, uint16_t* dk, uint16_t* dv, jk_attention_shape_t shape,
                                  jk_attention_path_t path, cudaStream_t stream);
cudaError_t jk_attention_bwd_f32out(const uint16_t* q, const uint16_t* k, const uint16_t* v, const uint16_t* out,
                                    const float* lse, const uint16_t* dout, const int32_t* seq_len, float* delta,
                                    float* dq, float* dk, float* dv, jk_attention_shape_t shape,
                                    jk_attention_path_t path, cudaStream_t stream);

// ---- decode (one new query token per sequence against a KV cache) ----------------------------------------
//   q [B, Hq, d] bf16 (the new token of each sequence, after RoPE);
//   k_cache, v_cache [B, Tmax, H_kv, d] bf16; cache_len [B] int32 (device): the number of valid cache
//   rows INCLUDING the new token's K/V (already appended), clamped on the device to [0, Tmax];
//   out [B, Hq, d] bf16; lse [B, Hq] fp32 (may be null).
// out[b, i] = softmax over u < cache_len[b] of (q . k_cache[b, u, i mod H_kv]) / sqrt(d), times V.
// cache_len 0 gives out = 0 and lse = -INFINITY.
// Split-K ("flash-decoding"): the cache is cut into chunks of jk_attention_decode_chunk() keys; each
// (b, i, chunk) writes an fp32 partial (max, sum, unnormalised acc[d]) into `workspace`, and a second
// kernel combines the partials of each (b, i) in chunk order (fixed order: deterministic).
// workspace: at least jk_attention_decode_workspace_bytes(B, Hq, Tmax, d) bytes, 16-byte aligned.
// d: 1..256 (any Hq multiple of H_kv).
int64_t jk_attention_decode_chunk(void);
size_t jk_attention_decode_workspace_bytes(int64_t batch, int64_t q_heads, int64_t max_seq, int64_t head_dim);
cudaError_t jk_attention_decode_bf16(const uint16_t* q, const uint16_t* k_cache, const uint16_t* v_cache,
                                     const int32_t* cache_len, uint16_t* out, float* lse, int64_t batch,
                                     int64_t max_seq, int64_t q_heads, int64_t kv_heads, int64_t head_dim,
                                     void* workspace, size_t workspace_bytes, cudaStream_t stream);

}  // extern "C"
