#include "parallel/comm.hpp"

#include <cstdlib>

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

namespace {
template <class T>
T reduce(MPI_Comm comm, T v, MPI_Datatype type, MPI_Op op) {
  T out{};
  MPI_Allreduce(&v, &out, 1, type, op, comm);
  return out;
}
}  // namespace

double Comm::max(double v) const { return reduce(comm_, v, MPI_DOUBLE, MPI_MAX); }
double Comm::min(double v) const { return reduce(comm_, v, MPI_DOUBLE, MPI_MIN); }
double Comm::sum(double v) const { return reduce(comm_, v, MPI_DOUBLE, MPI_SUM); }
int Comm::max(int v) const { return reduce(comm_, v, MPI_INT, MPI_MAX); }
int Comm::min(int v) const { return reduce(comm_, v, MPI_INT, MPI_MIN); }
void Comm::barrier() const { MPI_Barrier(comm_); }
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
double Comm::max(double v) const { return v; }
double Comm::min(double v) const { return v; }
double Comm::sum(double v) const { return v; }
int Comm::max(int v) const { return v; }
int Comm::min(int v) const { return v; }
void Comm::barrier() const {}
void Comm::abort(int exit_code) const { std::exit(exit_code); }
std::string mpi_library_version() { return "not built (JETMOE_ENABLE_MPI=OFF)"; }

#endif

}  // namespace jetmoe
