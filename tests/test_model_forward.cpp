// Whole-model properties that need no oracle: incremental decoding with the KV cache reproduces the
// full forward, and left padding does not change a sequence's logits.
#include <catch2/catch.hpp>

#include <cmath>
#include <random>

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
