#include "model/load.hpp"

#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>

#include "core/deck.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/profiling.hpp"
#include "model/hf_checkpoint.hpp"

namespace jetmoe {

namespace fs = std::filesystem;

LoadedModel load_model(const Deck& deck) {
  LoadedModel m{ModelConfig::from_deck(deck), ModelWeights(), ""};
  if (const auto weights = deck.find_existing("model", "weights", Deck::PathKind::Any)) {
    log::info("loading weights from %s", weights->c_str());
    std::error_code ec;
    if (fs::path(*weights).extension() == ".h5" && !fs::is_directory(*weights, ec)) {
      const CheckpointReader checkpoint(*weights);
      m.weights = read_checkpoint_params(checkpoint, m.config);
      m.source = *weights + " (jetmoe checkpoint, step " + std::to_string(checkpoint.meta().step) + ")";
    } else {
      m.weights = load_hf_weights(*weights, m.config);
      m.source = *weights;
    }
  } else {
    const std::int64_t seed = deck.get_int("job", "seed");
    m.weights = ModelWeights(m.config);
    m.weights.init_random(m.config, std::uint64_t(seed));
    m.source = "random initialisation (seed " + std::to_string(seed) + ")";
  }
  return m;
}

ModelWeights read_checkpoint_params(const CheckpointReader& checkpoint, const ModelConfig& config) {
  Region region("read_checkpoint_params");
  ModelWeights weights(config);
  std::set<std::string> expected;
  for (const NamedTensor& t : weights.named(config)) {
    expected.insert(t.name);
    auto host = Kokkos::create_mirror_view(t.flat);
    checkpoint.read("params", t.name, t.shape, host.data());
    Kokkos::deep_copy(t.flat, host);
  }
  std::vector<std::string> unexpected;
  for (const std::string& name : checkpoint.names("params"))
    if (!expected.count(name)) unexpected.push_back(name);
  if (!unexpected.empty()) {
    std::string list;
    for (std::size_t i = 0; i < unexpected.size() && i < 5; ++i) list += (i ? ", '" : "'") + unexpected[i] + "'";
    if (unexpected.size() > 5) list += " and " + std::to_string(unexpected.size() - 5) + " more";
    fail(ErrorKind::Input, checkpoint.path() + ": " + std::to_string(unexpected.size()) +
                               " unexpected tensor(s) in /params for this JetMoE configuration: " + list +
                               " (does the model configuration match the checkpoint?)");
  }
  return weights;
}

CheckpointTensor checkpoint_tensor(const NamedTensor& t, CheckpointDType stored_as) {
  if constexpr (host_memory) {
    return {t.name, t.shape, t.flat.data(), stored_as};
  } else {
    const Vec<float> flat = t.flat;
    return {t.name, t.shape, nullptr, stored_as, [flat](float* out) { copy_to_host(flat, out); }};
  }
}

std::vector<CheckpointTensor> checkpoint_tensors(const ModelConfig& config, const ModelWeights& weights,
                                                 CheckpointDType stored_as) {
  std::vector<CheckpointTensor> tensors;
  for (const NamedTensor& t : weights.named(config)) tensors.push_back(checkpoint_tensor(t, stored_as));
  return tensors;
}

namespace {
// Whether two files hold the same bytes (false when either cannot be read).
bool same_bytes(const std::string& a, const std::string& b) {
  std::ifstream fa(a, std::ios::binary), fb(b, std::ios::binary);
  if (!fa || !fb) return false;
  return std::string(std::istreambuf_iterator<char>(fa), {}) == std::string(std::istreambuf_iterator<char>(fb), {});
}
}  // namespace

std::optional<io::Tokenizer> load_tokenizer(const Deck& deck, const ModelConfig& config, bool required) {
  std::string path, next_to_weights;
  if (const auto w = deck.find_string("model", "weights")) {
    std::error_code ec;
    const fs::path next_to = fs::path(fs::is_directory(*w, ec) ? *w : fs::path(*w).parent_path().string()) / "tokenizer.model";
    if (fs::is_regular_file(next_to, ec)) next_to_weights = next_to.string();
  }
  if (const auto p = deck.find_existing("tokenizer", "model", Deck::PathKind::File)) {
    path = *p;
    // The deck's tokenizer wins; one that differs from the model's own is most likely a deck shared
    // with another model (a wrong tokenizer still fits any model with as many embeddings).
    std::error_code ec;
    if (!next_to_weights.empty() && !fs::equivalent(path, next_to_weights, ec) && !same_bytes(path, next_to_weights))
      log::warn("tokenizer/model = %s (%s) is used, not the model's own %s, which differs; remove tokenizer/model "
                "from the deck to use the model's",
                path.c_str(), deck.origin("tokenizer", "model").c_str(), next_to_weights.c_str());
  } else {
    path = next_to_weights;
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
