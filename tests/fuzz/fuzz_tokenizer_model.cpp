// A SentencePiece tokenizer.model (tokenizer/model, or next to the weights): SentencePiece's own
// protobuf parsing, then our checks (the special pieces) and what we read off the model for the
// streaming decoder. Accepted failure: one ErrorKind::Input naming the file. A model that loads
// encodes a fixed text (ASCII, accented letters, CJK, an emoji, control bytes, invalid UTF-8) to ids in
// its vocabulary, decodes them, and streams them as decode() renders them.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "fuzz_support.hpp"
#include "io/tokenizer.hpp"

using namespace jetmoe;
using namespace jetmoe::io;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string path = fuzz::Scratch::get().write("tokenizer.model", data, size);
  std::optional<Tokenizer> tok;
  if (!fuzz::reads({ErrorKind::Input}, path, [&] { tok.emplace(path); })) return 0;
  const std::string text = "Hello  w\xc3\xb6rld \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x99\x82\t\n\x01 <s> \xff\xfe end";
  std::vector<std::int32_t> ids;
  fuzz::reads({}, "", [&] { ids = tok->encode(text, true, true); });
  for (std::int32_t id : ids)
    fuzz::check(id >= 0 && id < tok->vocab_size(), "id " + std::to_string(id) + " outside the vocabulary");
  std::string decoded, streamed;
  fuzz::reads({}, "", [&] {
    decoded = tok->decode(ids);
    StreamDecoder stream(*tok);
    for (std::int32_t id : ids) streamed += stream.push(id);
    streamed += stream.finish();
  });
  fuzz::check(streamed == decoded, "streamed '" + streamed + "' != decoded '" + decoded + "'");
  return 0;
}
