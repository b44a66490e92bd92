// jetmoe-eval: perplexity, multiple-choice log-likelihood scoring, logits dumps.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "core/app.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/profiling.hpp"
#include "eval/multiple_choice.hpp"
#include "io/atomic_file.hpp"
#include "io/npy.hpp"
#include "model/load.hpp"
#include "model/model.hpp"
#include "parallel/comm.hpp"

namespace fs = std::filesystem;

namespace {

using namespace jetmoe;

std::string output_path(const Deck& deck) {
  const fs::path out = deck.get_string("eval", "output");
  return out.is_absolute() ? out.string() : (fs::path(deck.get_string("job", "output_dir")) / out).string();
}

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
                                   "), found '" + w + "'");
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

IntView2 to_device(const std::vector<std::vector<std::int32_t>>& seqs, std::size_t first, std::size_t count, std::size_t T) {
  IntView2 ids("ids", count, T);
  auto h = Kokkos::create_mirror_view(ids);
  for (std::size_t b = 0; b < count; ++b)
    for (std::size_t t = 0; t < T; ++t) h(b, t) = seqs[first + b][t];
  Kokkos::deep_copy(ids, h);
  return ids;
}

void dump_logits(const Deck& deck, Model& model) {
  const ModelConfig& c = model.config();
  const std::string input = deck.get_string("eval", "input");
  const auto seqs = read_token_ids(deck, input, c.vocab_size);
  const std::size_t B = seqs.size(), T = seqs[0].size();
  if (std::int64_t(T) > c.max_position_embeddings)
    fail(ErrorKind::Input, input + ": sequences of " + std::to_string(T) + " tokens exceed the model's context of " +
                               std::to_string(c.max_position_embeddings));
  const std::string out = output_path(deck);
  if (fs::path(out).extension() != ".npy") deck.fail_value("eval", "output", "task logits writes a .npy file, found '" + out + "'");
  const std::size_t V = std::size_t(c.vocab_size), batch = std::size_t(deck.get_int("eval", "batch_size"));
  std::vector<float> all(B * T * V);
  for (std::size_t first = 0; first < B; first += batch) {
    const std::size_t n = std::min(batch, B - first);
    KvCache cache(c, std::int64_t(n), std::int64_t(T));
    View2 logits("logits", n * T, V);
    model.forward(to_device(seqs, first, n, T), cache, logits);
    auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), logits);
    std::copy(h.data(), h.data() + h.size(), all.begin() + std::ptrdiff_t(first * T * V));
  }
  fs::create_directories(fs::path(out).parent_path().empty() ? fs::path(".") : fs::path(out).parent_path());
  io::write_npy(out, {std::int64_t(B), std::int64_t(T), std::int64_t(V)}, all.data());
  log::info("wrote logits [%zu, %zu, %zu] (float32) to %s", B, T, V, out.c_str());
}

void perplexity(const Deck& deck, Model& model, const io::Tokenizer& tok) {
  const ModelConfig& c = model.config();
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
  if (ids.size() < 2) fail(ErrorKind::Input, input + ": fewer than 2 tokens, nothing to predict");
  // Non-overlapping windows; each predicts its tokens 1..n-1 from the ones before.
  double nll = 0;
  std::int64_t predicted = 0;
  const std::int64_t V = c.vocab_size;
  for (std::size_t start = 0; start + 1 < ids.size(); start += std::size_t(window)) {
    const std::size_t n = std::min<std::size_t>(std::size_t(window), ids.size() - start);
    if (n < 2) break;
    std::vector<std::vector<std::int32_t>> one{std::vector<std::int32_t>(ids.begin() + std::ptrdiff_t(start),
                                                                          ids.begin() + std::ptrdiff_t(start + n))};
    KvCache cache(c, 1, std::int64_t(n));
    View2 logits("logits", n, V);
    model.forward(to_device(one, 0, 1, n), cache, logits);
    auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), logits);
    for (std::size_t t = 0; t + 1 < n; ++t) {
      double m = -1e300, z = 0;
      for (std::int64_t v = 0; v < V; ++v) m = std::max(m, double(h(t, v)));
      for (std::int64_t v = 0; v < V; ++v) z += std::exp(double(h(t, v)) - m);
      nll += m + std::log(z) - double(h(t, one[0][t + 1]));
      ++predicted;
    }
  }
  const double mean = nll / double(predicted);
  log::info("perplexity of %s: %.4f (mean NLL %.6f nats over %lld predicted tokens, windows of %lld tokens)", input.c_str(),
            std::exp(mean), mean, (long long)predicted, (long long)window);
  const std::string out = output_path(deck);
  fs::create_directories(fs::path(out).parent_path().empty() ? fs::path(".") : fs::path(out).parent_path());
  std::ostringstream json;
  json << "{\n  \"task\": \"perplexity\",\n  \"input\": \"" << input << "\",\n  \"tokens_predicted\": " << predicted
       << ",\n  \"mean_nll\": " << mean << ",\n  \"perplexity\": " << std::exp(mean) << ",\n  \"context\": " << window
       << "\n}\n";
  io::write_text_atomically(out, json.str());
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
  if (const auto pool = deck.find_string("eval", "fewshot_input")) {
    if (!fs::exists(*pool)) deck.fail_value("eval", "fewshot_input", "'" + *pool + "' does not exist");
    in.pool = eval::read_mc_jsonl(*pool, in.file.format);
    pool_text = ", few-shot pool " + in.pool->path + " (" + std::to_string(in.pool->docs.size()) + ")";
  }
  log::info("%s: %zu %s questions%s", in.file.path.c_str(), in.file.docs.size(),
            eval::mc_format_name(in.file.format).c_str(), pool_text.c_str());
  return in;
}

void multiple_choice(const Deck& deck, Model& model, const io::Tokenizer& tok, const McInputs& in,
                     const std::string& model_source) {
  eval::McOptions options;
  options.num_fewshot = deck.get_int("eval", "num_fewshot");
  options.fewshot_seed = std::uint64_t(deck.get_int("eval", "fewshot_seed"));
  options.fewshot_pool = in.pool ? &*in.pool : nullptr;
  options.limit = deck.get_int("eval", "limit");
  options.batch_size = deck.get_int("eval", "batch_size");
  options.add_bos = deck.get_bool("tokenizer", "add_bos");
  const eval::McReport report = eval::evaluate_mc(model, tok, in.file, options);
  log::info("%zu questions, %zu log-likelihood requests, %lld-shot:", report.docs.size(), report.requests.size(),
            (long long)(in.file.format == eval::McFormat::TruthfulQaMc ? 0 : options.num_fewshot));
  log::text(eval::mc_results_table(report));
  const std::string out = output_path(deck);
  fs::create_directories(fs::path(out).parent_path().empty() ? fs::path(".") : fs::path(out).parent_path());
  io::write_text_atomically(out, eval::mc_results_json(report, in.file, options, model_source));
  log::info("wrote %s", out.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  const jetmoe::AppSpec spec{"jetmoe-eval",
                             "Evaluate a JetMoE model: perplexity, multiple-choice accuracy, or logits to .npy.",
                             {"job", "model", "tokenizer", "eval"},
                             /*takes_restart=*/false,
                             "Examples:\n"
                             "  jetmoe-eval -i inputs/tiny.deck model/weights=/models/jetmoe-8b eval/task=perplexity eval/input=valid.txt\n"
                             "  jetmoe-eval -i inputs/tiny.deck model/weights=/models/jetmoe-8b eval/task=multiple-choice "
                             "eval/input=hellaswag.jsonl eval/num_fewshot=10 eval/fewshot_input=hellaswag_train.jsonl\n"
                             "  jetmoe-eval -i inputs/tiny.deck model/weights=/models/jetmoe-8b eval/task=logits eval/input=ids.txt "
                             "eval/output=logits.npy"};
  return jetmoe::run_app(argc, argv, spec, [](jetmoe::AppContext& ctx) {
    using namespace jetmoe;
    const Deck& deck = ctx.deck;
    const std::string task = deck.get_string("eval", "task");
    const std::string input = deck.get_string("eval", "input");  // required
    const ModelConfig config = ModelConfig::from_deck(deck);
    if (ctx.command_line.check_only) {
      log::info("model: %s", config.summary().c_str());
      log::info("deck is valid.");
      return;
    }
    if (!fs::exists(input)) deck.fail_value("eval", "input", "'" + input + "' does not exist");
    std::optional<McInputs> mc;
    if (task == "multiple-choice") mc = read_mc_inputs(deck);
    LoadedModel loaded = load_model(deck);
    log::info("model: %s; weights: %s", loaded.config.summary().c_str(), loaded.source.c_str());
    auto tokenizer = load_tokenizer(deck, loaded.config, /*required=*/task != "logits");
    Model model(loaded.config, std::move(loaded.weights));
    if (!ctx.comm.is_root()) return;  // evaluation runs on rank 0
    Region region(task);
    if (task == "logits") dump_logits(deck, model);
    else if (mc) multiple_choice(deck, model, *tokenizer, *mc, loaded.source);
    else perplexity(deck, model, *tokenizer);
  });
}
