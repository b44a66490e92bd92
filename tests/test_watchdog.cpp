// The watchdog over waits on other ranks (parallel/watchdog.hpp, deck key parallel/timeout): a wait
// longer than the timeout is reported once, naming the rank, the wait and what it is part of; waits
// that end in time, and sections without an installed watchdog, report nothing. The action is a
// recorder here (the real one ends the process).
#include <catch2/catch.hpp>

#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "parallel/watchdog.hpp"

using Catch::Matchers::Contains;
using jetmoe::Watchdog;
using jetmoe::WatchdogSection;

namespace {

struct Recorder {
  std::mutex mu;
  std::vector<std::string> messages;
  Watchdog::Action action() {
    return [this](const std::string& m) {
      std::lock_guard<std::mutex> lock(mu);
      messages.push_back(m);
    };
  }
  std::size_t count() {
    std::lock_guard<std::mutex> lock(mu);
    return messages.size();
  }
};

// Waits (up to `limit`) until the recorder has a message; the timeouts below are 0.1 s, the limit is 20 s
// so a loaded machine cannot fail the case by scheduling alone.
bool fired_within(Recorder& r, double limit_s) {
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(limit_s);
  while (std::chrono::steady_clock::now() < end) {
    if (r.count() > 0) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return r.count() > 0;
}

}  // namespace

TEST_CASE("watchdog: a wait longer than parallel/timeout is reported once, naming the rank and the wait",
          "[unit][watchdog]") {
  Recorder r;
  auto w = std::make_shared<Watchdog>(0.1, "rank 3 (pipeline stage 1, data-parallel replica 1)", r.action());
  Watchdog::install(w);
  {
    WatchdogSection outer("the gradient sums over the replicas (NCCL)");
    WatchdogSection inner("a pipeline exchange with stage 0");
    REQUIRE(fired_within(r, 20.0));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));  // it would fire again by now: it must not
  }
  Watchdog::install(nullptr);
  REQUIRE(r.count() == 1);
  const std::string& m = r.messages[0];
  CHECK_THAT(m, Contains("rank 3 (pipeline stage 1, data-parallel replica 1): a pipeline exchange with stage 0, "
                         "during the gradient sums over the replicas (NCCL) has not finished after"));
  CHECK_THAT(m, Contains("(parallel/timeout = 0.1 s)"));
  CHECK_THAT(m, Contains("NCCL_DEBUG=INFO"));
  CHECK_THAT(m, Contains("Stopping this rank."));
}

TEST_CASE("watchdog: waits that end in time, and sections without a watchdog, report nothing", "[unit][watchdog]") {
  Recorder r;
  {
    auto w = std::make_shared<Watchdog>(0.5, "rank 0", r.action());
    Watchdog::install(w);
    for (int i = 0; i < 20; ++i) WatchdogSection quick("a pipeline exchange with stage 1");
    // Nothing open: however long it now lasts (twice the timeout), there is no wait to report.
    std::this_thread::sleep_for(std::chrono::milliseconds(1000));
    Watchdog::install(nullptr);
  }
  CHECK(r.count() == 0);
  {
    WatchdogSection unwatched("a wait with no watchdog installed");  // a no-op
    CHECK(Watchdog::installed() == nullptr);
  }
  {  // the deck's 0 installs none
    jetmoe::WatchdogScope none(0.0, "rank 0");
    CHECK(Watchdog::installed() == nullptr);
  }
  {
    jetmoe::WatchdogScope some(600.0, "rank 0");
    REQUIRE(Watchdog::installed() != nullptr);
    CHECK(Watchdog::installed()->timeout_s() == 600.0);
  }
  CHECK(Watchdog::installed() == nullptr);
}

TEST_CASE("watchdog: nothing inside an exempt part (a checkpoint write) is timed", "[unit][watchdog]") {
  Recorder r;
  {
    auto w = std::make_shared<Watchdog>(0.1, "rank 1", r.action());
    Watchdog::install(w);
    {
      jetmoe::WatchdogExempt io("writing a checkpoint");
      WatchdogSection barrier("an MPI barrier over 2 ranks");  // rank 0 writes, this one waits
      std::this_thread::sleep_for(std::chrono::milliseconds(600));
    }
    CHECK(r.count() == 0);
    // The same wait outside the exempt part is timed again.
    WatchdogSection barrier("an MPI barrier over 2 ranks");
    CHECK(fired_within(r, 20.0));
    Watchdog::install(nullptr);
  }
  REQUIRE(r.count() == 1);
  CHECK_THAT(r.messages[0], Contains("rank 1: an MPI barrier over 2 ranks has not finished after"));
}
