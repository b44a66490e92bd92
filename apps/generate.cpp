// jetmoe-generate: text generation with a KV cache of the shared K/V heads.
#include "core/app.hpp"
#include "core/log.hpp"
#include "model/config.hpp"

int main(int argc, char** argv) {
  const jetmoe::AppSpec spec{
      "jetmoe-generate",
      "Generate text from a JetMoE model (prompt from <generate>/prompt, a file, or stdin).",
      {"job", "model", "tokenizer", "generate"},
      /*takes_restart=*/false,
      "Examples:\n"
      "  jetmoe-generate -i inputs/tiny.deck model/weights=/models/jetmoe-8b generate/prompt=\"Hello\""};
  return jetmoe::run_app(argc, argv, spec, [](jetmoe::AppContext& ctx) {
    using namespace jetmoe;
    const ModelConfig model = ModelConfig::from_deck(ctx.deck);
    if (ctx.deck.is_set("generate", "prompt") && ctx.deck.is_set("generate", "prompt_file"))
      ctx.deck.fail_value("generate", "prompt_file", "give either generate/prompt or generate/prompt_file, not both");
    if (ctx.deck.get_real("generate", "temperature") == 0.0 &&
        (ctx.deck.get_int("generate", "top_k") != 0 || ctx.deck.get_real("generate", "top_p") != 1.0))
      log::warn("generate/temperature = 0 decodes greedily: top_k and top_p have no effect");
    log::info("model: %s", model.summary().c_str());
    log::info("deck is valid.");
    if (ctx.command_line.check_only) return;
    log::info("this build stops here: generation is not part of this version yet (see README, 'Status').");
  });
}
