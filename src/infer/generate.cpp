#include "infer/generate.hpp"

#include <algorithm>
#include <chrono>

#include <nlohmann/json.hpp>

#include "core/error.hpp"
#include "core/profiling.hpp"

namespace jetmoe {

namespace {
double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }
}  // namespace

std::string generation_results_json(const GenerationSettings& settings, const std::vector<GenerationRecord>& records) {
  nlohmann::ordered_json j;
  j["task"] = "generate";
  j["model"] = settings.model;
  j["tokenizer"] = settings.tokenizer;
  j["precision"] = settings.precision;
  j["matrix_products"] = settings.matrix_products;
  j["chat"] = settings.chat;
  j["system"] = settings.system ? nlohmann::ordered_json(*settings.system) : nlohmann::ordered_json(nullptr);
  const GenerationParams& p = settings.params;
  j["max_new_tokens"] = p.max_new_tokens;
  j["temperature"] = p.sampling.temperature;
  j["top_k"] = p.sampling.top_k;
  j["top_p"] = p.sampling.top_p;
  j["seed"] = p.sampling.seed;
  j["eos_id"] = p.eos_id;
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const GenerationRecord& r : records) {
    nlohmann::ordered_json g;
    g["prompt"] = r.prompt;
    g["completion"] = r.completion;
    g["prompt_tokens"] = r.prompt_tokens;
    g["completion_tokens"] = r.completion_ids.size();
    const bool eos = !r.completion_ids.empty() && p.eos_id >= 0 && r.completion_ids.back() == p.eos_id;
    g["finish_reason"] = eos ? "eos" : "length";
    g["completion_ids"] = r.completion_ids;
    out.push_back(std::move(g));
  }
  j["generations"] = std::move(out);
  // Invalid UTF-8 (a completion cut inside a character) is written as U+FFFD rather than refused.
  return j.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n";
}

std::vector<std::mt19937_64> prompt_streams(const GenerationParams& params, std::size_t prompts) {
  if (!params.prompt_index.empty() && params.prompt_index.size() != prompts)
    fail(ErrorKind::Internal, "generate: " + std::to_string(params.prompt_index.size()) + " prompt indices for " +
                                  std::to_string(prompts) + " prompts");
  std::vector<std::mt19937_64> streams;
  streams.reserve(prompts);
  for (std::size_t b = 0; b < prompts; ++b)
    streams.emplace_back(prompt_seed(params.sampling.seed, params.prompt_index.empty() ? b : params.prompt_index[b]));
  return streams;
}

std::int64_t check_prompts(const ModelConfig& c, const std::vector<std::vector<std::int32_t>>& prompts,
                           const GenerationParams& params, GenerationResult& result) {
  std::int64_t longest = 0;
  for (std::size_t b = 0; b < prompts.size(); ++b) {
    if (prompts[b].empty()) fail(ErrorKind::Input, "prompt " + std::to_string(b + 1) + " is empty (no tokens)");
    longest = std::max<std::int64_t>(longest, std::int64_t(prompts[b].size()));
    result.prompt_tokens += std::int64_t(prompts[b].size());
  }
  if (longest + params.max_new_tokens > c.max_position_embeddings)
    fail(ErrorKind::Input, "prompt of " + std::to_string(longest) + " tokens plus " + std::to_string(params.max_new_tokens) +
                               " new tokens exceeds the model's context of " + std::to_string(c.max_position_embeddings) +
                               " tokens");
  return longest;
}

GenerationResult generate(Model& model, const std::vector<std::vector<std::int32_t>>& prompts,
                          const GenerationParams& params, const std::function<void(std::size_t, std::int32_t)>& on_token) {
  Region region("generate");
  const ModelConfig& c = model.config();
  const std::int64_t B = std::int64_t(prompts.size());
  GenerationResult result;
  result.tokens.resize(prompts.size());
  if (B == 0) return result;
  const std::int64_t longest = check_prompts(c, prompts, params, result);
  const std::int64_t total = longest + params.max_new_tokens;

  // Left padding: sequence b starts at column pad[b]; its keys before that are masked, its positions
  // count from 0 at its first real token.
  IntView2 ids("prompt_ids", B, longest), positions("prompt_positions", B, longest);
  IntView1 key_start("key_start", B);
  auto h_ids = Kokkos::create_mirror_view(ids);
  auto h_pos = Kokkos::create_mirror_view(positions);
  auto h_start = Kokkos::create_mirror_view(key_start);
  std::vector<std::int64_t> pad(static_cast<std::size_t>(B));
  for (std::int64_t b = 0; b < B; ++b) {
    pad[b] = longest - std::int64_t(prompts[b].size());
    h_start(b) = std::int32_t(pad[b]);
    for (std::int64_t t = 0; t < longest; ++t) {
      h_ids(b, t) = t < pad[b] ? params.pad_id : prompts[b][std::size_t(t - pad[b])];
      h_pos(b, t) = std::int32_t(std::max<std::int64_t>(0, t - pad[b]));
    }
  }
  Kokkos::deep_copy(ids, h_ids);
  Kokkos::deep_copy(positions, h_pos);
  Kokkos::deep_copy(key_start, h_start);

  KvCache cache(c, B, total);
  Sampler sampler(params.sampling);
  std::vector<std::mt19937_64> streams = prompt_streams(params, prompts.size());
  const std::int64_t V = c.vocab_size;
  std::vector<bool> done(static_cast<std::size_t>(B), false);
  std::vector<std::int32_t> next(static_cast<std::size_t>(B));

  // Logits [B, V]: the last position of each sequence (Model::forward computes only those).
  auto choose = [&](const View2& logits) {
    auto host = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), logits);
    for (std::int64_t b = 0; b < B; ++b) {
      if (done[b]) {
        next[b] = params.pad_id;
        continue;
      }
      next[b] = sampler.next(&host(b, 0), V, streams[std::size_t(b)]);
      result.tokens[b].push_back(next[b]);
      ++result.generated_tokens;
      if (on_token) on_token(std::size_t(b), next[b]);
      if (next[b] == params.eos_id) done[b] = true;
    }
  };

  double t0 = now();
  {
    View2 logits(Kokkos::view_alloc("prefill_logits", Kokkos::WithoutInitializing), B, V);
    model.forward(ids, positions, key_start, cache, logits);
    choose(logits);
  }
  Kokkos::fence();
  result.prefill_seconds = now() - t0;
  t0 = now();
  IntView2 step_ids("step_ids", B, 1), step_pos("step_positions", B, 1);
  auto h_step = Kokkos::create_mirror_view(step_ids);
  auto h_step_pos = Kokkos::create_mirror_view(step_pos);
  View2 step_logits(Kokkos::view_alloc("step_logits", Kokkos::WithoutInitializing), B, V);
  for (std::int64_t step = 1; step < params.max_new_tokens; ++step) {
    if (std::all_of(done.begin(), done.end(), [](bool x) { return x; })) break;
    for (std::int64_t b = 0; b < B; ++b) {
      h_step(b, 0) = next[b];
      h_step_pos(b, 0) = std::int32_t(longest + step - 1 - pad[b]);
    }
    Kokkos::deep_copy(step_ids, h_step);
    Kokkos::deep_copy(step_pos, h_step_pos);
    model.forward(step_ids, step_pos, key_start, cache, step_logits);
    choose(step_logits);
  }
  Kokkos::fence();
  result.decode_seconds = now() - t0;
  return result;
}

}  // namespace jetmoe
