#include "core/app.hpp"

#include <Kokkos_Core.hpp>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <memory>

#include "core/build_info.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/profiling.hpp"
#include "core/strings.hpp"
#include "parallel/comm.hpp"

namespace jetmoe {

std::string results_path(const Deck& deck, const std::string& block, const std::string& key) {
  const std::filesystem::path out = deck.get_string(block, key);
  return out.is_absolute() ? out.string() : (std::filesystem::path(deck.get_string("job", "output_dir")) / out).string();
}

std::string results_directory_keys(const Deck& deck, const std::string& block, const std::string& key) {
  const std::filesystem::path out = deck.get_string(block, key);
  if (out.is_absolute()) return deck.describe_key(block, key);
  if (out.parent_path().empty()) return deck.describe_key("job", "output_dir");
  return deck.describe_key("job", "output_dir") + " and " + deck.describe_key(block, key);
}

CommandLine parse_command_line(const std::vector<std::string>& args, const AppSpec& spec) {
  CommandLine cl;
  auto value_of = [&](std::size_t& i, const std::string& flag) -> std::string {
    const std::string& a = args[i];
    const std::string long_eq = flag + "=";
    if (starts_with(a, long_eq)) return a.substr(long_eq.size());
    if (i + 1 >= args.size()) fail(ErrorKind::Usage, "option " + a + " needs a value");
    return args[++i];
  };
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (starts_with(a, "--kokkos-")) continue;  // Kokkos' own flags
    if (a == "-h" || a == "--help") {
      cl.help = true;
    } else if (a == "-V" || a == "--version") {
      cl.version = true;
    } else if (a == "--deck-reference") {
      cl.deck_reference = true;
    } else if (a == "--check") {
      cl.check_only = true;
    } else if (a == "-i" || a == "--input" || starts_with(a, "--input=")) {
      if (cl.deck_path) fail(ErrorKind::Usage, "more than one input deck given (" + *cl.deck_path + " and ...)");
      cl.deck_path = value_of(i, "--input");
    } else if (a == "-r" || a == "--restart" || starts_with(a, "--restart=")) {
      if (!spec.takes_restart) fail(ErrorKind::Usage, spec.name + " does not restart from checkpoints (-r)");
      if (cl.restart) fail(ErrorKind::Usage, "more than one restart checkpoint given");
      cl.restart = value_of(i, "--restart");
    } else if (!starts_with(a, "-") && a.find('=') != std::string::npos && a.find('/') < a.find('=')) {
      cl.overrides.push_back(a);
    } else {
      fail(ErrorKind::Usage, "unknown argument " + jetmoe::quoted(a) +
                                 (starts_with(a, "-") ? "" : " (deck overrides are written block/key=value)"));
    }
  }
  if (cl.restart && cl.restart->empty()) fail(ErrorKind::Usage, "-r needs a checkpoint file");
  if (cl.deck_path && cl.deck_path->empty()) fail(ErrorKind::Usage, "-i needs a deck file");
  return cl;
}

std::string usage_text(const AppSpec& spec) {
  std::string s = "Usage: " + spec.name + " -i DECK" + (spec.takes_restart ? " [-r CHECKPOINT]" : "") +
                  " [block/key=value ...]\n\n" + spec.summary + "\n\n" +
                  "Options:\n"
                  "  -i, --input DECK      input deck (see docs/deck-reference.md)\n";
  if (spec.takes_restart) s += "  -r, --restart FILE    continue from this checkpoint\n";
  s += "  block/key=value       override a deck value (repeatable)\n"
       "  --check               validate the deck, print the effective deck, stop\n"
       "  --deck-reference      print the reference of every deck block and key (Markdown)\n"
       "  -V, --version         print the version and how this binary was built\n"
       "  -h, --help            this text\n"
       "  --kokkos-*            passed to Kokkos (threads: --kokkos-num-threads=N with Kokkos 4,\n"
       "                        --kokkos-threads=N with Kokkos 3)\n\n"
       "Deck blocks read:";
  for (const auto& b : spec.blocks) s += " <" + b + ">";
  s += "\nExit status: 0 success, 1 runtime error, 2 command-line or deck error.\n";
  if (!spec.help_extra.empty()) s += "\n" + spec.help_extra + "\n";
  return s;
}

namespace {

// The message of the lowest failing rank is printed; every rank returns the same status.
int agree_on_failure(const Comm& comm, int my_status, const std::string& my_message, const std::string& app) {
  const int status = comm.max(my_status);
  if (status == 0) return 0;
  const int reporter = comm.min(my_status != 0 ? comm.rank() : comm.size());
  if (comm.rank() == reporter) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s: error: %s\n", app.c_str(), escape_control(my_message).c_str());
    std::fflush(stderr);
  }
  return status;
}

}  // namespace

int run_app(int argc, char** argv, const AppSpec& spec, const AppBody& body) {
  CommandLine cl;
  try {
    cl = parse_command_line(std::vector<std::string>(argv + 1, argv + argc), spec);
  } catch (const Error& e) {
    std::fprintf(stderr, "%s: error: %s\nTry '%s --help'.\n", spec.name.c_str(), escape_control(e.what()).c_str(),
                 spec.name.c_str());
    return e.exit_code();
  }
  if (cl.help) {
    std::fputs(usage_text(spec).c_str(), stdout);
    return 0;
  }
  if (cl.version) {
    MpiSession mpi(&argc, &argv);  // some MPI libraries report their version only once initialised
    if (Comm::world().is_root()) std::fputs(version_report(spec.name).c_str(), stdout);
    return 0;
  }
  if (cl.deck_reference) {
    std::fputs(DeckSchema::standard().markdown_reference().c_str(), stdout);
    return 0;
  }
  if (!cl.deck_path) {
    std::fprintf(stderr, "%s: error: no input deck: give one with -i DECK\nTry '%s --help'.\n", spec.name.c_str(),
                 spec.name.c_str());
    return 2;
  }

  // A file-size limit (ulimit -f) would kill the process with SIGXFSZ in the middle of a write;
  // ignored, the write fails with EFBIG and is reported like a full disk, naming the file.
  std::signal(SIGXFSZ, SIG_IGN);
  MpiSession mpi(&argc, &argv);
  const Comm comm = Comm::world();

  // Every rank reads the deck; they agree on failure before anything else happens.
  std::unique_ptr<Deck> deck;
  {
    int status = 0;
    std::string message;
    try {
      deck = std::make_unique<Deck>(Deck::from_file(*cl.deck_path));
      for (const auto& o : cl.overrides) deck->apply_override(o);
      for (const auto& b : spec.blocks) deck->use_block(b);
      deck->get_string("job", "log_level");
    } catch (const Error& e) {
      status = e.exit_code();
      message = e.what();
    }
    if (const int s = agree_on_failure(comm, status, message, spec.name); s != 0) return s;
  }

  Kokkos::ScopeGuard kokkos(argc, argv);
  log::configure(comm.rank(), comm.size(), parse_log_level(deck->get_string("job", "log_level")));
  log::info("%s on %d rank(s): %s", spec.name.c_str(), comm.size(), build_summary().c_str());
  log::info("Kokkos default execution space: %s", Kokkos::DefaultExecutionSpace::name());
  log::info("deck %s%s", cl.deck_path->c_str(), cl.overrides.empty() ? "" : " with command-line overrides");
  log::text(deck->effective_text(spec.name + " " + *cl.deck_path));
  // A deck may hold blocks for other applications; an override of one is most likely a mistake.
  for (const auto& o : cl.overrides) {
    const std::string block = trim(std::string_view(o).substr(0, o.find('/')));
    if (std::find(spec.blocks.begin(), spec.blocks.end(), block) == spec.blocks.end()) {
      std::string reads;
      for (const auto& b : spec.blocks) reads += " <" + b + ">";
      log::warn("command line argument %s has no effect: %s does not read block <%s> (it reads%s)", jetmoe::quoted(o).c_str(),
                spec.name.c_str(), block.c_str(), reads.c_str());
    }
  }

  int status = 0;
  std::string message;
  bool collective = false;
  try {
    Region region(spec.name);
    AppContext ctx{spec, cl, *deck, comm};
    body(ctx);
  } catch (const CollectiveError& e) {  // every rank has it: report once, no abort needed
    status = e.exit_code();
    message = e.what();
    collective = true;
  } catch (const Error& e) {
    status = e.exit_code();
    message = e.what();
  } catch (const std::exception& e) {
    status = 1;
    message = describe_unexpected(e);
  }
  if (collective) return agree_on_failure(comm, status, message, spec.name);
  if (status != 0) {
    // A failure on one rank must not leave the others waiting in a collective: end them all.
    std::fflush(stdout);
    std::fprintf(stderr, "%s: error: %s%s\n", spec.name.c_str(),
                 comm.size() > 1 ? ("[rank " + std::to_string(comm.rank()) + "] ").c_str() : "",
                 escape_control(message).c_str());
    std::fflush(stderr);
    if (comm.size() > 1) comm.abort(status);
    return status;
  }
  const double wall = log::elapsed_seconds();
  const std::string table = phases::table(comm, wall);
  log::info("time by phase:");
  log::text(table);
  return 0;
}

}  // namespace jetmoe
