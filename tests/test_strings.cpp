#include <catch2/catch.hpp>

#include "core/strings.hpp"

TEST_CASE("edit distance and did-you-mean", "[unit][strings]") {
  using jetmoe::closest_match;
  using jetmoe::edit_distance;
  CHECK(edit_distance("kitten", "sitting") == 3);
  CHECK(edit_distance("", "abc") == 3);
  CHECK(edit_distance("lr", "lr") == 0);
  CHECK(edit_distance("LR", "lr") == 0);
  const std::vector<std::string> keys{"lr", "beta1", "beta2", "weight_decay", "grad_clip"};
  CHECK(closest_match("weight_decya", keys) == "weight_decay");
  CHECK(closest_match("betaa2", keys) == "beta2");
  CHECK(closest_match("grad_clip_norm", keys) == "grad_clip");  // prefix
  CHECK(closest_match("temperature", keys).empty());
  CHECK(jetmoe::join_alternatives({"a", "b", "c"}) == "a, b or c");
  CHECK(jetmoe::trim("  x y \t\n") == "x y");
}

TEST_CASE("quoted keeps a message on one line", "[unit][strings]") {
  using jetmoe::quoted;
  CHECK(quoted("model.norm.weight") == "'model.norm.weight'");
  CHECK(quoted("") == "''");
  CHECK(quoted("a\nb\r\tc") == "'a\\nb\\r\\tc'");
  CHECK(quoted(std::string("\0\x1f\x7f", 3)) == "'\\x00\\x1f\\x7f'");
  CHECK(quoted("h\xc3\xa9llo \xe2\x96\x81") == "'h\xc3\xa9llo \xe2\x96\x81'");  // UTF-8 as it is
}

TEST_CASE("escape_control", "[unit][strings]") {
  CHECK(jetmoe::escape_control("byte piece \n<0x0A>\t") == "byte piece \\n<0x0A>\\t");
  CHECK(jetmoe::escape_control("plain") == "plain");
}
