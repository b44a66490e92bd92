#pragma once
// Directories made for a command's outputs. A command that fails leaves the file system as it found
// it: the directories it made on the way are removed again (each only if still empty), unless the
// command keeps them. File-system calls that report failure with a jetmoe::Error naming the path,
// where std::filesystem's throwing forms would end the run with "unexpected failure".
#include <filesystem>
#include <string>
#include <vector>

namespace jetmoe::io {

class OutputDirectory {
 public:
  OutputDirectory() = default;
  // Creates `dir` and its missing parents. On failure removes those it made and throws ErrorKind::Input:
  // "SUBJECT: cannot create the directory 'DIR': REASON" (SUBJECT names the deck key, say).
  OutputDirectory(const std::filesystem::path& dir, const std::string& subject);
  OutputDirectory(OutputDirectory&& other) noexcept : made_(std::move(other.made_)) { other.made_.clear(); }
  OutputDirectory& operator=(OutputDirectory&& other) noexcept;
  OutputDirectory(const OutputDirectory&) = delete;
  OutputDirectory& operator=(const OutputDirectory&) = delete;
  ~OutputDirectory() { remove_made(); }

  // The command succeeded: what was made stays.
  void keep() { made_.clear(); }
  // Removes the directories made, deepest first, each only if empty; never throws.
  void remove_made() noexcept;
  // Outermost first.
  const std::vector<std::filesystem::path>& made() const { return made_; }

 private:
  std::vector<std::filesystem::path> made_;
};

// std::filesystem::rename and remove_all, failing with ErrorKind::Input:
// "TO: cannot rename FROM to it: REASON", "PATH: cannot remove it: REASON".
void rename_or_fail(const std::filesystem::path& from, const std::filesystem::path& to);
void remove_all_or_fail(const std::filesystem::path& path);

// A path the command is about to write, checked without following it further: whether something is
// there (false: nothing), and ErrorKind::Input "SUBJECT: cannot access 'PATH': REASON" when the file
// system refuses to tell (a name too long, a parent that is a file, no permission).
bool exists_or_fail(const std::filesystem::path& path, const std::string& subject);

// Why nothing is at an input `path`, for "'PATH' " + reason: "" when something is there, "does not
// exist", or "cannot be accessed: REASON" when the file system cannot tell (a name too long, say).
std::string absence_reason(const std::filesystem::path& path);

}  // namespace jetmoe::io
