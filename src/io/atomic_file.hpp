#pragma once
// Small outputs (config.json, result files) written so that a reader never sees half a file:
// PATH.tmp first, then a rename over PATH; on failure the temporary file is removed and an existing
// PATH is untouched.
#include <string>

namespace jetmoe::io {

void write_text_atomically(const std::string& path, const std::string& text);

}  // namespace jetmoe::io
