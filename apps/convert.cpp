// jetmoe-convert: checkpoint conversion between Hugging Face checkpoints (single, sharded,
// bf16/fp16/fp32, old or new config keys) and jetmoe HDF5 checkpoints (their /params), in the dtype
// asked for. An HDF5 output holds the parameters only (no optimizer state), with the model config and
// the deck.
#include <cstdio>
#include <filesystem>
#include <utility>

#include "core/app.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "io/checkpoint.hpp"
#include "io/collective.hpp"
#include "io/output_directory.hpp"
#include "model/hf_checkpoint.hpp"
#include "model/load.hpp"
#include "parallel/comm.hpp"

namespace fs = std::filesystem;

namespace {

std::string shortest(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.12g", v);
  return buf;
}

// The shape is the input's. A <model> key the deck sets to another value is an error rather than
// ignored (model/preset, model/weights and model/config are not read).
void check_model_keys(const jetmoe::Deck& deck, const jetmoe::ModelConfig& c, const std::string& input) {
  auto mismatch = [&](const char* key, const std::string& deck_value, const std::string& input_value) {
    deck.fail_value("model", key, deck_value + ", but convert/input '" + input + "' holds a model with " + key + " = " +
                                      input_value + " (jetmoe-convert takes the shape from its input; remove the key)");
  };
  const std::pair<const char*, std::int64_t> ints[] = {
      {"vocab_size", c.vocab_size},   {"hidden_size", c.hidden_size}, {"num_layers", c.num_layers},
      {"num_kv_heads", c.num_kv_heads}, {"head_dim", c.head_dim},     {"num_experts", c.num_experts},
      {"top_k", c.top_k},             {"ffn_hidden_size", c.ffn_hidden_size},
      {"max_position_embeddings", c.max_position_embeddings}};
  for (const auto& [key, value] : ints)
    if (deck.is_set("model", key) && deck.get_int("model", key) != value)
      mismatch(key, std::to_string(deck.get_int("model", key)), std::to_string(value));
  const std::pair<const char*, double> reals[] = {{"rope_theta", c.rope_theta}, {"rms_norm_eps", c.rms_norm_eps}};
  for (const auto& [key, value] : reals)
    if (deck.is_set("model", key) && deck.get_real("model", key) != value)
      mismatch(key, shortest(deck.get_real("model", key)), shortest(value));
  if (deck.is_set("model", "tie_word_embeddings") && deck.get_bool("model", "tie_word_embeddings") != c.tie_word_embeddings)
    mismatch("tie_word_embeddings", deck.get_bool("model", "tie_word_embeddings") ? "true" : "false",
             c.tie_word_embeddings ? "true" : "false");
}

}  // namespace

int main(int argc, char** argv) {
  const jetmoe::AppSpec spec{"jetmoe-convert",
                             "Convert checkpoints between Hugging Face (safetensors + config.json) and jetmoe HDF5.",
                             {"job", "model", "convert"},
                             /*takes_restart=*/false,
                             "Examples:\n"
                             "  jetmoe-convert -i inputs/convert.deck convert/input=/models/jetmoe-8b convert/output=export/jetmoe-8b-fp32 "
                             "convert/dtype=fp32\n"
                             "  jetmoe-convert -i inputs/convert.deck convert/input=/models/jetmoe-8b convert/output=jetmoe-8b.h5 "
                             "convert/to=hdf5 convert/dtype=fp32\n"
                             "The shape comes from the input; a <model> key the deck sets must agree with it."};
  return jetmoe::run_app(argc, argv, spec, [](jetmoe::AppContext& ctx) {
    using namespace jetmoe;
    const Deck& deck = ctx.deck;
    // Every rank checks alike and the ranks agree (collectively): under MPI an error is printed once.
    std::string input, output, to, dtype;
    collectively(ctx.comm, [&] {
      input = deck.get_string("convert", "input");
      output = deck.get_string("convert", "output");
      to = deck.get_string("convert", "to");
      dtype = deck.get_string("convert", "dtype");
      if (fs::path(input).lexically_normal() == fs::path(output).lexically_normal())
        deck.fail_value("convert", "output", "is the same as convert/input");
      if (to == "hdf5" && fs::path(output).extension() != ".h5")
        deck.fail_value("convert", "output", "a jetmoe HDF5 checkpoint is a file named *.h5, found '" + output + "'");
    });
    if (ctx.command_line.check_only) {
      log::info("deck is valid.");
      return;
    }
    collectively(ctx.comm, [&] {
      deck.find_existing("convert", "input", Deck::PathKind::Any);
      const std::string extension = fs::path(input).extension().string();
      std::error_code ec;
      if (!fs::is_directory(input, ec) && extension != ".h5" && extension != ".safetensors")
        deck.fail_value("convert", "input", "'" + input + "' is not a checkpoint: expected a Hugging Face checkpoint (a "
                        "directory with config.json, or a .safetensors file next to one) or a jetmoe checkpoint (*.h5)");
      const bool exists = io::exists_or_fail(output, deck.describe_key("convert", "output"));
      if (to == "hdf5") {
        if (exists) deck.fail_value("convert", "output", "'" + output + "' exists; choose a new file name");
      } else if (exists && !fs::is_directory(output, ec)) {
        deck.fail_value("convert", "output", "'" + output + "' is a file; a Hugging Face checkpoint is a directory");
      } else if (exists && !(fs::is_empty(output, ec) && !ec)) {
        deck.fail_value("convert", "output", "'" + output + "' exists and is not empty; choose a new directory");
      }
    });
    if (!ctx.comm.is_root()) return;

    // The output's directory first: a path the file system refuses fails before the input is read. It
    // was empty or missing, and what the conversion writes or makes there is removed if it fails.
    std::error_code ec;
    const fs::path out_dir = to == "hdf5" ? fs::path(output).parent_path() : fs::path(output);
    io::OutputDirectory made;
    if (!out_dir.empty()) made = io::OutputDirectory(out_dir, deck.describe_key("convert", "output"));
    std::vector<fs::path> written;  // HF output: the files it wrote, removed if a later one fails
    struct Cleanup {
      std::vector<fs::path>& files;
      ~Cleanup() {
        std::error_code ignored;
        for (const fs::path& f : files) fs::remove(f, ignored);
      }
    } cleanup{written};

    // The shape comes from the input (config.json, or the config stored in a jetmoe checkpoint);
    // deck <model> keys may not contradict it.
    const bool input_is_directory = fs::is_directory(input, ec);
    const bool from_checkpoint = fs::path(input).extension() == ".h5" && !input_is_directory;
    const std::string dir = input_is_directory ? input : fs::path(input).parent_path().string();
    ModelConfig config;
    ModelWeights weights;
    CheckpointMeta meta;
    if (from_checkpoint) {
      const CheckpointReader checkpoint(input);
      const std::string where = input + ":/meta/model_config_json";
      config = ModelConfig::from_hf_config_text(checkpoint.meta().model_config_json, where, ModelConfig{});
      config.validate(where);
      log::info("model: %s", config.summary().c_str());
      weights = read_checkpoint_params(checkpoint, config);
      meta.step = checkpoint.meta().step, meta.tokens_seen = checkpoint.meta().tokens_seen;
    } else {
      config = load_hf_config(dir);
      log::info("model: %s", config.summary().c_str());
      weights = load_hf_weights(input, config);
    }

    check_model_keys(deck, config, input);

    if (to == "hdf5") {
      const CheckpointDType stored = dtype == "fp32" ? CheckpointDType::F32 : dtype == "fp16" ? CheckpointDType::F16 : CheckpointDType::BF16;
      const char* torch_dtype = dtype == "fp32" ? "float32" : dtype == "fp16" ? "float16" : "bfloat16";
      meta.model_config_json = hf_config_json(config, torch_dtype);
      meta.deck_text = deck.effective_text();
      meta.run_name = deck.get_string("job", "name");
      try {
        write_checkpoint(output, meta, {{"params", checkpoint_tensors(config, weights, stored)}});
      } catch (const Error& e) {  // the file system's refusal (a name too long, a full disk), named by its key
        if (e.kind() != ErrorKind::Input) throw;
        fail(ErrorKind::Input, deck.describe_key("convert", "output") + ": " + e.what());
      }
      made.keep();
      log::info("wrote %s (jetmoe HDF5 checkpoint, parameters only, %s, step %lld)", output.c_str(), dtype.c_str(),
                static_cast<long long>(meta.step));
      return;
    }
    written = {fs::path(output) / "model.safetensors", fs::path(output) / "config.json"};
    save_hf_checkpoint(output, config, weights, dtype);
    for (const char* extra : {"tokenizer.model", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json"}) {
      const fs::path from = fs::path(dir) / extra, to_path = fs::path(output) / extra;
      if (!fs::exists(from, ec)) continue;
      written.push_back(to_path);
      if (!fs::copy_file(from, to_path, ec) || ec)
        fail(ErrorKind::Input, to_path.string() + ": cannot copy " + from.string() + " there: " + ec.message());
    }
    written.clear();
    made.keep();
    log::info("wrote %s (config.json, model.safetensors in %s)", output.c_str(), dtype.c_str());
  });
}
