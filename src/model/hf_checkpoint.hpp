#pragma once
// Hugging Face JetMoE checkpoints as published: a directory with config.json and model.safetensors
// (or shards with model.safetensors.index.json), tensors in bf16, fp16 or fp32, the LM head tied
// (absent) or stored. Export writes the same layout so transformers' JetMoeForCausalLM loads it.
#include <string>

#include "model/config.hpp"
#include "model/weights.hpp"

namespace jetmoe {

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

}  // namespace jetmoe
