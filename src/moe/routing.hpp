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

struct Routing {
  View2 logits;        // [N, E] router logits
  IntView2 experts;    // [N, k] chosen experts, descending logit
  View2 gates;         // [N, k] softmax over the chosen logits
  // Dispatch plan.
  IntView1 sorted_token;              // [N*k] token of each grouped row
  IntView1 sorted_slot;               // [N*k] slot of each grouped row
  IntView2 position;                  // [N, k] grouped row of (token, slot)
  std::vector<std::int64_t> offsets;  // [E+1] host copy: expert e owns rows [offsets[e], offsets[e+1])
};

// x [N, D], router_weight [E, D]; fills every field of `r` (allocating views as needed).
void route(const View2& x, const View2& router_weight, int top_k, Routing& r);

// dst[row] = src[sorted_token[row]]  (src [N, C], dst [N*k, C]).
void gather_rows(const View2& src, const IntView1& sorted_token, const View2& dst);

// out[t] = sum_j gates[t, j] * expert_out[position[t, j]] + bias   (out [N, C]; slots summed in order).
void combine_experts(const View2& expert_out, const Routing& r, const View1& bias, const View2& out);

}  // namespace jetmoe
