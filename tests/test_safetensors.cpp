// safetensors reader and writers against files written by the reference implementation
// (scripts/fixtures/make_safetensors_fixtures.py: Python safetensors + huggingface_hub's splitter).
// Corrupt files are made here, each from a valid fixture with one explicit patch.
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <csignal>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "core/bf16.hpp"
#include "core/error.hpp"
#include "io/safetensors.hpp"
#include "support.hpp"

using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;
using jetmoe::Error;
using jetmoe::ErrorKind;
using jetmoe::io::DType;
using jetmoe::io::SafetensorsCheckpoint;
using jetmoe::io::SafetensorsFile;
using jetmoe::io::TensorToWrite;
namespace fs = std::filesystem;

namespace {

std::string fixture(const std::string& name) {
  return std::string(JETMOE_SOURCE_DIR) + "/tests/fixtures/safetensors/" + name;
}

// A fresh directory, removed with everything in it at the end of the test.
struct TempDir {
  fs::path path;
  TempDir() {
    std::string templ = (fs::temp_directory_path() / "jetmoe-safetensors-XXXXXX").string();
    REQUIRE(::mkdtemp(templ.data()) != nullptr);
    path = templ;
  }
  ~TempDir() {
    std::error_code ec;
    fs::permissions(path, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(path, ec);
  }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  REQUIRE(in.good());
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}
void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  REQUIRE(out.good());
}

// A file's JSON header and data section, and the file made from them (the length is recomputed).
struct Parts {
  std::string header, data;
};
Parts split(const std::string& file) {
  std::uint64_t n = 0;
  std::memcpy(&n, file.data(), 8);
  return {file.substr(8, n), file.substr(8 + n)};
}
std::string join(const Parts& p) {
  const std::uint64_t n = p.header.size();
  return std::string(reinterpret_cast<const char*>(&n), 8) + p.header + p.data;
}

// Copies fixture `name` to `dir`/bad.safetensors with `from` replaced by `to` in its header (which
// must contain `from` once) and `extra` appended to the data; returns the new file's path.
std::string patched(const TempDir& dir, const std::string& name, const std::string& from, const std::string& to,
                    const std::string& extra = "") {
  Parts p = split(read_bytes(fixture(name)));
  const auto at = p.header.find(from);
  REQUIRE(at != std::string::npos);
  REQUIRE(p.header.find(from, at + 1) == std::string::npos);
  p.header.replace(at, from.size(), to);
  p.data += extra;
  const std::string path = dir / "bad.safetensors";
  write_bytes(path, join(p));
  return path;
}

template <class F>
std::string error_of(F&& f, ErrorKind kind = ErrorKind::Input) {
  return jetmoe::testing::error_of(std::forward<F>(f), kind);
}
std::string open_error(const std::string& path) {
  return error_of([&] { SafetensorsFile::open(path); });
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

// Owns the bytes of tensors to write (TensorToWrite only points at them).
struct TensorSet {
  std::vector<std::vector<std::uint8_t>> storage;
  std::vector<TensorToWrite> tensors;
  template <class T>
  void add(const std::string& name, DType dtype, std::vector<std::int64_t> shape, const std::vector<T>& values) {
    storage.emplace_back(values.size() * sizeof(T));
    if (!values.empty()) std::memcpy(storage.back().data(), values.data(), storage.back().size());
    tensors.push_back({name, dtype, std::move(shape), nullptr});
  }
  std::vector<TensorToWrite> get() {
    for (std::size_t i = 0; i < tensors.size(); ++i) tensors[i].data = storage[i].data();
    return tensors;
  }
};

std::uint16_t f16_bits(float f) { return jetmoe::fp16::from_float(f).bits; }

// golden_tensors() of the fixture script, given in another order (the writer sorts).
TensorSet golden_tensors() {
  TensorSet s;
  s.add("s", DType::F64, {}, std::vector<double>{2.5});
  s.add("empty", DType::F32, {0}, std::vector<float>{});
  s.add("f64", DType::F64, {2}, std::vector<double>{0.125, -1e10});
  s.add("i32", DType::I32, {2}, std::vector<std::int32_t>{-5, 6});
  s.add("u8", DType::U8, {3}, std::vector<std::uint8_t>{7, 8, 9});
  s.add("mask", DType::BOOL, {5}, std::vector<std::uint8_t>{1, 0, 1, 1, 0});
  s.add("ids", DType::I64, {3}, std::vector<std::int64_t>{3, -1, std::int64_t(1) << 40});
  s.add("layer.2.w", DType::F16, {1}, std::vector<std::uint16_t>{f16_bits(0.5f)});
  s.add("layer.10.w", DType::F16, {3}, std::vector<std::uint16_t>{f16_bits(1), f16_bits(2), f16_bits(-3)});
  s.add("B.bias", DType::F32, {3}, std::vector<float>{0.25f, -0.5f, 8.0f});
  std::vector<std::uint16_t> a(5);
  for (int i = 0; i < 5; ++i) a[i] = static_cast<std::uint16_t>(0x3f80 + i);
  s.add("a.weight", DType::BF16, {5}, a);
  std::vector<float> b(6);
  for (int i = 0; i < 6; ++i) b[i] = i * 0.5f - 1.0f;
  s.add("b.weight", DType::F32, {2, 3}, b);
  return s;
}

// model_tensors() of the fixture script: a one-layer JetMoE in save_pretrained's order.
const std::vector<std::pair<std::string, std::vector<std::int64_t>>>& model_shapes() {
  static const std::vector<std::pair<std::string, std::vector<std::int64_t>>> shapes = {
      {"model.embed_tokens.weight", {16, 8}},
      {"model.layers.0.input_layernorm.weight", {8}},
      {"model.layers.0.self_attention.experts.router.layer.weight", {2, 8}},
      {"model.layers.0.self_attention.experts.input_linear.weight", {2, 8, 8}},
      {"model.layers.0.self_attention.experts.output_linear.weight", {2, 8, 8}},
      {"model.layers.0.self_attention.experts.bias", {8}},
      {"model.layers.0.self_attention.kv_proj.weight", {16, 8}},
      {"model.layers.0.post_attention_layernorm.weight", {8}},
      {"model.layers.0.mlp.router.layer.weight", {2, 8}},
      {"model.layers.0.mlp.input_linear.weight", {2, 8, 8}},
      {"model.layers.0.mlp.output_linear.weight", {2, 8, 4}},
      {"model.layers.0.mlp.bias", {8}},
      {"model.norm.weight", {8}},
  };
  return shapes;
}
std::vector<std::uint16_t> model_bits(std::size_t k, std::int64_t numel) {
  std::vector<std::uint16_t> v(static_cast<std::size_t>(numel));
  for (std::int64_t i = 0; i < numel; ++i) v[i] = static_cast<std::uint16_t>((0x3c00 + 7 * k + i) % 0x4000);
  return v;
}
TensorSet model_tensors() {
  TensorSet s;
  for (std::size_t k = 0; k < model_shapes().size(); ++k) {
    const auto& [name, shape] = model_shapes()[k];
    std::int64_t n = 1;
    for (auto d : shape) n *= d;
    s.add(name, DType::BF16, shape, model_bits(k, n));
  }
  return s;
}

void check_model_values(const SafetensorsCheckpoint& c) {
  std::vector<std::string> expected;
  for (const auto& entry : model_shapes()) expected.push_back(entry.first);
  std::sort(expected.begin(), expected.end());
  CHECK(c.names() == expected);
  for (std::size_t k = 0; k < model_shapes().size(); ++k) {
    const auto& [name, shape] = model_shapes()[k];
    const std::vector<float> v = c.read_as_float(name, shape);
    const std::vector<std::uint16_t> b = model_bits(k, static_cast<std::int64_t>(v.size()));
    for (std::size_t i = 0; i < v.size(); ++i) REQUIRE(bits(v[i]) == std::uint32_t(b[i]) << 16);
  }
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

}  // namespace

// ---- reading the reference's files ----------------------------------------------------------------

TEST_CASE("safetensors reads every dtype written by the reference library", "[unit][safetensors]") {
  const auto f = SafetensorsFile::open(fixture("dtypes.safetensors"));
  CHECK(f.metadata().empty());
  CHECK(f.names() == std::vector<std::string>{"bf16", "bool", "empty", "f16", "f32", "f64", "i16", "i32", "i64", "i8",
                                              "scalar", "u16", "u32", "u64", "u64_too_big", "u8"});
  REQUIRE(f.find("bf16") != nullptr);
  CHECK(f.find("bf16")->dtype == DType::BF16);
  CHECK(f.find("bf16")->shape == std::vector<std::int64_t>{3, 3});
  CHECK(f.find("nope") == nullptr);

  const auto f32 = f.read_as_float("f32", {2, 4});
  CHECK(bits(f32[0]) == 0x00000000u);
  CHECK(bits(f32[1]) == 0x80000000u);
  CHECK(f32[2] == 1.5f);
  CHECK(f32[3] == -2.25f);
  CHECK(bits(f32[4]) == 0x7f7fffffu);  // FLT_MAX
  CHECK(bits(f32[5]) == 0x00000001u);  // smallest subnormal
  CHECK(bits(f32[6]) == 0x7f800000u);
  CHECK(std::isnan(f32[7]));

  // F64 is rounded to the nearest float.
  CHECK(f.read_as_float("f64", {4}) == std::vector<float>{0.1f, -2.5f, 1.0f / 3.0f, 0.0f});

  const std::vector<std::uint16_t> f16_bits_in_file = {0x0000, 0x8000, 0x3c00, 0xc000, 0x0001,
                                                       0x7bff, 0x3555, 0x7c00, 0x7e00};
  const std::vector<std::uint32_t> f16_as_float = {0x00000000u, 0x80000000u, 0x3f800000u, 0xc0000000u, 0x33800000u,
                                                   0x477fe000u, 0x3eaaa000u, 0x7f800000u, 0x7fc00000u};
  const auto f16 = f.read_as_float("f16", {3, 3});
  for (std::size_t i = 0; i < f16.size(); ++i) CHECK(bits(f16[i]) == f16_as_float[i]);
  CHECK(from_bits(f16_as_float[4]) == std::ldexp(1.0f, -24));
  CHECK(from_bits(f16_as_float[5]) == 65504.0f);
  CHECK(f16_bits_in_file.size() == f16.size());

  const std::vector<std::uint16_t> bf16_in_file = {0x0000, 0x8000, 0x3f80, 0xc000, 0x0001,
                                                   0x7f7f, 0x3eab, 0xff80, 0x7fc0};
  const auto bf16 = f.read_as_float("bf16", {3, 3});
  for (std::size_t i = 0; i < bf16.size(); ++i) CHECK(bits(bf16[i]) == std::uint32_t(bf16_in_file[i]) << 16);
  const auto raw = f.bytes("bf16");
  REQUIRE(raw.size == 18);
  CHECK(raw.data[4] == 0x80);  // little-endian 0x3f80
  CHECK(raw.data[5] == 0x3f);

  constexpr std::int64_t i64_min = std::numeric_limits<std::int64_t>::min();
  CHECK(f.read_as_int64("i64", {4}) == std::vector<std::int64_t>{i64_min, INT64_MAX, 0, -1});
  CHECK(f.read_as_int64("i32", {4}) == std::vector<std::int64_t>{INT32_MIN, INT32_MAX, 0, -7});
  CHECK(f.read_as_int64("i16", {3}) == std::vector<std::int64_t>{-32768, 32767, -1});
  CHECK(f.read_as_int64("i8", {3}) == std::vector<std::int64_t>{-128, 127, 0});
  CHECK(f.read_as_int64("u8", {2, 2}) == std::vector<std::int64_t>{0, 1, 128, 255});
  CHECK(f.read_as_int64("u16", {2}) == std::vector<std::int64_t>{0, 65535});
  CHECK(f.read_as_int64("u32", {2}) == std::vector<std::int64_t>{0, 4294967295LL});
  CHECK(f.read_as_int64("u64", {2}) == std::vector<std::int64_t>{0, INT64_MAX});
  CHECK(f.read_as_int64("bool", {4}) == std::vector<std::int64_t>{1, 0, 0, 1});
  CHECK(f.read_as_float("scalar", {}) == std::vector<float>{42.0f});
  CHECK(f.read_as_float("empty", {0, 3}).empty());
  CHECK(f.info("empty").nbytes() == 0);
}

TEST_CASE("safetensors reads metadata written by the reference library", "[unit][safetensors]") {
  const auto f = SafetensorsFile::open(fixture("metadata.safetensors"));
  const std::map<std::string, std::string> expected = {{"format", "pt"},
                                                       {"quote\"back\\slash", "line\nbreak\ttab"},
                                                       {"unicode",
                                                        "m\xc3\xa9tadonn\xc3\xa9"
                                                        "es \xe2\x9c\x93"}};
  CHECK(f.metadata() == expected);
  CHECK(f.read_as_float("x", {1}) == std::vector<float>{1.0f});
}

TEST_CASE("safetensors conversions check shape and dtype and name file and tensor", "[unit][safetensors]") {
  const std::string path = fixture("dtypes.safetensors");
  const auto f = SafetensorsFile::open(path);
  CHECK(error_of([&] {
          f.read_as_float("f32", {4, 2});
        }) == path + ": tensor 'f32': expected shape [4, 2], found [2, 4]");
  CHECK(error_of([&] { f.read_as_float("i32", {4}); }) ==
        path + ": tensor 'i32': dtype I32 is not a floating-point type (expected F16, BF16, F32 or F64)");
  CHECK(error_of([&] {
          f.read_as_int64("f16", {3, 3});
        }) ==
        path +
            ": tensor 'f16': dtype F16 is not an integer type (expected BOOL, U8, I8, I16, U16, I32, U32, I64 or U64)");
  CHECK(error_of([&] { f.read_as_int64("u64_too_big", {1}); }) ==
        path + ": tensor 'u64_too_big': element 0 = 18446744073709551615 does not fit in int64");
  CHECK(error_of([&] { f.info("f33"); }) == path + ": no tensor 'f33' (did you mean 'f32'?)");

  TempDir dir;
  std::string bytes = read_bytes(path);
  bytes.back() = 2;  // the last tensor is "bool"
  write_bytes(dir / "bool.safetensors", bytes);
  const auto g = SafetensorsFile::open(dir / "bool.safetensors");
  CHECK(error_of([&] { g.read_as_int64("bool", {4}); }) ==
        dir / "bool.safetensors" + ": tensor 'bool': BOOL element 3 is the byte 2 (expected 0 or 1)");
}

TEST_CASE("safetensors file stays valid when moved", "[unit][safetensors]") {
  auto f = SafetensorsFile::open(fixture("golden.safetensors"));
  const std::uint8_t* before = f.bytes("b.weight").data;
  SafetensorsFile g = std::move(f);
  CHECK(g.bytes("b.weight").data == before);
  CHECK(g.read_as_float("b.weight", {2, 3}) == std::vector<float>{-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 1.5f});
  g = SafetensorsFile::open(fixture("metadata.safetensors"));
  CHECK(g.names() == std::vector<std::string>{"x"});
}

// ---- corrupt files: one clear error each ----------------------------------------------------------
// golden.safetensors: 878 bytes, header 752 bytes, data 118 bytes; the last tensors are
// "layer.2.w" [108,110], "u8" [110,113], "mask" [113,118].

TEST_CASE("safetensors reports a truncated file", "[unit][safetensors]") {
  TempDir dir;
  const std::string bytes = read_bytes(fixture("golden.safetensors"));
  REQUIRE(split(bytes).data.size() == 118);
  write_bytes(dir / "t.safetensors", bytes.substr(0, bytes.size() - 5));
  CHECK(open_error(dir / "t.safetensors") ==
        dir / "t.safetensors" + ": file is truncated: header says the data section is 118 bytes, found 113");

  write_bytes(dir / "tiny.safetensors", bytes.substr(0, 5));
  CHECK(open_error(dir / "tiny.safetensors") ==
        dir / "tiny.safetensors" +
            ": file is too small for safetensors (5 bytes; the header length field alone takes 8)");

  // Cut inside the header: the length field now points past the end.
  write_bytes(dir / "h.safetensors", bytes.substr(0, 100));
  CHECK(
      open_error(dir / "h.safetensors") ==
      dir / "h.safetensors" +
          ": malformed or oversized header: its length field says 752 bytes, but only 92 bytes follow it in the file");
}

TEST_CASE("safetensors rejects an oversized header length", "[unit][safetensors]") {
  TempDir dir;
  std::string bytes = read_bytes(fixture("golden.safetensors"));
  const std::uint64_t huge = 200'000'000;
  std::memcpy(bytes.data(), &huge, 8);
  write_bytes(dir / "o.safetensors", bytes);
  CHECK(open_error(dir / "o.safetensors") ==
        dir / "o.safetensors" +
            ": malformed or oversized header: its length field says 200000000 bytes, but the limit is 100000000");
}

TEST_CASE("safetensors rejects a header that is not valid JSON", "[unit][safetensors]") {
  TempDir dir;
  const std::string path = patched(dir, "golden.safetensors", R"("dtype":"I64")", R"("dtype":I64")");
  const std::string message = open_error(path);
  CHECK_THAT(message, StartsWith(path + ": the header is not valid JSON ("));
  CHECK_THAT(message, Contains("parse error"));

  write_bytes(dir / "array.safetensors", join({"[]      ", ""}));
  CHECK(open_error(dir / "array.safetensors") ==
        dir / "array.safetensors" + ": the header must be a JSON object, found array");
}

TEST_CASE("safetensors rejects data offsets outside the data section", "[unit][safetensors]") {
  TempDir dir;
  const std::string path = patched(dir, "golden.safetensors", "[113,118]", "[1000,1005]");
  CHECK(open_error(path) ==
        path + ": tensor 'mask': data_offsets [1000, 1005] lie outside the data section (118 bytes)");
}

TEST_CASE("safetensors rejects overlapping tensors", "[unit][safetensors]") {
  TempDir dir;
  const std::string path = patched(dir, "golden.safetensors", "[110,113]", "[108,111]");
  CHECK(open_error(path) ==
        path + ": tensor 'u8': data_offsets [108, 111] overlap those of tensor 'layer.2.w' [108, 110]");
}

TEST_CASE("safetensors rejects offsets that do not match dtype and shape", "[unit][safetensors]") {
  TempDir dir;
  const std::string path = patched(dir, "golden.safetensors", R"("shape":[2,3])", R"("shape":[2,4])");
  CHECK(open_error(path) == path +
                                ": tensor 'b.weight': data_offsets [60, 84] hold 24 bytes, but dtype F32 and "
                                "shape [2, 4] need 32 bytes");
}

TEST_CASE("safetensors rejects an unknown dtype", "[unit][safetensors]") {
  TempDir dir;
  const std::string path = patched(dir, "golden.safetensors", R"("dtype":"BF16")", R"("dtype":"BF17")");
  CHECK(open_error(path) == path +
                                ": tensor 'a.weight': unknown dtype \"BF17\" (supported: BOOL, U8, I8, I16, "
                                "U16, F16, BF16, I32, U32, F32, F64, I64, U64)");
}

TEST_CASE("safetensors rejects other malformed headers", "[unit][safetensors]") {
  TempDir dir;
  SECTION("a hole in the data section") {
    const std::string path = patched(dir, "golden.safetensors", "[113,118]", "[114,119]", "x");
    CHECK(open_error(path) == path +
                                  ": no tensor holds bytes [113, 114) of the data section (between tensors 'u8' "
                                  "and 'mask'); safetensors data sections have no holes");
  }
  SECTION("bytes after the last tensor") {
    const std::string path = patched(dir, "golden.safetensors", "[113,118]", "[113,118]", "xyz");
    CHECK(open_error(path) == path +
                                  ": the data section is 121 bytes, but the tensors end at 118 (after tensor "
                                  "'mask'); the trailing bytes belong to no tensor");
  }
  SECTION("a key twice") {
    const std::string path = patched(dir, "golden.safetensors", R"("s":{)", R"("f64":{)");
    CHECK(open_error(path) == path + ": the header has the key 'f64' twice");
  }
  SECTION("metadata that is not text") {
    const std::string path = patched(dir, "golden.safetensors", R"({"format":"pt"})", R"({"format":1})");
    CHECK(open_error(path) == path + ": __metadata__ must map strings to strings, but 'format' holds 1");
  }
  SECTION("a negative dimension") {
    const std::string path = patched(dir, "golden.safetensors", R"("shape":[3],"data_offsets":[0,24])",
                                     R"("shape":[-3],"data_offsets":[0,24])");
    CHECK(open_error(path) == path + ": tensor 'ids': shape must be a list of non-negative integers, found [-3]");
  }
  SECTION("reversed offsets") {
    const std::string path = patched(dir, "golden.safetensors", "[113,118]", "[118,113]");
    CHECK(open_error(path) ==
          path + ": tensor 'mask': data_offsets must be [begin, end] with 0 <= begin <= end, found [118,113]");
  }
  SECTION("a missing field") {
    const std::string path = patched(dir, "golden.safetensors", R"("ids":{"dtype":"I64",)", R"("ids":{)");
    CHECK(open_error(path) == path +
                                  ": tensor 'ids': the header entry must be an object with dtype, shape and "
                                  "data_offsets, found {\"data_offsets\":[0,24],\"shape\":[3]}");
  }
  SECTION("a file that does not exist") {
    CHECK_THAT(open_error(dir / "missing.safetensors"),
               StartsWith(dir / "missing.safetensors" + ": cannot open: No such file"));
  }
}

// ---- writing --------------------------------------------------------------------------------------

TEST_CASE("safetensors writer matches the reference library byte for byte", "[unit][safetensors]") {
  TempDir dir;
  TensorSet golden = golden_tensors();
  jetmoe::io::write_safetensors(dir / "ours.safetensors", golden.get(), {{"format", "pt"}});
  CHECK(read_bytes(dir / "ours.safetensors") == read_bytes(fixture("golden.safetensors")));
  CHECK_FALSE(fs::exists(dir / "ours.safetensors.tmp"));

  // And reads back through our reader.
  const auto f = SafetensorsFile::open(dir / "ours.safetensors");
  CHECK(f.metadata() == std::map<std::string, std::string>{{"format", "pt"}});
  CHECK(f.read_as_float("s", {}) == std::vector<float>{2.5f});
  CHECK(f.read_as_float("layer.10.w", {3}) == std::vector<float>{1.0f, 2.0f, -3.0f});
  CHECK(f.read_as_float("a.weight", {5})[1] == jetmoe::bf16::from_bits(0x3f81).to_float());
  CHECK(f.read_as_int64("ids", {3}) == std::vector<std::int64_t>{3, -1, std::int64_t(1) << 40});
  CHECK(f.read_as_int64("mask", {5}) == std::vector<std::int64_t>{1, 0, 1, 1, 0});
  // Data-section order: dtype alignment descending, then bytewise names ("B" < "b", "layer.10" < "layer.2").
  std::vector<std::string> order;
  for (const auto& t : f.tensors()) order.push_back(t.name);
  CHECK(order == std::vector<std::string>{"ids", "f64", "s", "B.bias", "b.weight", "empty", "i32", "a.weight",
                                          "layer.10.w", "layer.2.w", "u8", "mask"});

  // No metadata: no "__metadata__" key (the reference's metadata=None); the header is padded to 8.
  jetmoe::io::write_safetensors(dir / "plain.safetensors", golden.get());
  const Parts p = split(read_bytes(dir / "plain.safetensors"));
  CHECK(p.header.find("__metadata__") == std::string::npos);
  CHECK(p.header.size() % 8 == 0);
  CHECK(p.header.substr(0, 8) == R"({"ids":{)");
}

TEST_CASE("safetensors writer takes tensors by fill, byte for byte as the reference library writes them",
          "[unit][safetensors]") {
  // What an export from GPU memory or to bf16 does: no tensor is in memory until the writer asks for it.
  TempDir dir;
  TensorSet golden = golden_tensors();
  std::vector<TensorToWrite> tensors = golden.get();
  std::vector<int> calls(tensors.size(), 0);
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const std::vector<std::uint8_t>& bytes = golden.storage[i];
    tensors[i].data = nullptr;
    tensors[i].fill = [&, i](void* out) {
      ++calls[i];
      std::memcpy(out, bytes.data(), bytes.size());
    };
  }
  jetmoe::io::write_safetensors(dir / "filled.safetensors", tensors, {{"format", "pt"}});
  CHECK(read_bytes(dir / "filled.safetensors") == read_bytes(fixture("golden.safetensors")));
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    INFO(tensors[i].name);
    CHECK(calls[i] == (golden.storage[i].empty() ? 0 : 1));  // once each, never for an empty tensor
  }

  SECTION("mixed with tensors given by data, in shards") {
    for (std::size_t i = 0; i < tensors.size(); i += 2) tensors[i].data = golden.storage[i].data();
    const std::string sharded = dir / "sharded", reference_dir = dir / "reference";
    const auto names = jetmoe::io::write_sharded_safetensors(sharded, tensors, 16);
    const auto reference = jetmoe::io::write_sharded_safetensors(reference_dir, golden.get(), 16);
    REQUIRE(names == reference);
    REQUIRE(names.size() > 2);
    for (const std::string& name : names) CHECK(read_bytes(sharded + "/" + name) == read_bytes(reference_dir + "/" + name));
  }
  SECTION("a failing fill leaves the old file and no temporary file") {
    const std::string target = dir / "filled.safetensors";
    const std::string before = read_bytes(target);
    tensors[2].fill = [](void*) { jetmoe::fail(ErrorKind::Input, "tensor 'f64': the device copy failed"); };
    CHECK(error_of([&] { jetmoe::io::write_safetensors(target, tensors); }) == "tensor 'f64': the device copy failed");
    CHECK(read_bytes(target) == before);
    CHECK_FALSE(fs::exists(target + ".tmp"));
  }
}

TEST_CASE("safetensors writer rejects what it cannot write", "[unit][safetensors]") {
  TempDir dir;
  std::vector<float> v = {1, 2};
  std::vector<TensorToWrite> twice = {{"w", DType::F32, {2}, v.data()}, {"w", DType::F32, {2}, v.data()}};
  CHECK_THAT(error_of([&] { jetmoe::io::write_safetensors(dir / "a.safetensors", twice); }, ErrorKind::Internal),
             Contains("tensor 'w': given twice"));
  std::vector<TensorToWrite> negative = {{"w", DType::F32, {-2}, v.data()}};
  CHECK_THAT(error_of([&] { jetmoe::io::write_safetensors(dir / "a.safetensors", negative); }, ErrorKind::Internal),
             Contains("invalid shape [-2]"));
  CHECK(fs::is_empty(dir.path));
}

TEST_CASE("safetensors writer leaves the old file when writing fails", "[unit][safetensors]") {
  TempDir dir;
  const std::string target = dir / "model.safetensors";
  const std::string old = read_bytes(fixture("golden.safetensors"));
  write_bytes(target, old);
  std::vector<float> big(16384, 1.0f);  // 64 KiB
  const std::vector<TensorToWrite> tensors = {{"big", DType::F32, {16384}, big.data()}};

  SECTION("the disk fills up") {
    std::string message;
    {
      FileSizeLimit limit(4096);
      message = error_of([&] { jetmoe::io::write_safetensors(target, tensors); });
    }
    CHECK(message == target + ": cannot write the temporary file " + target + ".tmp: " + std::strerror(EFBIG));
  }
  SECTION("the target is a directory") {
    fs::remove(target);
    fs::create_directory(target);
    write_bytes(target + "/keep", "keep");
    CHECK_THAT(error_of([&] { jetmoe::io::write_safetensors(target, tensors); }),
               StartsWith(target + ": cannot rename " + target + ".tmp to it: "));
    CHECK(read_bytes(target + "/keep") == "keep");
    fs::remove_all(target);
    write_bytes(target, old);
  }
  SECTION("the directory does not exist") {
    const std::string nowhere = dir / "no/such/dir/model.safetensors";
    CHECK(error_of([&] { jetmoe::io::write_safetensors(nowhere, tensors); }) ==
          nowhere + ": cannot create the temporary file " + nowhere + ".tmp: " + std::strerror(ENOENT));
  }
  SECTION("the directory is read-only") {
    // root writes anyway, so this case only means something for other users.
    if (::geteuid() != 0) {
      fs::permissions(dir.path, fs::perms::owner_read | fs::perms::owner_exec);
      CHECK_THAT(error_of([&] { jetmoe::io::write_safetensors(target, tensors); }),
                 StartsWith(target + ": cannot create the temporary file " + target + ".tmp: "));
      fs::permissions(dir.path, fs::perms::owner_all);
    }
  }
  CHECK(read_bytes(target) == old);
  CHECK_FALSE(fs::exists(target + ".tmp"));
}

// ---- checkpoints ----------------------------------------------------------------------------------

TEST_CASE("safetensors checkpoint reads sharded and single-file checkpoints", "[unit][safetensors]") {
  const auto sharded = SafetensorsCheckpoint::open(fixture("sharded"));
  CHECK(sharded.source() == fixture("sharded") + "/model.safetensors.index.json");
  CHECK(sharded.files().size() == 7);
  check_model_values(sharded);
  CHECK(sharded.file_of("model.norm.weight").path() == fixture("sharded") + "/model-00007-of-00007.safetensors");
  CHECK(sharded.find("lm_head.weight") == nullptr);
  CHECK(error_of([&] { sharded.info("model.norm.weight2"); }) ==
        sharded.source() + ": no tensor 'model.norm.weight2' (did you mean 'model.norm.weight'?)");

  check_model_values(SafetensorsCheckpoint::open(fixture("sharded/model.safetensors.index.json")));
  const auto single = SafetensorsCheckpoint::open(fixture("single"));
  CHECK(single.files().size() == 1);
  check_model_values(single);
  check_model_values(SafetensorsCheckpoint::open(fixture("single/model.safetensors")));
  CHECK(SafetensorsCheckpoint::open(fixture("golden.safetensors")).names().size() == 12);
}

TEST_CASE("safetensors sharded writer matches save_pretrained byte for byte", "[unit][safetensors]") {
  TempDir dir;
  TensorSet model = model_tensors();
  const auto written = jetmoe::io::write_sharded_safetensors(dir / "sharded", model.get(), 200);
  REQUIRE(written.size() == 8);
  for (const auto& entry : fs::directory_iterator(fixture("sharded"))) {
    const std::string name = entry.path().filename().string();
    INFO(name);
    CHECK(read_bytes(dir / ("sharded/" + name)) == read_bytes(entry.path().string()));
  }
  CHECK(std::distance(fs::directory_iterator(dir / "sharded"), fs::directory_iterator()) == 8);

  // One shard: model.safetensors and no index. Written over the sharded layout, whose files go.
  CHECK(jetmoe::io::write_sharded_safetensors(dir / "sharded", model.get(), 1'000'000'000) ==
        std::vector<std::string>{"model.safetensors"});
  CHECK(read_bytes(dir / "sharded/model.safetensors") == read_bytes(fixture("single/model.safetensors")));
  CHECK(std::distance(fs::directory_iterator(dir / "sharded"), fs::directory_iterator()) == 1);
  // And back: the single file goes.
  jetmoe::io::write_sharded_safetensors(dir / "sharded", model.get(), 200);
  CHECK_FALSE(fs::exists(dir / "sharded/model.safetensors"));
  check_model_values(SafetensorsCheckpoint::open(dir / "sharded"));
}

TEST_CASE("safetensors checkpoint rejects an index that disagrees with its shards", "[unit][safetensors]") {
  TempDir dir;
  fs::copy(fixture("sharded"), dir.path / "ckpt");
  const std::string index = dir / "ckpt/model.safetensors.index.json";
  const std::string shard7 = "model-00007-of-00007.safetensors";

  SECTION("a JSON file that is not an index (config.json given for the checkpoint)") {
    write_bytes(dir / "ckpt/config.json", "{\"model_type\": \"jetmoe\"}");
    CHECK(error_of([&] { SafetensorsCheckpoint::open(dir / "ckpt/config.json"); }) ==
          dir / "ckpt/config.json" +
              ": a JSON file that is not a safetensors index (*.safetensors.index.json); give the checkpoint's directory, "
              "its model.safetensors or its index");
  }
  SECTION("a shard file is missing") {
    fs::remove(dir / ("ckpt/" + shard7));
    CHECK(error_of([&] { SafetensorsCheckpoint::open(dir / "ckpt"); }) ==
          index + ": shard '" + shard7 + "' (listed for tensor 'model.layers.0.mlp.bias') does not exist: '" +
              dir / ("ckpt/" + shard7) + "'");
  }
  SECTION("a shard name the file system refuses") {  // found by tests/fuzz: a std::filesystem exception escaped
    std::string text = read_bytes(index);
    const std::string from = "\"model.norm.weight\": \"" + shard7;
    const std::string long_name(300, 'x');
    text.replace(text.find(from), from.size(), "\"model.norm.weight\": \"" + long_name);
    write_bytes(index, text);
    CHECK(error_of([&] { SafetensorsCheckpoint::open(dir / "ckpt"); }) ==
          index + ": shard '" + long_name + "' (listed for tensor 'model.norm.weight') cannot be accessed (File name "
                  "too long): '" + dir / ("ckpt/" + long_name) + "'");
  }
  SECTION("a listed tensor is not in its shard") {
    std::string text = read_bytes(index);
    const std::string from = "\"model.norm.weight\": \"" + shard7;
    text.replace(text.find(from), from.size(), "\"model.norm.weight\": \"model-00006-of-00007.safetensors");
    write_bytes(index, text);
    CHECK(error_of([&] { SafetensorsCheckpoint::open(dir / "ckpt"); }) ==
          index +
              ": tensor 'model.norm.weight' is mapped to shard 'model-00006-of-00007.safetensors', which does "
              "not contain it");
  }
  SECTION("a tensor is in two shards") {
    // Shard 7 gets a copy of the final norm's neighbour from shard 6.
    const auto shard6 = SafetensorsFile::open(dir / "ckpt/model-00006-of-00007.safetensors");
    const auto old7 = SafetensorsFile::open(dir / ("ckpt/" + shard7));
    std::vector<TensorToWrite> tensors;
    for (const auto& t : old7.tensors()) tensors.push_back({t.name, t.dtype, t.shape, old7.bytes(t).data});
    const auto& extra = shard6.info("model.layers.0.input_layernorm.weight");
    tensors.push_back({extra.name, extra.dtype, extra.shape, shard6.bytes(extra).data});
    jetmoe::io::write_safetensors(dir / "new7.safetensors", tensors, {{"format", "pt"}});
    fs::rename(dir / "new7.safetensors", dir / ("ckpt/" + shard7));
    CHECK(error_of([&] { SafetensorsCheckpoint::open(dir / "ckpt"); }) ==
          index +
              ": tensor 'model.layers.0.input_layernorm.weight' is in two shards, "
              "'model-00006-of-00007.safetensors' and '" +
              shard7 + "' (the index maps it to 'model-00006-of-00007.safetensors')");
  }
  SECTION("a shard holds a tensor the index does not list") {
    std::string text = read_bytes(index);
    const std::string line = "    \"model.norm.weight\": \"" + shard7 + "\"\n";
    const auto at = text.find(line);
    REQUIRE(at != std::string::npos);
    text.erase(at, line.size());
    text.erase(text.rfind(',', at), 1);  // the previous entry is now the last
    write_bytes(index, text);
    CHECK(error_of([&] { SafetensorsCheckpoint::open(dir / "ckpt"); }) ==
          index + ": shard '" + shard7 + "' holds tensor 'model.norm.weight', which the index does not list");
  }
  SECTION("an index without weight_map") {
    write_bytes(index, R"({"metadata": {}})");
    CHECK(error_of([&] { SafetensorsCheckpoint::open(dir / "ckpt"); }) ==
          index + ": the index has no \"weight_map\" object");
  }
  SECTION("a directory without a checkpoint") {
    fs::remove(index);
    CHECK(error_of([&] { SafetensorsCheckpoint::open(dir / "ckpt"); }) ==
          dir / "ckpt" + ": the directory holds neither model.safetensors nor model.safetensors.index.json");
  }
}
