#include <catch2/catch.hpp>

#include "core/app.hpp"
#include "core/error.hpp"

using jetmoe::AppSpec;
using jetmoe::parse_command_line;
using Catch::Matchers::Contains;

namespace {
const AppSpec train{"jetmoe-train", "Train.", {"job"}, true, ""};
const AppSpec gen{"jetmoe-generate", "Generate.", {"job"}, false, ""};

std::string usage_error(const AppSpec& spec, std::vector<std::string> args) {
  try {
    parse_command_line(args, spec);
  } catch (const jetmoe::Error& e) {
    CHECK(e.exit_code() == 2);
    return e.what();
  }
  FAIL("no usage error");
  return "";
}
}  // namespace

TEST_CASE("command line: deck, restart, overrides; Kokkos flags skipped", "[unit][app]") {
  const auto cl = parse_command_line({"--kokkos-num-threads=2", "-i", "a.deck", "optimizer/lr=1e-3", "-r", "c.h5",
                                      "--kokkos-threads=2", "job/name=x=y", "--check"},
                                     train);
  CHECK(*cl.deck_path == "a.deck");
  CHECK(*cl.restart == "c.h5");
  CHECK(cl.overrides == std::vector<std::string>{"optimizer/lr=1e-3", "job/name=x=y"});
  CHECK(cl.check_only);
  CHECK_FALSE(cl.help);
  const auto long_form = parse_command_line({"--input=b.deck", "--restart=d.h5"}, train);
  CHECK(*long_form.deck_path == "b.deck");
  CHECK(*long_form.restart == "d.h5");
  CHECK(parse_command_line({"--help"}, gen).help);
  CHECK(parse_command_line({"-V"}, gen).version);
}

TEST_CASE("command line errors are usage errors", "[unit][app]") {
  CHECK_THAT(usage_error(train, {"--bogus"}), Contains("unknown argument '--bogus'"));
  CHECK_THAT(usage_error(train, {"lr=3"}), Contains("deck overrides are written block/key=value"));
  CHECK_THAT(usage_error(train, {"-i"}), Contains("option -i needs a value"));
  CHECK_THAT(usage_error(train, {"-i", "a", "-i", "b"}), Contains("more than one input deck"));
  CHECK_THAT(usage_error(gen, {"-r", "x.h5"}), Contains("jetmoe-generate does not restart"));
}

TEST_CASE("usage text lists options and deck blocks", "[unit][app]") {
  const std::string u = jetmoe::usage_text(train);
  CHECK_THAT(u, Contains("Usage: jetmoe-train -i DECK [-r CHECKPOINT]"));
  CHECK_THAT(u, Contains("Deck blocks read: <job>"));
  CHECK_THAT(jetmoe::usage_text(gen), !Contains("--restart"));
}
