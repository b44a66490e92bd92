#pragma once
// AdamW with decoupled weight decay (none on norms and biases), global gradient-norm clipping and the
// learning-rate schedules of jetmoe-spec.md section 0 (WSD: linear warmup from initial_ratio x peak,
// constant, exponential decay to final_ratio x peak; cosine; constant).
//
// The update is torch.optim.AdamW's single-tensor algorithm, operation for operation in fp32:
//   p *= 1 - lr wd;  m += (1 - b1)(g - m);  v = b2 v + (1 - b2) g g;
//   p -= (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// and clipping is torch.nn.utils.clip_grad_norm_: g *= min(1, max_norm / (norm + 1e-6)).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/config.hpp"
#include "model/weights.hpp"

namespace jetmoe {

struct TrainConfig;

struct AdamWSettings {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
};

class AdamW {
 public:
  // Moments for the tensors of `span` (a pipeline stage's part of the model; default the whole model).
  AdamW(const ModelConfig& config, const AdamWSettings& settings, const StageSpan& span = StageSpan());

  // One update of every parameter with learning rate lr. The update uses grad_scale x the gradient,
  // the fp32 product scale_gradients would store (pass clip_factor(...) to clip inside the update's
  // one pass over memory); `grads` itself is not modified.
  void step(ModelWeights& params, const ModelWeights& grads, double lr, double grad_scale = 1.0);

  // ZeRO-1: keeps the moments of the tensors for which keep(index in named_all, name) is true and frees
  // the others; step() then updates those tensors only (the caller broadcasts the rest).
  void shard(const std::function<bool(std::size_t, const std::string&)>& keep);

  std::int64_t steps() const { return steps_; }  // updates made (t of the bias corrections)
  void set_steps(std::int64_t t) { steps_ = t; }
  ModelWeights& exp_avg() { return m_; }
  ModelWeights& exp_avg_sq() { return v_; }
  const ModelWeights& exp_avg() const { return m_; }
  const ModelWeights& exp_avg_sq() const { return v_; }

 private:
  ModelConfig config_;
  AdamWSettings s_;
  ModelWeights m_, v_;
  std::int64_t steps_ = 0;
};

// sqrt(sum of squares) of every gradient, accumulated in double in a fixed order (independent of the
// backend and thread count).
double global_grad_norm(const ModelConfig& config, const ModelWeights& grads);
// The sum of squares of the listed gradients, in the same fixed order (global_grad_norm = sqrt of it
// over every tensor); pipeline stages add theirs.
double grad_sum_of_squares(const std::vector<NamedTensor>& tensors);
// Multiplies every gradient by `factor`.
void scale_gradients(const ModelConfig& config, const ModelWeights& grads, double factor);
// The factor clip_grad_norm_ applies: min(1, max_norm / (norm + 1e-6)); 1 when max_norm is 0 (off).
double clip_factor(double norm, double max_norm);
// Sets every gradient to zero.
void zero_gradients(const ModelConfig& config, const ModelWeights& grads);

class LrSchedule {
 public:
  // type: wsd | cosine | constant; lengths in the schedule's unit (steps or tokens).
  LrSchedule(std::string type, double peak, std::int64_t total, std::int64_t warmup, std::int64_t decay,
             double initial_ratio, double final_ratio);
  static LrSchedule from(const TrainConfig& run);

  // Learning rate at position s (steps done, or tokens seen, before this update):
  //   wsd:      peak (r0 + (1 - r0) s / W) for s < W;  peak for W <= s < S;  peak rf^((s - S) / D) for s >= S
  //   cosine:   the same warmup, then peak (rf + (1 - rf) (1 + cos(pi (s - W) / (total - W))) / 2)
  //   constant: peak
  // with S = total - D; positions past `total` keep the final value.
  double lr(std::int64_t s) const;
  // Data-mixture phase at position s: 2 during the final `decay` units (the paper's decay phase), else 1.
  int phase(std::int64_t s) const;

 private:
  std::string type_;
  double peak_;
  std::int64_t total_, warmup_, decay_;
  double r0_, rf_;
};

}  // namespace jetmoe
