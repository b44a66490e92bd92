#pragma once
// A watchdog for the waits of one rank on others (parallel/timeout). Code that waits for peers (a
// pipeline exchange, the gradient sums over the replicas, the start of NCCL's communicators) marks the
// wait with a WatchdogSection. A background thread looks at the open sections; when one has lasted
// longer than the timeout it reports which wait, on which rank, for how long, and what usually causes it,
// then ends the process with exit status 1 (the launcher, mpiexec or srun, then stops the job; the other
// ranks, waiting for this one, time out in turn). A hung collective cannot be left any other way: without
// this a lost peer or a network NCCL cannot use holds the allocation until the job's time limit.
//
// Sections nest (the message names the innermost and what it is part of). Without an installed watchdog
// a section does nothing, so library code marks its waits unconditionally. Work that may legitimately
// keep the other ranks waiting for long (writing or reading a checkpoint: one rank may write a
// 100 GB file while the others wait at a barrier) is a WatchdogExempt: nothing inside it is timed.
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace jetmoe {

class Watchdog {
 public:
  // What a timeout does with its message; the default prints it to stderr and ends the process
  // (std::_Exit(1): no MPI call from the watchdog's thread, no destructors of the hung state).
  using Action = std::function<void(const std::string& message)>;

  // timeout_s > 0; `where` names this rank for the message ("rank 3 (pipeline stage 1, data-parallel replica 1)").
  Watchdog(double timeout_s, std::string where, Action action = {});
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // The process's watchdog, which WatchdogSections use (null: none).
  static void install(std::shared_ptr<Watchdog> w);
  static std::shared_ptr<Watchdog> installed();

  void begin(const std::string& what, bool timed = true);
  void end();
  double timeout_s() const { return timeout_s_; }

 private:
  using Clock = std::chrono::steady_clock;
  void watch();
  std::string message(const Clock::time_point& now) const;  // under mu_

  double timeout_s_;
  std::string where_;
  Action action_;
  mutable std::mutex mu_;
  std::condition_variable wake_;
  struct Open {
    std::string what;
    Clock::time_point since;
    bool timed;
  };
  std::vector<Open> open_;  // outermost first
  bool stop_ = false, fired_ = false;
  std::thread thread_;
};

// Installs a watchdog for its lifetime (none when timeout_s is 0) and uninstalls it after.
class WatchdogScope {
 public:
  WatchdogScope(double timeout_s, const std::string& where);
  ~WatchdogScope();
  WatchdogScope(const WatchdogScope&) = delete;
  WatchdogScope& operator=(const WatchdogScope&) = delete;
};

// Marks a wait on other ranks for the installed watchdog, from construction to destruction.
class WatchdogSection {
 public:
  explicit WatchdogSection(const std::string& what) : WatchdogSection(what, true) {}
  ~WatchdogSection();
  WatchdogSection(const WatchdogSection&) = delete;
  WatchdogSection& operator=(const WatchdogSection&) = delete;

 protected:
  WatchdogSection(const std::string& what, bool timed);

 private:
  std::shared_ptr<Watchdog> w_;
};

// Marks work during which no wait is timed (see above), from construction to destruction.
class WatchdogExempt : public WatchdogSection {
 public:
  explicit WatchdogExempt(const std::string& what) : WatchdogSection(what, false) {}
};

}  // namespace jetmoe
