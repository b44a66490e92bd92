#include "data/sampler.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <set>

#include "core/error.hpp"
#include "core/log.hpp"
#include "data/shards.hpp"

namespace fs = std::filesystem;

namespace jetmoe {

namespace {

[[noreturn]] void input_error(const std::string& message) { fail(ErrorKind::Input, message); }

constexpr std::uint64_t kGolden = 0x9E3779B97F4A7C15ull;
constexpr std::uint64_t kStateTag = 0x4A4D444154410001ull;  // "JMDATA", state layout version 1
constexpr std::size_t kStateHeader = 8, kStatePerSource = 3;

std::uint64_t splitmix64(std::uint64_t x) {
  x += kGolden;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

std::uint64_t fnv1a64(const std::string& s) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (const char c : s) h = (h ^ std::uint64_t(static_cast<unsigned char>(c))) * 0x100000001b3ull;
  return h;
}

std::uint64_t split_tag(Split s) { return s == Split::Train ? 0x747261696eull : 0x76616c6964ull; }

std::string format_count(std::uint64_t n) {
  std::string digits = std::to_string(n), out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string fmt_weight(double w) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", w);
  return buf;
}

// Warnings that a fresh sampler per evaluation would otherwise repeat.
void warn_once(const std::string& message) {
  static std::mutex mutex;
  static std::set<std::string> seen;
  std::lock_guard<std::mutex> lock(mutex);
  if (seen.insert(message).second) log::warn("%s", message.c_str());
}

}  // namespace

const char* split_name(Split split) { return split == Split::Train ? "train" : "validation"; }

std::uint64_t permute_index(std::uint64_t index, std::uint64_t n, std::uint64_t key) {
  JETMOE_ASSERT(index < n, "permutation index out of range");
  if (n == 1) return 0;
  int bits = 64 - __builtin_clzll(n - 1);  // enough bits for n - 1
  bits += bits & 1;                         // two equal halves
  if (bits < 2) bits = 2;
  const int half = bits / 2;
  const std::uint64_t mask = half == 64 ? ~0ull : (std::uint64_t(1) << half) - 1;
  // A 4-round Feistel network permutes [0, 2^bits); walking the cycle until the value falls below n
  // restricts it to a permutation of [0, n). 2^bits < 4n, so the walk is short.
  std::uint64_t x = index;
  do {
    std::uint64_t left = x >> half, right = x & mask;
    for (std::uint64_t round = 0; round < 4; ++round) {
      const std::uint64_t f = splitmix64((key ^ (round * 0xD6E8FEB86659FD93ull)) + right) & mask;
      const std::uint64_t next_left = right;
      right = left ^ f;
      left = next_left;
    }
    x = (left << half) | right;
  } while (x >= n);
  return x;
}

std::string unprepared_source(const std::string& dir, const std::vector<std::string>& prepared, const std::string& name) {
  if (std::find(prepared.begin(), prepared.end(), name) != prepared.end()) return "";
  std::string available;
  for (const auto& n : prepared) available += (available.empty() ? "" : ", ") + n;
  return "names source '" + name + "', which is not prepared in '" + dir + "' (available: " + available + ")";
}

DataSampler::DataSampler(const std::string& dir, Split split, std::int64_t seq_tokens, std::int64_t vocab_size,
                         const MixtureWeights& phase1, const MixtureWeights& phase2, std::uint64_t seed)
    : dir_(dir), split_(split), seq_tokens_(seq_tokens), seed_(seed) {
  JETMOE_ASSERT(seq_tokens >= 1, "sequences need at least one token");
  const auto names = data::list_prepared_sources(dir);
  if (names.empty())
    input_error("data directory '" + dir + "' holds no prepared sources (subdirectories with a manifest.json); "
                "prepare the corpora first with jetmoe-prepare");
  const MixtureWeights* mixtures[2] = {&phase1, phase2.empty() ? &phase1 : &phase2};
  for (int p = 0; p < 2; ++p) {
    if (p == 1 && phase2.empty()) break;
    const std::string which = "the phase " + std::to_string(p + 1) + " mixture";
    std::set<std::string> seen;
    double sum = 0;
    for (const auto& [name, weight] : *mixtures[p]) {
      if (const std::string missing = unprepared_source(dir, names, name); !missing.empty())
        input_error(which + " " + missing);
      if (!seen.insert(name).second) input_error(which + " names source '" + name + "' twice");
      if (!std::isfinite(weight) || weight < 0)
        input_error(which + ": the weight of '" + name + "' must be finite and >= 0, found " + fmt_weight(weight));
      sum += weight;
    }
    if (!mixtures[p]->empty() && !(sum > 0)) input_error(which + ": the weights add up to 0");
  }

  std::string tokenizer_sha, tokenizer_source;
  for (const auto& name : names) {
    Source s;
    s.name = name;
    s.data = std::make_unique<data::PreparedSource>(data::open_prepared_source((fs::path(dir) / name).string()));
    const auto& m = s.data->manifest;
    if (m.vocab_size > vocab_size)
      input_error("source '" + name + "' in '" + dir + "' was tokenised with a " + std::to_string(m.vocab_size) +
                  "-piece tokenizer (" + m.tokenizer_model + ") but the model has vocab_size " +
                  std::to_string(vocab_size));
    if (tokenizer_source.empty()) {
      tokenizer_sha = m.tokenizer_sha256, tokenizer_source = name;
    } else if (m.tokenizer_sha256 != tokenizer_sha) {
      input_error("sources '" + tokenizer_source + "' and '" + name + "' in '" + dir +
                  "' were prepared with different tokenizers (sha256 " + tokenizer_sha.substr(0, 12) + "... and " +
                  m.tokenizer_sha256.substr(0, 12) + "...); prepare them with the same tokenizer.model");
    }
    s.name_hash = fnv1a64(name);
    s.windows = std::uint64_t(s.data->split(split == Split::Validation).tokens() / seq_tokens);
    sources_.push_back(std::move(s));
  }

  // Raw weights: the deck's, or each source's token count in this split.
  for (int p = 0; p < 2; ++p) {
    for (auto& s : sources_) {
      double w = 0;
      if (mixtures[p]->empty()) {
        w = double(s.data->split(split == Split::Validation).tokens());
      } else {
        for (const auto& [name, weight] : *mixtures[p])
          if (name == s.name) w = weight;
      }
      s.weight[p] = w;
    }
  }
  // Sources too short for one sequence.
  for (auto& s : sources_) {
    if (s.windows > 0 || (s.weight[0] <= 0 && s.weight[1] <= 0)) continue;
    const auto have = s.data->split(split == Split::Validation).tokens();
    if (split == Split::Train)
      input_error("source '" + s.name + "' in '" + dir + "' has " + std::to_string(have) +
                  " training tokens, fewer than one sequence of " + std::to_string(seq_tokens) +
                  "; give it weight 0 in the mixtures or prepare more text");
    warn_once("source '" + s.name + "' in '" + dir + "' has " + std::to_string(have) +
              " validation tokens, fewer than one sequence of " + std::to_string(seq_tokens) +
              ": validation leaves it out (prepare with a larger prepare/validation_fraction to include it)");
    s.weight[0] = s.weight[1] = 0;
  }
  for (int p = 0; p < 2; ++p) {
    double sum = 0;
    for (const auto& s : sources_) sum += s.weight[p];
    if (!(sum > 0)) {
      std::string sizes;
      for (const auto& s : sources_)
        sizes += (sizes.empty() ? "" : ", ") + s.name + " " +
                 std::to_string(s.data->split(split == Split::Validation).tokens());
      input_error("no source in '" + dir + "' has " + std::string(split_name(split)) + " data for phase " +
                  std::to_string(p + 1) + ": a sequence needs " + std::to_string(seq_tokens) +
                  " tokens; the sources have " + sizes + " tokens" +
                  (split == Split::Validation ? " (prepare with a larger prepare/validation_fraction)" : ""));
    }
    double running = 0;
    cumulative_[p].clear();
    for (auto& s : sources_) {
      s.weight[p] /= sum;
      running += s.weight[p];
      cumulative_[p].push_back(running);
    }
    // The last source with weight ends the interval exactly at 1, whatever the rounding.
    for (std::size_t i = sources_.size(); i-- > 0;) {
      cumulative_[p][i] = 1.0;
      if (sources_[i].weight[p] > 0) break;
    }
  }
}

DataSampler::~DataSampler() = default;

std::size_t DataSampler::pick_source(std::uint64_t draw, int phase) const {
  const std::uint64_t key = splitmix64(splitmix64(seed_) ^ 0x6D6978747572650Aull ^ split_tag(split_));
  const double u = double(splitmix64(key + draw * kGolden) >> 11) * 0x1.0p-53;
  const auto& cum = cumulative_[phase - 1];
  for (std::size_t i = 0; i < cum.size(); ++i)
    if (u < cum[i]) return i;
  return cum.size() - 1;  // unreachable: the last cumulative weight is 1 > u
}

void DataSampler::next(std::int64_t count, int phase, std::vector<std::int32_t>& out) {
  JETMOE_ASSERT(phase == 1 || phase == 2, "phase must be 1 or 2");
  JETMOE_ASSERT(count >= 0, "negative sequence count");
  out.reserve(out.size() + std::size_t(count * seq_tokens_));
  for (std::int64_t i = 0; i < count; ++i) {
    Source& s = sources_[pick_source(draws_, phase)];
    JETMOE_ASSERT(s.windows > 0, "picked a source without a full sequence");
    const std::uint64_t epoch = s.cursor / s.windows, k = s.cursor % s.windows;
    const std::uint64_t key =
        splitmix64(splitmix64(splitmix64(splitmix64(seed_) ^ s.name_hash) ^ epoch) ^ split_tag(split_));
    const std::uint64_t window = permute_index(k, s.windows, key);
    s.data->split(split_ == Split::Validation)
        .read_tokens(std::int64_t(window) * seq_tokens_, seq_tokens_, out);
    ++s.cursor, ++draws_, ++phase_draws_[phase - 1];
  }
}

std::vector<std::uint64_t> DataSampler::state() const {
  std::vector<std::uint64_t> st = {kStateTag,
                                   seed_,
                                   split_ == Split::Train ? 0ull : 1ull,
                                   std::uint64_t(seq_tokens_),
                                   std::uint64_t(sources_.size()),
                                   draws_,
                                   phase_draws_[0],
                                   phase_draws_[1]};
  for (const auto& s : sources_) {
    st.push_back(s.name_hash);
    st.push_back(std::uint64_t(s.data->split(split_ == Split::Validation).tokens()));
    st.push_back(s.cursor);
  }
  return st;
}

void DataSampler::restore(const std::vector<std::uint64_t>& st) {
  const std::string what = "the saved data position does not fit '" + dir_ + "': ";
  if (st.size() < kStateHeader || st[0] != kStateTag)
    input_error(what + "it is not a data-sampler state of this version (" + std::to_string(st.size()) + " values)");
  if (st[1] != seed_)
    input_error(what + "it was made with seed " + std::to_string(st[1]) + ", this run has " + std::to_string(seed_));
  const std::uint64_t split_here = split_ == Split::Train ? 0 : 1;
  if (st[2] != split_here)
    input_error(what + "it is for the " + split_name(st[2] == 0 ? Split::Train : Split::Validation) +
                " split, not " + split_name(split_));
  if (st[3] != std::uint64_t(seq_tokens_))
    input_error(what + "it was made for sequences of " + std::to_string(st[3]) + " tokens, this run uses " +
                std::to_string(seq_tokens_));
  if (st[4] != sources_.size() || st.size() != kStateHeader + kStatePerSource * st[4])
    input_error(what + "it has " + std::to_string(st[4]) + " sources, the directory now " +
                std::to_string(sources_.size()) + " (" + [&] {
                  std::string names;
                  for (const auto& s : sources_) names += (names.empty() ? "" : ", ") + s.name;
                  return names;
                }() + ")");
  for (std::size_t i = 0; i < sources_.size(); ++i) {
    const std::uint64_t* e = st.data() + kStateHeader + kStatePerSource * i;
    const auto& s = sources_[i];
    const auto tokens = std::uint64_t(s.data->split(split_ == Split::Validation).tokens());
    if (e[0] != s.name_hash)
      input_error(what + "its source " + std::to_string(i + 1) + " is not '" + s.name +
                  "' (the sources were renamed, added or removed)");
    if (e[1] != tokens)
      input_error(what + "source '" + s.name + "' had " + std::to_string(e[1]) + " " + split_name(split_) +
                  " tokens, now " + std::to_string(tokens) + " (prepared again?)");
  }
  draws_ = st[5], phase_draws_[0] = st[6], phase_draws_[1] = st[7];
  for (std::size_t i = 0; i < sources_.size(); ++i) sources_[i].cursor = st[kStateHeader + kStatePerSource * i + 2];
}

std::string DataSampler::describe() const {
  std::string out = std::to_string(sources_.size()) + " source(s) in " + dir_ + ", " + split_name(split_) +
                    " split, sequences of " + std::to_string(seq_tokens_) + " tokens:";
  for (const auto& s : sources_) {
    const auto tokens = std::uint64_t(s.data->split(split_ == Split::Validation).tokens());
    const double epochs = s.windows > 0 ? double(s.cursor) / double(s.windows) : 0.0;
    char tail[96];
    std::snprintf(tail, sizeof tail, ", %.3g epochs drawn", epochs);
    out += "\n  " + s.name + ": " + format_count(tokens) + " tokens, " + format_count(s.windows) +
           " sequences, weight " + fmt_weight(s.weight[0]) + " (phase 1), " + fmt_weight(s.weight[1]) +
           " (phase 2)" + tail;
  }
  return out;
}

std::int64_t DataSampler::tokens(Split split) const {
  std::int64_t n = 0;
  for (const auto& s : sources_)
    if (s.weight[0] > 0 || s.weight[1] > 0) n += s.data->split(split == Split::Validation).tokens();
  return n;
}

std::int64_t DataSampler::sequences_drawn(int phase) const {
  JETMOE_ASSERT(phase == 1 || phase == 2, "phase must be 1 or 2");
  return std::int64_t(phase_draws_[phase - 1]);
}

std::vector<std::string> DataSampler::source_names() const {
  std::vector<std::string> names;
  for (const auto& s : sources_) names.push_back(s.name);
  return names;
}

std::int64_t DataSampler::sequences_from(const std::string& source) const {
  for (const auto& s : sources_)
    if (s.name == source) return std::int64_t(s.cursor);
  JETMOE_ASSERT(false, "unknown source " + source);
  return 0;
}

}  // namespace jetmoe
