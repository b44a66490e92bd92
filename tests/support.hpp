#pragma once
// Helpers shared by the test files.
#include <catch2/catch.hpp>

#include <filesystem>
#include <fstream>
#include <string>

#include "core/error.hpp"

namespace jetmoe::testing {

// The message of the jetmoe::Error that `f` throws; fails the test if it throws nothing, and checks
// the error's kind.
template <class F>
std::string error_of(F&& f, ErrorKind kind) {
  try {
    f();
  } catch (const Error& e) {
    CHECK(int(e.kind()) == int(kind));
    return e.what();
  }
  FAIL("no jetmoe::Error was thrown");
  return "";
}

// Writes `bytes` to a file named `name` in the temporary directory; returns its path.
inline std::string write_temp_file(const std::string& name, const std::string& bytes) {
  const auto path = std::filesystem::temp_directory_path() / ("jetmoe-test-" + name);
  std::ofstream(path, std::ios::binary) << bytes;
  return path.string();
}

}  // namespace jetmoe::testing
