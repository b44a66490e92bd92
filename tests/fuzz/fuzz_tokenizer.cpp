// The tokenizer on arbitrary bytes (a prompt, a document, an eval question) and arbitrary ids (what a
// model may generate). No error is accepted: text of any bytes encodes, ids inside the vocabulary
// decode. Properties:
//   - one offset span per id, inside the text, and spans that never go backwards;
//   - ids inside the vocabulary;
//   - the streaming decoder's pieces, plus what it holds back, equal decode() after every id, and
//     finish() completes it;
//   - valid UTF-8 without special pieces, leading spaces or SentencePiece's space symbol U+2581 (which
//     decodes to a space, in SentencePiece and in transformers) decodes back to itself.
// The input's first byte picks the mode: even, encode the rest as text; odd, decode it as 16-bit ids
// (taken modulo the vocabulary).
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_support.hpp"
#include "io/tokenizer.hpp"

using namespace jetmoe;
using namespace jetmoe::io;

namespace {

bool valid_utf8(std::string_view s) {
  for (std::size_t i = 0; i < s.size();) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    int n = 0;
    std::uint32_t cp = c;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      n = 1, cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2, cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      n = 3, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + n >= s.size()) return false;
    for (int k = 1; k <= n; ++k) {
      const unsigned char d = static_cast<unsigned char>(s[i + k]);
      if ((d & 0xc0) != 0x80) return false;
      cp = cp << 6 | (d & 0x3f);
    }
    if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff))
      return false;
    i += n + 1;
  }
  return true;
}

void check_stream(const Tokenizer& tok, const std::vector<std::int32_t>& ids) {
  StreamDecoder stream(tok);
  std::string streamed;
  std::vector<std::int32_t> prefix;
  for (std::int32_t id : ids) {
    streamed += stream.push(id);
    prefix.push_back(id);
    const std::string expected = tok.decode(prefix);
    fuzz::check(streamed + stream.pending() == expected,
                "streamed '" + streamed + "' + pending '" + stream.pending() + "' != decode '" + expected + "' after " +
                    std::to_string(prefix.size()) + " ids");
  }
  streamed += stream.finish();
  fuzz::check(streamed == tok.decode(ids), "the stream's finish() does not complete decode()");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const Tokenizer& tok = fuzz::fixture_tokenizer();
  const std::string_view rest(reinterpret_cast<const char*>(data) + 1, size - 1);
  if (data[0] % 2 == 0) {
    std::vector<Span> offsets;
    std::vector<std::int32_t> ids;
    fuzz::reads({}, "", [&] { ids = tok.encode_with_offsets(rest, offsets, data[0] & 2, data[0] & 4); });
    fuzz::check(offsets.size() == ids.size(), "one offset span per id");
    std::size_t previous = 0;
    for (std::size_t i = 0; i < ids.size(); ++i) {
      fuzz::check(ids[i] >= 0 && ids[i] < tok.vocab_size(), "id " + std::to_string(ids[i]) + " outside the vocabulary");
      fuzz::check(offsets[i].begin <= offsets[i].end && offsets[i].end <= rest.size(),
                  "span " + std::to_string(i) + " outside the text");
      fuzz::check(offsets[i].begin >= previous, "span " + std::to_string(i) + " goes backwards");
      previous = offsets[i].begin;
    }
    fuzz::check(tok.encode(rest, data[0] & 2, data[0] & 4) == ids, "encode and encode_with_offsets disagree");
    std::string decoded;
    fuzz::reads({}, "", [&] { decoded = tok.decode(ids); });
    const bool plain = rest.find('<') == std::string_view::npos && rest.find("\xe2\x96\x81") == std::string_view::npos &&
                       (rest.empty() || rest[0] != ' ');
    if (plain && valid_utf8(rest))
      fuzz::check(decoded == rest, "'" + std::string(rest) + "' decodes to '" + decoded + "'");
    if (ids.size() <= 64) fuzz::reads({}, "", [&] { check_stream(tok, ids); });
  } else {
    std::vector<std::int32_t> ids;
    for (std::size_t i = 0; i + 1 < rest.size() && ids.size() < 64; i += 2)
      ids.push_back(
          static_cast<std::int32_t>((std::uint8_t(rest[i]) | std::uint8_t(rest[i + 1]) << 8) % tok.vocab_size()));
    fuzz::reads({}, "", [&] { check_stream(tok, ids); });
  }
  return 0;
}
