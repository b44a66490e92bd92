#include "data/prepare.hpp"

#include <zlib.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <thread>

#include "core/error.hpp"
#include "core/log.hpp"
#include "core/strings.hpp"
#include "io/atomic_file.hpp"
#include "io/output_directory.hpp"
#include "io/tokenizer.hpp"

namespace fs = std::filesystem;

namespace jetmoe::data {

namespace {

[[noreturn]] void input_error(const std::string& message) { fail(ErrorKind::Input, message); }

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

bool is_blank(const std::string& s) {
  return std::all_of(s.begin(), s.end(), [](char c) { return std::isspace(static_cast<unsigned char>(c)) != 0; });
}

std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

std::uint64_t fnv1a64(const std::string& s) {
  std::uint64_t h = 0xcbf29ce484222325ull;
  for (const char c : s) h = (h ^ std::uint64_t(static_cast<unsigned char>(c))) * 0x100000001b3ull;
  return h;
}

// Batches of documents handed to the tokenising threads at once.
constexpr std::size_t kBatchDocuments = 4096;
constexpr std::size_t kBatchBytes = std::size_t(8) << 20;

// Tokenises texts[i] into out[i] with `jobs` threads (the calling thread is one of them).
void tokenize_batch(const io::Tokenizer& tok, const std::vector<std::string>& texts, bool add_bos, bool add_eos,
                    int jobs, std::vector<std::vector<std::int32_t>>& out) {
  out.assign(texts.size(), {});
  std::atomic<std::size_t> next{0};
  std::vector<std::exception_ptr> errors(std::size_t(std::max(jobs, 1)));
  auto work = [&](std::size_t worker) {
    try {
      for (std::size_t i = next++; i < texts.size(); i = next++) out[i] = tok.encode(texts[i], add_bos, add_eos);
    } catch (...) {
      errors[worker] = std::current_exception();
      next = texts.size();
    }
  };
  const std::size_t extra = std::min<std::size_t>(errors.size() - 1, texts.size() > 0 ? texts.size() - 1 : 0);
  std::vector<std::thread> threads;
  for (std::size_t t = 0; t < extra; ++t) threads.emplace_back(work, t + 1);
  work(0);
  for (auto& t : threads) t.join();
  for (const auto& e : errors)
    if (e) std::rethrow_exception(e);
}

std::string format_count(std::int64_t n) {
  std::string digits = std::to_string(n), out;
  for (std::size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

}  // namespace

std::string source_name_problem(const std::string& name) {
  if (name.empty()) return "the source name is empty";
  if (name[0] == '.') return "a source name must not start with '.'";
  for (const char c : name)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-' || c == '.'))
      return "a source name may only hold letters, digits, '_', '-' and '.'";
  return "";
}

std::vector<std::string> input_files(const std::string& path) {
  std::error_code ec;
  const auto status = fs::status(path, ec);
  if (!fs::exists(status)) input_error("input '" + path + "' does not exist");
  if (fs::is_regular_file(status)) return {path};
  if (!fs::is_directory(status)) input_error("input '" + path + "' is neither a file nor a directory");
  std::vector<std::string> files;
  for (const auto& entry : fs::directory_iterator(path, ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.empty() && name[0] != '.' && entry.is_regular_file(ec)) files.push_back(entry.path().string());
  }
  if (ec) input_error("input directory '" + path + "': cannot list: " + ec.message());
  if (files.empty()) input_error("input directory '" + path + "' holds no files");
  std::sort(files.begin(), files.end());
  return files;
}

bool is_validation_document(const std::string& text, std::uint64_t seed, double validation_fraction) {
  const std::uint64_t h = splitmix64(fnv1a64(text) ^ splitmix64(seed ^ 0x5EEDDA7A5EEDDA7Aull));
  return double(h >> 11) * 0x1.0p-53 < validation_fraction;
}

// --- reading documents ------------------------------------------------------------------------------------

DocumentReader::DocumentReader(const std::string& path, const std::string& text_field, TextDocuments text_documents)
    : path_(path),
      field_(text_field),
      text_documents_(text_documents),
      jsonl_(ends_with(path, ".jsonl") || ends_with(path, ".jsonl.gz")),
      buffer_(std::size_t(1) << 17) {
  if (ends_with(path, ".gz")) {  // zlib would read a file that is not gzip as plain text, without a word
    std::ifstream in(path, std::ios::binary);
    unsigned char magic[2] = {0, 0};
    in.read(reinterpret_cast<char*>(magic), 2);
    if (in && (magic[0] != 0x1f || magic[1] != 0x8b))
      input_error(path + ": not a gzip file (its name ends in .gz, but it does not start with the gzip signature "
                         "1f 8b); compress it with gzip or drop the .gz from its name");
  }
  errno = 0;
  gzFile gz = gzopen(path.c_str(), "rb");  // reads plain files as they are
  if (!gz) input_error(path + ": cannot open: " + (errno ? std::strerror(errno) : "out of memory"));
  gzbuffer(gz, 1 << 17);
  gz_ = gz;
}

DocumentReader::~DocumentReader() {
  if (gz_) gzclose(static_cast<gzFile>(gz_));
}

void DocumentReader::refill() {
  const int n = gzread(static_cast<gzFile>(gz_), buffer_.data(), unsigned(buffer_.size()));
  if (n < 0) {
    int code = 0;
    const char* msg = gzerror(static_cast<gzFile>(gz_), &code);
    input_error(path_ + ": cannot read" + (code == Z_ERRNO ? std::string(": ") + std::strerror(errno)
                                                            : std::string(" (corrupt or truncated gzip?): ") + msg));
  }
  if (n == 0) {
    // zlib reports a stream that stops early as Z_BUF_ERROR (not fatal to gzread: files may still grow).
    int code = 0;
    const char* msg = gzerror(static_cast<gzFile>(gz_), &code);
    if (code == Z_BUF_ERROR) input_error(path_ + ": cannot read (truncated gzip?): " + msg);
  }
  pos_ = 0, end_ = std::size_t(n);
  eof_ = n == 0;
  bytes_ += n;
}

bool DocumentReader::next_line(std::string& line) {
  line.clear();
  bool any = false;
  for (;;) {
    if (pos_ == end_) {
      refill();
      if (eof_) break;
    }
    any = true;
    const char* begin = buffer_.data() + pos_;
    const void* nl = std::memchr(begin, '\n', end_ - pos_);
    if (nl) {
      const std::size_t n = std::size_t(static_cast<const char*>(nl) - begin);
      line.append(begin, n);
      pos_ += n + 1;
      break;
    }
    line.append(begin, end_ - pos_);
    pos_ = end_;
  }
  if (!any) return false;
  ++line_;
  if (!line.empty() && line.back() == '\r') line.pop_back();
  return true;
}

bool DocumentReader::next(std::string& text) {
  text.clear();
  if (jsonl_) {
    std::string line;
    while (next_line(line)) {
      if (is_blank(line)) continue;
      const std::string where = path_ + ":" + std::to_string(line_);
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        std::string why = e.what();
        const auto bracket = why.find("] ");
        if (why.rfind("[json", 0) == 0 && bracket != std::string::npos) why = why.substr(bracket + 2);
        input_error(where + ": invalid JSON: " + why);
      }
      if (!j.is_object()) input_error(where + ": expected a JSON object per line, found " + std::string(j.type_name()));
      const auto it = j.find(field_);
      if (it == j.end()) {
        std::string keys;
        for (const auto& kv : j.items()) keys += (keys.empty() ? "" : ", ") + jetmoe::quoted(kv.key());
        input_error(where + ": no field \"" + field_ + "\" (prepare/text_field); the object has " +
                    (keys.empty() ? std::string("no fields") : "fields " + keys));
      }
      if (!it->is_string())
        input_error(where + ": field \"" + field_ + "\" must be a string, found " + std::string(it->type_name()));
      text = it->get<std::string>();
      return true;
    }
    return false;
  }
  if (text_documents_ == TextDocuments::File) {
    if (eof_) return false;
    for (;;) {
      if (pos_ == end_) {
        refill();
        if (eof_) break;
      }
      text.append(buffer_.data() + pos_, end_ - pos_);
      pos_ = end_;
    }
    return true;
  }
  std::string line;
  bool any = false;
  while (next_line(line)) {
    if (is_blank(line)) {
      if (any) return true;
      continue;
    }
    if (any) text += '\n';
    text += line;
    any = true;
  }
  return any;
}

// --- preparing ---------------------------------------------------------------------------------------

namespace {

struct SourceWork {
  const SourceInput* input;
  fs::path partial, final_dir;
  SourceReport report;
};

void prepare_one(SourceWork& w, const io::Tokenizer& tok, const PrepareSettings& s, const std::string& tokenizer_sha) {
  const auto t0 = std::chrono::steady_clock::now();
  const auto files = input_files(w.input->path);
  std::error_code ec;
  fs::create_directory(w.partial, ec);
  if (ec) input_error(w.partial.string() + ": cannot create the directory: " + ec.message());

  SourceManifest m;
  m.source = w.input->name;
  m.vocab_size = tok.vocab_size();
  m.token_bytes = token_bytes_for_vocab(m.vocab_size);
  m.tokenizer_model = s.tokenizer_model.empty() ? tok.path() : s.tokenizer_model;
  m.tokenizer_sha256 = tokenizer_sha;
  m.add_bos = s.add_bos, m.add_eos = s.add_eos, m.eos_between_documents = s.eos_between_documents;
  m.text_documents = s.text_documents == TextDocuments::File ? "file" : "blank-line";
  m.text_field = s.text_field;
  m.validation_fraction = s.validation_fraction;
  m.split_seed = s.seed;

  TokenShardWriter writers[2] = {
      TokenShardWriter((w.partial / m.train.file).string(), (w.partial / m.train.index).string(), m.vocab_size),
      TokenShardWriter((w.partial / m.validation.file).string(), (w.partial / m.validation.index).string(),
                       m.vocab_size)};
  std::vector<std::string> texts;
  std::vector<std::vector<std::int32_t>> tokens;
  auto flush = [&] {
    tokenize_batch(tok, texts, s.add_bos, s.add_eos, s.jobs, tokens);
    for (std::size_t i = 0; i < texts.size(); ++i) {
      auto& ids = tokens[i];
      if (s.eos_between_documents && (ids.empty() || ids.back() != tok.eos_id())) ids.push_back(tok.eos_id());
      const int split = is_validation_document(texts[i], s.seed, s.validation_fraction) ? 1 : 0;
      writers[split].add_document(ids);
    }
    texts.clear();
  };

  for (const auto& file : files) {
    DocumentReader reader(file, s.text_field, s.text_documents);
    InputFileInfo info{file, 0, 0};
    info.bytes = std::int64_t(fs::file_size(file, ec));
    std::size_t batch_bytes = 0;
    std::string text;
    while (reader.next(text)) {
      if (is_blank(text)) {
        ++w.report.skipped_empty;
        continue;
      }
      ++info.documents;
      batch_bytes += text.size();
      texts.push_back(std::move(text));
      if (texts.size() >= kBatchDocuments || batch_bytes >= kBatchBytes) flush(), batch_bytes = 0;
    }
    m.inputs.push_back(info);
    w.report.input_bytes += info.bytes;
  }
  flush();
  for (auto& wr : writers) wr.finish();

  m.skipped_empty_documents = w.report.skipped_empty;
  m.train.documents = writers[0].documents(), m.train.tokens = writers[0].tokens();
  m.validation.documents = writers[1].documents(), m.validation.tokens = writers[1].tokens();
  io::write_text_atomically((w.partial / "manifest.json").string(), m.to_json());

  w.report.files = std::int64_t(files.size());
  for (int k = 0; k < 2; ++k) w.report.documents[k] = writers[k].documents(), w.report.tokens[k] = writers[k].tokens();
  w.report.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::int64_t all = w.report.tokens[0] + w.report.tokens[1];
  log::info("%s: %lld documents, %s tokens (%s validation) from %lld file(s) in %.2f s: %.0f tokens/s",
            w.input->name.c_str(), (long long)(w.report.documents[0] + w.report.documents[1]),
            format_count(all).c_str(), format_count(w.report.tokens[1]).c_str(), (long long)w.report.files,
            w.report.seconds, w.report.seconds > 0 ? double(all) / w.report.seconds : 0.0);
}

}  // namespace

std::vector<SourceReport> prepare_corpora(const std::vector<SourceInput>& sources, const io::Tokenizer& tokenizer,
                                          const PrepareSettings& settings) {
  JETMOE_ASSERT(settings.jobs >= 1, "prepare needs at least one thread");
  const fs::path out(settings.output_dir);
  std::vector<SourceWork> work;
  std::error_code ec;
  for (const auto& src : sources) {
    const std::string problem = source_name_problem(src.name);
    if (!problem.empty()) input_error("source '" + src.name + "': " + problem);
    for (const auto& w : work)
      if (w.input->name == src.name) input_error("source '" + src.name + "' is given twice");
    input_files(src.path);  // exists, not empty
    const fs::path final_dir = out / src.name;
    if (fs::exists(final_dir, ec) && !settings.overwrite)
      input_error(final_dir.string() + " already exists (prepared before); delete it or set prepare/overwrite = true");
    work.push_back({&src, out / ("." + src.name + ".partial"), final_dir, {}});
    work.back().report.name = src.name;
  }
  const std::string tokenizer_sha = sha256_file_hex(tokenizer.path());

  io::OutputDirectory created(out, "<prepare>/output_dir");  // removed again if the run fails
  try {
    for (auto& w : work) {
      if (fs::exists(w.partial, ec)) {
        log::info("removing %s, left by an interrupted run", w.partial.string().c_str());
        io::remove_all_or_fail(w.partial);
      }
      prepare_one(w, tokenizer, settings, tokenizer_sha);
    }
    // Everything is complete: move the sources into place.
    for (auto& w : work) {
      const fs::path old = out / ("." + w.input->name + ".old");
      if (fs::exists(w.final_dir, ec)) {
        io::remove_all_or_fail(old);
        io::rename_or_fail(w.final_dir, old);
      }
      io::rename_or_fail(w.partial, w.final_dir);
      io::remove_all_or_fail(old);
    }
  } catch (...) {
    for (auto& w : work) fs::remove_all(w.partial, ec);
    throw;
  }
  created.keep();
  std::vector<SourceReport> reports;
  for (auto& w : work) reports.push_back(w.report);
  return reports;
}

std::string prepare_summary_table(const std::vector<SourceReport>& reports) {
  char line[256];
  std::string out;
  std::snprintf(line, sizeof line, "%-14s %6s %10s %11s %9s %13s %11s %9s %12s\n", "source", "files", "input MB",
                "train docs", "val docs", "train tokens", "val tokens", "seconds", "tokens/s");
  out += line;
  SourceReport total;
  for (const auto& r : reports) {
    const std::int64_t all = r.tokens[0] + r.tokens[1];
    std::snprintf(line, sizeof line, "%-14s %6lld %10.2f %11s %9s %13s %11s %9.2f %12.0f\n", r.name.c_str(),
                  (long long)r.files, double(r.input_bytes) / 1e6, format_count(r.documents[0]).c_str(),
                  format_count(r.documents[1]).c_str(), format_count(r.tokens[0]).c_str(),
                  format_count(r.tokens[1]).c_str(), r.seconds, r.seconds > 0 ? double(all) / r.seconds : 0.0);
    out += line;
    total.files += r.files, total.input_bytes += r.input_bytes, total.seconds += r.seconds;
    for (int k = 0; k < 2; ++k) total.documents[k] += r.documents[k], total.tokens[k] += r.tokens[k];
  }
  if (reports.size() > 1) {
    const std::int64_t all = total.tokens[0] + total.tokens[1];
    std::snprintf(line, sizeof line, "%-14s %6lld %10.2f %11s %9s %13s %11s %9.2f %12.0f\n", "total",
                  (long long)total.files, double(total.input_bytes) / 1e6, format_count(total.documents[0]).c_str(),
                  format_count(total.documents[1]).c_str(), format_count(total.tokens[0]).c_str(),
                  format_count(total.tokens[1]).c_str(), total.seconds,
                  total.seconds > 0 ? double(all) / total.seconds : 0.0);
    out += line;
  }
  return out;
}

}  // namespace jetmoe::data
