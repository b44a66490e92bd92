#include "core/log.hpp"

#include <chrono>
#include <cstdarg>
#include <cstdio>
#include <mutex>
#include <string>

#include "core/error.hpp"

namespace jetmoe {

LogLevel parse_log_level(const std::string& name) {
  if (name == "debug") return LogLevel::Debug;
  if (name == "info") return LogLevel::Info;
  if (name == "warn") return LogLevel::Warn;
  if (name == "error") return LogLevel::Error;
  fail(ErrorKind::Internal, "unknown log level '" + name + "'");
}

namespace log {
namespace {
struct State {
  int rank = 0;
  int size = 1;
  LogLevel level = LogLevel::Info;
  std::chrono::steady_clock::time_point start = std::chrono::steady_clock::now();
  std::mutex mutex;
};
State& state() {
  static State s;
  return s;
}

void vwrite(LogLevel lvl, const char* format, va_list args) {
  State& s = state();
  if (!enabled(lvl)) return;
  char message[4096];
  std::vsnprintf(message, sizeof message, format, args);
  const char* tag = lvl == LogLevel::Warn ? "warning: " : lvl == LogLevel::Error ? "error: " : "";
  std::string rank_tag;
  if (s.size > 1 && lvl >= LogLevel::Warn) rank_tag = "[rank " + std::to_string(s.rank) + "] ";
  std::lock_guard<std::mutex> lock(s.mutex);
  FILE* out = lvl >= LogLevel::Warn ? stderr : stdout;
  if (lvl >= LogLevel::Warn) std::fflush(stdout);
  std::fprintf(out, "[%9.3fs] %s%s%s\n", elapsed_seconds(), rank_tag.c_str(), tag, message);
  std::fflush(out);
}
}  // namespace

void configure(int rank, int size, LogLevel lvl) {
  State& s = state();
  s.rank = rank;
  s.size = size;
  s.level = lvl;
}

LogLevel level() { return state().level; }

bool enabled(LogLevel lvl) {
  const State& s = state();
  if (lvl < s.level) return false;
  return lvl >= LogLevel::Warn || s.rank == 0;
}

double elapsed_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - state().start).count();
}

#define JETMOE_LOG_FN(NAME, LEVEL)       \
  void NAME(const char* format, ...) {   \
    va_list args;                        \
    va_start(args, format);              \
    vwrite(LEVEL, format, args);         \
    va_end(args);                        \
  }
JETMOE_LOG_FN(debug, LogLevel::Debug)
JETMOE_LOG_FN(info, LogLevel::Info)
JETMOE_LOG_FN(warn, LogLevel::Warn)
JETMOE_LOG_FN(error, LogLevel::Error)
#undef JETMOE_LOG_FN

void write(LogLevel lvl, const char* format, ...) {
  va_list args;
  va_start(args, format);
  vwrite(lvl, format, args);
  va_end(args);
}

void text(const std::string& block) {
  if (!enabled(LogLevel::Info)) return;
  std::lock_guard<std::mutex> lock(state().mutex);
  std::fputs(block.c_str(), stdout);
  if (!block.empty() && block.back() != '\n') std::fputc('\n', stdout);
  std::fflush(stdout);
}

}  // namespace log
}  // namespace jetmoe
