#include "core/profiling.hpp"

#include <Kokkos_Core.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <mutex>
#include <vector>

#include "core/kokkos_compat.hpp"
#include "parallel/comm.hpp"

namespace jetmoe {

namespace {
double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

struct Phase {
  long calls = 0;
  double seconds = 0;
  std::size_t order = 0;  // first appearance
};

struct Table {
  std::mutex mutex;
  std::map<std::string, Phase> phases;
};
Table& table_state() {
  static Table t;
  return t;
}
// Regions are opened and closed by the thread that drives Kokkos (FUNNELED), so one stack per thread.
thread_local std::vector<std::string> region_stack;
}  // namespace

Region::Region(const std::string& name, bool fence) : start_(0), fence_(fence) {
  if (fence_) jetmoe::fence(name.c_str());
  Kokkos::Profiling::pushRegion(name);
  region_stack.push_back(region_stack.empty() ? name : region_stack.back() + "/" + name);
  start_ = now_seconds();
}

Region::~Region() {
  if (fence_) jetmoe::fence(region_stack.back().c_str());
  const double seconds = now_seconds() - start_;
  phases::record(region_stack.back(), seconds);
  region_stack.pop_back();
  Kokkos::Profiling::popRegion();
}

namespace phases {

void record(const std::string& path, double seconds) {
  Table& t = table_state();
  std::lock_guard<std::mutex> lock(t.mutex);
  auto [it, inserted] = t.phases.try_emplace(path);
  if (inserted) it->second.order = t.phases.size();
  it->second.calls += 1;
  it->second.seconds += seconds;
}

void reset() {
  Table& t = table_state();
  std::lock_guard<std::mutex> lock(t.mutex);
  t.phases.clear();
}

std::string table(const Comm& comm, double wall_seconds) {
  Table& t = table_state();
  std::vector<std::pair<std::string, Phase>> rows;
  {
    std::lock_guard<std::mutex> lock(t.mutex);
    rows.assign(t.phases.begin(), t.phases.end());
  }
  // Paths sort so that children follow their parent; ties in first appearance keep run order.
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  // Every rank must take part in the same reductions: agree on the row count first. Ranks with
  // different phase sets (pipeline stages) report their own rows; min/max then cover rank 0's names.
  const int nrows = comm.max(static_cast<int>(rows.size()));
  char line[512];
  std::string out;
  const bool several = comm.size() > 1;
  std::snprintf(line, sizeof line, "%-40s %8s %12s %11s %7s%s\n", "phase", "calls", "total [s]", "mean [ms]",
                "% wall", several ? "  min/max over ranks [s]" : "");
  out += line;
  out += std::string(several ? 105 : 81, '-') + "\n";
  for (int i = 0; i < nrows; ++i) {
    const bool have = i < static_cast<int>(rows.size());
    const double mine = have ? rows[i].second.seconds : 0.0;
    const double lo = comm.min(mine), hi = comm.max(mine);
    if (!have) continue;
    const auto& [path, ph] = rows[i];
    const std::size_t depth = static_cast<std::size_t>(std::count(path.begin(), path.end(), '/'));
    const std::string label = std::string(2 * depth, ' ') + path.substr(path.rfind('/') == std::string::npos ? 0 : path.rfind('/') + 1);
    std::snprintf(line, sizeof line, "%-40s %8ld %12.3f %11.3f %6.1f%%", label.c_str(), ph.calls, ph.seconds,
                  1e3 * ph.seconds / double(std::max(1L, ph.calls)),
                  wall_seconds > 0 ? 100.0 * ph.seconds / wall_seconds : 0.0);
    out += line;
    if (several) {
      std::snprintf(line, sizeof line, "  %10.3f /%10.3f", lo, hi);
      out += line;
    }
    out += "\n";
  }
  std::snprintf(line, sizeof line, "%-40s %8s %12.3f\n", "wall time", "", wall_seconds);
  out += line;
  return out;
}

}  // namespace phases
}  // namespace jetmoe
