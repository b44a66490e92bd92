#include "infer/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <numeric>

namespace jetmoe {

Sampler::Sampler(const SamplingParams& params) : params_(params), rng_(params.seed) {}

namespace {
std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
}  // namespace

std::uint64_t prompt_seed(std::uint64_t seed, std::uint64_t index) { return splitmix64(splitmix64(seed) ^ index); }

std::int32_t Sampler::next(const float* logits, std::int64_t vocab) { return next(logits, vocab, rng_); }

std::int32_t Sampler::next(const float* logits, std::int64_t vocab, std::mt19937_64& rng) {
  if (greedy()) return std::int32_t(std::max_element(logits, logits + vocab) - logits);

  work_.resize(std::size_t(vocab));
  for (std::int64_t i = 0; i < vocab; ++i) work_[i] = double(logits[i]) / params_.temperature;
  order_.resize(std::size_t(vocab));
  std::iota(order_.begin(), order_.end(), 0);
  // Descending by score; stable so equal scores keep index order.
  std::stable_sort(order_.begin(), order_.end(), [&](std::int32_t a, std::int32_t b) { return work_[a] > work_[b]; });

  std::size_t keep = std::size_t(vocab);
  if (params_.top_k > 0) keep = std::min<std::size_t>(keep, std::size_t(params_.top_k));
  // Softmax over the kept tokens.
  const double top = work_[order_[0]];
  std::vector<double> p(keep);
  double z = 0;
  for (std::size_t i = 0; i < keep; ++i) z += (p[i] = std::exp(work_[order_[i]] - top));
  for (auto& x : p) x /= z;
  if (params_.top_p < 1.0) {
    // Keep the smallest prefix whose mass reaches top_p (at least one token).
    double mass = 0;
    std::size_t n = 0;
    while (n < keep && mass < params_.top_p) mass += p[n++];
    keep = std::max<std::size_t>(1, n);
    p.resize(keep);
    const double zz = std::accumulate(p.begin(), p.end(), 0.0);
    for (auto& x : p) x /= zz;
  }
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  double u = uniform(rng), acc = 0;
  for (std::size_t i = 0; i < keep; ++i) {
    acc += p[i];
    if (u < acc) return order_[i];
  }
  return order_[keep - 1];
}

}  // namespace jetmoe
