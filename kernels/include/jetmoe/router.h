#pragma once
// jetmoe kernels, family 'router': fused top-k routing, the dropless dispatch plan, gather/combine
// of expert rows, the router backward and the auxiliary losses (jetmoe-spec.md sections 3 and 4).
// Conventions as in kernels.h: device pointers, int64_t sizes, asynchronous on `stream`, returns
// cudaSuccess / cudaErrorInvalidValue (bad arguments) / the launch error; zero sizes are no-ops
// (N = 0 still writes counts = 0 and offsets = 0 where those are outputs). bf16 = uint16_t raw bits.
//
// Shapes: N tokens, D router input width, E experts (1..64), k chosen experts per token (1..E),
// C width of the gathered / combined rows. N * k must fit in int32 (grouped row indices are int32).
// Every function is deterministic: the same inputs give bit-identical outputs run to run (integer
// counting, fixed-order fp32 reductions, no float atomics). None synchronises with the host.
// Inputs are expected to be finite; with NaN/Inf logits the choices are unspecified, but every token
// still gets k distinct experts and the plan stays a permutation.
//
// The dispatch plan (identical to src/moe/routing.cpp, the Kokkos implementation):
//   expert_ids[t, j]     j-th chosen expert of token t, logits descending, ties to the lower index
//   counts[e]            number of (token, slot) pairs routed to e
//   offsets[e]           exclusive prefix sum of counts; offsets[E] = N * k
//   sorted_token[row]    grouped rows: expert e owns rows [offsets[e], offsets[e+1]), tokens ascending
//   sorted_slot[row]     the slot j of that row (so expert_ids[sorted_token[row], sorted_slot[row]] = e)
//   position[t, j]       grouped row of (t, j): sorted_token[position[t, j]] = t
#include <cuda_runtime_api.h>

#include <cstddef>
#include <cstdint>

// C linkage: the library exports these functions under their plain names (ctypes, other languages).
extern "C" {

// ---- forward: logits, top-k, gates, plan ----------------------------------------------------------

inline constexpr int jk_router_max_experts = 64;

// Outputs of the router forward. Every pointer is a device pointer and required unless marked.
struct jk_router_outputs_t {
  float* logits;           // [N, E] fp32 router logits (bf16 path: bf16-rounded values, widened)
  std::int32_t* expert_ids;  // [N, k]
  float* gates_f32;        // [N, k] softmax over the k chosen logits, fp32
  std::uint16_t* gates_bf16; // [N, k] bf16(gates_f32) (HF casts the gates to the activation dtype); may be null
  std::int32_t* counts;    // [E]
  std::int32_t* offsets;   // [E + 1]
  std::int32_t* sorted_token;  // [N * k]
  std::int32_t* sorted_slot;   // [N * k]
  std::int32_t* position;      // [N, k]
  // Optional (may be null): pinned host memory (cudaMallocHost / cudaHostRegister) of E + 1 int32 that
  // receives a copy of offsets by cudaMemcpyAsync on `stream`; valid after the stream is synchronised.
  std::int32_t* host_offsets;
};

// Device scratch (bytes) the forward needs for N tokens: per-block expert counts of the counting
// sort. Pass a buffer of at least this size (256-byte aligned, as cudaMalloc gives); it may be reused
// once the call's work on `stream` is done.
std::size_t jk_router_fwd_workspace_bytes(std::int64_t N, int E, int k);

// bf16 router (HF JetMoeTopKGating in bf16): u [N, D] bf16, w [E, D] bf16 (nn.Linear weight layout).
//   logits[t, e] = fp32(bf16(sum_d u[t, d] w[e, d]))  (products exact, fp32 accumulation in a fixed
//                  order, one rounding to bf16 as a bf16 nn.Linear does, then .float())
//   top-k of logits[t, :] descending (ties to the lower expert index, as torch.topk);
//   gates = softmax over the k chosen logits in fp32; gates_bf16 = bf16(gates) (round to nearest even).
// Then the plan (a stable device counting sort, multi-block, deterministic). No aliasing between
// outputs or with inputs.
cudaError_t jk_router_fwd_bf16(const std::uint16_t* u, const std::uint16_t* w, std::int64_t N, std::int64_t D,
                               int E, int k, const jk_router_outputs_t* out, void* workspace,
                               std::size_t workspace_bytes, cudaStream_t stream);

// fp32 router (fp32 training): u [N, D] fp32, w [E, D] fp32, logits accumulated and kept in fp32
// (no bf16 rounding); otherwise as jk_router_fwd_bf16.
cudaError_t jk_router_fwd_f32(const float* u, const float* w, std::int64_t N, std::int64_t D, int E, int k,
                              const jk_router_outputs_t* out, void* workspace, std::size_t workspace_bytes,
                              cudaStream_t stream);

// The simple reference path of the two forwards above (kept callable for tests and as a fallback): one
// warp per token reading W from global memory for every token. The functions above take the tuned path:
// four tokens per warp share each W load, and W is staged once per block in shared memory when
// E * D fits in 96 KB. Every logit is summed in the same order on both paths, so every output is
// bit-identical between them.
cudaError_t jk_router_fwd_bf16_simple(const std::uint16_t* u, const std::uint16_t* w, std::int64_t N, std::int64_t D,
                                      int E, int k, const jk_router_outputs_t* out, void* workspace,
                                      std::size_t workspace_bytes, cudaStream_t stream);
cudaError_t jk_router_fwd_f32_simple(const float* u, const float* w, std::int64_t N, std::int64_t D, int E, int k,
                                     const jk_router_outputs_t* out, void* workspace, std::size_t workspace_bytes,
                                     cudaStream_t stream);

// The plan alone from given expert ids [N, k] (each row k distinct ids in [0, E); ids outside [0, E)
// are skipped: they get position -1 and no row, and offsets[E] is then less than N * k).
// Fills counts, offsets, sorted_token, sorted_slot, position (and host_offsets when not null).
cudaError_t jk_router_plan(const std::int32_t* expert_ids, std::int64_t N, int E, int k, std::int32_t* counts,
                           std::int32_t* offsets, std::int32_t* sorted_token, std::int32_t* sorted_slot,
                           std::int32_t* position, std::int32_t* host_offsets, void* workspace,
                           std::size_t workspace_bytes, cudaStream_t stream);

// ---- auxiliary losses (original JetMoE form, jetmoe-spec.md section 4) ----------------------------

// Device scratch (bytes) of jk_router_aux_loss for N tokens.
std::size_t jk_router_aux_workspace_bytes(std::int64_t N, int E);

// Per router, from logits [N, E] fp32 and expert_ids [N, k]: with p = softmax(logits) over all E,
//   P_e = mean_t p_te,  f_e = count_e / (N k)  (constant: no gradient),
//   losses[0] = switch = E * sum_e P_e f_e      (1 under perfect balance)
//   losses[1] = z      = mean_t lse_t^2,  lse_t = m_t + log sum_e exp(X_te - m_t)  (stable, m_t = max)
// losses: device fp32 [2], written. dlogits [N, E] fp32 (may be null: losses only) is ACCUMULATED:
//   dlogits[t, e] += alpha * (E/N) * p_te (f_e - sum_m p_tm f_m) + beta * (2/N) * lse_t * p_te
// i.e. alpha * d switch/dX + beta * d z/dX. All sums are fp32 in a fixed order (block partials,
// then one block reduces them in block order).
cudaError_t jk_router_aux_loss(const float* logits, const std::int32_t* expert_ids, std::int64_t N, int E, int k,
                               float alpha, float beta, float* losses, float* dlogits, void* workspace,
                               std::size_t workspace_bytes, cudaStream_t stream);

// ---- gather (dispatch rows to the experts) and its backward ---------------------------------------

// xp[row, :] = x[sorted_token[row], :] for row in [0, rows): x [N_x, C], xp [rows, C] (rows = N k).
// 16-byte vector copies when x, xp are 16-byte aligned and C is a multiple of 8 (bf16) / 4 (fp32).
// sorted_token values must lie in [0, N_x). No overlap of xp with x.
cudaError_t jk_router_gather_bf16(const std::uint16_t* x, const std::int32_t* sorted_token, std::int64_t rows,
                                  std::int64_t C, std::uint16_t* xp, cudaStream_t stream);
cudaError_t jk_router_gather_f32(const float* x, const std::int32_t* sorted_token, std::int64_t rows,
                                 std::int64_t C, float* xp, cudaStream_t stream);

// dx[t, :] (=|+=) sum_j dxp[position[t, j], :], slots in order 0..k-1, fp32 accumulation:
//   accumulate = 0: dx = sum;  accumulate = 1: dx = dx + sum (for bf16 dx: bf16(fp32(dx) + sum)).
// dxp [N k, C], position [N, k], dx [N, C]. Variants: bf16 -> bf16, bf16 -> fp32, fp32 -> fp32.
cudaError_t jk_router_gather_bwd_bf16(const std::uint16_t* dxp, const std::int32_t* position, std::int64_t N, int k,
                                      std::int64_t C, std::uint16_t* dx, int accumulate, cudaStream_t stream);
cudaError_t jk_router_gather_bwd_bf16_f32(const std::uint16_t* dxp, const std::int32_t* position, std::int64_t N,
                                          int k, std::int64_t C, float* dx, int accumulate, cudaStream_t stream);
cudaError_t jk_router_gather_bwd_f32(const float* dxp, const std::int32_t* position, std::int64_t N, int k,
                                     std::int64_t C, float* dx, int accumulate, cudaStream_t stream);

// ---- combine (gated sum of the expert rows) and its backward ---------------------------------------

// bf16, HF numerics (JetMoeMoE.forward / JetMoeMoA.reduce: gate multiply in bf16, index_add into a bf16
// zero buffer, bias add in bf16), per token t and column c, slots in order:
//   acc = +0;  for j: acc = bf16(acc + bf16(gates_bf16[t, j] * y[position[t, j], c]))
//   out[t, c] = bias ? bf16(acc + bias[c]) : acc
// y [N k, C] (grouped rows), gates_bf16 [N, k], position [N, k], bias [C] or null, out [N, C].
// Bit-exact with HF for k <= 2 (two-term bf16 sums commute); for k > 2 HF adds in grouped-row order
// (expert ascending) while this adds in slot order (as src/moe/routing.cpp).
cudaError_t jk_router_combine_bf16(const std::uint16_t* y, const std::uint16_t* gates_bf16,
                                   const std::int32_t* position, const std::uint16_t* bias, std::int64_t N, int k,
                                   std::int64_t C, std::uint16_t* out, cudaStream_t stream);
// fp32: out[t, c] = (sum_j gates[t, j] * y[position[t, j], c]) + bias[c], fp32, slots in order.
cudaError_t jk_router_combine_f32(const float* y, const float* gates, const std::int32_t* position, const float* bias,
                                  std::int64_t N, int k, std::int64_t C, float* out, cudaStream_t stream);

// Device scratch (bytes) of the combine backward (the deterministic two-pass bias gradient).
std::size_t jk_router_combine_bwd_workspace_bytes(std::int64_t N, std::int64_t C);

// Backward of the combine and of the gate softmax, from dout [N, C]:
//   dy[position[t, j], c] = bf16(gates_bf16[t, j] * dout[t, c])           (written; HF's bf16 multiply)
//   dgate[t, j] = <dout[t], y[position[t, j]]>   fp32 accumulation, fixed order (optional output [N, k])
//   dlogits[t, e] = 0 for unchosen e; dlogits[t, expert_ids[t, j]] = g_j (dgate_j - sum_m g_m dgate_m)
//                 with g = gates_f32 (the fp32 softmax; written, [N, E])
//   dbias[c] = sum_t dout[t, c]   fp32, fixed order (written; optional, needs the workspace)
// Run jk_router_aux_loss (which accumulates) after this when the aux losses are on.
cudaError_t jk_router_combine_bwd_bf16(const std::uint16_t* dout, const std::uint16_t* y,
                                       const std::uint16_t* gates_bf16, const float* gates_f32,
                                       const std::int32_t* expert_ids, const std::int32_t* position, std::int64_t N,
                                       int E, int k, std::int64_t C, std::uint16_t* dy, float* dgate, float* dlogits,
                                       float* dbias, void* workspace, std::size_t workspace_bytes,
                                       cudaStream_t stream);
// fp32: dy = gates * dout in fp32, otherwise the same.
cudaError_t jk_router_combine_bwd_f32(const float* dout, const float* y, const float* gates,
                                      const std::int32_t* expert_ids, const std::int32_t* position, std::int64_t N,
                                      int E, int k, std::int64_t C, float* dy, float* dgate, float* dlogits,
                                      float* dbias, void* workspace, std::size_t workspace_bytes,
                                      cudaStream_t stream);

// ---- router weight and input gradients ------------------------------------------------------------

// Device scratch (bytes) of the router backward (the fixed-order partials of dW).
std::size_t jk_router_bwd_workspace_bytes(std::int64_t N, std::int64_t D, int E);

// From dlogits [N, E] fp32 (combine backward + aux losses) and the forward inputs u [N, D], w [E, D]:
//   dw[e, d] (=|+=) sum_t dlogits[t, e] u[t, d]   fp32 [E, D]; fixed-order token-chunk partials in the
//                  workspace, then a reduction in chunk order. accumulate_dw = 1 adds to dw.
//   du[t, d] += sum_e dlogits[t, e] w[e, d]        experts summed in order, fp32. Exactly one of
//                  du_f32 (fp32 [N, D], du = du + s) and du_bf16 (bf16 [N, D], du = bf16(fp32(du) + s))
//                  may be non-null; both null skips du. dw null skips dW.
cudaError_t jk_router_bwd_bf16(const std::uint16_t* u, const std::uint16_t* w, const float* dlogits, std::int64_t N,
                               std::int64_t D, int E, float* dw, int accumulate_dw, float* du_f32,
                               std::uint16_t* du_bf16, void* workspace, std::size_t workspace_bytes,
                               cudaStream_t stream);
cudaError_t jk_router_bwd_f32(const float* u, const float* w, const float* dlogits, std::int64_t N, std::int64_t D,
                              int E, float* dw, int accumulate_dw, float* du, void* workspace,
                              std::size_t workspace_bytes, cudaStream_t stream);
// The simple reference path of the two functions above (one thread per du element); the functions above
// compute du with VEC consecutive columns per thread (16-byte loads of W) when D is a multiple of 8 (bf16)
// / 4 (fp32) and w, du are aligned to that width. Bit-identical outputs (the same order of every sum).
cudaError_t jk_router_bwd_bf16_simple(const std::uint16_t* u, const std::uint16_t* w, const float* dlogits,
                                      std::int64_t N, std::int64_t D, int E, float* dw, int accumulate_dw,
                                      float* du_f32, std::uint16_t* du_bf16, void* workspace,
                                      std::size_t workspace_bytes, cudaStream_t stream);
cudaError_t jk_router_bwd_f32_simple(const float* u, const float* w, const float* dlogits, std::int64_t N,
                                     std::int64_t D, int E, float* dw, int accumulate_dw, float* du, void* workspace,
                                     std::size_t workspace_bytes, cudaStream_t stream);

}  // extern "C"
