#include "parallel/watchdog.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "core/error.hpp"

namespace jetmoe {

namespace {

std::mutex& installed_mutex() {
  static std::mutex m;
  return m;
}
std::shared_ptr<Watchdog>& installed_watchdog() {
  static std::shared_ptr<Watchdog> w;
  return w;
}

void print_and_exit(const std::string& message) {
  std::fflush(stdout);
  std::fprintf(stderr, "jetmoe: error: %s\n", message.c_str());
  std::fflush(stderr);
  std::_Exit(1);
}

}  // namespace

Watchdog::Watchdog(double timeout_s, std::string where, Action action)
    : timeout_s_(timeout_s), where_(std::move(where)), action_(action ? std::move(action) : Action(print_and_exit)) {
  JETMOE_ASSERT(timeout_s > 0, "Watchdog: the timeout must be positive");
  thread_ = std::thread([this] { watch(); });
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  wake_.notify_all();
  thread_.join();
}

void Watchdog::install(std::shared_ptr<Watchdog> w) {
  std::lock_guard<std::mutex> lock(installed_mutex());
  installed_watchdog() = std::move(w);
}

std::shared_ptr<Watchdog> Watchdog::installed() {
  std::lock_guard<std::mutex> lock(installed_mutex());
  return installed_watchdog();
}

void Watchdog::begin(const std::string& what, bool timed) {
  std::lock_guard<std::mutex> lock(mu_);
  open_.push_back({what, Clock::now(), timed});
}

void Watchdog::end() {
  std::lock_guard<std::mutex> lock(mu_);
  if (!open_.empty()) open_.pop_back();
}

std::string Watchdog::message(const Clock::time_point& now) const {
  const double waited = std::chrono::duration<double>(now - open_.front().since).count();
  std::string what = open_.back().what;
  for (std::size_t i = open_.size() - 1; i-- > 0;) what += ", during " + open_[i].what;
  char head[160];
  std::snprintf(head, sizeof head, " has not finished after %.0f s (parallel/timeout = %g s)", waited, timeout_s_);
  return where_ + ": " + what + head +
         ". Another rank has stopped, hangs or is far slower, or the network does not carry the traffic: look for "
         "another rank's error above; with NCCL, NCCL_DEBUG=INFO shows the connections (NCCL_SOCKET_IFNAME, "
         "NCCL_IB_HCA choose the interfaces) and parallel/overlap_allreduce = false rules out the gradient sums "
         "overlapping the pipeline's traffic; raise parallel/timeout if a stage legitimately takes longer. "
         "Stopping this rank.";
}

void Watchdog::watch() {
  // Looks a few times per timeout (at least once a second), so a timeout fires within 25% of its length.
  const auto period = std::chrono::duration<double>(std::min(1.0, timeout_s_ / 4));
  std::unique_lock<std::mutex> lock(mu_);
  while (!stop_) {
    wake_.wait_for(lock, period);
    if (stop_ || fired_ || open_.empty()) continue;
    if (std::any_of(open_.begin(), open_.end(), [](const Open& o) { return !o.timed; })) continue;
    const auto now = Clock::now();
    if (std::chrono::duration<double>(now - open_.front().since).count() <= timeout_s_) continue;
    fired_ = true;
    const std::string m = message(now);
    lock.unlock();
    action_(m);
    lock.lock();
  }
}

WatchdogScope::WatchdogScope(double timeout_s, const std::string& where) {
  if (timeout_s > 0) Watchdog::install(std::make_shared<Watchdog>(timeout_s, where));
}

WatchdogScope::~WatchdogScope() { Watchdog::install(nullptr); }

WatchdogSection::WatchdogSection(const std::string& what, bool timed) : w_(Watchdog::installed()) {
  if (w_) w_->begin(what, timed);
}

WatchdogSection::~WatchdogSection() {
  if (w_) w_->end();
}

}  // namespace jetmoe
