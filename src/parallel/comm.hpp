#pragma once
// The process group. With MPI it wraps a communicator; without (JETMOE_ENABLE_MPI=OFF) it is a single
// rank, so the rest of the code is written once.
#include "jetmoe/build_config.hpp"

#if JETMOE_HAVE_MPI
#include <mpi.h>
#endif

#include <cstddef>
#include <cstdint>
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

// "Open MPI v4.1.4, ..." (first line of MPI_Get_library_version), or "not built".
std::string mpi_library_version();

}  // namespace jetmoe
