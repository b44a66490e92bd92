#pragma once
// Token shards: what jetmoe-prepare writes and the training sampler reads.
//
// A prepared data directory holds one subdirectory per source (the `name` of prepare/inputs):
//
//   <data dir>/<source>/manifest.json     what was prepared from what (JSON, below)
//                       train.bin         token file of the training split
//                       train.idx         its document index
//                       validation.bin    token file of the validation split
//                       validation.idx    its document index
//
// Token file (.bin), little-endian:
//   offset  0  char[8]  magic "JMTOKENS"
//           8  u32      format version (1)
//          12  u32      bytes per token: 2 (uint16, vocabularies up to 65,536) or 4 (uint32)
//          16  u64      token count
//          24  u64      vocabulary size (every token is below it)
//          32  u64      document count
//          40  u8[24]   zero
//          64  tokens   the documents one after another (each as prepared: <s>? text </s>?)
// Index file (.idx), little-endian:
//   offset  0  char[8]  magic "JMDOCIDX"
//           8  u32      format version (1)
//          12  u32      zero
//          16  u64      document count D
//          24  u64      token count (the token file's)
//          32  u8[32]   zero
//          64  u64[D+1] token offset of each document's start, then the token count
//
// manifest.json: {"format": "jetmoe-token-shards", "format_version": 1, "source", "token_bytes", "vocab_size",
//   "tokenizer": {"model", "sha256", "add_bos", "add_eos"}, "eos_between_documents", "text_documents",
//   "text_field", "validation_fraction", "split_seed", "inputs": [{"path", "bytes", "documents"}],
//   "skipped_empty_documents", "splits": {"train"|"validation": {"file", "index", "documents", "tokens"}}}
//
// Readers memory-map both files and check everything that can be checked cheaply on open (magic, version,
// sizes against the header, the index against the token file, the manifest against both); tokens are
// checked against the vocabulary as they are read (read_tokens) or all at once (check_all_tokens). Every
// error is one jetmoe::Error(ErrorKind::Input) naming the file, what was expected and what was found.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace jetmoe::data {

inline constexpr std::uint32_t kShardFormatVersion = 1;
inline constexpr std::size_t kShardHeaderBytes = 64;

// Bytes per token for a vocabulary: 2 up to 65,536 entries, else 4.
int token_bytes_for_vocab(std::int64_t vocab_size);

// Hex SHA-256 of a file's bytes (the tokenizer checksum in manifests; compare with `sha256sum`).
std::string sha256_file_hex(const std::string& path);
std::string sha256_hex(const void* data, std::size_t size);

// --- manifest -------------------------------------------------------------------------------------------
struct SplitInfo {
  std::string file, index;  // names inside the source directory
  std::int64_t documents = 0, tokens = 0;
};
struct InputFileInfo {
  std::string path;
  std::int64_t bytes = 0, documents = 0;
};
struct SourceManifest {
  std::string source;
  int token_bytes = 2;
  std::int64_t vocab_size = 0;
  std::string tokenizer_model, tokenizer_sha256;
  bool add_bos = true, add_eos = false, eos_between_documents = true;
  std::string text_documents = "blank-line", text_field = "text";
  double validation_fraction = 0;
  std::uint64_t split_seed = 0;
  std::vector<InputFileInfo> inputs;
  std::int64_t skipped_empty_documents = 0;
  SplitInfo train{"train.bin", "train.idx"}, validation{"validation.bin", "validation.idx"};

  std::string to_json() const;
  // Parses and checks a manifest; errors name `path`.
  static SourceManifest from_json(const std::string& text, const std::string& path);
};

// --- writing -------------------------------------------------------------------------------------------
// Streams one split's documents to a token file and its index. finish() writes the headers; a writer
// destroyed before finish() leaves incomplete files behind, which is why jetmoe-prepare writes into a
// temporary directory that it renames only when every file is complete.
class TokenShardWriter {
 public:
  TokenShardWriter(std::string bin_path, std::string idx_path, std::int64_t vocab_size);
  ~TokenShardWriter();
  TokenShardWriter(const TokenShardWriter&) = delete;
  TokenShardWriter& operator=(const TokenShardWriter&) = delete;

  // Every token must be in [0, vocab_size) (an internal error otherwise: the tokenizer made it).
  void add_document(const std::vector<std::int32_t>& tokens);
  void finish();
  std::int64_t documents() const { return std::int64_t(offsets_.size()) - 1; }
  std::int64_t tokens() const { return offsets_.back(); }

 private:
  void write_bytes(const void* data, std::size_t size);

  std::string bin_path_, idx_path_;
  std::int64_t vocab_size_;
  int token_bytes_;
  std::FILE* bin_ = nullptr;
  std::vector<std::uint64_t> offsets_{0};
  std::vector<unsigned char> buffer_;
};

// --- reading -------------------------------------------------------------------------------------------
// A read-only memory map of a whole file.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(MappedFile&&) noexcept;
  MappedFile& operator=(MappedFile&&) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  const unsigned char* data() const { return data_; }
  std::size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  const unsigned char* data_ = nullptr;
  std::size_t size_ = 0;
};

// One split of one source: a token file and its document index, memory-mapped and checked.
class TokenShard {
 public:
  TokenShard(const std::string& bin_path, const std::string& idx_path);

  std::int64_t tokens() const { return tokens_; }
  std::int64_t documents() const { return documents_; }
  std::int64_t vocab_size() const { return vocab_size_; }
  int token_bytes() const { return token_bytes_; }
  const std::string& path() const { return bin_.path(); }
  // Token offset of document d's start, d in [0, documents()]; documents() gives tokens().
  std::int64_t document_offset(std::int64_t d) const;

  // Appends tokens [begin, begin + count) to `out`, checking each against the vocabulary.
  void read_tokens(std::int64_t begin, std::int64_t count, std::vector<std::int32_t>& out) const;
  // Checks every token against the vocabulary (reads the whole file).
  void check_all_tokens() const;

 private:
  [[noreturn]] void bad_token(std::int64_t position, std::uint64_t value) const;

  MappedFile bin_, idx_;
  std::int64_t tokens_ = 0, documents_ = 0, vocab_size_ = 0;
  int token_bytes_ = 2;
};

// A prepared source: its manifest and both splits, checked against each other.
struct PreparedSource {
  std::string dir;
  SourceManifest manifest;
  TokenShard train, validation;

  const TokenShard& split(bool validation_split) const { return validation_split ? validation : train; }
};
PreparedSource open_prepared_source(const std::string& source_dir);

// Names of the prepared sources in a data directory (subdirectories with a manifest.json), sorted.
// A missing directory is an error that says how to make it.
std::vector<std::string> list_prepared_sources(const std::string& data_dir);

}  // namespace jetmoe::data
