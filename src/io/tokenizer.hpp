#pragma once
// The JetMoE tokenizer: a SentencePiece `tokenizer.model` used exactly as Hugging Face's slow
// `LlamaTokenizer` uses it in its default configuration, which is what jetmoe-8b's tokenizer_config.json
// asks for (LlamaTokenizer, add_bos_token true, add_eos_token false, legacy true: jetmoe-spec.md section 8).
//
// encode(text) is HF's `tokenizer.encode(text)`:
//   1. the special pieces <unk>, <s>, </s> (and <pad> if the model has one) written literally in the text
//      are split out and become their ids; there is no stripping of spaces around them;
//   2. every piece of text between them is encoded by SentencePiece on its own, with the model's own
//      normaliser, so each one gets the dummy-prefix "▁" (legacy=True: "Hi </s> there" gives
//      ... "▁", </s>, "▁", "▁the", ...);
//   3. BOS in front, no EOS (both switchable).
// decode(ids) is HF's `tokenizer.decode(ids, skip_special_tokens=True)`: BOS, EOS, <unk> and pad are
// dropped, the leading "▁" of the first remaining piece is removed (HF's add_prefix_space undo) and the
// rest goes through SentencePiece's decoder, which also drops the first leading space of the text.
// Byte-fallback pieces are joined into UTF-8; bytes that do not form a valid character become U+FFFD.
// StreamDecoder gives the same text piece by piece, for streaming generation output.
//
// The fixtures in tests/fixtures/tokenizer/ come from transformers 4.57.6 (and reproduce under 4.40.0):
// scripts/fixtures/make_tokenizer_fixtures.py.
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace jetmoe::io {

// A half-open range [begin, end): bytes of a text, or positions in a token sequence.
struct Span {
  std::size_t begin = 0;
  std::size_t end = 0;
  std::size_t size() const { return end - begin; }
  bool operator==(const Span& o) const { return begin == o.begin && end == o.end; }
};

class Tokenizer {
 public:
  // Loads a SentencePiece model file. A missing, unreadable or corrupt file, or a model without <s> and
  // </s>, throws one jetmoe::Error(ErrorKind::Input) that names the file.
  explicit Tokenizer(const std::string& model_path);
  ~Tokenizer();
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;

  std::vector<std::int32_t> encode(std::string_view text, bool add_bos = true, bool add_eos = false) const;
  // The same ids, and for each token the bytes of `text` it came from. BOS/EOS get an empty span at the
  // start/end of the text; the byte-fallback pieces of one character all get that character's span; a
  // piece that is only the dummy-prefix "▁" of a chunk gets an empty span where the chunk starts.
  std::vector<std::int32_t> encode_with_offsets(std::string_view text, std::vector<Span>& offsets,
                                                bool add_bos = true, bool add_eos = false) const;

  // Every id must be in [0, vocab_size()): otherwise an Error names the id.
  std::string decode(const std::vector<std::int32_t>& ids) const;

  std::int32_t vocab_size() const { return vocab_size_; }
  std::int32_t bos_id() const { return bos_id_; }
  std::int32_t eos_id() const { return eos_id_; }
  std::int32_t unk_id() const { return unk_id_; }
  // The model's pad piece if it has one; otherwise EOS, as jetmoe-8b's generation_config does
  // (pad_token_id 2). Llama/Mistral models have none.
  std::int32_t pad_id() const { return pad_id_ >= 0 ? pad_id_ : eos_id_; }
  bool has_pad_piece() const { return pad_id_ >= 0; }
  // The ids decode() leaves out: BOS, EOS, <unk>, pad (HF's all_special_ids).
  bool is_special(std::int32_t id) const;

  std::string id_to_piece(std::int32_t id) const;     // validates the id
  std::int32_t piece_to_id(std::string_view piece) const;  // unk_id() when the piece is not in the vocab
  const std::string& path() const { return path_; }

 private:
  friend class StreamDecoder;
  void check_id(std::int32_t id) const;
  void encode_chunk(std::string_view chunk, std::size_t offset, std::vector<std::int32_t>& ids,
                    std::vector<Span>* offsets) const;
  std::vector<std::int32_t> encode_impl(std::string_view text, std::vector<Span>* offsets, bool add_bos,
                                        bool add_eos) const;

  std::string path_;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::int32_t vocab_size_ = 0, bos_id_ = -1, eos_id_ = -1, unk_id_ = -1, pad_id_ = -1;
  // Special pieces as they may appear in text, matched before SentencePiece sees it.
  std::vector<std::pair<std::string, std::int32_t>> special_pieces_;
  // Facts about the model's decoder that StreamDecoder needs, read off SentencePiece at load time.
  std::string unk_surface_;          // what SentencePiece prints for <unk> (" ⁇ " by default)
  bool strips_leading_ws_ = true;    // the decoder drops the text's first leading "▁" (add_dummy_prefix)
  bool strips_all_leading_ws_ = false;  // ...and keeps dropping while the text is empty (remove_extra_whitespaces)
};

// The text `ids` add after `context`, as decoding the whole sequence renders it: decode(context + ids)
// past decode(context). A continuation keeps the space its first piece begins with (" world" after
// "Hello"), which decode(ids) alone drops. (When context ends inside a UTF-8 character that ids
// complete, the character is the continuation's.)
std::string decode_continuation(const Tokenizer& tokenizer, const std::vector<std::int32_t>& context,
                                const std::vector<std::int32_t>& ids);

// Incremental decode for streaming generation. push() takes the next id and returns the text that is
// now final; after any number of pushes, the concatenation of what push() returned plus pending()
// equals tokenizer.decode(all ids pushed so far). Text is held back only while the last byte-fallback
// pieces may still become one UTF-8 character, so a character is never split; the leading "▁" rules
// are applied as the pieces arrive. finish() returns what is held back, as decode() would render it
// (U+FFFD for each byte of an unfinished character), and starts a new stream. O(piece length) per push.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer);
  std::string push(std::int32_t id);
  std::string pending() const;
  std::string finish();
  void reset();
  // Pushes ids whose text is not wanted (a prompt already shown): what follows renders as it does
  // after them. Their held-back bytes stay pending.
  void skip(const std::vector<std::int32_t>& ids);

 private:
  // Emits the complete characters of the pending byte run; the whole run (as U+FFFD where invalid)
  // when `run_ended`.
  std::string take_bytes(bool run_ended);

  const Tokenizer* tok_;
  bool first_piece_ = true;   // HF removes the leading "▁" of the first non-special piece
  bool at_text_start_ = true;  // SentencePiece's is_bos_ws: the next piece may lose its leading "▁"
  bool bos_ws_seen_ = false;
  bool text_empty_ = true;
  std::string bytes_;          // a run of byte-fallback pieces not yet emitted
};

}  // namespace jetmoe::io
