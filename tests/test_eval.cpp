// Multiple-choice evaluation against lm-evaluation-harness: tests/fixtures/eval/lm_eval_reference.json holds what
// lm-eval 0.4 (HFLM) computed on the shipped samples with the model in tests/fixtures/eval/model
// (scripts/oracle/check_lm_eval.py); the prompts, tokens, log-likelihoods and metrics here must be the same.
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <cmath>
#include <fstream>

#include "eval/multiple_choice.hpp"
#include "eval/perplexity.hpp"
#include "io/tokenizer.hpp"
#include "model/hf_checkpoint.hpp"
#include "model/model.hpp"
#include "parallel/comm.hpp"
#include "support.hpp"

using namespace jetmoe;
using namespace jetmoe::eval;
using jetmoe::testing::error_of;
using jetmoe::testing::write_temp_file;

namespace {

const std::string eval_fixtures = std::string(JETMOE_SOURCE_DIR) + "/tests/fixtures/eval";

nlohmann::json load_reference() {
  std::ifstream in(eval_fixtures + "/lm_eval_reference.json");
  REQUIRE(in.good());
  return nlohmann::json::parse(in);
}

bool same_metric(const nlohmann::json& ref, const std::optional<double>& ours) {
  if (ref.is_string()) return !ours;  // lm-eval's "N/A"
  return ours && std::fabs(*ours - ref.get<double>()) <= 1e-12 * std::max(1.0, std::fabs(ref.get<double>()));
}

}  // namespace

TEST_CASE("multiple-choice prompts, tokens, log-likelihoods and metrics equal lm-evaluation-harness", "[unit][eval]") {
  const nlohmann::json ref = load_reference();
  const std::string model_dir = eval_fixtures + "/model";
  const ModelConfig config = load_hf_config(model_dir);
  REQUIRE(config.max_position_embeddings == ref["max_length"].get<std::int64_t>());
  Model model(config, load_hf_weights(model_dir, config));
  ModelForward forward(model);
  const io::Tokenizer tok(model_dir + "/tokenizer.model");

  double worst = 0;
  std::size_t requests_checked = 0;
  for (const auto& run : ref["runs"]) {
    const std::string fmt = run["format"];
    const std::int64_t shots = run["num_fewshot"];
    INFO("format " << fmt << ", " << shots << "-shot");
    const McFile file = read_mc_jsonl(eval_fixtures + "/" + run["input"].get<std::string>(), McFormat::Auto);
    CHECK(mc_format_name(file.format) == fmt);
    std::optional<McFile> pool;
    if (!run["fewshot_input"].is_null())
      pool = read_mc_jsonl(eval_fixtures + "/" + run["fewshot_input"].get<std::string>(), file.format);
    McOptions options;
    options.num_fewshot = shots;
    options.fewshot_seed = run["fewshot_seed"].get<std::uint64_t>();
    options.fewshot_pool = pool ? &*pool : nullptr;
    options.batch_size = 3;  // batches of unequal lengths: right padding must not change a score
    const McReport report = evaluate_mc(forward, tok, file, options);

    // per question, in file order within each task (mmlu: per subject); the reference is in line order
    std::vector<const McDocResult*> by_line;
    for (const auto& d : report.docs) by_line.push_back(&d);
    std::sort(by_line.begin(), by_line.end(),
              [&](auto* a, auto* b) { return file.docs[a->doc].line < file.docs[b->doc].line; });
    REQUIRE(by_line.size() == run["docs"].size());
    std::size_t first_request = 0;
    std::vector<std::size_t> request_start(file.docs.size());
    for (const auto& d : report.docs) request_start[d.doc] = first_request, first_request += d.loglikelihoods.size();
    for (std::size_t i = 0; i < by_line.size(); ++i) {
      const auto& want = run["docs"][i];
      const McDocResult& got = *by_line[i];
      const McDoc& doc = file.docs[got.doc];
      INFO("line " << doc.line);
      REQUIRE(doc.line == want["line"].get<std::int64_t>());
      CHECK(doc.task == want["task"].get<std::string>());
      CHECK(doc.choices == want["choices"].get<std::vector<std::string>>());
      CHECK(doc.gold == want["gold"].get<std::size_t>());
      REQUIRE(got.loglikelihoods.size() == want["requests"].size());
      for (std::size_t c = 0; c < got.loglikelihoods.size(); ++c) {
        const auto& wr = want["requests"][c];
        const McRequest& r = report.requests[request_start[got.doc] + c];
        const auto& wc = want["contexts"][wr["context"].get<std::size_t>()];
        INFO("choice " << c);
        CHECK(r.context == wc["text"].get<std::string>());
        CHECK(r.continuation == wr["continuation"].get<std::string>());
        CHECK(r.context_ids == wc["ids"].get<std::vector<std::int32_t>>());
        CHECK(r.continuation_ids == wr["continuation_ids"].get<std::vector<std::int32_t>>());
        const double ll = wr["loglikelihood"];
        const double rel = std::fabs(r.loglikelihood - ll) / std::fabs(ll);
        worst = std::max(worst, rel);
        CHECK(rel <= 1e-4);
        ++requests_checked;
      }
      CHECK(got.acc == want["acc"].get<double>());
      CHECK(got.acc_norm == want["acc_norm"].get<double>());
    }
    REQUIRE(report.tasks.size() == run["tasks"].size());
    for (const McTaskMetrics& m : report.tasks) {
      INFO("task " << m.task);
      REQUIRE(run["tasks"].contains(m.task));
      const auto& w = run["tasks"][m.task];
      CHECK(m.n == w["n"].get<std::int64_t>());
      CHECK(same_metric(w["acc"], m.acc));
      CHECK(same_metric(w["acc_norm"], m.acc_norm));
      CHECK(same_metric(w["acc_stderr"], m.acc_stderr));
      CHECK(same_metric(w["acc_norm_stderr"], m.acc_norm_stderr));
    }
  }
  CHECK(requests_checked == 314);
  INFO("max relative log-likelihood difference " << worst);
  CHECK(worst <= 1e-4);
}

TEST_CASE("truthfulqa-mc is zero-shot whatever num_fewshot says, as in lm-eval", "[unit][eval]") {
  const std::string model_dir = eval_fixtures + "/model";
  const io::Tokenizer tok(model_dir + "/tokenizer.model");
  const McFile file = read_mc_jsonl(eval_fixtures + "/truthfulqa-mc.jsonl", McFormat::TruthfulQaMc);
  McOptions zero, two;
  two.num_fewshot = 2;
  const auto a = build_mc_requests(file, zero, tok), b = build_mc_requests(file, two, tok);
  REQUIRE(a.size() == b.size());
  for (std::size_t i = 0; i < a.size(); ++i) CHECK(a[i].context == b[i].context);
}

TEST_CASE("few-shot examples from the evaluated file leave the question out, limit is per task", "[unit][eval]") {
  const io::Tokenizer tok(eval_fixtures + "/model/tokenizer.model");
  for (const char* name : {"arc", "hellaswag", "mmlu", "winogrande"}) {
    INFO(name);
    const McFile file = read_mc_jsonl(eval_fixtures + "/" + name + ".jsonl", McFormat::Auto);
    McOptions options;
    options.num_fewshot = 2;
    std::vector<std::size_t> docs;
    const auto requests = build_mc_requests(file, options, tok, &docs);
    CHECK(docs.size() == file.docs.size());
    for (const McRequest& r : requests) {
      const McDoc& d = file.docs[r.doc];
      // the question's own solved form is not among its examples
      const std::string own = d.multiple_input ? d.choices[d.gold] + " " + d.target : d.text + " " + d.choices[d.gold];
      CHECK(r.context.find(own + "\n\n") == std::string::npos);
      CHECK(std::count(r.context.begin(), r.context.end(), '\n') >= 4);  // two examples, each ending in "\n\n"
    }
    options.limit = 2;
    build_mc_requests(file, options, tok, &docs);
    CHECK(docs.size() == (std::string(name) == "mmlu" ? 4u : 2u));  // mmlu: 2 per subject
  }
}

TEST_CASE("Python's random.Random: the draws lm-eval's few-shot sampler makes", "[unit][eval]") {
  // values printed by CPython 3.11: random.Random(seed).getrandbits(32) ..., .sample(range(n), k)
  PyRandom r(1234);
  CHECK(r.getrandbits(32) == 4150886329u);
  CHECK(r.getrandbits(32) == 3342196574u);
  CHECK(r.getrandbits(32) == 1892932127u);
  CHECK(r.getrandbits(5) == 3u);
  CHECK(r.getrandbits(0) == 0u);
  PyRandom zero(0);
  CHECK(zero.getrandbits(32) == 3626764237u);
  CHECK(zero.getrandbits(32) == 1654615998u);
  PyRandom wide((1ull << 40) + 5);  // two key words
  CHECK(wide.getrandbits(32) == 2166296868u);
  CHECK(wide.getrandbits(32) == 2220160828u);
  PyRandom s(1234);
  CHECK(s.sample(10, 3) == std::vector<std::size_t>{7, 1, 0});
  CHECK(s.sample(100, 7) == std::vector<std::size_t>{11, 74, 4, 85, 88, 10, 12});  // the set-based branch
  CHECK(s.sample(5, 5) == std::vector<std::size_t>{2, 1, 0, 4, 3});
  CHECK(s.sample(1, 1) == std::vector<std::size_t>{0});
  CHECK(s.sample(1000, 3) == std::vector<std::size_t>{663, 638, 495});
}

TEST_CASE("Python string operations of lm-eval's prompts", "[unit][eval]") {
  CHECK(py_capitalize(" Then John Smith") == " then john smith");
  CHECK(py_capitalize("ÉCOLE ÀB") == "École àb");
  CHECK(py_capitalize("ßa") == "Ssa");
  CHECK(py_capitalize("") == "");
  CHECK(py_strip("\u00a0 x \u3000") == "x");
  CHECK(py_strip(" \t\n") == "");
  CHECK(utf8_length("café —") == 6);
  // lm-eval tasks/hellaswag/utils.py preprocess
  CHECK(hellaswag_preprocess(" Intro [title] Step one [step] more  text ") == "Intro. Step one more text");
  CHECK(hellaswag_preprocess("[header] a [b\nc] d") == " a [b\nc] d");
  CHECK(hellaswag_preprocess("x [unclosed") == "x [unclosed");
}

TEST_CASE("multiple-choice rows: one error naming file, line and field", "[unit][eval]") {
  struct Case {
    const char* name;
    McFormat format;
    const char* row;
    const char* message;
  };
  const Case cases[] = {
      {"hellaswag-label", McFormat::Auto,
       R"({"activity_label": "a", "ctx_a": "b", "ctx_b": "c", "endings": ["x", "y"], "label": "7"})",
       ":2: hellaswag row: field \"label\" must be in [0, 1], found \"7\""},
      {"hellaswag-missing", McFormat::HellaSwag, R"({"activity_label": "a", "ctx_b": "c", "endings": ["x", "y"], "label": 0})",
       ":2: hellaswag row: missing field \"ctx_a\""},
      {"arc-key", McFormat::Auto,
       R"({"question": "q", "choices": {"text": ["x", "y"], "label": ["A", "B"]}, "answerKey": "C"})",
       ":2: arc row: \"answerKey\" \"C\" is not one of \"choices.label\" [\"A\",\"B\"]"},
      {"arc-text", McFormat::Arc, R"({"question": "q", "choices": {"label": ["A", "B"]}, "answerKey": "A"})",
       ":2: arc row: missing field \"choices.text\""},
      {"mmlu-choices", McFormat::Auto, R"({"question": "q", "subject": "s", "choices": ["a", "b"], "answer": 0})",
       ":2: mmlu row: field \"choices\" must be a list of 4 strings"},
      {"mmlu-answer", McFormat::Mmlu, R"({"question": "q", "subject": "s", "choices": ["a", "b", "c", "d"], "answer": "B"})",
       ":2: mmlu row: field \"answer\" must be an integer, found \"B\""},
      {"winogrande-blank", McFormat::Auto, R"({"sentence": "no blank", "option1": "a", "option2": "b", "answer": "1"})",
       ":2: winogrande row: field \"sentence\" has no blank '_'"},
      {"winogrande-answer", McFormat::WinoGrande, R"({"sentence": "a _ b", "option1": "a", "option2": "b", "answer": "3"})",
       ":2: winogrande row: field \"answer\" must be in [1, 2], found \"3\""},
      {"truthfulqa-labels", McFormat::Auto, R"({"question": "q", "mc1_targets": {"choices": ["a", "b"], "labels": [1, 1]}})",
       ":2: truthfulqa-mc row: field \"mc1_targets.labels\" must be 2 zeros and ones (one per choice) with exactly one 1"},
      {"unknown", McFormat::Auto, R"({"prompt": "q"})", ":2: cannot tell the multiple-choice format"},
      {"not-json", McFormat::Arc, R"({"question": )", ":2: not a JSON object"},
  };
  for (const Case& c : cases) {
    INFO(c.name);
    // line 1 is blank (skipped), line 2 the row
    const std::string path = write_temp_file(std::string("mc-") + c.name + ".jsonl", std::string("\n") + c.row + "\n");
    const std::string msg = error_of([&] { read_mc_jsonl(path, c.format); }, ErrorKind::Input);
    CHECK_THAT(msg, Catch::Contains(path + c.message));
  }
  // the format of a file is that of its first row: a later row of another format is an error in that format
  const std::string mixed = write_temp_file(
      "mc-mixed.jsonl", std::string(R"({"question": "q", "choices": {"text": ["x", "y"], "label": ["A", "B"]}, "answerKey": "A"})") +
                            "\n" + R"({"sentence": "a _ b", "option1": "a", "option2": "b", "answer": "1"})" + "\n");
  CHECK_THAT(error_of([&] { read_mc_jsonl(mixed, McFormat::Auto); }, ErrorKind::Input),
             Catch::Contains(mixed + ":2: arc row: missing field \"question\""));
  const std::string empty = write_temp_file("mc-empty.jsonl", "\n\n");
  CHECK_THAT(error_of([&] { read_mc_jsonl(empty, McFormat::Auto); }, ErrorKind::Input), Catch::Contains("no questions"));
}

TEST_CASE("a few-shot pool too small for num_fewshot is an error naming the question", "[unit][eval]") {
  const io::Tokenizer tok(eval_fixtures + "/model/tokenizer.model");
  const McFile file = read_mc_jsonl(eval_fixtures + "/winogrande.jsonl", McFormat::Auto);
  const McFile pool = read_mc_jsonl(eval_fixtures + "/winogrande_fewshot.jsonl", McFormat::Auto);
  McOptions options;
  options.num_fewshot = 4;  // winogrande draws num_fewshot + 1 = 5 from a pool of 4
  options.fewshot_pool = &pool;
  CHECK_THAT(error_of([&] { build_mc_requests(file, options, tok); }, ErrorKind::Input),
             Catch::Contains("winogrande.jsonl:1: eval/num_fewshot = 4 needs 5 winogrande questions in the few-shot pool"));
}

TEST_CASE("tokens of a request: trailing context spaces move to the continuation, an empty context is BOS",
          "[unit][eval]") {
  const io::Tokenizer tok(eval_fixtures + "/model/tokenizer.model");
  // winogrande with the blank first and an empty first option: that choice's context is empty
  const std::string path = write_temp_file(
      "mc-empty-context.jsonl", R"({"sentence": "_ fell asleep early.", "option1": "", "option2": "Ravi ", "answer": "2"})" "\n");
  const McFile file = read_mc_jsonl(path, McFormat::Auto);
  const auto requests = build_mc_requests(file, McOptions{}, tok);
  REQUIRE(requests.size() == 2);
  CHECK(requests[0].context.empty());
  CHECK(requests[0].context_ids == std::vector<std::int32_t>{tok.bos_id()});
  CHECK(requests[0].continuation_ids == tok.encode(" fell asleep early.", false));
  CHECK(requests[1].context == "Ravi ");
  CHECK(requests[1].context_ids == tok.encode("Ravi"));  // "Ravi " + " fell..." is encoded as "Ravi" + "  fell..."
  const auto whole = tok.encode("Ravi  fell asleep early.");
  CHECK(requests[1].continuation_ids ==
        std::vector<std::int32_t>(whole.begin() + std::ptrdiff_t(requests[1].context_ids.size()), whole.end()));
}

TEST_CASE("one question per task: stderr N/A in the table and null in the JSON", "[unit][eval]") {
  const std::string model_dir = eval_fixtures + "/model";
  const ModelConfig config = load_hf_config(model_dir);
  Model model(config, load_hf_weights(model_dir, config));
  ModelForward forward(model);
  const io::Tokenizer tok(model_dir + "/tokenizer.model");
  const McFile file = read_mc_jsonl(eval_fixtures + "/mmlu.jsonl", McFormat::Auto);
  McOptions options;
  options.limit = 1;  // one question of each subject
  const McReport report = evaluate_mc(forward, tok, file, options);
  REQUIRE(report.tasks.size() == 3);
  CHECK(report.tasks[2].task == "mmlu");
  CHECK(report.tasks[2].n == 2);
  for (const auto& m : report.tasks) CHECK_FALSE(m.acc_stderr);
  CHECK_THAT(mc_results_table(report), Catch::Contains("| mmlu_astronomy           |    1 |") &&
                                           Catch::Contains(" ± N/A"));
  const auto j = nlohmann::json::parse(mc_results_json(report, file, options, "test model"));
  CHECK(j["results"]["mmlu_astronomy"]["acc_stderr"].is_null());
  CHECK(j["examples"].size() == 2);
  CHECK(j["examples"][0]["line"] == 1);
  CHECK(j["examples"][1]["line"] == 4);
  CHECK(j["examples"][0]["loglikelihoods"].size() == 4);
  CHECK(j["precision"] == "fp32");
  CHECK(j["matrix_products"] == forward.matrix_products());
}

namespace {
// A forward with closed-form log-probabilities: target y at position t of its window scores
// -(1 + y % 7) / 8 - t / 64. It records the batches it is given.
class ClosedFormForward final : public LmForward {
 public:
  const ModelConfig& config() const override { return config_; }
  std::string precision() const override { return "fp32"; }
  std::string matrix_products() const override { return "host BLAS \"quoted\" \\ (1 thread)"; }
  void logits(const TokenBatch&, float*) override { FAIL("perplexity needs no logits"); }
  std::vector<double> target_logprobs(const TokenBatch& batch, const std::vector<std::int32_t>& targets) override {
    batches.emplace_back(batch.n, batch.T);
    REQUIRE(targets.size() == std::size_t(batch.n * batch.T));
    std::vector<double> out(targets.size());
    for (std::size_t i = 0; i < targets.size(); ++i)
      out[i] = targets[i] < 0 ? 0.0 : -(1.0 + targets[i] % 7) / 8.0 - double(std::int64_t(i) % batch.T) / 64.0;
    return out;
  }
  std::vector<std::pair<std::int64_t, std::int64_t>> batches;

 private:
  ModelConfig config_;
};
}  // namespace

TEST_CASE("perplexity: windows that do not overlap, each predicting its tokens after the first, in any batch size",
          "[unit][eval]") {
  std::vector<std::int32_t> ids;
  for (std::int32_t i = 0; i < 11; ++i) ids.push_back(3 * i + 1);
  // Windows of 4: [0, 4), [4, 8), [8, 11); window w's token t + 1 is predicted at position t.
  double nll = 0;
  std::int64_t predicted = 0;
  for (std::size_t start = 0; start < ids.size(); start += 4)
    for (std::size_t t = 0; t + 1 < 4 && start + t + 1 < ids.size(); ++t)
      nll += (1.0 + ids[start + t + 1] % 7) / 8.0 + double(t) / 64.0, ++predicted;
  REQUIRE(predicted == 8);
  for (const std::int64_t batch_size : {1, 2, 3, 5}) {
    INFO("batch size " << batch_size);
    ClosedFormForward f;
    const PerplexityResult r = perplexity(f, ids, 4, batch_size);
    CHECK(r.predicted == predicted);
    CHECK(r.nll == Approx(nll).epsilon(1e-15));
    CHECK(r.mean_nll() == Approx(nll / 8).epsilon(1e-15));
    // Full windows go batch_size at a time, the shorter last one alone.
    const std::vector<std::pair<std::int64_t, std::int64_t>> expected =
        batch_size == 1   ? std::vector<std::pair<std::int64_t, std::int64_t>>{{1, 4}, {1, 4}, {1, 3}}
                          : std::vector<std::pair<std::int64_t, std::int64_t>>{{2, 4}, {1, 3}};
    CHECK(f.batches == expected);
  }
  // A last window of one token predicts nothing and is not run; a window longer than the text is one.
  ClosedFormForward f;
  ids.resize(9);
  CHECK(perplexity(f, ids, 4, 8).predicted == 6);
  CHECK(f.batches == std::vector<std::pair<std::int64_t, std::int64_t>>{{2, 4}});
  CHECK(perplexity(f, ids, 100, 1).predicted == 8);

  // The results file: valid JSON whatever the path holds, doubles that read back to the same bits.
  const PerplexityResult r = perplexity(f, ids, 4, 1);
  const std::string input = "dir with \"quotes\"\\and\tcontrol/text.txt";
  const auto j = nlohmann::json::parse(perplexity_results_json(r, input, 4, f));
  CHECK(j["task"] == "perplexity");
  CHECK(j["input"] == input);
  CHECK(j["tokens_predicted"] == 6);
  CHECK(j["mean_nll"].get<double>() == r.mean_nll());
  CHECK(j["perplexity"].get<double>() == r.perplexity());
  CHECK(j["context"] == 4);
  CHECK(j["precision"] == "fp32");
  CHECK(j["matrix_products"] == f.matrix_products());
}

TEST_CASE("evaluation batches dealt out over the ranks give every rank one rank's results", "[unit][mpi][eval]") {
  const Comm world = Comm::world();
  const int P = world.size(), me = world.rank();
  // Batch k has k values (batch 0 none), k + i / 8: every rank gets all of them, each batch run once,
  // on rank k mod P.
  std::vector<std::size_t> ran;
  const auto values = run_batches_over_ranks(world, 7, [&](std::size_t k) {
    ran.push_back(k);
    std::vector<double> v;
    for (std::size_t i = 0; i < k; ++i) v.push_back(double(k) + double(i) / 8.0);
    return v;
  });
  REQUIRE(values.size() == 7);
  for (std::size_t k = 0; k < 7; ++k) {
    REQUIRE(values[k].size() == k);
    for (std::size_t i = 0; i < k; ++i) CHECK(values[k][i] == double(k) + double(i) / 8.0);
  }
  for (const std::size_t k : ran) CHECK(int(k % std::size_t(P)) == me);
  CHECK(ran.size() == (7 - std::size_t(me) + std::size_t(P) - 1) / std::size_t(P));
  // A batch that fails on its rank fails on every rank, with its message.
  CHECK_THROWS_WITH(run_batches_over_ranks(world, 3,
                                           [](std::size_t k) -> std::vector<double> {
                                             if (k == 1) fail(ErrorKind::Input, "batch 1 cannot be scored");
                                             return {};
                                           }),
                    Catch::Matchers::Contains("batch 1 cannot be scored"));

  // Perplexity (closed-form log-probabilities) over the ranks: one rank's sum, bit for bit.
  std::vector<std::int32_t> ids;
  for (std::int32_t i = 0; i < 37; ++i) ids.push_back((5 * i + 3) % 97);
  ClosedFormForward alone, shared;
  const PerplexityResult one = perplexity(alone, ids, 4, 2), all = perplexity(shared, ids, 4, 2, world);
  CHECK(all.predicted == one.predicted);
  CHECK(all.nll == one.nll);
  CHECK(int(shared.batches.size()) == (5 - me + P - 1) / P);  // 5 batches: 4 of 2 windows of 4, then 1 window (the 37th token, alone, predicts nothing)

  // Multiple choice with the fixture model: every log-likelihood that of one rank, bit for bit.
  const std::string model_dir = eval_fixtures + "/model";
  const ModelConfig config = load_hf_config(model_dir);
  Model model(config, load_hf_weights(model_dir, config));
  ModelForward forward(model);
  const io::Tokenizer tok(model_dir + "/tokenizer.model");
  const McFile file = read_mc_jsonl(eval_fixtures + "/hellaswag.jsonl", McFormat::Auto);
  McOptions options;
  options.batch_size = 3;
  const McReport a = evaluate_mc(forward, tok, file, options), b = evaluate_mc(forward, tok, file, options, world);
  REQUIRE(a.requests.size() == b.requests.size());
  REQUIRE(a.requests.size() > 6);
  for (std::size_t i = 0; i < a.requests.size(); ++i) CHECK(a.requests[i].loglikelihood == b.requests[i].loglikelihood);
  REQUIRE(a.tasks.size() == b.tasks.size());
  for (std::size_t t = 0; t < a.tasks.size(); ++t) CHECK(a.tasks[t].acc_norm == b.tasks[t].acc_norm);
}
