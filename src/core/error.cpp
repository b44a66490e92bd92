#include "core/error.hpp"

#include <filesystem>

#include "core/strings.hpp"

namespace jetmoe {

std::string describe_unexpected(const std::exception& e) {
  if (const auto* f = dynamic_cast<const std::filesystem::filesystem_error*>(&e)) {
    std::string paths = jetmoe::quoted(f->path1().string());
    if (!f->path2().empty()) paths += " and " + jetmoe::quoted(f->path2().string());
    return paths + ": " + f->code().message();
  }
  return std::string("unexpected failure: ") + e.what();
}

}  // namespace jetmoe
