#include <catch2/catch.hpp>

#include "core/deck.hpp"
#include "core/error.hpp"
#include "model/config.hpp"
#include "train/config.hpp"

using Catch::Matchers::Contains;
using jetmoe::Deck;
using jetmoe::ModelConfig;
using jetmoe::TrainConfig;

namespace {
std::string deck_error(const std::string& text, int ranks = 1) {
  const Deck d = Deck::from_text(text, "r.deck");
  try {
    TrainConfig::from_deck(d, ModelConfig::from_deck(d), ranks);
  } catch (const jetmoe::Error& e) {
    CHECK(e.exit_code() == 2);
    return e.what();
  }
  FAIL("no error");
  return "";
}
}  // namespace

TEST_CASE("train config derives accumulation and steps", "[unit][train]") {
  const Deck d = Deck::from_text(
      "<train>\nseq_len = 64\nmicro_batch_size = 4\nglobal_batch_tokens = 2048\n"
      "<schedule>\nunit = tokens\ntotal = 1_000_000\nwarmup = 10000\ndecay = 20000\n"
      "<parallel>\ndata_parallel = 2\n",
      "t.deck");
  const TrainConfig t = TrainConfig::from_deck(d, ModelConfig::from_deck(d), 2);
  CHECK(t.grad_accum_steps == 4);                         // 2048 / (4 * 64 * 2)
  CHECK(t.total_steps == (1000000 + 2047) / 2048);        // tokens -> steps, rounded up
}

TEST_CASE("train config cross-key errors", "[unit][train]") {
  CHECK_THAT(deck_error("<train>\nseq_len = 100\nmicro_batch_size = 3\nglobal_batch_tokens = 1000\n"),
             Contains("r.deck:4: <train>/global_batch_tokens: 1000 is not a multiple of micro_batch_size x seq_len x data_parallel = 300"));
  CHECK_THAT(deck_error("<train>\nseq_len = 4096\n"), Contains("<train>/seq_len: 4096 exceeds the model's context of 512 tokens"));
  CHECK_THAT(deck_error("<parallel>\npipeline_stages = 2\ndata_parallel = 2\n", 2),
             Contains("pipeline_stages x data_parallel = 2 x 2 does not match the 2 MPI rank(s)"));
  CHECK_THAT(deck_error("<parallel>\npipeline_stages = 8\n", 8), Contains("8 stages for only 4 layers"));
  CHECK_THAT(deck_error("<schedule>\ntotal = 100\nwarmup = 50\ndecay = 60\n"),
             Contains("<schedule>/warmup: warmup + decay = 110 exceeds total = 100"));
  CHECK_THAT(deck_error("<schedule>\ntype = cosine\ntotal = 100\nwarmup = 150\n"),
             Contains("warmup = 150 exceeds total = 100"));
}
