#pragma once
// One error type for everything a user can cause or the run can hit. The message is written for the
// user: it names the file, key or tensor, what was expected and what was found.
#include <stdexcept>
#include <string>

namespace jetmoe {

enum class ErrorKind {
  Usage,       // command line
  Deck,        // input deck: syntax, unknown key, type, range
  Input,       // data, tokenizer, model or checkpoint files
  Numerics,    // NaN/Inf loss and friends
  Internal,    // a bug: an invariant of our own code failed
};

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }
  // Exit status of the application: 2 for what the user typed (command line, deck), 1 otherwise.
  int exit_code() const { return (kind_ == ErrorKind::Usage || kind_ == ErrorKind::Deck) ? 2 : 1; }

 private:
  ErrorKind kind_;
};

[[noreturn]] inline void fail(ErrorKind kind, const std::string& message) { throw Error(kind, message); }

// The message for an exception that is not an Error. A std::filesystem::filesystem_error that escaped
// names its path(s) and the system's reason ("'runs/x': File name too long"); anything else is a bug
// of ours: "unexpected failure: WHAT".
std::string describe_unexpected(const std::exception& e);

// An error that every rank of the job throws together, with the same message, after agreeing on it
// (for example a failed collective checkpoint write). The application frame then reports it once and
// every rank returns the status, instead of ending the job with MPI_Abort.
class CollectiveError : public Error {
 public:
  using Error::Error;
};

}  // namespace jetmoe

// Checks an invariant of our own code; failure is a bug, reported with its location.
#define JETMOE_ASSERT(cond, msg)                                                                      \
  do {                                                                                                \
    if (!(cond))                                                                                      \
      ::jetmoe::fail(::jetmoe::ErrorKind::Internal,                                                   \
                     std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": internal error: " + \
                         (msg) + " [" #cond "]");                                                     \
  } while (0)
