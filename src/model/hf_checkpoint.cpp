#include "model/hf_checkpoint.hpp"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <set>

#include "core/bf16.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/profiling.hpp"
#include "io/atomic_file.hpp"
#include "io/collective.hpp"
#include "io/output_directory.hpp"
#include "io/safetensors.hpp"
#include "parallel/comm.hpp"

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
  std::error_code ec;
  if (!fs::exists(cfg, ec)) fail(ErrorKind::Input, directory + ": not a Hugging Face checkpoint directory (no config.json)");
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

namespace {

// A dtype of save_hf_checkpoint: how the tensors are stored, and config.json's torch_dtype.
struct ExportDType {
  io::DType stored;
  const char* torch_dtype;
};
ExportDType export_dtype(const std::string& dtype) {
  if (dtype == "fp32") return {io::DType::F32, "float32"};
  if (dtype == "bf16") return {io::DType::BF16, "bfloat16"};
  if (dtype == "fp16") return {io::DType::F16, "float16"};
  fail(ErrorKind::Internal, "save_hf_checkpoint: unknown dtype '" + dtype + "'");
}

// The parameters as the safetensors writer takes them: fp32 tensors in host memory as they are; the
// others (in GPU memory, or stored as bf16/fp16) copied or converted when the writer reaches them, so
// the host never holds a second copy of the model, only of its largest tensor.
std::vector<io::TensorToWrite> tensors_to_write(const std::vector<NamedTensor>& named, io::DType stored) {
  std::vector<io::TensorToWrite> tensors;
  for (const NamedTensor& t : named) {
    io::TensorToWrite w{t.name, stored, t.shape};
    const Vec<float> flat = t.flat;
    if (stored == io::DType::F32 && host_memory) {
      w.data = flat.data();
    } else if (stored == io::DType::F32) {
      w.fill = [flat](void* out) { copy_to_host(flat, static_cast<float*>(out)); };
    } else {
      w.fill = [flat, stored](void* out) {
        const auto host = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), flat);  // no copy on the host
        auto* half = static_cast<std::uint16_t*>(out);
        for (std::size_t j = 0; j < host.size(); ++j)
          half[j] = stored == io::DType::BF16 ? bf16::from_float(host(j)).bits : fp16::from_float(host(j)).bits;
      };
    }
    tensors.push_back(std::move(w));
  }
  return tensors;
}

// `staging` (complete) becomes `dir`. An earlier `dir` goes aside as `previous` (where a killed
// export may have left it already), and what it held besides its weights and config.json moves over.
void replace_directory(const fs::path& dir, const fs::path& staging, const fs::path& previous) {
  std::error_code ec;
  const bool earlier = io::exists_or_fail(dir, "the model export");
  if (earlier) {
    fs::remove_all(previous, ec);
    if (ec) fail(ErrorKind::Input, previous.string() + ": cannot remove what an earlier export left: " + ec.message());
    io::rename_or_fail(dir, previous);
  }
  try {
    io::rename_or_fail(staging, dir);
  } catch (const Error&) {
    if (earlier) fs::rename(previous, dir, ec);
    throw;
  }
  if (!fs::exists(previous, ec)) return;
  std::vector<fs::path> kept;
  for (const auto& entry : fs::directory_iterator(previous, ec)) {
    const std::string name = entry.path().filename().string();
    if (name != "config.json" && !io::is_safetensors_weight_file(name)) kept.push_back(entry.path());
  }
  for (const fs::path& path : kept)
    if (!ec) fs::rename(path, dir / path.filename(), ec);
  if (ec) {
    log::warn("%s: cannot move the files that are not the model from the earlier export (%s); they stay in %s",
              dir.c_str(), ec.message().c_str(), previous.c_str());
    return;
  }
  fs::remove_all(previous, ec);
}

}  // namespace

void save_hf_checkpoint(const std::string& directory, const ModelConfig& c, const ModelWeights& weights,
                        const std::string& dtype) {
  Region region("save_hf_checkpoint");
  const ExportDType type = export_dtype(dtype);
  std::error_code ec;
  fs::create_directories(directory, ec);
  if (ec) fail(ErrorKind::Input, directory + ": cannot create the output directory: " + ec.message());
  io::write_safetensors((fs::path(directory) / "model.safetensors").string(), tensors_to_write(weights.named(c), type.stored),
                        {{"format", "pt"}});
  io::write_text_atomically((fs::path(directory) / "config.json").string(), hf_config_json(c, type.torch_dtype));
}

// All or nothing, on a file system the ranks share (Lustre, GPFS, NFS). Each file is written
// atomically (a temporary file renamed over it), but an earlier export in the same directory cannot
// be overwritten file by file: with the same number of shards, one rank replacing its shard while
// another's write fails leaves the earlier index pointing at parts of two models, which loads without
// a word; writing the index last protects only a change of layout. So every file goes to
// DIRECTORY.tmp and, once every rank has written its shard, rank 0 adds the index and config.json and
// renames DIRECTORY.tmp to DIRECTORY, the earlier export moved aside to DIRECTORY.old first and
// removed after. A rename within one directory is one atomic metadata operation on these file
// systems (unlike a copy, or a directory's worth of renames by several ranks): a reader finds the
// earlier export, for an instant none, or the new one, never a mix. A failure before the rename
// leaves DIRECTORY as it was and DIRECTORY.tmp removed. A job killed between the two renames leaves
// both exports complete, as DIRECTORY.old and DIRECTORY.tmp; the next export takes the first as the
// earlier one and overwrites or removes whatever the second holds.
void save_hf_checkpoint(const Comm& comm, const std::string& directory, const ModelConfig& config,
                        const ModelWeights& weights, int shard, int shards,
                        const std::function<int(const std::string& tensor)>& shard_of, const std::string& dtype) {
  Region region("save_hf_checkpoint");
  const ExportDType type = export_dtype(dtype);
  std::string rank0_directory = directory;
  comm.broadcast(rank0_directory, 0);
  fs::path dir = fs::path(rank0_directory).lexically_normal();
  if (!dir.has_filename()) dir = dir.parent_path();  // "runs/x/final/"
  const fs::path staging = dir.string() + ".tmp", previous = dir.string() + ".old";
  const auto shard_name = [shards](int s) { return io::safetensors_shard_name(std::size_t(s), std::size_t(shards)); };
  try {
    agree(comm, !comm.is_root() ? "" : attempt([&] {
      std::error_code ec;
      if (io::exists_or_fail(dir, "the model export") && !fs::is_directory(dir, ec))
        fail(ErrorKind::Input, dir.string() + ": cannot export the model there: it is a file, not a directory");
      fs::create_directories(staging, ec);
      if (ec || !fs::is_directory(staging, ec))
        fail(ErrorKind::Input, staging.string() + ": cannot create the directory the export is written to: " +
                                   (ec ? ec.message() : "a file of that name exists"));
    }));

    // writers, tensors, bytes, elements: summed over the ranks (exact in doubles below 2^53).
    double totals[4] = {0, 0, 0, 0};
    std::string error;
    if (shard >= 0) {
      error = attempt([&] {
        std::error_code ec;
        if (!fs::is_directory(staging, ec))
          fail(ErrorKind::Input, staging.string() + ": rank " + std::to_string(comm.rank()) +
                                     " does not see the directory rank 0 created; every pipeline stage writes its "
                                     "shard there, so the output directory must be on a file system all ranks share");
        std::vector<NamedTensor> mine;
        for (NamedTensor& t : weights.named(config))
          if (shard_of(t.name) == shard) mine.push_back(std::move(t));
        io::write_safetensors((staging / shard_name(shard)).string(), tensors_to_write(mine, type.stored), {{"format", "pt"}});
        totals[0] = 1;
        totals[1] = double(mine.size());
        for (const NamedTensor& t : mine) {
          totals[2] += double(t.flat.size() * io::dtype_size(type.stored));
          totals[3] += double(t.flat.size());
        }
      });
      if (!error.empty())
        error += " (shard " + std::to_string(shard + 1) + " of " + std::to_string(shards) +
                 " of the Hugging Face export, written by rank " + std::to_string(comm.rank()) + ")";
    }
    agree(comm, error);
    comm.sum_in_place(totals, 4);
    const std::vector<NamedTensor> all = weights.named_all(config);
    JETMOE_ASSERT(totals[0] == double(shards) && totals[1] == double(all.size()),
                  "save_hf_checkpoint: " + std::to_string(std::int64_t(totals[0])) + " writers wrote " +
                      std::to_string(std::int64_t(totals[1])) + " tensors, expected " + std::to_string(shards) +
                      " writers and " + std::to_string(all.size()) + " tensors");

    agree(comm, !comm.is_root() ? "" : attempt([&] {
      std::set<std::string> written;
      for (int s = 0; s < shards; ++s) written.insert(shard_name(s));
      if (shards > 1) {
        io::SafetensorsIndex index;
        for (const NamedTensor& t : all) index.weight_map[t.name] = shard_name(shard_of(t.name));
        index.total_size = std::uint64_t(totals[2]);
        index.total_parameters = std::uint64_t(totals[3]);
        written.insert(io::write_safetensors_index(staging.string(), index));
      }
      io::write_text_atomically((staging / "config.json").string(), hf_config_json(config, type.torch_dtype));
      written.insert("config.json");
      std::error_code ec;
      for (const auto& entry : fs::directory_iterator(staging, ec))
        if (!written.count(entry.path().filename().string())) io::remove_all_or_fail(entry.path());
      replace_directory(dir, staging, previous);
    }));
  } catch (...) {
    if (comm.is_root()) {
      std::error_code ignored;
      fs::remove_all(staging, ignored);
    }
    throw;
  }
}

}  // namespace jetmoe
