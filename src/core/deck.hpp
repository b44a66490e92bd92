#pragma once
// Input decks in the Athena++/Parthenon style:
//
//   <optimizer>            # a block header
//   lr = 5e-4              # key = value, comments after '#'
//   name = "run #1"        # double quotes keep spaces and '#'
//
// plus command-line overrides `optimizer/lr=3e-4`. Every key is declared in a DeckSchema with its type,
// default, range and meaning (deck_schema.cpp holds the application's schema; docs/deck-reference.md
// is generated from it). Parsing is strict: an unknown block or key, a wrong type, an out-of-range
// value, a duplicate key or a malformed line throws one jetmoe::Error(ErrorKind::Deck) that names
// file:line, the key, what was expected and what was found. Getters record what the run reads, so
// effective_text() is the complete deck that the run used, defaults included.
#include <cstdint>
#include <deque>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace jetmoe {

enum class ParamType {
  Int,         // 64-bit integer; '_' separators and integral scientific notation (1.5e6) accepted
  Real,        // finite double
  Bool,        // true/false, yes/no, on/off, 1/0
  String,      // free text
  Choice,      // one of a fixed set of words
  Path,        // a file or directory; existence is checked by the code that opens it
  StringList,  // comma-separated words
  WeightList,  // comma-separated name:weight pairs, weights finite and >= 0, not all zero
};
const char* type_name(ParamType t);

struct ParamSpec {
  std::string block;
  std::string key;
  ParamType type = ParamType::String;
  std::optional<std::string> default_text;  // nullopt: no default (required, or derived elsewhere)
  std::string unset_meaning;                // what an unset key without default means
  std::optional<double> min, max;
  bool min_exclusive = false, max_exclusive = false;
  std::vector<std::string> choices;
  std::string doc;

  // Fluent constraints, used while building a schema.
  ParamSpec& at_least(double v) { min = v; min_exclusive = false; return *this; }
  ParamSpec& greater_than(double v) { min = v; min_exclusive = true; return *this; }
  ParamSpec& at_most(double v) { max = v; max_exclusive = false; return *this; }
  ParamSpec& less_than(double v) { max = v; max_exclusive = true; return *this; }
  ParamSpec& unset_means(std::string meaning) { unset_meaning = std::move(meaning); return *this; }

  std::string range_text() const;  // "> 0", "in [0, 1)", "" when unconstrained
  std::string full_name() const { return "<" + block + ">/" + key; }
};

struct BlockSpec {
  std::string name;
  std::string doc;
  std::vector<std::string> used_by;  // applications that read this block
  std::deque<ParamSpec> params;      // deque: references stay valid while the schema is built

  const ParamSpec* find(std::string_view key) const;
  std::vector<std::string> key_names() const;

  // Builders; each returns the new spec for fluent constraints.
  ParamSpec& integer(const std::string& key, std::optional<std::int64_t> def, const std::string& doc);
  ParamSpec& real(const std::string& key, std::optional<double> def, const std::string& doc);
  ParamSpec& boolean(const std::string& key, std::optional<bool> def, const std::string& doc);
  ParamSpec& string(const std::string& key, std::optional<std::string> def, const std::string& doc);
  ParamSpec& path(const std::string& key, std::optional<std::string> def, const std::string& doc);
  ParamSpec& choice(const std::string& key, std::optional<std::string> def,
                    std::vector<std::string> choices, const std::string& doc);
  ParamSpec& string_list(const std::string& key, std::optional<std::string> def, const std::string& doc);
  ParamSpec& weight_list(const std::string& key, std::optional<std::string> def, const std::string& doc);

 private:
  ParamSpec& add(const std::string& key, ParamType type, std::optional<std::string> def,
                 const std::string& doc);
};

class DeckSchema {
 public:
  BlockSpec& block(const std::string& name, const std::string& doc, std::vector<std::string> used_by);
  const BlockSpec* find_block(std::string_view name) const;
  std::vector<std::string> block_names() const;
  const std::deque<BlockSpec>& blocks() const { return blocks_; }
  // The deck reference (docs/deck-reference.md is this text).
  std::string markdown_reference() const;

  // The application's schema: every block and key jetmoe understands.
  static const DeckSchema& standard();

 private:
  std::deque<BlockSpec> blocks_;
};

using WeightList = std::vector<std::pair<std::string, double>>;
using DeckValue = std::variant<std::int64_t, double, bool, std::string, std::vector<std::string>, WeightList>;

// Converts a value's text to its typed value, or throws ErrorKind::Deck naming `where` and the key.
DeckValue parse_deck_value(const ParamSpec& spec, std::string_view text, const std::string& where);
// Writes a typed value back as deck text that parse_deck_value reads to the same value.
std::string format_deck_value(const ParamSpec& spec, const DeckValue& value);

class Deck {
 public:
  explicit Deck(const DeckSchema& schema = DeckSchema::standard());

  static Deck from_file(const std::string& path, const DeckSchema& schema = DeckSchema::standard());
  static Deck from_text(std::string_view text, const std::string& origin,
                        const DeckSchema& schema = DeckSchema::standard());

  // `block/key=value` from the command line; replaces what the deck file set.
  void apply_override(std::string_view argument);
  // Sets a value from text, validated as if it had been read at `origin`.
  void set(const std::string& block, const std::string& key, std::string_view text,
           const std::string& origin);

  // Typed getters. A key without a value and without default is a Deck error ("required key ... is
  // not set"); a getter of the wrong type or for an undeclared key is an internal error.
  std::int64_t get_int(const std::string& block, const std::string& key) const;
  double get_real(const std::string& block, const std::string& key) const;
  bool get_bool(const std::string& block, const std::string& key) const;
  std::string get_string(const std::string& block, const std::string& key) const;  // String/Choice/Path
  std::vector<std::string> get_list(const std::string& block, const std::string& key) const;
  WeightList get_weights(const std::string& block, const std::string& key) const;
  // For keys without default: nullopt when unset.
  std::optional<std::int64_t> find_int(const std::string& block, const std::string& key) const;
  std::optional<double> find_real(const std::string& block, const std::string& key) const;
  std::optional<bool> find_bool(const std::string& block, const std::string& key) const;
  std::optional<std::string> find_string(const std::string& block, const std::string& key) const;

  bool is_set(const std::string& block, const std::string& key) const;
  // Where a value came from: "FILE:LINE", "command line" or "default".
  std::string origin(const std::string& block, const std::string& key) const;
  // Throws ErrorKind::Deck for a value that is valid alone but wrong in context (cross-key checks,
  // missing files): "FILE:LINE: <block>/key: message".
  [[noreturn]] void fail_value(const std::string& block, const std::string& key,
                               const std::string& message) const;
  // "FILE:LINE: <block>/key", or the deck and the default a key it does not set took: the subject of
  // messages about a key's value that are not deck errors (an output directory that cannot be made).
  std::string describe_key(const std::string& block, const std::string& key) const;

  // A path key's value checked against the file system: nullopt when unset (no value, no default);
  // otherwise it must exist and be a regular file (File), a directory (Directory) or either (Any), else
  // a Deck error naming the key ("'x' does not exist", "'x' is a directory, expected a file", ...).
  enum class PathKind { File, Directory, Any };
  std::optional<std::string> find_existing(const std::string& block, const std::string& key, PathKind kind) const;

  // Marks every key of a block as in use, so the effective deck lists it with its default.
  void use_block(const std::string& block);
  // The complete deck the run used: every key set or read or in a used block, each with its origin.
  std::string effective_text(const std::string& header_comment = "") const;

  const std::string& source() const { return source_; }
  const DeckSchema& schema() const { return *schema_; }

 private:
  struct Entry {
    DeckValue value;
    std::string origin;  // "FILE:LINE" or "command line"
  };
  using Key = std::pair<std::string, std::string>;

  const ParamSpec& spec_or_bug(const std::string& block, const std::string& key) const;
  const ParamSpec& spec_or_deck_error(std::string_view block, std::string_view key,
                                      const std::string& where) const;
  const DeckValue* lookup(const ParamSpec& spec) const;  // value or default; nullptr when neither
  void parse_text(std::string_view text, const std::string& origin);

  const DeckSchema* schema_;
  std::string source_;
  std::map<Key, Entry> entries_;
  std::set<std::string> used_blocks_;
  mutable std::set<Key> read_;
  mutable std::map<Key, DeckValue> defaults_;  // parsed defaults, cached
};

}  // namespace jetmoe
