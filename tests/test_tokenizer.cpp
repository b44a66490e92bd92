// The tokenizer and chat template against Hugging Face's slow LlamaTokenizer: tests/fixtures/tokenizer/
// holds a tiny SentencePiece model and what transformers made of it (scripts/fixtures/make_tokenizer_fixtures.py).
#include <catch2/catch.hpp>

#include <nlohmann/json.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "core/error.hpp"
#include "io/chat_template.hpp"
#include "io/tokenizer.hpp"
#include "support.hpp"

using jetmoe::ErrorKind;
using jetmoe::io::ChatMessage;
using jetmoe::io::Span;
using jetmoe::io::StreamDecoder;
using jetmoe::io::Tokenizer;
using Catch::Matchers::Contains;
using Ids = std::vector<std::int32_t>;

namespace {

const std::string kFixtureDir = std::string(JETMOE_SOURCE_DIR) + "/tests/fixtures/tokenizer";

const nlohmann::json& expected() {
  static const nlohmann::json j = [] {
    std::ifstream in(kFixtureDir + "/expected.json");
    REQUIRE(in.good());
    return nlohmann::json::parse(in);
  }();
  return j;
}

const Tokenizer& fixture_tokenizer() {
  static const Tokenizer tok(kFixtureDir + "/tokenizer.model");
  return tok;
}

std::vector<ChatMessage> messages_of(const nlohmann::json& j) {
  std::vector<ChatMessage> out;
  for (const auto& m : j) out.push_back({m.at("role").get<std::string>(), m.at("content").get<std::string>()});
  return out;
}

// Every id list of the fixture: the encodings of the strings and the decode-only lists.
std::vector<Ids> all_id_lists() {
  std::vector<Ids> lists;
  for (const auto& c : expected().at("encode")) lists.push_back(c.at("ids").get<Ids>());
  for (const auto& c : expected().at("decode")) lists.push_back(c.at("ids").get<Ids>());
  for (const auto& c : expected().at("chat")) lists.push_back(c.at("ids").get<Ids>());
  return lists;
}

bool valid_utf8(const std::string& s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    const std::size_t n = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (std::size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    i += n;
  }
  return true;
}

Ids slice(const Ids& ids, Span s) { return Ids(ids.begin() + long(s.begin), ids.begin() + long(s.end)); }

// Every error these tests expect is a user's input error.
template <class F>
std::string error_of(F&& f) {
  return jetmoe::testing::error_of(std::forward<F>(f), ErrorKind::Input);
}

std::string write_temp(const std::string& name, const std::string& bytes) {
  return jetmoe::testing::write_temp_file("tokenizer-" + name, bytes);
}

}  // namespace

TEST_CASE("tokenizer loads the fixture model with Llama special ids", "[unit][tokenizer]") {
  const Tokenizer& tok = fixture_tokenizer();
  CHECK(tok.vocab_size() == expected().at("vocab_size").get<int>());
  CHECK(tok.bos_id() == 1);
  CHECK(tok.eos_id() == 2);
  CHECK(tok.unk_id() == 0);
  CHECK_FALSE(tok.has_pad_piece());
  CHECK(tok.pad_id() == tok.eos_id());  // jetmoe-8b's generation_config: pad_token_id 2
  CHECK(tok.id_to_piece(0) == "<unk>");
  CHECK(tok.id_to_piece(1) == "<s>");
  CHECK(tok.id_to_piece(2) == "</s>");
  CHECK(tok.piece_to_id("</s>") == 2);
  CHECK(tok.piece_to_id("<0x0A>") == 3 + 0x0A);  // byte fallback pieces follow the three specials
  CHECK(tok.piece_to_id("no such piece") == tok.unk_id());
  CHECK(tok.is_special(0));
  CHECK(tok.is_special(1));
  CHECK(tok.is_special(2));
  CHECK_FALSE(tok.is_special(3));
}

TEST_CASE("tokenizer encode equals HF slow LlamaTokenizer on every fixture string", "[unit][tokenizer]") {
  const Tokenizer& tok = fixture_tokenizer();
  for (const auto& c : expected().at("encode")) {
    const std::string text = c.at("text");
    INFO("text: \"" << text << "\"");
    const Ids ids = tok.encode(text);
    CHECK(ids == c.at("ids").get<Ids>());
    CHECK(tok.encode(text, false, false) == c.at("ids_no_special").get<Ids>());
    CHECK(tok.encode(text, true, true) == c.at("ids_bos_eos").get<Ids>());
    std::vector<std::string> pieces;
    for (const std::int32_t id : ids) pieces.push_back(tok.id_to_piece(id));
    CHECK(pieces == c.at("pieces").get<std::vector<std::string>>());
  }
}

TEST_CASE("tokenizer decode equals HF decode with skip_special_tokens", "[unit][tokenizer]") {
  const Tokenizer& tok = fixture_tokenizer();
  for (const char* group : {"encode", "decode"}) {
    for (const auto& c : expected().at(group)) {
      const Ids ids = c.at("ids").get<Ids>();
      INFO(group << " case, ids: " << ::Catch::Detail::stringify(ids));
      CHECK(tok.decode(ids) == c.at("decoded").get<std::string>());
    }
  }
  // Leading-space handling, spelled out: HF drops the first "▁" of the text, and SentencePiece's decoder
  // drops one more when the first piece was a lone "▁".
  CHECK(tok.decode(tok.encode("Hello world")) == "Hello world");
  CHECK(tok.decode(tok.encode(" Hello")) == "Hello");
  CHECK(tok.decode(tok.encode("  two")) == " two");
  CHECK(tok.decode(tok.encode("trailing ")) == "trailing ");
  CHECK(tok.decode({}).empty());
}

TEST_CASE("tokenizer stream decoder equals full decode on every prefix", "[unit][tokenizer]") {
  const Tokenizer& tok = fixture_tokenizer();
  StreamDecoder stream(tok);
  for (const Ids& ids : all_id_lists()) {
    INFO("ids: " << ::Catch::Detail::stringify(ids));
    std::string emitted;
    for (std::size_t k = 0; k < ids.size(); ++k) {
      const std::string piece = stream.push(ids[k]);
      CHECK(valid_utf8(piece));  // never half a character
      emitted += piece;
      const Ids prefix(ids.begin(), ids.begin() + long(k + 1));
      CHECK(emitted + stream.pending() == tok.decode(prefix));
    }
    emitted += stream.finish();  // also starts the next stream
    CHECK(emitted == tok.decode(ids));
  }
}

TEST_CASE("a continuation decodes as the whole sequence renders it after its context", "[unit][tokenizer]") {
  const Tokenizer& tok = fixture_tokenizer();
  // decode() of every list is HF's (the fixture); each split point of each list, with the context
  // ending on a whole character, gives decode(all) past decode(context).
  int splits = 0;
  for (const Ids& ids : all_id_lists()) {
    for (std::size_t k = 0; k <= ids.size(); ++k) {
      const Ids context(ids.begin(), ids.begin() + long(k)), rest(ids.begin() + long(k), ids.end());
      StreamDecoder probe(tok);
      probe.skip(context);
      if (!probe.pending().empty()) continue;  // the context ends inside a character
      const std::string whole = tok.decode(ids), before = tok.decode(context);
      INFO("ids " << ::Catch::Detail::stringify(ids) << " split at " << k);
      REQUIRE(whole.compare(0, before.size(), before) == 0);
      CHECK(jetmoe::io::decode_continuation(tok, context, rest) == whole.substr(before.size()));
      ++splits;
    }
  }
  CHECK(splits > 100);
  // The space a generated word begins with stays: " world" after "Hello", "world" alone.
  const Ids hello = tok.encode("Hello", true, false), world = tok.encode("Hello world", true, false);
  REQUIRE(world.size() > hello.size());
  const Ids tail(world.begin() + long(hello.size()), world.end());
  CHECK(jetmoe::io::decode_continuation(tok, hello, tail) == " world");
  CHECK(jetmoe::io::decode_continuation(tok, {}, tail) == "world");
}

TEST_CASE("tokenizer stream decoder holds back split characters and leading spaces", "[unit][tokenizer]") {
  const Tokenizer& tok = fixture_tokenizer();
  StreamDecoder stream(tok);
  // U+2603 SNOWMAN is three byte-fallback pieces: nothing shows until the third.
  const std::string snowman = "\xE2\x98\x83";
  const Ids ids = tok.encode(snowman + "!", false, false);
  REQUIRE(ids.size() == 5);  // "▁", three bytes, "!"
  CHECK(stream.push(tok.bos_id()).empty());
  CHECK(stream.push(ids[0]).empty());  // the dummy prefix, dropped
  CHECK(stream.push(ids[1]).empty());
  CHECK(stream.push(ids[2]).empty());
  CHECK(stream.pending() == "\xEF\xBF\xBD\xEF\xBF\xBD");  // what decode() shows for the unfinished bytes
  CHECK(stream.push(ids[3]) == snowman);
  CHECK(stream.push(ids[4]) == "!");
  CHECK(stream.push(tok.eos_id()).empty());
  CHECK(stream.finish().empty());
  // After finish(), the next stream strips its own leading "▁" again.
  std::string text;
  for (const std::int32_t id : tok.encode("Hello world")) text += stream.push(id);
  CHECK(text + stream.finish() == "Hello world");
}

TEST_CASE("tokenizer offsets map every token to its bytes", "[unit][tokenizer]") {
  const Tokenizer& tok = fixture_tokenizer();
  for (const auto& c : expected().at("encode")) {
    const std::string text = c.at("text");
    INFO("text: \"" << text << "\"");
    std::vector<Span> offsets;
    const Ids ids = tok.encode_with_offsets(text, offsets, true, true);
    CHECK(ids == tok.encode(text, true, true));
    REQUIRE(offsets.size() == ids.size());
    CHECK(offsets.front() == Span{0, 0});
    CHECK(offsets.back() == Span{text.size(), text.size()});
    // The spans tile the text in order; the byte pieces of one character share its span.
    Span previous;
    std::size_t covered = 0;
    for (std::size_t t = 1; t + 1 < ids.size(); ++t) {
      const Span o = offsets[t];
      if (tok.is_special(ids[t])) CHECK(text.substr(o.begin, o.size()) == tok.id_to_piece(ids[t]));
      if (o.size() > 0 && o == previous) continue;
      CHECK(o.begin == covered);
      CHECK(o.begin <= o.end);
      covered = o.end, previous = o;
    }
    CHECK(covered == text.size());
  }
}

TEST_CASE("tokenizer chat template matches transformers apply_chat_template", "[unit][tokenizer][chat]") {
  const Tokenizer& tok = fixture_tokenizer();
  for (const auto& c : expected().at("chat")) {
    INFO("conversation: " << c.at("title").get<std::string>()
                          << ", add_generation_prompt: " << c.at("add_generation_prompt").get<bool>());
    const auto messages = messages_of(c.at("messages"));
    const bool gen = c.at("add_generation_prompt");
    const std::string text = c.at("text");
    CHECK(jetmoe::io::render_chat(messages, gen) == text);
    const Ids ids = c.at("ids").get<Ids>();
    CHECK(tok.encode(text) == ids);

    const auto rendered = jetmoe::io::render_chat_with_spans(messages, gen);
    const auto encoded = jetmoe::io::encode_chat(tok, messages, gen);
    CHECK(encoded.ids == ids);
    const auto& want = c.at("assistant_content_bytes");
    REQUIRE(rendered.assistant.size() == want.size());
    REQUIRE(encoded.assistant.size() == want.size());
    for (std::size_t i = 0; i < want.size(); ++i) {
      const std::size_t m = want[i].at("message");
      const Span bytes{want[i].at("begin").get<std::size_t>(), want[i].at("end").get<std::size_t>()};
      CHECK(rendered.assistant[i].message == m);
      CHECK(rendered.assistant[i].content == bytes);
      CHECK(rendered.assistant[i].target == Span{bytes.begin, bytes.end + 4});  // + "</s>"
      CHECK(text.substr(bytes.begin, bytes.size()) == messages[m].content);
      // Token spans: the content's tokens decode to the content; the target adds the turn's EOS.
      const auto& a = encoded.assistant[i];
      CHECK(a.message == m);
      CHECK(tok.decode(slice(ids, a.content)) == messages[m].content);
      CHECK(a.target.begin == a.content.begin);
      CHECK(a.target.end == a.content.end + 1);
      CHECK(ids[a.target.end - 1] == tok.eos_id());
    }
  }
}

TEST_CASE("tokenizer chat template spans of an empty assistant message", "[unit][tokenizer][chat]") {
  const Tokenizer& tok = fixture_tokenizer();
  const std::vector<ChatMessage> messages = {{"user", "Hi"}, {"assistant", ""}};
  const auto rendered = jetmoe::io::render_chat_with_spans(messages, true);
  CHECK(rendered.text == "<|user|>\nHi</s>\n<|assistant|>\n</s>\n<|assistant|>\n");
  const auto encoded = jetmoe::io::encode_chat(tok, messages);
  REQUIRE(encoded.assistant.size() == 1);
  const auto& a = encoded.assistant[0];
  CHECK(a.content.size() == 0);
  CHECK(a.target == Span{a.content.begin, a.content.begin + 1});
  CHECK(encoded.ids[a.target.begin] == tok.eos_id());
}

TEST_CASE("tokenizer chat template rejects unknown roles and empty conversations", "[unit][tokenizer][chat]") {
  const std::string msg = error_of([] { jetmoe::io::render_chat({{"user", "Hi"}, {"tool", "42"}}); });
  CHECK_THAT(msg, Contains("message 1") && Contains("'tool'") && Contains("system, user or assistant"));
  CHECK_THAT(error_of([] { jetmoe::io::render_chat({{"User", "Hi"}}); }), Contains("'User'"));
  CHECK_THAT(error_of([] { jetmoe::io::render_chat({}, true); }), Contains("no messages"));
}

TEST_CASE("tokenizer reports missing and corrupt model files", "[unit][tokenizer]") {
  const std::string missing = kFixtureDir + "/no-such-tokenizer.model";
  CHECK_THAT(error_of([&] { Tokenizer t(missing); }), Contains(missing) && Contains("cannot open"));

  std::ifstream script(std::string(JETMOE_SOURCE_DIR) + "/scripts/fixtures/make_tokenizer_fixtures.py");
  std::string head(256, '\0');
  script.read(head.data(), long(head.size()));
  const std::string text_file = write_temp("text.model", head);
  CHECK_THAT(error_of([&] { Tokenizer t(text_file); }),
             Contains(text_file) && Contains("not a valid SentencePiece model"));

  std::ifstream model(kFixtureDir + "/tokenizer.model", std::ios::binary);
  std::string truncated(1000, '\0');
  model.read(truncated.data(), long(truncated.size()));
  const std::string cut = write_temp("truncated.model", truncated);
  CHECK_THAT(error_of([&] { Tokenizer t(cut); }), Contains(cut) && Contains("not a valid SentencePiece model"));

  const std::string empty = write_temp("empty.model", "");
  CHECK_THAT(error_of([&] { Tokenizer t(empty); }), Contains(empty) && Contains("is empty"));
  CHECK_THAT(error_of([&] { Tokenizer t(kFixtureDir); }), Contains(kFixtureDir) && Contains("is a directory"));
  for (const auto& path : {text_file, cut, empty}) std::filesystem::remove(path);
}

TEST_CASE("tokenizer rejects out of range ids", "[unit][tokenizer]") {
  const Tokenizer& tok = fixture_tokenizer();
  const int n = tok.vocab_size();
  const std::string msg = error_of([&] { (void)tok.decode({1, 5, n}); });
  CHECK_THAT(msg, Contains("token id " + std::to_string(n)) && Contains("out of range") &&
                      Contains("tokenizer.model") && Contains(std::to_string(n)));
  CHECK_THAT(error_of([&] { (void)tok.decode({-1}); }), Contains("token id -1"));
  CHECK_THAT(error_of([&] { (void)tok.id_to_piece(n + 7); }), Contains("token id " + std::to_string(n + 7)));
  StreamDecoder stream(tok);
  CHECK_THAT(error_of([&] { (void)stream.push(n); }), Contains("out of range"));
  CHECK(tok.decode({n - 1}) == tok.decode({1, n - 1}));  // the last valid id is fine
}
