#pragma once
// Profiling regions and the per-phase timer table.
//
//   { jetmoe::Region r("forward"); ... }
//
// pushes a Kokkos::Profiling region (so Kokkos Tools such as the space-time stack or nsys
// annotations see it) and adds the wall time to the phase "outer/forward" of the process-wide table
// printed at exit. Regions nest; the table is keyed by the nesting path. Time is host wall time:
// pass fence=true where asynchronous device work must be inside the measurement.
#include <string>

namespace jetmoe {

class Comm;

class Region {
 public:
  explicit Region(const std::string& name, bool fence = false);
  ~Region();
  Region(const Region&) = delete;
  Region& operator=(const Region&) = delete;

 private:
  double start_;
  bool fence_;
};

namespace phases {
// Adds `seconds` to the phase at the current nesting path + name (Region does this).
void record(const std::string& path, double seconds);
void reset();
// Table of phases: calls, total and mean time, share of `wall_seconds`, and with several ranks the
// minimum and maximum total over ranks (collective: every rank must call it).
std::string table(const Comm& comm, double wall_seconds);
}  // namespace phases

}  // namespace jetmoe
