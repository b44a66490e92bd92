// An emulated NCCL over MPI for the emulated GPU (the object library `jetmoe_nccl_emu`,
// kernels/CMakeLists.txt): with `jetmoe_cuda_emu` and `jetmoe_kernels_emu` it stands in for libnccl in
// tests/jetmoe-device-emu-tests, so the application's NCCL code path (src/parallel/nccl.cpp and the
// bf16 device stage's exchanges and gradient sums) runs between MPI ranks on the CPU. The emulated
// device memory is host memory, so NCCL buffers are handed to MPI as they are.
//
// Semantics kept from NCCL, so that what deadlocks on GPUs deadlocks here too:
//   * ncclCommInitRank blocks until every rank of the new communicator has called it;
//   * a send outside a group is a rendezvous (MPI_Ssend): it returns once the peer receives, as an
//     NCCL send blocks its stream;
//   * operations between ncclGroupStart and ncclGroupEnd progress together (non-blocking point to
//     point, then the collectives in call order, then a wait for everything);
//   * an operation runs on its stream: at once with the emulated runtime's EMU_STREAMS=eager (the
//     default), or queued there with EMU_STREAMS=lazy, running when the stream gets to it (a group as
//     one operation on its first operation's stream), so that a sum behind cudaStreamWaitEvent reads
//     the gradients as they are when the event's record runs.
// Supported: fp32 sums (ncclAllReduce), broadcasts and point to point of any datatype, groups; other
// reductions and the sums of other datatypes return ncclInvalidArgument.
#include <mpi.h>
#include <nccl.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace emu {  // the emulated runtime's (emu_host.hpp): queue `op` on `stream` when streams are lazy
bool stream_defer(cudaStream_t stream, std::function<void()> op);
}

struct ncclComm {
  MPI_Comm mpi = MPI_COMM_NULL;
  int rank = 0, size = 1;
};

namespace {

constexpr char kMagic[8] = "JMNCEMU";
constexpr int kInitTag = 27000, kP2pTag = 27999;
constexpr std::size_t kChunk = std::size_t(1) << 30;  // MPI counts are int

struct Id {  // what an emulated ncclUniqueId holds
  char magic[8];
  int creator;  // world rank of the rank that made it (rank 0 of the new communicator)
  int sequence;  // how many ids that rank had made before
};
static_assert(sizeof(Id) <= sizeof(ncclUniqueId), "emulated id too large");

std::string& last_error() {
  static std::string e;
  return e;
}

ncclResult_t error(ncclResult_t r, const std::string& what) {
  last_error() = "emulated NCCL: " + what;
  return r;
}

int world_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}

std::size_t type_bytes(ncclDataType_t t) {
  switch (t) {
    case ncclInt8: case ncclUint8: case ncclFloat8e4m3: case ncclFloat8e5m2: return 1;
    case ncclFloat16: case ncclBfloat16: return 2;
    case ncclInt32: case ncclUint32: case ncclFloat32: return 4;
    case ncclInt64: case ncclUint64: case ncclFloat64: return 8;
    default: return 0;
  }
}

struct Pending {
  enum Kind { Send, Recv, AllReduce, Broadcast } kind;
  const void* send = nullptr;
  void* recv = nullptr;
  std::size_t bytes = 0, count = 0;
  int peer = 0;  // Broadcast: the root
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
};

int group_depth = 0;
std::vector<Pending> pending;

bool usable(ncclComm_t comm) { return comm && comm->mpi != MPI_COMM_NULL; }

ncclResult_t all_reduce_now(const Pending& p) {
  const bool in_place = p.send == p.recv;
  for (std::size_t i = 0; i < p.count; i += kChunk) {
    const int n = int(std::min(kChunk, p.count - i));
    float* out = static_cast<float*>(p.recv) + i;
    const void* in = in_place ? MPI_IN_PLACE : static_cast<const float*>(p.send) + i;
    if (MPI_Allreduce(in, out, n, MPI_FLOAT, MPI_SUM, p.comm->mpi) != MPI_SUCCESS)
      return error(ncclSystemError, "MPI_Allreduce failed");
  }
  return ncclSuccess;
}

ncclResult_t broadcast_now(const Pending& p) {
  if (p.comm->rank == p.peer && p.send != p.recv) std::memcpy(p.recv, p.send, p.bytes);
  for (std::size_t i = 0; i < p.bytes; i += kChunk) {
    const int n = int(std::min(kChunk, p.bytes - i));
    if (MPI_Bcast(static_cast<char*>(p.recv) + i, n, MPI_BYTE, p.peer, p.comm->mpi) != MPI_SUCCESS)
      return error(ncclSystemError, "MPI_Bcast failed");
  }
  return ncclSuccess;
}

// The collectives (sums, broadcasts) of a group or of one call.
bool collective(const Pending& p) { return p.kind == Pending::AllReduce || p.kind == Pending::Broadcast; }
ncclResult_t collective_now(const Pending& p) {
  return p.kind == Pending::AllReduce ? all_reduce_now(p) : broadcast_now(p);
}

ncclResult_t point_to_point_now(const Pending& p) {
  for (std::size_t i = 0; i < p.bytes; i += kChunk) {
    const int n = int(std::min(kChunk, p.bytes - i));
    const int rc = p.kind == Pending::Send
                       ? MPI_Ssend(static_cast<const char*>(p.send) + i, n, MPI_BYTE, p.peer, kP2pTag, p.comm->mpi)
                       : MPI_Recv(static_cast<char*>(p.recv) + i, n, MPI_BYTE, p.peer, kP2pTag, p.comm->mpi,
                                  MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) return error(ncclSystemError, "MPI point to point failed");
  }
  return ncclSuccess;
}

ncclResult_t run_group(std::vector<Pending>& ops) {
  std::vector<MPI_Request> requests;
  for (const Pending& p : ops) {
    if (collective(p)) continue;
    for (std::size_t i = 0; i < p.bytes; i += kChunk) {
      const int n = int(std::min(kChunk, p.bytes - i));
      requests.emplace_back();
      if (p.kind == Pending::Send)
        MPI_Isend(static_cast<const char*>(p.send) + i, n, MPI_BYTE, p.peer, kP2pTag, p.comm->mpi, &requests.back());
      else
        MPI_Irecv(static_cast<char*>(p.recv) + i, n, MPI_BYTE, p.peer, kP2pTag, p.comm->mpi, &requests.back());
    }
  }
  ncclResult_t r = ncclSuccess;
  for (const Pending& p : ops)
    if (collective(p) && r == ncclSuccess) r = collective_now(p);
  if (!requests.empty() && MPI_Waitall(int(requests.size()), requests.data(), MPI_STATUSES_IGNORE) != MPI_SUCCESS)
    r = error(ncclSystemError, "MPI_Waitall failed");
  ops.clear();
  return r;
}

// A queued operation that fails has no caller to return to: the emulation stops (an MPI failure).
void must(ncclResult_t r) {
  if (r == ncclSuccess) return;
  std::fprintf(stderr, "EMU ERROR %s\n", last_error().c_str());
  std::abort();
}

ncclResult_t submit(const Pending& p) {
  if (!usable(p.comm)) return error(ncclInvalidArgument, "invalid communicator");
  if (group_depth > 0) {
    pending.push_back(p);
    return ncclSuccess;
  }
  auto run = [p] { return collective(p) ? collective_now(p) : point_to_point_now(p); };
  if (emu::stream_defer(p.stream, [run] { must(run()); })) return ncclSuccess;
  return run();
}

}  // namespace

extern "C" {

ncclResult_t ncclGetVersion(int* version) {
  if (!version) return ncclInvalidArgument;
  *version = NCCL_VERSION_CODE;
  return ncclSuccess;
}

const char* ncclGetErrorString(ncclResult_t r) {
  switch (r) {
    case ncclSuccess: return "no error";
    case ncclUnhandledCudaError: return "unhandled cuda error";
    case ncclSystemError: return "unhandled system error";
    case ncclInternalError: return "internal error";
    case ncclInvalidArgument: return "invalid argument";
    case ncclInvalidUsage: return "invalid usage";
    case ncclRemoteError: return "remote process exited or there was a network error";
    default: return "unknown result code";
  }
}

const char* ncclGetLastError(ncclComm_t) { return last_error().c_str(); }

ncclResult_t ncclGetUniqueId(ncclUniqueId* unique_id) {
  static int sequence = 0;
  if (!unique_id) return error(ncclInvalidArgument, "null id");
  std::memset(unique_id, 0, sizeof *unique_id);
  Id id{};
  std::memcpy(id.magic, kMagic, sizeof id.magic);
  id.creator = world_rank();
  id.sequence = sequence++;
  std::memcpy(unique_id->internal, &id, sizeof id);
  return ncclSuccess;
}

// Rank 0 (the id's creator) learns every member's world rank, tells them the list, and they make the
// MPI communicator together (MPI_Comm_create_group: collective over the members only).
ncclResult_t ncclCommInitRank(ncclComm_t* comm, int nranks, ncclUniqueId unique_id, int rank) {
  if (!comm || nranks < 1 || rank < 0 || rank >= nranks) return error(ncclInvalidArgument, "ncclCommInitRank arguments");
  Id id{};
  std::memcpy(&id, unique_id.internal, sizeof id);
  if (std::memcmp(id.magic, kMagic, sizeof id.magic) != 0) return error(ncclInvalidArgument, "not an emulated id");
  const int me = world_rank(), tag = kInitTag + id.sequence % 900;
  std::vector<int> members(std::size_t(nranks), -1);
  if (rank == 0) {
    if (me != id.creator) return error(ncclInvalidUsage, "rank 0 is not the rank that made the id");
    members[0] = me;
    for (int i = 1; i < nranks; ++i) {
      int who[2];
      MPI_Recv(who, 2, MPI_INT, MPI_ANY_SOURCE, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      if (who[0] < 1 || who[0] >= nranks || members[std::size_t(who[0])] != -1)
        return error(ncclInvalidUsage, "two ranks claim the same place in a communicator");
      members[std::size_t(who[0])] = who[1];
    }
    for (int i = 1; i < nranks; ++i) MPI_Send(members.data(), nranks, MPI_INT, members[std::size_t(i)], tag, MPI_COMM_WORLD);
  } else {
    const int who[2] = {rank, me};
    MPI_Send(who, 2, MPI_INT, id.creator, tag, MPI_COMM_WORLD);
    MPI_Recv(members.data(), nranks, MPI_INT, id.creator, tag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  }
  MPI_Group world = MPI_GROUP_NULL, group = MPI_GROUP_NULL;
  MPI_Comm_group(MPI_COMM_WORLD, &world);
  MPI_Group_incl(world, nranks, members.data(), &group);
  auto* c = new ncclComm;
  const int rc = MPI_Comm_create_group(MPI_COMM_WORLD, group, tag, &c->mpi);
  MPI_Group_free(&group);
  MPI_Group_free(&world);
  if (rc != MPI_SUCCESS) {
    delete c;
    return error(ncclSystemError, "MPI_Comm_create_group failed");
  }
  c->rank = rank, c->size = nranks;
  *comm = c;
  return ncclSuccess;
}

ncclResult_t ncclCommDestroy(ncclComm_t comm) {
  if (!comm) return ncclSuccess;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm->mpi != MPI_COMM_NULL) MPI_Comm_free(&comm->mpi);
  delete comm;
  return ncclSuccess;
}

ncclResult_t ncclCommAbort(ncclComm_t comm) { return ncclCommDestroy(comm); }

ncclResult_t ncclCommGetAsyncError(ncclComm_t, ncclResult_t* async_error) {
  if (async_error) *async_error = ncclSuccess;
  return ncclSuccess;
}

ncclResult_t ncclCommCount(const ncclComm_t comm, int* count) {
  if (!comm || !count) return ncclInvalidArgument;
  *count = comm->size;
  return ncclSuccess;
}

ncclResult_t ncclCommUserRank(const ncclComm_t comm, int* rank) {
  if (!comm || !rank) return ncclInvalidArgument;
  *rank = comm->rank;
  return ncclSuccess;
}

ncclResult_t ncclGroupStart() {
  ++group_depth;
  return ncclSuccess;
}

ncclResult_t ncclGroupEnd() {
  if (group_depth == 0) return error(ncclInvalidUsage, "ncclGroupEnd without ncclGroupStart");
  if (--group_depth > 0) return ncclSuccess;
  if (pending.empty()) return ncclSuccess;
  auto ops = std::make_shared<std::vector<Pending>>(std::move(pending));
  pending.clear();
  if (emu::stream_defer(ops->front().stream, [ops] { must(run_group(*ops)); })) return ncclSuccess;
  return run_group(*ops);
}

ncclResult_t ncclAllReduce(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, ncclRedOp_t op,
                           ncclComm_t comm, cudaStream_t stream) {
  if (datatype != ncclFloat32 || op != ncclSum)
    return error(ncclInvalidArgument, "only fp32 sums are emulated");
  Pending p{Pending::AllReduce};
  p.send = sendbuff, p.recv = recvbuff, p.count = count, p.comm = comm, p.stream = stream;
  return submit(p);
}

ncclResult_t ncclBroadcast(const void* sendbuff, void* recvbuff, size_t count, ncclDataType_t datatype, int root,
                           ncclComm_t comm, cudaStream_t stream) {
  if (type_bytes(datatype) == 0) return error(ncclInvalidArgument, "datatype");
  if (!usable(comm) || root < 0 || root >= comm->size) return error(ncclInvalidArgument, "ncclBroadcast root");
  Pending p{Pending::Broadcast};
  p.send = sendbuff, p.recv = recvbuff, p.bytes = count * type_bytes(datatype), p.peer = root, p.comm = comm;
  p.stream = stream;
  return submit(p);
}

ncclResult_t ncclSend(const void* sendbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm,
                      cudaStream_t stream) {
  if (type_bytes(datatype) == 0) return error(ncclInvalidArgument, "datatype");
  if (!usable(comm) || peer < 0 || peer >= comm->size) return error(ncclInvalidArgument, "ncclSend peer");
  Pending p{Pending::Send};
  p.send = sendbuff, p.bytes = count * type_bytes(datatype), p.peer = peer, p.comm = comm, p.stream = stream;
  return submit(p);
}

ncclResult_t ncclRecv(void* recvbuff, size_t count, ncclDataType_t datatype, int peer, ncclComm_t comm, cudaStream_t stream) {
  if (type_bytes(datatype) == 0) return error(ncclInvalidArgument, "datatype");
  if (!usable(comm) || peer < 0 || peer >= comm->size) return error(ncclInvalidArgument, "ncclRecv peer");
  Pending p{Pending::Recv};
  p.recv = recvbuff, p.bytes = count * type_bytes(datatype), p.peer = peer, p.comm = comm, p.stream = stream;
  return submit(p);
}

}  // extern "C"
