// Input decks: the deck syntax, every key's type and range, and the cross-key checks of the model and
// training settings. The first line is also tried as a command-line override (`block/key=value`).
// Accepted failure: one ErrorKind::Deck (Input for a model shape the deck makes inconsistent) naming
// the deck. Properties of a deck that reads:
//   - the effective deck (every key with its origin) reads back to the same value of every key;
//   - the model and training settings either build or fail in the same way.
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

#include "core/deck.hpp"
#include "fuzz_support.hpp"
#include "model/config.hpp"
#include "train/config.hpp"

using namespace jetmoe;
using jetmoe::fuzz::check;
using jetmoe::fuzz::reads;

namespace {

// `b` (read from `a`'s effective deck) sets every key `a` sets, and every key either sets has the
// same value in both (a key `a` only read has its default there).
void check_same_values(const Deck& a, const Deck& b) {
  for (const BlockSpec& block : a.schema().blocks()) {
    for (const ParamSpec& p : block.params) {
      if (!a.is_set(block.name, p.key) && !b.is_set(block.name, p.key)) continue;
      check(b.is_set(block.name, p.key), p.full_name() + " is lost by the effective deck");
      std::string va, vb;
      switch (p.type) {
        case ParamType::Int:
          va = std::to_string(a.get_int(block.name, p.key));
          vb = std::to_string(b.get_int(block.name, p.key));
          break;
        case ParamType::Real: {
          const double x = a.get_real(block.name, p.key), y = b.get_real(block.name, p.key);
          check(std::memcmp(&x, &y, sizeof x) == 0, p.full_name() + ": the effective deck changes the value");
          break;
        }
        case ParamType::Bool:
          va = a.get_bool(block.name, p.key) ? "true" : "false";
          vb = b.get_bool(block.name, p.key) ? "true" : "false";
          break;
        case ParamType::String:
        case ParamType::Choice:
        case ParamType::Path:
          va = a.get_string(block.name, p.key);
          vb = b.get_string(block.name, p.key);
          break;
        case ParamType::StringList:
          for (const std::string& s : a.get_list(block.name, p.key)) va += s + '\x1f';
          for (const std::string& s : b.get_list(block.name, p.key)) vb += s + '\x1f';
          break;
        case ParamType::WeightList: {
          const WeightList wa = a.get_weights(block.name, p.key), wb = b.get_weights(block.name, p.key);
          check(wa.size() == wb.size(), p.full_name() + ": the effective deck changes the list");
          for (std::size_t i = 0; i < wa.size(); ++i)
            check(wa[i].first == wb[i].first && std::memcmp(&wa[i].second, &wb[i].second, sizeof(double)) == 0,
                  p.full_name() + ": the effective deck changes the list");
          break;
        }
      }
      check(va == vb, p.full_name() + ": '" + va + "' reads back as '" + vb + "'");
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);

  // The first line as an override, alone.
  reads({ErrorKind::Deck}, "command line", [&] {
    Deck d;
    d.apply_override(text.substr(0, text.find('\n')));
  });

  Deck deck;
  if (!reads({ErrorKind::Deck}, "fuzz.deck", [&] { deck = Deck::from_text(text, "fuzz.deck"); })) return 0;

  // The model and training settings, unless the deck names a file for them (not this target's input).
  ModelConfig model;
  const bool files = deck.is_set("model", "config") || deck.is_set("model", "weights");
  const bool model_ok = !files && reads({ErrorKind::Deck, ErrorKind::Input}, "fuzz.deck", [&] {
    model = ModelConfig::from_deck(deck);
    (void)model.summary();
  });
  if (model_ok) {
    for (int ranks : {1, 3}) {
      reads({ErrorKind::Deck}, "fuzz.deck", [&] { (void)TrainConfig::from_deck(deck, model, ranks); });
    }
  }

  // The effective deck reads back to the same values.
  const std::string effective = deck.effective_text("fuzz");
  Deck again;
  if (!reads({ErrorKind::Deck}, "", [&] { again = Deck::from_text(effective, "effective.deck"); }))
    jetmoe::fuzz::finding("the effective deck does not read back:\n" + effective);
  check_same_values(deck, again);
  return 0;
}
