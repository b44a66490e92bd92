// HDF5 training checkpoints (src/io/checkpoint.hpp): bit-exact round trip, atomic writes, and one
// clear error for each way a checkpoint can be damaged. Damaged files are made here from a valid one
// with one explicit patch (truncation, a flipped byte, a rewritten attribute).
#include <sys/resource.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <memory>
#include <string>
#include <tuple>
#include <vector>

#include "core/bf16.hpp"
#include "core/deck.hpp"
#include "core/error.hpp"
#include "io/checkpoint.hpp"
#include "jetmoe/build_config.hpp"
#include "model/config.hpp"
#include "model/hf_checkpoint.hpp"
#include "model/load.hpp"
#include "parallel/comm.hpp"
#include "support.hpp"

#if JETMOE_HAVE_HDF5
#include <hdf5.h>

using Catch::Matchers::Contains;
using Catch::Matchers::EndsWith;
using Catch::Matchers::StartsWith;
using jetmoe::CheckpointDType;
using jetmoe::CheckpointMeta;
using jetmoe::CheckpointReader;
using jetmoe::CheckpointTensor;
using jetmoe::ErrorKind;
using jetmoe::testing::error_of;
using jetmoe::testing::read_bytes;
using jetmoe::testing::TempDir;
namespace fs = std::filesystem;

namespace {


void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

std::uint32_t bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}
float from_bits(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Simulates a full disk: writes past `bytes` fail with EFBIG (SIGXFSZ ignored) until destruction.
struct FileSizeLimit {
  rlimit old{};
  void (*old_handler)(int) = nullptr;
  explicit FileSizeLimit(rlim_t bytes) {
    REQUIRE(::getrlimit(RLIMIT_FSIZE, &old) == 0);
    old_handler = std::signal(SIGXFSZ, SIG_IGN);
    rlimit limited = old;
    limited.rlim_cur = bytes;
    REQUIRE(::setrlimit(RLIMIT_FSIZE, &limited) == 0);
  }
  ~FileSizeLimit() {
    ::setrlimit(RLIMIT_FSIZE, &old);
    std::signal(SIGXFSZ, old_handler);
  }
};

// A small training-like state: parameters and both AdamW moments, with names and values that probe
// the format (dots in names, a scalar, an empty tensor, NaN payloads, -0, subnormals, infinities).
struct State {
  std::vector<std::vector<float>> storage;
  jetmoe::CheckpointGroups groups;
  CheckpointMeta meta;

  explicit State(std::uint32_t seed = 1) {
    const std::vector<std::pair<std::string, std::vector<std::int64_t>>> shapes = {
        {"model.embed_tokens.weight", {7, 5}},
        {"model.layers.0.mlp.input_linear.weight", {2, 6, 5}},
        {"model.layers.0.mlp.bias", {5}},
        {"scale", {}},
        {"empty", {0, 3}},
    };
    std::uint32_t state = seed * 2654435761u + 1;
    for (const char* group : {"params", "adam_m", "adam_v"}) {
      std::vector<CheckpointTensor> tensors;
      for (const auto& [name, shape] : shapes) {
        std::int64_t n = 1;
        for (auto d : shape) n *= d;
        std::vector<float> v(static_cast<std::size_t>(n));
        for (auto& x : v) {
          state = state * 1664525u + 1013904223u;
          x = from_bits(state);  // every bit pattern, NaNs and infinities included
        }
        if (n >= 4) v[0] = -0.0f, v[1] = from_bits(0x7fc01234u), v[2] = from_bits(1u), v[3] = -INFINITY;
        storage.push_back(std::move(v));
      }
      for (std::size_t i = 0; i < shapes.size(); ++i)
        tensors.push_back({shapes[i].first, shapes[i].second, storage[storage.size() - shapes.size() + i].data()});
      groups.emplace_back(group, tensors);
    }
    meta.step = 300 + seed;
    meta.tokens_seen = 314572800;
    meta.rng_state = {0x0123456789abcdefull, ~0ull, 0, 42};
    meta.data_state = {};
    meta.deck_text = "<job>\nname = \"tiny #1\"  # quoted\n<optimizer>\nlr = 5e-4\n# naïve UTF-8\n";
    meta.model_config_json = "{\"model_type\": \"jetmoe\"}\n";
    meta.run_name = "tiny";
    meta.scalars = {{"loss", 3.25}, {"lr", 4.9e-4}, {"grad norm", -0.0}};
    meta.run_setup = "precision = fp32\nlayout = 1 x 1\nmatrix products = host BLAS " + std::to_string(seed) + "\n";
  }
};

void require_same_bits(const CheckpointReader& r, const std::string& group, const CheckpointTensor& t) {
  std::int64_t n = 1;
  for (auto d : t.shape) n *= d;
  std::vector<float> got(static_cast<std::size_t>(n), 1.0f);
  r.read(group, t.name, t.shape, got.data());
  for (std::int64_t i = 0; i < n; ++i) REQUIRE(bits(got[i]) == bits(t.data[i]));
}

// Values that probe rounding to bf16 and fp16 (above fp16's precision, its largest value, below its
// smallest subnormal, -0), as tensors "b" (stored as bf16) and "h" (fp16) of group "params".
const std::vector<float> kHalfValues = {1.0f, -2.5f, 3.14159265f, 1e-3f, 65504.0f, 1e-8f, -0.0f, 0.33333334f};
const std::vector<std::int64_t> kHalfShape = {2, 4};
jetmoe::CheckpointGroups half_tensors() {
  return {{"params",
           {{"b", kHalfShape, kHalfValues.data(), CheckpointDType::BF16},
            {"h", kHalfShape, kHalfValues.data(), CheckpointDType::F16}}}};
}

// Tensors "b" and "h" of `r` read back as kHalfValues rounded to nearest even, as torch rounds.
void require_rounded_halves(const CheckpointReader& r) {
  std::vector<float> b(8), h(8);
  r.read("params", "b", kHalfShape, b.data());
  r.read("params", "h", kHalfShape, h.data());
  for (std::size_t i = 0; i < kHalfValues.size(); ++i) {
    CHECK(bits(b[i]) == bits(jetmoe::bf16::from_float(kHalfValues[i]).to_float()));
    CHECK(bits(h[i]) == bits(jetmoe::fp16::from_float(kHalfValues[i]).to_float()));
  }
}

// `groups` with every tensor given by `fill` instead of `data` (as tensors in GPU memory are); counts
// the calls per tensor in `calls`, which must outlive the write.
jetmoe::CheckpointGroups filled(jetmoe::CheckpointGroups groups, std::vector<int>& calls) {
  std::size_t count = 0;
  for (const auto& [group, tensors] : groups) count += tensors.size();
  calls.assign(count, 0);
  std::size_t i = 0;
  for (auto& [group, tensors] : groups)
    for (CheckpointTensor& t : tensors) {
      if (t.data) {
        std::int64_t n = 1;
        for (auto d : t.shape) n *= d;
        t.fill = [&calls, i, from = t.data, n](float* out) {
          ++calls[i];
          std::memcpy(out, from, std::size_t(n) * sizeof(float));
        };
        t.data = nullptr;
      }
      ++i;
    }
  return groups;
}

// Rewrites the root attribute format_version of an existing checkpoint.
void set_format_version(const std::string& path, int version) {
  const hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
  REQUIRE(f >= 0);
  const hid_t a = H5Aopen(f, "format_version", H5P_DEFAULT);
  REQUIRE(a >= 0);
  REQUIRE(H5Awrite(a, H5T_NATIVE_INT, &version) >= 0);
  H5Aclose(a);
  H5Fclose(f);
}

std::size_t find_bytes(const std::string& haystack, const void* needle, std::size_t size) {
  const std::size_t at = haystack.find(std::string(static_cast<const char*>(needle), size));
  REQUIRE(at != std::string::npos);
  REQUIRE(haystack.find(std::string(static_cast<const char*>(needle), size), at + 1) == std::string::npos);
  return at;
}

}  // namespace

TEST_CASE("checkpoint CRC-64/XZ matches the standard check value", "[unit][checkpoint]") {
  const std::string check = "123456789";
  CHECK(jetmoe::crc64(check.data(), check.size()) == 0x995dc9bbdf1939faull);
  CHECK(jetmoe::crc64(nullptr, 0) == 0);
  // Continuing a sum equals summing at once, whatever the split (the 8-byte fast path and the tail).
  std::string long_text;
  for (int i = 0; i < 100; ++i) long_text += check;
  const std::uint64_t whole = jetmoe::crc64(long_text.data(), long_text.size());
  for (std::size_t split : {std::size_t(1), std::size_t(7), std::size_t(8), std::size_t(13), std::size_t(450)})
    CHECK(jetmoe::crc64(long_text.data() + split, long_text.size() - split, jetmoe::crc64(long_text.data(), split)) == whole);
}

TEST_CASE("checkpoint round trip is bit-exact", "[unit][checkpoint]") {
  TempDir dir;
  const State s;
  const std::string path = dir / "step-000000301.h5";
  jetmoe::write_checkpoint(path, s.meta, s.groups);
  CHECK_FALSE(fs::exists(path + ".tmp"));

  const CheckpointReader r(path);
  CHECK(r.meta().step == s.meta.step);
  CHECK(r.meta().tokens_seen == s.meta.tokens_seen);
  CHECK(r.meta().rng_state == s.meta.rng_state);
  CHECK(r.meta().data_state.empty());
  CHECK(r.meta().deck_text == s.meta.deck_text);
  CHECK(r.meta().model_config_json == s.meta.model_config_json);
  CHECK(r.meta().run_name == s.meta.run_name);
  CHECK(r.meta().run_setup == s.meta.run_setup);
  REQUIRE(r.meta().scalars.size() == 3);
  CHECK(r.meta().scalars.at("loss") == 3.25);
  CHECK(r.meta().scalars.at("lr") == 4.9e-4);
  CHECK(std::signbit(r.meta().scalars.at("grad norm")));

  for (const auto& [group, tensors] : s.groups) {
    std::vector<std::string> written;
    for (const auto& t : tensors) written.push_back(t.name);
    CHECK(r.names(group) == written);  // in the order written
    for (const auto& t : tensors) {
      CHECK(r.has(group, t.name));
      CHECK(r.shape(group, t.name) == t.shape);
      require_same_bits(r, group, t);
    }
  }
  CHECK_FALSE(r.has("params", "missing"));
  CHECK_FALSE(r.has("nope", "scale"));
  CHECK_FALSE(r.has("params", "a/b"));
  CHECK(r.names("nope").empty());

  SECTION("an empty state and empty strings survive too") {
    const std::string empty_path = dir / "empty.h5";
    jetmoe::write_checkpoint(empty_path, CheckpointMeta{}, {});
    const CheckpointReader e(empty_path);
    CHECK(e.meta().step == 0);
    CHECK(e.meta().deck_text.empty());
    CHECK(e.meta().run_name.empty());
    CHECK(e.meta().run_setup.empty());  // optional: not written, and a file without it reads as empty
    CHECK(e.meta().rng_state.empty());
    CHECK(e.meta().scalars.empty());
    CHECK(e.names("params").empty());
  }
  SECTION("writing again over an existing checkpoint replaces it") {
    const State other(2);
    jetmoe::write_checkpoint(path, other.meta, other.groups);
    const CheckpointReader again(path);
    CHECK(again.meta().step == other.meta.step);
    require_same_bits(again, "adam_v", other.groups[2].second[1]);
  }
}

TEST_CASE("checkpoint: tensors given by fill are written as their data would be", "[unit][checkpoint]") {
  // How tensors in GPU memory are written: each reaches the host only when the writer gets to it.
  TempDir dir;
  const State s;
  std::vector<int> calls;
  const jetmoe::CheckpointGroups groups = filled(s.groups, calls);
  const std::string path = dir / "step-000000301.h5";
  jetmoe::write_checkpoint(path, s.meta, groups);
  const CheckpointReader r(path);
  std::size_t i = 0;
  for (const auto& [group, tensors] : s.groups)
    for (const auto& t : tensors) {
      INFO(group << "/" << t.name);
      require_same_bits(r, group, t);  // read checks the checksum too
      CHECK(calls[i++] == (t.shape == std::vector<std::int64_t>{0, 3} ? 0 : 1));  // once; never for an empty one
    }

  SECTION("stored as bf16 and fp16") {
    std::vector<int> half_calls;
    jetmoe::write_checkpoint(dir / "half.h5", CheckpointMeta{}, filled(half_tensors(), half_calls));
    CHECK(half_calls == std::vector<int>{1, 1});
    require_rounded_halves(CheckpointReader(dir / "half.h5"));
  }
  SECTION("a failing fill fails the write and leaves the previous checkpoint") {
    const std::string before = read_bytes(path);
    jetmoe::CheckpointGroups failing = groups;
    failing[1].second[2].fill = [](float*) { jetmoe::fail(ErrorKind::Input, "adam_m bias: the device copy failed"); };
    CHECK(error_of([&] { jetmoe::write_checkpoint(path, State(2).meta, failing); }, ErrorKind::Input) ==
          "adam_m bias: the device copy failed");
    CHECK(read_bytes(path) == before);
    CHECK_FALSE(fs::exists(path + ".tmp"));
  }
}

TEST_CASE("checkpoint tensors stored as bf16 or fp16 read back rounded to nearest even", "[unit][checkpoint]") {
  TempDir dir;
  jetmoe::CheckpointGroups groups = half_tensors();
  groups[0].second.push_back({"f", kHalfShape, kHalfValues.data(), CheckpointDType::F32});
  jetmoe::write_checkpoint(dir / "half.h5", CheckpointMeta{}, groups);
  // Half the bytes of float32 on disk.
  const CheckpointReader r(dir / "half.h5");
  require_rounded_halves(r);
  std::vector<float> f(8);
  r.read("params", "f", kHalfShape, f.data());
  for (std::size_t i = 0; i < kHalfValues.size(); ++i) CHECK(bits(f[i]) == bits(kHalfValues[i]));
}

TEST_CASE("checkpoint writes are atomic: a failed write leaves the previous file untouched", "[unit][checkpoint]") {
  TempDir dir;
  const std::string path = dir / "step-000000300.h5";
  const State before(1);
  jetmoe::write_checkpoint(path, before.meta, before.groups);
  const std::string original = read_bytes(path);

  SECTION("the disk fills up in the middle of the tensors") {
    // Larger tensors than the state above, so the limit falls inside the tensor data.
    std::vector<float> big(1 << 16, 0.5f);
    const std::vector<CheckpointTensor> tensors = {{"a", {1 << 16}, big.data()}, {"b", {1 << 16}, big.data()}};
    std::string message;
    {
      FileSizeLimit limit(400000);  // the metadata and tensor a fit, tensor b does not
      message = error_of([&] { jetmoe::write_checkpoint(path, before.meta, {{"params", tensors}}); }, ErrorKind::Input);
    }
    CHECK_THAT(message, StartsWith(path + ".tmp: cannot write"));
    CHECK_THAT(message, Contains("File too large"));
  }
  SECTION("the disk is full before the file is created") {
    std::string message;
    {
      FileSizeLimit limit(100);
      message = error_of([&] { jetmoe::write_checkpoint(path, before.meta, before.groups); }, ErrorKind::Input);
    }
    CHECK_THAT(message, Contains(path));
  }
  SECTION("the directory cannot hold the file") {
    const std::string blocked = dir / "not-a-directory";
    write_bytes(blocked, "a file where the checkpoint directory should be");
    const std::string message =
        error_of([&] { jetmoe::write_checkpoint(blocked + "/step-000000300.h5", before.meta, before.groups); }, ErrorKind::Input);
    CHECK_THAT(message, StartsWith(blocked + "/step-000000300.h5: cannot create"));
    CHECK(read_bytes(blocked) == "a file where the checkpoint directory should be");
  }
  SECTION("a tensor the caller got wrong is refused before anything is written") {
    std::vector<float> x(4);
    CHECK_THAT(error_of([&] { jetmoe::write_checkpoint(path, before.meta, {{"params", {{"x", {2, -2}, x.data()}}}}); },
                        ErrorKind::Internal),
               Contains("tensor 'params/x' has shape [2, -2]"));
    CHECK_THAT(error_of([&] {
                 jetmoe::write_checkpoint(path, before.meta, {{"params", {{"x", {4}, x.data()}, {"x", {4}, x.data()}}}});
               },
                        ErrorKind::Internal),
               Contains("'params/x' given twice"));
    CHECK_THAT(error_of([&] { jetmoe::write_checkpoint(path, before.meta, {{"meta", {}}}); }, ErrorKind::Internal),
               Contains("invalid group name 'meta'"));
  }
  CHECK(read_bytes(path) == original);
  CHECK_FALSE(fs::exists(path + ".tmp"));
  CHECK(CheckpointReader(path).meta().step == before.meta.step);
}

TEST_CASE("checkpoint: a stale temporary file of an interrupted writer is replaced", "[unit][checkpoint]") {
  TempDir dir;
  const std::string path = dir / "step-000000300.h5";
  write_bytes(path + ".tmp", "half a checkpoint from a killed run");
  const State s;
  jetmoe::write_checkpoint(path, s.meta, s.groups);
  CHECK_FALSE(fs::exists(path + ".tmp"));
  CHECK(CheckpointReader(path).meta().step == s.meta.step);
}

TEST_CASE("checkpoint: a truncated file is one clear error", "[unit][checkpoint]") {
  TempDir dir;
  const State s;
  const std::string full_path = dir / "full.h5";
  jetmoe::write_checkpoint(full_path, s.meta, s.groups);
  const std::string full = read_bytes(full_path);
  for (const std::size_t length : {std::size_t(0), std::size_t(5), std::size_t(8), std::size_t(47), std::size_t(48), std::size_t(100), std::size_t(2048),
                                   full.size() / 2, full.size() - 100, full.size() - 1}) {
    CAPTURE(length);
    const std::string path = dir / ("cut-" + std::to_string(length) + ".h5");
    write_bytes(path, full.substr(0, length));
    const std::string message = error_of([&] { CheckpointReader r(path); }, ErrorKind::Input);
    CHECK_THAT(message, StartsWith(path + ": "));
    CHECK_THAT(message, Contains("truncated"));
    CHECK(message.find('\n') == std::string::npos);
  }
}

TEST_CASE("checkpoint: a flipped byte in a tensor is a checksum error naming the tensor", "[unit][checkpoint]") {
  TempDir dir;
  const State s;
  const std::string path = dir / "step-000000301.h5";
  jetmoe::write_checkpoint(path, s.meta, s.groups);
  std::string bytes = read_bytes(path);
  const CheckpointTensor& victim = s.groups[1].second[1];  // adam_m/model.layers.0.mlp.input_linear.weight
  const std::size_t at = find_bytes(bytes, victim.data, 60 * 4);
  bytes[at + 77] = static_cast<char>(bytes[at + 77] ^ 0x10);
  const std::string bad = dir / "flipped.h5";
  write_bytes(bad, bytes);

  const CheckpointReader r(bad);  // metadata is intact
  std::vector<float> out(60);
  const std::string message = error_of([&] { r.read("adam_m", victim.name, victim.shape, out.data()); }, ErrorKind::Input);
  CHECK_THAT(message, StartsWith(bad + ": checksum mismatch in tensor '/adam_m/model.layers.0.mlp.input_linear.weight': stored 0x"));
  CHECK_THAT(message, Contains(", computed 0x"));
  // The other tensors are still good.
  require_same_bits(r, "params", s.groups[0].second[1]);

  SECTION("in the stored deck") {
    std::string deck_bytes = read_bytes(path);
    const std::size_t d = find_bytes(deck_bytes, s.meta.deck_text.data(), s.meta.deck_text.size());
    deck_bytes[d + 3] = 'X';
    write_bytes(bad, deck_bytes);
    CHECK_THAT(error_of([&] { CheckpointReader again(bad); }, ErrorKind::Input),
               StartsWith(bad + ": checksum mismatch in /meta/deck_text"));
  }
}

// Everything a reader gets from a checkpoint: the metadata, and each group's tensor names, shapes and
// values (as bits).
struct Contents {
  CheckpointMeta meta;
  std::vector<std::pair<std::string, std::vector<std::string>>> names;
  std::vector<std::vector<std::int64_t>> shapes;
  std::vector<std::vector<std::uint32_t>> values;
};

Contents read_everything(const std::string& path) {
  const CheckpointReader r(path);
  Contents c{r.meta(), {}, {}, {}};
  for (const char* group : {"params", "adam_m", "adam_v"}) {
    c.names.emplace_back(group, r.names(group));
    for (const std::string& name : c.names.back().second) {
      c.shapes.push_back(r.shape(group, name));
      std::int64_t n = 1;
      for (auto d : c.shapes.back()) n *= d;
      std::vector<float> v(static_cast<std::size_t>(n));
      r.read(group, name, c.shapes.back(), v.data());
      c.values.emplace_back();
      for (float x : v) c.values.back().push_back(bits(x));
    }
  }
  return c;
}

bool same(const Contents& a, const Contents& b) {
  const auto meta = [](const CheckpointMeta& m) {
    return std::tie(m.step, m.tokens_seen, m.rng_state, m.data_state, m.deck_text, m.model_config_json, m.run_name,
                    m.run_setup);
  };
  if (meta(a.meta) != meta(b.meta) || a.meta.scalars.size() != b.meta.scalars.size()) return false;
  for (const auto& [key, value] : a.meta.scalars) {
    const auto it = b.meta.scalars.find(key);
    if (it == b.meta.scalars.end() || std::memcmp(&it->second, &value, sizeof value) != 0) return false;
  }
  return a.names == b.names && a.shapes == b.shapes && a.values == b.values;
}

// The file's own checksums (HDF5's on its metadata, ours on every tensor and the stored texts) leave a
// damaged checkpoint two outcomes: one error naming the file, or, for a bit nothing reads (free space,
// padding), exactly what the intact file gives. Never a crash, another exception or silently wrong
// values. One bit of every byte of a small checkpoint (the bit's position cycles with the byte's), each
// in a fresh file, so that nothing HDF5 keeps by file name carries over.
TEST_CASE("checkpoint: any flipped bit is one clear error or changes nothing", "[unit][checkpoint]") {
  TempDir dir;
  const State s;
  const std::string path = dir / "c.h5";
  jetmoe::write_checkpoint(path, s.meta, s.groups);
  const std::string bytes = read_bytes(path);
  const Contents intact = read_everything(path);
  std::size_t detected = 0, harmless = 0;
  for (std::size_t at = 0; at < bytes.size(); ++at) {
    CAPTURE(at);
    std::string damaged = bytes;
    damaged[at] = static_cast<char>(damaged[at] ^ (1 << (at % 8)));
    const std::string bad = dir / ("flip-" + std::to_string(at) + ".h5");
    write_bytes(bad, damaged);
    try {
      if (!same(read_everything(bad), intact)) FAIL("read without an error, but not what was written");
      ++harmless;
    } catch (const jetmoe::Error& e) {
      const std::string message = e.what();
      REQUIRE(e.kind() == ErrorKind::Input);
      REQUIRE_THAT(message, StartsWith(bad + ": "));
      REQUIRE(message.find('\n') == std::string::npos);
      REQUIRE_THAT(message, !Contains("not a jetmoe checkpoint"));  // damaged, and said so
      ++detected;
    }
    fs::remove(bad);
  }
  INFO(detected << " flips detected, " << harmless << " harmless, in " << bytes.size() << " bytes");
  CHECK(detected > bytes.size() / 4);
}

TEST_CASE("checkpoint: files that are not jetmoe checkpoints are refused clearly", "[unit][checkpoint]") {
  TempDir dir;
  SECTION("missing") {
    CHECK(error_of([&] { CheckpointReader r(dir / "none.h5"); }, ErrorKind::Input) == dir / "none.h5" + ": checkpoint does not exist");
  }
  SECTION("a text file") {
    write_bytes(dir / "text.h5", "not HDF5 at all, just text that happens to be long enough\n");
    CHECK_THAT(error_of([&] { CheckpointReader r(dir / "text.h5"); }, ErrorKind::Input),
               StartsWith(dir / "text.h5" + ": not an HDF5 file"));
  }
  SECTION("a safetensors file") {
    const std::string st = std::string(JETMOE_SOURCE_DIR) + "/tests/fixtures/models/base/model.safetensors";
    CHECK_THAT(error_of([&] { CheckpointReader r(st); }, ErrorKind::Input), StartsWith(st + ": not an HDF5 file"));
  }
  SECTION("an HDF5 file that is not a checkpoint") {
    const hid_t f = H5Fcreate((dir / "other.h5").c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    REQUIRE(f >= 0);
    H5Fclose(f);
    CHECK_THAT(error_of([&] { CheckpointReader r(dir / "other.h5"); }, ErrorKind::Input),
               Contains("other.h5: not a jetmoe checkpoint (an HDF5 file without the attribute format_version)"));
  }
  SECTION("a newer format version") {
    const State s;
    jetmoe::write_checkpoint(dir / "v2.h5", s.meta, s.groups);
    set_format_version(dir / "v2.h5", 2);
    CHECK(error_of([&] { CheckpointReader r(dir / "v2.h5"); }, ErrorKind::Input) ==
          dir / "v2.h5" + ": unknown checkpoint format version (expected 1, found 2)");
  }
}

TEST_CASE("checkpoint: missing tensors and wrong shapes name the tensor", "[unit][checkpoint]") {
  TempDir dir;
  const State s;
  const std::string path = dir / "c.h5";
  jetmoe::write_checkpoint(path, s.meta, {s.groups[0]});
  const CheckpointReader r(path);
  std::vector<float> out(100);
  CHECK(error_of([&] { r.read("params", "lm_head.weight", {7, 5}, out.data()); }, ErrorKind::Input) ==
        path + ": missing tensor '/params/lm_head.weight'");
  CHECK(error_of([&] { r.read("adam_m", "scale", {}, out.data()); }, ErrorKind::Input) ==
        path + ": missing tensor '/adam_m/scale' (the checkpoint has no group '/adam_m')");
  CHECK(error_of([&] { r.read("params", "model.embed_tokens.weight", {5, 7}, out.data()); }, ErrorKind::Input) ==
        path + ": shape mismatch for tensor '/params/model.embed_tokens.weight': expected [5, 7], found [7, 5]");
  CHECK(error_of([&] { r.read("params", "scale", {1}, out.data()); }, ErrorKind::Input) ==
        path + ": shape mismatch for tensor '/params/scale': expected [1], found []");
  CHECK_THAT(error_of([&] { (void)r.shape("params", "nope"); }, ErrorKind::Input), Contains("missing tensor '/params/nope'"));
}

TEST_CASE("checkpoint names, latest and pruning", "[unit][checkpoint]") {
  CHECK(jetmoe::checkpoint_name(0) == "step-000000000.h5");
  CHECK(jetmoe::checkpoint_name(300) == "step-000000300.h5");
  CHECK(jetmoe::checkpoint_name(12345678901) == "step-12345678901.h5");

  TempDir dir;
  CHECK_FALSE(jetmoe::latest_checkpoint(dir / "missing").has_value());
  CHECK_FALSE(jetmoe::latest_checkpoint(dir.path.string()).has_value());
  for (const char* name : {"step-000000100.h5", "step-000000020.h5", "step-000000005.h5", "step-1000.h5",
                           "step-000009999.h5.tmp", "step-abc.h5", "notes.txt", "step-.h5"})
    write_bytes(dir / name, "x");
  fs::create_directory(dir / "step-000099999.h5");  // a directory is not a checkpoint
  // By step number, not by name: step-1000 is newer than step-000000100.
  CHECK(jetmoe::latest_checkpoint(dir.path.string()) == dir / "step-1000.h5");

  jetmoe::prune_checkpoints(dir.path.string(), 2);
  CHECK(fs::exists(dir / "step-1000.h5"));
  CHECK(fs::exists(dir / "step-000000100.h5"));
  CHECK_FALSE(fs::exists(dir / "step-000000020.h5"));
  CHECK_FALSE(fs::exists(dir / "step-000000005.h5"));
  for (const char* other : {"step-000009999.h5.tmp", "step-abc.h5", "notes.txt", "step-.h5", "step-000099999.h5"})
    CHECK(fs::exists(dir / other));

  jetmoe::prune_checkpoints(dir.path.string(), 0);  // never the newest
  CHECK(fs::exists(dir / "step-1000.h5"));
  CHECK_FALSE(fs::exists(dir / "step-000000100.h5"));
  CHECK(fs::exists(dir / "step-000009999.h5.tmp"));
  CHECK(jetmoe::latest_checkpoint(dir.path.string()) == dir / "step-1000.h5");
}

TEST_CASE("checkpoint holds a model: parameters and config round trip through load_model", "[unit][checkpoint]") {
  TempDir dir;
  jetmoe::ModelConfig c = jetmoe::ModelConfig::preset("tiny");
  c.vocab_size = 50, c.hidden_size = 16, c.num_layers = 2, c.num_kv_heads = 2, c.head_dim = 4;
  c.num_experts = 3, c.top_k = 2, c.ffn_hidden_size = 12, c.max_position_embeddings = 32, c.tie_word_embeddings = false;
  c.rope_theta = 5e5;
  jetmoe::ModelWeights w(c);
  w.init_random(c, 11);
  CheckpointMeta meta;
  meta.model_config_json = jetmoe::hf_config_json(c, "float32");
  const auto params = jetmoe::checkpoint_tensors(c, w);
  const std::string path = dir / "model.h5";
  jetmoe::write_checkpoint(path, meta, {{"params", params}});

  // The config comes from the checkpoint (over the deck's preset); deck keys still win.
  const jetmoe::Deck deck = jetmoe::Deck::from_text("<model>\npreset = tiny\nweights = " + path + "\n", "m.deck");
  const jetmoe::LoadedModel m = jetmoe::load_model(deck);
  CHECK(m.config.hidden_size == 16);
  CHECK(m.config.num_experts == 3);
  CHECK(m.config.rope_theta == 5e5);
  CHECK_FALSE(m.config.tie_word_embeddings);
  CHECK_THAT(m.source, Contains("jetmoe checkpoint, step 0"));
  const auto loaded = m.weights.named(m.config);
  const auto original = w.named(c);
  REQUIRE(loaded.size() == original.size());
  for (std::size_t i = 0; i < loaded.size(); ++i) {
    auto a = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), loaded[i].flat);
    auto b = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), original[i].flat);
    REQUIRE(a.size() == b.size());
    for (std::size_t j = 0; j < a.size(); ++j) REQUIRE(bits(a(j)) == bits(b(j)));
  }
  const jetmoe::Deck with_keys = jetmoe::Deck::from_text("<model>\nweights = " + path + "\nnum_layers = 1\n", "m.deck");
  CHECK(jetmoe::ModelConfig::from_deck(with_keys).num_layers == 1);

  SECTION("a model with fewer layers than the checkpoint names the extra tensors") {
    jetmoe::ModelConfig smaller = c;
    smaller.num_layers = 1;
    CHECK_THAT(error_of([&] { jetmoe::read_checkpoint_params(CheckpointReader(path), smaller); }, ErrorKind::Input),
               Contains(path + ": 11 unexpected tensor(s) in /params for this JetMoE configuration: 'model.layers.1."));
  }
  SECTION("a model with more experts than the checkpoint names the tensor and both shapes") {
    jetmoe::ModelConfig wider = c;
    wider.num_experts = 4;
    CHECK_THAT(error_of([&] { jetmoe::read_checkpoint_params(CheckpointReader(path), wider); }, ErrorKind::Input),
               Contains(": shape mismatch for tensor '/params/model.layers.0.self_attention.experts.router.layer.weight': "
                        "expected [4, 16], found [3, 16]"));
  }
}

// Throughput of a ~100 MB checkpoint (hidden: run with `jetmoe-tests "[checkpoint-bench]"`).
TEST_CASE("checkpoint write and read throughput", "[.][checkpoint-bench]") {
  TempDir dir;
  const std::int64_t per_tensor = 1 << 20;  // 4 MiB
  const int count = 24;                     // ~100 MB
  std::vector<std::vector<float>> data(count, std::vector<float>(per_tensor));
  std::vector<CheckpointTensor> tensors;
  for (int i = 0; i < count; ++i) {
    for (std::int64_t j = 0; j < per_tensor; ++j) data[i][j] = float(i * per_tensor + j) * 1e-3f;
    tensors.push_back({"model.layers." + std::to_string(i) + ".weight", {1024, per_tensor / 1024}, data[i].data()});
  }
  const double mb = double(count) * per_tensor * 4 / 1e6;
  const std::string path = dir / "bench.h5";
  using clock = std::chrono::steady_clock;
  double write_best = 1e30, read_best = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    auto t0 = clock::now();
    jetmoe::write_checkpoint(path, CheckpointMeta{}, {{"params", tensors}});
    auto t1 = clock::now();
    const CheckpointReader r(path);
    std::vector<float> out(per_tensor);
    for (const auto& t : tensors) r.read("params", t.name, t.shape, out.data());
    auto t2 = clock::now();
    write_best = std::min(write_best, std::chrono::duration<double>(t1 - t0).count());
    read_best = std::min(read_best, std::chrono::duration<double>(t2 - t1).count());
  }
  std::vector<char> buf(std::size_t(per_tensor) * 4 * count);
  auto c0 = clock::now();
  const std::uint64_t crc = jetmoe::crc64(buf.data(), buf.size());
  auto c1 = clock::now();
  WARN("checkpoint of " << mb << " MB (" << fs::file_size(path) << " bytes): write (incl. fsync) " << mb / write_best
                        << " MB/s, read (incl. checksums) " << mb / read_best << " MB/s; CRC-64 alone "
                        << mb / std::chrono::duration<double>(c1 - c0).count() << " MB/s (crc " << crc << ")");
}

// ---- collective writes (parallel HDF5): every rank writes the tensors it owns into one file ----------

namespace {

// The groups of `s` as rank `rank` of `size` passes them: tensor i is owned by rank i % size.
jetmoe::CheckpointGroups owned_part(const jetmoe::CheckpointGroups& all, int rank, int size) {
  jetmoe::CheckpointGroups mine = all;
  int i = 0;
  for (auto& [group, tensors] : mine)
    for (CheckpointTensor& t : tensors)
      if (i++ % size != rank) t.data = nullptr;
  return mine;
}

// Waits for every rank before the enclosing scope ends (declare after rank 0's TempDir, which the
// others read from: it is removed only once they are done).
struct BarrierOnExit {
  const jetmoe::Comm& comm;
  ~BarrierOnExit() { comm.barrier(); }
};

// Rank 0's temporary directory, the one every rank writes into.
std::string shared_dir(const jetmoe::Comm& comm, const TempDir& dir) {
  std::string root = dir.path.string();
  comm.broadcast(root, 0);
  return root;
}

}  // namespace

TEST_CASE("checkpoint: a collective write holds every rank's tensors bit for bit, and rank 0's metadata",
          "[mpi][checkpoint]") {
  const jetmoe::Comm comm = jetmoe::Comm::world();
  TempDir dir;
  const BarrierOnExit wait_for_readers{comm};
  const std::string path = shared_dir(comm, dir) + "/ckpt/step-000000301.h5";  // the directory is created
  const State s;
  CheckpointMeta meta = s.meta;
  if (!comm.is_root()) meta = State(7).meta;  // the others' metadata must not be what is written
  jetmoe::write_checkpoint(comm, path, meta, owned_part(s.groups, comm.rank(), comm.size()));
  CHECK_FALSE(fs::exists(path + ".tmp"));

  const CheckpointReader r(path);  // every rank reads the whole file
  CHECK(r.meta().step == s.meta.step);
  CHECK(r.meta().tokens_seen == s.meta.tokens_seen);
  CHECK(r.meta().rng_state == s.meta.rng_state);
  CHECK(r.meta().deck_text == s.meta.deck_text);
  CHECK(r.meta().model_config_json == s.meta.model_config_json);
  CHECK(r.meta().run_name == s.meta.run_name);
  CHECK(r.meta().run_setup == s.meta.run_setup);
  CHECK(r.meta().scalars.size() == s.meta.scalars.size());
  CHECK(r.meta().scalars.at("lr") == 4.9e-4);
  for (const auto& [group, tensors] : s.groups) {
    std::vector<std::string> written;
    for (const auto& t : tensors) written.push_back(t.name);
    CHECK(r.names(group) == written);
    for (const auto& t : tensors) require_same_bits(r, group, t);  // read checks each crc64 too
  }

  SECTION("bf16 and fp16 tensors owned by different ranks") {
    const std::string half_path = shared_dir(comm, dir) + "/half.h5";
    jetmoe::write_checkpoint(comm, half_path, CheckpointMeta{},
                             owned_part(half_tensors(), comm.size() - 1 - comm.rank(), comm.size()));
    require_rounded_halves(CheckpointReader(half_path));
  }
  SECTION("tensors given by fill on their owners") {
    std::vector<int> calls;
    const std::string filled_path = shared_dir(comm, dir) + "/filled.h5";
    jetmoe::write_checkpoint(comm, filled_path, meta, filled(owned_part(s.groups, comm.rank(), comm.size()), calls));
    const CheckpointReader f(filled_path);
    std::size_t i = 0;
    for (const auto& [group, tensors] : s.groups)
      for (const auto& t : tensors) {
        require_same_bits(f, group, t);
        const bool mine = int(i % std::size_t(comm.size())) == comm.rank() && t.shape != std::vector<std::int64_t>{0, 3};
        CHECK(calls[i++] == (mine ? 1 : 0));
      }
  }
  SECTION("a tensor with no owner, or two, is a bug of the caller, refused before anything is written") {
    jetmoe::CheckpointGroups none = owned_part(s.groups, comm.rank(), comm.size());
    none[0].second[0].data = nullptr;
    const std::string bad = shared_dir(comm, dir) + "/bad.h5";
    CHECK_THAT(error_of([&] { jetmoe::write_checkpoint(comm, bad, s.meta, none); }, ErrorKind::Internal),
               Contains(comm.size() > 1 ? "tensor 'params/model.embed_tokens.weight' has 0 owning ranks, expected 1"
                                        : "tensor 'params/model.embed_tokens.weight' has no data"));
    if (comm.size() > 1) {
      CHECK_THAT(error_of([&] { jetmoe::write_checkpoint(comm, bad, s.meta, s.groups); }, ErrorKind::Internal),
                 Contains("owning ranks, expected 1"));
    }
    CHECK_FALSE(fs::exists(bad));
    CHECK_FALSE(fs::exists(bad + ".tmp"));
  }
}

TEST_CASE("checkpoint: a collective write that fails on one rank fails on every rank and keeps the previous file",
          "[mpi][checkpoint]") {
  const jetmoe::Comm comm = jetmoe::Comm::world();
  TempDir dir;
  const BarrierOnExit wait_for_readers{comm};
  const std::string root = shared_dir(comm, dir);
  const std::string path = root + "/step-000000300.h5";
  const State before(1);
  jetmoe::write_checkpoint(comm, path, before.meta, owned_part(before.groups, comm.rank(), comm.size()));
  comm.barrier();
  const std::string original = read_bytes(path);
  const int last = comm.size() - 1;

  SECTION("the last rank's file-size limit is below the file's size") {
    // Tensor b lies past 400 kB in the file; only the last rank owns it and has the limit. The space is
    // reserved before any tensor is written, so every rank learns of it before HDF5 writes data.
    std::vector<float> big(1 << 16, 0.5f);
    const std::vector<CheckpointTensor> tensors = {{"a", {1 << 16}, comm.rank() == 0 ? big.data() : nullptr},
                                                   {"b", {1 << 16}, comm.rank() == last ? big.data() : nullptr}};
    std::string message;
    {
      std::unique_ptr<FileSizeLimit> limit;
      if (comm.rank() == last) limit = std::make_unique<FileSizeLimit>(400000);
      message = error_of([&] { jetmoe::write_checkpoint(comm, path, before.meta, {{"params", tensors}}); }, ErrorKind::Input);
    }
    if (comm.size() == 1) {  // the serial writer meets the limit writing the tensor
      CHECK_THAT(message, StartsWith(path + ".tmp: cannot write tensor '/params/b'") && Contains("File too large"));
    } else {
      CHECK_THAT(message, StartsWith(path + ".tmp: cannot write the file (") && Contains("File too large") &&
                              Contains("ulimit -f, is 400000 bytes") && EndsWith("(on rank " + std::to_string(last) + ")"));
    }
    std::string on_rank_0 = message;
    comm.broadcast(on_rank_0, 0);
    CHECK(message == on_rank_0);  // one message, the same on every rank
  }
  SECTION("the checkpoint directory cannot be created") {
    const std::string blocked = root + "/not-a-directory";
    if (comm.is_root()) write_bytes(blocked, "a file where the checkpoint directory should be");
    comm.barrier();
    const std::string message = error_of(
        [&] {
          jetmoe::write_checkpoint(comm, blocked + "/step-000000300.h5", before.meta,
                                   owned_part(before.groups, comm.rank(), comm.size()));
        },
        ErrorKind::Input);
    CHECK_THAT(message, StartsWith(blocked + "/step-000000300.h5: cannot create"));
  }
  comm.barrier();
  CHECK(read_bytes(path) == original);
  CHECK_FALSE(fs::exists(path + ".tmp"));
  CHECK(CheckpointReader(path).meta().step == before.meta.step);
}

#endif  // JETMOE_HAVE_HDF5
