// jetmoe-prepare's corpus files: JSON Lines (the document in field "text"), plain text split at blank
// lines or one document per file, each optionally gzip-compressed. The input's first byte picks the
// format (bit 0: JSON Lines, bit 1: one document per file, bit 2: gzip, the rest taken as the
// compressed bytes). Accepted failure: one ErrorKind::Input naming the file. Properties of a file
// that reads: an uncompressed file is read to its last byte; plain text keeps every non-blank line,
// so the documents hold as many non-whitespace bytes as the file.
#include <cstdint>
#include <optional>
#include <string>

#include "data/prepare.hpp"
#include "fuzz_support.hpp"

using namespace jetmoe;
using namespace jetmoe::data;

namespace {
std::size_t non_space(const std::string& s, std::size_t begin = 0, std::size_t end = std::string::npos) {
  std::size_t n = 0;
  for (std::size_t i = begin; i < std::min(end, s.size()); ++i)
    n += !(s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r' || s[i] == '\v' || s[i] == '\f');
  return n;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const bool jsonl = data[0] & 1, whole_file = data[0] & 2, gz = data[0] & 4;
  const std::string name = std::string("corpus") + (jsonl ? ".jsonl" : ".txt") + (gz ? ".gz" : "");
  const std::string path = fuzz::Scratch::get().write(name, data + 1, size - 1);
  const TextDocuments mode = whole_file ? TextDocuments::File : TextDocuments::BlankLine;

  std::size_t documents = 0, kept = 0;
  std::int64_t bytes_read = 0;
  const bool ok = fuzz::reads({ErrorKind::Input}, path, [&] {
    DocumentReader reader(path, "text", mode);
    std::string text;
    while (reader.next(text)) {
      ++documents;
      kept += non_space(text);
      fuzz::check(documents <= size + 1, "more documents than bytes");
    }
    bytes_read = reader.bytes_read();
  });
  if (!ok || gz) return 0;
  fuzz::check(bytes_read == static_cast<std::int64_t>(size - 1),
              "read " + std::to_string(bytes_read) + " of " + std::to_string(size - 1) + " bytes");
  if (!jsonl) {
    const std::string file(reinterpret_cast<const char*>(data) + 1, size - 1);
    fuzz::check(kept == non_space(file), "plain text lost or gained non-whitespace bytes");
  }
  return 0;
}
