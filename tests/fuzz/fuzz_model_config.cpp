// A Hugging Face config.json (model/config, or next to the weights): JSON, key types, the shape
// checks. Accepted failure: one ErrorKind::Input naming the file. A config that reads gives a model
// whose parameter counts are computed without overflow (UBSan) and that validates.
#include <cstdint>
#include <string>

#include "fuzz_support.hpp"
#include "model/config.hpp"

using namespace jetmoe;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  for (const char* base : {"tiny", "jetmoe-8b"}) {
    ModelConfig c;
    if (!fuzz::reads({ErrorKind::Input}, "config.json", [&] {
          c = ModelConfig::from_hf_config_text(text, "config.json", ModelConfig::preset(base));
          c.validate("config.json");
        }))
      continue;
    fuzz::check(c.parameter_count() > 0 && c.active_parameter_count() > 0 &&
                    c.active_parameter_count() <= c.parameter_count(),
                "parameter counts " + std::to_string(c.parameter_count()) + " / " +
                    std::to_string(c.active_parameter_count()));
    (void)c.summary();
  }
  return 0;
}
