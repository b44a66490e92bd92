// The training loop end to end on a micro model and a corpus prepared in the test: exact restart from
// a checkpoint, a stop signal, non-finite losses, restarts from checkpoints that do not fit, and the
// final Hugging Face export of pipeline runs.
#include <catch2/catch.hpp>

#include <cmath>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "core/build_info.hpp"
#include "core/deck.hpp"
#include "data/prepare.hpp"
#include "io/checkpoint.hpp"
#include "io/safetensors.hpp"
#include "io/tokenizer.hpp"
#include "model/config.hpp"
#include "model/hf_checkpoint.hpp"
#include "model/weights.hpp"
#include "parallel/comm.hpp"
#include "support.hpp"
#include "trainer_support.hpp"
#include "train/config.hpp"
#include "train/device_network.hpp"
#include "train/trainer.hpp"

using namespace jetmoe;
using jetmoe::testing::read_bytes;
using jetmoe::testing::TempDir;
using Catch::Matchers::Contains;
using namespace jetmoe::testing::trainer;
namespace fs = std::filesystem;

TEST_CASE("training restarts from a checkpoint bit for bit", "[unit][train]") {
  TempDir tmp;
  prepare_corpus(tmp);
  REQUIRE(train(tmp, "a") == TrainOutcome::Finished);
  const std::string a3 = tmp / "a/checkpoints/step-000000003.h5", a6 = tmp / "a/checkpoints/step-000000006.h5";
  REQUIRE(fs::exists(a3));
  REQUIRE(fs::exists(a6));
  REQUIRE(fs::exists(tmp / "a/final/model.safetensors"));
  const auto a_train = lines_of(tmp / "a/metrics.jsonl", "train");
  REQUIRE(a_train.size() == 6);
  // The validation loss falls over six steps on this repetitive corpus (evaluated at steps 0, 3, 6).
  const auto evals = lines_of(tmp / "a/metrics.jsonl", "eval");
  REQUIRE(evals.size() == 3);
  auto val = [](const std::string& line) { return std::stod(line.substr(line.find("\"val_loss\": ") + 12)); };
  CHECK(val(evals[2]) < val(evals[1]));
  CHECK(val(evals[1]) < val(evals[0]));

  // Six steps straight = three steps, restart, three more: parameters, AdamW moments, data position.
  REQUIRE(train(tmp, "b", {}, a3) == TrainOutcome::Finished);
  require_identical(a6, tmp / "b/checkpoints/step-000000006.h5");
  // b's directory had no metrics before: it holds the three steps it ran, equal to a's last three.
  const auto b_train = lines_of(tmp / "b/metrics.jsonl", "train");
  CHECK(b_train == std::vector<std::string>(a_train.begin() + 3, a_train.end()));

  // Each checkpoint records the run's setup; the restart had the same one, so it says nothing.
  const std::string setup = CheckpointReader(a3).meta().run_setup;
  CHECK(setup == "precision = fp32\nlayout = 1 x 1 (pipeline stages x data-parallel replicas)\nmicro_batch_size = 4\n"
                 "logits_chunk_tokens = 0\nmatrix products = " + matrix_products_description() + "\n");
  CHECK(CheckpointReader(tmp / "b/checkpoints/step-000000006.h5").meta().run_setup == setup);
  CHECK(restart_setup_note(setup, setup).empty());

  // Same deck, same seed: a second straight run is identical too (determinism).
  REQUIRE(train(tmp, "again") == TrainOutcome::Finished);
  require_identical(a6, tmp / "again/checkpoints/step-000000006.h5");
  CHECK(lines_of(tmp / "again/metrics.jsonl", "train") == a_train);
  CHECK(lines_of(tmp / "again/metrics.jsonl", "eval") == lines_of(tmp / "a/metrics.jsonl", "eval"));
}

TEST_CASE("a restart on another setup says what differs, then and now", "[unit][train]") {
  const std::string then = "precision = fp32\nlayout = 2 x 1 (pipeline stages x data-parallel replicas)\n"
                           "micro_batch_size = 4\nmatrix products = host BLAS OpenBLAS 0.3.21 (core Zen, 1 thread)\n";
  CHECK(restart_setup_note(then, then).empty());
  CHECK(restart_setup_note("", then).empty());  // a checkpoint that records no setup (older files)
  CHECK(restart_setup_note(then, "").empty());
  // One difference, then two, in this run's order; a key only one side has is not compared.
  const std::string threads = "precision = fp32\nlayout = 2 x 1 (pipeline stages x data-parallel replicas)\n"
                              "micro_batch_size = 4\nmatrix products = host BLAS OpenBLAS 0.3.21 (core Zen, 2 threads)\n"
                              "logits_chunk_tokens = 0\n";
  CHECK(restart_setup_note(then, threads) ==
        "note: the checkpoint was written with another setup (matrix products: host BLAS OpenBLAS 0.3.21 (core Zen, "
        "1 thread) then, host BLAS OpenBLAS 0.3.21 (core Zen, 2 threads) now): the run continues from it, but not bit "
        "for bit as it would on the setup it was written with");
  const std::string layout_and_batch = "precision = fp32\nmicro_batch_size = 2\n"
                                       "layout = 1 x 2 (pipeline stages x data-parallel replicas)\n"
                                       "matrix products = host BLAS OpenBLAS 0.3.21 (core Zen, 1 thread)\n";
  CHECK_THAT(restart_setup_note(then, layout_and_batch),
             Contains("(micro_batch_size: 4 then, 2 now; layout: 2 x 1 (pipeline stages x data-parallel replicas) then, "
                      "1 x 2 (pipeline stages x data-parallel replicas) now)"));
}

TEST_CASE("a value per rank reads as one value, or each value with its ranks", "[unit][train]") {
  CHECK(describe_per_rank({}).empty());
  CHECK(describe_per_rank({"A"}) == "A");
  CHECK(describe_per_rank({"A", "A", "A"}) == "A");
  CHECK(describe_per_rank({"A", "B"}) == "rank 0: A; rank 1: B");
  CHECK(describe_per_rank({"A", "A", "A", "B", "C", "A", "C"}) == "ranks 0-2, 5: A; rank 3: B; ranks 4, 6: C");
  CHECK(describe_per_rank({"B", "A", "A", "B", "B", "B"}) == "ranks 0, 3-5: B; ranks 1-2: A");
}

TEST_CASE("a stop signal writes a checkpoint after the step; the restart finishes the same run", "[unit][train]") {
  TempDir tmp;
  prepare_corpus(tmp);
  REQUIRE(train(tmp, "straight") == TrainOutcome::Finished);
  install_stop_handlers();
  std::raise(SIGTERM);  // as Slurm does before the time limit
  REQUIRE(stop_requested());
  REQUIRE(train(tmp, "stopped") == TrainOutcome::Stopped);
  clear_stop_request();
  const std::string stopped = tmp / "stopped/checkpoints/step-000000001.h5";
  REQUIRE(fs::exists(stopped));
  CHECK(lines_of(tmp / "stopped/metrics.jsonl", "train").size() == 1);
  // Restart in the same directory: the metrics file goes on from step 1.
  REQUIRE(train(tmp, "stopped", {}, stopped) == TrainOutcome::Finished);
  require_identical(tmp / "straight/checkpoints/step-000000006.h5", tmp / "stopped/checkpoints/step-000000006.h5");
  CHECK(lines_of(tmp / "stopped/metrics.jsonl", "train") == lines_of(tmp / "straight/metrics.jsonl", "train"));
  std::signal(SIGTERM, SIG_DFL);
  std::signal(SIGINT, SIG_DFL);
  std::signal(SIGUSR1, SIG_DFL);
}

TEST_CASE("a non-finite loss stops the run naming the step, or is skipped when the deck says so", "[unit][train]") {
  TempDir tmp;
  prepare_corpus(tmp);
  // A learning rate of 1e30 sends the weights to infinity after the first update.
  const std::string message = testing::error_of([&] { train(tmp, "nan", {"optimizer/lr=1e30"}); }, ErrorKind::Numerics);
  CHECK_THAT(message, Catch::Matchers::Contains("non-finite") && Catch::Matchers::Contains("at step 2") &&
                          Catch::Matchers::Contains("nonfinite_loss = skip"));
  REQUIRE(train(tmp, "skip", {"optimizer/lr=1e30", "train/nonfinite_loss=skip", "train/sample_tokens=0",
                              "train/eval_interval=0"}) == TrainOutcome::Finished);
  const auto lines = lines_of(tmp / "skip/metrics.jsonl", "train");
  REQUIRE(lines.size() == 6);
  CHECK(lines[0].find("\"skipped\": false") != std::string::npos);
  for (std::size_t i = 1; i < lines.size(); ++i) CHECK(lines[i].find("\"skipped\": true") != std::string::npos);
  // Every line is JSON (a strict parser's): a non-finite value is null, not "nan".
  std::ifstream metrics(tmp / "skip/metrics.jsonl");
  std::vector<nlohmann::json> parsed;
  for (std::string line; std::getline(metrics, line);) {
    INFO(line);
    REQUIRE_NOTHROW(parsed.push_back(nlohmann::json::parse(line)));
  }
  REQUIRE(parsed.size() == 6);
  for (std::size_t i = 0; i < parsed.size(); ++i) {
    CHECK(parsed[i]["grad_norm"].is_null() == (i > 0));
    CHECK(std::isfinite(parsed[i]["lr"].get<double>()));
  }
}

TEST_CASE("restarting from a checkpoint that does not fit is one clear error", "[unit][train]") {
  TempDir tmp;
  prepare_corpus(tmp);
  REQUIRE(train(tmp, "a", {"schedule/total=3", "schedule/decay=1", "train/sample_tokens=0"}) == TrainOutcome::Finished);
  const std::string ckpt = tmp / "a/checkpoints/step-000000003.h5";
  REQUIRE(fs::exists(ckpt));
  const std::string before = read_bytes(ckpt);
  // Another model width: the first tensor read names itself and both shapes.
  CHECK_THAT(testing::error_of([&] { train(tmp, "wide", {"model/hidden_size=32"}, ckpt); }, ErrorKind::Input),
             Catch::Matchers::Contains("model.embed_tokens.weight") && Catch::Matchers::Contains("[400, 32]") &&
                 Catch::Matchers::Contains("[400, 24]"));
  // Another sequence length: the data position would not mean the same.
  CHECK_THAT(testing::error_of([&] { train(tmp, "seq", {"train/seq_len=8"}, ckpt); }, ErrorKind::Input),
             Catch::Matchers::Contains("seq_len = 16") && Catch::Matchers::Contains("this deck has 8"));
  // A truncated copy.
  {
    std::ofstream(tmp / "cut.h5", std::ios::binary) << before.substr(0, before.size() / 2);
  }
  CHECK_THAT(testing::error_of([&] { train(tmp, "cut", {}, tmp / "cut.h5"); }, ErrorKind::Input),
             Catch::Matchers::Contains("cut.h5"));
  // None of this touched the checkpoint.
  CHECK(read_bytes(ckpt) == before);
}

TEST_CASE("data-parallel training follows the single-rank loss trajectory", "[mpi][train]") {
  const Comm world = Comm::world();
  TempDir tmp;  // one per rank: each rank prepares the same corpus; rank 0 writes the run's files
  prepare_corpus(tmp);
  // Global batch 128 tokens = 2 sequences x 16 tokens x accumulation x data_parallel.
  const std::vector<std::string> common = {"train/micro_batch_size=2", "train/sample_tokens=0"};
  if (world.is_root()) {
    Deck single = micro_deck(tmp, "single", common);
    REQUIRE(run_training(single, Comm::self(), std::nullopt) == TrainOutcome::Finished);
  }
  world.barrier();
  std::vector<std::string> dp = common;
  dp.push_back("parallel/data_parallel=" + std::to_string(world.size()));
  Deck deck = micro_deck(tmp, "dp", dp);
  REQUIRE(run_training(deck, world, std::nullopt) == TrainOutcome::Finished);
  if (!world.is_root()) return;
  auto values = [&](const std::string& run, const std::string& key) {
    std::vector<double> out;
    std::ifstream in(tmp / (run + "/metrics.jsonl"));
    std::string line;
    while (std::getline(in, line)) {
      const auto at = line.find("\"" + key + "\": ");
      if (at != std::string::npos) out.push_back(std::stod(line.substr(at + key.size() + 4)));
    }
    return out;
  };
  for (const char* key : {"loss", "ce", "switch", "z", "grad_norm", "val_loss"}) {
    INFO(key << " at " << world.size() << " ranks");
    const auto a = values("single", key), b = values("dp", key);
    REQUIRE(a.size() == b.size());
    REQUIRE(!a.empty());
    for (std::size_t i = 0; i < a.size(); ++i) CHECK(std::fabs(a[i] - b[i]) <= 1e-4 * std::fabs(a[i]));
  }
  CHECK(values("dp", "tokens") == values("single", "tokens"));

  // A checkpoint written at this rank count restarts on one rank and finishes the same run.
  Deck re = micro_deck(tmp, "re", common);
  REQUIRE(run_training(re, Comm::self(), tmp / "dp/checkpoints/step-000000003.h5") == TrainOutcome::Finished);
  const auto a = values("dp", "loss"), b = values("re", "loss");
  REQUIRE(b.size() == 3);
  for (std::size_t i = 0; i < b.size(); ++i) CHECK(std::fabs(a[a.size() - 3 + i] - b[i]) <= 1e-4 * std::fabs(b[i]));
}

namespace {
std::vector<double> metric_values(const fs::path& metrics, const std::string& key) {
  std::vector<double> out;
  std::ifstream in(metrics);
  std::string line;
  while (std::getline(in, line)) {
    const auto at = line.find("\"" + key + "\": ");
    if (at != std::string::npos) out.push_back(std::stod(line.substr(at + key.size() + 4)));
  }
  return out;
}

void require_same_trajectory(const fs::path& a, const fs::path& b, std::size_t skip_a = 0) {
  for (const char* key : {"loss", "ce", "switch", "z", "grad_norm", "val_loss"}) {
    INFO(key << ": " << a << " vs " << b);
    const auto x = metric_values(a, key), y = metric_values(b, key);
    if (std::string(key) == "val_loss" && skip_a) continue;  // a restart logs no step-0 evaluation
    REQUIRE(!y.empty());
    REQUIRE(x.size() == y.size() + skip_a);
    for (std::size_t i = 0; i < y.size(); ++i) CHECK(std::fabs(x[skip_a + i] - y[i]) <= 1e-4 * std::fabs(x[skip_a + i]));
  }
}
}  // namespace

TEST_CASE("pipeline x data-parallel layouts follow the single-rank loss trajectory and restart on any layout",
          "[mpi][train]") {
  const Comm world = Comm::world();
  TempDir tmp;
  prepare_corpus(tmp);
  // 4 layers so that up to 4 stages have one each; global batch 128 tokens = 1 x 16 x 8 micro-batches.
  const std::vector<std::string> common = {"model/num_layers=4", "train/micro_batch_size=1", "train/sample_tokens=0",
                                           "train/eval_batches=3"};
  for (const bool tied : {true, false}) {
    std::vector<std::string> base = common;
    base.push_back(std::string("model/tie_word_embeddings=") + (tied ? "true" : "false"));
    const std::string tag = tied ? "tied" : "untied";
    if (world.is_root()) {
      Deck single = micro_deck(tmp, "single-" + tag, base);
      REQUIRE(run_training(single, Comm::self(), std::nullopt) == TrainOutcome::Finished);
    }
    world.barrier();
    std::vector<std::pair<int, int>> layouts;  // pp x dp = world size, at most 4 stages
    for (int pp = 1; pp <= std::min(world.size(), 4); ++pp)
      if (world.size() % pp == 0) layouts.push_back({pp, world.size() / pp});
    for (const auto& [pp, dp] : layouts) {
      const std::string run = tag + "-" + std::to_string(pp) + "x" + std::to_string(dp);
      INFO("layout " << run << " on " << world.size() << " ranks");
      std::vector<std::string> o = base;
      o.push_back("parallel/pipeline_stages=" + std::to_string(pp));
      o.push_back("parallel/data_parallel=" + std::to_string(dp));
      if (pp == 2) o.push_back("parallel/stage_layers=3, 1");  // an explicit, uneven split
      if (pp == 2) o.push_back("train/logits_chunk_tokens=5");   // the last stage's head in chunks of 5 of 16
      if (pp == 1) o.push_back("parallel/bucket_mb=0.002");      // 500-float buckets: packed and lone tensors
      Deck deck = micro_deck(tmp, run, o);
      REQUIRE(run_training(deck, world, std::nullopt) == TrainOutcome::Finished);
      if (world.is_root()) {
        require_same_trajectory(tmp / ("single-" + tag + "/metrics.jsonl"), tmp / (run + "/metrics.jsonl"));
        CHECK(metric_values(tmp / (run + "/metrics.jsonl"), "tokens") ==
              metric_values(tmp / ("single-" + tag + "/metrics.jsonl"), "tokens"));
        // The final export: one file, or one shard per stage written where the stage is.
        CHECK(fs::exists(tmp / (run + (pp == 1 ? "/final/model.safetensors" : "/final/model.safetensors.index.json"))));
      }
      world.barrier();
      if (dp > 1) {
        // ZeRO-1 (moments sharded over the replicas, parameters broadcast) changes no bit of the run:
        // parameters and both moments of the checkpoints equal those without it. Neither does starting
        // the gradient sums only after the backward pass instead of during it (same buckets, same sums).
        o.push_back("parallel/zero1=true");
        o.push_back("parallel/overlap_allreduce=false");
        Deck z = micro_deck(tmp, run + "-zero1", o);
        REQUIRE(run_training(z, world, std::nullopt) == TrainOutcome::Finished);
        if (world.is_root())
          for (const char* step : {"3", "6"})
            require_identical(tmp / (run + "/checkpoints/step-00000000" + step + ".h5"),
                              tmp / (run + "-zero1/checkpoints/step-00000000" + step + ".h5"));
        world.barrier();
      }
    }
    // Restart: on the same layout bit for bit; on every other layout (and on one rank) the same run.
    const auto [pp0, dp0] = layouts.back();
    const std::string first = tag + "-" + std::to_string(pp0) + "x" + std::to_string(dp0);
    // The checkpoints are in rank 0's temporary directory (every rank wrote there): every rank restarts from it.
    std::string checkpoint_path = tmp / (first + "/checkpoints/step-000000003.h5");
    world.broadcast(checkpoint_path);
    const fs::path checkpoint = checkpoint_path;
    for (const auto& [pp, dp] : layouts) {
      const std::string run = "re-" + tag + "-" + std::to_string(pp) + "x" + std::to_string(dp);
      INFO("restart of " << first << " as " << run);
      std::vector<std::string> o = base;
      o.push_back("parallel/pipeline_stages=" + std::to_string(pp));
      o.push_back("parallel/data_parallel=" + std::to_string(dp));
      if (dp > 1) o.push_back("parallel/zero1=true");  // each replica reads its share of the moments
      if (pp == 2) o.push_back("train/logits_chunk_tokens=5");  // as the first run of that layout
      Deck deck = micro_deck(tmp, run, o);
      REQUIRE(run_training(deck, world, checkpoint.string()) == TrainOutcome::Finished);
      if (world.is_root()) {
        require_same_trajectory(tmp / ("single-" + tag + "/metrics.jsonl"), tmp / (run + "/metrics.jsonl"), 3);
        if (pp == pp0 && dp == dp0)
          require_identical(tmp / (first + "/checkpoints/step-000000006.h5"),
                            tmp / (run + "/checkpoints/step-000000006.h5"));
        // The restart's note: none on the layout the checkpoint was written with, the layout then and
        // now on any other.
        const std::string then = CheckpointReader(checkpoint.string()).meta().run_setup;
        const std::string now = CheckpointReader(tmp / (run + "/checkpoints/step-000000006.h5")).meta().run_setup;
        const auto layout = [](int p, int d) {
          return std::to_string(p) + " x " + std::to_string(d) + " (pipeline stages x data-parallel replicas)";
        };
        CHECK_THAT(then, Contains("\nlayout = " + layout(pp0, dp0) + "\n"));
        // fp32 sums its replicas' gradients by MPI; with one replica there is no sum to record.
        CHECK((now.find("\ngradient sums = MPI\n") != std::string::npos) == (dp > 1));
        if (pp == pp0 && dp == dp0) CHECK(restart_setup_note(then, now).empty());
        else CHECK_THAT(restart_setup_note(then, now), Contains("layout: " + layout(pp0, dp0) + " then, " + layout(pp, dp) + " now"));
      }
      world.barrier();
    }
    if (world.is_root()) {
      Deck deck = micro_deck(tmp, "re-" + tag + "-single", base);
      REQUIRE(run_training(deck, Comm::self(), checkpoint.string()) == TrainOutcome::Finished);
      require_same_trajectory(tmp / ("single-" + tag + "/metrics.jsonl"), tmp / ("re-" + tag + "-single/metrics.jsonl"), 3);
    }
    world.barrier();
  }
}

TEST_CASE("what a run needs besides the deck is checked before it starts, naming the key", "[unit][train]") {
  TempDir tmp;
  prepare_corpus(tmp);
  const auto check = [&](const std::vector<std::string>& overrides, const std::optional<std::string>& restart = std::nullopt) {
    const Deck deck = micro_deck(tmp, "run", overrides);
    const TrainConfig run = TrainConfig::from_deck(deck, ModelConfig::from_deck(deck), 1);
    check_training_inputs(deck, run, restart);
  };
  using jetmoe::testing::error_of;
  CHECK_NOTHROW(check({}));
  CHECK_THAT(error_of([&] { check({"data/phase2_mixture=prose:1, web:1"}); }, ErrorKind::Deck),
             Contains("command line: <data>/phase2_mixture: names source 'web', which is not prepared in '" + tmp / "data" +
                      "' (available: code, prose)"));
  CHECK_THAT(error_of([&] { check({"data/dir=" + tmp / "nope"}); }, ErrorKind::Deck),
             Contains("command line: <data>/dir: '" + tmp / "nope" + "' does not exist; prepare the corpora first"));
  CHECK_THAT(error_of([&] { check({"data/dir=" + tmp / "in"}); }, ErrorKind::Deck),
             Contains("<data>/dir: '" + tmp / "in" + "' holds no prepared sources"));
  CHECK_THAT(error_of([&] { check({"tokenizer/model=" + tmp / "none.model"}); }, ErrorKind::Deck),
             Contains("command line: <tokenizer>/model: '" + tmp / "none.model" + "' does not exist"));
  CHECK_THAT(error_of([&] { check({"train/mode=sft", "data/chat_train=" + tmp / "in"}); }, ErrorKind::Deck),
             Contains("command line: <data>/chat_train: '" + tmp / "in" + "' is a directory, expected a file"));
  CHECK_THAT(error_of([&] { check({"train/mode=dpo"}); }, ErrorKind::Deck),
             Contains("<data>/chat_train: train/mode = dpo needs a jsonl file of preference pairs"));
  CHECK_THAT(error_of([&] { check({}, tmp / "missing.h5"); }, ErrorKind::Usage),
             Contains("restart checkpoint '" + tmp / "missing.h5" + "' does not exist"));
  CHECK_THAT(error_of([&] { check({}, tmp / "in"); }, ErrorKind::Usage),
             Contains("restart checkpoint '" + tmp / "in" + "' is a directory; -r takes a checkpoint file (it holds no "
                      "step-*.h5 checkpoint)"));
}

TEST_CASE("parallel/communication = nccl is a deck error with fp32 or without NCCL in the build", "[unit][train]") {
  TempDir tmp;
  prepare_corpus(tmp);
  // fp32 always communicates over MPI: asking for NCCL is a mistake in the deck, whatever the build.
  std::string message = jetmoe::testing::error_of(
      [&] { train(tmp, "fp32", {"parallel/communication=nccl"}); }, ErrorKind::Deck);
  CHECK(message.find("<parallel>/communication") != std::string::npos);
  CHECK(message.find("fp32") != std::string::npos);
  CHECK(message.find("use auto or mpi") != std::string::npos);
  CHECK(!fs::exists(tmp / "fp32/checkpoints"));
  // bf16 with NCCL asked for, in a build without it (or without a GPU: then precision is the error).
  const std::string no_nccl = gpu_comms_unavailable();
  if (!device_training_unavailable().empty() || no_nccl.empty()) return;  // a GPU and NCCL: nothing to refuse
  message = jetmoe::testing::error_of(
      [&] { train(tmp, "bf16", {"train/precision=bf16", "parallel/communication=nccl"}); }, ErrorKind::Deck);
  CHECK(message.find("<parallel>/communication") != std::string::npos);
  CHECK(message.find(no_nccl) != std::string::npos);
}

namespace {
// Every file of a directory: name -> bytes.
std::map<std::string, std::string> files_in(const std::string& dir) {
  std::map<std::string, std::string> out;
  for (const auto& entry : fs::directory_iterator(dir))
    out[entry.path().filename().string()] = read_bytes(entry.path());
  return out;
}

// Two Hugging Face exports load (the project's loader) to bit-identical tensors, with the same config.json.
void require_same_export(const std::string& a, const std::string& b) {
  REQUIRE(read_bytes(a + "/config.json") == read_bytes(b + "/config.json"));
  const ModelConfig config = load_hf_config(a);
  const ModelWeights wa = load_hf_weights(a, config), wb = load_hf_weights(b, config);
  const auto x = wa.named(config), y = wb.named(config);
  REQUIRE(x.size() == y.size());
  for (std::size_t i = 0; i < x.size(); ++i) {
    INFO(x[i].name);
    const auto hx = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), x[i].flat);
    const auto hy = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), y[i].flat);
    REQUIRE(hx.size() == hy.size());
    REQUIRE(std::memcmp(hx.data(), hy.data(), hx.size() * sizeof(float)) == 0);
  }
}

// Two pipeline stages where the ranks divide into them (each stage writes its shard), else one.
std::vector<std::string> export_layout(const Comm& world) {
  const int stages = world.size() % 2 == 0 ? 2 : 1;
  return {"parallel/pipeline_stages=" + std::to_string(stages),
          "parallel/data_parallel=" + std::to_string(world.size() / stages)};
}
}  // namespace

TEST_CASE("the final export of a pipeline run is one shard per stage and loads as the one-rank export does",
          "[mpi][train]") {
  const Comm world = Comm::world();
  TempDir tmp;
  prepare_corpus(tmp);
  const bool sharded = world.size() % 2 == 0;
  for (const bool tied : {true, false}) {
    std::vector<std::string> o = {"train/sample_tokens=0",
                                  std::string("model/tie_word_embeddings=") + (tied ? "true" : "false")};
    const std::string run = tied ? "tied" : "untied";
    INFO(run << " head on " << world.size() << " ranks");
    Deck one = micro_deck(tmp, run + "-one", o);
    for (const std::string& l : export_layout(world)) o.push_back(l);
    Deck deck = micro_deck(tmp, run, o);
    REQUIRE(run_training(deck, world, std::nullopt) == TrainOutcome::Finished);
    if (world.is_root()) {
      // The same model exported by one rank: its last checkpoint restarted with nothing left to train.
      const std::string last_checkpoint = tmp / (run + "/checkpoints/step-000000006.h5");
      REQUIRE(run_training(one, Comm::self(), last_checkpoint) == TrainOutcome::Finished);
      const std::string final_dir = tmp / (run + "/final"), single = tmp / (run + "-one/final/model.safetensors");
      CHECK(!fs::exists(final_dir + ".tmp"));
      std::vector<std::string> names;
      for (const auto& [name, bytes] : files_in(final_dir)) names.push_back(name);
      if (!sharded) {
        CHECK(names == std::vector<std::string>{"config.json", "model.safetensors"});
      } else {
        const std::string first = "model-00001-of-00002.safetensors", last = "model-00002-of-00002.safetensors";
        CHECK(names == std::vector<std::string>{"config.json", first, last, "model.safetensors.index.json"});
        // The last stage's copy of the tied embedding is not written a second time; an untied head is.
        const auto shard2 = io::SafetensorsFile::open(final_dir + "/" + last);
        CHECK(shard2.find("model.embed_tokens.weight") == nullptr);
        CHECK((shard2.find("lm_head.weight") != nullptr) == !tied);
        const auto index = nlohmann::json::parse(read_bytes(final_dir + "/model.safetensors.index.json"));
        CHECK(index["weight_map"]["model.embed_tokens.weight"] == first);
        CHECK(index["weight_map"]["model.norm.weight"] == last);
        const auto whole = io::SafetensorsFile::open(single);
        std::uint64_t bytes = 0, elements = 0;
        for (const io::TensorInfo& t : whole.tensors()) bytes += t.nbytes(), elements += std::uint64_t(t.numel());
        CHECK(index["weight_map"].size() == whole.tensors().size());
        CHECK(index["metadata"]["total_size"] == bytes);
        CHECK(index["metadata"]["total_parameters"] == elements);
      }
      require_same_export(tmp / (run + "-one/final"), final_dir);
    }
    world.barrier();
  }
}

TEST_CASE("a shard that cannot be written fails the export on every rank and leaves the earlier one", "[mpi][train]") {
  const Comm world = Comm::world();
  TempDir tmp;
  prepare_corpus(tmp);
  std::vector<std::string> o = {"train/sample_tokens=0"};
  for (const std::string& l : export_layout(world)) o.push_back(l);
  Deck deck = micro_deck(tmp, "run", o);
  REQUIRE(run_training(deck, world, std::nullopt) == TrainOutcome::Finished);
  std::string run_dir = tmp / "run";  // rank 0's: the run's files are there
  world.broadcast(run_dir);
  const std::string final_dir = run_dir + "/final", checkpoint = run_dir + "/checkpoints/step-000000006.h5";
  // Exporting again (a restart with nothing left to train) with a directory where the last shard
  // goes: with two stages its writer is the first rank of the last stage, not rank 0.
  const std::string last = world.size() % 2 == 0 ? "model-00002-of-00002.safetensors" : "model.safetensors";
  std::map<std::string, std::string> before;
  if (world.is_root()) {
    before = files_in(final_dir);
    fs::create_directories(final_dir + ".tmp/" + last);
  }
  world.barrier();
  Deck again = micro_deck(tmp, "run", o);
  const std::string message =
      jetmoe::testing::error_of([&] { run_training(again, world, checkpoint); }, ErrorKind::Input);
  CHECK_THAT(message, Catch::Matchers::Contains(final_dir + ".tmp/" + last) &&
                          Catch::Matchers::Contains("Is a directory"));
  if (world.is_root()) {
    CHECK(files_in(final_dir) == before);
    CHECK(!fs::exists(final_dir + ".tmp"));
    const ModelConfig config = load_hf_config(final_dir);
    CHECK_NOTHROW(load_hf_weights(final_dir, config));
    // As a job killed in the middle of replacing the export leaves it: the earlier export moved
    // aside, the staging directory holding something (here not even a shard).
    std::ofstream(final_dir + "/tokenizer.model") << "not the export's";
    fs::rename(final_dir, final_dir + ".old");
    fs::create_directories(final_dir + ".tmp/leftover");
  }
  world.barrier();
  // The next export replaces the earlier one and keeps what else was put next to it.
  Deck retry = micro_deck(tmp, "run", o);
  REQUIRE(run_training(retry, world, checkpoint) == TrainOutcome::Finished);
  if (world.is_root()) {
    auto after = files_in(final_dir);
    CHECK(after["tokenizer.model"] == "not the export's");
    after.erase("tokenizer.model");
    CHECK(after == before);
    CHECK(!fs::exists(final_dir + ".tmp"));
    CHECK(!fs::exists(final_dir + ".old"));
  }
  world.barrier();
}

TEST_CASE("train/precision = bf16 trains on a GPU or is a deck error naming why not", "[unit][train]") {
  TempDir tmp;
  prepare_corpus(tmp);
  const std::string why = device_training_unavailable();
  if (why.empty()) {  // a GPU this build's kernels run on (the emulated one: tests/test_device_training.cpp)
    CHECK(train(tmp, "bf16", {"train/precision=bf16", "schedule/total=2"}) == TrainOutcome::Finished);
    return;
  }
  const std::string message = jetmoe::testing::error_of(
      [&] { train(tmp, "bf16", {"train/precision=bf16"}); }, ErrorKind::Deck);
  CHECK(message.find("precision") != std::string::npos);
  CHECK(message.find(why) != std::string::npos);
  CHECK(message.find("use fp32") != std::string::npos);
  CHECK(!fs::exists(tmp / "bf16/checkpoints"));
}

TEST_CASE("a fresh run does not mix with an earlier run's checkpoints; a restart runs past later ones", "[unit][train]") {
  TempDir tmp;
  prepare_corpus(tmp);
  REQUIRE(train(tmp, "a") == TrainOutcome::Finished);  // checkpoints at steps 3 and 6
  const std::string a3 = tmp / "a/checkpoints/step-000000003.h5", a6 = tmp / "a/checkpoints/step-000000006.h5";
  const std::string a9 = tmp / "a/checkpoints/step-000000009.h5", kept6 = tmp / "a6.h5";
  fs::copy_file(a6, kept6);
  const auto metrics = read_bytes(tmp / "a/metrics.jsonl");

  // A fresh run into the same directory: one error naming the directory, the latest checkpoint and the
  // ways out; nothing of the earlier run touched.
  const std::string message = jetmoe::testing::error_of([&] { train(tmp, "a"); }, ErrorKind::Input);
  CHECK_THAT(message, Catch::Contains("a/checkpoints already holds 2 checkpoint(s) of an earlier run"));
  CHECK_THAT(message, Catch::Contains("step-000000006.h5"));
  CHECK_THAT(message, Catch::Contains("checkpoint/overwrite = true"));
  CHECK(read_bytes(tmp / "a/metrics.jsonl") == metrics);
  CHECK(fs::exists(a3));

  // A restart from step 3 while a later checkpoint (step 9, of an abandoned trajectory) exists, keeping
  // one checkpoint: the run's own step 6 is kept (the same bits as the first run's), step 9 untouched.
  fs::copy_file(a6, a9);
  REQUIRE(train(tmp, "a", {"checkpoint/keep_last=1"}, a3) == TrainOutcome::Finished);
  require_identical(kept6, a6);
  CHECK(fs::exists(a9));
  CHECK_FALSE(fs::exists(a3));

  // checkpoint/overwrite: the fresh run deletes the earlier checkpoints first.
  REQUIRE(train(tmp, "a", {"checkpoint/overwrite=true"}) == TrainOutcome::Finished);
  CHECK_FALSE(fs::exists(a9));
  CHECK(fs::exists(a3));
  require_identical(kept6, a6);
}
