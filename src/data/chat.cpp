#include "data/chat.hpp"

#include <nlohmann/json.hpp>

#include <fstream>

#include "core/error.hpp"
#include "data/sampler.hpp"
#include "io/chat_template.hpp"

namespace jetmoe::data {

namespace {

constexpr std::int32_t kIgnore = -100;

[[noreturn]] void line_error(const std::string& path, std::int64_t line, const std::string& what) {
  fail(ErrorKind::Input, path + ":" + std::to_string(line) + ": " + what);
}

std::vector<io::ChatMessage> messages_of(const nlohmann::json& v, const std::string& path, std::int64_t line,
                                         const char* field) {
  if (!v.is_array() || v.empty())
    line_error(path, line, std::string("'") + field + "' must be a non-empty list of {\"role\", \"content\"} messages");
  std::vector<io::ChatMessage> out;
  for (std::size_t i = 0; i < v.size(); ++i) {
    const auto& m = v[i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string() || !m.contains("content") ||
        !m["content"].is_string())
      line_error(path, line, std::string("'") + field + "'[" + std::to_string(i) +
                                 "] must be an object with string fields \"role\" and \"content\"");
    out.push_back({m["role"].get<std::string>(), m["content"].get<std::string>()});
  }
  return out;
}

// Tokenizes a conversation; labels cover the assistant turns chosen by `last_only`.
ChatExample encode(const io::Tokenizer& tok, const std::vector<io::ChatMessage>& messages, bool last_only,
                   std::int64_t max_tokens, const std::string& path, std::int64_t line, bool& truncated) {
  io::EncodedChat enc;
  try {
    enc = io::encode_chat(tok, messages);
  } catch (const Error& e) {
    line_error(path, line, e.what());
  }
  ChatExample ex;
  ex.ids = enc.ids;
  ex.labels.assign(ex.ids.size(), kIgnore);
  if (enc.assistant.empty()) line_error(path, line, "the conversation has no assistant message to train on");
  const std::size_t first = last_only ? enc.assistant.size() - 1 : 0;
  if (last_only && enc.assistant.back().message + 1 != messages.size())
    line_error(path, line, "the conversation must end with the assistant's response");
  for (std::size_t a = first; a < enc.assistant.size(); ++a)
    for (std::size_t i = enc.assistant[a].target.begin; i < enc.assistant[a].target.end; ++i) ex.labels[i] = ex.ids[i];
  truncated = std::int64_t(ex.ids.size()) > max_tokens;
  if (truncated) {
    ex.ids.resize(std::size_t(max_tokens));
    ex.labels.resize(std::size_t(max_tokens));
  }
  return ex;
}

bool has_labels(const ChatExample& e) {
  // Position 0 is never predicted (targets are labels shifted by one).
  for (std::size_t i = 1; i < e.labels.size(); ++i)
    if (e.labels[i] != kIgnore) return true;
  return false;
}

template <class F>
void for_each_line(const std::string& path, F&& f) {
  std::ifstream in(path);
  if (!in) fail(ErrorKind::Input, path + ": cannot open the data file");
  std::string text;
  std::int64_t line = 0;
  while (std::getline(in, text)) {
    ++line;
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {  // parse_error, and out_of_range for a number too large
      line_error(path, line, std::string("not a JSON object: ") + e.what());
    }
    if (!j.is_object()) line_error(path, line, "expected a JSON object");
    f(j, line);
  }
}

}  // namespace

std::vector<ChatExample> read_sft_jsonl(const std::string& path, const io::Tokenizer& tok, std::int64_t max_tokens,
                                        ChatReadReport* report) {
  ChatReadReport r;
  std::vector<ChatExample> out;
  for_each_line(path, [&](const nlohmann::json& j, std::int64_t line) {
    ++r.lines;
    if (!j.contains("messages")) line_error(path, line, "missing field \"messages\"");
    bool truncated = false;
    ChatExample ex = encode(tok, messages_of(j["messages"], path, line, "messages"), false, max_tokens, path, line, truncated);
    r.truncated += truncated;
    if (!has_labels(ex)) {
      ++r.dropped;
      return;
    }
    out.push_back(std::move(ex));
  });
  r.kept = std::int64_t(out.size());
  if (out.empty()) fail(ErrorKind::Input, path + ": no usable SFT example (" + std::to_string(r.lines) + " lines)");
  if (report) *report = r;
  return out;
}

std::vector<PreferenceExample> read_preference_jsonl(const std::string& path, const io::Tokenizer& tok,
                                                     std::int64_t max_tokens, ChatReadReport* report) {
  ChatReadReport r;
  std::vector<PreferenceExample> out;
  for_each_line(path, [&](const nlohmann::json& j, std::int64_t line) {
    ++r.lines;
    for (const char* f : {"chosen", "rejected"})
      if (!j.contains(f)) line_error(path, line, std::string("missing field \"") + f + "\"");
    auto conversation = [&](const char* field) {
      const auto& v = j[field];
      if (v.is_array()) return messages_of(v, path, line, field);
      if (!v.is_string()) line_error(path, line, std::string("'") + field + "' must be a string or a message list");
      if (!j.contains("prompt")) line_error(path, line, "missing field \"prompt\"");
      const auto& p = j["prompt"];
      std::vector<io::ChatMessage> m;
      if (p.is_string()) m.push_back({"user", p.get<std::string>()});
      else if (p.is_array()) m = messages_of(p, path, line, "prompt");
      else line_error(path, line, "'prompt' must be a string or a message list");
      m.push_back({"assistant", v.get<std::string>()});
      return m;
    };
    bool tc = false, tr = false;
    PreferenceExample ex{encode(tok, conversation("chosen"), true, max_tokens, path, line, tc),
                         encode(tok, conversation("rejected"), true, max_tokens, path, line, tr)};
    r.truncated += tc || tr;
    if (!has_labels(ex.chosen) || !has_labels(ex.rejected)) {
      ++r.dropped;
      return;
    }
    out.push_back(std::move(ex));
  });
  r.kept = std::int64_t(out.size());
  if (out.empty()) fail(ErrorKind::Input, path + ": no usable preference pair (" + std::to_string(r.lines) + " lines)");
  if (report) *report = r;
  return out;
}

void pad_batch(const std::vector<const ChatExample*>& examples, std::int64_t T, std::int32_t pad_id,
               std::vector<std::int32_t>& ids, std::vector<std::int32_t>& targets) {
  const std::size_t rows = examples.size();
  ids.assign(rows * std::size_t(T), pad_id);
  targets.assign(rows * std::size_t(T), kIgnore);
  for (std::size_t r = 0; r < rows; ++r) {
    const ChatExample& e = *examples[r];
    const std::size_t n = std::min(e.ids.size(), std::size_t(T));
    for (std::size_t t = 0; t < n; ++t) {
      ids[r * std::size_t(T) + t] = e.ids[t];
      if (t + 1 < e.labels.size()) targets[r * std::size_t(T) + t] = e.labels[t + 1];
    }
  }
}

ExampleOrder::ExampleOrder(std::int64_t n, std::uint64_t seed, bool shuffle) : n_(n), seed_(seed), shuffle_(shuffle) {
  JETMOE_ASSERT(n > 0, "ExampleOrder: no examples");
}

std::int64_t ExampleOrder::next() {
  const std::uint64_t n = std::uint64_t(n_), epoch = position_ / n, i = position_ % n;
  ++position_;
  if (!shuffle_) return std::int64_t(i);
  return std::int64_t(permute_index(i, n, seed_ * 0x9e3779b97f4a7c15ull + epoch + 1));
}

}  // namespace jetmoe::data
