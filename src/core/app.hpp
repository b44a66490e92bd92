#pragma once
// The frame every jetmoe application runs in: command line, MPI, deck, Kokkos, logging, error
// reporting and the timer table. An app's main() is one call to run_app().
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "core/deck.hpp"

namespace jetmoe {

class Comm;

struct AppSpec {
  std::string name;                 // "jetmoe-train"
  std::string summary;              // one line for --help
  std::vector<std::string> blocks;  // deck blocks the app reads (listed in full in the effective deck)
  bool takes_restart = false;       // accepts -r CHECKPOINT
  std::string help_extra;           // more --help text (examples)
};

struct CommandLine {
  std::optional<std::string> deck_path;  // -i
  std::optional<std::string> restart;    // -r
  std::vector<std::string> overrides;    // block/key=value
  bool help = false;
  bool version = false;
  bool deck_reference = false;
  bool check_only = false;  // --check: validate the deck and stop
};

// A results file named by BLOCK/KEY (eval/output, generate/output): relative to job/output_dir unless
// absolute.
std::string results_path(const Deck& deck, const std::string& block, const std::string& key);
// The keys that name that file's directory, for an error in making it: BLOCK/KEY when it is absolute,
// job/output_dir when it is a bare file name, else both.
std::string results_directory_keys(const Deck& deck, const std::string& block, const std::string& key);

// Parses argv (argv[0] excluded). Skips every --kokkos-* argument (Kokkos reads them). Throws
// ErrorKind::Usage for anything it does not understand.
CommandLine parse_command_line(const std::vector<std::string>& args, const AppSpec& spec);

std::string usage_text(const AppSpec& spec);

struct AppContext {
  const AppSpec& spec;
  const CommandLine& command_line;
  Deck& deck;
  const Comm& comm;
};

using AppBody = std::function<void(AppContext&)>;

// Runs `body` inside the frame; returns the process exit status (0, 1 runtime error, 2 usage/deck).
// An error is one line "<app>: error: <message>" on stderr, control characters in the message escaped.
int run_app(int argc, char** argv, const AppSpec& spec, const AppBody& body);

}  // namespace jetmoe
