#pragma once
// The pretraining data stream: fixed-length token sequences drawn from prepared sources (data/shards.hpp)
// with per-phase mixture weights (jetmoe-spec.md section 5: the phase 1 mixture during warmup and the stable
// phase, the phase 2 mixture during the decay).
//
// Sequences. A source's split is one token stream (documents packed with their </s>, no attention reset, as
// Megatron). It is cut into W = floor(tokens / seq_tokens) non-overlapping windows; the tail that does not
// fill a window is never used. Epoch e of a source visits its W windows in the order of a pseudo-random
// permutation keyed by (seed, source, e) (a Feistel network with cycle walking: O(1) memory for any W), so
// every window is seen once per epoch and the next epoch uses a new order.
//
// Mixture. Draw number d (counted over the whole run, both phases) picks its source with the uniform
// number splitmix64(key, d) against the phase's normalised cumulative weights. Everything is integer
// arithmetic on (seed, counters) plus one IEEE division per weight, so the stream is the same on every
// platform and for any batching of next() calls.
//
// Resumption. state() is the draw counter, the per-phase counts and each source's window cursor, plus a
// fingerprint of the layout (seed, split, seq_tokens, source names and sizes); restore() on a sampler over
// the same data continues bit for bit (N draws, state, restore into a fresh sampler, M draws == N + M draws).
// The mixture weights are not part of the state: a restart may change them.
//
// Validation. Split::Validation works the same way over the validation files; a fresh sampler always gives
// the same sequences, so evaluating the first K of them is comparable across the run. A source whose
// validation split is shorter than one sequence is left out of validation (with a warning, once per
// process); if no source has one, the constructor fails and says so.
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "core/deck.hpp"

namespace jetmoe {

namespace data {
struct PreparedSource;
}

enum class Split { Train, Validation };
const char* split_name(Split split);  // "train" | "validation"

// name:weight pairs as the deck's <data>/phase1_mixture and phase2_mixture give them.
using MixtureWeights = WeightList;

// "" when source `name` is one of `prepared` (what data::list_prepared_sources finds in `dir`), else
// "names source 'NAME', which is not prepared in 'DIR' (available: A, B)", for an error message.
std::string unprepared_source(const std::string& dir, const std::vector<std::string>& prepared, const std::string& name);

class DataSampler {
 public:
  // dir: <data>/dir; seq_tokens: tokens per sequence (seq_len + 1: inputs and the shifted labels);
  // phase1/phase2: the deck's mixtures (phase1 empty: every source weighted by its token count in this
  // split; phase2 empty: phase1). Checks that every named source exists (the error lists those that do),
  // that weights are finite and >= 0 with a positive sum, that every source was prepared with the same
  // tokenizer, and that its vocabulary fits the model's `vocab_size`.
  DataSampler(const std::string& dir, Split split, std::int64_t seq_tokens, std::int64_t vocab_size,
              const MixtureWeights& phase1, const MixtureWeights& phase2, std::uint64_t seed);
  ~DataSampler();
  DataSampler(const DataSampler&) = delete;
  DataSampler& operator=(const DataSampler&) = delete;

  // Appends `count` sequences of seq_tokens token ids each, drawn with the mixture of `phase` (1 or 2).
  void next(std::int64_t count, int phase, std::vector<std::int32_t>& out);

  // The exact position in the stream, and its inverse. restore() throws ErrorKind::Input when the state
  // comes from another layout (other sources or sizes, seed, split or sequence length).
  std::vector<std::uint64_t> state() const;
  void restore(const std::vector<std::uint64_t>& state);

  // One line per source: name, tokens, sequences, weight in each phase, epochs used.
  std::string describe() const;

  std::int64_t tokens(Split split) const;  // tokens of that split, over the sources this sampler uses
  std::int64_t sequences_drawn() const { return std::int64_t(draws_); }
  std::int64_t sequences_drawn(int phase) const;
  std::int64_t seq_tokens() const { return seq_tokens_; }
  Split split() const { return split_; }
  std::vector<std::string> source_names() const;
  // Sequences drawn from a source so far (its window cursor over all epochs).
  std::int64_t sequences_from(const std::string& source) const;

 private:
  struct Source {
    std::string name;
    std::unique_ptr<data::PreparedSource> data;
    std::uint64_t name_hash = 0;
    std::uint64_t windows = 0;  // sequences per epoch
    double weight[2] = {0, 0};  // normalised, per phase
    std::uint64_t cursor = 0;   // windows drawn so far
  };
  std::size_t pick_source(std::uint64_t draw, int phase) const;

  std::string dir_;
  Split split_;
  std::int64_t seq_tokens_;
  std::uint64_t seed_;
  std::vector<Source> sources_;
  std::vector<double> cumulative_[2];
  std::uint64_t draws_ = 0, phase_draws_[2] = {0, 0};
};

// A pseudo-random permutation of [0, n): index -> position, keyed by `key`. Exposed for tests.
std::uint64_t permute_index(std::uint64_t index, std::uint64_t n, std::uint64_t key);

}  // namespace jetmoe
