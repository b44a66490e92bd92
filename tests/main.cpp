// Catch2 v2 main for every jetmoe test executable: MPI first, then Kokkos, then the tests; the result
// is reduced over ranks (a failure on any rank fails every rank), and only rank 0 prints.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <Kokkos_Core.hpp>

#include <cstdio>
#include <cstring>

#include "parallel/comm.hpp"

int main(int argc, char** argv) {
  // Listing (CTest registration at build time) needs neither MPI nor Kokkos.
  for (int i = 1; i < argc; ++i)
    if (std::strncmp(argv[i], "--list", 6) == 0) return Catch::Session().run(argc, argv);

  jetmoe::MpiSession mpi(&argc, &argv);
  const jetmoe::Comm comm = jetmoe::Comm::world();
  if (!comm.is_root()) {
    if (!std::freopen("/dev/null", "w", stdout)) return 1;
  }
  int result = 0;
  {
    Kokkos::ScopeGuard kokkos(argc, argv);
    result = Catch::Session().run(argc, argv);
  }
  return comm.max(result);
}
