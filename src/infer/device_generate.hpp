#pragma once
// Generation on a CUDA GPU with the tuned kernels (generate/precision = bf16): the model's fp32
// weights rounded to bf16 once, one bf16 KV cache per block, each step through jk_model_decode
// (jetmoe/model.h) in HF's bf16 numerics, the logits to the host and the same Sampler as generate().
//
// The prompts are prefilled in batches of similar lengths (plan_prefill; jk_model_prefill: one forward
// over a right-padded batch, writing each prompt's rows of the caches; causal attention keeps the
// padding out of every prompt, so a prompt's logits and cache rows are those of the prompt alone, bit
// for bit) and give their sequences' first tokens; then every unfinished sequence takes one token per
// decode step at its own position, until EOS or max_new_tokens. Samples are drawn in generate()'s
// order (first tokens in prompt order, then step by step), so a greedy or seeded run differs from the
// fp32 one only where the bf16 logits change a choice, and does not depend on how prompts are batched.
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "infer/generate.hpp"
#include "model/gpu_kernels.hpp"
#include "model/model.hpp"

namespace jetmoe {

// Empty when this process can generate on a GPU, else why not (no CUDA kernels in the build, no GPU,
// kernels not built for it).
std::string device_generation_unavailable();

struct DeviceGenerationOptions {
  // The decode step (~35 kernels per block) captured once as a CUDA graph and replayed every step,
  // which removes the launch latencies that dominate a one-token step; false, or a capture the driver
  // refuses: plain launches. The same results either way.
  bool cuda_graph = true;
  // Which CUDA kernels (job/gpu_kernels).
  GpuKernels kernels = GpuKernels::Tuned;
  // The most tokens, padding included, in one prefill batch (generate/prefill_tokens).
  std::int64_t prefill_tokens = 8192;
};

// The prefill's batches: the prompts longest first (equal lengths in prompt order), cut into runs
// whose padded size (count x the run's first length) is at most max_tokens; a prompt longer than that
// is a batch of its own. order[s]: the prompt in cache slot s; batches: [begin, end) ranges of slots.
struct PrefillPlan {
  std::vector<std::size_t> order;
  std::vector<std::pair<std::size_t, std::size_t>> batches;
};
PrefillPlan plan_prefill(const std::vector<std::vector<std::int32_t>>& prompts, std::int64_t max_tokens);

// As generate(). Throws
// jetmoe::Error: Input for an empty prompt, a token id outside the vocabulary, a context longer than
// the model's or a GPU without the memory for the weights and caches.
GenerationResult generate_on_device(const Model& model, const std::vector<std::vector<std::int32_t>>& prompts,
                                    const GenerationParams& params,
                                    const std::function<void(std::size_t, std::int32_t)>& on_token = {},
                                    const DeviceGenerationOptions& options = {});

}  // namespace jetmoe
