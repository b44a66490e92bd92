#pragma once
// Small text helpers shared by the deck reader and the command-line parsers.
#include <string>
#include <string_view>
#include <vector>

namespace jetmoe {

std::string trim(std::string_view s);
std::string to_lower(std::string_view s);
bool starts_with(std::string_view s, std::string_view prefix);
// Levenshtein distance, for "did you mean" suggestions.
std::size_t edit_distance(std::string_view a, std::string_view b);
// The closest candidate to `word` if it is plausibly a typo of it, else "".
std::string closest_match(std::string_view word, const std::vector<std::string>& candidates);
// "a, b or c"
std::string join_alternatives(const std::vector<std::string>& items);
// Control characters escaped (\n, \r, \t, \xNN), so that a message stays on one line whatever a file
// holds; other bytes (UTF-8 included) as they are.
std::string escape_control(std::string_view s);
// Human-readable quoting of a user's text in error messages: 'text', escaped as above.
std::string quoted(std::string_view s);

}  // namespace jetmoe
