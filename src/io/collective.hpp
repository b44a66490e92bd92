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
// (reported once by the app).
void agree(const Comm& comm, const std::string& my_error);

// Runs `f`, a rank's part of a collective step; returns "" or the message of what it threw, for agree().
template <typename F>
std::string attempt(F&& f) {
  try {
    f();
    return {};
  } catch (const Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    return std::string("unexpected failure: ") + e.what();
  }
}

}  // namespace jetmoe
