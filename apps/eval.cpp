// jetmoe-eval: perplexity, multiple-choice log-likelihood scoring, logits dumps.
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>

#include "core/app.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/profiling.hpp"
#include "core/strings.hpp"
#include "eval/device_forward.hpp"
#include "eval/forward.hpp"
#include "eval/multiple_choice.hpp"
#include "eval/perplexity.hpp"
#include "io/atomic_file.hpp"
#include "io/collective.hpp"
#include "io/npy.hpp"
#include "io/output_directory.hpp"
#include "model/load.hpp"
#include "model/model.hpp"
#include "parallel/comm.hpp"
#include "train/device_network.hpp"

namespace fs = std::filesystem;

// In namespace jetmoe rather than `using namespace jetmoe` at file scope: that would make jetmoe::log
// clash with ::log where nvcc (a Kokkos::Cuda build) appends its math functions to this file.
namespace jetmoe {
namespace {

std::string output_path(const Deck& deck) { return results_path(deck, "eval", "output"); }

std::vector<std::vector<std::int32_t>> read_token_ids(const Deck& deck, const std::string& path, std::int64_t vocab) {
  std::ifstream in(path);
  if (!in) deck.fail_value("eval", "input", "cannot open '" + path + "'");
  std::vector<std::vector<std::int32_t>> seqs;
  std::string line;
  int line_no = 0;
  while (std::getline(in, line)) {
    ++line_no;
    std::istringstream words(line);
    std::vector<std::int32_t> ids;
    std::string w;
    while (words >> w) {
      char* end = nullptr;
      const long long v = std::strtoll(w.c_str(), &end, 10);
      if (*end != '\0' || v < 0 || v >= vocab)
        fail(ErrorKind::Input, path + ":" + std::to_string(line_no) + ": expected token ids in [0, " + std::to_string(vocab) +
                                   "), found " + jetmoe::quoted(w));
      ids.push_back(std::int32_t(v));
    }
    if (ids.empty()) continue;
    if (!seqs.empty() && ids.size() != seqs[0].size())
      fail(ErrorKind::Input, path + ":" + std::to_string(line_no) + ": " + std::to_string(ids.size()) +
                                 " token ids, expected " + std::to_string(seqs[0].size()) + " like the first sequence");
    seqs.push_back(std::move(ids));
  }
  if (seqs.empty()) fail(ErrorKind::Input, path + ": no token ids");
  return seqs;
}

void dump_logits(const Deck& deck, eval::LmForward& forward) {
  const ModelConfig& c = forward.config();
  const std::string input = deck.get_string("eval", "input");
  const auto seqs = read_token_ids(deck, input, c.vocab_size);
  const std::size_t B = seqs.size(), T = seqs[0].size();
  if (std::int64_t(T) > c.max_position_embeddings)
    fail(ErrorKind::Input, input + ": sequences of " + std::to_string(T) + " tokens exceed the model's context of " +
                               std::to_string(c.max_position_embeddings));
  const std::string out = output_path(deck);
  const std::size_t V = std::size_t(c.vocab_size), batch = std::size_t(deck.get_int("eval", "batch_size"));
  std::vector<float> all(B * T * V);
  for (std::size_t first = 0; first < B; first += batch) {
    const std::size_t n = std::min(batch, B - first);
    eval::TokenBatch ids{std::int64_t(n), std::int64_t(T), {}};
    for (std::size_t b = first; b < first + n; ++b) ids.ids.insert(ids.ids.end(), seqs[b].begin(), seqs[b].end());
    forward.logits(ids, all.data() + first * T * V);
  }
  io::write_npy(out, {std::int64_t(B), std::int64_t(T), std::int64_t(V)}, all.data());
  log::info("wrote logits [%zu, %zu, %zu] (float32) to %s", B, T, V, out.c_str());
}

void perplexity(const Deck& deck, eval::LmForward& forward, const io::Tokenizer& tok, const Comm& comm) {
  const ModelConfig& c = forward.config();
  const std::string input = deck.get_string("eval", "input");
  std::ifstream in(input, std::ios::binary);
  if (!in) deck.fail_value("eval", "input", "cannot open '" + input + "'");
  std::ostringstream text;
  text << in.rdbuf();
  const std::vector<std::int32_t> ids = tok.encode(text.str(), deck.get_bool("tokenizer", "add_bos"), false);
  std::int64_t window = deck.get_int("eval", "context");
  if (window == 0) window = c.max_position_embeddings;
  if (window > c.max_position_embeddings)
    deck.fail_value("eval", "context", std::to_string(window) + " exceeds the model's context of " +
                                           std::to_string(c.max_position_embeddings));
  if (window < 2) deck.fail_value("eval", "context", "a window of 1 token predicts nothing; give at least 2");
  if (ids.size() < 2) fail(ErrorKind::Input, input + ": fewer than 2 tokens, nothing to predict");
  const eval::PerplexityResult r = eval::perplexity(forward, ids, window, deck.get_int("eval", "batch_size"), comm);
  if (!comm.is_root()) return;
  const double mean = r.mean_nll();
  log::info("perplexity of %s: %.4f (mean NLL %.6f nats over %lld predicted tokens, windows of %lld tokens)", input.c_str(),
            r.perplexity(), mean, (long long)r.predicted, (long long)window);
  const std::string out = output_path(deck);
  io::write_text_atomically(out, eval::perplexity_results_json(r, input, window, forward));
  log::info("wrote %s", out.c_str());
}

// The question files are read (and every row checked) before the model is loaded.
struct McInputs {
  eval::McFile file;
  std::optional<eval::McFile> pool;
};

McInputs read_mc_inputs(const Deck& deck) {
  const eval::McFormat format = eval::parse_mc_format(deck.get_string("eval", "format"));
  McInputs in{eval::read_mc_jsonl(deck.get_string("eval", "input"), format), {}};
  std::string pool_text;
  if (const auto pool = deck.find_existing("eval", "fewshot_input", Deck::PathKind::File)) {
    in.pool = eval::read_mc_jsonl(*pool, in.file.format);
    pool_text = ", few-shot pool " + in.pool->path + " (" + std::to_string(in.pool->docs.size()) + ")";
  }
  log::info("%s: %zu %s questions%s", in.file.path.c_str(), in.file.docs.size(),
            eval::mc_format_name(in.file.format).c_str(), pool_text.c_str());
  return in;
}

void multiple_choice(const Deck& deck, eval::LmForward& forward, const io::Tokenizer& tok, const McInputs& in,
                     const std::string& model_source, const Comm& comm) {
  eval::McOptions options;
  options.num_fewshot = deck.get_int("eval", "num_fewshot");
  options.fewshot_seed = std::uint64_t(deck.get_int("eval", "fewshot_seed"));
  options.fewshot_pool = in.pool ? &*in.pool : nullptr;
  options.limit = deck.get_int("eval", "limit");
  options.batch_size = deck.get_int("eval", "batch_size");
  options.add_bos = deck.get_bool("tokenizer", "add_bos");
  const eval::McReport report = eval::evaluate_mc(forward, tok, in.file, options, comm);
  if (!comm.is_root()) return;
  log::info("%zu questions, %zu log-likelihood requests, %lld-shot:", report.docs.size(), report.requests.size(),
            (long long)(in.file.format == eval::McFormat::TruthfulQaMc ? 0 : options.num_fewshot));
  log::text(eval::mc_results_table(report));
  const std::string out = output_path(deck);
  io::write_text_atomically(out, eval::mc_results_json(report, in.file, options, model_source));
  log::info("wrote %s", out.c_str());
}

}  // namespace
}  // namespace jetmoe

int main(int argc, char** argv) {
  const jetmoe::AppSpec spec{"jetmoe-eval",
                             "Evaluate a JetMoE model: perplexity, multiple-choice accuracy, or logits to .npy.",
                             {"job", "model", "tokenizer", "eval"},
                             /*takes_restart=*/false,
                             "Examples:\n"
                             "  jetmoe-eval -i inputs/jetmoe-8b-eval.deck model/weights=/models/jetmoe-8b eval/input=valid.txt\n"
                             "  jetmoe-eval -i inputs/jetmoe-8b-eval.deck model/weights=/models/jetmoe-8b eval/task=multiple-choice "
                             "eval/input=hellaswag.jsonl eval/num_fewshot=10 eval/fewshot_input=hellaswag_train.jsonl\n"
                             "  jetmoe-eval -i inputs/jetmoe-8b-eval.deck model/weights=/models/jetmoe-8b eval/task=logits "
                             "eval/input=ids.txt eval/output=logits.npy\n"
                             "The tokenizer is tokenizer/model, else the tokenizer.model next to model/weights."};
  return jetmoe::run_app(argc, argv, spec, [](jetmoe::AppContext& ctx) {
    using namespace jetmoe;
    const Deck& deck = ctx.deck;
    // Every rank checks alike and the ranks agree (collectively): under MPI an error is printed once.
    std::string task;
    ModelConfig config;
    bool on_gpu = false;
    collectively(ctx.comm, [&] {
      task = deck.get_string("eval", "task");
      deck.get_string("eval", "input");  // required
      config = ModelConfig::from_deck(deck);
      on_gpu = deck.get_string("eval", "precision") == "bf16";
      const std::string out = output_path(deck);
      if (task == "logits" && fs::path(out).extension() != ".npy")
        deck.fail_value("eval", "output", "task logits writes a .npy file, found '" + out + "'");
    });
    if (ctx.command_line.check_only) {  // the deck alone: no files, no GPU (a login node checks a GPU job's deck)
      log::info("model: %s", config.summary().c_str());
      log::info("deck is valid.");
      return;
    }
    std::optional<McInputs> mc;
    // The results' directory is made before the model is loaded, so that a path the file system
    // refuses is reported before the evaluation runs; it is removed again if the run fails.
    io::OutputDirectory out_dir;
    collectively(ctx.comm, [&] {
      if (on_gpu) {
        const std::string why = eval::device_evaluation_unavailable();
        if (!why.empty())
          deck.fail_value("eval", "precision", "bf16 needs the CUDA kernels on a GPU: " + why + "; use fp32");
      }
      deck.find_existing("eval", "input", Deck::PathKind::File);
      if (task == "multiple-choice") mc = read_mc_inputs(deck);
      const fs::path parent = fs::path(output_path(deck)).parent_path();
      if (ctx.comm.is_root() && !parent.empty()) out_dir = io::OutputDirectory(parent, results_directory_keys(deck, "eval", "output"));
    });
    LoadedModel loaded = load_model(deck);
    log::info("model: %s; weights: %s", loaded.config.summary().c_str(), loaded.source.c_str());
    auto tokenizer = load_tokenizer(deck, loaded.config, /*required=*/task != "logits");
    if (tokenizer) log::info("tokenizer: %s (%d pieces)", tokenizer->path().c_str(), tokenizer->vocab_size());
    Model model(loaded.config, std::move(loaded.weights));
    // Perplexity and multiple choice deal their batches out over the ranks (each rank its own GPU in
    // bf16) and give the results of one rank, bit for bit; the logits dump runs on rank 0.
    if (!ctx.comm.is_root() && task == "logits") return;
    std::unique_ptr<eval::LmForward> forward;
    if (on_gpu) {
      log::info("evaluating on %s (bf16)", device_training_description().c_str());
      forward = std::make_unique<eval::DeviceForward>(model, gpu_kernels_from(deck.get_string("job", "gpu_kernels")));
    } else {
      forward = std::make_unique<eval::ModelForward>(model);
      log::info("evaluating in fp32; matrix products: %s", forward->matrix_products().c_str());
    }
    Region region(task);
    if (ctx.comm.size() > 1 && task != "logits")
      log::info("the batches dealt out over %d ranks (batch k to rank k mod %d)", ctx.comm.size(), ctx.comm.size());
    if (task == "logits") {
      dump_logits(deck, *forward);
    } else {
      // Every rank runs it (a bad input fails on all; writing the results, on rank 0): one message.
      collectively(ctx.comm, [&] {
        if (mc) multiple_choice(deck, *forward, *tokenizer, *mc, loaded.source, ctx.comm);
        else perplexity(deck, *forward, *tokenizer, ctx.comm);
      });
    }
    out_dir.keep();
  });
}
