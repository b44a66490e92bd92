// jetmoe-prepare: tokenise corpora into binary token shards with a document index.
#include "core/app.hpp"
#include "core/log.hpp"

int main(int argc, char** argv) {
  const jetmoe::AppSpec spec{"jetmoe-prepare",
                             "Tokenise corpora (text, jsonl, .gz) into token shards for jetmoe-train.",
                             {"job", "tokenizer", "prepare"},
                             /*takes_restart=*/false,
                             "Examples:\n"
                             "  jetmoe-prepare -i inputs/tiny.deck \"prepare/inputs=web=corpus/web.txt, code=corpus/code.jsonl\""};
  return jetmoe::run_app(argc, argv, spec, [](jetmoe::AppContext& ctx) {
    using namespace jetmoe;
    const auto inputs = ctx.deck.get_list("prepare", "inputs");
    for (const auto& entry : inputs) {
      const auto eq = entry.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == entry.size())
        ctx.deck.fail_value("prepare", "inputs", "expected entries name=path, found '" + entry + "'");
    }
    log::info("deck is valid: %zu corpus source(s).", inputs.size());
    if (ctx.command_line.check_only) return;
    log::info("this build stops here: data preparation is not part of this version yet (see README, 'Status').");
  });
}
