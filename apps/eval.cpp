// jetmoe-eval: perplexity, multiple-choice log-likelihood scoring, logits dumps.
#include "core/app.hpp"
#include "core/log.hpp"
#include "model/config.hpp"

int main(int argc, char** argv) {
  const jetmoe::AppSpec spec{"jetmoe-eval",
                             "Evaluate a JetMoE model: perplexity, multiple-choice accuracy, or logits to .npy.",
                             {"job", "model", "tokenizer", "eval"},
                             /*takes_restart=*/false,
                             "Examples:\n"
                             "  jetmoe-eval -i inputs/tiny.deck eval/task=perplexity eval/input=data/valid.txt"};
  return jetmoe::run_app(argc, argv, spec, [](jetmoe::AppContext& ctx) {
    using namespace jetmoe;
    const ModelConfig model = ModelConfig::from_deck(ctx.deck);
    ctx.deck.get_string("eval", "input");  // required
    log::info("model: %s", model.summary().c_str());
    log::info("deck is valid.");
    if (ctx.command_line.check_only) return;
    log::info("this build stops here: evaluation is not part of this version yet (see README, 'Status').");
  });
}
