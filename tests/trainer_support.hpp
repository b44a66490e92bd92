#pragma once
// The micro training setup shared by the trainer tests (test_trainer.cpp, test_alignment.cpp,
// test_device_training.cpp): a two-source corpus prepared with the fixture tokenizer, the micro model's
// deck, checkpoint comparison, the metrics file's lines, and the SFT/DPO chat corpus and deck.
#include <catch2/catch.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "core/deck.hpp"
#include "data/prepare.hpp"
#include "io/checkpoint.hpp"
#include "io/tokenizer.hpp"
#include "parallel/comm.hpp"
#include "support.hpp"
#include "train/trainer.hpp"

namespace jetmoe::testing::trainer {

namespace fs = std::filesystem;

inline const std::string kTokenizer = std::string(JETMOE_SOURCE_DIR) + "/tests/fixtures/tokenizer/tokenizer.model";

// A small corpus of two sources, prepared with the fixture tokenizer (vocabulary 400).
inline void prepare_corpus(const TempDir& tmp) {
  std::ostringstream prose, code;
  const char* words[] = {"the", "river", "runs", "to", "a", "sea", "of", "light", "and", "stone", "under", "sky"};
  for (int d = 0; d < 60; ++d) {
    for (int w = 0; w < 40; ++w) prose << words[(d * 7 + w * w + w) % 12] << (w % 9 == 8 ? ".\n" : " ");
    prose << "\n\n";
    code << "{\"text\": \"int f" << d << "(int x) { return x * " << d << " + " << (d % 5) << "; }\"}\n";
  }
  fs::create_directories(tmp / "in");
  std::ofstream(tmp / "in/prose.txt") << prose.str();
  std::ofstream(tmp / "in/code.jsonl") << code.str();
  data::PrepareSettings s;
  s.output_dir = tmp / "data";
  s.tokenizer_model = kTokenizer;
  s.validation_fraction = 0.2;
  data::prepare_corpora({{"prose", tmp / "in/prose.txt"}, {"code", tmp / "in/code.jsonl"}}, io::Tokenizer(kTokenizer), s);
}

inline Deck micro_deck(const TempDir& tmp, const std::string& run, const std::vector<std::string>& overrides = {}) {
  std::ostringstream d;
  d << "<job>\nname = micro\nseed = 7\noutput_dir = " << (tmp / run) << "\nprogress_interval = 2\npeak_gflops = 10\n"
    << "<model>\npreset = none\nvocab_size = 400\nhidden_size = 24\nnum_layers = 2\nnum_kv_heads = 2\nhead_dim = 6\n"
    << "num_experts = 4\ntop_k = 2\nffn_hidden_size = 20\nmax_position_embeddings = 64\nrope_theta = 10000\n"
    << "rms_norm_eps = 1e-5\ntie_word_embeddings = true\ninitializer_range = 0.02\n"
    << "<tokenizer>\nmodel = " << kTokenizer << "\n"
    << "<data>\ndir = " << (tmp / "data") << "\nphase1_mixture = prose:0.7, code:0.3\nphase2_mixture = prose:0.4, code:0.6\n"
    << "<train>\nseq_len = 16\nmicro_batch_size = 4\nglobal_batch_tokens = 128\neval_interval = 3\neval_batches = 1\n"
    << "sample_tokens = 4\n"
    << "<optimizer>\nlr = 3e-3\n"
    << "<schedule>\ntype = wsd\ntotal = 6\nwarmup = 2\ndecay = 2\n"
    << "<checkpoint>\ninterval = 3\nkeep_last = 5\n";
  Deck deck = Deck::from_text(d.str(), "micro.deck");
  for (const auto& o : overrides) deck.apply_override(o);
  return deck;
}

inline TrainOutcome train(const TempDir& tmp, const std::string& run, const std::vector<std::string>& overrides = {},
                   const std::optional<std::string>& restart = std::nullopt) {
  Deck deck = micro_deck(tmp, run, overrides);
  return run_training(deck, Comm::world(), restart);
}

// Every tensor of every group of two checkpoints is bit-identical, and so are step and tokens.
inline void require_identical(const std::string& a, const std::string& b) {
  const CheckpointReader ra(a), rb(b);
  REQUIRE(ra.meta().step == rb.meta().step);
  REQUIRE(ra.meta().tokens_seen == rb.meta().tokens_seen);
  REQUIRE(ra.meta().data_state == rb.meta().data_state);
  for (const char* group : {"params", "adam_m", "adam_v"}) {
    const auto names = ra.names(group);
    REQUIRE(!names.empty());
    REQUIRE(names == rb.names(group));
    for (const auto& name : names) {
      INFO(group << "/" << name);
      const auto shape = ra.shape(group, name);
      std::int64_t n = 1;
      for (auto s : shape) n *= s;
      std::vector<float> x(static_cast<std::size_t>(n)), y(static_cast<std::size_t>(n));
      ra.read(group, name, shape, x.data());
      rb.read(group, name, shape, y.data());
      REQUIRE(std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0);
    }
  }
}

inline std::vector<std::string> lines_of(const std::string& path, const std::string& type) {
  std::vector<std::string> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line))
    if (line.find("\"type\": \"" + type + "\"") != std::string::npos)
      out.push_back(line.substr(0, line.find(", \"elapsed_s\"")));  // wall times differ between runs
  return out;
}

// ---- SFT and DPO on a chat corpus (test_alignment.cpp) ----

inline void write_chat_data(const TempDir& tmp) {
  std::ofstream sft(tmp / "sft.jsonl"), dpo(tmp / "dpo.jsonl");
  const char* rivers[] = {"Nile", "Amazon", "Danube", "Rhine", "Volga", "Indus"};
  for (int i = 0; i < 24; ++i) {
    const std::string r = rivers[i % 6];
    sft << R"({"messages": [{"role": "user", "content": "Name river )" << i << R"(."}, {"role": "assistant", "content": "The )"
        << r << R"( is a river."}]})" << "\n";
    dpo << R"({"prompt": "Name river )" << i << R"(.", "chosen": "The )" << r << R"( is a river.", "rejected": "A )" << r
        << R"( tree is not."})" << "\n";
  }
}

inline Deck chat_deck(const TempDir& tmp, const std::string& mode, const std::string& run) {
  std::ostringstream d;
  d << "<job>\nname = " << mode << "\nseed = 3\noutput_dir = " << (tmp / run) << "\nprogress_interval = 1\npeak_gflops = 10\n"
    << "<model>\npreset = none\nvocab_size = 400\nhidden_size = 24\nnum_layers = 2\nnum_kv_heads = 2\nhead_dim = 6\n"
    << "num_experts = 4\ntop_k = 2\nffn_hidden_size = 20\nmax_position_embeddings = 64\nrope_theta = 10000\n"
    << "rms_norm_eps = 1e-5\ntie_word_embeddings = true\n"
    << "<tokenizer>\nmodel = " << kTokenizer << "\n"
    << "<data>\nchat_train = " << (tmp / (mode + ".jsonl")) << "\nchat_validation = " << (tmp / (mode + ".jsonl")) << "\n"
    << "<train>\nmode = " << mode << "\nseq_len = 48\nmicro_batch_size = 4\nglobal_batch_tokens = 384\neval_interval = 4\n"
    << "eval_batches = 2\nsample_tokens = 0\n"
    << "<optimizer>\nlr = 5e-3\n<schedule>\ntype = cosine\ntotal = 8\nwarmup_ratio = 0.25\nfinal_ratio = 0.1\n"
    << "<checkpoint>\ninterval = 4\nkeep_last = 2\n";
  return Deck::from_text(d.str(), mode + ".deck");
}

inline std::vector<std::string> train_lines(const std::string& path) {
  std::vector<std::string> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line))
    if (line.find("\"type\": \"train\"") != std::string::npos) out.push_back(line);
  return out;
}

inline double field(const std::string& line, const std::string& key) {
  return std::stod(line.substr(line.find("\"" + key + "\": ") + key.size() + 4));
}


}  // namespace jetmoe::testing::trainer
