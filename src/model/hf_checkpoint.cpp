#include "model/hf_checkpoint.hpp"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <set>

#include "core/bf16.hpp"
#include "core/error.hpp"
#include "core/profiling.hpp"
#include "io/atomic_file.hpp"
#include "io/safetensors.hpp"

namespace jetmoe {

namespace fs = std::filesystem;

namespace {

// Buffers HF checkpoints may hold that are not parameters (non-persistent in current transformers,
// persistent in some older exports).
bool is_ignorable_buffer(const std::string& name) {
  return name.find("rotary_emb.inv_freq") != std::string::npos;
}

}  // namespace

ModelConfig load_hf_config(const std::string& directory) {
  const fs::path cfg = fs::path(directory) / "config.json";
  if (!fs::exists(cfg)) fail(ErrorKind::Input, directory + ": not a Hugging Face checkpoint directory (no config.json)");
  return ModelConfig::from_hf_config(cfg.string(), ModelConfig{});
}

ModelWeights load_hf_weights(const std::string& path, const ModelConfig& config) {
  Region region("load_hf_weights");
  const io::SafetensorsCheckpoint ckpt = io::SafetensorsCheckpoint::open(path);
  ModelWeights weights(config);
  std::set<std::string> expected;
  for (const NamedTensor& t : weights.named(config)) {
    expected.insert(t.name);
    const io::TensorInfo* info = ckpt.find(t.name);
    if (!info)
      fail(ErrorKind::Input, ckpt.source() + ": missing tensor '" + t.name + "' (expected shape " + io::shape_string(t.shape) +
                                 ")");
    if (!io::is_floating(info->dtype))
      fail(ErrorKind::Input, ckpt.source() + ": tensor '" + t.name + "' has dtype " + std::string(io::dtype_name(info->dtype)) +
                                 ", expected a floating type (BF16, F16, F32)");
    auto host = Kokkos::create_mirror_view(t.flat);
    ckpt.read_as_float(t.name, t.shape, host.data());
    Kokkos::deep_copy(t.flat, host);
  }
  std::vector<std::string> unexpected;
  for (const std::string& name : ckpt.names()) {
    if (expected.count(name) || is_ignorable_buffer(name)) continue;
    if (name == "lm_head.weight" && config.tie_word_embeddings) continue;  // tied: transformers ignores it too
    unexpected.push_back(name);
  }
  if (!unexpected.empty()) {
    std::string list;
    for (std::size_t i = 0; i < unexpected.size() && i < 5; ++i) list += (i ? ", '" : "'") + unexpected[i] + "'";
    if (unexpected.size() > 5) list += " and " + std::to_string(unexpected.size() - 5) + " more";
    fail(ErrorKind::Input, ckpt.source() + ": " + std::to_string(unexpected.size()) +
                               " unexpected tensor(s) for this JetMoE configuration: " + list +
                               " (does config.json match the weights?)");
  }
  return weights;
}

std::string hf_config_json(const ModelConfig& c, const std::string& torch_dtype) {
  nlohmann::ordered_json j;
  j["architectures"] = {"JetMoeForCausalLM"};
  j["model_type"] = "jetmoe";
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["num_hidden_layers"] = c.num_layers;
  j["num_key_value_heads"] = c.num_kv_heads;
  j["kv_channels"] = c.head_dim;
  j["num_local_experts"] = c.num_experts;
  j["num_experts_per_tok"] = c.top_k;
  j["intermediate_size"] = c.ffn_hidden_size;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rope_theta"] = c.rope_theta;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["initializer_range"] = c.initializer_range;
  j["activation_function"] = "silu";
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["bos_token_id"] = c.bos_token_id;
  j["eos_token_id"] = c.eos_token_id;
  j["torch_dtype"] = torch_dtype;
  return j.dump(2) + "\n";
}

void save_hf_checkpoint(const std::string& directory, const ModelConfig& c, const ModelWeights& weights,
                        const std::string& dtype) {
  Region region("save_hf_checkpoint");
  io::DType out_type = io::DType::F32;
  std::string torch_dtype = "float32";
  if (dtype == "bf16") out_type = io::DType::BF16, torch_dtype = "bfloat16";
  else if (dtype == "fp16") out_type = io::DType::F16, torch_dtype = "float16";
  else if (dtype != "fp32") fail(ErrorKind::Internal, "save_hf_checkpoint: unknown dtype '" + dtype + "'");

  std::error_code ec;
  fs::create_directories(directory, ec);
  if (ec) fail(ErrorKind::Input, directory + ": cannot create the output directory: " + ec.message());

  // Converted host copies stay alive until the file is written.
  const std::vector<NamedTensor> named = weights.named(c);
  std::vector<std::vector<float>> f32(named.size());
  std::vector<std::vector<std::uint16_t>> half(named.size());
  std::vector<io::TensorToWrite> tensors;
  for (std::size_t i = 0; i < named.size(); ++i) {
    auto host = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), named[i].flat);
    io::TensorToWrite t{named[i].name, out_type, named[i].shape, nullptr};
    if (out_type == io::DType::F32) {
      f32[i].assign(host.data(), host.data() + host.size());
      t.data = f32[i].data();
    } else {
      half[i].resize(host.size());
      for (std::size_t j = 0; j < host.size(); ++j)
        half[i][j] = out_type == io::DType::BF16 ? bf16::from_float(host(j)).bits : fp16::from_float(host(j)).bits;
      t.data = half[i].data();
    }
    tensors.push_back(t);
  }
  io::write_safetensors((fs::path(directory) / "model.safetensors").string(), tensors, {{"format", "pt"}});

  io::write_text_atomically((fs::path(directory) / "config.json").string(), hf_config_json(c, torch_dtype));
}

}  // namespace jetmoe
