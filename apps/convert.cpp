// jetmoe-convert: checkpoint conversion. This version converts Hugging Face checkpoints (single,
// sharded, bf16/fp16/fp32, old or new config keys) into a fresh Hugging Face checkpoint of the dtype
// asked for; jetmoe HDF5 checkpoints arrive with training.
#include <filesystem>

#include "core/app.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "model/hf_checkpoint.hpp"
#include "model/load.hpp"
#include "parallel/comm.hpp"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  const jetmoe::AppSpec spec{"jetmoe-convert",
                             "Convert checkpoints between Hugging Face (safetensors + config.json) and jetmoe HDF5.",
                             {"job", "model", "convert"},
                             /*takes_restart=*/false,
                             "Examples:\n"
                             "  jetmoe-convert -i inputs/tiny.deck convert/input=/models/jetmoe-8b convert/output=export/jetmoe-8b-fp32 "
                             "convert/dtype=fp32"};
  return jetmoe::run_app(argc, argv, spec, [](jetmoe::AppContext& ctx) {
    using namespace jetmoe;
    const Deck& deck = ctx.deck;
    const std::string input = deck.get_string("convert", "input");
    const std::string output = deck.get_string("convert", "output");
    const std::string to = deck.get_string("convert", "to");
    const std::string dtype = deck.get_string("convert", "dtype");
    if (fs::path(input).lexically_normal() == fs::path(output).lexically_normal())
      deck.fail_value("convert", "output", "is the same as convert/input");
    if (to == "hdf5") deck.fail_value("convert", "to", "jetmoe HDF5 checkpoints are not part of this version yet (see README, 'Status')");
    if (ctx.command_line.check_only) {
      log::info("deck is valid.");
      return;
    }
    if (!fs::exists(input)) deck.fail_value("convert", "input", "'" + input + "' does not exist");
    if (fs::path(input).extension() == ".h5")
      deck.fail_value("convert", "input", "jetmoe HDF5 checkpoints are not part of this version yet (see README, 'Status')");
    if (fs::exists(output) && !fs::is_empty(output))
      deck.fail_value("convert", "output", "'" + output + "' exists and is not empty; choose a new directory");
    if (!ctx.comm.is_root()) return;
    // The shape comes from the input's config.json; deck <model> keys may not contradict it.
    const std::string dir = fs::is_directory(input) ? input : fs::path(input).parent_path().string();
    const ModelConfig config = load_hf_config(dir);
    log::info("model: %s", config.summary().c_str());
    const ModelWeights weights = load_hf_weights(input, config);
    save_hf_checkpoint(output, config, weights, dtype);
    for (const char* extra : {"tokenizer.model", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json"})
      if (fs::exists(fs::path(dir) / extra)) fs::copy_file(fs::path(dir) / extra, fs::path(output) / extra);
    log::info("wrote %s (config.json, model.safetensors in %s)", output.c_str(), dtype.c_str());
  });
}
