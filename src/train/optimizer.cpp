#include "train/optimizer.hpp"

#include <cmath>

#include "core/error.hpp"
#include "core/kokkos_compat.hpp"
#include "core/profiling.hpp"
#include "train/config.hpp"

namespace jetmoe {

AdamW::AdamW(const ModelConfig& config, const AdamWSettings& settings)
    : config_(config), s_(settings), m_(config, true), v_(config, true) {}

void AdamW::step(ModelWeights& params, const ModelWeights& grads, double lr) {
  Region region("optimizer");
  ++steps_;
  const double bias_correction1 = 1.0 - std::pow(s_.beta1, double(steps_));
  const double bias_correction2 = 1.0 - std::pow(s_.beta2, double(steps_));
  const float step_size = float(lr / bias_correction1);
  const float bc2_sqrt = float(std::sqrt(bias_correction2));
  const float b1w = float(1.0 - s_.beta1), b2 = float(s_.beta2), b2w = float(1.0 - s_.beta2), eps = float(s_.eps);
  const auto p = params.named(config_), g = grads.named(config_), m = m_.named(config_), v = v_.named(config_);
  for (std::size_t i = 0; i < p.size(); ++i) {
    const float decay = p[i].decays ? float(1.0 - lr * s_.weight_decay) : 1.0f;
    const View1 pi = p[i].flat, gi = g[i].flat, mi = m[i].flat, vi = v[i].flat;
    Kokkos::parallel_for(
        "adamw", Range(0, std::int64_t(pi.extent(0))), KOKKOS_LAMBDA(std::int64_t j) {
          const float gj = gi(j);
          const float pj = pi(j) * decay;
          const float mj = mi(j) + b1w * (gj - mi(j));
          const float vj = vi(j) * b2 + b2w * gj * gj;
          mi(j) = mj;
          vi(j) = vj;
          pi(j) = pj + (-step_size) * (mj / (kmath::sqrt(vj) / bc2_sqrt + eps));
        });
  }
}

double global_grad_norm(const ModelConfig& config, const ModelWeights& grads) {
  double total = 0;
  for (const NamedTensor& t : grads.named(config)) {
    const View1 g = t.flat;
    double sum = 0;
    Kokkos::parallel_reduce(
        "grad_norm", Range(0, std::int64_t(g.extent(0))),
        KOKKOS_LAMBDA(std::int64_t j, double& s) { s += double(g(j)) * double(g(j)); }, sum);
    total += sum;
  }
  return std::sqrt(total);
}

void scale_gradients(const ModelConfig& config, const ModelWeights& grads, double factor) {
  const float f = float(factor);
  for (const NamedTensor& t : grads.named(config)) {
    const View1 g = t.flat;
    Kokkos::parallel_for(
        "scale_gradients", Range(0, std::int64_t(g.extent(0))), KOKKOS_LAMBDA(std::int64_t j) { g(j) *= f; });
  }
}

double clip_factor(double norm, double max_norm) {
  if (max_norm <= 0) return 1.0;
  return std::min(1.0, max_norm / (norm + 1e-6));
}

void zero_gradients(const ModelConfig& config, const ModelWeights& grads) {
  for (const NamedTensor& t : grads.named(config)) Kokkos::deep_copy(t.flat, 0.0f);
}

LrSchedule::LrSchedule(std::string type, double peak, std::int64_t total, std::int64_t warmup, std::int64_t decay,
                       double initial_ratio, double final_ratio)
    : type_(std::move(type)), peak_(peak), total_(total), warmup_(warmup), decay_(decay), r0_(initial_ratio),
      rf_(final_ratio) {
  JETMOE_ASSERT(type_ == "wsd" || type_ == "cosine" || type_ == "constant", "LrSchedule: type " + type_);
  JETMOE_ASSERT(total_ > 0 && warmup_ >= 0 && decay_ >= 0, "LrSchedule: lengths");
}

LrSchedule LrSchedule::from(const TrainConfig& r) {
  return LrSchedule(r.schedule, r.lr, r.total, r.warmup, r.decay, r.initial_ratio, r.final_ratio);
}

double LrSchedule::lr(std::int64_t s) const {
  if (type_ == "constant") return peak_;
  if (s < warmup_) return peak_ * (r0_ + (1.0 - r0_) * double(s) / double(warmup_));
  const std::int64_t pos = std::min(s, total_);
  if (type_ == "wsd") {
    const std::int64_t stable_end = total_ - decay_;
    if (pos < stable_end || decay_ == 0) return peak_;
    return peak_ * std::pow(rf_, double(pos - stable_end) / double(decay_));
  }
  const double span = double(std::max<std::int64_t>(1, total_ - warmup_));
  const double progress = std::min(1.0, double(pos - warmup_) / span);
  return peak_ * (rf_ + (1.0 - rf_) * 0.5 * (1.0 + std::cos(M_PI * progress)));
}

int LrSchedule::phase(std::int64_t s) const { return (decay_ > 0 && s >= total_ - decay_) ? 2 : 1; }

}  // namespace jetmoe
