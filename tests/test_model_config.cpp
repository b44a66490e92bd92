#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/deck.hpp"
#include "core/error.hpp"
#include "model/config.hpp"
#include "support.hpp"

using jetmoe::ModelConfig;
using Catch::Matchers::Contains;

namespace {
std::string write_temp(const std::string& name, const std::string& text) {
  return jetmoe::testing::write_temp_file(name, text);
}
// Config-file problems are input errors; deck-key problems are deck errors.
std::string input_error(const std::function<void()>& f, jetmoe::ErrorKind kind = jetmoe::ErrorKind::Input) {
  return jetmoe::testing::error_of(f, kind);
}
}  // namespace

TEST_CASE("jetmoe-8b parameter count equals the published checkpoint's", "[unit][model]") {
  const ModelConfig c = ModelConfig::preset("jetmoe-8b");
  // 8,522,237,952 parameters: the total the 4 bf16 safetensors shards of jetmoe/jetmoe-8b hold
  // (jetmoe-spec.md section 1), with the LM head tied to the embedding.
  CHECK(c.parameter_count() == 8522237952LL);
  CHECK(c.num_attention_heads() == 32);
  // About 2.3B active per token, 65.5M of them the embedding (spec section 1; the paper rounds to 2.2B).
  CHECK(c.active_parameter_count() > 2.25e9);
  CHECK(c.active_parameter_count() < 2.35e9);
  CHECK(ModelConfig::preset("small").parameter_count() == Approx(100e6).epsilon(0.05));
}

TEST_CASE("HF config.json: the hub's old key names and today's names", "[unit][model]") {
  // The jetmoe/jetmoe-8b config.json uses Megatron-era names (moe_num_experts, ffn_hidden_size, ...).
  const std::string hub = write_temp("hub.json", R"({
    "activation_function": "silu", "architectures": ["JetMoEForCausalLM"], "bos_token_id": 1, "eos_token_id": 2,
    "ffn_hidden_size": 5632, "hidden_size": 2048, "initializer_range": 0.01, "kv_channels": 128,
    "layer_norm_epsilon": 1e-05, "model_type": "jetmoe", "moe_num_experts": 8, "moe_top_k": 2,
    "n_positions": 4096, "num_attention_heads": 32, "num_key_value_heads": 16, "num_layers": 24,
    "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "torch_dtype": "bfloat16", "vocab_size": 32000 })");
  const ModelConfig c = ModelConfig::from_hf_config(hub, ModelConfig{});
  CHECK(c.parameter_count() == 8522237952LL);
  CHECK(c.tie_word_embeddings);  // not in the file: the class default
  CHECK(c.rms_norm_eps == 1e-5);

  const std::string hf = write_temp("hf.json", R"({"model_type": "jetmoe", "vocab_size": 101, "hidden_size": 24,
    "num_hidden_layers": 3, "num_key_value_heads": 3, "kv_channels": 6, "num_local_experts": 5,
    "num_experts_per_tok": 3, "intermediate_size": 17, "max_position_embeddings": 64, "rope_theta": 5000.0,
    "rms_norm_eps": 1e-6, "tie_word_embeddings": false})");
  const ModelConfig d = ModelConfig::from_hf_config(hf, ModelConfig{});
  CHECK(d.num_experts == 5);
  CHECK(d.top_k == 3);
  CHECK(d.num_attention_heads() == 9);
  CHECK_FALSE(d.tie_word_embeddings);
  CHECK(d.ffn_hidden_size == 17);
  CHECK_NOTHROW(d.validate(hf));
}

TEST_CASE("HF config.json errors name the file and key", "[unit][model]") {
  CHECK_THAT(input_error([] { ModelConfig::from_hf_config("/nonexistent/config.json", {}); }),
             Contains("/nonexistent/config.json: cannot open model config"));
  const std::string bad_json = write_temp("bad.json", "{\"hidden_size\": ");
  CHECK_THAT(input_error([&] { ModelConfig::from_hf_config(bad_json, {}); }), Contains("bad.json: not valid JSON"));
  const std::string wrong_type = write_temp("type.json", R"({"hidden_size": "big"})");
  CHECK_THAT(input_error([&] { ModelConfig::from_hf_config(wrong_type, {}); }),
             Contains("type.json: key 'hidden_size' must be an integer, found \"big\""));
  const std::string llama = write_temp("llama.json", R"({"model_type": "llama"})");
  CHECK_THAT(input_error([&] { ModelConfig::from_hf_config(llama, {}); }), Contains("model_type is 'llama', expected 'jetmoe'"));
  // transformers >= 5 nests rope_theta in rope_parameters; other RoPE types are not JetMoE's.
  const std::string rope = write_temp("rope.json", R"({"rope_parameters": {"rope_type": "default", "rope_theta": 500.0}})");
  CHECK(ModelConfig::from_hf_config(rope, ModelConfig::preset("tiny")).rope_theta == 500.0);
  const std::string yarn = write_temp("yarn.json", R"({"rope_parameters": {"rope_type": "yarn", "rope_theta": 500.0}})");
  CHECK_THAT(input_error([&] { ModelConfig::from_hf_config(yarn, {}); }),
             Contains("yarn.json: rope_parameters.rope_type is \"yarn\"; JetMoE uses plain RoPE"));
  const std::string heads = write_temp("heads.json", R"({"num_key_value_heads": 4, "moe_top_k": 2, "num_attention_heads": 6})");
  CHECK_THAT(input_error([&] { ModelConfig::from_hf_config(heads, ModelConfig::preset("tiny")); }),
             Contains("num_attention_heads is 6, expected num_key_value_heads x top_k = 8"));
  // Shapes whose sizes do not fit int64 (the parameter count overflowed; found by tests/fuzz).
  const std::string layers = write_temp("layers.json", R"({"num_hidden_layers": 77777777777701})");
  CHECK_THAT(input_error([&] { ModelConfig::from_hf_config(layers, ModelConfig::preset("tiny")).validate(layers); }),
             Contains("layers.json: num_layers = 77777777777701 is too large (at most 2147483647)"));
  const std::string wide = write_temp("wide.json", R"({"hidden_size": 2000000000, "vocab_size": 2000000000})");
  CHECK_THAT(input_error([&] { ModelConfig::from_hf_config(wide, ModelConfig::preset("tiny")).validate(wide); }),
             Contains("wide.json: the shape has 4e+18 parameters, more than 2^50 (1125899906842624)"));
  ModelConfig largest = ModelConfig::preset("jetmoe-8b");
  largest.num_layers = 100000;  // 3.5e13 parameters: allowed
  CHECK_NOTHROW(largest.validate("x"));
  CHECK(largest.parameter_count() == 100000 * ((ModelConfig::preset("jetmoe-8b").parameter_count() - 32000 * 2048 - 2048) / 24) +
                                         32000 * 2048 + 2048);
}

TEST_CASE("model from deck: preset, then config, then keys", "[unit][model]") {
  const std::string hf = write_temp("deck-hf.json", R"({"model_type": "jetmoe", "hidden_size": 64, "num_layers": 2})");
  auto deck = jetmoe::Deck::from_text("<model>\npreset = tiny\nconfig = " + hf + "\nnum_layers = 3\n", "m.deck");
  const ModelConfig c = ModelConfig::from_deck(deck);
  CHECK(c.hidden_size == 64);  // from config.json
  CHECK(c.num_layers == 3);    // the deck key wins
  CHECK(c.vocab_size == ModelConfig::preset("tiny").vocab_size);

  auto none = jetmoe::Deck::from_text("<model>\npreset = none\nvocab_size = 10\n", "n.deck");
  CHECK_THAT(input_error([&] { ModelConfig::from_deck(none); }, jetmoe::ErrorKind::Deck),
             Contains("<model>/hidden_size: not set, and model/preset = none gives no value"));
  auto odd = jetmoe::Deck::from_text("<model>\nhead_dim = 7\n", "o.deck");
  CHECK_THAT(input_error([&] { ModelConfig::from_deck(odd); }, jetmoe::ErrorKind::Deck),
             Contains("o.deck:2: <model>/head_dim: must be even"));
  auto missing = jetmoe::Deck::from_text("<model>\nconfig = /nonexistent.json\n", "c.deck");
  CHECK_THAT(input_error([&] { ModelConfig::from_deck(missing); }, jetmoe::ErrorKind::Deck),
             Contains("c.deck:2: <model>/config: '/nonexistent.json' does not exist"));

  // model/weights = a single .safetensors file: the shape comes from the config.json next to it.
  const jetmoe::testing::TempDir dir;
  std::ofstream(dir / "config.json") << R"({"model_type": "jetmoe", "hidden_size": 48, "num_layers": 5})";
  std::ofstream(dir / "model.safetensors") << "";  // only its existence matters here
  auto single = jetmoe::Deck::from_text("<model>\nweights = " + dir / "model.safetensors" + "\n", "s.deck");
  const ModelConfig from_single = ModelConfig::from_deck(single);
  CHECK(from_single.hidden_size == 48);
  CHECK(from_single.num_layers == 5);
}
