#pragma once
// Alignment data (jetmoe-spec.md section 6): chat conversations for SFT and preference pairs for DPO,
// in JSON Lines, rendered with the Zephyr chat template (io/chat_template.hpp) and tokenized.
//
// SFT, one object per line:   {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}
// DPO, one object per line, either TRL's conversational form (HuggingFaceH4/ultrafeedback_binarized)
//   {"prompt": "...", "chosen": [messages...], "rejected": [messages...]}
// where chosen/rejected are whole conversations ending in the assistant's answer (the prompt string is
// then only informative), or the plain form
//   {"prompt": "..." or [messages...], "chosen": "answer", "rejected": "answer"}
// where the prompt (a user message, or a message list) is followed by one assistant message.
//
// Labels: the loss covers assistant tokens only. SFT trains on every assistant turn (its content and
// the "</s>" that closes it); DPO scores the final assistant turn (the response). Everything else, and
// right padding, is ignore_index.
#include <cstdint>
#include <string>
#include <vector>

#include "io/tokenizer.hpp"

namespace jetmoe::data {

struct ChatExample {
  std::vector<std::int32_t> ids;     // BOS + rendered conversation, at most max_tokens
  std::vector<std::int32_t> labels;  // per position: ids[i] where the loss counts it, else -100
};

struct PreferenceExample {
  ChatExample chosen, rejected;
};

struct ChatReadReport {
  std::int64_t lines = 0, kept = 0, truncated = 0, dropped = 0;  // dropped: no label left after truncation
};

// Reads every example of a jsonl file; a bad line is one ErrorKind::Input naming file:line and the field.
// Examples longer than max_tokens are cut at max_tokens (counted as truncated); one without any labelled
// token left (or, for DPO, whose chosen or rejected response lost every token) is dropped and counted.
std::vector<ChatExample> read_sft_jsonl(const std::string& path, const io::Tokenizer& tokenizer,
                                        std::int64_t max_tokens, ChatReadReport* report = nullptr);
std::vector<PreferenceExample> read_preference_jsonl(const std::string& path, const io::Tokenizer& tokenizer,
                                                     std::int64_t max_tokens, ChatReadReport* report = nullptr);

// Right-pads examples into a batch of `rows` x T token ids (pad_id) and the shifted targets the model
// trains on: targets[r*T + t] = labels[t + 1] (ignore_index past the end), so position t predicts t + 1.
void pad_batch(const std::vector<const ChatExample*>& examples, std::int64_t T, std::int32_t pad_id,
               std::vector<std::int32_t>& ids, std::vector<std::int32_t>& targets);

// A deterministic order over n examples: epoch e visits all of them in a seeded permutation; the state is
// the number of examples handed out.
class ExampleOrder {
 public:
  ExampleOrder(std::int64_t n, std::uint64_t seed, bool shuffle = true);
  std::int64_t next();
  std::uint64_t position() const { return position_; }
  void set_position(std::uint64_t p) { position_ = p; }
  double epochs() const { return double(position_) / double(n_); }

 private:
  std::int64_t n_;
  std::uint64_t seed_, position_ = 0;
  bool shuffle_;
};

}  // namespace jetmoe::data
