// model.safetensors.index.json of a sharded Hugging Face checkpoint, next to seven valid shards (the
// test fixture tests/fixtures/safetensors/sharded): the JSON, the weight map, and its agreement with the
// shards. Accepted failure: one ErrorKind::Input naming the index or a shard. A checkpoint that opens
// finds every tensor it lists in the shard that holds it.
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>

#include "fuzz_support.hpp"
#include "io/safetensors.hpp"

using namespace jetmoe;
using namespace jetmoe::io;

namespace {
std::string checkpoint_dir() {
  static const std::string dir = [] {
    namespace fs = std::filesystem;
    const fs::path d = fuzz::Scratch::get().dir() + "/checkpoint";
    std::error_code ec;
    fs::create_directories(d, ec);
    for (const auto& e : fs::directory_iterator(JETMOE_SOURCE_DIR "/tests/fixtures/safetensors/sharded", ec))
      if (!ec && e.path().extension() == ".safetensors") fs::copy_file(e.path(), d / e.path().filename(), ec);
    if (ec) fuzz::finding("cannot copy the fixture shards into " + d.string() + ": " + ec.message());
    return d.string();
  }();
  return dir;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string dir = checkpoint_dir();
  fuzz::Scratch::get().write("checkpoint/model.safetensors.index.json", data, size);
  std::optional<SafetensorsCheckpoint> opened;
  if (!fuzz::reads({ErrorKind::Input}, dir, [&] { opened.emplace(SafetensorsCheckpoint::open(dir)); })) return 0;
  const SafetensorsCheckpoint& c = *opened;
  for (const std::string& name : c.names()) {
    const TensorInfo* t = c.find(name);
    fuzz::check(t != nullptr && t->name == name, name + " is listed but not found");
    fuzz::check(c.file_of(name).find(name) == t, name + " is not in the shard that holds it");
    fuzz::check(c.bytes(name).size == t->nbytes(), name + ": wrong byte count");
  }
  return 0;
}
