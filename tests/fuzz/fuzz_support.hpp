#pragma once
// What every fuzz target checks: a file either reads, or its reader throws one jetmoe::Error of an
// expected kind whose message names the file. Anything else is a finding and ends the program with
// abort(), which libFuzzer records as a crash (and the replay as a failed test):
//   - a jetmoe::Error of another kind (Internal is a bug by definition),
//   - a message that does not name the file, or spans several lines,
//   - any other exception (std::out_of_range from a JSON library, std::bad_alloc from a size taken
//     from the file, ...),
//   - a property of the successful read that does not hold (check()).
// Sanitizer reports (out-of-bounds reads, integer overflow, leaks) end the program by themselves.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <fstream>
#include <initializer_list>
#include <string>
#include <string_view>

#include <stdlib.h>  // mkdtemp

#include "core/error.hpp"
#include "io/tokenizer.hpp"

namespace jetmoe::fuzz {

[[noreturn]] inline void finding(const std::string& what) {
  std::fprintf(stderr, "\nFUZZ FINDING: %s\n", what.c_str());
  std::fflush(stderr);
  std::abort();
}

inline void check(bool condition, const std::string& what) {
  if (!condition) finding(what);
}

inline const char* kind_name(ErrorKind kind) {
  switch (kind) {
    case ErrorKind::Usage: return "Usage";
    case ErrorKind::Deck: return "Deck";
    case ErrorKind::Input: return "Input";
    case ErrorKind::Numerics: return "Numerics";
    case ErrorKind::Internal: return "Internal";
  }
  return "?";
}

// Runs `read`; returns true when it returned, false when it threw an accepted error: a jetmoe::Error
// of one of `kinds` whose one-line message contains `names` (the file, or "" to skip that check).
template <class F>
bool reads(std::initializer_list<ErrorKind> kinds, std::string_view names, F&& read) {
  try {
    read();
    return true;
  } catch (const Error& e) {
    const std::string message = e.what();
    bool kind_ok = false;
    for (ErrorKind k : kinds) kind_ok = kind_ok || e.kind() == k;
    if (!kind_ok) finding(std::string("jetmoe::Error of kind ") + kind_name(e.kind()) + ": " + message);
    if (message.empty()) finding("an empty error message");
    if (message.find('\n') != std::string::npos) finding("an error message of several lines: " + message);
    if (!names.empty() && message.find(names) == std::string::npos)
      finding("the error does not name '" + std::string(names) + "': " + message);
    return false;
  } catch (const std::exception& e) {
    finding(std::string("an exception that is not a jetmoe::Error: ") + e.what());
  } catch (...) {
    finding("an exception that is not a std::exception");
  }
}

// A scratch directory of this process (removed at exit) and files written into it.
class Scratch {
 public:
  static Scratch& get() {
    static Scratch s;
    return s;
  }
  const std::string& dir() const { return dir_; }
  // Writes `size` bytes to dir()/name and returns the path.
  std::string write(const std::string& name, const void* data, std::size_t size) const {
    const std::string path = dir_ + "/" + name;
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
    out.close();
    if (!out) finding("cannot write the scratch file " + path);
    return path;
  }

 private:
  // As tests/support.hpp's TempDir (which reports through Catch2, not available here).
  Scratch() {
    std::error_code ec;
    std::string pattern = (std::filesystem::temp_directory_path(ec) / "jetmoe-fuzz-XXXXXX").string();
    if (ec || !::mkdtemp(pattern.data())) finding("cannot make a scratch directory " + pattern);
    dir_ = pattern;
  }
  ~Scratch() {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::string dir_;
};

// The small SentencePiece model of the tests (the shipped tiny tokenizer's kind: byte fallback), loaded
// once.
inline const io::Tokenizer& fixture_tokenizer() {
  static const io::Tokenizer t(std::string(JETMOE_SOURCE_DIR) + "/tests/fixtures/tokenizer/tokenizer.model");
  return t;
}

}  // namespace jetmoe::fuzz
