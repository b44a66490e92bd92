// Perplexity over non-overlapping windows (eval/perplexity.hpp).
#include "eval/perplexity.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/profiling.hpp"
#include "parallel/comm.hpp"

namespace jetmoe::eval {

PerplexityResult perplexity(LmForward& forward, const std::vector<std::int32_t>& ids, std::int64_t window,
                            std::int64_t batch_size, const Comm& comm) {
  Region region("perplexity");
  JETMOE_ASSERT(window >= 1 && batch_size >= 1, "perplexity: window and batch_size must be positive");
  // The batches: windows of the same length, up to batch_size of them, from token `start`.
  struct Batch {
    std::size_t start, n, T;
  };
  std::vector<Batch> batches;
  const std::size_t W = std::size_t(window), total = ids.size();
  for (std::size_t start = 0; start + 1 < total;) {
    const std::size_t T = std::min(W, total - start);
    std::size_t n = 0;
    while (n < std::size_t(batch_size) && start + n * T + 1 < total && std::min(W, total - start - n * T) == T) ++n;
    batches.push_back({start, n, T});
    start += n * T;
  }
  // Each batch's log-probabilities of its predicted tokens, in token order.
  const auto logps = run_batches_over_ranks(comm, batches.size(), [&](std::size_t k) {
    const Batch& bt = batches[k];
    TokenBatch batch{std::int64_t(bt.n), std::int64_t(bt.T), {}};
    batch.ids.assign(ids.begin() + std::ptrdiff_t(bt.start), ids.begin() + std::ptrdiff_t(bt.start + bt.n * bt.T));
    std::vector<std::int32_t> targets(bt.n * bt.T, -1);  // position t predicts t + 1 of its window
    for (std::size_t b = 0; b < bt.n; ++b)
      for (std::size_t t = 0; t + 1 < bt.T; ++t) targets[b * bt.T + t] = batch.ids[b * bt.T + t + 1];
    const std::vector<double> logp = forward.target_logprobs(batch, targets);
    std::vector<double> predicted;
    for (std::size_t i = 0; i < targets.size(); ++i)
      if (targets[i] >= 0) predicted.push_back(logp[i]);
    return predicted;
  });
  PerplexityResult result;
  for (const std::vector<double>& batch : logps)
    for (const double lp : batch) result.nll -= lp, ++result.predicted;
  return result;
}

PerplexityResult perplexity(LmForward& forward, const std::vector<std::int32_t>& ids, std::int64_t window,
                            std::int64_t batch_size) {
  return perplexity(forward, ids, window, batch_size, Comm::self());
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
