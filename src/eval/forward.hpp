#pragma once
// What evaluation (perplexity, multiple choice, logits dumps) asks of a model: the forward of a batch
// of n sequences of T tokens at positions 0..T-1. The mask is causal, so a sequence right-padded to T
// scores its own tokens as it would alone. Two implementations share all the request building,
// batching and reporting: ModelForward, the fp32 Kokkos Model (eval/precision = fp32), and
// DeviceForward, the CUDA kernels in HF's bf16 numerics (eval/precision = bf16, eval/device_forward.hpp).
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/config.hpp"

namespace jetmoe {
class Comm;
class Model;
}

namespace jetmoe::eval {

// n sequences of T token ids, row-major: ids[b T + t] is position t of sequence b.
struct TokenBatch {
  std::int64_t n = 0, T = 0;
  std::vector<std::int32_t> ids;
};

class LmForward {
 public:
  virtual ~LmForward() = default;
  virtual const ModelConfig& config() const = 0;
  // The numerics, as eval/precision names them ("fp32", "bf16"); recorded in the results.
  virtual std::string precision() const = 0;
  // What computes the matrix products, recorded in the results (their last bits depend on it: the
  // host BLAS with its thread count, or the GPU and its kernels; docs/user-guide.md, "Training").
  virtual std::string matrix_products() const = 0;
  // The logits of every position into `out`, host memory [n T, V] fp32 (row b T + t).
  virtual void logits(const TokenBatch& batch, float* out) = 0;
  // For every row i = b T + t (n T entries): log p(targets[i] | sequence b's tokens 0..t), computed from
  // the logits in at least fp32; 0 where targets[i] < 0 (not scored). Targets must be in [0, V).
  virtual std::vector<double> target_logprobs(const TokenBatch& batch, const std::vector<std::int32_t>& targets) = 0;
};

// Both implementations' argument check: ids of n x T, 1 <= T <= the model's context, targets (when
// given) one per row and below the vocabulary (JETMOE_ASSERT: the callers build them from checked ids).
void check_batch(const ModelConfig& c, const TokenBatch& batch, const std::vector<std::int32_t>* targets);

// Batches 0 .. batches-1 dealt out over the ranks of `comm` (batch k to rank k % P): `run(k)` computes
// batch k's values on its rank; every batch's values come back on every rank, in batch order. A batch
// is computed as one rank would compute it, so the values are those of one rank, bit for bit. Every
// rank calls it; a failure on any rank is thrown on all (io/collective.hpp).
std::vector<std::vector<double>> run_batches_over_ranks(const Comm& comm, std::size_t batches,
                                                        const std::function<std::vector<double>(std::size_t)>& run);

// The fp32 Model on Kokkos: Model::forward, then log-softmax in double.
class ModelForward final : public LmForward {
 public:
  explicit ModelForward(Model& model) : model_(model) {}
  const ModelConfig& config() const override;
  std::string precision() const override { return "fp32"; }
  std::string matrix_products() const override;
  void logits(const TokenBatch& batch, float* out) override;
  std::vector<double> target_logprobs(const TokenBatch& batch, const std::vector<std::int32_t>& targets) override;

 private:
  Model& model_;
};

}  // namespace jetmoe::eval
