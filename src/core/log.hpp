#pragma once
// Rank-0 logger. Debug and info lines come from rank 0 only; warnings and errors from any rank,
// prefixed with the rank when the job has several. Every line carries the wall time since start.
#include <string>

namespace jetmoe {

enum class LogLevel { Debug = 0, Info = 1, Warn = 2, Error = 3 };

LogLevel parse_log_level(const std::string& name);  // "debug" | "info" | "warn" | "error"

namespace log {
void configure(int rank, int size, LogLevel level);
LogLevel level();
bool enabled(LogLevel level);  // would a message at this level be printed on this rank?
// Seconds since the process configured its logger (or started).
double elapsed_seconds();

void write(LogLevel level, const char* format, ...) __attribute__((format(printf, 2, 3)));
void debug(const char* format, ...) __attribute__((format(printf, 1, 2)));
void info(const char* format, ...) __attribute__((format(printf, 1, 2)));
void warn(const char* format, ...) __attribute__((format(printf, 1, 2)));
void error(const char* format, ...) __attribute__((format(printf, 1, 2)));
// A block of text (deck, table) printed verbatim by rank 0 at info level.
void text(const std::string& block);
}  // namespace log

}  // namespace jetmoe
