// jetmoe-prepare: tokenise corpora into binary token shards with a document index (src/data/prepare.hpp).
#include <algorithm>
#include <filesystem>
#include <thread>

#include "core/app.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "data/prepare.hpp"
#include "io/output_directory.hpp"
#include "io/tokenizer.hpp"
#include "parallel/comm.hpp"

namespace fs = std::filesystem;

int main(int argc, char** argv) {
  const jetmoe::AppSpec spec{"jetmoe-prepare",
                             "Tokenise corpora (text, jsonl, .gz) into token shards for jetmoe-train.",
                             {"job", "tokenizer", "prepare"},
                             /*takes_restart=*/false,
                             "Examples:\n"
                             "  jetmoe-prepare -i inputs/prepare-tiny.deck\n"
                             "  jetmoe-prepare -i inputs/prepare-tiny.deck \"prepare/inputs=web=corpus/web.txt, "
                             "code=corpus/code.jsonl.gz\" prepare/output_dir=data/prepared/web"};
  return jetmoe::run_app(argc, argv, spec, [](jetmoe::AppContext& ctx) {
    using namespace jetmoe;
    Deck& deck = ctx.deck;
    // Everything a user can get wrong in the deck is checked before anything is read or written.
    std::vector<data::SourceInput> sources;
    for (const auto& entry : deck.get_list("prepare", "inputs")) {
      const auto eq = entry.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == entry.size())
        deck.fail_value("prepare", "inputs", "expected entries name=path, found '" + entry + "'");
      data::SourceInput src{entry.substr(0, eq), entry.substr(eq + 1)};
      if (const auto problem = data::source_name_problem(src.name); !problem.empty())
        deck.fail_value("prepare", "inputs", "source '" + src.name + "': " + problem);
      for (const auto& other : sources)
        if (other.name == src.name) deck.fail_value("prepare", "inputs", "source '" + src.name + "' is given twice");
      if (const std::string why = ctx.command_line.check_only ? "" : io::absence_reason(src.path); !why.empty())
        deck.fail_value("prepare", "inputs", "source '" + src.name + "': '" + src.path + "' " + why);
      sources.push_back(src);
    }
    data::PrepareSettings settings;
    settings.output_dir = deck.get_string("prepare", "output_dir");
    settings.text_field = deck.get_string("prepare", "text_field");
    settings.text_documents = deck.get_string("prepare", "text_documents") == "file" ? data::TextDocuments::File
                                                                                     : data::TextDocuments::BlankLine;
    settings.validation_fraction = deck.get_real("prepare", "validation_fraction");
    settings.eos_between_documents = deck.get_bool("prepare", "eos_between_documents");
    settings.overwrite = deck.get_bool("prepare", "overwrite");
    const auto jobs = deck.get_int("prepare", "jobs");
    settings.jobs = jobs > 0 ? int(jobs) : int(std::max(1u, std::thread::hardware_concurrency()));
    settings.seed = std::uint64_t(deck.get_int("job", "seed"));
    settings.add_bos = deck.get_bool("tokenizer", "add_bos");
    settings.add_eos = deck.get_bool("tokenizer", "add_eos");
    settings.tokenizer_model = deck.find_string("tokenizer", "model").value_or("");
    if (!ctx.command_line.check_only) {
      std::error_code ec;
      if (settings.tokenizer_model.empty())
        deck.fail_value("tokenizer", "model", "jetmoe-prepare needs a tokenizer: set tokenizer/model");
      deck.find_existing("tokenizer", "model", Deck::PathKind::File);
      for (const auto& src : sources)
        if (!settings.overwrite && fs::exists(fs::path(settings.output_dir) / src.name, ec))
          deck.fail_value("prepare", "output_dir",
                          "'" + (fs::path(settings.output_dir) / src.name).string() +
                              "' already exists (prepared before); delete it or set prepare/overwrite = true");
    }
    log::info("deck is valid: %zu corpus source(s).", sources.size());
    if (ctx.command_line.check_only) return;
    if (ctx.comm.size() > 1)
      fail(ErrorKind::Usage, "jetmoe-prepare runs on one MPI rank (prepare/jobs sets its threads); it was started on " +
                                 std::to_string(ctx.comm.size()));

    // Made before the work starts (a path the file system refuses fails at once); taken away again
    // if the run fails.
    io::OutputDirectory out_dir(settings.output_dir, deck.describe_key("prepare", "output_dir"));
    const io::Tokenizer tokenizer(settings.tokenizer_model);
    log::info("tokenizer %s: %d pieces; %d thread(s); writing to %s", settings.tokenizer_model.c_str(),
              tokenizer.vocab_size(), settings.jobs, settings.output_dir.c_str());
    const auto reports = data::prepare_corpora(sources, tokenizer, settings);
    log::text(data::prepare_summary_table(reports));
    out_dir.keep();
    log::info("prepared %zu source(s) in %s", reports.size(), settings.output_dir.c_str());
  });
}
