// The pretraining data pipeline: token shards (format, reader checks), jetmoe-prepare's corpus reading and
// tokenisation against the Tokenizer itself, and the mixture sampler (determinism, resumption, frequencies).
#include <unistd.h>
#include <zlib.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "core/deck.hpp"
#include "core/error.hpp"
#include "data/prepare.hpp"
#include "data/sampler.hpp"
#include "data/shards.hpp"
#include "io/tokenizer.hpp"
#include "support.hpp"

using Catch::Matchers::Contains;
using jetmoe::DataSampler;
using jetmoe::ErrorKind;
using jetmoe::MixtureWeights;
using jetmoe::Split;
using jetmoe::io::Tokenizer;
namespace data = jetmoe::data;
namespace fs = std::filesystem;
using Ids = std::vector<std::int32_t>;

namespace {

const std::string kFixtureTokenizer = std::string(JETMOE_SOURCE_DIR) + "/tests/fixtures/tokenizer/tokenizer.model";

const Tokenizer& fixture_tokenizer() {
  static const Tokenizer tok(kFixtureTokenizer);
  return tok;
}



void write_bytes(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << bytes;
}

void write_gzip(const std::string& path, const std::string& bytes) {
  fs::create_directories(fs::path(path).parent_path());
  gzFile gz = gzopen(path.c_str(), "wb");
  REQUIRE(gz != nullptr);
  REQUIRE(gzwrite(gz, bytes.data(), unsigned(bytes.size())) == int(bytes.size()));
  REQUIRE(gzclose(gz) == Z_OK);
}

using jetmoe::testing::read_bytes;
using jetmoe::testing::TempDir;

std::string input_error(const std::function<void()>& f) { return jetmoe::testing::error_of(f, ErrorKind::Input); }

// Every token of a shard, and its document offsets.
Ids all_tokens(const data::TokenShard& s) {
  Ids out;
  s.read_tokens(0, s.tokens(), out);
  return out;
}
std::vector<std::int64_t> all_offsets(const data::TokenShard& s) {
  std::vector<std::int64_t> out;
  for (std::int64_t d = 0; d <= s.documents(); ++d) out.push_back(s.document_offset(d));
  return out;
}

// Writes a prepared source directly: `train` and `validation` are lists of documents.
void write_source(const std::string& data_dir, const std::string& name, std::int64_t vocab,
                  const std::vector<Ids>& train, const std::vector<Ids>& validation,
                  const std::string& tokenizer_sha = std::string(64, 'a')) {
  const fs::path dir = fs::path(data_dir) / name;
  fs::create_directories(dir);
  data::SourceManifest m;
  m.source = name;
  m.vocab_size = vocab;
  m.token_bytes = data::token_bytes_for_vocab(vocab);
  m.tokenizer_model = "synthetic";
  m.tokenizer_sha256 = tokenizer_sha;
  data::SplitInfo* infos[2] = {&m.train, &m.validation};
  const std::vector<Ids>* docs[2] = {&train, &validation};
  for (int k = 0; k < 2; ++k) {
    data::TokenShardWriter w((dir / infos[k]->file).string(), (dir / infos[k]->index).string(), vocab);
    for (const auto& d : *docs[k]) w.add_document(d);
    w.finish();
    infos[k]->documents = w.documents(), infos[k]->tokens = w.tokens();
  }
  write_bytes((dir / "manifest.json").string(), m.to_json());
}

// A source whose training tokens are base, base+1, ... (one document), so a sequence tells where it came from.
void write_counting_source(const std::string& data_dir, const std::string& name, std::int32_t base, std::int32_t n,
                           std::int32_t n_validation, std::int64_t vocab) {
  Ids train, validation;
  for (std::int32_t i = 0; i < n; ++i) train.push_back(base + i);
  for (std::int32_t i = 0; i < n_validation; ++i) validation.push_back(base + i);
  write_source(data_dir, name, vocab, {train}, {validation});
}

data::PrepareSettings settings_for(const std::string& out, int jobs = 1) {
  data::PrepareSettings s;
  s.output_dir = out;
  s.tokenizer_model = kFixtureTokenizer;
  s.validation_fraction = 0.3;
  s.seed = 77;
  s.jobs = jobs;
  return s;
}

}  // namespace

// --- shards ----------------------------------------------------------------------------------------------

TEST_CASE("token shards round-trip documents in uint16 and uint32", "[unit][data]") {
  TempDir tmp;
  for (const std::int64_t vocab : {std::int64_t(300), std::int64_t(65536), std::int64_t(70000)}) {
    const std::vector<Ids> docs = {{1, 5, 7, 2}, {}, {int(vocab - 1), 0}, {3}};
    const auto bin = tmp / ("s" + std::to_string(vocab) + ".bin"), idx = tmp / ("s" + std::to_string(vocab) + ".idx");
    data::TokenShardWriter w(bin, idx, vocab);
    for (const auto& d : docs) w.add_document(d);
    w.finish();
    CHECK(w.tokens() == 7);
    const data::TokenShard s(bin, idx);
    CHECK(s.token_bytes() == (vocab <= 65536 ? 2 : 4));
    CHECK(fs::file_size(bin) == data::kShardHeaderBytes + 7 * std::size_t(s.token_bytes()));
    CHECK(s.tokens() == 7);
    CHECK(s.documents() == 4);
    CHECK(s.vocab_size() == vocab);
    CHECK(all_tokens(s) == Ids{1, 5, 7, 2, int(vocab - 1), 0, 3});
    CHECK(all_offsets(s) == std::vector<std::int64_t>{0, 4, 4, 6, 7});
    Ids part;
    s.read_tokens(3, 3, part);
    CHECK(part == Ids{2, int(vocab - 1), 0});
    s.check_all_tokens();
  }
  // An empty split is a valid shard.
  data::TokenShardWriter w(tmp / "e.bin", tmp / "e.idx", 100);
  w.finish();
  const data::TokenShard e(tmp / "e.bin", tmp / "e.idx");
  CHECK(e.tokens() == 0);
  CHECK(e.documents() == 0);
}

TEST_CASE("manifest JSON round-trips", "[unit][data]") {
  data::SourceManifest m;
  m.source = "web";
  m.vocab_size = 32000;
  m.tokenizer_model = "t.model";
  m.tokenizer_sha256 = "ab";
  m.validation_fraction = 0.25;
  m.split_seed = 99;
  m.inputs = {{"a.txt", 10, 2}, {"b.jsonl.gz", 20, 3}};
  m.train.documents = 4, m.train.tokens = 40;
  m.validation.documents = 1, m.validation.tokens = 9;
  const auto back = data::SourceManifest::from_json(m.to_json(), "m.json");
  CHECK(back.to_json() == m.to_json());
  CHECK(back.inputs.size() == 2);
  CHECK(back.split_seed == 99);
  CHECK_THAT(input_error([] { data::SourceManifest::from_json("{\"format\": \"other\"}", "x/manifest.json"); }),
             Contains("x/manifest.json: not a jetmoe token-shard manifest"));
  CHECK_THAT(input_error([] { data::SourceManifest::from_json("{oops", "x/manifest.json"); }),
             Contains("x/manifest.json: not a valid JSON manifest"));
  // Integers must be integers in range: a fraction or a number beyond int64 was converted without a word
  // (a float beyond the range is undefined behaviour; found by tests/fuzz).
  const std::string good = m.to_json();
  auto with = [&](const std::string& from, const std::string& to) {
    std::string text = good;
    REQUIRE(text.find(from) != std::string::npos);
    return text.replace(text.find(from), from.size(), to);
  };
  CHECK_THAT(input_error([&] { data::SourceManifest::from_json(with("\"vocab_size\": 32000", "\"vocab_size\": 4.9e61"), "m.json"); }),
             Contains("m.json: manifest key 'vocab_size' must be an integer in [1, 2147483648], found 4.9e+61"));
  CHECK_THAT(input_error([&] { data::SourceManifest::from_json(with("\"tokens\": 40", "\"tokens\": 40.5"), "m.json"); }),
             Contains("m.json: manifest key 'splits: tokens' must be an integer in [0, 9223372036854775807], found 40.5"));
  CHECK_THAT(input_error([&] { data::SourceManifest::from_json(with("\"token_bytes\": 2", "\"token_bytes\": 8"), "m.json"); }),
             Contains("m.json: manifest key 'token_bytes' must be an integer in [2, 4], found 8"));
  CHECK_THAT(input_error([&] { data::SourceManifest::from_json(with("\"token_bytes\": 2", "\"token_bytes\": 3"), "m.json"); }),
             Contains("m.json: token_bytes must be 2 or 4, found 3"));
  CHECK_THAT(input_error([&] { data::SourceManifest::from_json(with("\"split_seed\": 99", "\"split_seed\": -1"), "m.json"); }),
             Contains("m.json: manifest key 'split_seed' must be an unsigned 64-bit integer, found -1"));
  CHECK(data::SourceManifest::from_json(with("\"split_seed\": 99", "\"split_seed\": 18446744073709551615"), "m.json")
            .split_seed == 18446744073709551615ull);
}

TEST_CASE("sha256 matches the standard test vectors", "[unit][data]") {
  CHECK(data::sha256_hex("", 0) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(data::sha256_hex("abc", 3) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  CHECK(data::sha256_hex(two_blocks.data(), two_blocks.size()) ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST_CASE("shard readers reject damaged files with one message naming the file", "[unit][data]") {
  TempDir tmp;
  write_source(tmp.path.string(), "src", 300, {{1, 2, 3, 4}, {5, 6}}, {{7}});
  const std::string dir = tmp / "src", bin = dir + "/train.bin", idx = dir + "/train.idx";
  const std::string good_bin = read_bytes(bin), good_idx = read_bytes(idx);
  auto open = [&] { data::open_prepared_source(dir); };
  data::open_prepared_source(dir);  // the undamaged source opens

  SECTION("truncated token file") {
    write_bytes(bin, good_bin.substr(0, good_bin.size() - 3));
    CHECK_THAT(input_error(open), Contains(bin + ": truncated token file: the header says 6 tokens"));
  }
  SECTION("token file shorter than its header") {
    write_bytes(bin, good_bin.substr(0, 10));
    CHECK_THAT(input_error(open), Contains(bin + ": truncated token file: 10 bytes"));
  }
  SECTION("bad magic") {
    std::string b = good_bin;
    b.replace(0, 8, "GARBAGE!");
    write_bytes(bin, b);
    CHECK_THAT(input_error(open), Contains(bin + ": not a jetmoe token file: expected magic 'JMTOKENS', found 'GARBAGE!'"));
  }
  SECTION("unsupported version") {
    std::string b = good_bin;
    b[8] = 9;
    write_bytes(bin, b);
    CHECK_THAT(input_error(open), Contains(bin + ": token file format version 9 is not supported"));
  }
  SECTION("token outside the vocabulary") {
    std::string b = good_bin;
    const std::uint16_t bad = 300;
    std::memcpy(&b[data::kShardHeaderBytes + 2 * 2], &bad, 2);  // token 2
    write_bytes(bin, b);
    const auto shards = data::open_prepared_source(dir);  // structure is fine
    CHECK_THAT(input_error([&] { shards.train.check_all_tokens(); }),
               Contains(bin + ": token 2 is 300, outside the vocabulary [0, 300)"));
    Ids out;
    CHECK_THAT(input_error([&] { shards.train.read_tokens(1, 3, out); }), Contains(bin + ": token 2 is 300"));
  }
  SECTION("index with a decreasing offset") {
    std::string x = good_idx;
    const std::uint64_t bad = 5;
    std::memcpy(&x[data::kShardHeaderBytes + 8], &bad, 8);  // document 1 starts after document 2's start (4)
    const std::uint64_t four = 4;
    std::memcpy(&x[data::kShardHeaderBytes + 16], &four, 8);
    write_bytes(idx, x);
    CHECK_THAT(input_error(open), Contains(idx + ": document index is inconsistent at entry 2"));
  }
  SECTION("truncated index") {
    write_bytes(idx, good_idx.substr(0, good_idx.size() - 8));
    CHECK_THAT(input_error(open), Contains(idx + ": truncated document index"));
  }
  SECTION("index of another token file") {
    write_source(tmp.path.string(), "other", 300, {{1, 2, 3}}, {});
    fs::copy_file(tmp / "other/train.idx", idx, fs::copy_options::overwrite_existing);
    CHECK_THAT(input_error(open), Contains(idx + ": document index does not match " + bin));
  }
  SECTION("missing manifest") {
    fs::remove(dir + "/manifest.json");
    CHECK_THAT(input_error(open), Contains(dir + "/manifest.json: missing manifest"));
  }
  SECTION("missing token file") {
    fs::remove(dir + "/validation.bin");
    CHECK_THAT(input_error(open), Contains(dir + "/validation.bin: cannot open"));
  }
  SECTION("manifest that disagrees with the files") {
    auto m = data::SourceManifest::from_json(read_bytes(dir + "/manifest.json"), "m");
    m.train.tokens = 5;
    write_bytes(dir + "/manifest.json", m.to_json());
    CHECK_THAT(input_error(open), Contains(bin + ": does not match " + dir + "/manifest.json"));
  }
}

// --- prepare ---------------------------------------------------------------------------------------------

TEST_CASE("document reader splits plain text at blank lines and reads jsonl and gzip", "[unit][data]") {
  TempDir tmp;
  write_bytes(tmp / "a.txt", "\n\nfirst line\nsecond line\n\n  \n\nthird\r\nfourth\n\n\n   last  ");
  auto docs_of = [](const std::string& path, data::TextDocuments mode = data::TextDocuments::BlankLine) {
    data::DocumentReader r(path, "text", mode);
    std::vector<std::string> docs;
    std::string t;
    while (r.next(t)) docs.push_back(t);
    return docs;
  };
  CHECK(docs_of(tmp / "a.txt") == std::vector<std::string>{"first line\nsecond line", "third\nfourth", "   last  "});
  CHECK(docs_of(tmp / "a.txt", data::TextDocuments::File).size() == 1);
  CHECK(docs_of(tmp / "a.txt", data::TextDocuments::File)[0] == read_bytes(tmp / "a.txt"));
  write_gzip(tmp / "a.txt.gz", read_bytes(tmp / "a.txt"));
  CHECK(docs_of(tmp / "a.txt.gz") == docs_of(tmp / "a.txt"));
  write_gzip(tmp / "b.jsonl.gz", "{\"text\": \"one\\n\\ntwo\", \"id\": 1}\n\n{\"text\": \"caf\\u00e9\"}\n");
  CHECK(docs_of(tmp / "b.jsonl.gz") == std::vector<std::string>{"one\n\ntwo", "caf\xc3\xa9"});
  CHECK(docs_of(tmp / "b.jsonl.gz", data::TextDocuments::File).size() == 2);  // jsonl: always one per line

  write_bytes(tmp / "bad.jsonl", "{\"text\": \"ok\"}\n{\"text\": oops}\n");
  CHECK_THAT(input_error([&] { docs_of(tmp / "bad.jsonl"); }), Contains(tmp / "bad.jsonl" + ":2: invalid JSON: "));
  write_bytes(tmp / "field.jsonl", "{\"body\": \"x\", \"id\": 3}\n");
  CHECK_THAT(input_error([&] { docs_of(tmp / "field.jsonl"); }),
             Contains(tmp / "field.jsonl" + ":1: no field \"text\" (prepare/text_field); the object has fields 'body', 'id'"));
  write_bytes(tmp / "type.jsonl", "\n{\"text\": 5}\n");
  CHECK_THAT(input_error([&] { docs_of(tmp / "type.jsonl"); }),
             Contains(tmp / "type.jsonl" + ":2: field \"text\" must be a string, found number"));
  write_bytes(tmp / "array.jsonl", "[1, 2]\n");
  CHECK_THAT(input_error([&] { docs_of(tmp / "array.jsonl"); }),
             Contains(tmp / "array.jsonl" + ":1: expected a JSON object per line, found array"));
  const std::string gz = read_bytes(tmp / "a.txt.gz");
  write_bytes(tmp / "cut.txt.gz", gz.substr(0, gz.size() / 2));
  CHECK_THAT(input_error([&] { docs_of(tmp / "cut.txt.gz"); }), Contains(tmp / "cut.txt.gz" + ": cannot read"));
  write_bytes(tmp / "plain.txt.gz", "plain text, not gzip\n");  // zlib alone would read it as text
  CHECK_THAT(input_error([&] { docs_of(tmp / "plain.txt.gz"); }),
             Contains(tmp / "plain.txt.gz" + ": not a gzip file (its name ends in .gz"));
  CHECK_THAT(input_error([&] { data::input_files(tmp / "nothing-here"); }),
             Contains("input '" + tmp / "nothing-here" + "' does not exist"));
}

TEST_CASE("prepare writes the Tokenizer's tokens of every document, split by hash", "[unit][data]") {
  TempDir tmp;
  // prose: a directory with a plain-text file and a gzip-compressed one; code: a jsonl file.
  write_bytes(tmp / "in/prose/1.txt", "Once upon a time.\nThe end.\n\nA second story, with 42 words.\n\n\n");
  write_gzip(tmp / "in/prose/2.txt.gz", "Hello there! How are you today?\n\n   \n\nLast one: café.");
  write_bytes(tmp / "in/prose/.hidden", "ignored");
  write_bytes(tmp / "in/code.jsonl",
              "{\"text\": \"def forward(x):\\n    return x + 1\\n\"}\n"
              "{\"text\": \"   \"}\n"
              "{\"text\": \"for i in range(10): print(i)\"}\n");
  const std::vector<data::SourceInput> inputs = {{"prose", tmp / "in/prose"}, {"code", tmp / "in/code.jsonl"}};
  const auto settings = settings_for(tmp / "out");
  const auto reports = data::prepare_corpora(inputs, fixture_tokenizer(), settings);
  REQUIRE(reports.size() == 2);
  CHECK(reports[0].files == 2);
  CHECK(reports[1].skipped_empty == 1);
  CHECK_FALSE(fs::exists(tmp / "out/.prose.partial"));

  const std::map<std::string, std::vector<std::string>> documents = {
      {"prose", {"Once upon a time.\nThe end.", "A second story, with 42 words.", "Hello there! How are you today?",
                 "Last one: café."}},
      {"code", {"def forward(x):\n    return x + 1\n", "for i in range(10): print(i)"}}};
  const auto& tok = fixture_tokenizer();
  int validation_documents = 0;
  for (const auto& [name, docs] : documents) {
    Ids expected[2];
    std::vector<std::int64_t> offsets[2] = {{0}, {0}};
    for (const auto& text : docs) {
      const int k = data::is_validation_document(text, settings.seed, settings.validation_fraction) ? 1 : 0;
      Ids ids = tok.encode(text, /*add_bos=*/true, /*add_eos=*/false);
      ids.push_back(tok.eos_id());
      expected[k].insert(expected[k].end(), ids.begin(), ids.end());
      offsets[k].push_back(std::int64_t(expected[k].size()));
      validation_documents += k;
    }
    const auto src = data::open_prepared_source(tmp / ("out/" + name));
    CHECK(all_tokens(src.train) == expected[0]);
    CHECK(all_offsets(src.train) == offsets[0]);
    CHECK(all_tokens(src.validation) == expected[1]);
    CHECK(all_offsets(src.validation) == offsets[1]);
    CHECK(src.manifest.vocab_size == tok.vocab_size());
    CHECK(src.manifest.tokenizer_sha256 == data::sha256_file_hex(kFixtureTokenizer));
    CHECK(src.manifest.train.documents + src.manifest.validation.documents == std::int64_t(docs.size()));
  }
  CHECK(validation_documents > 0);  // the seed puts some of the 6 documents on each side
  CHECK(validation_documents < 6);
  CHECK(data::list_prepared_sources(tmp / "out") == std::vector<std::string>{"code", "prose"});

  // The split depends on the text and the seed only.
  int moved = 0;
  for (int i = 0; i < 1000; ++i) {
    const std::string t = "document " + std::to_string(i);
    moved += data::is_validation_document(t, 1, 0.1) != data::is_validation_document(t, 2, 0.1);
    CHECK(data::is_validation_document(t, 1, 0.1) == data::is_validation_document(t, 1, 0.1));
  }
  CHECK(moved > 50);
}

TEST_CASE("prepare output does not depend on the thread count", "[unit][data]") {
  TempDir tmp;
  // More documents than one batch, of very different lengths, so threads finish out of order.
  std::string jsonl;
  for (int i = 0; i < 5000; ++i) {
    std::string text = "Document " + std::to_string(i) + ":";
    for (int w = 0; w < (i * 37) % 60; ++w) text += " word" + std::to_string((i + w) % 97);
    jsonl += "{\"text\": \"" + text + "\"}\n";
  }
  write_gzip(tmp / "in/many.jsonl.gz", jsonl);
  const std::vector<data::SourceInput> inputs = {{"many", tmp / "in/many.jsonl.gz"}};
  data::prepare_corpora(inputs, fixture_tokenizer(), settings_for(tmp / "one", 1));
  data::prepare_corpora(inputs, fixture_tokenizer(), settings_for(tmp / "four", 4));
  for (const char* f : {"manifest.json", "train.bin", "train.idx", "validation.bin", "validation.idx"}) {
    INFO(f);
    CHECK(read_bytes(tmp / ("one/many/" + std::string(f))) == read_bytes(tmp / ("four/many/" + std::string(f))));
  }
  const auto src = data::open_prepared_source(tmp / "one/many");
  CHECK(src.train.documents() + src.validation.documents() == 5000);
}

TEST_CASE("prepare failures leave nothing behind; existing sources are kept unless overwrite", "[unit][data]") {
  TempDir tmp;
  write_bytes(tmp / "in/good.txt", "Some text.\n\nMore text.\n");
  write_bytes(tmp / "in/bad.jsonl", "{\"text\": \"fine\"}\n{\"txt\": \"no text field\"}\n");
  const std::string out = tmp / "deep/out";
  CHECK_THAT(input_error([&] {
               data::prepare_corpora({{"good", tmp / "in/good.txt"}, {"bad", tmp / "in/bad.jsonl"}},
                                     fixture_tokenizer(), settings_for(out));
             }),
             Contains(tmp / "in/bad.jsonl" + ":2: no field \"text\""));
  CHECK_FALSE(fs::exists(tmp / "deep"));  // not even the directories it created

  CHECK_THAT(input_error([&] {
               data::prepare_corpora({{"x", tmp / "in/missing.txt"}}, fixture_tokenizer(), settings_for(out));
             }),
             Contains("input '" + tmp / "in/missing.txt" + "' does not exist"));
  CHECK_THAT(input_error([&] {
               data::prepare_corpora({{".x", tmp / "in/good.txt"}}, fixture_tokenizer(), settings_for(out));
             }),
             Contains("must not start with '.'"));

  data::prepare_corpora({{"good", tmp / "in/good.txt"}}, fixture_tokenizer(), settings_for(out));
  const std::string before = read_bytes(out + "/good/train.bin");
  CHECK_THAT(input_error([&] {
               data::prepare_corpora({{"good", tmp / "in/good.txt"}}, fixture_tokenizer(), settings_for(out));
             }),
             Contains(out + "/good already exists (prepared before); delete it or set prepare/overwrite = true"));
  // A failed overwrite keeps the old source.
  auto overwrite = settings_for(out);
  overwrite.overwrite = true;
  CHECK_THROWS(data::prepare_corpora({{"good", tmp / "in/bad.jsonl"}}, fixture_tokenizer(), overwrite));
  CHECK(read_bytes(out + "/good/train.bin") == before);
  // A leftover partial directory of a killed run is cleaned up.
  fs::create_directories(out + "/.good.partial");
  write_bytes(out + "/.good.partial/train.bin", "half");
  write_bytes(tmp / "in/other.txt", "Different text entirely.\n");
  data::prepare_corpora({{"good", tmp / "in/other.txt"}}, fixture_tokenizer(), overwrite);
  CHECK(read_bytes(out + "/good/train.bin") != before);
  CHECK_FALSE(fs::exists(out + "/.good.partial"));
  CHECK_FALSE(fs::exists(out + "/.good.old"));
}

// --- sampler ---------------------------------------------------------------------------------------------

TEST_CASE("permute_index is a bijection for every size", "[unit][data]") {
  for (const std::uint64_t n : {1ull, 2ull, 3ull, 5ull, 16ull, 17ull, 100ull, 1000ull, 4097ull}) {
    for (const std::uint64_t key : {0ull, 1ull, 0xDEADBEEFull}) {
      std::vector<bool> hit(n, false);
      for (std::uint64_t i = 0; i < n; ++i) {
        const auto p = jetmoe::permute_index(i, n, key);
        REQUIRE(p < n);
        CHECK_FALSE(hit[p]);
        hit[p] = true;
      }
    }
  }
  // Different keys give different orders.
  int same = 0;
  for (std::uint64_t i = 0; i < 1000; ++i) same += jetmoe::permute_index(i, 1000, 1) == jetmoe::permute_index(i, 1000, 2);
  CHECK(same < 20);
}

TEST_CASE("sampler draws whole windows, every window once per epoch, deterministically", "[unit][data]") {
  TempDir tmp;
  const std::string dir = tmp / "data";
  write_counting_source(dir, "a", 0, 1005, 40, 2000);  // 100 windows of 10, 5 tokens left over
  DataSampler s(dir, Split::Train, 10, 2000, {}, {}, 5);
  Ids out;
  s.next(100, 1, out);
  REQUIRE(out.size() == 1000);
  std::set<std::int32_t> starts;
  for (std::size_t q = 0; q < 100; ++q) {
    const std::int32_t first = out[q * 10];
    CHECK(first % 10 == 0);
    for (int i = 0; i < 10; ++i) CHECK(out[q * 10 + std::size_t(i)] == first + i);
    starts.insert(first);
  }
  CHECK(starts.size() == 100);  // a permutation of the windows
  CHECK(s.sequences_from("a") == 100);
  Ids epoch2;
  s.next(100, 1, epoch2);
  CHECK(epoch2 != out);  // a new order in the next epoch
  std::set<std::int32_t> starts2;
  for (std::size_t q = 0; q < 100; ++q) starts2.insert(epoch2[q * 10]);
  CHECK(starts2 == starts);

  DataSampler again(dir, Split::Train, 10, 2000, {}, {}, 5);
  Ids out_again;
  again.next(60, 1, out_again);
  again.next(40, 2, out_again);  // one source: the phase does not matter
  CHECK(out_again == out);
  DataSampler other_seed(dir, Split::Train, 10, 2000, {}, {}, 6);
  Ids out_other;
  other_seed.next(100, 1, out_other);
  CHECK(out_other != out);
}

TEST_CASE("sampler resumes exactly from its state", "[unit][data]") {
  TempDir tmp;
  const std::string dir = tmp / "data";
  write_counting_source(dir, "a", 0, 3000, 100, 8000);
  write_counting_source(dir, "b", 4000, 700, 100, 8000);
  const MixtureWeights p1 = {{"a", 0.7}, {"b", 0.3}}, p2 = {{"a", 0.2}, {"b", 0.8}};
  DataSampler full(dir, Split::Train, 16, 8000, p1, p2, 42);
  Ids expected;
  full.next(150, 1, expected);
  full.next(150, 2, expected);

  for (const std::int64_t n : {0, 1, 37, 150, 151, 299}) {
    DataSampler first(dir, Split::Train, 16, 8000, p1, p2, 42);
    Ids got;
    const std::int64_t n1 = std::min<std::int64_t>(n, 150);
    first.next(n1, 1, got);
    first.next(n - n1, 2, got);
    const auto state = first.state();
    DataSampler resumed(dir, Split::Train, 16, 8000, p1, p2, 42);
    resumed.restore(state);
    CHECK(resumed.state() == state);
    resumed.next(150 - n1, 1, got);
    resumed.next(300 - n - (150 - n1), 2, got);
    INFO("resumed after " << n << " draws");
    CHECK(got == expected);
  }
  CHECK(full.sequences_drawn(1) == 150);
  CHECK(full.sequences_drawn(2) == 150);

  // States that do not fit.
  const auto state = full.state();
  DataSampler other_seed(dir, Split::Train, 16, 8000, p1, p2, 43);
  CHECK_THAT(input_error([&] { other_seed.restore(state); }), Contains("it was made with seed 42, this run has 43"));
  DataSampler other_len(dir, Split::Train, 32, 8000, p1, p2, 42);
  CHECK_THAT(input_error([&] { other_len.restore(state); }), Contains("sequences of 16 tokens, this run uses 32"));
  DataSampler validation(dir, Split::Validation, 16, 8000, p1, p2, 42);
  CHECK_THAT(input_error([&] { validation.restore(state); }), Contains("it is for the train split, not validation"));
  write_counting_source(dir, "c", 6000, 100, 0, 8000);
  DataSampler more_sources(dir, Split::Train, 16, 8000, p1, p2, 42);
  CHECK_THAT(input_error([&] { more_sources.restore(state); }), Contains("it has 2 sources, the directory now 3 (a, b, c)"));
  CHECK_THAT(input_error([&] { full.restore({1, 2, 3}); }), Contains("not a data-sampler state"));
}

TEST_CASE("sampler mixture frequencies follow the phase weights", "[unit][data]") {
  TempDir tmp;
  const std::string dir = tmp / "data";
  write_counting_source(dir, "prose", 0, 5000, 50, 10000);
  write_counting_source(dir, "code", 5000, 1000, 50, 10000);
  const MixtureWeights p1 = {{"prose", 3}, {"code", 1}}, p2 = {{"prose", 0.6}, {"code", 0.4}};
  DataSampler s(dir, Split::Train, 8, 10000, p1, p2, 7);
  // The fraction of draws from `prose` in n draws: binomial, within 5 standard deviations.
  auto check_fraction = [&](int phase, double expected) {
    const std::int64_t n = 20000;
    Ids out;
    s.next(n, phase, out);
    std::int64_t prose = 0;
    for (std::int64_t q = 0; q < n; ++q) prose += out[std::size_t(q * 8)] < 5000;
    const double fraction = double(prose) / double(n), sigma = std::sqrt(expected * (1 - expected) / double(n));
    INFO("phase " << phase << ": prose fraction " << fraction << ", expected " << expected << " +- " << sigma);
    CHECK(std::abs(fraction - expected) < 5 * sigma);
  };
  check_fraction(1, 0.75);
  check_fraction(2, 0.6);
  check_fraction(1, 0.75);
  CHECK_THAT(s.describe(), Contains("prose: 5,000 tokens, 625 sequences, weight 0.75 (phase 1), 0.6 (phase 2)"));

  // No mixture: weights are the token counts; no phase 2 mixture: the phase 1 mixture.
  DataSampler by_tokens(dir, Split::Train, 8, 10000, {}, {}, 7);
  CHECK_THAT(by_tokens.describe(), Contains("prose: 5,000 tokens, 625 sequences, weight 0.8333 (phase 1), 0.8333 (phase 2)"));
  DataSampler phase1_only(dir, Split::Train, 8, 10000, {{"code", 1}}, {}, 7);
  Ids out;
  phase1_only.next(50, 2, out);
  CHECK(std::all_of(out.begin(), out.end(), [](std::int32_t t) { return t >= 5000; }));
}

TEST_CASE("sampler validation split is a fixed list; small splits are left out", "[unit][data]") {
  TempDir tmp;
  const std::string dir = tmp / "data";
  write_counting_source(dir, "big", 0, 1000, 200, 3000);
  write_counting_source(dir, "tiny", 2000, 1000, 10, 3000);  // fewer validation tokens than one sequence
  const MixtureWeights mix = {{"big", 0.5}, {"tiny", 0.5}};
  Ids first, second;
  DataSampler(dir, Split::Validation, 16, 3000, mix, {}, 3).next(20, 1, first);
  DataSampler v(dir, Split::Validation, 16, 3000, mix, {}, 3);
  v.next(20, 1, second);
  CHECK(first == second);
  CHECK(std::all_of(first.begin(), first.end(), [](std::int32_t t) { return t < 200; }));  // only `big`
  CHECK_THAT(v.describe(), Contains("tiny: 10 tokens, 0 sequences, weight 0 (phase 1)"));
  // The training split of `tiny` is used.
  DataSampler t(dir, Split::Train, 16, 3000, mix, {}, 3);
  Ids train;
  t.next(200, 1, train);
  CHECK(std::any_of(train.begin(), train.end(), [](std::int32_t x) { return x >= 2000; }));
  // Nothing to validate on at all.
  CHECK_THAT(input_error([&] { DataSampler(dir, Split::Validation, 16, 3000, {{"tiny", 1}}, {}, 3); }),
             Contains("no source in '" + dir + "' has validation data for phase 1: a sequence needs 16 tokens; the "
                      "sources have big 200, tiny 10 tokens"));
  // A training split shorter than one sequence is an error when the source is used.
  CHECK_THAT(input_error([&] { DataSampler(dir, Split::Train, 2000, 3000, mix, {}, 3); }),
             Contains("source 'big' in '" + dir + "' has 1000 training tokens, fewer than one sequence of 2000"));
}

TEST_CASE("sampler errors name the source, the directory and what exists", "[unit][data]") {
  TempDir tmp;
  const std::string dir = tmp / "data";
  CHECK_THAT(input_error([&] { DataSampler(dir, Split::Train, 8, 100, {}, {}, 1); }),
             Contains("data directory '" + dir + "' does not exist; prepare the corpora first"));
  fs::create_directories(dir);
  CHECK_THAT(input_error([&] { DataSampler(dir, Split::Train, 8, 100, {}, {}, 1); }),
             Contains("holds no prepared sources"));
  write_counting_source(dir, "prose", 0, 100, 10, 100);
  write_counting_source(dir, "code", 0, 100, 10, 100);
  CHECK_THAT(input_error([&] { DataSampler(dir, Split::Train, 8, 100, {{"web", 1}}, {}, 1); }),
             Contains("the phase 1 mixture names source 'web', which is not prepared in '" + dir +
                      "' (available: code, prose)"));
  CHECK_THAT(input_error([&] { DataSampler(dir, Split::Train, 8, 100, {{"code", 1}}, {{"code", 1}, {"cod", 1}}, 1); }),
             Contains("the phase 2 mixture names source 'cod'"));
  CHECK_THAT(input_error([&] { DataSampler(dir, Split::Train, 8, 100, {{"code", -1}, {"prose", 2}}, {}, 1); }),
             Contains("the weight of 'code' must be finite and >= 0, found -1"));
  CHECK_THAT(input_error([&] { DataSampler(dir, Split::Train, 8, 100, {{"code", 0}}, {}, 1); }),
             Contains("the phase 1 mixture: the weights add up to 0"));
  CHECK_THAT(input_error([&] { DataSampler(dir, Split::Train, 8, 64, {}, {}, 1); }),
             Contains("source 'code' in '" + dir + "' was tokenised with a 100-piece tokenizer (synthetic) but the "
                      "model has vocab_size 64"));
  write_source(dir, "other", 100, {{1, 2, 3, 4, 5, 6, 7, 8, 9}}, {}, std::string(64, 'b'));
  CHECK_THAT(input_error([&] { DataSampler(dir, Split::Train, 8, 100, {}, {}, 1); }),
             Contains("were prepared with different tokenizers"));
}

// --- the shipped tokenizer and corpus ---------------------------------------------------------------------

TEST_CASE("the shipped tokenizer loads, has the tiny preset's vocabulary and round-trips text", "[unit][data]") {
  const Tokenizer tok(std::string(JETMOE_SOURCE_DIR) + "/data/tokenizer/tokenizer.model");
  CHECK(tok.vocab_size() == 4096);
  CHECK(tok.unk_id() == 0);
  CHECK(tok.bos_id() == 1);
  CHECK(tok.eos_id() == 2);
  for (const std::string text : {"In the beginning God created the heaven and the earth.",
                                 "int sqlite3_open_v2(const char *zFilename, sqlite3 **ppDb, int flags);\n"
                                 "  if( rc!=SQLITE_OK ) return rc;  /* 1234 */",
                                 "Unseen characters fall back to bytes: caf\xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \xf0\x9f\x99\x82"}) {
    const Ids ids = tok.encode(text);
    CHECK(ids.front() == 1);
    CHECK(std::find(ids.begin(), ids.end(), tok.unk_id()) == ids.end());  // byte fallback: no <unk>
    CHECK(tok.decode(ids) == text);
  }
  // Digits are split one by one, as Llama's.
  const Ids digits = tok.encode("2048", false);
  CHECK(digits.size() >= 4);
}

TEST_CASE("the shipped corpus is there and small", "[unit][data]") {
  const std::string dir = std::string(JETMOE_SOURCE_DIR) + "/data/corpus/";
  std::uintmax_t total = 0;
  for (const char* f : {"kjv.txt.gz", "sqlite.jsonl.gz", "README.md"}) {
    INFO(f);
    REQUIRE(fs::exists(dir + f));
    total += fs::file_size(dir + f);
  }
  CHECK(total < std::uintmax_t(3) << 20);
  data::DocumentReader prose(dir + "kjv.txt.gz", "text", data::TextDocuments::BlankLine);
  std::string first;
  REQUIRE(prose.next(first));
  CHECK(first.rfind("Genesis 1\nIn the beginning God created the heaven and the earth.", 0) == 0);
  data::DocumentReader code(dir + "sqlite.jsonl.gz", "text", data::TextDocuments::BlankLine);
  REQUIRE(code.next(first));
  CHECK_THAT(first, Contains("The author disclaims copyright to this source code."));
}

TEST_CASE("the shipped corpus prepares as inputs/prepare-tiny.deck says and feeds inputs/tiny.deck", "[unit][data]") {
  const std::string root = std::string(JETMOE_SOURCE_DIR) + "/";
  const auto prepare_deck = jetmoe::Deck::from_file(root + "inputs/prepare-tiny.deck");
  const auto train_deck = jetmoe::Deck::from_file(root + "inputs/tiny.deck");
  TempDir tmp;
  std::vector<data::SourceInput> inputs;
  for (const auto& entry : prepare_deck.get_list("prepare", "inputs")) {
    const auto eq = entry.find('=');
    inputs.push_back({entry.substr(0, eq), root + entry.substr(eq + 1)});
  }
  data::PrepareSettings s;
  s.output_dir = tmp / "tiny";
  s.tokenizer_model = root + prepare_deck.get_string("tokenizer", "model");
  CHECK(prepare_deck.get_string("tokenizer", "model") == train_deck.get_string("tokenizer", "model"));
  s.validation_fraction = prepare_deck.get_real("prepare", "validation_fraction");
  s.seed = std::uint64_t(prepare_deck.get_int("job", "seed"));
  s.jobs = 2;
  const Tokenizer tok(s.tokenizer_model);
  const auto reports = data::prepare_corpora(inputs, tok, s);
  REQUIRE(reports.size() == 2);
  CHECK(reports[0].documents[0] + reports[0].documents[1] == 1189);  // the chapters of the KJV
  CHECK(reports[1].documents[0] + reports[1].documents[1] == 130);

  const std::int64_t seq = train_deck.get_int("train", "seq_len") + 1;
  const auto p1 = train_deck.get_weights("data", "phase1_mixture"), p2 = train_deck.get_weights("data", "phase2_mixture");
  DataSampler train(s.output_dir, Split::Train, seq, tok.vocab_size(), p1, p2, 1234);
  DataSampler validation(s.output_dir, Split::Validation, seq, tok.vocab_size(), p1, p2, 1234);
  CHECK_THAT(validation.describe(), Contains("code: ") && !Contains("code: 0 tokens"));
  Ids batch;
  train.next(8, 1, batch);
  validation.next(8, 1, batch);
  REQUIRE(batch.size() == std::size_t(16 * seq));
  // The text reads back: a window decodes to the corpus' words.
  const std::string text = tok.decode(Ids(batch.begin(), batch.begin() + seq));
  CHECK(text.size() > std::size_t(seq));
}
