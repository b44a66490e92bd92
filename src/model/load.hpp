#pragma once
// What jetmoe-generate, jetmoe-eval and jetmoe-convert share: the model and tokenizer a deck names.
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "io/checkpoint.hpp"
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

// <model>: shape from preset/config/keys (config.json next to model/weights, or the config stored in
// a jetmoe checkpoint, wins over the preset); weights from model/weights (a Hugging Face checkpoint
// directory or .safetensors file, or a jetmoe HDF5 checkpoint FILE.h5: its /params) or random
// initialisation from job/seed.
LoadedModel load_model(const Deck& deck);

// The /params group of a jetmoe HDF5 checkpoint as the weights of `config`. A missing tensor, a
// wrong shape, a bad checksum or a tensor `config` does not have is one ErrorKind::Input naming the
// file and the tensor.
ModelWeights read_checkpoint_params(const CheckpointReader& checkpoint, const ModelConfig& config);

// One tensor for write_checkpoint: its `data` points into `t.flat` when that is host-accessible;
// otherwise (GPU memory) the writer copies it to the host when it reaches it (`fill`), so a checkpoint
// never holds host copies of more than one tensor at a time. `t.flat` is shared by the result.
CheckpointTensor checkpoint_tensor(const NamedTensor& t, CheckpointDType stored_as = CheckpointDType::F32);

// Every parameter as a CheckpointTensor (group "params"; the same names and shapes fit the AdamW
// moments), as checkpoint_tensor makes them; `weights` must outlive the write.
std::vector<CheckpointTensor> checkpoint_tensors(const ModelConfig& config, const ModelWeights& weights,
                                                 CheckpointDType stored_as = CheckpointDType::F32);

// <tokenizer>/model, else tokenizer.model next to model/weights; nullopt when neither exists and
// `required` is false. A tokenizer with more pieces than the model has embeddings is an error.
std::optional<io::Tokenizer> load_tokenizer(const Deck& deck, const ModelConfig& config, bool required);

}  // namespace jetmoe
