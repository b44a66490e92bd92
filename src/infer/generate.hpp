#pragma once
// Batched generation: left-padded prefill, then one token per sequence per step from the KV cache,
// stopping a sequence at EOS and the batch at max_new_tokens (or when every sequence stopped).
#include <cstdint>
#include <functional>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "infer/sampler.hpp"
#include "model/model.hpp"

namespace jetmoe {

struct GenerationParams {
  std::int64_t max_new_tokens = 64;
  std::int32_t eos_id = 2;       // < 0: never stop early
  std::int32_t pad_id = 2;       // fills the left padding and finished sequences
  SamplingParams sampling;
  // Each prompt's index among the job's prompts (empty: 0, 1, ...): prompt i samples from the stream
  // prompt_seed(sampling.seed, i), so a rank given some of the prompts samples what one rank given
  // all of them does.
  std::vector<std::uint64_t> prompt_index;
};

// The random streams of a batch's prompts (params.prompt_index, else 0, 1, ...).
std::vector<std::mt19937_64> prompt_streams(const GenerationParams& params, std::size_t prompts);

struct GenerationResult {
  std::vector<std::vector<std::int32_t>> tokens;  // per prompt: the new tokens (EOS included if produced)
  double prefill_seconds = 0, decode_seconds = 0;
  std::int64_t prompt_tokens = 0, generated_tokens = 0;
};

// One prompt's generation as jetmoe-generate's results file records it.
struct GenerationRecord {
  std::string prompt;                        // the text given (before any chat template)
  std::int64_t prompt_tokens = 0;            // its tokens as the model saw them (template included)
  std::vector<std::int32_t> completion_ids;  // the new tokens, EOS included if produced
  std::string completion;                    // their text, EOS left out
};

// What produced a batch of generations, for the results file.
struct GenerationSettings {
  std::string model, tokenizer, precision, matrix_products;
  bool chat = false;
  std::optional<std::string> system;
  GenerationParams params;
};

// The results file: the settings, then per prompt {"prompt", "completion", "prompt_tokens",
// "completion_tokens", "finish_reason": "eos" (the last new token is params.eos_id) or "length",
// "completion_ids"}, as JSON (strings escaped, reals to the bit).
std::string generation_results_json(const GenerationSettings& settings, const std::vector<GenerationRecord>& records);

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
