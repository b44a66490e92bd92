#pragma once
// Next-token choice from one row of logits, as Hugging Face's generate() does it: temperature, then
// top-k, then top-p (nucleus) filtering, then a draw; temperature 0 is greedy (arg-max, first index
// on ties, as torch.argmax). Deterministic for a given seed.
#include <cstdint>
#include <random>
#include <vector>

namespace jetmoe {

struct SamplingParams {
  double temperature = 0.0;  // 0: greedy
  std::int64_t top_k = 0;    // 0: no top-k filter
  double top_p = 1.0;        // 1: no nucleus filter
  std::uint64_t seed = 0;
};

// The seed of prompt `index`'s random stream in a job seeded with `seed` (SplitMix64 of the pair):
// each prompt samples from its own stream, so its tokens do not depend on the other prompts, on how
// they are batched, nor on the ranks they are spread over.
std::uint64_t prompt_seed(std::uint64_t seed, std::uint64_t index);

class Sampler {
 public:
  explicit Sampler(const SamplingParams& params);
  // From the sampler's own stream (seeded with params.seed), or from `rng` (a prompt's stream).
  std::int32_t next(const float* logits, std::int64_t vocab);
  std::int32_t next(const float* logits, std::int64_t vocab, std::mt19937_64& rng);
  bool greedy() const { return params_.temperature == 0.0; }

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<double> work_;
  std::vector<std::int32_t> order_;
};

}  // namespace jetmoe
