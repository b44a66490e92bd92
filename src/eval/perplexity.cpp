// Perplexity over non-overlapping windows (eval/perplexity.hpp).
#include "eval/perplexity.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/profiling.hpp"

namespace jetmoe::eval {

PerplexityResult perplexity(LmForward& forward, const std::vector<std::int32_t>& ids, std::int64_t window,
                            std::int64_t batch_size) {
  Region region("perplexity");
  JETMOE_ASSERT(window >= 1 && batch_size >= 1, "perplexity: window and batch_size must be positive");
  PerplexityResult result;
  const std::size_t W = std::size_t(window), total = ids.size();
  std::size_t start = 0;
  while (start + 1 < total) {
    // Windows of the same length as this one, up to batch_size of them.
    const std::size_t T = std::min(W, total - start);
    std::size_t n = 0;
    while (n < std::size_t(batch_size) && start + n * T + 1 < total && std::min(W, total - start - n * T) == T) ++n;
    TokenBatch batch{std::int64_t(n), std::int64_t(T), {}};
    batch.ids.assign(ids.begin() + std::ptrdiff_t(start), ids.begin() + std::ptrdiff_t(start + n * T));
    std::vector<std::int32_t> targets(n * T, -1);  // position t predicts t + 1 of its window
    for (std::size_t b = 0; b < n; ++b)
      for (std::size_t t = 0; t + 1 < T; ++t) targets[b * T + t] = batch.ids[b * T + t + 1];
    const std::vector<double> logp = forward.target_logprobs(batch, targets);
    for (std::size_t i = 0; i < targets.size(); ++i)
      if (targets[i] >= 0) result.nll -= logp[i], ++result.predicted;
    start += n * T;
  }
  return result;
}

std::string perplexity_results_json(const PerplexityResult& result, const std::string& input, std::int64_t window,
                                    const LmForward& forward) {
  nlohmann::ordered_json j;
  j["task"] = "perplexity";
  j["input"] = input;
  j["tokens_predicted"] = result.predicted;
  j["mean_nll"] = result.mean_nll();
  j["perplexity"] = result.perplexity();
  j["context"] = window;
  j["precision"] = forward.precision();
  j["matrix_products"] = forward.matrix_products();
  return j.dump(2) + "\n";
}

}  // namespace jetmoe::eval
