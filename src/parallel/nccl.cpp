#include "parallel/nccl.hpp"

#if JETMOE_HAVE_NCCL
#include <algorithm>
#include <string>

#include "core/error.hpp"
#include "parallel/watchdog.hpp"

namespace jetmoe {

namespace {

void check(ncclResult_t r, const char* what, ncclComm_t comm = nullptr) {
  if (r == ncclSuccess) return;
  std::string message = std::string("NCCL: ") + what + " failed: " + ncclGetErrorString(r);
  const char* last = ncclGetLastError(comm);
  if (last && *last) message += std::string(" (") + last + ")";
  if (r == ncclSystemError || r == ncclRemoteError)
    message += "; see NCCL_DEBUG=WARN output for the network or peer that failed";
  fail(r == ncclInvalidUsage || r == ncclInvalidArgument ? ErrorKind::Internal : ErrorKind::Input, message);
}

// NCCL's counts are elements: the raw byte transfers go as ncclUint8, sums as ncclFloat32.
constexpr std::size_t kChunk = std::size_t(1) << 30;

}  // namespace

NcclComm::NcclComm(const Comm& comm) : rank_(comm.rank()), size_(comm.size()) {
  if (size_ == 1) return;
  ncclUniqueId id{};
  if (comm.is_root()) check(ncclGetUniqueId(&id), "ncclGetUniqueId");
  std::string bytes(reinterpret_cast<const char*>(&id), sizeof id);
  comm.broadcast(bytes, 0);
  JETMOE_ASSERT(bytes.size() == sizeof id, "NcclComm: the broadcast id has the wrong size");
  std::copy(bytes.begin(), bytes.end(), reinterpret_cast<char*>(&id));
  WatchdogSection wait("starting NCCL (ncclCommInitRank over " + std::to_string(size_) + " ranks)");
  check(ncclCommInitRank(&comm_, size_, id, rank_), "ncclCommInitRank");
}

NcclComm::~NcclComm() {
  if (comm_) ncclCommDestroy(comm_);
}

void NcclComm::sum_in_place(float* data, std::size_t n, cudaStream_t stream) const {
  if (size_ == 1) return;
  for (std::size_t i = 0; i < n; i += kChunk)
    check(ncclAllReduce(data + i, data + i, std::min(kChunk, n - i), ncclFloat32, ncclSum, comm_, stream),
          "ncclAllReduce", comm_);
}

void NcclComm::broadcast(void* data, std::size_t bytes, int root, cudaStream_t stream) const {
  if (size_ == 1) return;
  char* const at = static_cast<char*>(data);
  for (std::size_t i = 0; i < bytes; i += kChunk)
    check(ncclBroadcast(at + i, at + i, std::min(kChunk, bytes - i), ncclUint8, root, comm_, stream), "ncclBroadcast",
          comm_);
}

void NcclComm::send(const void* data, std::size_t bytes, int peer, cudaStream_t stream) const {
  check(ncclSend(data, bytes, ncclUint8, peer, comm_, stream), "ncclSend", comm_);
}

void NcclComm::recv(void* data, std::size_t bytes, int peer, cudaStream_t stream) const {
  check(ncclRecv(data, bytes, ncclUint8, peer, comm_, stream), "ncclRecv", comm_);
}

void NcclComm::begin_group() { check(ncclGroupStart(), "ncclGroupStart"); }
void NcclComm::end_group() { check(ncclGroupEnd(), "ncclGroupEnd"); }

}  // namespace jetmoe
#endif
