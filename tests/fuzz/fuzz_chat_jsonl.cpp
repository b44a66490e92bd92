// Alignment data: an SFT file (data/chat_train for train/mode = sft) and a preference file (dpo), JSON
// Lines, rendered with the chat template and tokenized. Accepted failure: one ErrorKind::Input naming
// the file. Examples that read have one label per id, at most max_tokens of them, each label either
// ignored (-100) or the id it labels, and at least one that counts.
#include <cstdint>
#include <string>
#include <vector>

#include "data/chat.hpp"
#include "fuzz_support.hpp"
#include "io/tokenizer.hpp"

using namespace jetmoe;
using namespace jetmoe::data;

namespace {

void check_example(const ChatExample& e, std::int64_t max_tokens, const std::string& what) {
  fuzz::check(e.ids.size() == e.labels.size(), what + ": ids and labels differ in length");
  fuzz::check(!e.ids.empty() && static_cast<std::int64_t>(e.ids.size()) <= max_tokens,
              what + ": " + std::to_string(e.ids.size()) + " tokens (max " + std::to_string(max_tokens) + ")");
  bool counted = false;
  for (std::size_t i = 0; i < e.ids.size(); ++i) {
    fuzz::check(e.ids[i] >= 0 && e.ids[i] < fuzz::fixture_tokenizer().vocab_size(),
                what + ": id outside the vocabulary");
    fuzz::check(e.labels[i] == -100 || e.labels[i] == e.ids[i], what + ": a label that is not its id");
    counted = counted || e.labels[i] != -100;
  }
  fuzz::check(counted, what + ": kept without a labelled token");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string path = fuzz::Scratch::get().write("chat.jsonl", data, size);
  const io::Tokenizer& tok = fuzz::fixture_tokenizer();
  const std::int64_t max_tokens = 48;
  std::vector<ChatExample> sft;
  ChatReadReport report;
  if (fuzz::reads({ErrorKind::Input}, path, [&] { sft = read_sft_jsonl(path, tok, max_tokens, &report); })) {
    fuzz::check(report.kept == static_cast<std::int64_t>(sft.size()) && report.kept + report.dropped <= report.lines,
                "the SFT report does not add up");
    for (const ChatExample& e : sft) check_example(e, max_tokens, "SFT");
  }
  std::vector<PreferenceExample> pairs;
  ChatReadReport pair_report;
  if (fuzz::reads({ErrorKind::Input}, path,
                  [&] { pairs = read_preference_jsonl(path, tok, max_tokens, &pair_report); })) {
    fuzz::check(pair_report.kept == static_cast<std::int64_t>(pairs.size()), "the DPO report does not add up");
    for (const PreferenceExample& p : pairs) {
      check_example(p.chosen, max_tokens, "chosen");
      check_example(p.rejected, max_tokens, "rejected");
    }
  }
  return 0;
}
