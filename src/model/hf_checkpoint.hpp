#pragma once
// Hugging Face JetMoE checkpoints as published: a directory with config.json and model.safetensors
// (or shards with model.safetensors.index.json), tensors in bf16, fp16 or fp32, the LM head tied
// (absent) or stored. Export writes the same layout so transformers' JetMoeForCausalLM loads it.
#include <functional>
#include <string>

#include "model/config.hpp"
#include "model/weights.hpp"

namespace jetmoe {

class Comm;

// Reads every parameter of `config` from `path` (a checkpoint directory or a .safetensors file),
// converting to fp32. Every tensor's name, shape and dtype is checked: a missing tensor, a wrong
// shape, a non-floating dtype or an unexpected tensor is one ErrorKind::Input naming the file and
// the tensor. A stored lm_head.weight is ignored when the head is tied (as transformers does).
ModelWeights load_hf_weights(const std::string& path, const ModelConfig& config);

// The ModelConfig of an HF checkpoint directory (its config.json).
ModelConfig load_hf_config(const std::string& directory);

// The config.json text transformers reads for `config` ("architectures", "model_type", HF key names);
// `torch_dtype` is "float32", "bfloat16" or "float16". ModelConfig::from_hf_config reads it back.
std::string hf_config_json(const ModelConfig& config, const std::string& torch_dtype);

// Writes config.json and model.safetensors (dtype "bf16", "fp16" or "fp32") into `directory`
// (created if needed); each file is written atomically.
void save_hf_checkpoint(const std::string& directory, const ModelConfig& config, const ModelWeights& weights,
                        const std::string& dtype);

// The same export by the ranks of `comm` together, for a model split over them (pipeline stages),
// without gathering it anywhere. Every rank calls it; rank 0's `directory` is used, on a file system
// that every rank sees. The rank with `shard` in [0, shards) writes that shard: the tensors of its
// `weights` with shard_of(name) == shard (so the tied head's copy of the embedding, which shard_of
// puts with the embedding, is written once); `shard` = -1 writes nothing (a data-parallel replica).
// Each shard has exactly one writer. One shard is model.safetensors; several are transformers'
// sharded layout, model-0000i-of-0000N.safetensors and model.safetensors.index.json. Rank 0 writes
// the index and config.json last, once every shard is written.
// All or nothing: DIRECTORY.tmp takes the files and replaces DIRECTORY once all are written (why, in
// the .cpp); files of an earlier export other than its weights and config.json (a tokenizer put
// there) are kept. A failure on any rank is every rank's CollectiveError, naming the file and the
// reason, and leaves an earlier export in DIRECTORY untouched.
void save_hf_checkpoint(const Comm& comm, const std::string& directory, const ModelConfig& config,
                        const ModelWeights& weights, int shard, int shards,
                        const std::function<int(const std::string& tensor)>& shard_of, const std::string& dtype);

}  // namespace jetmoe
