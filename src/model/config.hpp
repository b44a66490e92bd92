#pragma once
// The JetMoE architecture's shape (jetmoe-spec.md section 1). Built from a preset, a Hugging Face
// config.json (today's key names and the hub's older ones) and the deck's <model> keys, in that order.
#include <cstdint>
#include <string>

namespace jetmoe {

class Deck;

struct ModelConfig {
  std::int64_t vocab_size = 0;
  std::int64_t hidden_size = 0;              // D
  std::int64_t num_layers = 0;               // L
  std::int64_t num_kv_heads = 0;             // H_kv (shared K/V heads)
  std::int64_t head_dim = 0;                 // d (kv_channels)
  std::int64_t num_experts = 0;              // E (MoA and MoE)
  std::int64_t top_k = 0;                    // k
  std::int64_t ffn_hidden_size = 0;          // F (per expert)
  std::int64_t max_position_embeddings = 0;
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-5;                // final norm
  double block_norm_eps = 1e-6;              // the two norms in each block (HF builds them without eps)
  double initializer_range = 0.01;
  bool tie_word_embeddings = true;
  std::int64_t bos_token_id = 1;
  std::int64_t eos_token_id = 2;

  std::int64_t num_attention_heads() const { return num_kv_heads * top_k; }
  std::int64_t attention_width() const { return num_kv_heads * head_dim; }  // A
  // Parameters stored (tied head counted once) and used per token (top_k of num_experts experts).
  std::int64_t parameter_count() const;
  std::int64_t active_parameter_count() const;

  // Throws ErrorKind::Input naming `where` when the shape is inconsistent.
  void validate(const std::string& where) const;

  // "tiny", "small", "jetmoe-8b"; throws ErrorKind::Internal for other names.
  static ModelConfig preset(const std::string& name);
  // Reads a Hugging Face config.json on top of `base`. Unknown keys are ignored (HF writes many);
  // known keys of the wrong type are an ErrorKind::Input naming the file and key.
  static ModelConfig from_hf_config(const std::string& path, const ModelConfig& base);
  // The same from config.json text; `where` names its origin in errors (a file, or a checkpoint's
  // /meta/model_config_json).
  static ModelConfig from_hf_config_text(const std::string& text, const std::string& where, const ModelConfig& base);
  // preset -> config.json (model/config, or model/weights/config.json, or the model_config_json of a
  // jetmoe checkpoint model/weights = FILE.h5) -> <model> keys; validated.
  static ModelConfig from_deck(const Deck& deck);

  std::string summary() const;  // one line: "L=24 D=2048 E=8 k=2 ... 8.52B parameters, 2.27B active"
};

}  // namespace jetmoe
