#include "io/npy.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/error.hpp"

namespace jetmoe::io {

namespace {

void write_npy_bytes(const std::string& path, const std::vector<std::int64_t>& shape, const char* descr,
                     const void* data, std::size_t itemsize) {
  std::string dims;
  std::size_t count = 1;
  for (std::size_t i = 0; i < shape.size(); ++i) {
    dims += std::to_string(shape[i]) + (shape.size() == 1 ? "," : (i + 1 < shape.size() ? ", " : ""));
    count *= std::size_t(shape[i]);
  }
  std::string header = "{'descr': '" + std::string(descr) + "', 'fortran_order': False, 'shape': (" + dims + "), }";
  // Magic (6) + version (2) + header length (2) + header + '\n', padded with spaces to 64 bytes.
  const std::size_t unpadded = 10 + header.size() + 1;
  header += std::string((64 - unpadded % 64) % 64, ' ') + "\n";
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) fail(ErrorKind::Input, path + ": cannot write: " + std::strerror(errno));
  const unsigned char prefix[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, (unsigned char)(header.size() & 0xff),
                                    (unsigned char)(header.size() >> 8)};
  bool ok = std::fwrite(prefix, 1, 10, f) == 10 && std::fwrite(header.data(), 1, header.size(), f) == header.size() &&
            std::fwrite(data, itemsize, count, f) == count;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok || std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    std::remove(tmp.c_str());
    fail(ErrorKind::Input, path + ": cannot write: " + why);
  }
}

}  // namespace

void write_npy(const std::string& path, const std::vector<std::int64_t>& shape, const float* data) {
  write_npy_bytes(path, shape, "<f4", data, sizeof(float));
}
void write_npy(const std::string& path, const std::vector<std::int64_t>& shape, const std::int64_t* data) {
  write_npy_bytes(path, shape, "<i8", data, sizeof(std::int64_t));
}

}  // namespace jetmoe::io
