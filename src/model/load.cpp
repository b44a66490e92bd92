#include "model/load.hpp"

#include <filesystem>
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
  if (const auto weights = deck.find_string("model", "weights")) {
    if (!fs::exists(*weights)) deck.fail_value("model", "weights", "'" + *weights + "' does not exist");
    log::info("loading weights from %s", weights->c_str());
    if (fs::path(*weights).extension() == ".h5" && !fs::is_directory(*weights)) {
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

std::vector<CheckpointTensor> checkpoint_tensors(const ModelConfig& config, const ModelWeights& weights,
                                                 std::vector<std::vector<float>>& storage, CheckpointDType stored_as) {
  const std::vector<NamedTensor> named = weights.named(config);
  storage.assign(named.size(), {});
  std::vector<CheckpointTensor> tensors;
  using Space = Vec<float>::memory_space;
  for (std::size_t i = 0; i < named.size(); ++i) {
    const float* data = named[i].flat.data();
    if (!Kokkos::SpaceAccessibility<Kokkos::HostSpace, Space>::accessible) {  // device memory: copy to the host
      auto host = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), named[i].flat);
      storage[i].assign(host.data(), host.data() + host.size());
      data = storage[i].data();
    }
    tensors.push_back({named[i].name, named[i].shape, data, stored_as});
  }
  return tensors;
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
