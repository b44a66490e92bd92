// One .safetensors file (a Hugging Face checkpoint or shard): the length field, the JSON header, every
// tensor entry and the layout of the data section. Accepted failure: one ErrorKind::Input naming the
// file. A file that opens hands out only bytes inside the file, and every tensor converts (float for
// floating dtypes, int64 for the others) at its own shape.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "fuzz_support.hpp"
#include "io/safetensors.hpp"

using namespace jetmoe;
using namespace jetmoe::io;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string path = fuzz::Scratch::get().write("model.safetensors", data, size);
  std::optional<SafetensorsFile> opened;
  if (!fuzz::reads({ErrorKind::Input}, path, [&] { opened.emplace(SafetensorsFile::open(path)); })) return 0;
  const SafetensorsFile& f = *opened;

  std::size_t total = 0;
  for (const TensorInfo& t : f.tensors()) {
    const ByteSpan b = f.bytes(t.name);
    fuzz::check(b.size == static_cast<std::size_t>(t.numel()) * dtype_size(t.dtype),
                t.name + ": " + std::to_string(b.size) + " bytes for " + std::to_string(t.numel()) + " elements");
    total += b.size;
    fuzz::check(f.find(t.name) == &t, t.name + " is not found by name");
    if (t.numel() > (1 << 16)) continue;
    // Conversions may refuse values (an unsigned one beyond int64), naming the file.
    std::size_t n = 0;
    if (is_floating(t.dtype)) {
      if (fuzz::reads({ErrorKind::Input}, path, [&] { n = f.read_as_float(t.name, t.shape).size(); }))
        fuzz::check(n == static_cast<std::size_t>(t.numel()), t.name + ": read_as_float size");
    } else {
      if (fuzz::reads({ErrorKind::Input}, path, [&] { n = f.read_as_int64(t.name, t.shape).size(); }))
        fuzz::check(n == static_cast<std::size_t>(t.numel()), t.name + ": read_as_int64 size");
    }
  }
  // The tensors tile the data section, which ends the file.
  std::uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = header_len << 8 | data[i];
  fuzz::check(8 + header_len + total == size, "the tensors' " + std::to_string(total) +
                                                 " bytes do not fill the data section");
  return 0;
}
