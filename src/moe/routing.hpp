#pragma once
// Top-k routing and dropless dispatch, shared by MoA (attention experts) and MoE (MLP experts).
//
// route():  logits = x W_r^T in fp32; per token the top_k logits in descending order (ties to the
//           lower expert index, as torch.topk), gates = softmax over those k logits only
//           (jetmoe-spec.md section 0, "Routing").
// plan():   groups the N*k (token, slot) assignments by expert (counting sort: counts, exclusive
//           scan, permutation), tokens ascending inside each expert, so each expert's rows form one
//           contiguous block and one GEMM. Deterministic: the grouping depends only on the choices.
#include <cstdint>
#include <vector>

#include "core/tensor.hpp"

namespace jetmoe {

template <class R>
struct RoutingT {
  Mat<R> logits;       // [N, E] router logits
  IntView2 experts;    // [N, k] chosen experts, descending logit
  Mat<R> gates;        // [N, k] softmax over the chosen logits
  // Dispatch plan.
  IntView1 sorted_token;              // [N*k] token of each grouped row
  IntView1 sorted_slot;               // [N*k] slot of each grouped row
  IntView2 position;                  // [N, k] grouped row of (token, slot)
  std::vector<std::int64_t> offsets;  // [E+1] host copy: expert e owns rows [offsets[e], offsets[e+1])
};

using Routing = RoutingT<float>;

// Every function is instantiated for R = float and R = double.
// x [N, D], router_weight [E, D]; fills every field of `r` (allocating views as needed).
template <class R>
void route(const Mat<R>& x, const Mat<R>& router_weight, int top_k, RoutingT<R>& r);

// dst[row] = src[sorted_token[row]]  (src [N, C], dst [N*k, C]).
template <class R>
void gather_rows(const Mat<R>& src, const IntView1& sorted_token, const Mat<R>& dst);
// Its transpose: dsrc[t] += sum_j dst_grad[position[t, j]]  (slots summed in order).
template <class R>
void gather_rows_backward(const Mat<R>& ddst, const RoutingT<R>& r, const Mat<R>& dsrc);

// The grouped expert GEMMs: out[block e] = in[block e] W[e]^T over each expert's rows
// [offsets[e], offsets[e+1]) (W [E, out, in]), one vendor GEMM per non-empty expert.
template <class R>
void expert_linear(const Mat<R>& in, const Ten3<R>& w, const std::vector<std::int64_t>& offsets, const Mat<R>& out);
// Its backward: din[block e] = dout[block e] W[e] (written);  dW[e] += dout[block e]^T in[block e].
template <class R>
void expert_linear_backward(const Mat<R>& in, const Ten3<R>& w, const std::vector<std::int64_t>& offsets,
                            const Mat<R>& dout, const Mat<R>& din, const Ten3<R>& dw);

// out[t] = sum_j gates[t, j] * expert_out[position[t, j]] + bias   (out [N, C]; slots summed in order).
template <class R>
void combine_experts(const Mat<R>& expert_out, const RoutingT<R>& r, const Vec<R>& bias, const Mat<R>& out);
// Backward of combine_experts and of the gate softmax, from dout [N, C]:
//   dexpert_out[position[t, j]] = gates[t, j] dout[t]                                   (written)
//   dgate_j = <dout[t], expert_out[position[t, j]]>,
//   dlogits[t, experts[t, j]] = g_j (dgate_j - sum_m g_m dgate_m), 0 for unchosen experts (written)
//   dbias += sum_t dout[t]
// The router's own gradient then follows from dlogits (plus the auxiliary losses).
template <class R>
void combine_experts_backward(const Mat<R>& expert_out, const RoutingT<R>& r, const Mat<R>& dout,
                              const Mat<R>& dexpert_out, const Mat<R>& dlogits, const Vec<R>& dbias);

}  // namespace jetmoe
