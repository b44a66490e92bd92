#pragma once
// The process group. With MPI it wraps a communicator; without (JETMOE_ENABLE_MPI=OFF) it is a single
// rank, so the rest of the code is written once.
#include "jetmoe/build_config.hpp"

#if JETMOE_HAVE_MPI
#include <mpi.h>
#endif

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

namespace jetmoe {

// Initialises MPI (thread level FUNNELED) if nobody did, finalises it if we did.
class MpiSession {
 public:
  MpiSession(int* argc, char*** argv);
  ~MpiSession();
  MpiSession(const MpiSession&) = delete;
  MpiSession& operator=(const MpiSession&) = delete;

 private:
  bool owns_ = false;
};

// A point-to-point send (Comm::isend) or a sum (Comm::isum_in_place) in flight: its buffer stays
// untouched until wait() returns, or test() returns true.
class Request {
 public:
  Request() = default;
  Request(Request&& o) noexcept;
  Request& operator=(Request&& o) noexcept;
  Request(const Request&) = delete;
  Request& operator=(const Request&) = delete;
  ~Request();  // waits
  void wait();
  // Lets MPI progress the operation; true (and no longer active) once it has completed.
  bool test();
  bool active() const { return active_; }

 private:
  friend class Comm;
#if JETMOE_HAVE_MPI
  MPI_Request request_ = MPI_REQUEST_NULL;
#endif
  bool active_ = false;
};

class Comm {
 public:
  static Comm world();
  // This process alone (a one-rank communicator, e.g. for a single-rank reference inside an MPI job).
  static Comm self();
  int rank() const { return rank_; }
  int size() const { return size_; }
  bool is_root() const { return rank_ == 0; }

  double max(double v) const;
  double min(double v) const;
  double sum(double v) const;
  int max(int v) const;
  int min(int v) const;
  std::int64_t sum(std::int64_t v) const;
  // Element-wise sums over the ranks, in place (every rank gets the same result).
  void sum_in_place(float* data, std::size_t n) const;
  void sum_in_place(double* data, std::size_t n) const;
  // The same without blocking (MPI_Iallreduce): `data` holds the sums once the request completes.
  // Every rank must start the same sums in the same order. n must fit MPI's int count.
  Request isum_in_place(float* data, std::size_t n) const;
  void barrier() const;
  // Rank `root`'s string on every rank.
  void broadcast(std::string& s, int root = 0) const;
  void broadcast(float* data, std::size_t n, int root) const;
  // Every rank's string, in rank order, on every rank.
  std::vector<std::string> all_gather(const std::string& s) const;
  // Ranks calling with the same color form a new communicator, ranked by `key` (every rank of this one
  // must call). The new communicator is freed when its last copy goes.
  Comm split(int color, int key) const;
  // Point to point, float data. isend does not block (the buffer must live until the Request is
  // waited); send and recv block. Messages between two ranks with the same tag arrive in order.
  Request isend(const float* data, std::size_t n, int dest, int tag) const;
  void send(const float* data, std::size_t n, int dest, int tag) const;
  void recv(float* data, std::size_t n, int source, int tag) const;
  // Ends every rank of the job (MPI_Abort); a plain exit without MPI.
  [[noreturn]] void abort(int exit_code) const;

#if JETMOE_HAVE_MPI
  MPI_Comm raw() const { return comm_; }
#endif

 private:
#if JETMOE_HAVE_MPI
  MPI_Comm comm_ = MPI_COMM_WORLD;
  std::shared_ptr<MPI_Comm> owned_;  // communicators made by split()
#endif
  int rank_ = 0;
  int size_ = 1;
};

// Parts of a result computed on different ranks, brought together on every rank: this rank's parts
// `mine` (part j has the place index[j] of `parts`) and every other rank's, each at its place (places
// no rank gave stay empty). One all-gather of the packed parts. T: a trivially copyable value type.
template <class T>
std::vector<std::vector<T>> all_gather_parts(const Comm& comm, const std::vector<std::uint64_t>& index,
                                             const std::vector<std::vector<T>>& mine, std::size_t parts) {
  std::vector<std::vector<T>> all(parts);
  if (comm.size() == 1) {
    for (std::size_t j = 0; j < index.size(); ++j) all.at(index[j]) = mine[j];
    return all;
  }
  // Per part: its place and its value count (8 bytes each), then its values.
  std::string packed;
  const auto put = [&](const void* p, std::size_t bytes) { packed.append(static_cast<const char*>(p), bytes); };
  for (std::size_t j = 0; j < index.size(); ++j) {
    const std::uint64_t head[2] = {index[j], mine[j].size()};
    put(head, sizeof head);
    if (!mine[j].empty()) put(mine[j].data(), mine[j].size() * sizeof(T));
  }
  for (const std::string& from : comm.all_gather(packed)) {
    for (std::size_t at = 0; at + 2 * sizeof(std::uint64_t) <= from.size();) {
      std::uint64_t head[2];
      std::memcpy(head, from.data() + at, sizeof head);
      at += sizeof head;
      std::vector<T>& part = all.at(head[0]);
      part.resize(head[1]);
      if (head[1] > 0) std::memcpy(part.data(), from.data() + at, head[1] * sizeof(T));
      at += head[1] * sizeof(T);
    }
  }
  return all;
}

// "Open MPI v4.1.4, ..." (first line of MPI_Get_library_version), or "not built".
std::string mpi_library_version();

}  // namespace jetmoe
