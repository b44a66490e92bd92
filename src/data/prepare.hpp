#pragma once
// jetmoe-prepare's work: corpora in, token shards (data/shards.hpp) out.
//
// Inputs. Each source is a file or a directory; a directory means every regular file in it whose name does
// not start with '.', in name order (not recursive). A file's format comes from its name: `*.jsonl` and
// `*.jsonl.gz` are JSON Lines, one document per non-blank line, the text in the field `text_field`; any
// other name is plain text, split into documents at blank lines (`text_documents = blank-line`: one or
// more lines holding only whitespace end a document; the lines of a document are joined with "\n") or one
// document per file (`text_documents = file`). A name ending in `.gz` is gzip-compressed. Documents whose
// text is only whitespace are skipped (and counted in the manifest).
//
// Tokens. A document becomes tokenizer.encode(text, add_bos, add_eos), then </s> if `eos_between_documents`
// and it does not already end with one; documents are concatenated in input order (Megatron-style packing,
// no attention reset).
//
// Split. A document goes to validation when a 64-bit hash of its text and the seed, read as a number in
// [0, 1), is below `validation_fraction`: the split depends on the text only (duplicates land together),
// not on the order, the thread count or the other documents.
//
// Parallelism. Documents are read in batches; each batch is tokenised by `jobs` threads and written in
// input order, so the files are identical for any thread count.
//
// Atomicity. Every source is written into `<output_dir>/.<name>.partial/` and renamed to `<name>/` only
// after all sources are complete; on any error the partial directories are removed and nothing is left.
#include <cstdint>
#include <string>
#include <vector>

#include "data/shards.hpp"

namespace jetmoe::io {
class Tokenizer;
}

namespace jetmoe::data {

enum class TextDocuments { BlankLine, File };

struct PrepareSettings {
  std::string output_dir;
  std::string tokenizer_model;  // path recorded in the manifests (with the model's SHA-256)
  std::string text_field = "text";
  TextDocuments text_documents = TextDocuments::BlankLine;
  double validation_fraction = 0.01;
  std::uint64_t seed = 1234;
  bool add_bos = true, add_eos = false, eos_between_documents = true;
  int jobs = 1;            // tokenising threads (>= 1)
  bool overwrite = false;  // replace existing prepared sources
};

struct SourceInput {
  std::string name;  // [A-Za-z0-9_.-]+, not starting with '.'
  std::string path;  // file or directory
};

struct SourceReport {
  std::string name;
  std::int64_t files = 0, input_bytes = 0, skipped_empty = 0;
  std::int64_t documents[2] = {0, 0}, tokens[2] = {0, 0};  // [train, validation]
  double seconds = 0;
};

// Why a source name is not usable ("" when it is).
std::string source_name_problem(const std::string& name);
// The files of an input path (above); throws ErrorKind::Input for a missing path or an empty directory.
std::vector<std::string> input_files(const std::string& path);
// Is this document in the validation split?
bool is_validation_document(const std::string& text, std::uint64_t seed, double validation_fraction);

// Reads the documents of one input file in order. Errors (bad gzip, bad JSON, missing field) are
// ErrorKind::Input naming FILE:LINE.
class DocumentReader {
 public:
  DocumentReader(const std::string& path, const std::string& text_field, TextDocuments text_documents);
  ~DocumentReader();
  DocumentReader(const DocumentReader&) = delete;
  DocumentReader& operator=(const DocumentReader&) = delete;
  // The next document's text (possibly only whitespace); false at the end of the file.
  bool next(std::string& text);
  std::int64_t bytes_read() const { return bytes_; }  // uncompressed

 private:
  bool next_line(std::string& line);
  void refill();

  std::string path_, field_;
  TextDocuments text_documents_;
  bool jsonl_;
  void* gz_ = nullptr;  // gzFile
  std::vector<char> buffer_;
  std::size_t pos_ = 0, end_ = 0;
  bool eof_ = false;
  std::int64_t line_ = 0, bytes_ = 0;
};

// Prepares every source (checks first that no output exists, unless overwrite), writing as described
// above; returns one report per source, in input order.
std::vector<SourceReport> prepare_corpora(const std::vector<SourceInput>& sources, const io::Tokenizer& tokenizer,
                                          const PrepareSettings& settings);

// The summary table jetmoe-prepare prints.
std::string prepare_summary_table(const std::vector<SourceReport>& reports);

}  // namespace jetmoe::data
