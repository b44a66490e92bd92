#include "io/output_directory.hpp"

#include <algorithm>

#include "core/error.hpp"
#include "core/strings.hpp"

namespace jetmoe::io {

namespace fs = std::filesystem;

OutputDirectory::OutputDirectory(const fs::path& dir, const std::string& subject) {
  std::error_code ec;
  fs::path p = dir.lexically_normal();
  if (!p.has_filename() && p.has_parent_path()) p = p.parent_path();  // "runs/x/"
  // Only what is certainly missing is recorded: a directory that exists is never removed.
  for (; !p.empty() && fs::symlink_status(p, ec).type() == fs::file_type::not_found; p = p.parent_path()) {
    made_.push_back(p);
    if (p == p.parent_path()) break;
  }
  std::reverse(made_.begin(), made_.end());
  ec.clear();
  fs::create_directories(dir, ec);
  if (!ec && !fs::is_directory(dir, ec) && !ec) ec = std::make_error_code(std::errc::not_a_directory);
  if (ec) {
    remove_made();
    fail(ErrorKind::Input, subject + ": cannot create the directory " + jetmoe::quoted(dir.string()) + ": " + ec.message());
  }
}

OutputDirectory& OutputDirectory::operator=(OutputDirectory&& other) noexcept {
  if (this != &other) {
    remove_made();
    made_ = std::move(other.made_);
    other.made_.clear();
  }
  return *this;
}

void OutputDirectory::remove_made() noexcept {
  std::error_code ignored;
  for (auto it = made_.rbegin(); it != made_.rend(); ++it) fs::remove(*it, ignored);  // fails unless empty
  made_.clear();
}

void rename_or_fail(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::rename(from, to, ec);
  if (ec) fail(ErrorKind::Input, to.string() + ": cannot rename " + from.string() + " to it: " + ec.message());
}

void remove_all_or_fail(const fs::path& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) fail(ErrorKind::Input, path.string() + ": cannot remove it: " + ec.message());
}

bool exists_or_fail(const fs::path& path, const std::string& subject) {
  std::error_code ec;
  const fs::file_status status = fs::symlink_status(path, ec);
  if (ec && status.type() != fs::file_type::not_found)  // ENOENT, or ENOTDIR on the way
    fail(ErrorKind::Input, subject + ": cannot access " + jetmoe::quoted(path.string()) + ": " + ec.message());
  return fs::exists(status);
}

std::string absence_reason(const fs::path& path) {
  std::error_code ec;
  if (fs::exists(path, ec)) return "";
  return ec ? "cannot be accessed: " + ec.message() : std::string("does not exist");  // ec: it could not tell
}

}  // namespace jetmoe::io
