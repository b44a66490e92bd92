#pragma once
// NCCL communicators for the GPU traffic of the bf16 path (JETMOE_HAVE_NCCL): the same ranks in the
// same order as an MPI communicator, bootstrapped over it (rank 0's ncclUniqueId broadcast). Each rank
// uses its current CUDA device. Every operation is enqueued on the caller's stream and returns before
// it completes; errors are reported as jetmoe::Error naming the operation and NCCL's own message.
//
// Point-to-point transfers block their stream until the peer posts the matching one, so neighbours
// that send to each other must pair a send with a receive in one group (begin_group / end_group), as
// the pipeline's exchanges do.
#include "jetmoe/build_config.hpp"

#if JETMOE_HAVE_NCCL
#include <cuda_runtime_api.h>
#include <nccl.h>

#include <cstddef>

#include "parallel/comm.hpp"

namespace jetmoe {

class NcclComm {
 public:
  // Collective over the ranks of `comm` (every one must call, in the same order as its other
  // communicator creations); a one-rank `comm` gives a communicator that does nothing.
  explicit NcclComm(const Comm& comm);
  ~NcclComm();
  NcclComm(const NcclComm&) = delete;
  NcclComm& operator=(const NcclComm&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }

  // Element-wise fp32 sums over the ranks, in place.
  void sum_in_place(float* data, std::size_t n, cudaStream_t stream) const;
  // `bytes` raw bytes from rank `root` to every rank, in place.
  void broadcast(void* data, std::size_t bytes, int root, cudaStream_t stream) const;
  // `bytes` raw bytes to / from rank `peer`.
  void send(const void* data, std::size_t bytes, int peer, cudaStream_t stream) const;
  void recv(void* data, std::size_t bytes, int peer, cudaStream_t stream) const;
  // Operations between begin_group and end_group are issued together (they may complete in any order).
  static void begin_group();
  static void end_group();

 private:
  ncclComm_t comm_ = nullptr;
  int rank_ = 0, size_ = 1;
};

}  // namespace jetmoe
#endif
