#pragma once
// What jetmoe-generate, jetmoe-eval and jetmoe-convert share: the model and tokenizer a deck names.
#include <memory>
#include <optional>
#include <string>

#include "io/tokenizer.hpp"
#include "model/config.hpp"
#include "model/weights.hpp"

namespace jetmoe {

class Deck;

struct LoadedModel {
  ModelConfig config;
  ModelWeights weights;
  std::string source;  // "jetmoe/jetmoe-8b (safetensors)" or "random initialisation (seed N)"
};

// <model>: shape from preset/config/keys (config.json next to model/weights wins over the preset);
// weights from model/weights (a Hugging Face checkpoint directory or .safetensors file) or random
// initialisation from job/seed.
LoadedModel load_model(const Deck& deck);

// <tokenizer>/model, else tokenizer.model next to model/weights; nullopt when neither exists and
// `required` is false. A tokenizer with more pieces than the model has embeddings is an error.
std::optional<io::Tokenizer> load_tokenizer(const Deck& deck, const ModelConfig& config, bool required);

}  // namespace jetmoe
