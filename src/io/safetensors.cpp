#include "io/safetensors.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <unordered_set>
#include <utility>

#include "core/bf16.hpp"
#include "core/error.hpp"
#include "core/strings.hpp"

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors data is little-endian; this reader copies it without byte swapping"
#endif

namespace fs = std::filesystem;

namespace jetmoe::io {

namespace {

// The reference implementation's limit (safetensors MAX_HEADER_SIZE).
constexpr std::uint64_t kMaxHeaderBytes = 100'000'000;
constexpr const char* kIndexName = "model.safetensors.index.json";
constexpr const char* kSingleName = "model.safetensors";

[[noreturn]] void input_error(const std::string& file, const std::string& message) {
  fail(ErrorKind::Input, file + ": " + message);
}
[[noreturn]] void tensor_error(const std::string& file, std::string_view tensor, const std::string& message) {
  fail(ErrorKind::Input, file + ": tensor " + jetmoe::quoted(tensor) + ": " + message);
}
std::string errno_text() { return std::strerror(errno); }

struct DTypeRow {
  DType dtype;
  const char* name;
  std::size_t size;
};
// Same order as the enum.
constexpr DTypeRow kDTypes[] = {
    {DType::BOOL, "BOOL", 1}, {DType::U8, "U8", 1},   {DType::I8, "I8", 1},     {DType::I16, "I16", 2},
    {DType::U16, "U16", 2},   {DType::F16, "F16", 2}, {DType::BF16, "BF16", 2}, {DType::I32, "I32", 4},
    {DType::U32, "U32", 4},   {DType::F32, "F32", 4}, {DType::F64, "F64", 8},   {DType::I64, "I64", 8},
    {DType::U64, "U64", 8},
};
const DTypeRow& row(DType dtype) { return kDTypes[static_cast<int>(dtype)]; }

std::string supported_dtypes() {
  std::string s;
  for (const auto& r : kDTypes) s += (s.empty() ? "" : ", ") + std::string(r.name);
  return s;
}

std::string offsets_string(std::uint64_t begin, std::uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + "]";
}

// numel of `shape`, or nullopt when it overflows int64.
std::optional<std::int64_t> checked_numel(const std::vector<std::int64_t>& shape) {
  std::int64_t n = 1;
  for (const std::int64_t d : shape) {
    if (d < 0) return std::nullopt;
    if (d != 0 && n > std::numeric_limits<std::int64_t>::max() / d) return std::nullopt;
    n *= d;
  }
  return n;
}

// Parses JSON and rejects a key repeated inside one object, which nlohmann (like most parsers)
// would otherwise resolve silently by keeping one of the two.
nlohmann::json parse_json_strict(const char* begin, const char* end, const std::string& file, const char* what) {
  std::vector<std::unordered_set<std::string>> open_objects;
  std::string duplicate;
  const nlohmann::json::parser_callback_t track = [&](int, nlohmann::json::parse_event_t event,
                                                      nlohmann::json& parsed) {
    using E = nlohmann::json::parse_event_t;
    if (event == E::object_start) {
      open_objects.emplace_back();
    } else if (event == E::object_end) {
      if (!open_objects.empty()) open_objects.pop_back();
    } else if (event == E::key && !open_objects.empty() && duplicate.empty()) {
      const std::string key = parsed.get<std::string>();
      if (!open_objects.back().insert(key).second) duplicate = key;
    }
    return true;
  };
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(begin, end, track);
  } catch (const nlohmann::json::exception& e) {
    input_error(file, std::string(what) + " is not valid JSON (" + e.what() + ")");
  }
  if (!duplicate.empty()) input_error(file, std::string(what) + " has the key " + jetmoe::quoted(duplicate) + " twice");
  return j;
}

std::string json_type(const nlohmann::json& j) { return j.type_name(); }

// A non-negative JSON integer that fits `limit`, else nullopt.
std::optional<std::uint64_t> as_count(const nlohmann::json& j, std::uint64_t limit) {
  if (j.is_number_unsigned()) {
    const auto v = j.get<std::uint64_t>();
    if (v <= limit) return v;
  } else if (j.is_number_integer()) {
    const auto v = j.get<std::int64_t>();
    if (v >= 0 && static_cast<std::uint64_t>(v) <= limit) return static_cast<std::uint64_t>(v);
  }
  return std::nullopt;
}

TensorInfo parse_tensor_entry(const std::string& file, const std::string& name, const nlohmann::json& entry) {
  if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") || !entry.contains("data_offsets"))
    tensor_error(file, name,
                 "the header entry must be an object with dtype, shape and data_offsets, found " + entry.dump());
  TensorInfo t;
  t.name = name;

  const auto& dtype = entry["dtype"];
  const std::optional<DType> parsed = dtype.is_string() ? parse_dtype(dtype.get<std::string>()) : std::nullopt;
  if (!parsed) tensor_error(file, name, "unknown dtype " + dtype.dump() + " (supported: " + supported_dtypes() + ")");
  t.dtype = *parsed;

  const auto& shape = entry["shape"];
  bool shape_ok = shape.is_array();
  if (shape_ok) {
    for (const auto& d : shape) {
      const auto v = as_count(d, std::numeric_limits<std::int64_t>::max());
      if (!v) {
        shape_ok = false;
        break;
      }
      t.shape.push_back(static_cast<std::int64_t>(*v));
    }
  }
  if (!shape_ok) tensor_error(file, name, "shape must be a list of non-negative integers, found " + shape.dump());

  const auto& offsets = entry["data_offsets"];
  std::optional<std::uint64_t> begin, end;
  if (offsets.is_array() && offsets.size() == 2) {
    begin = as_count(offsets[0], std::numeric_limits<std::uint64_t>::max());
    end = as_count(offsets[1], std::numeric_limits<std::uint64_t>::max());
  }
  if (!begin || !end || *begin > *end)
    tensor_error(file, name, "data_offsets must be [begin, end] with 0 <= begin <= end, found " + offsets.dump());
  t.data_begin = *begin;
  t.data_end = *end;

  const std::optional<std::int64_t> numel = checked_numel(t.shape);
  const std::uint64_t item = dtype_size(t.dtype);
  if (!numel || static_cast<std::uint64_t>(*numel) > std::numeric_limits<std::uint64_t>::max() / item)
    tensor_error(file, name, "shape " + shape_string(t.shape) + " is too large");
  const std::uint64_t need = static_cast<std::uint64_t>(*numel) * item;
  if (t.data_end - t.data_begin != need)
    tensor_error(file, name,
                 "data_offsets " + offsets_string(t.data_begin, t.data_end) + " hold " +
                     std::to_string(t.data_end - t.data_begin) + " bytes, but dtype " +
                     std::string(dtype_name(t.dtype)) + " and shape " + shape_string(t.shape) + " need " +
                     std::to_string(need) + " bytes");
  return t;
}

// The tensors, sorted by offset, must tile [0, data_size) exactly (the reference's rule).
void check_layout(const std::string& file, const std::vector<TensorInfo>& tensors, std::uint64_t data_size) {
  for (std::size_t i = 1; i < tensors.size(); ++i) {
    const TensorInfo& a = tensors[i - 1];
    const TensorInfo& b = tensors[i];
    if (b.data_begin < a.data_end)
      tensor_error(file, b.name,
                   "data_offsets " + offsets_string(b.data_begin, b.data_end) + " overlap those of tensor " +
                       jetmoe::quoted(a.name) + " " + offsets_string(a.data_begin, a.data_end));
  }
  const std::uint64_t end = tensors.empty() ? 0 : tensors.back().data_end;
  bool contiguous = true;
  for (std::size_t i = 0; i < tensors.size(); ++i)
    contiguous = contiguous && tensors[i].data_begin == (i == 0 ? 0 : tensors[i - 1].data_end);
  if (end > data_size) {
    // A consistent layout that runs past the end of the file: the file was cut short.
    if (contiguous)
      input_error(file, "file is truncated: header says the data section is " + std::to_string(end) + " bytes, found " +
                            std::to_string(data_size));
    for (const TensorInfo& t : tensors)
      if (t.data_end > data_size)
        tensor_error(file, t.name,
                     "data_offsets " + offsets_string(t.data_begin, t.data_end) + " lie outside the data section (" +
                         std::to_string(data_size) + " bytes)");
  }
  for (std::size_t i = 0; i < tensors.size(); ++i) {
    const std::uint64_t expected = i == 0 ? 0 : tensors[i - 1].data_end;
    if (tensors[i].data_begin != expected)
      input_error(file, "no tensor holds bytes [" + std::to_string(expected) + ", " +
                            std::to_string(tensors[i].data_begin) + ")" + " of the data section (" +
                            (i == 0 ? "before tensor " + jetmoe::quoted(tensors[i].name)
                                    : "between tensors " + jetmoe::quoted(tensors[i - 1].name) + " and " +
                                          jetmoe::quoted(tensors[i].name)) +
                            "); safetensors data sections have no holes");
  }
  if (end < data_size)
    input_error(file, "the data section is " + std::to_string(data_size) + " bytes, but the tensors end at " +
                          std::to_string(end) +
                          (tensors.empty() ? std::string(" (the header lists none)")
                                           : " (after tensor " + jetmoe::quoted(tensors.back().name) + ")") +
                          "; the trailing bytes belong to no tensor");
}

template <class T>
T load(const std::uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Writes all of `size` bytes, retrying short writes; false with errno set on failure.
bool write_all(int fd, const std::uint8_t* data, std::size_t size) {
  while (size > 0) {
    const std::size_t chunk = std::min<std::size_t>(size, std::size_t(1) << 30);
    const ssize_t n = ::write(fd, data, chunk);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data += n;
    size -= static_cast<std::size_t>(n);
  }
  return true;
}

// A part of a file: `size` bytes at `data`, or (data null) what `fill` puts into a buffer of that size.
struct Piece {
  const std::uint8_t* data = nullptr;
  std::size_t size = 0;
  const std::function<void(void*)>* fill = nullptr;
};

// Writes `pieces` one after the other to `path` atomically (see write_safetensors).
void write_atomically(const std::string& path, const std::vector<Piece>& pieces) {
  const std::string tmp = path + ".tmp";
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) input_error(path, "cannot create the temporary file " + tmp + ": " + errno_text());

  // From here on the temporary file is ours: any failure closes and removes it.
  struct Guard {
    const std::string& tmp;
    int fd;
    bool committed = false;
    ~Guard() {
      if (fd >= 0) ::close(fd);
      if (!committed) ::unlink(tmp.c_str());
    }
  } guard{tmp, fd};

  std::vector<std::uint8_t> staging;  // the pieces given by `fill`, one at a time
  for (const Piece& piece : pieces) {
    const std::uint8_t* data = piece.data;
    if (!data && piece.size > 0) {
      if (staging.size() < piece.size) {
        staging.clear();
        staging.shrink_to_fit();  // never two buffers at once
        staging.resize(piece.size);
      }
      (*piece.fill)(staging.data());
      data = staging.data();
    }
    if (!write_all(guard.fd, data, piece.size))
      input_error(path, "cannot write the temporary file " + tmp + ": " + errno_text());
  }
  if (::fsync(guard.fd) != 0) input_error(path, "cannot flush the temporary file " + tmp + ": " + errno_text());
  const int closed = ::close(guard.fd);
  guard.fd = -1;
  if (closed != 0) input_error(path, "cannot close the temporary file " + tmp + ": " + errno_text());
  if (::rename(tmp.c_str(), path.c_str()) != 0) input_error(path, "cannot rename " + tmp + " to it: " + errno_text());
  guard.committed = true;

  // Make the rename itself durable. Some file systems cannot fsync a directory; the data is safe anyway.
  const std::string dir = fs::path(path).parent_path().empty() ? "." : fs::path(path).parent_path().string();
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    (void)::fsync(dfd);
    ::close(dfd);
  }
}

std::size_t write_nbytes(const TensorToWrite& t) {
  return static_cast<std::size_t>(*checked_numel(t.shape)) * dtype_size(t.dtype);
}

// What our own code asks to write must make sense; a mistake here is a bug, not a user error.
void check_tensors_to_write(const std::string& where, const std::vector<TensorToWrite>& tensors) {
  std::unordered_set<std::string> seen;
  for (const TensorToWrite& t : tensors) {
    const std::string what = where + ": tensor " + jetmoe::quoted(t.name) + ": ";
    JETMOE_ASSERT(!t.name.empty() && t.name != "__metadata__", what + "invalid tensor name");
    JETMOE_ASSERT(seen.insert(t.name).second, what + "given twice");
    JETMOE_ASSERT(static_cast<int>(t.dtype) >= 0 && static_cast<int>(t.dtype) <= static_cast<int>(DType::U64),
                  what + "invalid dtype");
    const auto numel = checked_numel(t.shape);
    JETMOE_ASSERT(numel.has_value(), what + "invalid shape " + shape_string(t.shape));
    JETMOE_ASSERT(*numel == 0 || t.data != nullptr || t.fill != nullptr, what + "no data");
  }
}

std::string json_string(const std::string& s, const std::string& where) {
  try {
    return nlohmann::json(s).dump();
  } catch (const nlohmann::json::exception&) {
    fail(ErrorKind::Internal, where + ": " + jetmoe::quoted(s) + " is not valid UTF-8");
  }
}

}  // namespace

// ---- dtypes ---------------------------------------------------------------------------------------

std::string_view dtype_name(DType dtype) { return row(dtype).name; }
std::size_t dtype_size(DType dtype) { return row(dtype).size; }
std::optional<DType> parse_dtype(std::string_view name) {
  for (const auto& r : kDTypes)
    if (name == r.name) return r.dtype;
  return std::nullopt;
}
bool is_floating(DType dtype) {
  return dtype == DType::F16 || dtype == DType::BF16 || dtype == DType::F32 || dtype == DType::F64;
}
std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::int64_t TensorInfo::numel() const {
  std::int64_t n = 1;
  for (const std::int64_t d : shape) n *= d;
  return n;
}

// ---- MappedFile -----------------------------------------------------------------------------------

MappedFile::MappedFile(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) input_error(path, "cannot open: " + errno_text());
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    const std::string why = S_ISDIR(st.st_mode) ? "is a directory, not a file" : "is not a regular file";
    ::close(fd);
    input_error(path, why);
  }
  if (st.st_size > 0) {
    void* p = ::mmap(nullptr, static_cast<std::size_t>(st.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const std::string why = errno_text();
      ::close(fd);
      input_error(path, "cannot map into memory: " + why);
    }
    data_ = static_cast<const std::uint8_t*>(p);
    size_ = static_cast<std::size_t>(st.st_size);
  }
  ::close(fd);  // the mapping keeps the file open
}

MappedFile::MappedFile(MappedFile&& other) noexcept
    : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}

MappedFile& MappedFile::operator=(MappedFile&& other) noexcept {
  if (this != &other) {
    if (data_) ::munmap(const_cast<std::uint8_t*>(data_), size_);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<std::uint8_t*>(data_), size_);
}

// ---- SafetensorsFile ------------------------------------------------------------------------------

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  SafetensorsFile f;
  f.path_ = path;
  f.mapping_ = MappedFile(path);
  const std::size_t size = f.mapping_.size();
  if (size < 8)
    input_error(path, "file is too small for safetensors (" + std::to_string(size) +
                          " bytes; the header length field alone takes 8)");
  const auto header_len = load<std::uint64_t>(f.mapping_.data());
  if (header_len > kMaxHeaderBytes || header_len > size - 8)
    input_error(
        path, "malformed or oversized header: its length field says " + std::to_string(header_len) + " bytes, but " +
                  (header_len > kMaxHeaderBytes ? "the limit is " + std::to_string(kMaxHeaderBytes)
                                                : "only " + std::to_string(size - 8) + " bytes follow it in the file"));
  f.data_start_ = 8 + static_cast<std::size_t>(header_len);

  const char* header = reinterpret_cast<const char*>(f.mapping_.data()) + 8;
  const nlohmann::json j = parse_json_strict(header, header + header_len, path, "the header");
  if (!j.is_object()) input_error(path, "the header must be a JSON object, found " + json_type(j));

  for (const auto& item : j.items()) {
    if (item.key() == "__metadata__") {
      if (item.value().is_null()) continue;
      if (!item.value().is_object())
        input_error(path, "__metadata__ must be an object, found " + json_type(item.value()));
      for (const auto& m : item.value().items()) {
        if (!m.value().is_string())
          input_error(path, "__metadata__ must map strings to strings, but " + jetmoe::quoted(m.key()) + " holds " +
                                m.value().dump());
        f.metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    f.tensors_.push_back(parse_tensor_entry(path, item.key(), item.value()));
  }

  std::sort(f.tensors_.begin(), f.tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return std::tie(a.data_begin, a.data_end, a.name) < std::tie(b.data_begin, b.data_end, b.name);
  });
  check_layout(path, f.tensors_, size - f.data_start_);
  for (std::size_t i = 0; i < f.tensors_.size(); ++i) f.index_.emplace(f.tensors_[i].name, i);
  return f;
}

std::vector<std::string> SafetensorsFile::names() const {
  std::vector<std::string> n;
  n.reserve(tensors_.size());
  for (const auto& t : tensors_) n.push_back(t.name);
  std::sort(n.begin(), n.end());
  return n;
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  const auto it = index_.find(std::string(name));
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const TensorInfo& SafetensorsFile::info(std::string_view name) const {
  if (const TensorInfo* t = find(name)) return *t;
  const std::string guess = closest_match(name, names());
  input_error(path_, "no tensor " + jetmoe::quoted(name) +
                         (guess.empty() ? "" : " (did you mean " + jetmoe::quoted(guess) + "?)"));
}

ByteSpan SafetensorsFile::bytes(const TensorInfo& tensor) const {
  return {mapping_.data() + data_start_ + tensor.data_begin, tensor.nbytes()};
}
ByteSpan SafetensorsFile::bytes(std::string_view name) const { return bytes(info(name)); }

const TensorInfo& SafetensorsFile::checked(std::string_view name,
                                           const std::vector<std::int64_t>& expected_shape) const {
  const TensorInfo& t = info(name);
  if (t.shape != expected_shape)
    tensor_error(path_, name, "expected shape " + shape_string(expected_shape) + ", found " + shape_string(t.shape));
  return t;
}

void SafetensorsFile::read_as_float(std::string_view name, const std::vector<std::int64_t>& expected_shape,
                                    float* out) const {
  const TensorInfo& t = checked(name, expected_shape);
  const std::uint8_t* p = bytes(t).data;
  const std::size_t n = static_cast<std::size_t>(t.numel());
  switch (t.dtype) {
    case DType::F32:
      if (n > 0) std::memcpy(out, p, n * sizeof(float));
      return;
    case DType::F64:
      for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<float>(load<double>(p + 8 * i));
      return;
    case DType::BF16:
      for (std::size_t i = 0; i < n; ++i) out[i] = bf16::from_bits(load<std::uint16_t>(p + 2 * i)).to_float();
      return;
    case DType::F16:
      for (std::size_t i = 0; i < n; ++i) out[i] = fp16::from_bits(load<std::uint16_t>(p + 2 * i)).to_float();
      return;
    default:
      tensor_error(path_, name,
                   "dtype " + std::string(dtype_name(t.dtype)) +
                       " is not a floating-point type (expected F16, BF16, F32 or F64)");
  }
}

std::vector<float> SafetensorsFile::read_as_float(std::string_view name,
                                                  const std::vector<std::int64_t>& expected_shape) const {
  std::vector<float> v(static_cast<std::size_t>(checked(name, expected_shape).numel()));
  read_as_float(name, expected_shape, v.data());
  return v;
}

void SafetensorsFile::read_as_int64(std::string_view name, const std::vector<std::int64_t>& expected_shape,
                                    std::int64_t* out) const {
  const TensorInfo& t = checked(name, expected_shape);
  const std::uint8_t* p = bytes(t).data;
  const std::size_t n = static_cast<std::size_t>(t.numel());
  auto copy = [&](auto tag) {
    using T = decltype(tag);
    for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::int64_t>(load<T>(p + sizeof(T) * i));
  };
  switch (t.dtype) {
    case DType::I64:
      copy(std::int64_t{});
      return;
    case DType::I32:
      copy(std::int32_t{});
      return;
    case DType::U32:
      copy(std::uint32_t{});
      return;
    case DType::I16:
      copy(std::int16_t{});
      return;
    case DType::U16:
      copy(std::uint16_t{});
      return;
    case DType::I8:
      copy(std::int8_t{});
      return;
    case DType::U8:
      copy(std::uint8_t{});
      return;
    case DType::U64:
      for (std::size_t i = 0; i < n; ++i) {
        const auto v = load<std::uint64_t>(p + 8 * i);
        if (v > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
          tensor_error(path_, name,
                       "element " + std::to_string(i) + " = " + std::to_string(v) + " does not fit in int64");
        out[i] = static_cast<std::int64_t>(v);
      }
      return;
    case DType::BOOL:
      for (std::size_t i = 0; i < n; ++i) {
        if (p[i] > 1)
          tensor_error(
              path_, name,
              "BOOL element " + std::to_string(i) + " is the byte " + std::to_string(p[i]) + " (expected 0 or 1)");
        out[i] = p[i];
      }
      return;
    default:
      tensor_error(path_, name,
                   "dtype " + std::string(dtype_name(t.dtype)) +
                       " is not an integer type (expected BOOL, U8, I8, I16, U16, I32, U32, I64 or U64)");
  }
}

std::vector<std::int64_t> SafetensorsFile::read_as_int64(std::string_view name,
                                                         const std::vector<std::int64_t>& expected_shape) const {
  std::vector<std::int64_t> v(static_cast<std::size_t>(checked(name, expected_shape).numel()));
  read_as_int64(name, expected_shape, v.data());
  return v;
}

// ---- SafetensorsCheckpoint ------------------------------------------------------------------------

SafetensorsCheckpoint SafetensorsCheckpoint::open(const std::string& path) {
  std::error_code ec;
  const fs::file_status st = fs::status(path, ec);
  std::string file;
  bool sharded = false;
  if (fs::is_directory(st)) {
    const fs::path single = fs::path(path) / kSingleName, index = fs::path(path) / kIndexName;
    if (fs::exists(single)) {
      file = single.string();
    } else if (fs::exists(index)) {
      file = index.string();
      sharded = true;
    } else {
      input_error(path, std::string("the directory holds neither ") + kSingleName + " nor " + kIndexName);
    }
  } else if (fs::exists(st)) {
    file = path;
    sharded = fs::path(path).extension() == ".json";
    if (sharded && fs::path(path).filename().string().find(".index.json") == std::string::npos)
      input_error(path, "a JSON file that is not a safetensors index (*.safetensors.index.json); give the checkpoint's "
                        "directory, its model.safetensors or its index");
  } else {
    input_error(path, "no such file or directory");
  }

  SafetensorsCheckpoint c;
  c.source_ = file;
  if (!sharded) {
    c.files_.push_back(SafetensorsFile::open(file));
    for (const TensorInfo& t : c.files_[0].tensors()) c.owner_.emplace(t.name, 0);
    return c;
  }

  // Sharded: model.safetensors.index.json {"metadata": {...}, "weight_map": {tensor: shard file}}.
  const MappedFile text(file);
  const char* begin = reinterpret_cast<const char*>(text.data());
  const nlohmann::json index = parse_json_strict(begin, begin + text.size(), file, "the index");
  if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object())
    input_error(file, "the index has no \"weight_map\" object");
  std::map<std::string, std::vector<std::string>> shard_tensors;  // shard file -> tensors, sorted by file
  std::unordered_map<std::string, std::string> shard_of;
  for (const auto& item : index["weight_map"].items()) {
    if (!item.value().is_string() || item.value().get<std::string>().empty())
      input_error(file, "weight_map: tensor " + jetmoe::quoted(item.key()) + " must map to a shard file name, found " +
                            item.value().dump());
    shard_tensors[item.value().get<std::string>()].push_back(item.key());
    shard_of.emplace(item.key(), item.value().get<std::string>());
  }

  const fs::path dir = fs::path(file).parent_path();
  std::vector<std::string> shard_names;
  for (const auto& [shard, tensors] : shard_tensors) {
    const fs::path shard_path = dir / shard;
    std::error_code missing;
    if (!fs::exists(shard_path, missing))
      input_error(file, "shard " + jetmoe::quoted(shard) + " (listed for tensor " + jetmoe::quoted(tensors.front()) +
                            ") " + (missing ? "cannot be accessed (" + missing.message() + ")" : "does not exist") +
                            ": " + jetmoe::quoted(shard_path.string()));
    c.files_.push_back(SafetensorsFile::open(shard_path.string()));
    shard_names.push_back(shard);
    for (const std::string& t : tensors) {
      if (!c.files_.back().find(t))
        input_error(file,
                    "tensor " + jetmoe::quoted(t) + " is mapped to shard " + jetmoe::quoted(shard) + ", which does not contain it");
      c.owner_.emplace(t, c.files_.size() - 1);
    }
  }
  // Every tensor the shards hold must be the one the index points to.
  for (std::size_t s = 0; s < c.files_.size(); ++s)
    for (const TensorInfo& t : c.files_[s].tensors()) {
      const auto it = shard_of.find(t.name);
      if (it == shard_of.end())
        input_error(file, "shard " + jetmoe::quoted(shard_names[s]) + " holds tensor " + jetmoe::quoted(t.name) +
                              ", which the index does not list");
      if (it->second != shard_names[s])
        input_error(file, "tensor " + jetmoe::quoted(t.name) + " is in two shards, " + jetmoe::quoted(it->second) + " and " +
                              jetmoe::quoted(shard_names[s]) + " (the index maps it to " + jetmoe::quoted(it->second) + ")");
    }
  return c;
}

std::vector<std::string> SafetensorsCheckpoint::names() const {
  std::vector<std::string> n;
  n.reserve(owner_.size());
  for (const auto& kv : owner_) n.push_back(kv.first);
  std::sort(n.begin(), n.end());
  return n;
}

const TensorInfo* SafetensorsCheckpoint::find(std::string_view name) const {
  const auto it = owner_.find(std::string(name));
  return it == owner_.end() ? nullptr : files_[it->second].find(name);
}

const SafetensorsFile& SafetensorsCheckpoint::file_of(std::string_view name) const {
  const auto it = owner_.find(std::string(name));
  if (it == owner_.end()) {
    const std::string guess = closest_match(name, names());
    input_error(source_, "no tensor " + jetmoe::quoted(name) +
                             (guess.empty() ? "" : " (did you mean " + jetmoe::quoted(guess) + "?)"));
  }
  return files_[it->second];
}

const TensorInfo& SafetensorsCheckpoint::info(std::string_view name) const { return file_of(name).info(name); }
ByteSpan SafetensorsCheckpoint::bytes(std::string_view name) const { return file_of(name).bytes(name); }

std::vector<float> SafetensorsCheckpoint::read_as_float(std::string_view name,
                                                        const std::vector<std::int64_t>& expected_shape) const {
  return file_of(name).read_as_float(name, expected_shape);
}
void SafetensorsCheckpoint::read_as_float(std::string_view name, const std::vector<std::int64_t>& expected_shape,
                                          float* out) const {
  file_of(name).read_as_float(name, expected_shape, out);
}
std::vector<std::int64_t> SafetensorsCheckpoint::read_as_int64(std::string_view name,
                                                               const std::vector<std::int64_t>& expected_shape) const {
  return file_of(name).read_as_int64(name, expected_shape);
}

// ---- writers --------------------------------------------------------------------------------------

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  check_tensors_to_write(path, tensors);

  // The reference's order: dtype alignment descending, then name (bytewise).
  std::vector<const TensorToWrite*> order;
  for (const auto& t : tensors) order.push_back(&t);
  std::sort(order.begin(), order.end(), [](const TensorToWrite* a, const TensorToWrite* b) {
    if (a->dtype != b->dtype) return static_cast<int>(a->dtype) > static_cast<int>(b->dtype);
    return a->name < b->name;
  });

  std::string header = "{";
  if (!metadata.empty()) {
    header += "\"__metadata__\":{";
    bool first = true;
    for (const auto& [key, value] : metadata) {
      header += (first ? "" : ",") + json_string(key, path) + ":" + json_string(value, path);
      first = false;
    }
    header += "}";
  }
  std::uint64_t offset = 0;
  for (const TensorToWrite* t : order) {
    const std::uint64_t end = offset + write_nbytes(*t);
    std::string shape;
    for (std::size_t i = 0; i < t->shape.size(); ++i) shape += (i ? "," : "") + std::to_string(t->shape[i]);
    header += (header.size() > 1 ? "," : "") + json_string(t->name, path) + ":{\"dtype\":\"" +
              std::string(dtype_name(t->dtype)) + "\",\"shape\":[" + shape + "],\"data_offsets\":[" +
              std::to_string(offset) + "," + std::to_string(end) + "]}";
    offset = end;
  }
  header += "}";
  header.resize((header.size() + 7) / 8 * 8, ' ');
  JETMOE_ASSERT(header.size() <= kMaxHeaderBytes, path + ": the header would exceed 100 MB");

  std::uint8_t length[8];
  const std::uint64_t n = header.size();
  std::memcpy(length, &n, 8);
  std::vector<Piece> pieces = {{length, 8}, {reinterpret_cast<const std::uint8_t*>(header.data()), header.size()}};
  for (const TensorToWrite* t : order)
    if (write_nbytes(*t) > 0) pieces.push_back({static_cast<const std::uint8_t*>(t->data), write_nbytes(*t), &t->fill});
  write_atomically(path, pieces);
}

std::vector<std::string> write_sharded_safetensors(const std::string& directory,
                                                   const std::vector<TensorToWrite>& tensors,
                                                   std::uint64_t max_shard_bytes,
                                                   const std::map<std::string, std::string>& metadata) {
  check_tensors_to_write(directory, tensors);

  // huggingface_hub split_state_dict_into_shards, step for step.
  std::vector<std::vector<const TensorToWrite*>> shards;
  std::vector<const TensorToWrite*> current;
  std::uint64_t current_size = 0;
  for (const TensorToWrite& t : tensors) {
    const std::uint64_t size = write_nbytes(t);
    if (size > max_shard_bytes) {
      shards.push_back({&t});
      continue;
    }
    if (current_size + size > max_shard_bytes) {
      shards.push_back(std::move(current));
      current.clear();
      current_size = 0;
    }
    current.push_back(&t);
    current_size += size;
  }
  if (!current.empty() || shards.empty()) shards.push_back(std::move(current));

  std::vector<std::string> names;
  for (std::size_t i = 0; i < shards.size(); ++i) names.push_back(safetensors_shard_name(i, shards.size()));

  std::error_code ec;
  fs::create_directories(directory, ec);
  if (ec) input_error(directory, "cannot create the checkpoint directory: " + ec.message());
  SafetensorsIndex index;
  for (std::size_t i = 0; i < shards.size(); ++i) {
    std::vector<TensorToWrite> shard;
    for (const TensorToWrite* t : shards[i]) {
      shard.push_back(*t);
      index.weight_map[t->name] = names[i];
      index.total_size += write_nbytes(*t);
      index.total_parameters += static_cast<std::uint64_t>(*checked_numel(t->shape));
    }
    write_safetensors((fs::path(directory) / names[i]).string(), shard, metadata);
  }
  if (shards.size() > 1) names.push_back(write_safetensors_index(directory, index));

  // Remove what an earlier save of another layout left (a loader would otherwise find it first).
  const std::set<std::string> written(names.begin(), names.end());
  for (const auto& entry : fs::directory_iterator(directory, ec)) {
    const std::string name = entry.path().filename().string();
    if (is_safetensors_weight_file(name) && entry.is_regular_file() && !written.count(name))
      fs::remove(entry.path(), ec);
  }
  return names;
}

std::string safetensors_shard_name(std::size_t i, std::size_t n) {
  if (n == 1) return kSingleName;
  char name[64];
  std::snprintf(name, sizeof name, "model-%05zu-of-%05zu.safetensors", i + 1, n);
  return name;
}

bool is_safetensors_weight_file(const std::string& name) {
  static const std::regex shard_pattern(R"(model-\d{5}-of-\d{5}\.safetensors)");
  return name == kSingleName || name == kIndexName || std::regex_match(name, shard_pattern);
}

std::string write_safetensors_index(const std::string& directory, const SafetensorsIndex& index) {
  // transformers: json.dumps(index, indent=2, sort_keys=True) + "\n" (ASCII-escaped, like Python).
  const nlohmann::json j = {
      {"metadata", {{"total_parameters", index.total_parameters}, {"total_size", index.total_size}}},
      {"weight_map", index.weight_map}};
  const std::string text = j.dump(2, ' ', true) + "\n";
  write_atomically((fs::path(directory) / kIndexName).string(),
                   {{reinterpret_cast<const std::uint8_t*>(text.data()), text.size()}});
  return kIndexName;
}

}  // namespace jetmoe::io
