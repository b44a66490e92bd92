#pragma once
// Batched generation: left-padded prefill, then one token per sequence per step from the KV cache,
// stopping a sequence at EOS and the batch at max_new_tokens (or when every sequence stopped).
#include <cstdint>
#include <functional>
#include <vector>

#include "infer/sampler.hpp"
#include "model/model.hpp"

namespace jetmoe {

struct GenerationParams {
  std::int64_t max_new_tokens = 64;
  std::int32_t eos_id = 2;       // < 0: never stop early
  std::int32_t pad_id = 2;       // fills the left padding and finished sequences
  SamplingParams sampling;
};

struct GenerationResult {
  std::vector<std::vector<std::int32_t>> tokens;  // per prompt: the new tokens (EOS included if produced)
  double prefill_seconds = 0, decode_seconds = 0;
  std::int64_t prompt_tokens = 0, generated_tokens = 0;
};

// The longest prompt's length, after checking the batch (ErrorKind::Input for an empty prompt, or a
// longest prompt plus max_new_tokens beyond the model's context); adds the prompts' tokens to
// result.prompt_tokens. Shared by generate() and generate_on_device().
std::int64_t check_prompts(const ModelConfig& config, const std::vector<std::vector<std::int32_t>>& prompts,
                           const GenerationParams& params, GenerationResult& result);

// on_token(sequence, token) is called as each token is chosen (streaming).
GenerationResult generate(Model& model, const std::vector<std::vector<std::int32_t>>& prompts,
                          const GenerationParams& params,
                          const std::function<void(std::size_t, std::int32_t)>& on_token = {});

}  // namespace jetmoe
