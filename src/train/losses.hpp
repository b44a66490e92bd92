#pragma once
// The training losses (jetmoe-spec.md sections 3.5 and 4), each with its gradient.
//
// Cross-entropy: mean over the targets that are not ignore_index of -log softmax(logits)[target],
// exactly HF's CrossEntropyLoss on shifted labels (logits at position t predict label t+1).
//
// Router auxiliary loss, original JetMoE form, per router: with p = softmax(X) over all E experts,
// P_e = mean_t p_te, f_e = (number of (token, slot) choices of e) / (N k) (a constant: no gradient),
//   switch = E * sum_e P_e f_e          (1.0 under perfect balance)
//   z      = mean_t (logsumexp_e X_te)^2 (stable log-sum-exp)
// and the model adds load_balance_coef * switch + z_loss_coef * z for every router (2 per block).
#include <cstdint>
#include <vector>

#include "core/tensor.hpp"

namespace jetmoe {

constexpr std::int32_t ignore_index = -100;

// targets[b*T + t] = labels[b, t+1], and ignore_index for the last position of each sequence.
void shift_labels(const IntView2& labels, const IntView1& targets);

struct CrossEntropy {
  double loss = 0;              // mean over counted targets (0 when none)
  std::int64_t count = 0;       // targets that are not ignore_index
};

// logits [N, V], targets [N]. When dlogits is allocated ([N, V]) it receives
// grad_scale * d(loss)/d(logits) (so grad_scale = 1 gives the gradient of the mean). A target
// outside [0, V) other than ignore_index is an ErrorKind::Input.
// Instantiated for R = float and double.
template <class R>
CrossEntropy cross_entropy(const Mat<R>& logits, const IntView1& targets, const Mat<R>& dlogits = Mat<R>(),
                           double grad_scale = 1.0);

// A target outside [0, V) other than ignore_index is an ErrorKind::Input naming how many there are.
void check_targets(const IntView1& targets, std::int64_t V);
// How many targets are not ignore_index (the cross-entropy mean's denominator).
std::int64_t count_targets(const IntView1& targets);

// The same per row, for losses that weigh tokens differently (SFT over many sequences, DPO):
// loss_t = logsumexp(logits[t]) - logits[t, target_t], 0 for ignore_index (host vector [N]).
template <class R>
std::vector<double> cross_entropy_rows(const Mat<R>& logits, const IntView1& targets);
// dlogits[t] = weights[t] (softmax(logits[t]) - onehot(target_t)) = weights[t] d loss_t / d logits[t];
// rows with ignore_index get zeros.
template <class R>
void cross_entropy_backward(const Mat<R>& logits, const IntView1& targets, const std::vector<double>& weights,
                            const Mat<R>& dlogits);

struct RouterAux {
  double switch_loss = 0;  // E * sum_e P_e f_e
  double z_loss = 0;       // mean_t lse_t^2
};

// logits [N, E] (router logits), experts [N, k] (the choices the forward pass made). When dlogits is
// allocated, adds coef_switch * d(switch)/dX + coef_z * d(z)/dX to it (accumulates).
template <class R>
RouterAux router_aux_loss(const Mat<R>& logits, const IntView2& experts, double coef_switch, double coef_z,
                          const Mat<R>& dlogits = Mat<R>());

}  // namespace jetmoe
