// Whole-model properties that need no oracle: incremental decoding with the KV cache reproduces the
// full forward, and left padding does not change a sequence's logits.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <algorithm>
#include <random>

#include "core/error.hpp"
#include "infer/device_generate.hpp"
#include "infer/generate.hpp"
#include "model/model.hpp"

using namespace jetmoe;

namespace {
ModelConfig small_config() {
  ModelConfig c = ModelConfig::preset("tiny");
  c.vocab_size = 97, c.hidden_size = 24, c.num_layers = 2, c.num_kv_heads = 2, c.head_dim = 6;
  c.num_experts = 4, c.top_k = 2, c.ffn_hidden_size = 20, c.max_position_embeddings = 64;
  c.initializer_range = 0.2;  // large enough that routing differs between tokens
  return c;
}

IntView2 random_ids(int B, int T, int vocab, unsigned seed) {
  IntView2 ids("ids", B, T);
  auto h = Kokkos::create_mirror_view(ids);
  std::mt19937 rng(seed);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) h(b, t) = int(rng() % unsigned(vocab));
  Kokkos::deep_copy(ids, h);
  return ids;
}
}  // namespace

TEST_CASE("incremental decode with the KV cache equals the full forward", "[unit][model]") {
  const ModelConfig c = small_config();
  ModelWeights w(c);
  w.init_random(c, 7);
  Model model(c, w);
  const int B = 2, T = 9, P = 4;
  const IntView2 ids = random_ids(B, T, int(c.vocab_size), 3);

  KvCache full_cache(c, B, T);
  View2 full("full", B * T, c.vocab_size);
  model.forward(ids, full_cache, full);
  auto hf = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), full);

  KvCache cache(c, B, T);
  View2 prefill("prefill", B * P, c.vocab_size);
  IntView2 prompt("prompt", B, P);
  Kokkos::deep_copy(prompt, Kokkos::subview(ids, Kokkos::ALL(), std::make_pair(0, P)));
  model.forward(prompt, cache, prefill);
  auto hp = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), prefill);
  double worst = 0;
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < P; ++t)
      for (int v = 0; v < c.vocab_size; ++v) worst = std::max(worst, double(std::fabs(hp(b * P + t, v) - hf(b * T + t, v))));
  for (int t = P; t < T; ++t) {
    View2 step("step", B, c.vocab_size);
    IntView2 one("one", B, 1);
    Kokkos::deep_copy(one, Kokkos::subview(ids, Kokkos::ALL(), std::make_pair(t, t + 1)));
    model.forward(one, cache, step);
    auto hs = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), step);
    for (int b = 0; b < B; ++b)
      for (int v = 0; v < c.vocab_size; ++v) worst = std::max(worst, double(std::fabs(hs(b, v) - hf(b * T + t, v))));
  }
  CHECK(cache.length == T);
  CHECK(worst < 1e-5);
}

TEST_CASE("logits of the last positions only are those rows of the full logits", "[unit][model]") {
  const ModelConfig c = small_config();
  ModelWeights w(c);
  w.init_random(c, 9);
  Model model(c, w);
  const int B = 3, T = 7;
  const IntView2 ids = random_ids(B, T, int(c.vocab_size), 4);
  // Left padding as generate() lays it out: sequence b starts at column b.
  IntView2 positions("positions", B, T);
  IntView1 key_start("key_start", B);
  auto hpos = Kokkos::create_mirror_view(positions);
  auto hstart = Kokkos::create_mirror_view(key_start);
  for (int b = 0; b < B; ++b) {
    hstart(b) = b;
    for (int t = 0; t < T; ++t) hpos(b, t) = std::max(0, t - b);
  }
  Kokkos::deep_copy(positions, hpos);
  Kokkos::deep_copy(key_start, hstart);

  KvCache all_cache(c, B, T + 2), last_cache(c, B, T + 2);
  View2 all("all", B * T, c.vocab_size), last("last", B, c.vocab_size);
  model.forward(ids, positions, key_start, all_cache, all);
  model.forward(ids, positions, key_start, last_cache, last);
  auto ha = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), all);
  auto hl = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), last);
  double worst = 0, largest = 0;
  for (int b = 0; b < B; ++b)
    for (int v = 0; v < c.vocab_size; ++v) {
      worst = std::max(worst, double(std::fabs(hl(b, v) - ha((b + 1) * T - 1, v))));
      largest = std::max(largest, double(std::fabs(ha((b + 1) * T - 1, v))));
    }
  CHECK(largest > 0.1);  // logits of a scale where a wrong row would show
  CHECK(worst < 1e-5);
  // Both caches hold the same keys and values.
  CHECK(last_cache.length == T);
  for (std::size_t l = 0; l < all_cache.k.size(); ++l) {
    auto ka = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), all_cache.k[l]);
    auto kl = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), last_cache.k[l]);
    auto va = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), all_cache.v[l]);
    auto vl = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), last_cache.v[l]);
    for (std::size_t i = 0; i < std::size_t(B) * T * c.num_kv_heads * c.head_dim; ++i) {
      const std::size_t b = i / (std::size_t(T) * c.num_kv_heads * c.head_dim),
                        rest = i % (std::size_t(T) * c.num_kv_heads * c.head_dim);
      const std::size_t at = b * std::size_t(T + 2) * c.num_kv_heads * c.head_dim + rest;
      REQUIRE(ka.data()[at] == kl.data()[at]);
      REQUIRE(va.data()[at] == vl.data()[at]);
    }
  }
  // A logits view of neither shape is a programming error, caught before anything runs.
  KvCache other(c, B, T);
  View2 wrong("wrong", B + 1, c.vocab_size);
  CHECK_THROWS(model.forward(ids, positions, key_start, other, wrong));
  CHECK(other.length == 0);
}

TEST_CASE("token ids outside the vocabulary are an input error", "[unit][model]") {
  const ModelConfig c = small_config();
  Model model(c, ModelWeights(c));
  IntView2 ids("ids", 1, 2);
  Kokkos::deep_copy(ids, int(c.vocab_size));
  KvCache cache(c, 1, 2);
  View2 logits("logits", 2, c.vocab_size);
  CHECK_THROWS_WITH(model.forward(ids, cache, logits), Catch::Matchers::Contains("outside the model's vocabulary [0, 97)"));
  KvCache small(c, 1, 1);
  Kokkos::deep_copy(ids, 1);
  CHECK_THROWS_WITH(model.forward(ids, small, logits), Catch::Matchers::Contains("KV cache holds 1 sequences x 1 tokens"));
}

TEST_CASE("a left-padded batch generates what each prompt generates alone", "[unit][model]") {
  const ModelConfig c = small_config();
  ModelWeights w(c);
  w.init_random(c, 11);
  Model model(c, w);
  const std::vector<std::vector<std::int32_t>> prompts = {{1, 5, 9, 33, 2, 70, 12}, {1, 44, 3}, {1, 8, 8, 8, 60}};
  GenerationParams params;
  params.max_new_tokens = 8;
  params.eos_id = -1;
  const GenerationResult batch = generate(model, prompts, params);
  for (std::size_t b = 0; b < prompts.size(); ++b) {
    INFO("prompt " << b);
    const GenerationResult alone = generate(model, {prompts[b]}, params);
    CHECK(batch.tokens[b] == alone.tokens[0]);
  }
  CHECK(batch.generated_tokens == 24);
  CHECK(batch.prompt_tokens == 15);
}

TEST_CASE("generation stops a sequence at EOS and samples reproducibly", "[unit][model]") {
  const ModelConfig c = small_config();
  ModelWeights w(c);
  w.init_random(c, 5);
  Model model(c, w);
  GenerationParams params;
  params.max_new_tokens = 12;
  params.eos_id = -1;
  const auto greedy = generate(model, {{1, 2, 3}}, params).tokens[0];
  // Make the 4th greedy token the EOS id: generation must stop right after producing it.
  params.eos_id = greedy.at(3);
  const auto stopped = generate(model, {{1, 2, 3}}, params).tokens[0];
  const auto first_eos = std::find(greedy.begin(), greedy.end(), params.eos_id) - greedy.begin();
  CHECK(std::int64_t(stopped.size()) == first_eos + 1);
  // Sampling: the same seed gives the same tokens; top_k = 1 is greedy whatever the temperature.
  params.eos_id = -1;
  params.sampling.temperature = 1.5;
  params.sampling.seed = 99;
  const auto s1 = generate(model, {{1, 2, 3}}, params).tokens[0];
  const auto s2 = generate(model, {{1, 2, 3}}, params).tokens[0];
  CHECK(s1 == s2);
  params.sampling.top_k = 1;
  CHECK(generate(model, {{1, 2, 3}}, params).tokens[0] == greedy);
  params.sampling.top_k = 0;
  params.sampling.top_p = 1e-6;  // nucleus of one token: greedy again
  CHECK(generate(model, {{1, 2, 3}}, params).tokens[0] == greedy);
}

TEST_CASE("each prompt samples from its own stream: alone, given its index, it samples what it does in the batch",
          "[unit][model]") {
  const ModelConfig c = small_config();
  ModelWeights w(c);
  w.init_random(c, 11);
  Model model(c, w);
  const std::vector<std::vector<std::int32_t>> prompts = {{1, 5, 9, 33}, {1, 44, 3}, {1, 8, 8, 8, 60}, {1, 5, 9, 33}};
  GenerationParams params;
  params.max_new_tokens = 10;
  params.eos_id = -1;
  params.sampling.temperature = 1.5;
  params.sampling.seed = 2024;
  const GenerationResult batch = generate(model, prompts, params);
  for (std::size_t b = 0; b < prompts.size(); ++b) {
    INFO("prompt " << b);
    GenerationParams alone = params;
    alone.prompt_index = {b};
    CHECK(generate(model, {prompts[b]}, alone).tokens[0] == batch.tokens[b]);
  }
  // A rank given prompts 3 and 1 of the job (in that order) samples what the whole batch did for them.
  GenerationParams share = params;
  share.prompt_index = {3, 1};
  const GenerationResult part = generate(model, {prompts[3], prompts[1]}, share);
  CHECK(part.tokens[0] == batch.tokens[3]);
  CHECK(part.tokens[1] == batch.tokens[1]);
  // Prompts 0 and 3 are the same text: their own streams give them different samples (10 tokens at
  // temperature 1.5 over a 97-token vocabulary).
  CHECK(batch.tokens[0] != batch.tokens[3]);
  CHECK(prompt_seed(2024, 0) != prompt_seed(2024, 1));
  CHECK(prompt_seed(2024, 0) != prompt_seed(2025, 0));
  share.prompt_index = {0};
  CHECK_THROWS_AS(generate(model, {prompts[3], prompts[1]}, share), jetmoe::Error);  // one index per prompt
}

TEST_CASE("the GPU prefill's batches: longest first, within the token budget, every prompt once", "[unit][model]") {
  // Lengths 3, 7, 1, 7, 5, 2 (prompt order): longest first, equal lengths in prompt order.
  const std::vector<std::vector<std::int32_t>> prompts = {std::vector<std::int32_t>(3, 1), std::vector<std::int32_t>(7, 1),
                                                          std::vector<std::int32_t>(1, 1), std::vector<std::int32_t>(7, 1),
                                                          std::vector<std::int32_t>(5, 1), std::vector<std::int32_t>(2, 1)};
  using Batches = std::vector<std::pair<std::size_t, std::size_t>>;
  const PrefillPlan a = plan_prefill(prompts, 16);
  CHECK(a.order == std::vector<std::size_t>{1, 3, 4, 0, 5, 2});
  // 2 x 7 = 14 <= 16 (a third would pad to 21); 3 x 5 = 15 (a fourth: 20); then 2 and 1.
  CHECK(a.batches == Batches{{0, 2}, {2, 5}, {5, 6}});
  // A budget below the longest prompt: one prompt per batch.
  CHECK(plan_prefill(prompts, 1).batches == Batches{{0, 1}, {1, 2}, {2, 3}, {3, 4}, {4, 5}, {5, 6}});
  // A large budget: one batch.
  CHECK(plan_prefill(prompts, 1000).batches == Batches{{0, 6}});
  CHECK(plan_prefill({}, 8).batches.empty());
}

TEST_CASE("jetmoe-generate's results file: settings, then each prompt with why it stopped", "[unit][model]") {
  GenerationSettings settings;
  settings.model = "/models/a \"b\"";
  settings.tokenizer = "tok.model";
  settings.precision = "fp32";
  settings.matrix_products = "host BLAS X";
  settings.chat = true;
  settings.system = "Be brief.";
  settings.params.max_new_tokens = 3;
  settings.params.eos_id = 2;
  settings.params.sampling.temperature = 0.7;
  settings.params.sampling.top_k = 40;
  settings.params.sampling.top_p = 0.9;
  settings.params.sampling.seed = 7;
  std::vector<GenerationRecord> records(3);
  records[0] = {"tab\tand \\ quote\"", 5, {11, 12, 2}, " answer"};  // stopped at EOS
  records[1] = {"x", 2, {13, 14, 15}, "\xE2\x98"};              // at max_new_tokens; cut inside a character
  records[2] = {"y", 1, {2}, ""};                                  // EOS at once
  const auto j = nlohmann::json::parse(generation_results_json(settings, records));  // strict: throws if not JSON
  CHECK(j.at("task") == "generate");
  CHECK(j.at("model") == "/models/a \"b\"");
  CHECK(j.at("chat") == true);
  CHECK(j.at("system") == "Be brief.");
  CHECK(j.at("max_new_tokens") == 3);
  CHECK(j.at("temperature").get<double>() == 0.7);  // to the bit
  CHECK(j.at("top_p").get<double>() == 0.9);
  CHECK(j.at("seed") == 7);
  const auto& g = j.at("generations");
  REQUIRE(g.size() == 3);
  CHECK(g[0].at("prompt") == "tab\tand \\ quote\"");
  CHECK(g[0].at("completion") == " answer");
  CHECK(g[0].at("prompt_tokens") == 5);
  CHECK(g[0].at("completion_tokens") == 3);
  CHECK(g[0].at("finish_reason") == "eos");
  CHECK(g[0].at("completion_ids") == nlohmann::json::array({11, 12, 2}));
  CHECK(g[1].at("finish_reason") == "length");
  CHECK(g[1].at("completion") == "\xEF\xBF\xBD");  // invalid UTF-8 written as U+FFFD, not refused
  CHECK(g[2].at("finish_reason") == "eos");
  CHECK(g[2].at("completion_tokens") == 1);
  settings.system.reset();
  settings.params.eos_id = -1;  // never stops early: a last token equal to 2 is not an EOS
  const auto k = nlohmann::json::parse(generation_results_json(settings, records));
  CHECK(k.at("system").is_null());
  CHECK(k.at("generations")[0].at("finish_reason") == "length");
}
