// Multiple-choice evaluation files (eval/input with eval/task = multiple_choice): JSON Lines in one of
// the lm-eval task formats, told apart by the first row, rendered into lm-eval's requests with
// few-shot examples drawn from the file itself. Accepted failure: one ErrorKind::Input naming the
// file. A file that reads has at least two choices per question and its gold answer among them; its
// requests, one per choice, tokenize within the vocabulary.
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "eval/multiple_choice.hpp"
#include "fuzz_support.hpp"
#include "io/tokenizer.hpp"

using namespace jetmoe;
using namespace jetmoe::eval;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string path = fuzz::Scratch::get().write("questions.jsonl", data, size);
  McFile file;
  if (!fuzz::reads({ErrorKind::Input}, path, [&] { file = read_mc_jsonl(path, McFormat::Auto); })) return 0;
  std::size_t choices = 0;
  for (const McDoc& doc : file.docs) {
    fuzz::check(doc.gold < doc.choices.size(),
                "line " + std::to_string(doc.line) + ": the gold answer is not a choice");
    choices += doc.choices.size();
  }
  for (std::int64_t shots : {0, 2}) {
    McOptions options;
    options.num_fewshot = shots;
    options.limit = 4;
    std::vector<McRequest> requests;
    std::vector<std::size_t> evaluated;
    if (!fuzz::reads({ErrorKind::Input}, path,
                     [&] { requests = build_mc_requests(file, options, fuzz::fixture_tokenizer(), &evaluated); }))
      continue;
    std::size_t expected = 0;
    for (std::size_t d : evaluated) {
      fuzz::check(d < file.docs.size(), "an evaluated question outside the file");
      expected += file.docs[d].choices.size();
    }
    fuzz::check(requests.size() == expected && expected <= choices, "not one request per choice");
    for (const McRequest& r : requests)
      for (const auto* ids : {&r.context_ids, &r.continuation_ids})
        for (std::int32_t id : *ids)
          fuzz::check(id >= 0 && id < fuzz::fixture_tokenizer().vocab_size(), "a request's id outside the vocabulary");
  }
  return 0;
}
