#pragma once
// The Zephyr-7b-beta chat template that JetMoE's SFT and DPO used (jetmoe-spec.md section 6; the Jinja
// text is `chat_template` in alignment-handbook @8497cae recipes/zephyr-7b-beta/sft/config_full.yaml).
// Rendered by transformers' apply_chat_template (Jinja with trim_blocks), each message becomes
//
//   <|system|>\n{content}</s>\n   <|user|>\n{content}</s>\n   <|assistant|>\n{content}</s>\n
//
// with the content verbatim (no stripping), and the generation prompt adds "<|assistant|>\n" after the
// last message. Zephyr's Jinja silently drops any other role; here it is an error, as is an empty
// conversation (transformers fails on one too). The rendered text is tokenized like any text, BOS in
// front (what TRL's SFT trainer does with it): the "</s>" in it becomes the EOS id.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "io/tokenizer.hpp"

namespace jetmoe::io {

struct ChatMessage {
  std::string role;     // "system", "user" or "assistant"
  std::string content;
};

// Where one assistant message sits in a rendered or tokenized conversation.
struct AssistantSpan {
  std::size_t message = 0;  // its index in the message list
  Span content;             // its content
  Span target;              // its content and the "</s>" that closes its turn: what an SFT loss trains on
};

struct RenderedChat {
  std::string text;
  std::vector<AssistantSpan> assistant;  // byte spans into text
};

struct EncodedChat {
  std::vector<std::int32_t> ids;         // BOS + tokens of the rendered text
  std::vector<AssistantSpan> assistant;  // token spans into ids
};

// Throws jetmoe::Error(ErrorKind::Input) naming the message index and role for a role the template
// does not know, and for an empty message list.
std::string render_chat(const std::vector<ChatMessage>& messages, bool add_generation_prompt = false,
                        std::string_view eos_token = "</s>");
RenderedChat render_chat_with_spans(const std::vector<ChatMessage>& messages, bool add_generation_prompt = false,
                                    std::string_view eos_token = "</s>");

// Renders with the tokenizer's EOS piece and encodes. A token belongs to a span when it covers any of
// the span's bytes (so a token that straddles the edge of the content counts as content); an empty
// content gives an empty token span just before the turn's EOS.
EncodedChat encode_chat(const Tokenizer& tokenizer, const std::vector<ChatMessage>& messages,
                        bool add_generation_prompt = false);

// The tokens (indices into `offsets`, as from Tokenizer::encode_with_offsets) that cover any byte of
// `bytes`; for empty `bytes`, an empty span at the first token that starts at or after it.
Span tokens_covering(const std::vector<Span>& offsets, Span bytes);

}  // namespace jetmoe::io
