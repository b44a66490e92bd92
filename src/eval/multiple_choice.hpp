#pragma once
// Multiple-choice evaluation by log-likelihood, as lm-evaluation-harness (lm-eval 0.4, HF backend) does it:
// the same prompt strings from the same dataset rows, the same few-shot draws, the same tokenisation of
// (context, continuation) pairs, the same metrics. tests/fixtures/eval/lm_eval_reference.json is what lm-eval
// itself computed on the shipped samples (scripts/oracle/check_lm_eval.py); tests/test_eval.cpp compares.
//
// Formats (rows as the HF datasets publish them, read the way lm-eval's task configs read them):
//   hellaswag      activity_label, ctx_a, ctx_b, endings, label      query = preprocess(activity_label + ": " +
//                  ctx_a + " " + capitalize(ctx_b)), choices = preprocess(endings)   (lm-eval's hellaswag/utils.py)
//   arc            question, choices.text, choices.label, answerKey   "Question: {question}\nAnswer:"
//   mmlu           question, choices (4), answer (0-3), subject       description "The following are multiple
//                  choice questions (with answers) about {subject}.\n\n", "{question.strip()}\nA. ..\nD. ..\nAnswer:",
//                  choices "A".."D"; one task per subject (mmlu_<subject>) plus the size-weighted group "mmlu"
//   winogrande     sentence, option1, option2, answer ("1"/"2")      partial evaluation: the contexts are the
//                  sentence up to the blank with each option, the one continuation is the rest of the sentence
//   truthfulqa-mc  question, mc1_targets.choices/labels              lm-eval's fixed six-QA preamble + "Q: ..\nA:";
//                  zero-shot only (lm-eval's config fixes num_fewshot = 0)
// Requests: (context, " " + choice) per choice (winogrande: (prefix + choice, " " + rest)); a context is the
// description, then num_fewshot solved examples each followed by "\n\n", then the question.
//
// Few-shot examples are drawn as lm-eval's samplers draw them, with Python's random.Random(fewshot_seed) (one
// generator per task, questions in file order): random.sample(pool, k) from the pool, where k = num_fewshot + 1
// and the evaluated question is then removed (first num_fewshot kept) when lm-eval's config passes the question to
// its sampler (hellaswag, winogrande, truthfulqa-mc: configs without a test split) or when the pool is the
// evaluated file itself; arc samples num_fewshot from a separate pool; mmlu takes the first num_fewshot of its
// subject's pool (lm-eval's first_n sampler on the dev split).
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "eval/forward.hpp"

namespace jetmoe::io {
class Tokenizer;
}

namespace jetmoe::eval {

enum class McFormat { Auto, HellaSwag, Arc, Mmlu, WinoGrande, TruthfulQaMc };

McFormat parse_mc_format(const std::string& name);  // the eval/format choices: auto, hellaswag, arc, ...
std::string mc_format_name(McFormat format);

// One question as lm-eval's task config renders it.
struct McDoc {
  std::string task;                  // hellaswag, arc, mmlu_<subject>, winogrande, truthfulqa_mc1
  std::int64_t line = 0;             // 1-based line of its file
  std::string row;                   // the row as canonical JSON (lm-eval removes a question equal to the evaluated one)
  std::string description;           // mmlu's subject sentence, else empty
  std::string text;                  // doc_to_text (winogrande: unused, the choices are the contexts)
  std::vector<std::string> choices;  // doc_to_choice
  std::string target;                // winogrande: doc_to_target, the sentence after the blank
  std::size_t gold = 0;
  bool multiple_input = false;       // winogrande: one context per choice, one continuation
};

struct McFile {
  std::string path;
  McFormat format = McFormat::Auto;  // as detected
  std::vector<McDoc> docs;
};

// Reads a jsonl file of `format` (Auto: told by the fields of the first row). A line that is not a JSON
// object, a missing field or one of the wrong type or value is one ErrorKind::Input "path:line: ...".
McFile read_mc_jsonl(const std::string& path, McFormat format);

// Python's random.Random: MT19937 seeded by init_by_array from the integer's 32-bit words, getrandbits,
// _randbelow and sample(range(n), k): what lm-eval's few-shot sampler calls.
class PyRandom {
 public:
  explicit PyRandom(std::uint64_t seed);
  std::uint32_t getrandbits(int k);  // 0 <= k <= 32
  std::uint64_t randbelow(std::uint64_t n);
  std::vector<std::size_t> sample(std::size_t n, std::size_t k);  // random.sample(range(n), k)

 private:
  std::uint32_t next();
  std::uint32_t mt_[624];
  int index_ = 624;
};

struct McOptions {
  std::int64_t num_fewshot = 0;
  std::uint64_t fewshot_seed = 1234;  // lm-eval's default fewshot_random_seed
  const McFile* fewshot_pool = nullptr;  // nullptr: the evaluated file itself
  std::int64_t limit = 0;             // questions per task (0: all), as lm-eval's --limit
  std::int64_t batch_size = 4;        // sequences per forward pass
  bool add_bos = true;                // tokenizer/add_bos
};

// One (context, continuation) pair and its tokens as lm-eval's HF backend makes them: trailing whitespace of the
// context moves to the continuation, then context and context + continuation are encoded (BOS unless the text
// starts with "<s>") and the continuation's tokens are what the whole has beyond the context's.
struct McRequest {
  std::size_t doc = 0, choice = 0;
  std::string context, continuation;
  std::vector<std::int32_t> context_ids, continuation_ids;
  double loglikelihood = 0;
};

struct McDocResult {
  std::size_t doc = 0;  // index into the evaluated McFile's docs
  std::vector<double> loglikelihoods;
  std::vector<std::size_t> choice_chars;  // len() of each choice in characters, what acc_norm divides by
  std::size_t pred = 0, pred_norm = 0;
  double acc = 0, acc_norm = 0;
};

struct McTaskMetrics {
  std::string task;
  std::int64_t n = 0;
  double acc = 0, acc_norm = 0;
  std::optional<double> acc_stderr, acc_norm_stderr;  // sample std / sqrt(n); none for n < 2 (lm-eval's N/A)
};

struct McReport {
  std::vector<McRequest> requests;     // per evaluated question, one per choice, in order
  std::vector<McDocResult> docs;       // the evaluated questions (limit applied), file order within each task
  std::vector<McTaskMetrics> tasks;    // in order of first appearance; mmlu also gets the group row "mmlu" last
  std::string precision;               // the forward's (LmForward::precision)
  std::string matrix_products;         // the forward's (LmForward::matrix_products)
};

// lm-eval's requests for the questions of `file` (few-shot contexts included), tokenised. Errors (pool too
// small, prompt longer than the context) are ErrorKind::Input naming the file and line.
std::vector<McRequest> build_mc_requests(const McFile& file, const McOptions& options, const io::Tokenizer& tokenizer,
                                         std::vector<std::size_t>* evaluated_docs = nullptr);

// Sum over the continuation's tokens of log p(token | everything before it), the sequences right-padded into
// batches. Inputs longer than the model's context keep their last max_position_embeddings + 1 tokens (HFLM).
// Under MPI (every rank of `comm` calls it) the batches are dealt out over the ranks and every rank gets
// every log-likelihood, each as one rank computes it, bit for bit.
void score_mc_requests(LmForward& forward, std::vector<McRequest>& requests, std::int64_t batch_size);
void score_mc_requests(LmForward& forward, std::vector<McRequest>& requests, std::int64_t batch_size, const Comm& comm);

// acc (argmax of the log-likelihoods), acc_norm (argmax of log-likelihood / characters of the choice), per task
// means and stderrs; mmlu's group row: size-weighted mean and lm-eval's pooled stderr over the subjects.
McReport evaluate_mc(LmForward& forward, const io::Tokenizer& tokenizer, const McFile& file,
                     const McOptions& options);
McReport evaluate_mc(LmForward& forward, const io::Tokenizer& tokenizer, const McFile& file,
                     const McOptions& options, const Comm& comm);

// "| task | n | acc | acc_norm |" Markdown table with value ± stderr.
std::string mc_results_table(const McReport& report);

// The JSON written to eval/output: settings, per-task metrics, per-question scores.
std::string mc_results_json(const McReport& report, const McFile& file, const McOptions& options,
                            const std::string& model_source);

// Python string operations lm-eval's prompts depend on, on UTF-8 text (exposed for the tests).
std::string py_strip(std::string_view s);      // str.strip(): Unicode whitespace
std::string py_capitalize(std::string_view s);  // str.capitalize() for ASCII, Latin-1 and Cyrillic letters
std::string hellaswag_preprocess(std::string_view s);
std::size_t utf8_length(std::string_view s);   // len() of a str: code points

}  // namespace jetmoe::eval
