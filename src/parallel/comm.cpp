#include "parallel/comm.hpp"

#include <algorithm>
#include <climits>
#include <cstdlib>
#include <string>

#include "core/error.hpp"
#include "parallel/watchdog.hpp"

namespace jetmoe {

#if JETMOE_HAVE_MPI

MpiSession::MpiSession(int* argc, char*** argv) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) {
    int provided = 0;
    MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
    owns_ = true;
  }
}

MpiSession::~MpiSession() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (owns_ && !finalized) MPI_Finalize();
}

Comm Comm::world() {
  Comm c;
  c.comm_ = MPI_COMM_WORLD;
  MPI_Comm_rank(c.comm_, &c.rank_);
  MPI_Comm_size(c.comm_, &c.size_);
  return c;
}

Comm Comm::self() {
  Comm c;
  c.comm_ = MPI_COMM_SELF;
  MPI_Comm_rank(c.comm_, &c.rank_);
  MPI_Comm_size(c.comm_, &c.size_);
  return c;
}

namespace {
// Every blocking call below is a wait on other ranks: a section of the installed watchdog
// (parallel/watchdog.hpp; none installed: nothing).
std::string over(const char* what, int size) { return std::string("an MPI ") + what + " over " + std::to_string(size) + " ranks"; }

template <class T>
T reduce(MPI_Comm comm, int size, T v, MPI_Datatype type, MPI_Op op) {
  WatchdogSection wait(over("reduction", size));
  T out{};
  MPI_Allreduce(&v, &out, 1, type, op, comm);
  return out;
}
}  // namespace

double Comm::max(double v) const { return reduce(comm_, size_, v, MPI_DOUBLE, MPI_MAX); }
double Comm::min(double v) const { return reduce(comm_, size_, v, MPI_DOUBLE, MPI_MIN); }
double Comm::sum(double v) const { return reduce(comm_, size_, v, MPI_DOUBLE, MPI_SUM); }
int Comm::max(int v) const { return reduce(comm_, size_, v, MPI_INT, MPI_MAX); }
int Comm::min(int v) const { return reduce(comm_, size_, v, MPI_INT, MPI_MIN); }
std::int64_t Comm::sum(std::int64_t v) const { return reduce(comm_, size_, v, MPI_INT64_T, MPI_SUM); }
namespace {
template <class T>
void sum_chunks(MPI_Comm comm, int size, T* data, std::size_t n, MPI_Datatype type) {
  WatchdogSection wait(over("sum", size));
  constexpr std::size_t chunk = std::size_t(1) << 30;  // MPI counts are int
  for (std::size_t i = 0; i < n; i += chunk)
    MPI_Allreduce(MPI_IN_PLACE, data + i, int(std::min(chunk, n - i)), type, MPI_SUM, comm);
}
}  // namespace
void Comm::sum_in_place(float* data, std::size_t n) const {
  if (size_ > 1) sum_chunks(comm_, size_, data, n, MPI_FLOAT);
}
void Comm::sum_in_place(double* data, std::size_t n) const {
  if (size_ > 1) sum_chunks(comm_, size_, data, n, MPI_DOUBLE);
}
void Comm::barrier() const {
  WatchdogSection wait(over("barrier", size_));
  MPI_Barrier(comm_);
}
void Comm::broadcast(float* data, std::size_t n, int root) const {
  WatchdogSection wait(over("broadcast", size_));
  constexpr std::size_t chunk = std::size_t(1) << 30;  // MPI counts are int
  for (std::size_t i = 0; i < n; i += chunk) MPI_Bcast(data + i, int(std::min(chunk, n - i)), MPI_FLOAT, root, comm_);
}
void Comm::broadcast(std::string& s, int root) const {
  WatchdogSection wait(over("broadcast", size_));
  long long n = static_cast<long long>(s.size());
  MPI_Bcast(&n, 1, MPI_LONG_LONG, root, comm_);
  s.resize(static_cast<std::size_t>(n));
  if (n > 0) MPI_Bcast(s.data(), int(n), MPI_CHAR, root, comm_);
}

std::vector<std::string> Comm::all_gather(const std::string& s) const {
  WatchdogSection wait(over("gather", size_));
  const int n = int(s.size());
  std::vector<int> counts(std::size_t(size_), 0), offsets(std::size_t(size_), 0);
  MPI_Allgather(&n, 1, MPI_INT, counts.data(), 1, MPI_INT, comm_);
  long long total = 0;
  for (int r = 0; r < size_; ++r) {
    offsets[std::size_t(r)] = int(total);
    total += counts[std::size_t(r)];
  }
  if (total > INT_MAX) fail(ErrorKind::Internal, "all_gather: " + std::to_string(total) + " bytes exceed MPI's int count");
  std::string all(std::size_t(total), '\0');
  MPI_Allgatherv(s.data(), n, MPI_CHAR, all.data(), counts.data(), offsets.data(), MPI_CHAR, comm_);
  std::vector<std::string> out;
  for (int r = 0; r < size_; ++r) out.push_back(all.substr(std::size_t(offsets[std::size_t(r)]), std::size_t(counts[std::size_t(r)])));
  return out;
}

Comm Comm::split(int color, int key) const {
  MPI_Comm out = MPI_COMM_NULL;
  MPI_Comm_split(comm_, color, key, &out);
  Comm c;
  c.owned_ = std::shared_ptr<MPI_Comm>(new MPI_Comm(out), [](MPI_Comm* m) {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized && *m != MPI_COMM_NULL) MPI_Comm_free(m);
    delete m;
  });
  c.comm_ = out;
  MPI_Comm_rank(out, &c.rank_);
  MPI_Comm_size(out, &c.size_);
  return c;
}

namespace {
int message_count(std::size_t n) {
  if (n > std::size_t(INT_MAX))
    fail(ErrorKind::Internal, "point-to-point message of " + std::to_string(n) + " floats exceeds MPI's int count");
  return int(n);
}
}  // namespace

Request Comm::isend(const float* data, std::size_t n, int dest, int tag) const {
  Request r;
  MPI_Isend(data, message_count(n), MPI_FLOAT, dest, tag, comm_, &r.request_);
  r.active_ = true;
  return r;
}
void Comm::send(const float* data, std::size_t n, int dest, int tag) const {
  WatchdogSection wait("an MPI send to rank " + std::to_string(dest));
  MPI_Send(data, message_count(n), MPI_FLOAT, dest, tag, comm_);
}
void Comm::recv(float* data, std::size_t n, int source, int tag) const {
  WatchdogSection wait("an MPI receive from rank " + std::to_string(source));
  MPI_Recv(data, message_count(n), MPI_FLOAT, source, tag, comm_, MPI_STATUS_IGNORE);
}

Request::Request(Request&& o) noexcept : request_(o.request_), active_(o.active_) {
  o.request_ = MPI_REQUEST_NULL;
  o.active_ = false;
}
Request& Request::operator=(Request&& o) noexcept {
  if (this != &o) {
    wait();
    request_ = o.request_, active_ = o.active_;
    o.request_ = MPI_REQUEST_NULL, o.active_ = false;
  }
  return *this;
}
Request::~Request() { wait(); }
void Request::wait() {
  if (active_) {
    WatchdogSection wait("an MPI transfer started earlier");
    MPI_Wait(&request_, MPI_STATUS_IGNORE);
  }
  active_ = false;
}
bool Request::test() {
  if (!active_) return true;
  int done = 0;
  MPI_Test(&request_, &done, MPI_STATUS_IGNORE);
  if (done) active_ = false;
  return done != 0;
}
Request Comm::isum_in_place(float* data, std::size_t n) const {
  Request r;
  if (size_ == 1 || n == 0) return r;
  MPI_Iallreduce(MPI_IN_PLACE, data, message_count(n), MPI_FLOAT, MPI_SUM, comm_, &r.request_);
  r.active_ = true;
  return r;
}
void Comm::abort(int exit_code) const {
  MPI_Abort(comm_, exit_code);
  std::exit(exit_code);
}

std::string mpi_library_version() {
  char text[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(text, &len);
  std::string s(text, static_cast<std::size_t>(len));
  const auto nl = s.find_first_of("\r\n");
  if (nl != std::string::npos) s.resize(nl);
  while (!s.empty() && (s.back() == ',' || s.back() == ' ' || s.back() == '\0')) s.pop_back();
  return s;
}

#else

MpiSession::MpiSession(int*, char***) {}
MpiSession::~MpiSession() {}
Comm Comm::world() { return Comm(); }
Comm Comm::self() { return Comm(); }
std::int64_t Comm::sum(std::int64_t v) const { return v; }
void Comm::sum_in_place(float*, std::size_t) const {}
void Comm::sum_in_place(double*, std::size_t) const {}
double Comm::max(double v) const { return v; }
double Comm::min(double v) const { return v; }
double Comm::sum(double v) const { return v; }
int Comm::max(int v) const { return v; }
int Comm::min(int v) const { return v; }
void Comm::barrier() const {}
void Comm::broadcast(std::string&, int) const {}
std::vector<std::string> Comm::all_gather(const std::string& s) const { return {s}; }
void Comm::broadcast(float*, std::size_t, int) const {}
Comm Comm::split(int, int) const { return Comm(); }
Request Comm::isend(const float*, std::size_t, int, int) const {
  fail(ErrorKind::Internal, "point-to-point messages need MPI (JETMOE_ENABLE_MPI=ON)");
}
void Comm::send(const float*, std::size_t, int, int) const {
  fail(ErrorKind::Internal, "point-to-point messages need MPI (JETMOE_ENABLE_MPI=ON)");
}
void Comm::recv(float*, std::size_t, int, int) const {
  fail(ErrorKind::Internal, "point-to-point messages need MPI (JETMOE_ENABLE_MPI=ON)");
}
Request::Request(Request&& o) noexcept : active_(o.active_) { o.active_ = false; }
Request& Request::operator=(Request&& o) noexcept {
  active_ = o.active_;
  o.active_ = false;
  return *this;
}
Request::~Request() {}
void Request::wait() { active_ = false; }
bool Request::test() {
  active_ = false;
  return true;
}
Request Comm::isum_in_place(float*, std::size_t) const { return Request(); }
void Comm::abort(int exit_code) const { std::exit(exit_code); }
std::string mpi_library_version() { return "not built (JETMOE_ENABLE_MPI=OFF)"; }

#endif

}  // namespace jetmoe
