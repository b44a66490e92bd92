#include "model/config.hpp"

#include <nlohmann/json.hpp>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>

#include "core/deck.hpp"
#include "core/error.hpp"
#include "core/strings.hpp"
#include "io/checkpoint.hpp"

namespace jetmoe {

namespace {
[[noreturn]] void input_error(const std::string& where, const std::string& message) {
  fail(ErrorKind::Input, where + ": " + message);
}
}  // namespace

namespace {
// Parameters stored, or used per token (top_k of num_experts experts), in T: int64 for the counts,
// long double to check that a shape's count fits before computing it in int64.
template <class T>
T count_parameters(const ModelConfig& c, bool active) {
  const T D = T(c.hidden_size), A = T(c.num_kv_heads) * T(c.head_dim), E = T(c.num_experts), F = T(c.ffn_hidden_size);
  const T used = active ? T(c.top_k) : E;  // experts whose weights count
  const T per_layer = 2 * D                                  // two RMSNorm weights
                      + E * D + 2 * used * A * D + D         // MoA router, W_q and W_o experts, bias
                      + 2 * A * D                            // shared K/V projection
                      + E * D + used * 3 * F * D + D;        // MoE router, experts (2F x D in, D x F out), bias
  return T(c.vocab_size) * D * T(c.tie_word_embeddings ? 1 : 2) + T(c.num_layers) * per_layer + D;
}
}  // namespace

std::int64_t ModelConfig::parameter_count() const { return count_parameters<std::int64_t>(*this, false); }
std::int64_t ModelConfig::active_parameter_count() const { return count_parameters<std::int64_t>(*this, true); }

void ModelConfig::validate(const std::string& where) const {
  // Each dimension positive and below 2^31, and at most 2^50 parameters (about 10^15, over 10^5 x
  // JetMoE-8B): every size computed from the shape then fits int64, and token ids and positions int32.
  const std::int64_t max_dim = std::numeric_limits<std::int32_t>::max();
  auto dimension = [&](std::int64_t v, const char* name) {
    if (v <= 0) input_error(where, std::string(name) + " must be positive, found " + std::to_string(v));
    if (v > max_dim)
      input_error(where, std::string(name) + " = " + std::to_string(v) + " is too large (at most " +
                             std::to_string(max_dim) + ")");
  };
  dimension(vocab_size, "vocab_size");
  dimension(hidden_size, "hidden_size");
  dimension(num_layers, "num_layers");
  dimension(num_kv_heads, "num_kv_heads");
  dimension(head_dim, "head_dim");
  dimension(num_experts, "num_experts");
  dimension(top_k, "top_k");
  dimension(ffn_hidden_size, "ffn_hidden_size");
  dimension(max_position_embeddings, "max_position_embeddings");
  const long double params = count_parameters<long double>(*this, false);
  if (params > std::ldexp(1.0L, 50)) {
    char count[32];
    std::snprintf(count, sizeof count, "%.3Lg", params);
    input_error(where, std::string("the shape has ") + count + " parameters, more than 2^50 (" +
                           std::to_string(std::int64_t(1) << 50) + ")");
  }
  if (head_dim % 2 != 0)
    input_error(where, "head_dim must be even (half-split RoPE), found " + std::to_string(head_dim));
  if (top_k > num_experts)
    input_error(where, "top_k (" + std::to_string(top_k) + ") is larger than num_experts (" +
                           std::to_string(num_experts) + ")");
  if (!(rope_theta > 0)) input_error(where, "rope_theta must be positive");
  if (!(rms_norm_eps > 0) || !(block_norm_eps > 0)) input_error(where, "RMSNorm eps must be positive");
  if (!(initializer_range > 0)) input_error(where, "initializer_range must be positive");
  if (bos_token_id < 0 || bos_token_id >= vocab_size || eos_token_id < 0 || eos_token_id >= vocab_size)
    input_error(where, "bos/eos token ids (" + std::to_string(bos_token_id) + ", " + std::to_string(eos_token_id) +
                           ") must lie in [0, vocab_size=" + std::to_string(vocab_size) + ")");
}

ModelConfig ModelConfig::preset(const std::string& name) {
  ModelConfig c;
  if (name == "tiny") {  // the CPU main job: trains in minutes on 2 cores
    c.vocab_size = 4096, c.hidden_size = 128, c.num_layers = 4, c.num_kv_heads = 4, c.head_dim = 16;
    c.num_experts = 4, c.top_k = 2, c.ffn_hidden_size = 256, c.max_position_embeddings = 512;
  } else if (name == "small") {  // ~100M parameters, JetMoE-shaped: the CPU benchmark model
    c.vocab_size = 32000, c.hidden_size = 512, c.num_layers = 6, c.num_kv_heads = 8, c.head_dim = 64;
    c.num_experts = 8, c.top_k = 2, c.ffn_hidden_size = 768, c.max_position_embeddings = 2048;
  } else if (name == "jetmoe-8b") {  // jetmoe/jetmoe-8b config.json
    c.vocab_size = 32000, c.hidden_size = 2048, c.num_layers = 24, c.num_kv_heads = 16, c.head_dim = 128;
    c.num_experts = 8, c.top_k = 2, c.ffn_hidden_size = 5632, c.max_position_embeddings = 4096;
  } else {
    fail(ErrorKind::Internal, "unknown model preset '" + name + "'");
  }
  return c;
}

ModelConfig ModelConfig::from_hf_config(const std::string& path, const ModelConfig& base) {
  std::ifstream in(path);
  if (!in) input_error(path, std::string("cannot open model config: ") + std::strerror(errno));
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return from_hf_config_text(text, path, base);
}

ModelConfig ModelConfig::from_hf_config_text(const std::string& text, const std::string& path, const ModelConfig& base) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    input_error(path, std::string("not valid JSON: ") + e.what());
  }
  if (!j.is_object()) input_error(path, "expected a JSON object");
  if (j.contains("model_type") && j["model_type"].is_string() && j["model_type"] != "jetmoe")
    input_error(path, "model_type is " + jetmoe::quoted(j["model_type"].get<std::string>()) + ", expected 'jetmoe'");

  ModelConfig c = base;
  // Today's HF names first, then the hub checkpoints' older names (jetmoe-spec.md section 1).
  auto read_int = [&](std::int64_t& field, std::initializer_list<const char*> names) {
    for (const char* n : names) {
      if (!j.contains(n) || j[n].is_null()) continue;
      if (!j[n].is_number_integer()) input_error(path, std::string("key '") + n + "' must be an integer, found " + j[n].dump());
      field = j[n].get<std::int64_t>();
      return;
    }
  };
  auto read_real = [&](double& field, std::initializer_list<const char*> names) {
    for (const char* n : names) {
      if (!j.contains(n) || j[n].is_null()) continue;
      if (!j[n].is_number()) input_error(path, std::string("key '") + n + "' must be a number, found " + j[n].dump());
      field = j[n].get<double>();
      return;
    }
  };
  read_int(c.vocab_size, {"vocab_size"});
  read_int(c.hidden_size, {"hidden_size", "n_embd"});
  read_int(c.num_layers, {"num_hidden_layers", "num_layers", "n_layer"});
  read_int(c.num_kv_heads, {"num_key_value_heads"});
  read_int(c.head_dim, {"kv_channels", "head_dim"});
  read_int(c.num_experts, {"num_local_experts", "moe_num_experts"});
  read_int(c.top_k, {"num_experts_per_tok", "moe_top_k"});
  read_int(c.ffn_hidden_size, {"intermediate_size", "ffn_hidden_size"});
  read_int(c.max_position_embeddings, {"max_position_embeddings", "n_positions"});
  read_int(c.bos_token_id, {"bos_token_id"});
  read_int(c.eos_token_id, {"eos_token_id"});
  read_real(c.rope_theta, {"rope_theta"});
  // transformers >= 5 writes RoPE settings as "rope_parameters": {"rope_type": "default", "rope_theta": ...}.
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) {
    const auto& rp = j["rope_parameters"];
    if (rp.contains("rope_type") && rp["rope_type"] != "default")
      input_error(path, "rope_parameters.rope_type is " + rp["rope_type"].dump() +
                            "; JetMoE uses plain RoPE ('default') and no other is implemented");
    if (rp.contains("rope_theta")) {
      if (!rp["rope_theta"].is_number()) input_error(path, "key 'rope_parameters.rope_theta' must be a number");
      c.rope_theta = rp["rope_theta"].get<double>();
    }
  }
  read_real(c.rms_norm_eps, {"rms_norm_eps"});
  read_real(c.initializer_range, {"initializer_range"});
  if (j.contains("tie_word_embeddings") && !j["tie_word_embeddings"].is_null()) {
    if (!j["tie_word_embeddings"].is_boolean()) input_error(path, "key 'tie_word_embeddings' must be true or false");
    c.tie_word_embeddings = j["tie_word_embeddings"].get<bool>();
  } else {
    c.tie_word_embeddings = true;  // the HF class default; jetmoe-8b's config does not set it
  }
  // HF derives num_attention_heads = num_key_value_heads * top_k; a config that says otherwise is
  // not a JetMoE shape we can reproduce.
  if (j.contains("num_attention_heads") && j["num_attention_heads"].is_number_integer() &&
      j["num_attention_heads"].get<std::int64_t>() != c.num_attention_heads())
    input_error(path, "num_attention_heads is " + j["num_attention_heads"].dump() + ", expected num_key_value_heads x top_k = " +
                          std::to_string(c.num_attention_heads()));
  return c;
}

ModelConfig ModelConfig::from_deck(const Deck& deck) {
  const std::string preset_name = deck.get_string("model", "preset");
  ModelConfig c;
  if (preset_name != "none") c = preset(preset_name);

  std::string where = deck.source() + " <model>";
  if (auto config = deck.find_existing("model", "config", Deck::PathKind::File)) {
    c = from_hf_config(*config, c);
    where = *config + " with " + where;
  } else if (auto weights = deck.find_string("model", "weights")) {
    // A checkpoint directory's config.json, or the one next to a single .safetensors file.
    // (Not checked here: a deck is validated where its files may not be. A path the file system
    // refuses is reported when the weights are loaded.)
    const std::filesystem::path w(*weights);
    std::error_code ec;
    const bool single_file = w.extension() == ".safetensors" && std::filesystem::is_regular_file(w, ec);
    const auto cfg = (single_file ? w.parent_path() : w) / "config.json";
    if ((single_file || std::filesystem::is_directory(w, ec)) && std::filesystem::exists(cfg, ec)) {
      c = from_hf_config(cfg.string(), c);
      where = cfg.string() + " with " + where;
    } else if (w.extension() == ".h5" && std::filesystem::is_regular_file(w, ec)) {
      // A jetmoe checkpoint carries the config.json of the model it holds.
      const std::string in_checkpoint = *weights + ":/meta/model_config_json";
      c = from_hf_config_text(CheckpointReader(*weights).meta().model_config_json, in_checkpoint, c);
      where = in_checkpoint + " with " + where;
    }
  }

  auto take_int = [&](std::int64_t& field, const char* key) {
    if (auto v = deck.find_int("model", key)) field = *v;
    else if (field == 0) deck.fail_value("model", key, "not set, and model/preset = none gives no value");
  };
  take_int(c.vocab_size, "vocab_size");
  take_int(c.hidden_size, "hidden_size");
  take_int(c.num_layers, "num_layers");
  take_int(c.num_kv_heads, "num_kv_heads");
  take_int(c.head_dim, "head_dim");
  take_int(c.num_experts, "num_experts");
  take_int(c.top_k, "top_k");
  take_int(c.ffn_hidden_size, "ffn_hidden_size");
  take_int(c.max_position_embeddings, "max_position_embeddings");
  if (auto v = deck.find_real("model", "rope_theta")) c.rope_theta = *v;
  if (auto v = deck.find_real("model", "rms_norm_eps")) c.rms_norm_eps = *v;
  if (auto v = deck.find_real("model", "initializer_range")) c.initializer_range = *v;
  if (auto v = deck.find_bool("model", "tie_word_embeddings")) c.tie_word_embeddings = *v;
  c.block_norm_eps = deck.get_real("model", "block_norm_eps");
  if (c.top_k > c.num_experts)
    deck.fail_value("model", deck.is_set("model", "top_k") ? "top_k" : "num_experts",
                    "top_k = " + std::to_string(c.top_k) + " exceeds num_experts = " + std::to_string(c.num_experts));
  if (c.head_dim % 2 != 0) deck.fail_value("model", "head_dim", "must be even (half-split RoPE), found " + std::to_string(c.head_dim));
  c.validate(where);
  return c;
}

std::string ModelConfig::summary() const {
  char buf[512];
  std::snprintf(buf, sizeof buf,
                "L=%lld D=%lld heads=%lldx%lld (kv %lld) d=%lld E=%lld k=%lld F=%lld V=%lld ctx=%lld; %.1fM parameters, "
                "%.1fM active",
                (long long)num_layers, (long long)hidden_size, (long long)num_kv_heads, (long long)top_k,
                (long long)num_kv_heads, (long long)head_dim, (long long)num_experts, (long long)top_k,
                (long long)ffn_hidden_size, (long long)vocab_size, (long long)max_position_embeddings,
                parameter_count() / 1e6, active_parameter_count() / 1e6);
  return buf;
}

}  // namespace jetmoe
