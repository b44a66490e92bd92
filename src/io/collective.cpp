#include "io/collective.hpp"

#include "parallel/comm.hpp"

namespace jetmoe {

void agree(const Comm& comm, const std::string& my_error, ErrorKind my_kind) {
  const int reporter = comm.min(my_error.empty() ? comm.size() : comm.rank());
  if (reporter == comm.size()) return;
  std::string message = std::string(1, char('0' + int(my_kind))) + my_error;  // the reporter's kind travels first
  comm.broadcast(message, reporter);
  throw CollectiveError(ErrorKind(message[0] - '0'), message.substr(1));
}

}  // namespace jetmoe
