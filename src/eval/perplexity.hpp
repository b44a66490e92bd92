#pragma once
// Perplexity of a token stream (eval/task = perplexity) over non-overlapping windows: each window of up
// to `window` tokens predicts its tokens 1..n-1 from the ones before it in the window (no context
// crosses a window boundary); a last window of one token predicts nothing.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "eval/forward.hpp"

namespace jetmoe::eval {

struct PerplexityResult {
  double nll = 0;  // summed over the predicted tokens, nats
  std::int64_t predicted = 0;
  double mean_nll() const { return predicted > 0 ? nll / double(predicted) : 0.0; }
  double perplexity() const { return std::exp(mean_nll()); }
};

// Full windows go batch_size to a forward, a shorter last one alone; the sum runs in window order,
// so the result depends on batch_size only as far as the forward's rows do. Under MPI (every rank of
// `comm` calls it) the batches are dealt out over the ranks and the sum runs in the same order on
// every rank: the result of one rank, bit for bit.
PerplexityResult perplexity(LmForward& forward, const std::vector<std::int32_t>& ids, std::int64_t window,
                            std::int64_t batch_size, const Comm& comm);
PerplexityResult perplexity(LmForward& forward, const std::vector<std::int32_t>& ids, std::int64_t window,
                            std::int64_t batch_size);

// eval/task = perplexity's results file (JSON): the input file, the predicted tokens, the mean NLL and
// the perplexity (doubles that read back to the same bits), the window, the forward's precision and
// what computed its matrix products.
std::string perplexity_results_json(const PerplexityResult& result, const std::string& input, std::int64_t window,
                                    const LmForward& forward);

}  // namespace jetmoe::eval
