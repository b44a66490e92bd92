#include "model/load.hpp"

#include <filesystem>

#include "core/deck.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "model/hf_checkpoint.hpp"

namespace jetmoe {

namespace fs = std::filesystem;

LoadedModel load_model(const Deck& deck) {
  LoadedModel m{ModelConfig::from_deck(deck), ModelWeights(), ""};
  if (const auto weights = deck.find_string("model", "weights")) {
    if (!fs::exists(*weights)) deck.fail_value("model", "weights", "'" + *weights + "' does not exist");
    const bool hdf5 = fs::path(*weights).extension() == ".h5";
    if (hdf5)
      deck.fail_value("model", "weights", "'" + *weights + "' is a jetmoe HDF5 checkpoint; this version reads Hugging Face "
                                          "safetensors checkpoints only");
    log::info("loading weights from %s", weights->c_str());
    m.weights = load_hf_weights(*weights, m.config);
    m.source = *weights;
  } else {
    const std::int64_t seed = deck.get_int("job", "seed");
    m.weights = ModelWeights(m.config);
    m.weights.init_random(m.config, std::uint64_t(seed));
    m.source = "random initialisation (seed " + std::to_string(seed) + ")";
  }
  return m;
}

std::optional<io::Tokenizer> load_tokenizer(const Deck& deck, const ModelConfig& config, bool required) {
  std::string path;
  if (const auto p = deck.find_string("tokenizer", "model")) {
    if (!fs::exists(*p)) deck.fail_value("tokenizer", "model", "'" + *p + "' does not exist");
    path = *p;
  } else if (const auto w = deck.find_string("model", "weights")) {
    const fs::path next_to = fs::path(fs::is_directory(*w) ? *w : fs::path(*w).parent_path().string()) / "tokenizer.model";
    if (fs::exists(next_to)) path = next_to.string();
  }
  if (path.empty()) {
    if (!required) return std::nullopt;
    deck.fail_value("tokenizer", "model", "no tokenizer: set tokenizer/model, or put tokenizer.model next to model/weights");
  }
  io::Tokenizer tok(path);
  if (tok.vocab_size() > config.vocab_size)
    fail(ErrorKind::Input, path + ": the tokenizer has " + std::to_string(tok.vocab_size()) +
                               " pieces but the model only " + std::to_string(config.vocab_size) +
                               " embeddings (vocab_size): tokenizer and model do not belong together");
  return tok;
}

}  // namespace jetmoe
