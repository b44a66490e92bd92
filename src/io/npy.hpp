#pragma once
// NumPy .npy files (format 1.0, little-endian float32 or int64, C order), for users comparing our
// logits with other implementations: numpy.load() reads them as they are.
#include <cstdint>
#include <string>
#include <vector>

namespace jetmoe::io {

// Written atomically (PATH.tmp, then rename); an existing file is replaced only on success.
void write_npy(const std::string& path, const std::vector<std::int64_t>& shape, const float* data);
void write_npy(const std::string& path, const std::vector<std::int64_t>& shape, const std::int64_t* data);

}  // namespace jetmoe::io
