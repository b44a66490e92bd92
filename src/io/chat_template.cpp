#include "io/chat_template.hpp"

#include "core/error.hpp"
#include "core/strings.hpp"

namespace jetmoe::io {

RenderedChat render_chat_with_spans(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                                    std::string_view eos_token) {
  if (messages.empty()) fail(ErrorKind::Input, "chat template: the conversation has no messages");
  RenderedChat out;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const ChatMessage& m = messages[i];
    if (m.role != "system" && m.role != "user" && m.role != "assistant")
      fail(ErrorKind::Input, "chat message " + std::to_string(i) + " has role " + jetmoe::quoted(m.role) +
                                 ", expected system, user or assistant");
    out.text += "<|" + m.role + "|>\n";
    const std::size_t begin = out.text.size();
    out.text += m.content;
    const std::size_t end = out.text.size();
    out.text += eos_token;
    if (m.role == "assistant") out.assistant.push_back({i, {begin, end}, {begin, out.text.size()}});
    out.text += '\n';
  }
  if (add_generation_prompt) out.text += "<|assistant|>\n";
  return out;
}

std::string render_chat(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                        std::string_view eos_token) {
  return render_chat_with_spans(messages, add_generation_prompt, eos_token).text;
}

Span tokens_covering(const std::vector<Span>& offsets, Span bytes) {
  const std::size_t n = offsets.size();
  std::size_t first = n, last = n;
  for (std::size_t t = 0; t < n; ++t) {
    const Span& o = offsets[t];
    if (o.end > o.begin && o.begin < bytes.end && o.end > bytes.begin) {
      if (first == n) first = t;
      last = t + 1;
    }
  }
  if (first < n) return {first, last};
  std::size_t t = 0;
  while (t < n && offsets[t].begin < bytes.begin) ++t;
  return {t, t};
}

EncodedChat encode_chat(const Tokenizer& tokenizer, const std::vector<ChatMessage>& messages,
                        bool add_generation_prompt) {
  const RenderedChat chat =
      render_chat_with_spans(messages, add_generation_prompt, tokenizer.id_to_piece(tokenizer.eos_id()));
  std::vector<Span> offsets;
  EncodedChat out;
  out.ids = tokenizer.encode_with_offsets(chat.text, offsets, /*add_bos=*/true, /*add_eos=*/false);
  for (const AssistantSpan& a : chat.assistant)
    out.assistant.push_back({a.message, tokens_covering(offsets, a.content), tokens_covering(offsets, a.target)});
  return out;
}

}  // namespace jetmoe::io
