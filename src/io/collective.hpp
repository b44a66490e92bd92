#pragma once
// Writes that several ranks do together (a parallel HDF5 checkpoint, a sharded model export): after
// each step every rank learns whether all of them succeeded, so that all go on or all stop with the
// same error, and no rank is left waiting in a collective call of the next step.
#include <exception>
#include <string>

#include "core/error.hpp"

namespace jetmoe {

class Comm;

// Every rank of `comm` calls this at the same point with its own error ("" when it succeeded): when
// any rank has an error, every rank throws the lowest failing rank's message as a CollectiveError
// (reported once by the app) of that rank's kind (`my_kind`: Input unless given; a deck error stays
// one, exit status 2).
void agree(const Comm& comm, const std::string& my_error, ErrorKind my_kind = ErrorKind::Input);

// Runs `f`, a rank's part of a collective step; returns "" or the message of what it threw, for agree().
template <typename F>
std::string attempt(F&& f) {
  try {
    f();
    return {};
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    return describe_unexpected(e);
  }
}

// Runs `f` on every rank of `comm` as one step that all ranks pass or fail together: what `f` throws
// on any rank, every rank throws (the lowest failing rank's message and kind, as agree()). For checks
// every rank makes alike (the deck, the files it names), so that one message is printed, not one per
// rank followed by MPI_Abort's.
template <typename F>
void collectively(const Comm& comm, F&& f) {
  std::string error;
  ErrorKind kind = ErrorKind::Input;
  try {
    f();
  } catch (const Error& e) {
    error = e.what();
    kind = e.kind();
  } catch (const std::exception& e) {
    error = describe_unexpected(e);
  }
  agree(comm, error, kind);
}

}  // namespace jetmoe
