#include "io/collective.hpp"

#include "parallel/comm.hpp"

namespace jetmoe {

void agree(const Comm& comm, const std::string& my_error) {
  const int reporter = comm.min(my_error.empty() ? comm.size() : comm.rank());
  if (reporter == comm.size()) return;
  std::string message = my_error;
  comm.broadcast(message, reporter);
  throw CollectiveError(ErrorKind::Input, message);
}

}  // namespace jetmoe
