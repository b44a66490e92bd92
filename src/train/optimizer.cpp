#include "train/optimizer.hpp"

#include <cmath>
#include <vector>

#include "core/error.hpp"
#include "core/kokkos_compat.hpp"
#include "core/profiling.hpp"
#include "train/config.hpp"

namespace jetmoe {

namespace {

// The host backends run each kernel below over blocks of this many elements with a plain inner loop,
// which the compiler vectorises; a device runs one element per thread.
constexpr std::int64_t elementwise_block = host_memory ? 4096 : 1;

std::int64_t blocks_of(std::int64_t n, std::int64_t block) { return (n + block - 1) / block; }

}  // namespace

AdamW::AdamW(const ModelConfig& config, const AdamWSettings& settings, const StageSpan& span)
    : config_(config), s_(settings), m_(config, true, span), v_(config, true, span) {}

void AdamW::step(ModelWeights& params, const ModelWeights& grads, double lr, double grad_scale) {
  Region region("optimizer");
  ++steps_;
  const double bias_correction1 = 1.0 - std::pow(s_.beta1, double(steps_));
  const double bias_correction2 = 1.0 - std::pow(s_.beta2, double(steps_));
  const float step_size = float(lr / bias_correction1);
  const float bc2_sqrt = float(std::sqrt(bias_correction2));
  const float b1w = float(1.0 - s_.beta1), b2 = float(s_.beta2), b2w = float(1.0 - s_.beta2), eps = float(s_.eps);
  // clip_grad_norm_ multiplies every gradient by its factor before the update; the same fp32 product
  // here, in the update's loop, saves a read and a write of every gradient. A factor of 1 is exact.
  const bool scale = grad_scale != 1.0;
  const float f = float(grad_scale);
  // Aligned over the whole model: a tensor is updated where this rank holds its moments (all of its
  // span, or its ZeRO-1 share).
  const auto p = params.named_all(config_), g = grads.named_all(config_), m = m_.named_all(config_),
             v = v_.named_all(config_);
  for (std::size_t i = 0; i < p.size(); ++i) {
    if (m[i].flat.data() == nullptr) continue;
    const float decay = p[i].decays ? float(1.0 - lr * s_.weight_decay) : 1.0f;
    const View1 pi = p[i].flat, gi = g[i].flat, mi = m[i].flat, vi = v[i].flat;
    const std::int64_t n = std::int64_t(pi.extent(0)), block = elementwise_block;
    // One pass: read p, g, m, v once, write p, m, v once (torch's single-tensor AdamW, op for op).
    Kokkos::parallel_for(
        "adamw", Range(0, blocks_of(n, block)), KOKKOS_LAMBDA(std::int64_t b) {
          float* const pp = pi.data();
          const float* const gp = gi.data();
          float* const mp = mi.data();
          float* const vp = vi.data();
          const std::int64_t end = b * block + block < n ? b * block + block : n;
          for (std::int64_t j = b * block; j < end; ++j) {
            const float gj = scale ? gp[j] * f : gp[j];
            const float pj = pp[j] * decay;
            const float mj = mp[j] + b1w * (gj - mp[j]);
            const float vj = vp[j] * b2 + b2w * gj * gj;
            mp[j] = mj;
            vp[j] = vj;
            pp[j] = pj + (-step_size) * (mj / (kmath::sqrt(vj) / bc2_sqrt + eps));
          }
        });
  }
}

void AdamW::shard(const std::function<bool(std::size_t, const std::string&)>& keep) {
  auto drop = [&](std::size_t i, const std::string& name) { return !keep(i, name); };
  m_.release(config_, drop);
  v_.release(config_, drop);
}

double global_grad_norm(const ModelConfig& config, const ModelWeights& grads) {
  return std::sqrt(grad_sum_of_squares(grads.named(config)));
}

double grad_sum_of_squares(const std::vector<NamedTensor>& tensors) {
  // Partial sums of squares over fixed blocks of each tensor, each accumulated in double over 8
  // interleaved lanes (independent chains the compiler vectorises), lanes and blocks then added in a
  // fixed order: the result depends neither on the backend nor on the thread count.
  constexpr std::int64_t block = 4096;
  constexpr int lanes = 8;
  std::vector<std::int64_t> first_block(tensors.size() + 1, 0);
  for (std::size_t i = 0; i < tensors.size(); ++i)
    first_block[i + 1] = first_block[i] + blocks_of(std::int64_t(tensors[i].flat.extent(0)), block);
  Kokkos::View<double*, MemSpace> partial(Kokkos::view_alloc("grad_norm_partials", Kokkos::WithoutInitializing),
                                          std::size_t(first_block.back()));
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const View1 g = tensors[i].flat;
    const std::int64_t n = std::int64_t(g.extent(0)), base = first_block[i];
    Kokkos::parallel_for(
        "grad_norm", Range(0, first_block[i + 1] - base), KOKKOS_LAMBDA(std::int64_t b) {
          const float* const gp = g.data();
          const std::int64_t begin = b * block, end = begin + block < n ? begin + block : n;
          double acc[lanes] = {};
          std::int64_t j = begin;
          for (; j + lanes <= end; j += lanes)
            for (int l = 0; l < lanes; ++l) acc[l] += double(gp[j + l]) * double(gp[j + l]);
          for (int l = 0; j < end; ++j, ++l) acc[l] += double(gp[j]) * double(gp[j]);
          partial(base + b) = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
        });
  }
  const auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), partial);
  double total = 0;
  for (std::size_t b = 0; b < h.extent(0); ++b) total += h(b);
  return total;
}

void scale_gradients(const ModelConfig& config, const ModelWeights& grads, double factor) {
  const float f = float(factor);
  for (const NamedTensor& t : grads.named(config)) {
    const View1 g = t.flat;
    const std::int64_t n = std::int64_t(g.extent(0)), block = elementwise_block;
    Kokkos::parallel_for(
        "scale_gradients", Range(0, blocks_of(n, block)), KOKKOS_LAMBDA(std::int64_t b) {
          float* const gp = g.data();
          const std::int64_t end = b * block + block < n ? b * block + block : n;
          for (std::int64_t j = b * block; j < end; ++j) gp[j] *= f;
        });
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
