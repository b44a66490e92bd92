// Alignment: SFT data and masking, the DPO loss and its gradient through the whole model (finite
// differences in double precision), and SFT/DPO runs of jetmoe-train on a micro model.
#include <catch2/catch.hpp>

#include <cmath>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/deck.hpp"
#include "data/chat.hpp"
#include "io/tokenizer.hpp"
#include "parallel/comm.hpp"
#include "support.hpp"
#include "trainer_support.hpp"
#include "train/dpo.hpp"
#include "train/losses.hpp"
#include "train/network.hpp"
#include "train/trainer.hpp"

using namespace jetmoe;
using jetmoe::testing::TempDir;
using jetmoe::testing::trainer::chat_deck;
using jetmoe::testing::trainer::field;
using jetmoe::testing::trainer::train_lines;
using jetmoe::testing::trainer::write_chat_data;

namespace {

const std::string kTokenizer = std::string(JETMOE_SOURCE_DIR) + "/tests/fixtures/tokenizer/tokenizer.model";
const io::Tokenizer& tokenizer() {
  static const io::Tokenizer tok(kTokenizer);
  return tok;
}

std::string labelled_text(const data::ChatExample& e) {
  std::string out;
  std::vector<std::int32_t> run;
  for (std::size_t i = 0; i < e.ids.size(); ++i) {
    if (e.labels[i] != ignore_index) {
      REQUIRE(e.labels[i] == e.ids[i]);
      run.push_back(e.ids[i]);
      if (e.ids[i] == tokenizer().eos_id()) {  // decode() leaves special tokens out
        run.pop_back();
        out += tokenizer().decode(run) + "</s>|";
        run.clear();
      }
    } else if (!run.empty()) {
      out += tokenizer().decode(run) + "|";
      run.clear();
    }
  }
  if (!run.empty()) out += tokenizer().decode(run) + "|";
  return out;
}

}  // namespace

TEST_CASE("SFT labels cover the assistant turns and their </s> only; padding and truncation", "[unit][alignment]") {
  TempDir tmp;
  std::ofstream(tmp / "sft.jsonl")
      << R"({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a river."}, {"role": "assistant", "content": "The Nile."}, {"role": "user", "content": "Another?"}, {"role": "assistant", "content": "The Amazon."}]})"
      << "\n\n"
      << R"({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there, friend."}]})" << "\n";
  data::ChatReadReport report;
  const auto ex = data::read_sft_jsonl(tmp / "sft.jsonl", tokenizer(), 512, &report);
  REQUIRE(ex.size() == 2);
  CHECK(report.lines == 2);
  // Both assistant turns, with the EOS that closes them; nothing of the system or user turns.
  CHECK(labelled_text(ex[0]) == "The Nile.</s>|The Amazon.</s>|");
  CHECK(labelled_text(ex[1]) == "Hello there, friend.</s>|");

  // Padding: targets are the labels shifted by one; padding and the prompt are ignore_index.
  std::vector<std::int32_t> ids, targets;
  const std::int64_t T = 64;
  data::pad_batch({&ex[1], &ex[0]}, T, 2, ids, targets);
  REQUIRE(ids.size() == std::size_t(2 * T));
  for (std::size_t t = 0; t < std::size_t(T); ++t) {
    CHECK(ids[t] == (t < ex[1].ids.size() ? ex[1].ids[t] : 2));
    CHECK(targets[t] == (t + 1 < ex[1].labels.size() ? ex[1].labels[t + 1] : ignore_index));
  }

  // Truncation keeps the first tokens; a conversation whose answer is cut away entirely is dropped.
  const std::int64_t cut = std::int64_t(ex[0].ids.size()) - 3;
  const auto short_ex = data::read_sft_jsonl(tmp / "sft.jsonl", tokenizer(), cut, &report);
  CHECK(report.truncated == 1);
  CHECK(short_ex[0].ids.size() == std::size_t(cut));
  const auto none = [&] { data::read_sft_jsonl(tmp / "sft.jsonl", tokenizer(), 4, &report); };
  CHECK_THAT(testing::error_of(none, ErrorKind::Input), Catch::Matchers::Contains("no usable SFT example"));

  // Bad lines name file:line and the problem.
  std::ofstream(tmp / "bad.jsonl") << R"({"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]})"
                                   << "\n" << R"({"messages": [{"role": "user"}]})" << "\n";
  CHECK_THAT(testing::error_of([&] { data::read_sft_jsonl(tmp / "bad.jsonl", tokenizer(), 64); }, ErrorKind::Input),
             Catch::Matchers::Contains("bad.jsonl:2: 'messages'[0] must be an object with string fields"));
  std::ofstream(tmp / "role.jsonl") << R"({"messages": [{"role": "robot", "content": "x"}]})" << "\n";
  CHECK_THAT(testing::error_of([&] { data::read_sft_jsonl(tmp / "role.jsonl", tokenizer(), 64); }, ErrorKind::Input),
             Catch::Matchers::Contains("role.jsonl:1:") && Catch::Matchers::Contains("robot"));
  // A number beyond double's range is the JSON library's out_of_range, not a parse error (found by
  // tests/fuzz: it used to escape as "unexpected failure" without the file).
  std::ofstream(tmp / "huge.jsonl") << R"({"messages": [], "n": 1e999})" << "\n";
  CHECK_THAT(testing::error_of([&] { data::read_sft_jsonl(tmp / "huge.jsonl", tokenizer(), 64); }, ErrorKind::Input),
             Catch::Matchers::Contains("huge.jsonl:1: not a JSON object") && Catch::Matchers::Contains("number overflow"));
}

TEST_CASE("preference pairs: both formats, the response alone is scored", "[unit][alignment]") {
  TempDir tmp;
  std::ofstream(tmp / "dpo.jsonl")
      << R"({"prompt": "Name a river.", "chosen": "The Nile.", "rejected": "A tree."})" << "\n"
      << R"({"prompt": "ignored", "chosen": [{"role": "user", "content": "Name a river."}, {"role": "assistant", "content": "The Nile."}], "rejected": [{"role": "user", "content": "Name a river."}, {"role": "assistant", "content": "A tree."}]})"
      << "\n";
  const auto pairs = data::read_preference_jsonl(tmp / "dpo.jsonl", tokenizer(), 256);
  REQUIRE(pairs.size() == 2);
  CHECK(labelled_text(pairs[0].chosen) == "The Nile.</s>|");
  CHECK(labelled_text(pairs[0].rejected) == "A tree.</s>|");
  // The two spellings of the same pair give the same tokens.
  CHECK(pairs[0].chosen.ids == pairs[1].chosen.ids);
  CHECK(pairs[0].rejected.labels == pairs[1].rejected.labels);
  std::ofstream(tmp / "bad.jsonl") << R"({"prompt": "x", "chosen": "y"})" << "\n";
  CHECK_THAT(testing::error_of([&] { data::read_preference_jsonl(tmp / "bad.jsonl", tokenizer(), 64); }, ErrorKind::Input),
             Catch::Matchers::Contains("bad.jsonl:1: missing field \"rejected\""));
}

TEST_CASE("DPO loss: ln 2 at the reference, closed-form derivatives, label smoothing", "[unit][alignment]") {
  const DpoPair zero = dpo_pair(-12.5, -9.25, -12.5, -9.25, 0.1, 0.0);
  CHECK(zero.loss == std::log(2.0));
  CHECK(zero.d_chosen == -0.05);  // -beta sigmoid(0)
  CHECK(zero.d_rejected == 0.05);
  for (const double eps : {0.0, 0.2}) {
    const double beta = 0.3, pc = -3.0, pr = -4.5, rc = -3.4, rr = -4.1;
    auto f = [&](double a, double b) {
      const double h = beta * ((a - rc) - (b - rr));
      return -(1 - eps) * std::log(1 / (1 + std::exp(-h))) - eps * std::log(1 / (1 + std::exp(h)));
    };
    const DpoPair p = dpo_pair(pc, pr, rc, rr, beta, eps);
    CHECK(p.loss == Approx(f(pc, pr)).epsilon(1e-14));
    const double h = 1e-6;
    CHECK(p.d_chosen == Approx((f(pc + h, pr) - f(pc - h, pr)) / (2 * h)).epsilon(1e-8));
    CHECK(p.d_rejected == Approx((f(pc, pr + h) - f(pc, pr - h)) / (2 * h)).epsilon(1e-8));
    CHECK(p.chosen_reward == Approx(beta * 0.4));
    CHECK(p.rejected_reward == Approx(beta * -0.4));
  }
  // Extreme margins stay finite.
  CHECK(std::isfinite(dpo_pair(0, -1e6, 0, 0, 1.0, 0.0).loss));
  CHECK(std::isfinite(dpo_pair(-1e6, 0, 0, 0, 1.0, 0.0).loss));
}

TEST_CASE("DPO gradient through the model equals finite differences in double precision", "[unit][alignment]") {
  ModelConfig c;
  c.vocab_size = 23, c.hidden_size = 12, c.num_layers = 2, c.num_kv_heads = 2, c.head_dim = 4, c.num_experts = 4;
  c.top_k = 2, c.ffn_hidden_size = 6, c.max_position_embeddings = 16, c.rope_theta = 100.0;
  const std::int64_t P = 2, T = 9, rows = 2 * P;  // two pairs: chosen rows, then rejected rows
  ModelWeightsT<double> w(c), ref(c);
  w.init_random(c, 3);
  ref.init_random(c, 4);  // a reference different from the policy, so the margins are not zero
  std::mt19937 rng(9);
  IntView2 ids("ids", rows, T);
  IntView1 targets("targets", rows * T);
  {
    auto hi = Kokkos::create_mirror_view(ids);
    auto ht = Kokkos::create_mirror_view(targets);
    for (std::int64_t i = 0; i < rows * T; ++i) {
      hi.data()[i] = std::int32_t(rng() % 23);
      ht(i) = (i % T) >= 4 && (i % T) < T - 1 ? std::int32_t(rng() % 23) : ignore_index;  // a response of 4 tokens
    }
    Kokkos::deep_copy(ids, hi);
    Kokkos::deep_copy(targets, ht);
  }
  const double beta = 0.7, eps = 0.1;
  auto logp = [&](const std::vector<double>& row) {
    std::vector<double> lp(std::size_t(rows), 0.0);
    for (std::size_t i = 0; i < row.size(); ++i) lp[i / std::size_t(T)] -= row[i];
    return lp;
  };
  Network<double> net(c, 0.0, 0.0), ref_net(c, 0.0, 0.0);
  ref_net.run_weighted(ref, ids, targets, nullptr, {});
  const std::vector<double> r = logp(ref_net.row_losses());
  auto objective = [&]() {
    net.run_weighted(w, ids, targets, nullptr, {});
    const auto pl = logp(net.row_losses());
    double loss = 0;
    for (std::int64_t b = 0; b < P; ++b)
      loss += dpo_pair(pl[std::size_t(b)], pl[std::size_t(P + b)], r[std::size_t(b)], r[std::size_t(P + b)], beta, eps).loss;
    return loss / double(P);
  };
  ModelWeightsT<double> g(c, true);
  net.run_weighted(w, ids, targets, &g, [&](const std::vector<double>& row, std::vector<double>& wt) {
    const auto pl = logp(row);
    for (std::int64_t b = 0; b < P; ++b) {
      const DpoPair p = dpo_pair(pl[std::size_t(b)], pl[std::size_t(P + b)], r[std::size_t(b)], r[std::size_t(P + b)], beta, eps);
      for (std::int64_t t = 0; t < T; ++t) {
        wt[std::size_t(b * T + t)] = -p.d_chosen / double(P);
        wt[std::size_t((P + b) * T + t)] = -p.d_rejected / double(P);
      }
    }
  });
  const double base = objective();
  CHECK(std::isfinite(base));
  const auto params = w.named(c), grads = g.named(c);
  for (std::size_t p = 0; p < params.size(); ++p) {
    INFO(params[p].name);
    auto hw = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), params[p].flat);
    auto hg = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), grads[p].flat);
    for (int k = 0; k < 3; ++k) {
      const std::size_t i = std::size_t(rng() % hw.size());
      const double saved = hw(i), h = 1e-6;
      hw(i) = saved + h;
      Kokkos::deep_copy(params[p].flat, hw);
      const double up = objective();
      hw(i) = saved - h;
      Kokkos::deep_copy(params[p].flat, hw);
      const double down = objective();
      hw(i) = saved;
      Kokkos::deep_copy(params[p].flat, hw);
      const double fd = (up - down) / (2 * h);
      INFO("element " << i << ": backward " << hg(i) << ", finite difference " << fd);
      CHECK(std::fabs(hg(i) - fd) <= 1e-8 + 1e-6 * std::fabs(fd));
    }
  }
}


TEST_CASE("jetmoe-train SFT and DPO runs: masked loss falls, DPO starts at ln 2 and learns the preference",
          "[unit][alignment][train]") {
  TempDir tmp;
  write_chat_data(tmp);
  {
    Deck deck = chat_deck(tmp, "sft", "sft");
    REQUIRE(run_training(deck, Comm::world(), std::nullopt) == TrainOutcome::Finished);
    const auto lines = train_lines(tmp / "sft/metrics.jsonl");
    REQUIRE(lines.size() == 8);
    CHECK(field(lines.back(), "ce") < field(lines.front(), "ce") - 0.5);
  }
  {
    // DPO from the SFT model (its final HF export): at step 1 the policy is the reference.
    Deck deck = chat_deck(tmp, "dpo", "dpo");
    deck.apply_override("model/weights=" + tmp / "sft/final");
    REQUIRE(run_training(deck, Comm::world(), std::nullopt) == TrainOutcome::Finished);
    const auto lines = train_lines(tmp / "dpo/metrics.jsonl");
    REQUIRE(lines.size() == 8);
    CHECK(field(lines.front(), "dpo_loss") == Approx(std::log(2.0)).epsilon(1e-9));
    CHECK(field(lines.front(), "reward_margin") == 0.0);
    CHECK(field(lines.back(), "dpo_loss") < std::log(2.0));
    CHECK(field(lines.back(), "reward_accuracy") > 0.5);
    // A pretraining checkpoint cannot continue as DPO; the message says how to start from it.
    Deck again = chat_deck(tmp, "dpo", "dpo2");
    CHECK_THAT(testing::error_of([&] { run_training(again, Comm::world(), tmp / "sft/checkpoints/step-000000008.h5"); },
                                 ErrorKind::Input),
               Catch::Matchers::Contains("a checkpoint of a sft run cannot continue as train/mode = dpo") &&
                   Catch::Matchers::Contains("model/weights"));
  }
}

TEST_CASE("SFT and DPO on pipeline x data-parallel layouts follow the single-rank runs", "[mpi][alignment]") {
  const Comm world = Comm::world();
  TempDir tmp;  // per rank; rank 0's runs are the reference, and every rank starts DPO from rank 0's SFT model
  write_chat_data(tmp);
  // Layouts of this job with at most 2 stages (the model has 2 layers) that divide the global batch
  // (384 tokens = 4 sequences x 48 tokens x accumulation x data_parallel).
  std::vector<std::pair<int, int>> layouts;
  for (int pp = 1; pp <= 2; ++pp)
    if (world.size() % pp == 0 && 384 % (4 * 48 * (world.size() / pp)) == 0) layouts.push_back({pp, world.size() / pp});
  auto close = [](double a, double b) { return std::fabs(a - b) <= 1e-4 * std::fabs(a) + 1e-6; };
  std::string sft_model = tmp / "sft/final";
  for (const std::string mode : {"sft", "dpo"}) {
    if (world.is_root()) {
      Deck deck = chat_deck(tmp, mode, mode);
      if (mode == "dpo") deck.apply_override("model/weights=" + sft_model);
      REQUIRE(run_training(deck, Comm::self(), std::nullopt) == TrainOutcome::Finished);
    }
    world.broadcast(sft_model);
    for (const auto& [pp, dp] : layouts) {
      const std::string run = mode + "-" + std::to_string(pp) + "x" + std::to_string(dp);
      INFO(run << " on " << world.size() << " ranks");
      Deck deck = chat_deck(tmp, mode, run);
      deck.apply_override("parallel/pipeline_stages=" + std::to_string(pp));
      deck.apply_override("parallel/data_parallel=" + std::to_string(dp));
      // Two stages: the last one's head in chunks of 40 of the micro-batch's 4 x 48 tokens (DPO: 8 x 48;
      // the per-token weights and targets kept for the backward, the policy's and the reference's).
      if (pp == 2) deck.apply_override("train/logits_chunk_tokens=40");
      if (mode == "dpo") deck.apply_override("model/weights=" + sft_model);
      REQUIRE(run_training(deck, world, std::nullopt) == TrainOutcome::Finished);
      if (world.is_root()) {
        const auto a = train_lines(tmp / (mode + "/metrics.jsonl")), b = train_lines(tmp / (run + "/metrics.jsonl"));
        REQUIRE(a.size() == 8);
        REQUIRE(b.size() == a.size());
        std::vector<std::string> keys = {"loss", "ce", "switch", "z", "grad_norm"};
        if (mode == "dpo") keys.insert(keys.end(), {"dpo_loss", "reward_accuracy", "reward_margin", "chosen_reward"});
        for (std::size_t i = 0; i < a.size(); ++i)
          for (const auto& key : keys) {
            INFO("step " << i + 1 << " " << key);
            CHECK(close(field(a[i], key), field(b[i], key)));
          }
      }
      world.barrier();
    }
  }
}
