// Evaluation on the GPU (eval/precision = bf16, src/eval/device_forward.*) against the fp32 CPU
// evaluation of the same model, through the same request building, batching and scoring code: in
// jetmoe-device-emu-tests on the emulated GPU (the real kernels on the CPU), in jetmoe-device-tests on
// a real one. The model is the lm-eval fixture (tests/fixtures/eval/model: V 400, D 48, 2 blocks) with
// its tokenizer and the shipped question samples.
//
// Tolerances, from bf16 (unit roundoff 2^-8 = 3.9e-3: the weights, every activation and the logits are
// rounded to it, so a token's log-probability moves by about 1e-2 nats, and the sum over a
// continuation's n tokens by less than n of those; measured values are printed):
//  - a request's log-likelihood within 0.05 nats per continuation token of fp32's (0.026 measured);
//  - the choice (acc and acc_norm) equals fp32's wherever fp32's best two are more than twice that bound
//    apart (clearly separated; closer ones may flip, as they do between HF's fp32 and bf16 models);
//  - perplexity: the mean NLL within 1e-2 relative;
//  - logits: exactly bf16 values; per row relative RMS against fp32 at most 3e-2 for the median row (the
//    kernels' own forward bound) and 5e-2 for 4 rows in 5 (a row whose expert choice flips at a near tie
//    moves more: 0.3 measured); a token's log-probability within 0.05 nats for the median token, 0.25
//    for the worst;
//  - exact, no tolerance: the same scores for any batch size and padding (each sequence's rows depend
//    only on it); the log-probabilities the device returns are the log-softmax of the logits it returns
//    at the same row (1e-5: fp32 vs double), which pins rows and targets to the right positions.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/bf16.hpp"
#include "core/error.hpp"
#include "eval/device_forward.hpp"
#include "eval/forward.hpp"
#include "eval/multiple_choice.hpp"
#include "eval/perplexity.hpp"
#include "io/tokenizer.hpp"
#include "model/hf_checkpoint.hpp"
#include "model/model.hpp"
#include "support.hpp"

using namespace jetmoe;
using namespace jetmoe::eval;

namespace {

const std::string eval_fixtures = std::string(JETMOE_SOURCE_DIR) + "/tests/fixtures/eval";
constexpr double kNatsPerToken = 0.05;

// The fixture model with a context of `context` tokens (the emulated GPU takes ~40 ms per token, so the
// questions' prompts are cut to their last `context` + 1 tokens, as lm-eval cuts longer ones).
ModelConfig fixture_config(std::int64_t context) {
  ModelConfig c = load_hf_config(eval_fixtures + "/model");
  c.max_position_embeddings = context;
  return c;
}

struct Fixture {
  explicit Fixture(std::int64_t context) : config(fixture_config(context)) {}
  ModelConfig config;
  Model model{config, load_hf_weights(eval_fixtures + "/model", config)};
  io::Tokenizer tok{eval_fixtures + "/model/tokenizer.model"};
};

// The first `count` tokens of the question samples' text.
std::vector<std::int32_t> sample_tokens(const io::Tokenizer& tok, std::size_t count) {
  const std::string text = jetmoe::testing::read_bytes(eval_fixtures + "/hellaswag.jsonl") +
                           jetmoe::testing::read_bytes(eval_fixtures + "/arc.jsonl");
  std::vector<std::int32_t> ids = tok.encode(text);
  REQUIRE(ids.size() >= count);
  ids.resize(count);
  return ids;
}

// Index of the largest value.
std::size_t argmax(const std::vector<double>& v) {
  return std::size_t(std::max_element(v.begin(), v.end()) - v.begin());
}
// How far the largest value is above the second.
double margin(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() < 2 ? std::numeric_limits<double>::infinity() : v[v.size() - 1] - v[v.size() - 2];
}

}  // namespace

TEST_CASE("evaluation on the GPU: multiple-choice log-likelihoods and choices in bf16 track fp32 for any batch size",
          "[unit][device][eval]") {
  Fixture f(20);
  ModelForward cpu(f.model);
  DeviceForward gpu(f.model);
  CHECK(gpu.precision() == "bf16");
  // arc: 4 questions of 3-4 choices, continuations of 5-18 tokens; winogrande: 2 questions, one context
  // per choice.
  for (const auto& [name, limit] : {std::pair{"arc.jsonl", 4}, std::pair{"winogrande.jsonl", 2}}) {
    INFO(name);
    const McFile file = read_mc_jsonl(eval_fixtures + "/" + name, McFormat::Auto);
    McOptions options;
    options.limit = limit;
    options.batch_size = 3;  // batches of unequal lengths: right padding
    const McReport want = evaluate_mc(cpu, f.tok, file, options);
    const McReport got = evaluate_mc(gpu, f.tok, file, options);
    REQUIRE(got.requests.size() == want.requests.size());
    CHECK(got.precision == "bf16");
    double worst = 0;  // nats per continuation token
    for (std::size_t i = 0; i < want.requests.size(); ++i) {
      const double tokens = double(want.requests[i].continuation_ids.size());
      worst = std::max(worst, std::fabs(got.requests[i].loglikelihood - want.requests[i].loglikelihood) / tokens);
    }
    CHECK(worst <= kNatsPerToken);
    // The choices of every clearly separated question.
    int separated = 0;
    REQUIRE(got.docs.size() == want.docs.size());
    for (std::size_t d = 0; d < want.docs.size(); ++d) {
      const McDocResult &w = want.docs[d], &g = got.docs[d];
      std::vector<double> normed;
      double longest = 0;
      for (std::size_t c = 0; c < w.loglikelihoods.size(); ++c)
        normed.push_back(w.loglikelihoods[c] / double(w.choice_chars[c]));
      for (const McRequest& r : want.requests)
        if (r.doc == w.doc) longest = std::max(longest, double(r.continuation_ids.size()));
      const double bound = 2 * kNatsPerToken * longest;  // two log-likelihoods, each within its bound
      if (margin(w.loglikelihoods) > bound) {
        CHECK(g.pred == w.pred);
        ++separated;
      }
      if (margin(normed) > bound / double(*std::min_element(w.choice_chars.begin(), w.choice_chars.end())))
        CHECK(g.pred_norm == w.pred_norm);
      CHECK(g.pred == argmax(g.loglikelihoods));
    }
    CHECK(separated >= 1);
    WARN(name << ": bf16 log-likelihoods within " << worst << " nats per continuation token of fp32; " << separated
              << " of " << want.docs.size() << " questions clearly separated, their choices equal");
    // One request per forward: the same scores.
    options.batch_size = 1;
    const McReport alone = evaluate_mc(gpu, f.tok, file, options);
    for (std::size_t i = 0; i < got.requests.size(); ++i)
      CHECK(alone.requests[i].loglikelihood == got.requests[i].loglikelihood);
  }
}

TEST_CASE("evaluation on the GPU: perplexity and logits in bf16 track fp32 and rows line up with their targets",
          "[unit][device][eval]") {
  Fixture f(2048);
  ModelForward cpu(f.model);
  DeviceForward gpu(f.model);
  const std::int64_t V = f.config.vocab_size;
  const std::vector<std::int32_t> ids = sample_tokens(f.tok, 67);  // windows of 16: four full ones and 3 tokens

  SECTION("perplexity") {
    const PerplexityResult want = perplexity(cpu, ids, 16, 3);
    const PerplexityResult got = perplexity(gpu, ids, 16, 3);
    CHECK(want.predicted == 4 * 15 + 2);
    CHECK(got.predicted == want.predicted);
    const double rel = std::fabs(got.mean_nll() - want.mean_nll()) / want.mean_nll();
    CHECK(rel <= 1e-2);
    WARN("perplexity: mean NLL fp32 " << want.mean_nll() << ", bf16 " << got.mean_nll() << " (relative " << rel << ")");
    DeviceForward chunked(f.model, GpuKernels::Tuned, 7);  // the head 7 tokens at a time: the same sum
    CHECK(perplexity(chunked, ids, 16, 3).nll == got.nll);
    for (const std::int64_t batch : {1, 4}) {
      CHECK(perplexity(gpu, ids, 16, batch).nll == got.nll);
      CHECK(std::fabs(perplexity(cpu, ids, 16, batch).nll - want.nll) <= 1e-6 * std::fabs(want.nll));
    }
  }

  SECTION("logits, and the log-probabilities of the same rows") {
    const std::int64_t B = 3, T = 12, N = B * T;
    TokenBatch batch{B, T, std::vector<std::int32_t>(ids.begin(), ids.begin() + N)};
    std::vector<float> want(std::size_t(N * V)), got(want.size());
    cpu.logits(batch, want.data());
    gpu.logits(batch, got.data());
    std::vector<double> row_error;  // relative RMS of each row
    bool bf16_values = true;
    for (std::int64_t row = 0; row < N; ++row) {
      double diff = 0, norm = 0;
      for (std::int64_t v = 0; v < V; ++v) {
        const float g = got[std::size_t(row * V + v)], w = want[std::size_t(row * V + v)];
        diff += (double(g) - w) * (double(g) - w), norm += double(w) * w;
        bf16_values = bf16_values && bf16::from_float(g).to_float() == g;
      }
      row_error.push_back(std::sqrt(diff / norm));
    }
    std::sort(row_error.begin(), row_error.end());
    WARN("logits: bf16 rows' relative RMS vs fp32: median " << row_error[row_error.size() / 2] << ", 80% "
                                                             << row_error[row_error.size() * 4 / 5] << ", worst "
                                                             << row_error.back());
    CHECK(row_error[row_error.size() / 2] <= 3e-2);
    CHECK(row_error[row_error.size() * 4 / 5] <= 5e-2);
    CHECK(bf16_values);
    // Each sequence alone gives its rows of the batch's logits.
    for (std::int64_t b = 0; b < B; ++b) {
      TokenBatch alone{1, T, std::vector<std::int32_t>(batch.ids.begin() + b * T, batch.ids.begin() + (b + 1) * T)};
      std::vector<float> one(std::size_t(T * V));
      gpu.logits(alone, one.data());
      CHECK(std::equal(one.begin(), one.end(), got.begin() + b * T * V));
    }
    // target_logprobs at row i is the log-softmax of row i's logits at targets[i] (some rows not scored).
    std::vector<std::int32_t> targets(static_cast<std::size_t>(N));
    for (std::size_t i = 0; i < targets.size(); ++i) targets[i] = i % 4 == 3 ? -1 : ids[i + 1];
    const std::vector<double> logp = gpu.target_logprobs(batch, targets);
    REQUIRE(logp.size() == targets.size());
    double worst_logp = 0;
    for (std::size_t i = 0; i < targets.size(); ++i) {
      if (targets[i] < 0) {
        CHECK(logp[i] == 0.0);
        continue;
      }
      const float* row = &got[i * std::size_t(V)];
      const double m = *std::max_element(row, row + V);
      double z = 0;
      for (std::int64_t v = 0; v < V; ++v) z += std::exp(double(row[v]) - m);
      worst_logp = std::max(worst_logp, std::fabs(logp[i] - (double(row[targets[i]]) - m - std::log(z))));
    }
    CHECK(worst_logp <= 1e-5);
    const std::vector<double> cpu_logp = cpu.target_logprobs(batch, targets);
    std::vector<double> logp_error;
    for (std::size_t i = 0; i < targets.size(); ++i)
      if (targets[i] >= 0) logp_error.push_back(std::fabs(logp[i] - cpu_logp[i]));
    std::sort(logp_error.begin(), logp_error.end());
    WARN("log-probabilities: bf16 vs fp32 median " << logp_error[logp_error.size() / 2] << ", worst "
                                                    << logp_error.back());
    CHECK(logp_error[logp_error.size() / 2] <= kNatsPerToken);
    CHECK(logp_error.back() <= 5 * kNatsPerToken);

    // The head a few tokens at a time (as the default 4096-token chunks run on long batches): the same
    // logits and log-probabilities bit for bit, for a chunk dividing the 36 tokens and one that does not.
    for (const std::int64_t chunk : {4, 5, 36}) {
      INFO("logits_chunk " << chunk);
      DeviceForward chunked(f.model, GpuKernels::Tuned, chunk);
      std::vector<float> got_chunked(got.size(), std::nanf(""));
      chunked.logits(batch, got_chunked.data());
      CHECK(std::memcmp(got_chunked.data(), got.data(), got.size() * sizeof(float)) == 0);
      CHECK(chunked.target_logprobs(batch, targets) == logp);
    }
  }
}

TEST_CASE("evaluation on the GPU: a token id outside the vocabulary is an input error", "[unit][device][eval]") {
  Fixture f(16);
  DeviceForward gpu(f.model);
  std::vector<float> logits(std::size_t(2 * f.config.vocab_size));
  const TokenBatch bad{1, 2, {5, std::int32_t(f.config.vocab_size)}};
  CHECK_THAT(jetmoe::testing::error_of([&] { gpu.logits(bad, logits.data()); }, ErrorKind::Input),
             Catch::Contains("1 token ids outside the vocabulary [0, 400)"));
  // The forward goes on working afterwards.
  gpu.logits(TokenBatch{1, 2, {5, 6}}, logits.data());
  CHECK(std::isfinite(logits[0]));
}

