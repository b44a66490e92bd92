#include "data/shards.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "core/error.hpp"
#include "core/strings.hpp"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "token shards are read and written in the host's byte order, which must be little-endian"
#endif

namespace fs = std::filesystem;

namespace jetmoe::data {

namespace {

constexpr char kTokenMagic[8] = {'J', 'M', 'T', 'O', 'K', 'E', 'N', 'S'};
constexpr char kIndexMagic[8] = {'J', 'M', 'D', 'O', 'C', 'I', 'D', 'X'};
constexpr const char* kManifestFormat = "jetmoe-token-shards";

[[noreturn]] void input_error(const std::string& message) { fail(ErrorKind::Input, message); }

template <class T>
T load(const unsigned char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
template <class T>
void store(unsigned char* p, T v) {
  std::memcpy(p, &v, sizeof v);
}

std::string magic_text(const unsigned char* p) {
  std::string s;
  for (int i = 0; i < 8; ++i) {
    const char c = char(p[i]);
    s += (c >= 32 && c < 127) ? std::string(1, c) : "\\x" + std::to_string(int(p[i]));
  }
  return s;
}

// --- SHA-256 (FIPS 180-4) ---------------------------------------------------------------------------------
class Sha256 {
 public:
  void update(const unsigned char* p, std::size_t n) {
    length_ += n;
    while (n > 0) {
      const std::size_t take = std::min(n, std::size_t(64) - fill_);
      std::memcpy(block_ + fill_, p, take);
      fill_ += take, p += take, n -= take;
      if (fill_ == 64) compress(), fill_ = 0;
    }
  }
  std::string hex() {
    const std::uint64_t bits = length_ * 8;
    const unsigned char pad = 0x80;
    update(&pad, 1);
    const unsigned char zero = 0;
    while (fill_ != 56) update(&zero, 1);
    for (int i = 7; i >= 0; --i) {
      const unsigned char b = (unsigned char)(bits >> (8 * i));
      update(&b, 1);
    }
    std::string out;
    char buf[9];
    for (std::uint32_t v : h_) {
      std::snprintf(buf, sizeof buf, "%08x", v);
      out += buf;
    }
    return out;
  }

 private:
  static std::uint32_t rotr(std::uint32_t x, int n) { return (x >> n) | (x << (32 - n)); }
  void compress() {
    static constexpr std::uint32_t k[64] = {
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};
    std::uint32_t w[64];
    for (int i = 0; i < 16; ++i)
      w[i] = std::uint32_t(block_[4 * i]) << 24 | std::uint32_t(block_[4 * i + 1]) << 16 |
             std::uint32_t(block_[4 * i + 2]) << 8 | std::uint32_t(block_[4 * i + 3]);
    for (int i = 16; i < 64; ++i) {
      const std::uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
      const std::uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
      w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    std::uint32_t a = h_[0], b = h_[1], c = h_[2], d = h_[3], e = h_[4], f = h_[5], g = h_[6], h = h_[7];
    for (int i = 0; i < 64; ++i) {
      const std::uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + k[i] + w[i];
      const std::uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
      h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    h_[0] += a, h_[1] += b, h_[2] += c, h_[3] += d, h_[4] += e, h_[5] += f, h_[6] += g, h_[7] += h;
  }

  std::uint32_t h_[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                         0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
  unsigned char block_[64] = {};
  std::size_t fill_ = 0;
  std::uint64_t length_ = 0;
};

}  // namespace

int token_bytes_for_vocab(std::int64_t vocab_size) { return vocab_size <= 65536 ? 2 : 4; }

std::string sha256_hex(const void* data, std::size_t size) {
  Sha256 h;
  h.update(static_cast<const unsigned char*>(data), size);
  return h.hex();
}

std::string sha256_file_hex(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) input_error(path + ": cannot open: " + std::strerror(errno));
  Sha256 h;
  std::vector<char> buf(1 << 16);
  while (in) {
    in.read(buf.data(), std::streamsize(buf.size()));
    h.update(reinterpret_cast<const unsigned char*>(buf.data()), std::size_t(in.gcount()));
  }
  if (in.bad()) input_error(path + ": read error");
  return h.hex();
}

// --- manifest ---------------------------------------------------------------------------------------------

std::string SourceManifest::to_json() const {
  using nlohmann::ordered_json;
  auto split_json = [](const SplitInfo& s) {
    return ordered_json{{"file", s.file}, {"index", s.index}, {"documents", s.documents}, {"tokens", s.tokens}};
  };
  ordered_json inputs_json = ordered_json::array();
  for (const auto& f : inputs)
    inputs_json.push_back(ordered_json{{"path", f.path}, {"bytes", f.bytes}, {"documents", f.documents}});
  const ordered_json j = {
      {"format", kManifestFormat},
      {"format_version", kShardFormatVersion},
      {"source", source},
      {"token_bytes", token_bytes},
      {"vocab_size", vocab_size},
      {"tokenizer", ordered_json{{"model", tokenizer_model}, {"sha256", tokenizer_sha256},
                                 {"add_bos", add_bos}, {"add_eos", add_eos}}},
      {"eos_between_documents", eos_between_documents},
      {"text_documents", text_documents},
      {"text_field", text_field},
      {"validation_fraction", validation_fraction},
      {"split_seed", split_seed},
      {"inputs", inputs_json},
      {"skipped_empty_documents", skipped_empty_documents},
      {"splits", ordered_json{{"train", split_json(train)}, {"validation", split_json(validation)}}},
  };
  return j.dump(2) + "\n";
}

namespace {
// An integer field of a manifest, in [lo, hi]. The JSON library's get<> would convert a fraction or an
// out-of-range number without a word (and a float beyond the type's range is undefined behaviour).
std::int64_t manifest_integer(const nlohmann::json& v, const std::string& path, const std::string& key,
                              std::int64_t lo = 0, std::int64_t hi = std::numeric_limits<std::int64_t>::max()) {
  const bool fits = v.is_number_unsigned() ? v.get<std::uint64_t>() <= std::uint64_t(hi)
                                           : v.is_number_integer() && v.get<std::int64_t>() <= hi;
  if (!fits || v.get<std::int64_t>() < lo)
    input_error(path + ": manifest key '" + key + "' must be an integer in [" + std::to_string(lo) + ", " +
                std::to_string(hi) + "], found " + v.dump());
  return v.get<std::int64_t>();
}
}  // namespace

SourceManifest SourceManifest::from_json(const std::string& text, const std::string& path) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    input_error(path + ": not a valid JSON manifest: " + e.what());
  }
  SourceManifest m;
  std::string key;
  try {
    key = "format";
    if (!j.is_object() || j.value("format", std::string()) != kManifestFormat)
      input_error(path + ": not a jetmoe token-shard manifest (expected \"format\": \"" + kManifestFormat + "\")");
    key = "format_version";
    const auto version = manifest_integer(j.at(key), path, key);
    if (version != kShardFormatVersion)
      input_error(path + ": format_version " + std::to_string(version) + " is not supported (this build reads " +
                  std::to_string(kShardFormatVersion) + "); prepare the data again with this jetmoe-prepare");
    key = "source", m.source = j.at("source").get<std::string>();
    key = "token_bytes", m.token_bytes = int(manifest_integer(j.at(key), path, key, 2, 4));
    key = "vocab_size", m.vocab_size = manifest_integer(j.at(key), path, key, 1, std::int64_t(1) << 31);
    key = "tokenizer";
    const auto& t = j.at("tokenizer");
    m.tokenizer_model = t.at("model").get<std::string>();
    m.tokenizer_sha256 = t.at("sha256").get<std::string>();
    m.add_bos = t.at("add_bos").get<bool>();
    m.add_eos = t.at("add_eos").get<bool>();
    key = "eos_between_documents", m.eos_between_documents = j.at(key).get<bool>();
    key = "text_documents", m.text_documents = j.at(key).get<std::string>();
    key = "text_field", m.text_field = j.at(key).get<std::string>();
    key = "validation_fraction", m.validation_fraction = j.at(key).get<double>();
    key = "split_seed";
    if (!j.at(key).is_number_unsigned() && !(j.at(key).is_number_integer() && j.at(key).get<std::int64_t>() >= 0))
      input_error(path + ": manifest key 'split_seed' must be an unsigned 64-bit integer, found " + j.at(key).dump());
    m.split_seed = j.at(key).get<std::uint64_t>();
    key = "inputs";
    for (const auto& f : j.at("inputs"))
      m.inputs.push_back({f.at("path").get<std::string>(), manifest_integer(f.at("bytes"), path, "inputs: bytes"),
                          manifest_integer(f.at("documents"), path, "inputs: documents")});
    key = "skipped_empty_documents", m.skipped_empty_documents = manifest_integer(j.at(key), path, key);
    key = "splits";
    for (auto* s : {&m.train, &m.validation}) {
      const auto& sj = j.at("splits").at(s == &m.train ? "train" : "validation");
      s->file = sj.at("file").get<std::string>();
      s->index = sj.at("index").get<std::string>();
      s->documents = manifest_integer(sj.at("documents"), path, "splits: documents");
      s->tokens = manifest_integer(sj.at("tokens"), path, "splits: tokens");
      if (s->file.find('/') != std::string::npos || s->index.find('/') != std::string::npos)
        input_error(path + ": split files must be names inside the source directory, found " +
                    jetmoe::quoted(s->file.find('/') != std::string::npos ? s->file : s->index));
    }
  } catch (const nlohmann::json::exception& e) {
    input_error(path + ": manifest key '" + key + "' is missing or has the wrong type (" + e.what() + ")");
  }
  if (m.token_bytes == 3) input_error(path + ": token_bytes must be 2 or 4, found 3");
  return m;
}

// --- writing -------------------------------------------------------------------------------------------

TokenShardWriter::TokenShardWriter(std::string bin_path, std::string idx_path, std::int64_t vocab_size)
    : bin_path_(std::move(bin_path)),
      idx_path_(std::move(idx_path)),
      vocab_size_(vocab_size),
      token_bytes_(token_bytes_for_vocab(vocab_size)) {
  bin_ = std::fopen(bin_path_.c_str(), "wb");
  if (!bin_) input_error(bin_path_ + ": cannot create: " + std::strerror(errno));
  const unsigned char zeros[kShardHeaderBytes] = {};
  write_bytes(zeros, sizeof zeros);  // the header, rewritten by finish()
}

TokenShardWriter::~TokenShardWriter() {
  if (bin_) std::fclose(bin_);
}

void TokenShardWriter::write_bytes(const void* data, std::size_t size) {
  if (size == 0) return;  // an empty buffer may have no storage (fwrite wants a valid pointer)
  if (std::fwrite(data, 1, size, bin_) != size) input_error(bin_path_ + ": cannot write: " + std::strerror(errno));
}

void TokenShardWriter::add_document(const std::vector<std::int32_t>& tokens) {
  JETMOE_ASSERT(bin_ != nullptr, "add_document after finish");
  buffer_.resize(tokens.size() * std::size_t(token_bytes_));
  unsigned char* p = buffer_.data();
  for (const std::int32_t t : tokens) {
    JETMOE_ASSERT(t >= 0 && t < vocab_size_, "token " + std::to_string(t) + " outside the vocabulary");
    if (token_bytes_ == 2) store(p, std::uint16_t(t)), p += 2;
    else store(p, std::uint32_t(t)), p += 4;
  }
  write_bytes(buffer_.data(), buffer_.size());
  offsets_.push_back(offsets_.back() + tokens.size());
}

void TokenShardWriter::finish() {
  JETMOE_ASSERT(bin_ != nullptr, "finish called twice");
  unsigned char header[kShardHeaderBytes] = {};
  std::memcpy(header, kTokenMagic, 8);
  store(header + 8, kShardFormatVersion);
  store(header + 12, std::uint32_t(token_bytes_));
  store(header + 16, std::uint64_t(tokens()));
  store(header + 24, std::uint64_t(vocab_size_));
  store(header + 32, std::uint64_t(documents()));
  if (std::fseek(bin_, 0, SEEK_SET) != 0) input_error(bin_path_ + ": cannot seek: " + std::strerror(errno));
  write_bytes(header, sizeof header);
  const bool closed = std::fclose(bin_) == 0;
  bin_ = nullptr;
  if (!closed) input_error(bin_path_ + ": cannot write: " + std::strerror(errno));

  std::vector<unsigned char> idx(kShardHeaderBytes + offsets_.size() * 8, 0);
  std::memcpy(idx.data(), kIndexMagic, 8);
  store(idx.data() + 8, kShardFormatVersion);
  store(idx.data() + 16, std::uint64_t(documents()));
  store(idx.data() + 24, std::uint64_t(tokens()));
  std::memcpy(idx.data() + kShardHeaderBytes, offsets_.data(), offsets_.size() * 8);
  std::FILE* f = std::fopen(idx_path_.c_str(), "wb");
  if (!f) input_error(idx_path_ + ": cannot create: " + std::strerror(errno));
  const bool ok = std::fwrite(idx.data(), 1, idx.size(), f) == idx.size();
  if (std::fclose(f) != 0 || !ok) input_error(idx_path_ + ": cannot write: " + std::strerror(errno));
}

// --- reading -------------------------------------------------------------------------------------------

MappedFile::MappedFile(const std::string& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) input_error(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const std::string why = std::strerror(errno);
    ::close(fd);
    input_error(path + ": cannot stat: " + why);
  }
  size_ = std::size_t(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const std::string why = std::strerror(errno);
      ::close(fd);
      input_error(path + ": cannot memory-map: " + why);
    }
    data_ = static_cast<const unsigned char*>(p);
  }
  ::close(fd);
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<unsigned char*>(data_), size_);
}

MappedFile::MappedFile(MappedFile&& o) noexcept : path_(std::move(o.path_)), data_(o.data_), size_(o.size_) {
  o.data_ = nullptr, o.size_ = 0;
}

MappedFile& MappedFile::operator=(MappedFile&& o) noexcept {
  if (this != &o) {
    if (data_) ::munmap(const_cast<unsigned char*>(data_), size_);
    path_ = std::move(o.path_), data_ = o.data_, size_ = o.size_;
    o.data_ = nullptr, o.size_ = 0;
  }
  return *this;
}

TokenShard::TokenShard(const std::string& bin_path, const std::string& idx_path) : bin_(bin_path), idx_(idx_path) {
  // Token file header.
  const std::string& bp = bin_.path();
  if (bin_.size() < kShardHeaderBytes)
    input_error(bp + ": truncated token file: " + std::to_string(bin_.size()) + " bytes, shorter than the " +
                std::to_string(kShardHeaderBytes) + "-byte header");
  const unsigned char* h = bin_.data();
  if (std::memcmp(h, kTokenMagic, 8) != 0)
    input_error(bp + ": not a jetmoe token file: expected magic 'JMTOKENS', found '" + magic_text(h) + "'");
  const auto version = load<std::uint32_t>(h + 8);
  if (version != kShardFormatVersion)
    input_error(bp + ": token file format version " + std::to_string(version) + " is not supported (this build reads " +
                std::to_string(kShardFormatVersion) + ")");
  token_bytes_ = int(load<std::uint32_t>(h + 12));
  if (token_bytes_ != 2 && token_bytes_ != 4)
    input_error(bp + ": bytes per token must be 2 or 4, found " + std::to_string(token_bytes_));
  const auto count = load<std::uint64_t>(h + 16);
  const auto vocab = load<std::uint64_t>(h + 24);
  const auto docs = load<std::uint64_t>(h + 32);
  if (vocab < 1 || vocab > (std::uint64_t(1) << 31))
    input_error(bp + ": vocabulary size " + std::to_string(vocab) + " is out of range");
  const std::uint64_t payload = bin_.size() - kShardHeaderBytes;
  if (payload % std::uint64_t(token_bytes_) != 0 || count != payload / std::uint64_t(token_bytes_))
    input_error(bp + ": " + (count > payload / std::uint64_t(token_bytes_) ? "truncated" : "wrong size") +
                " token file: the header says " + std::to_string(count) + " tokens of " +
                std::to_string(token_bytes_) + " bytes after the " + std::to_string(kShardHeaderBytes) +
                "-byte header, the file has " + std::to_string(bin_.size()) + " bytes");
  tokens_ = std::int64_t(count), vocab_size_ = std::int64_t(vocab), documents_ = std::int64_t(docs);

  // Index.
  const std::string& ip = idx_.path();
  if (idx_.size() < kShardHeaderBytes)
    input_error(ip + ": truncated document index: " + std::to_string(idx_.size()) + " bytes, shorter than the " +
                std::to_string(kShardHeaderBytes) + "-byte header");
  const unsigned char* x = idx_.data();
  if (std::memcmp(x, kIndexMagic, 8) != 0)
    input_error(ip + ": not a jetmoe document index: expected magic 'JMDOCIDX', found '" + magic_text(x) + "'");
  const auto iversion = load<std::uint32_t>(x + 8);
  if (iversion != kShardFormatVersion)
    input_error(ip + ": document index format version " + std::to_string(iversion) +
                " is not supported (this build reads " + std::to_string(kShardFormatVersion) + ")");
  const auto idocs = load<std::uint64_t>(x + 16), itokens = load<std::uint64_t>(x + 24);
  if (idocs != docs || itokens != count)
    input_error(ip + ": document index does not match " + bp + ": it has " + std::to_string(idocs) +
                " documents and " + std::to_string(itokens) + " tokens, the token file " + std::to_string(docs) +
                " and " + std::to_string(count));
  const std::uint64_t ipayload = idx_.size() - kShardHeaderBytes;
  const std::uint64_t entries = ipayload / 8;  // documents + 1 when the size is right
  if (ipayload % 8 != 0 || entries == 0 || idocs != entries - 1)
    input_error(ip + ": " + (entries <= idocs ? "truncated" : "wrong size") + " document index: " +
                std::to_string(idocs) + " documents need " + std::to_string(idocs + 1) + " offsets (" +
                std::to_string(kShardHeaderBytes) + " + 8 x " + std::to_string(idocs + 1) + " bytes), the file has " +
                std::to_string(idx_.size()) + " bytes");
  std::uint64_t previous = 0;
  for (std::uint64_t d = 0; d <= idocs; ++d) {
    const auto off = load<std::uint64_t>(x + kShardHeaderBytes + 8 * d);
    if ((d == 0 && off != 0) || off < previous || off > count || (d == idocs && off != count))
      input_error(ip + ": document index is inconsistent at entry " + std::to_string(d) + ": offset " +
                  std::to_string(off) + " (previous " + std::to_string(previous) + ", " + std::to_string(count) +
                  " tokens; offsets must start at 0, never decrease and end at the token count)");
    previous = off;
  }
}

std::int64_t TokenShard::document_offset(std::int64_t d) const {
  JETMOE_ASSERT(d >= 0 && d <= documents_, "document " + std::to_string(d) + " out of range");
  return std::int64_t(load<std::uint64_t>(idx_.data() + kShardHeaderBytes + 8 * std::size_t(d)));
}

void TokenShard::bad_token(std::int64_t position, std::uint64_t value) const {
  input_error(path() + ": token " + std::to_string(position) + " is " + std::to_string(value) +
              ", outside the vocabulary [0, " + std::to_string(vocab_size_) +
              ") (corrupt file, or prepared with another tokenizer)");
}

void TokenShard::read_tokens(std::int64_t begin, std::int64_t count, std::vector<std::int32_t>& out) const {
  JETMOE_ASSERT(begin >= 0 && count >= 0 && begin + count <= tokens_, "token range out of bounds");
  const unsigned char* p = bin_.data() + kShardHeaderBytes + std::size_t(begin) * std::size_t(token_bytes_);
  const std::uint64_t vocab = std::uint64_t(vocab_size_);
  out.reserve(out.size() + std::size_t(count));
  for (std::int64_t i = 0; i < count; ++i) {
    const std::uint64_t t = token_bytes_ == 2 ? load<std::uint16_t>(p + 2 * i) : load<std::uint32_t>(p + 4 * i);
    if (t >= vocab) bad_token(begin + i, t);
    out.push_back(std::int32_t(t));
  }
}

void TokenShard::check_all_tokens() const {
  const unsigned char* p = bin_.data() + kShardHeaderBytes;
  const std::uint64_t vocab = std::uint64_t(vocab_size_);
  for (std::int64_t i = 0; i < tokens_; ++i) {
    const std::uint64_t t = token_bytes_ == 2 ? load<std::uint16_t>(p + 2 * i) : load<std::uint32_t>(p + 4 * i);
    if (t >= vocab) bad_token(i, t);
  }
}

PreparedSource open_prepared_source(const std::string& source_dir) {
  const std::string manifest_path = (fs::path(source_dir) / "manifest.json").string();
  std::ifstream in(manifest_path, std::ios::binary);
  if (!in)
    input_error(manifest_path + ": missing manifest (" + std::strerror(errno) +
                "): not a prepared source; run jetmoe-prepare");
  std::stringstream text;
  text << in.rdbuf();
  SourceManifest m = SourceManifest::from_json(text.str(), manifest_path);
  const std::string name = fs::path(source_dir).filename().string();
  if (m.source != name)
    input_error(manifest_path + ": the manifest is for source " + jetmoe::quoted(m.source) + " but its directory is '" + name + "'");
  auto shard = [&](const SplitInfo& s) {
    TokenShard t((fs::path(source_dir) / s.file).string(), (fs::path(source_dir) / s.index).string());
    if (t.tokens() != s.tokens || t.documents() != s.documents || t.vocab_size() != m.vocab_size ||
        t.token_bytes() != m.token_bytes)
      input_error(t.path() + ": does not match " + manifest_path + ": the file has " + std::to_string(t.tokens()) +
                  " tokens, " + std::to_string(t.documents()) + " documents, vocabulary " +
                  std::to_string(t.vocab_size()) + ", " + std::to_string(t.token_bytes()) +
                  "-byte tokens; the manifest says " + std::to_string(s.tokens) + ", " + std::to_string(s.documents) +
                  ", " + std::to_string(m.vocab_size) + ", " + std::to_string(m.token_bytes));
    return t;
  };
  TokenShard train = shard(m.train);
  TokenShard validation = shard(m.validation);
  return PreparedSource{source_dir, std::move(m), std::move(train), std::move(validation)};
}

std::vector<std::string> list_prepared_sources(const std::string& data_dir) {
  std::error_code ec;
  if (!fs::is_directory(data_dir, ec))
    input_error("data directory '" + data_dir + "' does not exist" +
                (fs::exists(data_dir, ec) ? std::string(" as a directory") : std::string()) +
                "; prepare the corpora first (jetmoe-prepare, e.g. -i inputs/prepare-tiny.deck)");
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(data_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (name.empty() || name[0] == '.') continue;  // .<name>.partial from an interrupted prepare
    if (entry.is_directory(ec) && fs::exists(entry.path() / "manifest.json", ec)) names.push_back(name);
  }
  if (ec) input_error("data directory '" + data_dir + "': cannot list: " + ec.message());
  std::sort(names.begin(), names.end());
  return names;
}

}  // namespace jetmoe::data
