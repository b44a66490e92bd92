// What a GPU too small for the run does to bf16 training (one clear error naming the buffer and what
// to change, a failed run, nothing written), what train/recompute and train/logits_chunk_tokens save of
// it, and to evaluation on the GPU (the same error, and the
// evaluator works again once the memory is there). Emulated GPU only (jetmoe-device-emu-tests): the fake
// runtime (kernels/tests/emu/runtime.cpp) is given a memory size, past which cudaMalloc fails with
// cudaErrorMemoryAllocation as a full GPU's does.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstddef>
#include <string>
#include <vector>

#include "core/error.hpp"
#include "eval/device_forward.hpp"
#include "model/hf_checkpoint.hpp"
#include "model/model.hpp"
#include "support.hpp"
#include "trainer_support.hpp"

extern "C" void jk_emu_set_device_memory(std::size_t bytes);
extern "C" std::size_t jk_emu_device_bytes_peak(int reset);

using namespace jetmoe;
using jetmoe::testing::TempDir;
namespace tt = jetmoe::testing::trainer;
namespace fs = std::filesystem;

namespace {
struct DeviceMemoryLimit {  // the emulated GPU's size for one scope
  explicit DeviceMemoryLimit(std::size_t bytes) { jk_emu_set_device_memory(bytes); }
  ~DeviceMemoryLimit() { jk_emu_set_device_memory(0); }
  DeviceMemoryLimit(const DeviceMemoryLimit&) = delete;
  DeviceMemoryLimit& operator=(const DeviceMemoryLimit&) = delete;
};
}  // namespace

TEST_CASE("bf16 training on a GPU too small is one clear error and writes nothing", "[unit][device][train]") {
  TempDir tmp;
  tt::prepare_corpus(tmp);
  const std::vector<std::string> deck = {"train/precision=bf16", "schedule/total=1", "schedule/warmup=0", "schedule/decay=1",
                                         "train/eval_interval=0",
                                         "train/sample_tokens=0"};
  // What the run needs at most: the limit one byte below it makes the last allocation fail (one of
  // the micro-batch's buffers, after the weights), the limit of 1 KiB the first (the network's).
  jk_emu_device_bytes_peak(1);
  REQUIRE(tt::train(tmp, "fits", deck) == TrainOutcome::Finished);
  const std::size_t need = jk_emu_device_bytes_peak(1);
  REQUIRE(need > 1024);
  for (const std::size_t limit : {need - 1, std::size_t(1024)}) {
    INFO("emulated GPU of " << limit << " bytes; the run needs " << need);
    const std::string run = "oom-" + std::to_string(limit);
    std::string message;
    {
      const DeviceMemoryLimit gpu(limit);
      message = jetmoe::testing::error_of([&] { tt::train(tmp, run, deck); }, ErrorKind::Input);
    }
    CHECK(message.find("bf16 training: out of GPU memory in ") != std::string::npos);
    CHECK(message.find("train/micro_batch_size") != std::string::npos);
    CHECK(message.find("train/recompute") != std::string::npos);
    CHECK(message.find("train/logits_chunk_tokens") != std::string::npos);
    const fs::path checkpoints = tmp / (run + "/checkpoints");  // made at the start, left empty
    CHECK((!fs::exists(checkpoints) || fs::is_empty(checkpoints)));
    CHECK(!fs::exists(tmp / (run + "/final")));
    WARN(limit << " bytes: " << message);
  }
  // The same process trains again once the memory is there (everything was freed).
  REQUIRE(tt::train(tmp, "again", deck) == TrainOutcome::Finished);
}

namespace {
// The emulated GPU's memory peak over one training run `run` of `deck` (which must finish).
std::size_t training_peak(const TempDir& tmp, const std::string& run, const std::vector<std::string>& deck) {
  jk_emu_device_bytes_peak(1);
  REQUIRE(tt::train(tmp, run, deck) == TrainOutcome::Finished);
  return jk_emu_device_bytes_peak(1);
}
}  // namespace

TEST_CASE("bf16 training with train/recompute: the same run bit for bit in less GPU memory", "[unit][device][train]") {
  TempDir tmp;
  tt::prepare_corpus(tmp);
  const std::vector<std::string> deck = {"train/precision=bf16", "train/eval_interval=0", "train/sample_tokens=0"};
  std::vector<std::string> recompute = deck;
  recompute.push_back("train/recompute=true");
  const std::size_t kept = training_peak(tmp, "kept", deck);
  const std::size_t recomputed = training_peak(tmp, "recomputed", recompute);
  // Six steps: every loss, gradient norm and router statistic, and the final checkpoint, bit for bit.
  CHECK(tt::lines_of(tmp / "recomputed/metrics.jsonl", "train") == tt::lines_of(tmp / "kept/metrics.jsonl", "train"));
  tt::require_identical(tmp / "kept/checkpoints/step-000000006.h5", tmp / "recomputed/checkpoints/step-000000006.h5");
  // The micro model's two blocks: one block's saved buffer instead of two (the rest of the peak is the
  // weights, gradients and the head's logits, which recompute does not change).
  WARN("GPU memory peak: " << kept << " bytes with every block's activations kept, " << recomputed
                           << " with train/recompute");
  CHECK(recomputed < kept);
}

TEST_CASE("bf16 training with train/logits_chunk_tokens: the head's logits a chunk at a time, in less GPU memory",
          "[unit][device][train]") {
  TempDir tmp;
  tt::prepare_corpus(tmp);
  const std::vector<std::string> deck = {"train/precision=bf16", "train/eval_interval=0", "train/sample_tokens=0",
                                         "schedule/total=1",     "schedule/warmup=0",     "schedule/decay=1"};
  std::vector<std::string> chunked = deck;
  chunked.push_back("train/logits_chunk_tokens=16");
  const std::size_t whole = training_peak(tmp, "whole", deck);
  const std::size_t in_chunks = training_peak(tmp, "chunked", chunked);
  // The micro-batch's 4 x 16 = 64 tokens' bf16 logits over the vocabulary of 400 (51200 bytes) give
  // way to one chunk's 16 rows (12800 bytes), up to the buffers' 256-byte alignment.
  const std::size_t saving = 64 * 400 * 2 - 16 * 400 * 2;
  WARN("GPU memory peak: " << whole << " bytes with the micro-batch's logits, " << in_chunks
                           << " in chunks of 16 tokens");
  CHECK(in_chunks + saving - 1024 <= whole);
  CHECK(whole <= in_chunks + saving + 1024);
  // (The losses: "bf16 training on the emulated GPU" in test_device_training.cpp.)
}

TEST_CASE("evaluation on a GPU too small is one clear error naming what to change", "[unit][device][eval]") {
  const std::string dir = std::string(JETMOE_SOURCE_DIR) + "/tests/fixtures/eval/model";
  ModelConfig c = load_hf_config(dir);
  c.max_position_embeddings = 16;
  const Model model(c, load_hf_weights(dir, c));
  const eval::TokenBatch batch{2, 8, std::vector<std::int32_t>(16, 5)};
  std::vector<float> logits(std::size_t(16 * c.vocab_size));
  jk_emu_device_bytes_peak(1);
  std::size_t weights = 0, need = 0;  // device bytes of the weights, and of the weights and one batch
  {
    eval::DeviceForward gpu(model);
    weights = jk_emu_device_bytes_peak(1);
    gpu.logits(batch, logits.data());
    need = jk_emu_device_bytes_peak(1);
  }
  REQUIRE(need > weights);
  REQUIRE(weights > 1024);
  auto check_message = [](const std::string& message, const char* what, const char* hint) {
    CHECK_THAT(message, Catch::Contains(std::string("evaluation on the GPU: out of GPU memory in ") + what) &&
                            Catch::Contains(hint));
    WARN(message);
  };
  {
    const DeviceMemoryLimit gpu(1024);  // not even the weights
    check_message(jetmoe::testing::error_of([&] { eval::DeviceForward forward(model); }, ErrorKind::Input),
                  "the bf16 weights", "eval/precision = fp32");
  }
  eval::DeviceForward gpu(model);
  {
    const DeviceMemoryLimit limit(need - 1);  // the weights, not the batch
    check_message(jetmoe::testing::error_of([&] { gpu.logits(batch, logits.data()); }, ErrorKind::Input), "the logits",
                  "eval/batch_size");
  }
  gpu.logits(batch, logits.data());  // and again once the memory is there
  CHECK(std::isfinite(logits[0]));
}
