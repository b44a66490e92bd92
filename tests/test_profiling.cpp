#include <catch2/catch.hpp>

#include "core/profiling.hpp"
#include "parallel/comm.hpp"

using Catch::Matchers::Contains;

TEST_CASE("profiling regions nest and accumulate into the phase table", "[unit][mpi][profiling]") {
  jetmoe::phases::reset();
  for (int i = 0; i < 3; ++i) {
    jetmoe::Region step("step");
    { jetmoe::Region f("forward"); }
    { jetmoe::Region b("backward", /*fence=*/true); }
  }
  const jetmoe::Comm comm = jetmoe::Comm::world();
  const std::string table = jetmoe::phases::table(comm, 1.0);  // collective
  CHECK_THAT(table, Contains("step"));
  CHECK_THAT(table, Contains("  forward"));  // indented under step
  CHECK_THAT(table, Contains("  backward"));
  CHECK_THAT(table, Contains("       3 "));  // three calls
  if (comm.size() > 1) CHECK_THAT(table, Contains("min/max over ranks"));
  jetmoe::phases::reset();
}
