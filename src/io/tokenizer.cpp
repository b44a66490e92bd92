#include "io/tokenizer.hpp"

#include <sentencepiece_processor.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "core/error.hpp"
#include "core/strings.hpp"

namespace jetmoe::io {

namespace {

constexpr std::string_view kMetaSpace = "\xE2\x96\x81";  // "▁", SentencePiece's whitespace symbol
constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";  // U+FFFD

[[noreturn]] void model_error(const std::string& path, const std::string& message) {
  fail(ErrorKind::Input, "tokenizer model " + jetmoe::quoted(path) + ": " + message);
}

std::string replace_meta_space(std::string_view piece) {
  std::string out;
  out.reserve(piece.size());
  for (std::size_t i = 0; i < piece.size();) {
    if (piece.compare(i, kMetaSpace.size(), kMetaSpace) == 0) {
      out += ' ';
      i += kMetaSpace.size();
    } else {
      out += piece[i++];
    }
  }
  return out;
}

// Bytes a UTF-8 sequence with this lead byte needs; 1 for ASCII and for bytes that cannot lead.
std::size_t utf8_needed(unsigned char lead) {
  if ((lead & 0xE0) == 0xC0) return 2;
  if ((lead & 0xF0) == 0xE0) return 3;
  if ((lead & 0xF8) == 0xF0) return 4;
  return 1;
}

// SentencePiece's DecodeUTF8 (util.cc): one character from s[0, n); false when it is not valid, in
// which case exactly one byte is consumed. Overlong forms and surrogates are invalid.
bool decode_utf8(const unsigned char* s, std::size_t n, std::size_t* used) {
  auto trail = [](unsigned char c) { return (c & 0xC0) == 0x80; };
  auto valid_cp = [](std::uint32_t c) { return c < 0xD800 || (c >= 0xE000 && c <= 0x10FFFF); };
  *used = 1;
  if (s[0] < 0x80) return true;
  const std::size_t need = utf8_needed(s[0]);
  if (need == 2 && n >= 2) {
    const std::uint32_t cp = (std::uint32_t(s[0] & 0x1F) << 6) | (s[1] & 0x3F);
    if (trail(s[1]) && cp >= 0x80 && valid_cp(cp)) return *used = 2, true;
  } else if (need == 3 && n >= 3) {
    const std::uint32_t cp = (std::uint32_t(s[0] & 0x0F) << 12) | (std::uint32_t(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
    if (trail(s[1]) && trail(s[2]) && cp >= 0x800 && valid_cp(cp)) return *used = 3, true;
  } else if (need == 4 && n >= 4) {
    const std::uint32_t cp = (std::uint32_t(s[0] & 0x07) << 18) | (std::uint32_t(s[1] & 0x3F) << 12) |
                             (std::uint32_t(s[2] & 0x3F) << 6) | (s[3] & 0x3F);
    if (trail(s[1]) && trail(s[2]) && trail(s[3]) && cp >= 0x10000 && valid_cp(cp)) return *used = 4, true;
  }
  return false;
}

// "<0x41>" -> 0x41, for pieces SentencePiece reports as byte-fallback pieces.
unsigned char byte_of_piece(const std::string& piece) {
  JETMOE_ASSERT(piece.size() == 6 && piece.compare(0, 3, "<0x") == 0 && piece[5] == '>',
                "byte-fallback piece '" + piece + "' is not of the form <0xHH>");
  return static_cast<unsigned char>(std::stoi(piece.substr(3, 2), nullptr, 16));
}

}  // namespace

Tokenizer::Tokenizer(const std::string& model_path)
    : path_(model_path), sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  std::error_code ec;
  if (std::filesystem::is_directory(model_path, ec))
    model_error(model_path, "is a directory, expected a SentencePiece tokenizer.model file");
  std::ifstream in(model_path, std::ios::binary);
  if (!in) model_error(model_path, std::string("cannot open: ") + std::strerror(errno));
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) model_error(model_path, std::string("read error: ") + std::strerror(errno));
  if (bytes.empty()) model_error(model_path, "is empty, expected a SentencePiece model (protobuf ModelProto)");
  const auto status = sp_->LoadFromSerializedProto(bytes);
  if (!status.ok())
    model_error(model_path, "not a valid SentencePiece model (" + std::to_string(bytes.size()) +
                                " bytes; SentencePiece: " + escape_control(status.ToString()) + ")");

  vocab_size_ = sp_->GetPieceSize();
  unk_id_ = sp_->unk_id(), bos_id_ = sp_->bos_id(), eos_id_ = sp_->eos_id(), pad_id_ = sp_->pad_id();
  if (vocab_size_ <= 0) model_error(model_path, "has an empty vocabulary");
  auto check_special = [&](const char* name, std::int32_t id, const char* piece) {
    if (id < 0 || id >= vocab_size_)
      model_error(model_path, std::string("expected a ") + piece + " piece (" + name + "), found " + name + " = " +
                                  std::to_string(id) + " with vocab size " + std::to_string(vocab_size_));
  };
  check_special("unk_id", unk_id_, "<unk>");
  check_special("bos_id", bos_id_, "<s>");
  check_special("eos_id", eos_id_, "</s>");

  for (std::int32_t id : {unk_id_, bos_id_, eos_id_, pad_id_})
    if (id >= 0) special_pieces_.emplace_back(sp_->IdToPiece(id), id);

  // Decoder facts, asked of SentencePiece itself so that StreamDecoder follows this model's options.
  unk_surface_ = sp_->DecodeIds(std::vector<int>{unk_id_});
  auto is_plain = [&](int id) {
    return !sp_->IsControl(id) && !sp_->IsUnknown(id) && !sp_->IsByte(id) && !sp_->IsUnused(id);
  };
  for (std::int32_t id = 0; id < vocab_size_; ++id) {
    const std::string& piece = sp_->IdToPiece(id);
    if (is_plain(id) && starts_with(piece, kMetaSpace)) {
      strips_leading_ws_ = sp_->DecodePieces(std::vector<std::string>{piece}) ==
                           replace_meta_space(std::string_view(piece).substr(kMetaSpace.size()));
      break;
    }
  }
  const int space_id = sp_->PieceToId(kMetaSpace);
  if (is_plain(space_id) && strips_leading_ws_)
    strips_all_leading_ws_ = sp_->DecodePieces(std::vector<std::string>(2, std::string(kMetaSpace))).empty();
}

Tokenizer::~Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;

bool Tokenizer::is_special(std::int32_t id) const {
  return id == bos_id_ || id == eos_id_ || id == unk_id_ || (pad_id_ >= 0 && id == pad_id_);
}

void Tokenizer::check_id(std::int32_t id) const {
  if (id < 0 || id >= vocab_size_)
    fail(ErrorKind::Input, "token id " + std::to_string(id) + " is out of range for tokenizer " + jetmoe::quoted(path_) +
                               ": expected 0 <= id < " + std::to_string(vocab_size_) + " (its vocab size)");
}

std::string Tokenizer::id_to_piece(std::int32_t id) const {
  check_id(id);
  return sp_->IdToPiece(id);
}

std::int32_t Tokenizer::piece_to_id(std::string_view piece) const { return sp_->PieceToId(piece); }

void Tokenizer::encode_chunk(std::string_view chunk, std::size_t offset, std::vector<std::int32_t>& ids,
                             std::vector<Span>* offsets) const {
  sentencepiece::ImmutableSentencePieceText spt;
  const auto status = sp_->Encode(chunk, spt.mutable_proto());
  if (!status.ok())
    fail(ErrorKind::Input, "tokenizer " + jetmoe::quoted(path_) + " cannot encode " + std::to_string(chunk.size()) +
                               " bytes of text: " + status.ToString());
  const std::size_t first = ids.size();
  for (const auto& piece : spt.pieces()) {
    ids.push_back(static_cast<std::int32_t>(piece.id()));
    if (offsets) offsets->push_back({offset + piece.begin(), offset + piece.end()});
  }
  if (!offsets) return;
  // SentencePiece gives a character's bytes to its last byte piece and empty spans to the others; give
  // them all the character's span, so that every piece of a character counts as covering it.
  for (std::size_t i = ids.size(); i-- > first + 1;) {
    Span& prev = (*offsets)[i - 1];
    const Span& cur = (*offsets)[i];
    if (sp_->IsByte(ids[i - 1]) && sp_->IsByte(ids[i]) && prev.size() == 0 && prev.begin == cur.begin) prev = cur;
  }
}

std::vector<std::int32_t> Tokenizer::encode_impl(std::string_view text, std::vector<Span>* offsets, bool add_bos,
                                                 bool add_eos) const {
  std::vector<std::int32_t> ids;
  if (offsets) offsets->clear();
  if (add_bos) {
    ids.push_back(bos_id_);
    if (offsets) offsets->push_back({0, 0});
  }
  // HF's added-token split: the earliest special piece, the longest one where two start together.
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t at = std::string_view::npos, len = 0;
    std::int32_t special = -1;
    for (const auto& [piece, id] : special_pieces_) {
      const std::size_t found = text.find(piece, pos);
      if (found < at || (found == at && found != std::string_view::npos && piece.size() > len))
        at = found, len = piece.size(), special = id;
    }
    const std::size_t chunk_end = std::min(at, text.size());
    if (chunk_end > pos) encode_chunk(text.substr(pos, chunk_end - pos), pos, ids, offsets);
    if (special < 0) break;
    ids.push_back(special);
    if (offsets) offsets->push_back({at, at + len});
    pos = at + len;
  }
  if (add_eos) {
    ids.push_back(eos_id_);
    if (offsets) offsets->push_back({text.size(), text.size()});
  }
  return ids;
}

std::vector<std::int32_t> Tokenizer::encode(std::string_view text, bool add_bos, bool add_eos) const {
  return encode_impl(text, nullptr, add_bos, add_eos);
}

std::vector<std::int32_t> Tokenizer::encode_with_offsets(std::string_view text, std::vector<Span>& offsets,
                                                         bool add_bos, bool add_eos) const {
  return encode_impl(text, &offsets, add_bos, add_eos);
}

std::string Tokenizer::decode(const std::vector<std::int32_t>& ids) const {
  std::vector<std::string> pieces;
  pieces.reserve(ids.size());
  for (const std::int32_t id : ids) {
    check_id(id);
    if (!is_special(id)) pieces.push_back(sp_->IdToPiece(id));
  }
  if (pieces.empty()) return {};
  // HF LlamaTokenizer.convert_tokens_to_string: "we manually add the prefix space, we have to remove it".
  if (starts_with(pieces[0], kMetaSpace)) pieces[0].erase(0, kMetaSpace.size());
  std::string text;
  const auto status = sp_->Decode(pieces, &text);
  JETMOE_ASSERT(status.ok(), "SentencePiece cannot decode valid ids: " + status.ToString());
  return text;
}

// ---- StreamDecoder: SentencePieceProcessor::Decode (sentencepiece_processor.cc), one piece at a time ----

StreamDecoder::StreamDecoder(const Tokenizer& tokenizer) : tok_(&tokenizer) {}

void StreamDecoder::reset() {
  first_piece_ = at_text_start_ = text_empty_ = true;
  bos_ws_seen_ = false;
  bytes_.clear();
}

std::string StreamDecoder::take_bytes(bool run_ended) {
  std::string out;
  const auto* b = reinterpret_cast<const unsigned char*>(bytes_.data());
  std::size_t off = 0;
  while (off < bytes_.size()) {
    const std::size_t left = bytes_.size() - off;
    if (!run_ended && left < utf8_needed(b[off])) break;  // may still become a character
    std::size_t used = 1;
    if (decode_utf8(b + off, left, &used))
      out.append(bytes_, off, used);
    else
      out += kReplacementChar;
    off += used;
  }
  bytes_.erase(0, off);
  text_empty_ = text_empty_ && out.empty();
  return out;
}

std::string StreamDecoder::pending() const {
  StreamDecoder copy = *this;
  return copy.take_bytes(true);
}

void StreamDecoder::skip(const std::vector<std::int32_t>& ids) {
  for (const std::int32_t id : ids) push(id);
}

std::string decode_continuation(const Tokenizer& tokenizer, const std::vector<std::int32_t>& context,
                                const std::vector<std::int32_t>& ids) {
  StreamDecoder stream(tokenizer);
  stream.skip(context);
  std::string text;
  for (const std::int32_t id : ids) text += stream.push(id);
  return text + stream.finish();
}

std::string StreamDecoder::finish() {
  std::string out = take_bytes(true);
  reset();
  return out;
}

std::string StreamDecoder::push(std::int32_t id) {
  const Tokenizer& t = *tok_;
  const sentencepiece::SentencePieceProcessor& sp = *t.sp_;
  t.check_id(id);
  if (t.is_special(id)) return {};  // skip_special_tokens: dropped before SentencePiece sees the pieces

  std::string piece = sp.IdToPiece(id);
  if (first_piece_) {
    first_piece_ = false;
    if (starts_with(piece, kMetaSpace)) piece.erase(0, kMetaSpace.size());
  }
  const int piece_id = sp.PieceToId(piece);  // the stripped first piece may be another piece, or unknown
  if (sp.IsByte(piece_id)) {
    bytes_ += static_cast<char>(byte_of_piece(piece));
    return take_bytes(false);
  }

  std::string out = take_bytes(true);  // a byte run ends at any other piece
  if (bos_ws_seen_ || !text_empty_) at_text_start_ = false;
  bos_ws_seen_ = false;
  std::string surface;
  if (sp.IsControl(piece_id)) {
    // invisible
  } else if (sp.IsUnknown(piece_id)) {
    surface = sp.IdToPiece(piece_id) == piece ? t.unk_surface_ : piece;  // unknown strings print as they are
  } else {
    std::string_view p = piece;
    if (at_text_start_ && t.strips_leading_ws_ && starts_with(p, kMetaSpace)) {
      p.remove_prefix(kMetaSpace.size());
      bos_ws_seen_ = !t.strips_all_leading_ws_;
    }
    surface = replace_meta_space(p);
  }
  text_empty_ = text_empty_ && surface.empty();
  return out + surface;
}

}  // namespace jetmoe::io
