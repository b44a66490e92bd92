#include "core/deck.hpp"

#include <sys/stat.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include "core/error.hpp"
#include "core/strings.hpp"

namespace jetmoe {

namespace {

[[noreturn]] void deck_error(const std::string& where, const std::string& message) {
  fail(ErrorKind::Deck, (where.empty() ? std::string() : where + ": ") + message);
}

bool is_name_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.';
}

bool is_name(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (!is_name_char(c)) return false;
  return true;
}

// Shortest text that reads back to exactly the same double.
std::string format_real(double v) {
  char buf[64];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  return buf;
}

std::optional<double> parse_real_text(const std::string& t) {
  if (t.empty()) return std::nullopt;
  const char* begin = t.c_str();
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(begin, &end);
  if (end == begin || *end != '\0' || errno == ERANGE || !std::isfinite(v)) return std::nullopt;
  return v;
}

std::optional<std::int64_t> parse_int_text(std::string t) {
  // '_' as a digit separator: 4_194_304.
  std::string digits;
  for (std::size_t i = 0; i < t.size(); ++i) {
    if (t[i] == '_') {
      if (i == 0 || i + 1 == t.size() || !std::isdigit(static_cast<unsigned char>(t[i - 1])) ||
          !std::isdigit(static_cast<unsigned char>(t[i + 1])))
        return std::nullopt;
      continue;
    }
    digits += t[i];
  }
  if (digits.empty()) return std::nullopt;
  const char* begin = digits.c_str();
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(begin, &end, 10);
  if (end != begin && *end == '\0') {
    if (errno == ERANGE) return std::nullopt;
    return static_cast<std::int64_t>(v);
  }
  // Integral scientific notation (1.25e12 tokens) is an integer too.
  const auto r = parse_real_text(digits);
  if (!r || std::floor(*r) != *r || std::fabs(*r) > 9.007199254740992e15) return std::nullopt;
  return static_cast<std::int64_t>(*r);
}

std::optional<bool> parse_bool_text(const std::string& t) {
  const std::string l = to_lower(t);
  if (l == "true" || l == "yes" || l == "on" || l == "1") return true;
  if (l == "false" || l == "no" || l == "off" || l == "0") return false;
  return std::nullopt;
}

std::vector<std::string> split_list(std::string_view text) {
  std::vector<std::string> items;
  std::size_t start = 0;
  while (true) {
    const std::size_t comma = text.find(',', start);
    items.push_back(trim(text.substr(start, comma == std::string_view::npos ? std::string_view::npos
                                                                            : comma - start)));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return items;
}

bool needs_quotes(const std::string& s) {
  if (s.empty()) return true;
  if (std::isspace(static_cast<unsigned char>(s.front())) ||
      std::isspace(static_cast<unsigned char>(s.back())))
    return true;
  return s.find_first_of("#\"\\\n\t") != std::string::npos;
}

std::string quote_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\', out += c;
    else if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else out += c;
  }
  return out + "\"";
}

void check_range(const ParamSpec& spec, double v, const std::string& shown, const std::string& where) {
  const bool low = spec.min && (spec.min_exclusive ? !(v > *spec.min) : !(v >= *spec.min));
  const bool high = spec.max && (spec.max_exclusive ? !(v < *spec.max) : !(v <= *spec.max));
  if (low || high)
    deck_error(where, spec.full_name() + ": value " + shown + " is out of range: expected " +
                          spec.range_text());
}

}  // namespace

const char* type_name(ParamType t) {
  switch (t) {
    case ParamType::Int: return "integer";
    case ParamType::Real: return "real";
    case ParamType::Bool: return "bool";
    case ParamType::String: return "string";
    case ParamType::Choice: return "choice";
    case ParamType::Path: return "path";
    case ParamType::StringList: return "list";
    case ParamType::WeightList: return "weights";
  }
  return "?";
}

std::string ParamSpec::range_text() const {
  auto num = [&](double v) { return type == ParamType::Int ? std::to_string(std::int64_t(v)) : format_real(v); };
  if (min && max)
    return std::string("in ") + (min_exclusive ? "(" : "[") + num(*min) + ", " + num(*max) +
           (max_exclusive ? ")" : "]");
  if (min) return std::string(min_exclusive ? "> " : ">= ") + num(*min);
  if (max) return std::string(max_exclusive ? "< " : "<= ") + num(*max);
  return "";
}

// ---- schema -------------------------------------------------------------------------------------

const ParamSpec* BlockSpec::find(std::string_view key) const {
  for (const auto& p : params)
    if (p.key == key) return &p;
  return nullptr;
}

std::vector<std::string> BlockSpec::key_names() const {
  std::vector<std::string> names;
  for (const auto& p : params) names.push_back(p.key);
  return names;
}

ParamSpec& BlockSpec::add(const std::string& key, ParamType type, std::optional<std::string> def,
                          const std::string& meaning) {
  if (find(key)) fail(ErrorKind::Internal, "deck schema declares <" + name + ">/" + key + " twice");
  ParamSpec& p = params.emplace_back();
  p.block = name;
  p.key = key;
  p.type = type;
  p.default_text = std::move(def);
  p.doc = meaning;
  return p;
}

ParamSpec& BlockSpec::integer(const std::string& key, std::optional<std::int64_t> def, const std::string& meaning) {
  return add(key, ParamType::Int, def ? std::optional<std::string>(std::to_string(*def)) : std::nullopt, meaning);
}
ParamSpec& BlockSpec::real(const std::string& key, std::optional<double> def, const std::string& meaning) {
  return add(key, ParamType::Real, def ? std::optional<std::string>(format_real(*def)) : std::nullopt, meaning);
}
ParamSpec& BlockSpec::boolean(const std::string& key, std::optional<bool> def, const std::string& meaning) {
  return add(key, ParamType::Bool,
             def ? std::optional<std::string>(*def ? "true" : "false") : std::nullopt, meaning);
}
ParamSpec& BlockSpec::string(const std::string& key, std::optional<std::string> def, const std::string& meaning) {
  return add(key, ParamType::String, std::move(def), meaning);
}
ParamSpec& BlockSpec::path(const std::string& key, std::optional<std::string> def, const std::string& meaning) {
  return add(key, ParamType::Path, std::move(def), meaning);
}
ParamSpec& BlockSpec::choice(const std::string& key, std::optional<std::string> def,
                             std::vector<std::string> choices, const std::string& meaning) {
  ParamSpec& p = add(key, ParamType::Choice, std::move(def), meaning);
  p.choices = std::move(choices);
  return p;
}
ParamSpec& BlockSpec::string_list(const std::string& key, std::optional<std::string> def, const std::string& meaning) {
  return add(key, ParamType::StringList, std::move(def), meaning);
}
ParamSpec& BlockSpec::weight_list(const std::string& key, std::optional<std::string> def, const std::string& meaning) {
  return add(key, ParamType::WeightList, std::move(def), meaning);
}

BlockSpec& DeckSchema::block(const std::string& name, const std::string& meaning, std::vector<std::string> used_by) {
  if (find_block(name)) fail(ErrorKind::Internal, "deck schema declares block <" + name + "> twice");
  BlockSpec& b = blocks_.emplace_back();
  b.name = name;
  b.doc = meaning;
  b.used_by = std::move(used_by);
  return b;
}

const BlockSpec* DeckSchema::find_block(std::string_view name) const {
  for (const auto& b : blocks_)
    if (b.name == name) return &b;
  return nullptr;
}

std::vector<std::string> DeckSchema::block_names() const {
  std::vector<std::string> names;
  for (const auto& b : blocks_) names.push_back(b.name);
  return names;
}

std::string DeckSchema::markdown_reference() const {
  std::ostringstream md;
  md << "# Deck reference\n\n"
     << "<!-- Generated by `jetmoe-train --deck-reference`; do not edit by hand. A test checks that this\n"
     << "     file matches the schema in src/core/deck_schema.cpp. -->\n\n"
     << "A deck is a text file of `<block>` headers and `key = value` lines; `#` starts a comment and\n"
     << "double quotes keep spaces and `#` in a value. Any key can be overridden on the command line as\n"
     << "`block/key=value`. Unknown blocks or keys, wrong types, out-of-range values, duplicate keys and\n"
     << "malformed lines are errors (exit status 2) naming the file, line and key.\n\n"
     << "Types: **integer** (`_` separators and integral scientific notation such as `1.25e12` allowed),\n"
     << "**real**, **bool** (`true/false`, `yes/no`, `on/off`, `1/0`), **string**, **choice** (one of the\n"
     << "listed words), **path**, **list** (comma-separated words), **weights** (comma-separated\n"
     << "`name:weight` pairs, weights >= 0 and not all zero).\n\n";
  for (const auto& b : blocks_) md << "- [`<" << b.name << ">`](#" << b.name << ")\n";
  for (const auto& b : blocks_) {
    md << "\n## <a id=\"" << b.name << "\"></a>`<" << b.name << ">`\n\n" << b.doc << "\n\n";
    if (!b.used_by.empty()) {
      md << "Read by:";
      for (const auto& app : b.used_by) md << " `" << app << "`";
      md << ".\n\n";
    }
    md << "| key | type | default | allowed | meaning |\n|---|---|---|---|---|\n";
    for (const auto& p : b.params) {
      std::string allowed = p.range_text();
      if (p.type == ParamType::Choice) {
        allowed.clear();
        for (std::size_t i = 0; i < p.choices.size(); ++i) allowed += (i ? ", `" : "`") + p.choices[i] + "`";
      }
      std::string def = p.default_text ? "`" + (p.default_text->empty() ? std::string("\"\"") : *p.default_text) + "`"
                                       : (p.unset_meaning.empty() ? "required" : "unset");
      std::string doc = p.doc;
      if (!p.default_text && !p.unset_meaning.empty()) doc += " Unset: " + p.unset_meaning;
      md << "| `" << p.key << "` | " << type_name(p.type) << " | " << def << " | " << allowed << " | " << doc
         << " |\n";
    }
  }
  return md.str();
}

// ---- values -------------------------------------------------------------------------------------

DeckValue parse_deck_value(const ParamSpec& spec, std::string_view raw, const std::string& where) {
  const std::string text(raw);
  const std::string name = spec.full_name();
  switch (spec.type) {
    case ParamType::Int: {
      const auto v = parse_int_text(trim(text));
      if (!v) deck_error(where, name + ": expected an integer, found " + quoted(text));
      check_range(spec, double(*v), std::to_string(*v), where);
      return *v;
    }
    case ParamType::Real: {
      const auto v = parse_real_text(trim(text));
      if (!v) deck_error(where, name + ": expected a finite real number, found " + quoted(text));
      check_range(spec, *v, trim(text), where);
      return *v;
    }
    case ParamType::Bool: {
      const auto v = parse_bool_text(trim(text));
      if (!v) deck_error(where, name + ": expected true or false, found " + quoted(text));
      return *v;
    }
    case ParamType::String:
      return text;
    case ParamType::Path:
      if (trim(text).empty()) deck_error(where, name + ": expected a path, found an empty value");
      return text;
    case ParamType::Choice: {
      const std::string word = trim(text);
      for (const auto& c : spec.choices)
        if (c == word) return word;
      std::string msg = name + ": expected one of " + join_alternatives(spec.choices) + ", found " + quoted(word);
      const std::string guess = closest_match(word, spec.choices);
      if (!guess.empty()) msg += "; did you mean '" + guess + "'?";
      deck_error(where, msg);
    }
    case ParamType::StringList: {
      auto items = split_list(text);
      for (const auto& item : items)
        if (item.empty()) deck_error(where, name + ": expected a comma-separated list of words, found " + quoted(text));
      return items;
    }
    case ParamType::WeightList: {
      WeightList weights;
      double total = 0.0;
      for (const auto& item : split_list(text)) {
        const auto colon = item.rfind(':');
        const std::string label = colon == std::string::npos ? "" : trim(item.substr(0, colon));
        const auto w = colon == std::string::npos ? std::nullopt : parse_real_text(trim(item.substr(colon + 1)));
        if (label.empty() || !w || *w < 0)
          deck_error(where, name + ": expected name:weight pairs with weights >= 0 (e.g. 'web:0.7, code:0.3'), found " +
                                quoted(item));
        for (const auto& [other, unused] : weights)
          if (other == label) deck_error(where, name + ": source '" + label + "' appears twice");
        weights.emplace_back(label, *w);
        total += *w;
      }
      if (!(total > 0)) deck_error(where, name + ": weights are all zero");
      return weights;
    }
  }
  fail(ErrorKind::Internal, "unknown parameter type");
}

std::string format_deck_value(const ParamSpec& spec, const DeckValue& value) {
  switch (spec.type) {
    case ParamType::Int: return std::to_string(std::get<std::int64_t>(value));
    case ParamType::Real: return format_real(std::get<double>(value));
    case ParamType::Bool: return std::get<bool>(value) ? "true" : "false";
    case ParamType::String:
    case ParamType::Path:
    case ParamType::Choice: {
      const auto& s = std::get<std::string>(value);
      return needs_quotes(s) ? quote_string(s) : s;
    }
    case ParamType::StringList: {
      std::string out;
      for (const auto& s : std::get<std::vector<std::string>>(value)) out += (out.empty() ? "" : ", ") + s;
      return out;
    }
    case ParamType::WeightList: {
      std::string out;
      for (const auto& [label, w] : std::get<WeightList>(value))
        out += (out.empty() ? "" : ", ") + label + ":" + format_real(w);
      return out;
    }
  }
  return "";
}

// ---- deck ---------------------------------------------------------------------------------------

Deck::Deck(const DeckSchema& schema) : schema_(&schema) {}

Deck Deck::from_file(const std::string& path, const DeckSchema& schema) {
  // (<filesystem> is not used here: its std::quoted would make every quoted() call ambiguous)
  if (struct stat st {}; ::stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode))  // an ifstream opens a directory
    deck_error("", "cannot open deck " + quoted(path) + ": it is a directory, expected a deck file");
  std::ifstream in(path, std::ios::binary);
  if (!in) deck_error("", "cannot open deck " + quoted(path) + ": " + std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad()) deck_error("", "cannot read deck " + quoted(path) + ": " + std::strerror(errno));
  Deck deck(schema);
  deck.source_ = path;
  deck.parse_text(text.str(), path);
  return deck;
}

Deck Deck::from_text(std::string_view text, const std::string& origin, const DeckSchema& schema) {
  Deck deck(schema);
  deck.source_ = origin;
  deck.parse_text(text, origin);
  return deck;
}

const ParamSpec& Deck::spec_or_deck_error(std::string_view block, std::string_view key,
                                          const std::string& where) const {
  const BlockSpec* b = schema_->find_block(block);
  if (!b) {
    std::string msg = "unknown block <" + std::string(block) + ">";
    const std::string guess = closest_match(block, schema_->block_names());
    if (!guess.empty()) msg += "; did you mean <" + guess + ">?";
    else msg += "; known blocks: " + join_alternatives(schema_->block_names());
    deck_error(where, msg);
  }
  const ParamSpec* p = b->find(key);
  if (!p) {
    std::string msg = "unknown key " + quoted(key) + " in block <" + std::string(block) + ">";
    const std::string guess = closest_match(key, b->key_names());
    if (!guess.empty()) {
      msg += "; did you mean '" + guess + "'?";
    } else {
      for (const auto& other : schema_->blocks())
        if (other.find(key)) {
          msg += "; '" + std::string(key) + "' belongs in block <" + other.name + ">";
          break;
        }
    }
    deck_error(where, msg);
  }
  return *p;
}

const ParamSpec& Deck::spec_or_bug(const std::string& block, const std::string& key) const {
  const BlockSpec* b = schema_->find_block(block);
  const ParamSpec* p = b ? b->find(key) : nullptr;
  if (!p) fail(ErrorKind::Internal, "the code reads <" + block + ">/" + key + ", which the deck schema does not declare");
  return *p;
}

void Deck::parse_text(std::string_view text, const std::string& origin) {
  if (text.size() >= 3 && text.substr(0, 3) == "\xEF\xBB\xBF") text.remove_prefix(3);  // UTF-8 BOM
  std::map<std::string, int> block_lines;
  std::map<Key, int> key_lines;
  std::string block;
  int line_no = 0;
  std::size_t pos = 0;
  while (pos <= text.size()) {
    const std::size_t nl = text.find('\n', pos);
    std::string_view line = text.substr(pos, nl == std::string_view::npos ? std::string_view::npos : nl - pos);
    pos = (nl == std::string_view::npos) ? text.size() + 1 : nl + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const std::string where = origin + ":" + std::to_string(line_no);

    // Split off the comment ('#' outside double quotes) and parse a quoted value on the way.
    std::string content;
    std::optional<std::string> quoted_value;
    bool after_quote = false;
    for (std::size_t i = 0; i < line.size(); ++i) {
      const char c = line[i];
      if (c == '#') break;
      if (after_quote) {
        if (!std::isspace(static_cast<unsigned char>(c)))
          deck_error(where, "unexpected text after the closing quote: " + quoted(line.substr(i)));
        continue;
      }
      if (c == '"') {
        if (content.find('=') == std::string::npos || !trim(content.substr(content.find('=') + 1)).empty())
          deck_error(where, "a double quote may only start a value: " + quoted(trim(line)));
        std::string value;
        std::size_t j = i + 1;
        bool closed = false;
        for (; j < line.size(); ++j) {
          if (line[j] == '\\' && j + 1 < line.size()) {
            const char e = line[++j];
            value += e == 'n' ? '\n' : e == 't' ? '\t' : e;
          } else if (line[j] == '"') {
            closed = true;
            break;
          } else {
            value += line[j];
          }
        }
        if (!closed) deck_error(where, "unterminated double-quoted value: " + quoted(trim(line)));
        quoted_value = value;
        after_quote = true;
        i = j;
        continue;
      }
      content += c;
    }
    const std::string stripped = trim(content);
    if (stripped.empty()) continue;

    if (stripped.front() == '<') {
      if (stripped.back() != '>' || stripped.size() < 3)
        deck_error(where, "malformed block header " + quoted(stripped) + ": expected <name>");
      const std::string name = trim(std::string_view(stripped).substr(1, stripped.size() - 2));
      if (!is_name(name)) deck_error(where, "malformed block header " + quoted(stripped) + ": expected <name>");
      if (!schema_->find_block(name)) spec_or_deck_error(name, "", where);  // throws with suggestion
      if (auto it = block_lines.find(name); it != block_lines.end())
        deck_error(where, "block <" + name + "> appears twice (first at line " + std::to_string(it->second) +
                              "); put all its keys under one header");
      block_lines[name] = line_no;
      block = name;
      continue;
    }

    const std::size_t eq = stripped.find('=');
    if (eq == std::string::npos)
      deck_error(where, "expected 'key = value', '<block>' or a comment, found " + quoted(stripped));
    const std::string key = trim(std::string_view(stripped).substr(0, eq));
    const std::string value = quoted_value ? *quoted_value : trim(std::string_view(stripped).substr(eq + 1));
    if (!is_name(key)) deck_error(where, "expected 'key = value', found " + quoted(stripped));
    if (block.empty()) deck_error(where, "key " + quoted(key) + " appears before any <block> header");
    if (!quoted_value && value.empty()) deck_error(where, "<" + block + ">/" + key + ": no value after '='");
    const ParamSpec& spec = spec_or_deck_error(block, key, where);
    if (auto it = key_lines.find({block, key}); it != key_lines.end())
      deck_error(where, "duplicate key " + spec.full_name() + " (first set at line " + std::to_string(it->second) + ")");
    key_lines[{block, key}] = line_no;
    entries_[{block, key}] = Entry{parse_deck_value(spec, value, where), where};
  }
}

void Deck::apply_override(std::string_view argument) {
  const std::string where = "command line argument " + quoted(argument);
  const std::size_t slash = argument.find('/');
  const std::size_t eq = argument.find('=');
  if (slash == std::string_view::npos || eq == std::string_view::npos || slash > eq)
    deck_error(where, "expected block/key=value");
  const std::string block = trim(argument.substr(0, slash));
  const std::string key = trim(argument.substr(slash + 1, eq - slash - 1));
  const ParamSpec& spec = spec_or_deck_error(block, key, where);
  for (const auto& [k, e] : entries_)
    if (k == Key{block, key} && e.origin == "command line")
      deck_error(where, spec.full_name() + " is overridden twice on the command line");
  entries_[{block, key}] = Entry{parse_deck_value(spec, argument.substr(eq + 1), where), "command line"};
}

void Deck::set(const std::string& block, const std::string& key, std::string_view text, const std::string& origin) {
  const ParamSpec& spec = spec_or_deck_error(block, key, origin);
  entries_[{block, key}] = Entry{parse_deck_value(spec, text, origin), origin};
}

const DeckValue* Deck::lookup(const ParamSpec& spec) const {
  const Key k{spec.block, spec.key};
  read_.insert(k);
  if (auto it = entries_.find(k); it != entries_.end()) return &it->second.value;
  if (!spec.default_text) return nullptr;
  auto it = defaults_.find(k);
  if (it == defaults_.end())
    it = defaults_.emplace(k, parse_deck_value(spec, *spec.default_text, "default of " + spec.full_name())).first;
  return &it->second;
}

namespace {
template <class T>
const T& typed(const ParamSpec& spec, const DeckValue* v, std::initializer_list<ParamType> allowed) {
  bool ok = false;
  for (auto t : allowed) ok = ok || t == spec.type;
  if (!ok || !std::holds_alternative<T>(*v))
    fail(ErrorKind::Internal, "the code reads " + spec.full_name() + " as the wrong type (it is a " +
                                  type_name(spec.type) + ")");
  return std::get<T>(*v);
}
}  // namespace

#define JETMOE_DECK_GETTERS(T, GET, FIND, ...)                                             \
  T Deck::GET(const std::string& block, const std::string& key) const {                    \
    const ParamSpec& spec = spec_or_bug(block, key);                                        \
    const DeckValue* v = lookup(spec);                                                      \
    if (!v)                                                                                 \
      deck_error(source_, "required key " + spec.full_name() + " is not set (" + spec.doc + ")"); \
    return typed<T>(spec, v, {__VA_ARGS__});                                                \
  }
JETMOE_DECK_GETTERS(std::int64_t, get_int, find_int, ParamType::Int)
JETMOE_DECK_GETTERS(double, get_real, find_real, ParamType::Real)
JETMOE_DECK_GETTERS(bool, get_bool, find_bool, ParamType::Bool)
JETMOE_DECK_GETTERS(std::string, get_string, find_string, ParamType::String, ParamType::Choice, ParamType::Path)
JETMOE_DECK_GETTERS(std::vector<std::string>, get_list, find_list, ParamType::StringList)
JETMOE_DECK_GETTERS(WeightList, get_weights, find_weights, ParamType::WeightList)
#undef JETMOE_DECK_GETTERS

#define JETMOE_DECK_FINDER(T, FIND, ...)                                                   \
  std::optional<T> Deck::FIND(const std::string& block, const std::string& key) const {    \
    const ParamSpec& spec = spec_or_bug(block, key);                                        \
    const DeckValue* v = lookup(spec);                                                      \
    if (!v) return std::nullopt;                                                            \
    return typed<T>(spec, v, {__VA_ARGS__});                                                \
  }
JETMOE_DECK_FINDER(std::int64_t, find_int, ParamType::Int)
JETMOE_DECK_FINDER(double, find_real, ParamType::Real)
JETMOE_DECK_FINDER(bool, find_bool, ParamType::Bool)
JETMOE_DECK_FINDER(std::string, find_string, ParamType::String, ParamType::Choice, ParamType::Path)
#undef JETMOE_DECK_FINDER

bool Deck::is_set(const std::string& block, const std::string& key) const {
  spec_or_bug(block, key);
  return entries_.count({block, key}) != 0;
}

std::string Deck::origin(const std::string& block, const std::string& key) const {
  spec_or_bug(block, key);
  auto it = entries_.find({block, key});
  return it == entries_.end() ? "default" : it->second.origin;
}

void Deck::fail_value(const std::string& block, const std::string& key, const std::string& message) const {
  deck_error("", describe_key(block, key) + ": " + message);
}

std::string Deck::describe_key(const std::string& block, const std::string& key) const {
  const ParamSpec& spec = spec_or_bug(block, key);
  auto it = entries_.find({block, key});
  // A key the deck does not set: the deck is named, and the default the run used, if any.
  const std::string where = it != entries_.end() ? it->second.origin
                            : spec.default_text ? source_ + " (not set: default " +
                                                      (spec.default_text->empty() ? "\"\"" : *spec.default_text) + ")"
                                                : source_ + " (not set)";
  return where + ": " + spec.full_name();
}

std::optional<std::string> Deck::find_existing(const std::string& block, const std::string& key, PathKind kind) const {
  const ParamSpec& spec = spec_or_bug(block, key);
  if (spec.type != ParamType::Path) fail(ErrorKind::Internal, "find_existing: " + spec.full_name() + " is not a path");
  std::optional<std::string> path = find_string(block, key);
  if (!path) return path;
  struct stat st {};
  if (::stat(path->c_str(), &st) != 0)
    fail_value(block, key, quoted(*path) + (errno == ENOENT || errno == ENOTDIR ? std::string(" does not exist")
                                                                                 : ": " + std::string(std::strerror(errno))));
  if (kind == PathKind::File && S_ISDIR(st.st_mode)) fail_value(block, key, quoted(*path) + " is a directory, expected a file");
  if (kind == PathKind::File && !S_ISREG(st.st_mode)) fail_value(block, key, quoted(*path) + " is not a regular file");
  if (kind == PathKind::Directory && !S_ISDIR(st.st_mode)) fail_value(block, key, quoted(*path) + " is not a directory");
  return path;
}

void Deck::use_block(const std::string& block) {
  if (!schema_->find_block(block)) fail(ErrorKind::Internal, "the code uses block <" + block + ">, which the schema does not declare");
  used_blocks_.insert(block);
}

std::string Deck::effective_text(const std::string& header_comment) const {
  std::ostringstream out;
  if (!header_comment.empty()) out << "# " << header_comment << "\n";
  out << "# Effective deck: every key this run set, read or uses; the comment after each value says where\n"
      << "# it came from. This text is itself a valid deck.\n";
  for (const auto& b : schema_->blocks()) {
    std::vector<std::string> lines;
    for (const auto& p : b.params) {
      const Key k{b.name, p.key};
      const bool in_use = entries_.count(k) || read_.count(k) || used_blocks_.count(b.name);
      if (!in_use) continue;
      std::string line;
      auto it = entries_.find(k);
      if (it != entries_.end()) {
        line = p.key + " = " + format_deck_value(p, it->second.value) + "  # " + it->second.origin;
      } else if (p.default_text) {
        line = p.key + " = " +
               format_deck_value(p, parse_deck_value(p, *p.default_text, "default of " + p.full_name())) +
               "  # default";
      } else {
        line = "# " + p.key + " is not set" + (p.unset_meaning.empty() ? "" : ": " + p.unset_meaning);
      }
      lines.push_back(line);
    }
    if (lines.empty()) continue;
    out << "\n<" << b.name << ">\n";
    for (const auto& l : lines) out << l << "\n";
  }
  return out.str();
}

}  // namespace jetmoe
