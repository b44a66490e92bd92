// A prepared split's token file and document index (train.bin/train.idx). The input is the token file's
// length (4 bytes, little-endian, taken modulo the rest), the token file, then the index. Accepted
// failure: one ErrorKind::Input naming one of the two files. A shard that opens has document offsets
// that start at 0, never decrease and end at its token count, and every token reads or is reported
// as outside the vocabulary.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "data/shards.hpp"
#include "fuzz_support.hpp"

using namespace jetmoe;
using namespace jetmoe::data;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 4) return 0;
  const std::size_t rest = size - 4;
  std::uint32_t n = 0;
  for (int i = 3; i >= 0; --i) n = n << 8 | data[i];
  const std::size_t bin_bytes = rest ? n % (rest + 1) : 0;
  const std::string bin = fuzz::Scratch::get().write("train.bin", data + 4, bin_bytes);
  const std::string idx = fuzz::Scratch::get().write("train.idx", data + 4 + bin_bytes, rest - bin_bytes);

  std::optional<TokenShard> shard;
  if (!fuzz::reads({ErrorKind::Input}, "train.", [&] { shard.emplace(bin, idx); })) return 0;
  fuzz::check(shard->document_offset(0) == 0, "the first document does not start at 0");
  fuzz::check(shard->document_offset(shard->documents()) == shard->tokens(), "the last document does not end the file");
  bool all_in_vocabulary = true;
  std::vector<std::int32_t> tokens;
  for (std::int64_t d = 0; d < shard->documents(); ++d) {
    const std::int64_t begin = shard->document_offset(d), end = shard->document_offset(d + 1);
    fuzz::check(begin <= end, "document " + std::to_string(d) + " ends before it starts");
    tokens.clear();
    all_in_vocabulary &= fuzz::reads({ErrorKind::Input}, bin, [&] { shard->read_tokens(begin, end - begin, tokens); });
  }
  const bool checked = fuzz::reads({ErrorKind::Input}, bin, [&] { shard->check_all_tokens(); });
  fuzz::check(checked == all_in_vocabulary, "check_all_tokens and read_tokens disagree");
  return 0;
}
