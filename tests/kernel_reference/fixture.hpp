#pragma once
// Reader of the small text fixtures that scripts/oracle/kernel_fixtures/*.py write from PyTorch /
// HF transformers for the kernel-reference tests (tests/fixtures/kernels/<family>/*.txt).
//
// Format (whitespace separated, '#' starts a comment line):
//   tensor <name> <ndim> <d0> ... <d(ndim-1)>
//   <product(d) values, row-major, decimal (%.17g or shorter)>
//   scalar <name> <value>
// Integers (indices, token ids) are stored as exact decimal values and read as double.
#include <cstddef>
#include <fstream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace jkref {

struct FixtureTensor {
  std::vector<long long> shape;
  std::vector<double> values;
  std::size_t numel() const { return values.size(); }
  long long dim(std::size_t i) const { return shape.at(i); }
};

class Fixture {
 public:
  // Reads `path`; throws std::runtime_error naming the file (and the tensor) on any defect:
  // missing file, unknown record, truncated data, duplicate names.
  explicit Fixture(const std::string& path) : path_(path) {
    std::ifstream in(path);
    if (!in) throw std::runtime_error(path + ": cannot open the fixture (regenerate it with scripts/oracle/kernel_fixtures/)");
    std::string line;
    std::string text;
    while (std::getline(in, line)) {
      const auto first = line.find_first_not_of(" \t\r");
      if (first != std::string::npos && line[first] == '#') continue;
      text += line;
      text += '\n';
    }
    std::istringstream s(text);
    std::string kind;
    while (s >> kind) {
      std::string name;
      if (!(s >> name)) fail("record '" + kind + "' without a name");
      if (tensors_.count(name)) fail("tensor '" + name + "' appears twice");
      FixtureTensor t;
      if (kind == "scalar") {
        double v = 0;
        if (!(s >> v)) fail("scalar '" + name + "' has no value");
        t.values.push_back(v);
      } else if (kind == "tensor") {
        int ndim = -1;
        if (!(s >> ndim) || ndim < 0 || ndim > 8) fail("tensor '" + name + "': bad rank");
        std::size_t n = 1;
        for (int d = 0; d < ndim; ++d) {
          long long extent = -1;
          if (!(s >> extent) || extent < 0) fail("tensor '" + name + "': bad extent");
          t.shape.push_back(extent);
          n *= static_cast<std::size_t>(extent);
        }
        t.values.resize(n);
        for (std::size_t i = 0; i < n; ++i) {
          if (!(s >> t.values[i]))
            fail("tensor '" + name + "': expected " + std::to_string(n) + " values, found " + std::to_string(i));
        }
      } else {
        fail("unknown record '" + kind + "'");
      }
      tensors_.emplace(name, std::move(t));
    }
  }

  const FixtureTensor& tensor(const std::string& name) const {
    const auto it = tensors_.find(name);
    if (it == tensors_.end()) fail("no tensor '" + name + "'");
    return it->second;
  }
  double scalar(const std::string& name) const { return tensor(name).values.at(0); }
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }

 private:
  [[noreturn]] void fail(const std::string& what) const { throw std::runtime_error(path_ + ": " + what); }

  std::string path_;
  std::map<std::string, FixtureTensor> tensors_;
};

// Path of a fixture file under tests/fixtures/kernels/.
inline std::string fixture_path(const std::string& relative) {
  return std::string(JETMOE_SOURCE_DIR) + "/tests/fixtures/kernels/" + relative;
}

}  // namespace jkref
