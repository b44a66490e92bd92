#pragma once
// The evaluation forward on a CUDA GPU (eval/precision = bf16): the model's fp32 weights rounded to
// bf16 once and uploaded, each batch through jk_model_eval (jetmoe/model.h) in HF's bf16 numerics,
// one block's activations at a time. The logits are the bf16 logits widened to fp32 (what HF's bf16
// model returns); the log-probabilities are the kernels' fp32 cross-entropy of those logits, so only
// one number per scored token comes back to the host.
#include <memory>
#include <string>
#include <vector>

#include "eval/forward.hpp"
#include "model/gpu_kernels.hpp"

namespace jetmoe {
class Model;
}

namespace jetmoe::eval {

// Empty when this process can evaluate on a GPU, else why not (no CUDA kernels in the build, no GPU,
// kernels not built for it).
std::string device_evaluation_unavailable();

class DeviceForward final : public LmForward {
 public:
  // Uploads the weights. Throws jetmoe::Error: Deck ("eval/precision = bf16: <why>") where
  // device_evaluation_unavailable() says why, Input for a GPU without the memory for the weights.
  // `kernels`: which CUDA kernels (job/gpu_kernels). `logits_chunk`: the LM head and the cross-entropy
  // of at most this many tokens at a time (>= 1; the results do not depend on it, only the GPU memory
  // of one chunk's logits does).
  explicit DeviceForward(const Model& model, GpuKernels kernels = GpuKernels::Tuned,
                         std::int64_t logits_chunk = kForwardLogitsChunk);
  ~DeviceForward() override;
  DeviceForward(const DeviceForward&) = delete;
  DeviceForward& operator=(const DeviceForward&) = delete;

  const ModelConfig& config() const override { return config_; }
  std::string precision() const override { return "bf16"; }
  std::string matrix_products() const override;  // "jetmoe CUDA kernels (job/gpu_kernels = tuned) on <GPU>"
  // Both throw Input for a token id outside the vocabulary or a GPU without the memory for the batch.
  void logits(const TokenBatch& batch, float* out) override;
  std::vector<double> target_logprobs(const TokenBatch& batch, const std::vector<std::int32_t>& targets) override;

 private:
  struct State;  // the device buffers (CUDA builds only)
  ModelConfig config_;
  GpuKernels kernels_;
  std::unique_ptr<State> state_;
};

}  // namespace jetmoe::eval
