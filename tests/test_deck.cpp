#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "core/deck.hpp"
#include "core/error.hpp"
#include "support.hpp"

using jetmoe::Deck;
using jetmoe::DeckSchema;
using jetmoe::Error;
using jetmoe::ErrorKind;
using Catch::Matchers::Contains;

namespace {

// A schema of its own, so these tests do not move with the application's.
const DeckSchema& test_schema() {
  static const DeckSchema s = [] {
    DeckSchema t;
    auto& opt = t.block("opt", "Optimizer.", {"test"});
    opt.real("lr", 1e-3, "Learning rate.").greater_than(0);
    opt.real("beta2", 0.95, "beta2.").at_least(0).less_than(1);
    opt.integer("steps", 10, "Steps.").at_least(1);
    opt.boolean("fused", false, "Fused.");
    opt.choice("kind", "adamw", {"adamw", "sgd", "lion"}, "Kind.");
    auto& job = t.block("job", "Job.", {"test"});
    job.string("name", "run", "Name.");
    job.path("dir", std::nullopt, "Directory.").unset_means("the current directory.");
    job.integer("count", std::nullopt, "Required count.");
    job.string_list("tags", "a, b", "Tags.");
    job.weight_list("mix", std::nullopt, "Mixture.").unset_means("uniform.");
    return t;
  }();
  return s;
}

Deck parse(const std::string& text) { return Deck::from_text(text, "t.deck", test_schema()); }

template <class F>
std::string error_of(F&& f, ErrorKind kind = ErrorKind::Deck) {
  return jetmoe::testing::error_of(std::forward<F>(f), kind);
}

}  // namespace

TEST_CASE("deck parses blocks, values, comments and quotes", "[unit][deck]") {
  const Deck d = parse(
      "# leading comment\n"
      "<opt>   # block comment\n"
      "  lr = 3e-4    # trailing\n"
      "steps = 1_000\n"
      "fused = yes\n"
      "kind = sgd\r\n"
      "\n"
      "<job>\n"
      "name = \"my run # 1\"  # the quotes keep '#'\n"
      "count = 2.5e3\n"
      "tags = x,  y ,z\n"
      "mix = web:0.7, code:0.3\n");
  CHECK(d.get_real("opt", "lr") == 3e-4);
  CHECK(d.get_int("opt", "steps") == 1000);
  CHECK(d.get_bool("opt", "fused"));
  CHECK(d.get_string("opt", "kind") == "sgd");
  CHECK(d.get_real("opt", "beta2") == 0.95);  // default
  CHECK(d.get_string("job", "name") == "my run # 1");
  CHECK(d.get_int("job", "count") == 2500);
  CHECK(d.get_list("job", "tags") == std::vector<std::string>{"x", "y", "z"});
  const auto mix = d.get_weights("job", "mix");
  REQUIRE(mix.size() == 2);
  CHECK(mix[0].first == "web");
  CHECK(mix[1].second == 0.3);
  CHECK_FALSE(d.find_string("job", "dir"));
  CHECK(d.origin("opt", "lr") == "t.deck:3");
  CHECK(d.origin("opt", "beta2") == "default");
}

TEST_CASE("deck booleans accept the usual spellings", "[unit][deck]") {
  for (const char* t : {"true", "TRUE", "yes", "on", "1"}) CHECK(parse(std::string("<opt>\nfused = ") + t).get_bool("opt", "fused"));
  for (const char* f : {"false", "No", "off", "0"}) CHECK_FALSE(parse(std::string("<opt>\nfused = ") + f).get_bool("opt", "fused"));
  CHECK_THAT(error_of([] { parse("<opt>\nfused = maybe"); }), Contains("expected true or false, found 'maybe'"));
}

TEST_CASE("deck errors name file, line, key, expected and found", "[unit][deck]") {
  CHECK_THAT(error_of([] { parse("<opt>\nlr = 1\n<jbo>\n"); }), Contains("t.deck:3: unknown block <jbo>; did you mean <job>?"));
  CHECK_THAT(error_of([] { parse("<zzzzzz>\n"); }), Contains("unknown block <zzzzzz>; known blocks: opt or job"));
  CHECK_THAT(error_of([] { parse("<opt>\nsteps = 3\nstesp = 4\n"); }),
             Contains("t.deck:3: unknown key 'stesp' in block <opt>; did you mean 'steps'?"));
  CHECK_THAT(error_of([] { parse("<opt>\nname = x\n"); }),
             Contains("t.deck:2: unknown key 'name' in block <opt>; 'name' belongs in block <job>"));
  CHECK_THAT(error_of([] { parse("<opt>\nsteps = 2.5\n"); }), Contains("t.deck:2: <opt>/steps: expected an integer, found '2.5'"));
  CHECK_THAT(error_of([] { parse("<opt>\nsteps = 99999999999999999999\n"); }), Contains("expected an integer"));
  CHECK_THAT(error_of([] { parse("<opt>\nlr = nan\n"); }), Contains("<opt>/lr: expected a finite real number, found 'nan'"));
  CHECK_THAT(error_of([] { parse("<opt>\nlr = 1e999\n"); }), Contains("expected a finite real number"));
  CHECK_THAT(error_of([] { parse("<opt>\nlr = 0\n"); }), Contains("t.deck:2: <opt>/lr: value 0 is out of range: expected > 0"));
  CHECK_THAT(error_of([] { parse("<opt>\nbeta2 = 1\n"); }), Contains("value 1 is out of range: expected in [0, 1)"));
  CHECK_THAT(error_of([] { parse("<opt>\nsteps = 0\n"); }), Contains("value 0 is out of range: expected >= 1"));
  CHECK_THAT(error_of([] { parse("<opt>\nkind = adam\n"); }),
             Contains("<opt>/kind: expected one of adamw, sgd or lion, found 'adam'; did you mean 'adamw'?"));
  CHECK_THAT(error_of([] { parse("<opt>\nlr = 1\nsteps = 2\nlr = 3\n"); }),
             Contains("t.deck:4: duplicate key <opt>/lr (first set at line 2)"));
  CHECK_THAT(error_of([] { parse("<opt>\n<job>\n<opt>\n"); }), Contains("t.deck:3: block <opt> appears twice (first at line 1)"));
  CHECK_THAT(error_of([] { parse("<opt>\nlr\n"); }), Contains("t.deck:2: expected 'key = value', '<block>' or a comment, found 'lr'"));
  CHECK_THAT(error_of([] { parse("<opt\n"); }), Contains("t.deck:1: malformed block header '<opt': expected <name>"));
  CHECK_THAT(error_of([] { parse("<>\n"); }), Contains("malformed block header"));
  CHECK_THAT(error_of([] { parse("lr = 1\n"); }), Contains("t.deck:1: key 'lr' appears before any <block> header"));
  CHECK_THAT(error_of([] { parse("<opt>\nlr =\n"); }), Contains("t.deck:2: <opt>/lr: no value after '='"));
  CHECK_THAT(error_of([] { parse("<job>\nname = \"abc\n"); }), Contains("t.deck:2: unterminated double-quoted value"));
  CHECK_THAT(error_of([] { parse("<job>\nname = \"abc\" def\n"); }), Contains("unexpected text after the closing quote"));
  CHECK_THAT(error_of([] { parse("<job>\nmix = web:0.5, web:0.5\n"); }), Contains("source 'web' appears twice"));
  CHECK_THAT(error_of([] { parse("<job>\nmix = web:-1\n"); }), Contains("expected name:weight pairs"));
  CHECK_THAT(error_of([] { parse("<job>\nmix = web:0, code:0\n"); }), Contains("weights are all zero"));
  CHECK_THAT(error_of([] { parse("<job>\ntags = a,,b\n"); }), Contains("expected a comma-separated list"));
}

TEST_CASE("deck: a missing file is one error naming it", "[unit][deck]") {
  CHECK_THAT(error_of([] { Deck::from_file("/nonexistent/x.deck", test_schema()); }),
             Contains("cannot open deck '/nonexistent/x.deck': No such file or directory"));
  // A directory opens as a stream and reads as nothing: it must not pass as an empty deck.
  const std::string dir = std::filesystem::temp_directory_path().string();
  CHECK_THAT(error_of([&] { Deck::from_file(dir, test_schema()); }),
             Contains("cannot open deck '" + dir + "': it is a directory, expected a deck file"));
}

TEST_CASE("deck overrides replace values and are validated", "[unit][deck]") {
  Deck d = parse("<opt>\nlr = 1e-3\n");
  d.apply_override("opt/lr=5e-4");
  d.apply_override("job/name=from cli # not a comment");
  CHECK(d.get_real("opt", "lr") == 5e-4);
  CHECK(d.origin("opt", "lr") == "command line");
  CHECK(d.get_string("job", "name") == "from cli # not a comment");
  CHECK_THAT(error_of([&] { d.apply_override("opt/lr=2"); }), Contains("<opt>/lr is overridden twice on the command line"));
  CHECK_THAT(error_of([&] { d.apply_override("opt.lr=2"); }), Contains("expected block/key=value"));
  CHECK_THAT(error_of([&] { d.apply_override("opt/lr"); }), Contains("expected block/key=value"));
  CHECK_THAT(error_of([&] { d.apply_override("opt/steps=-4"); }),
             Contains("command line argument 'opt/steps=-4': <opt>/steps: value -4 is out of range: expected >= 1"));
}

TEST_CASE("deck: required keys and consumer checks name the key", "[unit][deck]") {
  const Deck d = parse("<opt>\nsteps = 5\n");
  CHECK_THAT(error_of([&] { d.get_int("job", "count"); }), Contains("required key <job>/count is not set"));
  CHECK_THAT(error_of([&] { d.fail_value("opt", "steps", "too few for warmup"); }),
             Contains("t.deck:2: <opt>/steps: too few for warmup"));
  CHECK_THAT(error_of([&] { d.fail_value("opt", "lr", "bad"); }), Contains("t.deck (not set: default 0.001): <opt>/lr: bad"));
  CHECK_THAT(error_of([&] { d.fail_value("job", "count", "needed here"); }), Contains("t.deck (not set): <job>/count: needed here"));
  // A path key checked against the file system.
  const std::string here = std::filesystem::temp_directory_path().string();
  const Deck paths = parse("<job>\ndir = " + here + "\n");
  CHECK_THAT(error_of([&] { paths.find_existing("job", "dir", Deck::PathKind::File); }),
             Contains("t.deck:2: <job>/dir: '" + here + "' is a directory, expected a file"));
  CHECK(paths.find_existing("job", "dir", Deck::PathKind::Directory) == here);
  CHECK(paths.find_existing("job", "dir", Deck::PathKind::Any) == here);
  const Deck missing = parse("<job>\ndir = /no/such/file.txt\n");
  CHECK_THAT(error_of([&] { missing.find_existing("job", "dir", Deck::PathKind::Any); }),
             Contains("t.deck:2: <job>/dir: '/no/such/file.txt' does not exist"));
  // Reading an undeclared key or with the wrong type is a bug in our code, not a deck error.
  CHECK_THAT(error_of([&] { d.get_int("opt", "nope"); }, ErrorKind::Internal), Contains("does not declare"));
  CHECK_THAT(error_of([&] { d.get_int("opt", "lr"); }, ErrorKind::Internal), Contains("wrong type"));
}

TEST_CASE("effective deck is complete and reads back to the same values", "[unit][deck]") {
  Deck d = parse("<opt>\nlr = 0.1\n<job>\nname = \"a \\\"quoted\\\" # name\"\nmix = a:1, b:2.5\n");
  d.use_block("opt");
  d.get_list("job", "tags");  // read: appears with its default
  const std::string text = d.effective_text("test");
  CHECK_THAT(text, Contains("lr = 0.1  # t.deck:2"));
  CHECK_THAT(text, Contains("steps = 10  # default"));
  CHECK_THAT(text, Contains("tags = a, b  # default"));
  CHECK_THAT(text, Contains("kind = adamw  # default"));
  const Deck back = Deck::from_text(text, "effective", test_schema());
  CHECK(back.get_real("opt", "lr") == 0.1);
  CHECK(back.get_int("opt", "steps") == 10);
  CHECK(back.get_string("job", "name") == "a \"quoted\" # name");
  CHECK(back.get_weights("job", "mix") == d.get_weights("job", "mix"));
  CHECK(back.get_list("job", "tags") == std::vector<std::string>{"a", "b"});
}

TEST_CASE("the application's schema: every default is valid and every key documented", "[unit][deck]") {
  const DeckSchema& s = DeckSchema::standard();
  Deck d(s);
  for (const auto& b : s.blocks()) {
    CHECK_FALSE(b.doc.empty());
    CHECK_FALSE(b.used_by.empty());
    for (const auto& p : b.params) {
      INFO(p.full_name());
      CHECK_FALSE(p.doc.empty());
      if (p.default_text) CHECK_NOTHROW(jetmoe::parse_deck_value(p, *p.default_text, "default"));
      if (p.type == jetmoe::ParamType::Choice) CHECK(!p.choices.empty());
    }
  }
  // Shipped decks parse against it.
  for (const char* deck : {"/inputs/tiny.deck", "/inputs/jetmoe-8b.deck", "/inputs/jetmoe-8b-sft.deck", "/inputs/jetmoe-8b-dpo.deck",
                           "/inputs/jetmoe-8b-generate.deck", "/inputs/jetmoe-8b-eval.deck", "/inputs/convert.deck",
                           "/inputs/prepare-tiny.deck"}) {
    INFO(deck);
    CHECK_NOTHROW(Deck::from_file(std::string(JETMOE_SOURCE_DIR) + deck));
  }
}
