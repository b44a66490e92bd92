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
