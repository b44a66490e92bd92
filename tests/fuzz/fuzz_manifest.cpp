// A prepared source's manifest.json: JSON, every field's type and range. Accepted failure: one
// ErrorKind::Input naming the file. A manifest that reads writes back (to_json) to text that reads
// to the same manifest.
#include <cstdint>
#include <string>

#include "data/shards.hpp"
#include "fuzz_support.hpp"

using namespace jetmoe;
using namespace jetmoe::data;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  SourceManifest m;
  if (!fuzz::reads({ErrorKind::Input}, "manifest.json", [&] { m = SourceManifest::from_json(text, "manifest.json"); }))
    return 0;
  const std::string written = m.to_json();
  SourceManifest again;
  if (!fuzz::reads({ErrorKind::Input}, "", [&] { again = SourceManifest::from_json(written, "written.json"); }))
    fuzz::finding("the manifest as written does not read back:\n" + written);
  fuzz::check(again.to_json() == written, "the manifest changes when written and read back:\n" + written);
  return 0;
}
