#include "io/checkpoint.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <set>

#include "core/bf16.hpp"
#include "core/build_info.hpp"
#include "core/error.hpp"
#include "core/log.hpp"
#include "core/profiling.hpp"
#include "io/collective.hpp"
#include "jetmoe/build_config.hpp"
#include "parallel/comm.hpp"

#if JETMOE_HAVE_HDF5
#include <hdf5.h>
#endif

namespace jetmoe {

namespace fs = std::filesystem;

// ---- CRC-64/XZ, slicing by 8 -------------------------------------------------------------------------

namespace {

struct Crc64Tables {
  std::array<std::array<std::uint64_t, 256>, 8> t{};
  Crc64Tables() {
    constexpr std::uint64_t poly = 0xc96c5795d7870f42ull;  // ECMA-182, reflected
    for (std::uint64_t i = 0; i < 256; ++i) {
      std::uint64_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ poly : c >> 1;
      t[0][i] = c;
    }
    for (std::size_t i = 0; i < 256; ++i)
      for (std::size_t s = 1; s < 8; ++s) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
  }
};

bool host_is_little_endian() {
  const std::uint16_t one = 1;
  unsigned char first;
  std::memcpy(&first, &one, 1);
  return first == 1;
}

}  // namespace

std::uint64_t crc64(const void* data, std::size_t size, std::uint64_t crc) {
  static const Crc64Tables tables;
  const auto& t = tables.t;
  const auto* p = static_cast<const unsigned char*>(data);
  std::uint64_t c = ~crc;
  if (host_is_little_endian()) {
    for (; size >= 8; size -= 8, p += 8) {
      std::uint64_t w;
      std::memcpy(&w, p, 8);
      c ^= w;
      c = t[7][c & 0xff] ^ t[6][(c >> 8) & 0xff] ^ t[5][(c >> 16) & 0xff] ^ t[4][(c >> 24) & 0xff] ^
          t[3][(c >> 32) & 0xff] ^ t[2][(c >> 40) & 0xff] ^ t[1][(c >> 48) & 0xff] ^ t[0][c >> 56];
    }
  }
  for (; size > 0; --size, ++p) c = t[0][(c ^ *p) & 0xff] ^ (c >> 8);
  return ~c;
}

// ---- file naming and retention (no HDF5 needed) -------------------------------------------------------

std::string checkpoint_name(std::int64_t step) {
  JETMOE_ASSERT(step >= 0, "checkpoint step must not be negative");
  char buf[40];
  std::snprintf(buf, sizeof buf, "step-%09lld.h5", static_cast<long long>(step));
  return buf;
}

namespace {

// The step of a file named "step-<digits>.h5", or nullopt for any other name (*.tmp included).
std::optional<std::int64_t> checkpoint_step(const std::string& filename) {
  const std::string prefix = "step-", suffix = ".h5";
  if (filename.size() <= prefix.size() + suffix.size() || filename.compare(0, prefix.size(), prefix) != 0 ||
      filename.compare(filename.size() - suffix.size(), suffix.size(), suffix) != 0)
    return std::nullopt;
  const std::string digits = filename.substr(prefix.size(), filename.size() - prefix.size() - suffix.size());
  if (digits.size() > 18 || !std::all_of(digits.begin(), digits.end(), [](char ch) { return ch >= '0' && ch <= '9'; }))
    return std::nullopt;
  return std::stoll(digits);
}

// Complete checkpoints in `dir`, oldest first.
std::vector<std::pair<std::int64_t, fs::path>> list_checkpoints(const std::string& dir) {
  std::vector<std::pair<std::int64_t, fs::path>> found;
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return found;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    if (const auto step = checkpoint_step(it->path().filename().string())) found.emplace_back(*step, it->path());
  }
  if (ec) fail(ErrorKind::Input, dir + ": cannot list the checkpoint directory: " + ec.message());
  std::sort(found.begin(), found.end());
  return found;
}

}  // namespace

std::optional<std::string> latest_checkpoint(const std::string& dir) {
  const auto found = list_checkpoints(dir);
  if (found.empty()) return std::nullopt;
  return found.back().second.string();
}

std::vector<std::string> checkpoints_in(const std::string& dir) {
  std::vector<std::string> out;
  for (const auto& c : list_checkpoints(dir)) out.push_back(c.second.string());
  return out;
}

void prune_checkpoints(const std::string& dir, int keep_last, std::int64_t up_to_step) {
  auto found = list_checkpoints(dir);
  found.erase(std::remove_if(found.begin(), found.end(), [&](const auto& c) { return c.first > up_to_step; }),
              found.end());
  const std::size_t keep = static_cast<std::size_t>(std::max(keep_last, 1));
  for (std::size_t i = 0; i + keep < found.size(); ++i) {
    std::error_code ec;
    fs::remove(found[i].second, ec);
    // A checkpoint that cannot be deleted costs disk space, not the run.
    if (ec) log::warn("cannot delete old checkpoint %s: %s", found[i].second.c_str(), ec.message().c_str());
  }
}

#if JETMOE_HAVE_HDF5

// ---- HDF5 plumbing -----------------------------------------------------------------------------------

namespace {

// HDF5 prints its error stack by default; our messages replace it. Called before any HDF5 use.
void silence_hdf5() {
  static const bool done = [] {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    return true;
  }();
  (void)done;
}

// The most specific message on HDF5's error stack (call right after the failing call), shortened to
// what a user can act on: for failed system calls, the system's error message.
std::string hdf5_detail() {
  std::string innermost;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_UPWARD,
      [](unsigned n, const H5E_error2_t* e, void* out) -> herr_t {
        if (n == 0 && e->desc) *static_cast<std::string*>(out) = e->desc;
        return 0;
      },
      &innermost);
  const std::string key = "error message = '";
  if (const auto at = innermost.find(key); at != std::string::npos) {
    const auto end = innermost.find('\'', at + key.size());
    innermost = innermost.substr(at + key.size(), end == std::string::npos ? std::string::npos : end - at - key.size());
  }
  if (innermost.size() > 200) innermost = innermost.substr(0, 200) + "...";
  return innermost.empty() ? "" : " (HDF5: " + innermost + ")";
}

// An HDF5 identifier closed by the function it came with.
class Handle {
 public:
  Handle() = default;
  Handle(hid_t id, herr_t (*closer)(hid_t)) : id_(id), close_(closer) {}
  Handle(Handle&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = -1; }
  Handle& operator=(Handle&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = o.id_, close_ = o.close_, o.id_ = -1;
    }
    return *this;
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  ~Handle() { reset(); }
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  // Closes now and reports whether the close succeeded (closing a file flushes it).
  bool close() {
    const herr_t status = id_ >= 0 ? close_(id_) : 0;
    id_ = -1;
    return status >= 0;
  }

 private:
  void reset() {
    if (id_ >= 0) close_(id_);
    id_ = -1;
  }
  hid_t id_ = -1;
  herr_t (*close_)(hid_t) = nullptr;
};

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string s = "[";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string hex64(std::uint64_t v) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "0x%016llx", static_cast<unsigned long long>(v));
  return buf;
}

std::int64_t element_count(const std::vector<std::int64_t>& shape) {
  std::int64_t n = 1;
  for (const std::int64_t d : shape) n *= d;
  return n;
}

// The on-disk float types, little-endian. bf16 and fp16 are IEEE-style types HDF5 converts to float
// by itself (h5py and h5dump read them too); we convert in our own code to control the rounding.
Handle float_type(CheckpointDType t) {
  if (t == CheckpointDType::F32) return Handle(H5Tcopy(H5T_IEEE_F32LE), H5Tclose);
  Handle h(H5Tcopy(H5T_IEEE_F32LE), H5Tclose);
  if (t == CheckpointDType::BF16) {
    H5Tset_fields(h.get(), 15, 7, 8, 0, 7);
    H5Tset_precision(h.get(), 16);
    H5Tset_size(h.get(), 2);
    H5Tset_ebias(h.get(), 127);
  } else {
    H5Tset_fields(h.get(), 15, 10, 5, 0, 10);
    H5Tset_precision(h.get(), 16);
    H5Tset_size(h.get(), 2);
    H5Tset_ebias(h.get(), 15);
  }
  return h;
}

// Reverses the byte order of `count` elements of `size` bytes (big-endian hosts only).
void swap_bytes(void* data, std::size_t count, std::size_t size) {
  auto* p = static_cast<unsigned char*>(data);
  for (std::size_t i = 0; i < count; ++i, p += size) std::reverse(p, p + size);
}

// CRC-64 of `count` native elements of `size` bytes as their little-endian bytes.
std::uint64_t crc64_le(const void* data, std::size_t count, std::size_t size) {
  if (host_is_little_endian() || size == 1) return crc64(data, count * size);
  std::vector<unsigned char> copy(static_cast<const unsigned char*>(data),
                                  static_cast<const unsigned char*>(data) + count * size);
  swap_bytes(copy.data(), count, size);
  return crc64(copy.data(), copy.size());
}

constexpr const char* kChecksumAttribute = "crc64";
constexpr const char* kMetaGroup = "meta";

// ---- writing -----------------------------------------------------------------------------------------

class Writer {
 public:
  explicit Writer(const std::string& file_name) : name_(file_name) {}

  void fail_here(const std::string& what) const {
    const std::string detail = hdf5_detail();
    fail(ErrorKind::Input, name_ + ": cannot write " + what + detail);
  }

  Handle group(hid_t parent, const std::string& name) {
    Handle gcpl(H5Pcreate(H5P_GROUP_CREATE), H5Pclose);
    // names() lists tensors in the order they were written.
    H5Pset_link_creation_order(gcpl.get(), H5P_CRT_ORDER_TRACKED | H5P_CRT_ORDER_INDEXED);
    Handle g(H5Gcreate2(parent, name.c_str(), H5P_DEFAULT, gcpl.get(), H5P_DEFAULT), H5Gclose);
    if (!g.valid()) fail_here("group '" + name + "'");
    return g;
  }

  void attribute_u64(hid_t object, const char* name, std::uint64_t value, const std::string& where) {
    Handle space(H5Screate(H5S_SCALAR), H5Sclose);
    Handle a(H5Acreate2(object, name, H5T_STD_U64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
    if (!a.valid() || H5Awrite(a.get(), H5T_NATIVE_UINT64, &value) < 0) fail_here("attribute '" + std::string(name) + "' of " + where);
  }
  void attribute_i64(hid_t object, const char* name, std::int64_t value) {
    Handle space(H5Screate(H5S_SCALAR), H5Sclose);
    Handle a(H5Acreate2(object, name, H5T_STD_I64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
    if (!a.valid() || H5Awrite(a.get(), H5T_NATIVE_INT64, &value) < 0) fail_here("attribute '" + std::string(name) + "'");
  }
  void attribute_f64(hid_t object, const std::string& name, double value) {
    Handle space(H5Screate(H5S_SCALAR), H5Sclose);
    Handle a(H5Acreate2(object, name.c_str(), H5T_IEEE_F64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
    if (!a.valid() || H5Awrite(a.get(), H5T_NATIVE_DOUBLE, &value) < 0) fail_here("attribute '" + name + "'");
  }
  void attribute_string(hid_t object, const char* name, const std::string& value) {
    Handle type = string_type(value.size());
    Handle space(H5Screate(H5S_SCALAR), H5Sclose);
    Handle a(H5Acreate2(object, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
    const std::string stored = value.empty() ? std::string(1, '\0') : value;
    if (!a.valid() || H5Awrite(a.get(), type.get(), stored.data()) < 0) fail_here("attribute '" + std::string(name) + "'");
  }

  // Fixed-length, null-padded UTF-8 (variable-length strings cannot be written by parallel HDF5).
  static Handle string_type(std::size_t length) {
    Handle t(H5Tcopy(H5T_C_S1), H5Tclose);
    H5Tset_size(t.get(), std::max<std::size_t>(length, 1));
    H5Tset_strpad(t.get(), H5T_STR_NULLPAD);
    H5Tset_cset(t.get(), H5T_CSET_UTF8);
    return t;
  }

  // Datasets of the metadata: every rank of a parallel write creates them and computes the same
  // checksum; only the writing rank (write_data) stores the bytes.
  void string_dataset(hid_t parent, const std::string& name, const std::string& value, const std::string& where) {
    Handle type = string_type(value.size());
    Handle space(H5Screate(H5S_SCALAR), H5Sclose);
    Handle d(H5Dcreate2(parent, name.c_str(), type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
    const std::string stored = value.empty() ? std::string(1, '\0') : value;
    if (!d.valid() || (write_data_ && H5Dwrite(d.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, stored.data()) < 0))
      fail_here(where);
    attribute_u64(d.get(), kChecksumAttribute, crc64(stored.data(), stored.size()), where);
  }

  void u64_dataset(hid_t parent, const std::string& name, const std::vector<std::uint64_t>& values, const std::string& where) {
    const hsize_t n = values.size();
    Handle space(H5Screate_simple(1, &n, nullptr), H5Sclose);
    Handle d(H5Dcreate2(parent, name.c_str(), H5T_STD_U64LE, space.get(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Dclose);
    if (!d.valid()) fail_here(where);
    if (write_data_ && n > 0 && H5Dwrite(d.get(), H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data()) < 0)
      fail_here(where);
    attribute_u64(d.get(), kChecksumAttribute, crc64_le(values.data(), values.size(), 8), where);
  }

  static std::string tensor_where(const std::string& group, const CheckpointTensor& t) {
    return "tensor '/" + group + "/" + t.name + "'";
  }

  // Creates the dataset of a tensor (collectively in a parallel write: no fill values are written,
  // the owner writes every byte).
  Handle create_tensor(hid_t parent, const std::string& group, const CheckpointTensor& t) {
    std::vector<hsize_t> dims(t.shape.begin(), t.shape.end());
    Handle space(t.shape.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(int(dims.size()), dims.data(), nullptr), H5Sclose);
    Handle file_type = float_type(t.stored_as);
    Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
    H5Pset_fill_time(dcpl.get(), H5D_FILL_TIME_NEVER);
    Handle d(H5Dcreate2(parent, t.name.c_str(), file_type.get(), space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT), H5Dclose);
    if (!d.valid()) fail_here(tensor_where(group, t));
    return d;
  }

  // Writes the tensor's data (t.data, or what t.fill puts into the staging buffer) into its dataset
  // and returns the checksum of the stored bytes.
  std::uint64_t write_tensor(hid_t d, const std::string& group, const CheckpointTensor& t) {
    const std::size_t n = static_cast<std::size_t>(element_count(t.shape));
    if (n == 0) return crc64(nullptr, 0);
    const std::string where = tensor_where(group, t);
    const float* data = t.data;
    if (!data) {
      if (staging_.size() < n) {
        staging_.clear();
        staging_.shrink_to_fit();  // never two buffers at once
        staging_.resize(n);
      }
      t.fill(staging_.data());
      data = staging_.data();
    }
    if (t.stored_as == CheckpointDType::F32) {
      // Native float to little-endian float32: no conversion on little-endian hosts.
      if (H5Dwrite(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0) fail_here(where);
      return crc64_le(data, n, 4);
    }
    std::vector<std::uint16_t> half(n);
    for (std::size_t i = 0; i < n; ++i)
      half[i] = t.stored_as == CheckpointDType::BF16 ? bf16::from_float(data[i]).bits : fp16::from_float(data[i]).bits;
    const std::uint64_t crc = crc64_le(half.data(), n, 2);
    if (!host_is_little_endian()) swap_bytes(half.data(), n, 2);
    Handle file_type = float_type(t.stored_as);
    if (H5Dwrite(d, file_type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, half.data()) < 0) fail_here(where);
    return crc;
  }

  void tensor_dataset(hid_t parent, const std::string& group, const CheckpointTensor& t) {
    Handle d = create_tensor(parent, group, t);
    attribute_u64(d.get(), kChecksumAttribute, write_tensor(d.get(), group, t), tensor_where(group, t));
  }

  void set_write_data(bool on) { write_data_ = on; }

 private:
  std::string name_;
  bool write_data_ = true;
  std::vector<float> staging_;  // the tensors given by `fill`, one at a time
};

// Flushes a closed file's data to stable storage.
void fsync_path(const std::string& path, bool directory) {
  const int fd = ::open(path.c_str(), directory ? O_RDONLY | O_DIRECTORY : O_RDONLY);
  if (fd < 0) {
    if (directory) return;  // best effort: some file systems do not open directories
    fail(ErrorKind::Input, path + ": cannot reopen to flush it: " + std::strerror(errno));
  }
  const int status = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (status != 0 && !directory) fail(ErrorKind::Input, path + ": cannot flush to disk: " + std::strerror(err));
}

// `collective`: a tensor's data may be null on the ranks that do not own it.
void check_names(const CheckpointMeta& meta, const CheckpointGroups& groups, bool collective = false) {
  auto valid_name = [](const std::string& s) { return !s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos; };
  std::set<std::string> group_names;
  for (const auto& [group, tensors] : groups) {
    JETMOE_ASSERT(valid_name(group) && group != kMetaGroup, "write_checkpoint: invalid group name '" + group + "'");
    JETMOE_ASSERT(group_names.insert(group).second, "write_checkpoint: group '" + group + "' given twice");
    std::set<std::string> names;
    for (const CheckpointTensor& t : tensors) {
      JETMOE_ASSERT(valid_name(t.name), "write_checkpoint: invalid tensor name '" + t.name + "' in group '" + group + "'");
      JETMOE_ASSERT(names.insert(t.name).second, "write_checkpoint: tensor '" + group + "/" + t.name + "' given twice");
      for (const std::int64_t d : t.shape)
        JETMOE_ASSERT(d >= 0, "write_checkpoint: tensor '" + group + "/" + t.name + "' has shape " + shape_text(t.shape));
      JETMOE_ASSERT(collective || t.held() || element_count(t.shape) == 0,
                    "write_checkpoint: tensor '" + group + "/" + t.name + "' has no data");
    }
  }
  for (const auto& [name, value] : meta.scalars) {
    (void)value;
    JETMOE_ASSERT(!name.empty(), "write_checkpoint: a meta scalar has an empty name");
  }
}

// After a failed write, closes the file without letting HDF5 fail: HDF5 < 1.14.1 frees a file whose
// close fails (it cannot flush its metadata to a full disk) but leaves its identifier behind, and then
// crashes at exit closing it again (HDFGroup/hdf5#2496). So the file's descriptor is first pointed at
// an anonymous in-memory file that takes the last writes (past a file-size limit too, when that was
// the failure); the temporary file is deleted afterwards.
void discard_and_close(Handle& file, int fd) {
  rlimit size_limit{};
  const bool limited = ::getrlimit(RLIMIT_FSIZE, &size_limit) == 0 && size_limit.rlim_cur != size_limit.rlim_max;
  if (limited) {
    rlimit raised = size_limit;
    raised.rlim_cur = size_limit.rlim_max;
    ::setrlimit(RLIMIT_FSIZE, &raised);
  }
  int sink = -1;
#ifdef __linux__
  sink = ::memfd_create("jetmoe-discarded-checkpoint", MFD_CLOEXEC);
#endif
  if (sink < 0) {
    std::error_code ec;
    const fs::path tmp_dir = fs::temp_directory_path(ec);
    std::string templ = ((ec ? fs::path("/tmp") : tmp_dir) / "jetmoe-discarded-XXXXXX").string();
    sink = ::mkstemp(templ.data());
    if (sink >= 0) ::unlink(templ.c_str());
  }
  if (sink >= 0 && fd >= 0) ::dup2(sink, fd);
  if (sink >= 0) ::close(sink);
  file.close();
  if (limited) ::setrlimit(RLIMIT_FSIZE, &size_limit);
}

// Allocates the whole file on disk (up to its end of address space, which closing does not exceed;
// the size stays as it is), so that writing the final metadata cannot fail for lack of space, and
// checks the process's file-size limit, which the allocation does not.
// `bytes` of the file `tmp` on disk through descriptor fd (fd < 0: only the file-size limit is checked).
void reserve_bytes(int fd, std::uint64_t bytes, const std::string& tmp) {
#if defined(__linux__)
  const std::string size = std::to_string(bytes) + " bytes";
  if (rlimit limit{}; ::getrlimit(RLIMIT_FSIZE, &limit) == 0 && limit.rlim_cur != RLIM_INFINITY && bytes > limit.rlim_cur)
    fail(ErrorKind::Input, tmp + ": cannot write the file (" + size + "): " + std::strerror(EFBIG) +
                               " (the file-size limit, ulimit -f, is " + std::to_string(limit.rlim_cur) + " bytes)");
  if (fd < 0) return;
  int status;
  do {
    status = ::fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, static_cast<off_t>(bytes));
  } while (status != 0 && errno == EINTR);
  // File systems without fallocate: best effort, the close reports a failure itself.
  if (status != 0 && errno != EOPNOTSUPP && errno != ENOSYS)
    fail(ErrorKind::Input, tmp + ": cannot write the file (" + size + "): " + std::strerror(errno));
#else
  (void)fd, (void)bytes, (void)tmp;
#endif
}

void reserve_space(int fd, hid_t file, const std::string& tmp) {
#if H5_VERSION_GE(1, 10, 2)
  haddr_t eoa = 0;
  if (fd < 0 || H5Fget_eoa(file, &eoa) < 0 || eoa == 0) return;
  reserve_bytes(fd, eoa, tmp);
#else
  (void)fd, (void)file, (void)tmp;
#endif
}

// The file's attributes and /meta (identical on every rank of a parallel write).
void write_header(Writer& w, hid_t root, const CheckpointMeta& meta) {
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  {
    Handle a(H5Acreate2(root, "format_version", H5T_STD_I32LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
    const int version = kCheckpointFormatVersion;
    if (!a.valid() || H5Awrite(a.get(), H5T_NATIVE_INT, &version) < 0) w.fail_here("attribute 'format_version'");
  }
  w.attribute_i64(root, "step", meta.step);
  w.attribute_i64(root, "tokens_seen", meta.tokens_seen);
  w.attribute_string(root, "run_name", meta.run_name);
  w.attribute_string(root, "written_by", build_summary());
  w.attribute_string(root, "checksum_algorithm", "CRC-64/XZ of each dataset's raw little-endian bytes (attribute crc64)");

  Handle m = w.group(root, kMetaGroup);
  w.string_dataset(m.get(), "deck_text", meta.deck_text, "/meta/deck_text");
  w.string_dataset(m.get(), "model_config_json", meta.model_config_json, "/meta/model_config_json");
  if (!meta.run_setup.empty()) w.string_dataset(m.get(), "run_setup", meta.run_setup, "/meta/run_setup");
  w.u64_dataset(m.get(), "rng_state", meta.rng_state, "/meta/rng_state");
  w.u64_dataset(m.get(), "data_state", meta.data_state, "/meta/data_state");
  Handle scalars = w.group(m.get(), "scalars");
  for (const auto& [name, value] : meta.scalars) w.attribute_f64(scalars.get(), name, value);
}

void write_file(const std::string& tmp, const std::string& path, const CheckpointMeta& meta, const CheckpointGroups& groups) {
  Writer w(tmp);
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  // The 1.8 file format: object headers carry checksums, so damaged metadata is detected by HDF5.
  H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V18, H5F_LIBVER_LATEST);
  Handle file(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), H5Fclose);
  if (!file.valid()) {
    const std::string detail = hdf5_detail();
    fail(ErrorKind::Input, path + ": cannot create the temporary file " + tmp + detail);
  }
  int fd = -1;  // the sec2 driver's descriptor (serial file access)
  if (void* handle = nullptr; H5Fget_vfd_handle(file.get(), H5P_DEFAULT, &handle) >= 0 && handle) fd = *static_cast<int*>(handle);
  try {
    const hid_t root = file.get();
    write_header(w, root, meta);

    for (const auto& [group, tensors] : groups) {
      Handle g = w.group(root, group);
      for (const CheckpointTensor& t : tensors) w.tensor_dataset(g.get(), group, t);
    }
    // Closing writes the cached metadata; a full disk must show up before that, while the file can
    // still be discarded cleanly (see discard_and_close; H5Fflush cannot be used for this: in HDF5
    // 1.10 a failed flush leaves the cache unable to close the file).
    reserve_space(fd, file.get(), tmp);
  } catch (...) {
    discard_and_close(file, fd);
    throw;
  }
  if (!file.close()) w.fail_here("the file (closing it failed)");
}

}  // namespace

void write_checkpoint(const std::string& path, const CheckpointMeta& meta, const CheckpointGroups& groups) {
  Region region("write_checkpoint");
  silence_hdf5();
  check_names(meta, groups);
  const std::string tmp = path + ".tmp";
  const fs::path parent = fs::path(path).parent_path();
  std::error_code ec;
  if (!parent.empty() && !fs::exists(parent, ec)) {
    fs::create_directories(parent, ec);
    if (ec) fail(ErrorKind::Input, path + ": cannot create the checkpoint directory " + parent.string() + ": " + ec.message());
  }
  try {
    write_file(tmp, path, meta, groups);
    fsync_path(tmp, false);
    fs::rename(tmp, path, ec);
    if (ec) fail(ErrorKind::Input, path + ": cannot rename " + tmp + " over it: " + ec.message());
    fsync_path(parent.empty() ? "." : parent.string(), true);
  } catch (...) {
    std::error_code ignored;
    fs::remove(tmp, ignored);
    throw;
  }
}

#if JETMOE_HAVE_MPI && defined(H5_HAVE_PARALLEL)

namespace {

// Rank 0's metadata on every rank: the attributes and /meta of a parallel file must be written with
// the same values by every rank.
class Packer {
 public:
  template <typename T>
  void put(const T& v) {
    bytes_.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  void put(const std::string& v) {
    put(std::uint64_t(v.size()));
    bytes_ += v;
  }
  template <typename T>
  T get() {
    T v;
    JETMOE_ASSERT(at_ + sizeof v <= bytes_.size(), "checkpoint metadata broadcast truncated");
    std::memcpy(&v, bytes_.data() + at_, sizeof v);
    at_ += sizeof v;
    return v;
  }
  std::string get_string() {
    const auto n = std::size_t(get<std::uint64_t>());
    JETMOE_ASSERT(at_ + n <= bytes_.size(), "checkpoint metadata broadcast truncated");
    std::string v = bytes_.substr(at_, n);
    at_ += n;
    return v;
  }
  std::string& bytes() { return bytes_; }

 private:
  std::string bytes_;
  std::size_t at_ = 0;
};

CheckpointMeta broadcast_meta(const Comm& comm, const CheckpointMeta& meta) {
  Packer p;
  if (comm.is_root()) {
    p.put(meta.step), p.put(meta.tokens_seen);
    for (const auto* v : {&meta.rng_state, &meta.data_state}) {
      p.put(std::uint64_t(v->size()));
      for (const std::uint64_t x : *v) p.put(x);
    }
    p.put(meta.deck_text), p.put(meta.model_config_json), p.put(meta.run_name), p.put(meta.run_setup);
    p.put(std::uint64_t(meta.scalars.size()));
    for (const auto& [name, value] : meta.scalars) p.put(name), p.put(value);
  }
  comm.broadcast(p.bytes(), 0);
  CheckpointMeta out;
  out.step = p.get<std::int64_t>();
  out.tokens_seen = p.get<std::int64_t>();
  for (auto* v : {&out.rng_state, &out.data_state}) {
    v->resize(std::size_t(p.get<std::uint64_t>()));
    for (std::uint64_t& x : *v) x = p.get<std::uint64_t>();
  }
  out.deck_text = p.get_string();
  out.model_config_json = p.get_string();
  out.run_name = p.get_string();
  out.run_setup = p.get_string();
  const auto scalars = std::size_t(p.get<std::uint64_t>());
  for (std::size_t i = 0; i < scalars; ++i) {
    std::string name = p.get_string();
    out.scalars[name] = p.get<double>();
  }
  return out;
}

// The tensor list must be the same on every rank, and every non-empty tensor must have exactly one
// owner (a rank whose `data` is not null): both are invariants of the caller.
void check_ownership(const Comm& comm, const CheckpointGroups& groups) {
  std::string signature;
  std::vector<double> owners;
  for (const auto& [group, tensors] : groups) {
    signature += group + "\n";
    for (const CheckpointTensor& t : tensors) {
      signature += t.name + shape_text(t.shape) + std::to_string(int(t.stored_as)) + "\n";
      owners.push_back(t.held() && element_count(t.shape) > 0 ? 1.0 : 0.0);
    }
  }
  const std::uint64_t h = crc64(signature.data(), signature.size());
  const int lo = int(h & 0x7fffffffu), hi = int((h >> 32) & 0x7fffffffu);
  JETMOE_ASSERT(comm.min(lo) == comm.max(lo) && comm.min(hi) == comm.max(hi),
                "write_checkpoint: the ranks of a collective write list different tensors");
  comm.sum_in_place(owners.data(), owners.size());
  std::size_t i = 0;
  for (const auto& [group, tensors] : groups)
    for (const CheckpointTensor& t : tensors) {
      const double n = owners[i++];
      JETMOE_ASSERT(n == 1.0 || (n == 0.0 && element_count(t.shape) == 0),
                    "write_checkpoint: tensor '" + group + "/" + t.name + "' has " + std::to_string(int(n)) +
                        " owning ranks, expected 1");
    }
}

// Reserves `bytes` of the file `tmp` on disk (rank 0) and checks every rank's file-size limit against
// them; any failure is every rank's, naming the rank.
void reserve_collectively(const Comm& comm, const std::string& tmp, std::uint64_t bytes) {
  std::string error = attempt([&] {
    int fd = -1;
    if (comm.is_root()) {
      fd = ::open(tmp.c_str(), O_WRONLY | O_CLOEXEC);
      if (fd < 0) fail(ErrorKind::Input, tmp + ": cannot open the file to reserve its space: " + std::strerror(errno));
    }
    try {
      reserve_bytes(fd, bytes, tmp);
    } catch (...) {
      if (fd >= 0) ::close(fd);
      throw;
    }
    if (fd >= 0) ::close(fd);
  });
  if (!error.empty()) error += " (on rank " + std::to_string(comm.rank()) + ")";
  agree(comm, error);
}

void write_file_collective(const Comm& comm, const std::string& tmp, const std::string& path, const CheckpointMeta& meta,
                           const CheckpointGroups& groups) {
  Writer w(tmp);
  w.set_write_data(comm.is_root());  // the metadata's bytes; each tensor's owner writes its own
  Handle fapl(H5Pcreate(H5P_FILE_ACCESS), H5Pclose);
  H5Pset_libver_bounds(fapl.get(), H5F_LIBVER_V18, H5F_LIBVER_LATEST);
  H5Pset_fapl_mpio(fapl.get(), comm.raw(), MPI_INFO_NULL);
  // Metadata is read and written collectively (rank 0 writes it once instead of every rank).
  H5Pset_all_coll_metadata_ops(fapl.get(), true);
  H5Pset_coll_metadata_write(fapl.get(), true);
  Handle file(H5Fcreate(tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.get()), H5Fclose);
  agree(comm, file.valid() ? "" : path + ": cannot create the temporary file " + tmp + hdf5_detail());
  // Running out of space inside HDF5's collective calls (a metadata write while datasets are being
  // created, the data, the final flush) leaves the ranks in different states, and closing the file then
  // never returns. So the file's size is bounded first (its tensors, its metadata strings, a generous
  // allowance for HDF5's own metadata) and reserved on disk by rank 0, and every rank checks that bound
  // against its own file-size limit, before HDF5 writes anything beyond the superblock.
  std::uint64_t bound = std::uint64_t(1) << 20;
  for (const auto& [group, tensors] : groups)
    for (const CheckpointTensor& t : tensors)
      bound += 8192 + std::uint64_t(element_count(t.shape)) * (t.stored_as == CheckpointDType::F32 ? 4u : 2u);
  bound += meta.deck_text.size() + meta.model_config_json.size() + meta.run_name.size() + meta.run_setup.size() +
           64 * meta.scalars.size() + 8 * (meta.rng_state.size() + meta.data_state.size());
  reserve_collectively(comm, tmp, bound);

  const hid_t root = file.get();
  agree(comm, attempt([&] { write_header(w, root, meta); }));
  // Datasets are created collectively, in the same order on every rank (parallel HDF5 allocates their
  // space at creation).
  std::vector<Handle> datasets;
  agree(comm, attempt([&] {
    for (const auto& [group, tensors] : groups) {
      Handle g = w.group(root, group);
      for (const CheckpointTensor& t : tensors) datasets.push_back(w.create_tensor(g.get(), group, t));
    }
  }));
  // The bound was an estimate: should the data end beyond it, reserve up to the data's end too
  // (H5Fget_eoa is not available with the MPI-IO driver).
  {
    std::uint64_t end = 0;
    for (const Handle& d : datasets) {
      const haddr_t offset = H5Dget_offset(d.get());
      if (offset == HADDR_UNDEF) continue;  // empty tensors have no storage
      end = std::max<std::uint64_t>(end, std::uint64_t(offset) + std::uint64_t(H5Dget_storage_size(d.get())));
    }
    if (end + 65536 > bound) reserve_collectively(comm, tmp, end + 65536);
  }
  // The owner of a tensor writes its bytes with independent I/O while the others go on. Checksums
  // follow once all are known.
  std::vector<std::uint64_t> crcs;
  std::string write_error;
  {
    std::size_t i = 0;
    for (const auto& [group, tensors] : groups)
      for (const CheckpointTensor& t : tensors) {
        std::uint64_t crc = 0;
        if (element_count(t.shape) == 0) {
          crc = crc64(nullptr, 0);
        } else if (t.held() && write_error.empty()) {
          const std::string& name = group;  // a structured binding is captured only from C++20 on
          write_error = attempt([&] { crc = w.write_tensor(datasets[i].get(), name, t); });
        }
        crcs.push_back(crc);
        ++i;
      }
  }
  agree(comm, write_error);
  // Exactly one rank holds each checksum, the others 0.
  MPI_Allreduce(MPI_IN_PLACE, crcs.data(), int(crcs.size()), MPI_UINT64_T, MPI_BOR, comm.raw());
  agree(comm, attempt([&] {
    std::size_t i = 0;
    for (const auto& [group, tensors] : groups)
      for (const CheckpointTensor& t : tensors) {
        w.attribute_u64(datasets[i].get(), kChecksumAttribute, crcs[i], Writer::tensor_where(group, t));
        datasets[i++].close();
      }
  }));
  const bool closed = file.close();
  agree(comm, closed ? "" : tmp + ": cannot write the file (closing it failed)" + hdf5_detail());
}

}  // namespace

void write_checkpoint(const Comm& comm, const std::string& path_in, const CheckpointMeta& meta_in,
                      const CheckpointGroups& groups) {
  if (comm.size() == 1) return write_checkpoint(path_in, meta_in, groups);
  Region region("write_checkpoint");
  silence_hdf5();
  check_names(meta_in, groups, /*collective=*/true);
  check_ownership(comm, groups);
  const CheckpointMeta meta = broadcast_meta(comm, meta_in);
  std::string path = path_in;  // rank 0's: every rank must open the same file
  comm.broadcast(path, 0);
  const std::string tmp = path + ".tmp";
  const fs::path parent = fs::path(path).parent_path();
  std::string error;
  if (comm.is_root() && !parent.empty()) {
    std::error_code ec;
    if (!fs::exists(parent, ec)) {
      fs::create_directories(parent, ec);
      if (ec) error = path + ": cannot create the checkpoint directory " + parent.string() + ": " + ec.message();
    } else if (!fs::is_directory(parent, ec)) {
      error = path + ": cannot create the checkpoint directory " + parent.string() + ": a file of that name exists";
    }
  }
  agree(comm, error);
  // Every rank opens the file: a rank that cannot see the directory would fail alone inside the
  // collective open (MPI-IO then waits forever), so check first and fail together.
  const std::string dir = parent.empty() ? "." : parent.string();
  if (::access(dir.c_str(), W_OK | X_OK) != 0)
    error = path + ": the checkpoint directory " + dir + " is not writable from rank " + std::to_string(comm.rank()) +
            " (" + std::strerror(errno) + "); every rank writes its tensors, so checkpoint/dir must be on a file "
            "system that all ranks share";
  agree(comm, error);
  try {
    write_file_collective(comm, tmp, path, meta, groups);
    if (comm.is_root()) {
      error = attempt([&] {
        fsync_path(tmp, false);
        std::error_code ec;
        fs::rename(tmp, path, ec);
        if (ec) fail(ErrorKind::Input, path + ": cannot rename " + tmp + " over it: " + ec.message());
        fsync_path(parent.empty() ? "." : parent.string(), true);
      });
    }
    agree(comm, error);
  } catch (...) {
    if (comm.is_root()) {
      std::error_code ignored;
      fs::remove(tmp, ignored);
    }
    throw;
  }
}

bool checkpoint_writes_collectively() { return true; }

#else  // serial HDF5 or no MPI: the data is gathered to rank 0, which writes alone

bool checkpoint_writes_collectively() { return false; }

void write_checkpoint(const Comm& comm, const std::string& path, const CheckpointMeta& meta, const CheckpointGroups& groups) {
  JETMOE_ASSERT(comm.size() == 1, "write_checkpoint: a collective write needs MPI and parallel HDF5 (this build has neither)");
  write_checkpoint(path, meta, groups);
}

#endif

// ---- reading -----------------------------------------------------------------------------------------

struct CheckpointReader::File {
  Handle file;
};

namespace {

constexpr unsigned char kHdf5Signature[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};

// Classifies a file HDF5 cannot open: missing, empty, cut inside the signature, not HDF5.
void check_is_hdf5(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) fail(ErrorKind::Input, path + ": checkpoint does not exist");
  if (fs::is_directory(path, ec)) fail(ErrorKind::Input, path + ": is a directory, expected a jetmoe HDF5 checkpoint file");
  std::ifstream in(path, std::ios::binary);
  if (!in) fail(ErrorKind::Input, path + ": cannot open checkpoint: " + std::strerror(errno));
  unsigned char head[8] = {};
  in.read(reinterpret_cast<char*>(head), 8);
  const std::size_t got = static_cast<std::size_t>(in.gcount());
  if (got == 0) fail(ErrorKind::Input, path + ": empty file (0 bytes): not a checkpoint, or truncated");
  const bool signature = std::memcmp(head, kHdf5Signature, got) == 0;
  // Below the smallest superblock (48 bytes, version 2) HDF5 cannot tell that a file was cut short.
  const auto size = fs::file_size(path, ec);
  if (signature && !ec && size < 48) fail(ErrorKind::Input, path + ": truncated HDF5 file (" + std::to_string(size) + " bytes)");
  // HDF5 also looks for its signature after a user block (512, 1024, ... bytes).
#if H5_VERSION_GE(1, 12, 0)
  const bool hdf5 = H5Fis_accessible(path.c_str(), H5P_DEFAULT) > 0;
#else
  const bool hdf5 = H5Fis_hdf5(path.c_str()) > 0;
#endif
  if (!signature && !hdf5)
    fail(ErrorKind::Input, path + ": not an HDF5 file (no HDF5 signature); expected a jetmoe checkpoint");
}

[[noreturn]] void corrupt(const std::string& path, const std::string& what) {
  const std::string detail = hdf5_detail();
  fail(ErrorKind::Input, path + ": cannot read " + what + ": the file is truncated or corrupt" + detail);
}

bool link_exists(hid_t loc, const std::string& name) { return H5Lexists(loc, name.c_str(), H5P_DEFAULT) > 0; }

Handle open_attribute(const std::string& path, hid_t object, const char* name, const std::string& owner) {
  if (H5Aexists(object, name) <= 0)
    fail(ErrorKind::Input, path + ": not a complete jetmoe checkpoint: " + owner + " has no attribute '" + name + "'");
  Handle a(H5Aopen(object, name, H5P_DEFAULT), H5Aclose);
  if (!a.valid()) corrupt(path, "attribute '" + std::string(name) + "' of " + owner);
  return a;
}

std::int64_t read_int_attribute(const std::string& path, hid_t object, const char* name, const std::string& owner) {
  Handle a = open_attribute(path, object, name, owner);
  Handle type(H5Aget_type(a.get()), H5Tclose);
  if (H5Tget_class(type.get()) != H5T_INTEGER)
    fail(ErrorKind::Input, path + ": attribute '" + name + "' of " + owner + " is not an integer");
  std::int64_t v = 0;
  if (H5Aread(a.get(), H5T_NATIVE_INT64, &v) < 0) corrupt(path, "attribute '" + std::string(name) + "'");
  return v;
}

std::uint64_t read_checksum(const std::string& path, hid_t dataset, const std::string& what) {
  Handle a = open_attribute(path, dataset, kChecksumAttribute, what);
  std::uint64_t v = 0;
  if (H5Aread(a.get(), H5T_NATIVE_UINT64, &v) < 0) corrupt(path, "the checksum of " + what);
  return v;
}

void check_checksum(const std::string& path, hid_t dataset, const std::string& what, std::uint64_t computed) {
  const std::uint64_t stored = read_checksum(path, dataset, what);
  if (stored != computed)
    fail(ErrorKind::Input, path + ": checksum mismatch in " + what + ": stored " + hex64(stored) + ", computed " +
                               hex64(computed) + " (the file is corrupt)");
}

// A string attribute or dataset's bytes as stored (fixed length, trailing NULs removed).
std::string read_string(const std::string& path, hid_t object, bool is_attribute, const std::string& what) {
  Handle type(is_attribute ? H5Aget_type(object) : H5Dget_type(object), H5Tclose);
  if (!type.valid()) corrupt(path, what);
  if (H5Tget_class(type.get()) != H5T_STRING || H5Tis_variable_str(type.get()) > 0)
    fail(ErrorKind::Input, path + ": " + what + " is not a fixed-length string");
  std::string s(H5Tget_size(type.get()), '\0');
  const herr_t status = is_attribute ? H5Aread(object, type.get(), s.data())
                                     : H5Dread(object, type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, s.data());
  if (status < 0) corrupt(path, what);
  return s;
}

std::string strip_nuls(std::string s) {
  while (!s.empty() && s.back() == '\0') s.pop_back();
  return s;
}

Handle open_dataset(const std::string& path, hid_t group, const std::string& name, const std::string& what) {
  if (!link_exists(group, name)) fail(ErrorKind::Input, path + ": not a complete jetmoe checkpoint: no " + what);
  Handle d(H5Dopen2(group, name.c_str(), H5P_DEFAULT), H5Dclose);
  if (!d.valid()) corrupt(path, what);
  return d;
}

std::string read_meta_string(const std::string& path, hid_t meta, const std::string& name) {
  const std::string what = "/meta/" + name;
  Handle d = open_dataset(path, meta, name, what);
  const std::string raw = read_string(path, d.get(), false, what);
  check_checksum(path, d.get(), what, crc64(raw.data(), raw.size()));
  return strip_nuls(raw);
}

std::vector<std::uint64_t> read_meta_u64(const std::string& path, hid_t meta, const std::string& name) {
  const std::string what = "/meta/" + name;
  Handle d = open_dataset(path, meta, name, what);
  Handle space(H5Dget_space(d.get()), H5Sclose);
  if (!space.valid() || H5Sget_simple_extent_ndims(space.get()) != 1) corrupt(path, what);
  hsize_t n = 0;
  H5Sget_simple_extent_dims(space.get(), &n, nullptr);
  std::vector<std::uint64_t> v(n);
  if (n > 0 && H5Dread(d.get(), H5T_NATIVE_UINT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, v.data()) < 0) corrupt(path, what);
  check_checksum(path, d.get(), what, crc64_le(v.data(), v.size(), 8));
  return v;
}

}  // namespace

CheckpointReader::CheckpointReader(const std::string& path) : path_(path), file_(std::make_unique<File>()) {
  Region region("read_checkpoint_meta");
  silence_hdf5();
  check_is_hdf5(path);
  file_->file = Handle(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  if (!file_->file.valid()) {
    const std::string detail = hdf5_detail();
    const bool truncated = detail.find("truncated file") != std::string::npos;
    fail(ErrorKind::Input, path + ": cannot open the HDF5 file: " + (truncated ? "it is truncated" : "it is corrupt or unreadable") +
                               detail);
  }
  const hid_t root = file_->file.get();
  const htri_t has_version = H5Aexists(root, "format_version");
  if (has_version < 0)  // the root's attributes cannot be read: damaged, not foreign
    fail(ErrorKind::Input, path + ": cannot read the attributes of the file: the file is truncated or corrupt" + hdf5_detail());
  if (has_version == 0)
    fail(ErrorKind::Input, path + ": not a jetmoe checkpoint (an HDF5 file without the attribute format_version)");
  const std::int64_t version = read_int_attribute(path, root, "format_version", "the file");
  if (version != kCheckpointFormatVersion)
    fail(ErrorKind::Input, path + ": unknown checkpoint format version (expected " + std::to_string(kCheckpointFormatVersion) +
                               ", found " + std::to_string(version) + ")");
  meta_.step = read_int_attribute(path, root, "step", "the file");
  meta_.tokens_seen = read_int_attribute(path, root, "tokens_seen", "the file");
  {
    Handle a = open_attribute(path, root, "run_name", "the file");
    meta_.run_name = strip_nuls(read_string(path, a.get(), true, "attribute 'run_name'"));
  }
  if (!link_exists(root, kMetaGroup)) fail(ErrorKind::Input, path + ": not a complete jetmoe checkpoint: no group /meta");
  Handle meta(H5Gopen2(root, kMetaGroup, H5P_DEFAULT), H5Gclose);
  if (!meta.valid()) corrupt(path, "group /meta");
  meta_.deck_text = read_meta_string(path, meta.get(), "deck_text");
  meta_.model_config_json = read_meta_string(path, meta.get(), "model_config_json");
  const htri_t has_setup = H5Lexists(meta.get(), "run_setup", H5P_DEFAULT);  // optional; < 0: damaged
  if (has_setup < 0) corrupt(path, "group /meta");
  if (has_setup > 0) meta_.run_setup = read_meta_string(path, meta.get(), "run_setup");
  meta_.rng_state = read_meta_u64(path, meta.get(), "rng_state");
  meta_.data_state = read_meta_u64(path, meta.get(), "data_state");
  if (link_exists(meta.get(), "scalars")) {
    Handle scalars(H5Gopen2(meta.get(), "scalars", H5P_DEFAULT), H5Gclose);
    if (!scalars.valid()) corrupt(path, "group /meta/scalars");
    struct Visit {
      std::map<std::string, double>* scalars;
      bool ok;
      std::string bad;
    } visit{&meta_.scalars, true, {}};
    hsize_t position = 0;
    const herr_t status = H5Aiterate2(
        scalars.get(), H5_INDEX_NAME, H5_ITER_INC, &position,
        [](hid_t object, const char* name, const H5A_info_t*, void* data) -> herr_t {
          auto& v = *static_cast<Visit*>(data);
          Handle a(H5Aopen(object, name, H5P_DEFAULT), H5Aclose);
          double value = 0;
          if (!a.valid() || H5Aread(a.get(), H5T_NATIVE_DOUBLE, &value) < 0) {
            v.ok = false, v.bad = name;
            return -1;
          }
          (*v.scalars)[name] = value;
          return 0;
        },
        &visit);
    if (status < 0 || !visit.ok) corrupt(path, "/meta/scalars" + (visit.bad.empty() ? "" : " attribute '" + visit.bad + "'"));
  }
}

CheckpointReader::~CheckpointReader() = default;
CheckpointReader::CheckpointReader(CheckpointReader&&) noexcept = default;
CheckpointReader& CheckpointReader::operator=(CheckpointReader&&) noexcept = default;

namespace {
bool plain_name(const std::string& s) { return !s.empty() && s != "." && s != ".." && s.find('/') == std::string::npos; }
}  // namespace

bool CheckpointReader::has(const std::string& group, const std::string& name) const {
  if (!plain_name(group) || !plain_name(name)) return false;
  const hid_t root = file_->file.get();
  return link_exists(root, group) && link_exists(root, group + "/" + name) &&
         H5Oexists_by_name(root, (group + "/" + name).c_str(), H5P_DEFAULT) > 0;
}

std::vector<std::string> CheckpointReader::names(const std::string& group) const {
  std::vector<std::string> out;
  if (!plain_name(group) || group == kMetaGroup || !link_exists(file_->file.get(), group)) return out;
  Handle g(H5Gopen2(file_->file.get(), group.c_str(), H5P_DEFAULT), H5Gclose);
  if (!g.valid()) corrupt(path_, "group '/" + group + "'");
  // Creation order when the group tracks it (ours do), else by name.
  Handle gcpl(H5Gget_create_plist(g.get()), H5Pclose);
  unsigned flags = 0;
  H5Pget_link_creation_order(gcpl.get(), &flags);
  const H5_index_t index = (flags & H5P_CRT_ORDER_INDEXED) ? H5_INDEX_CRT_ORDER : H5_INDEX_NAME;
  hsize_t position = 0;
#if H5_VERSION_GE(1, 12, 0)
  using LinkInfo = H5L_info2_t;
  constexpr auto iterate = H5Literate2;
#else
  using LinkInfo = H5L_info_t;
  constexpr auto iterate = H5Literate;
#endif
  const herr_t status = iterate(
      g.get(), index, H5_ITER_INC, &position,
      [](hid_t, const char* name, const LinkInfo*, void* data) -> herr_t {
        static_cast<std::vector<std::string>*>(data)->push_back(name);
        return 0;
      },
      &out);
  if (status < 0) corrupt(path_, "the tensor list of group '/" + group + "'");
  return out;
}

namespace {

struct OpenTensor {
  Handle dataset;
  std::vector<std::int64_t> shape;
};

OpenTensor open_tensor(const std::string& path, hid_t root, const std::string& group, const std::string& name) {
  const std::string what = "tensor '/" + group + "/" + name + "'";
  if (!plain_name(group) || !plain_name(name)) fail(ErrorKind::Input, path + ": missing " + what);
  if (!link_exists(root, group))
    fail(ErrorKind::Input, path + ": missing " + what + " (the checkpoint has no group '/" + group + "')");
  if (!link_exists(root, group + "/" + name)) fail(ErrorKind::Input, path + ": missing " + what);
  OpenTensor t{Handle(H5Dopen2(root, (group + "/" + name).c_str(), H5P_DEFAULT), H5Dclose), {}};
  if (!t.dataset.valid()) corrupt(path, what);
  Handle space(H5Dget_space(t.dataset.get()), H5Sclose);
  const int rank = space.valid() ? H5Sget_simple_extent_ndims(space.get()) : -1;
  if (rank < 0) corrupt(path, what);
  std::vector<hsize_t> dims(static_cast<std::size_t>(rank));
  H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr);
  t.shape.assign(dims.begin(), dims.end());
  return t;
}

}  // namespace

std::vector<std::int64_t> CheckpointReader::shape(const std::string& group, const std::string& name) const {
  return open_tensor(path_, file_->file.get(), group, name).shape;
}

void CheckpointReader::read(const std::string& group, const std::string& name, const std::vector<std::int64_t>& shape,
                            float* out) const {
  const std::string what = "tensor '/" + group + "/" + name + "'";
  OpenTensor t = open_tensor(path_, file_->file.get(), group, name);
  if (t.shape != shape)
    fail(ErrorKind::Input, path_ + ": shape mismatch for " + what + ": expected " + shape_text(shape) + ", found " +
                               shape_text(t.shape));
  Handle type(H5Dget_type(t.dataset.get()), H5Tclose);
  if (!type.valid()) corrupt(path_, what);
  std::optional<CheckpointDType> stored;
  if (H5Tget_class(type.get()) == H5T_FLOAT && H5Tget_order(type.get()) == H5T_ORDER_LE) {
    for (const CheckpointDType c : {CheckpointDType::F32, CheckpointDType::BF16, CheckpointDType::F16})
      if (H5Tequal(type.get(), float_type(c).get()) > 0) stored = c;
  }
  if (!stored)
    fail(ErrorKind::Input, path_ + ": " + what + " has an unsupported data type (expected little-endian float32, bfloat16 or float16)");
  const std::size_t n = static_cast<std::size_t>(element_count(shape));
  std::uint64_t crc = crc64(nullptr, 0);
  if (n > 0) {
    // The raw stored bytes first (no HDF5 conversion), so the checksum sees exactly what is on disk.
    if (*stored == CheckpointDType::F32) {
      if (H5Dread(t.dataset.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, out) < 0) corrupt(path_, what);
      crc = crc64(out, n * 4);
      if (!host_is_little_endian()) swap_bytes(out, n, 4);
    } else {
      std::vector<std::uint16_t> half(n);
      if (H5Dread(t.dataset.get(), type.get(), H5S_ALL, H5S_ALL, H5P_DEFAULT, half.data()) < 0) corrupt(path_, what);
      crc = crc64(half.data(), n * 2);
      if (!host_is_little_endian()) swap_bytes(half.data(), n, 2);
      for (std::size_t i = 0; i < n; ++i)
        out[i] = *stored == CheckpointDType::BF16 ? bf16::from_bits(half[i]).to_float() : fp16::from_bits(half[i]).to_float();
    }
  }
  check_checksum(path_, t.dataset.get(), what, crc);
}

#else  // !JETMOE_HAVE_HDF5

namespace {
[[noreturn]] void no_hdf5(const std::string& path) {
  fail(ErrorKind::Input, path + ": this jetmoe was built without HDF5 (JETMOE_ENABLE_HDF5=OFF) and cannot read or write checkpoints");
}
}  // namespace

struct CheckpointReader::File {};

void write_checkpoint(const std::string& path, const CheckpointMeta&, const CheckpointGroups&) { no_hdf5(path); }
void write_checkpoint(const Comm&, const std::string& path, const CheckpointMeta&, const CheckpointGroups&) { no_hdf5(path); }
bool checkpoint_writes_collectively() { return false; }
CheckpointReader::CheckpointReader(const std::string& path) : path_(path) { no_hdf5(path); }
CheckpointReader::~CheckpointReader() = default;
CheckpointReader::CheckpointReader(CheckpointReader&&) noexcept = default;
CheckpointReader& CheckpointReader::operator=(CheckpointReader&&) noexcept = default;
bool CheckpointReader::has(const std::string&, const std::string&) const { return false; }
std::vector<std::string> CheckpointReader::names(const std::string&) const { return {}; }
std::vector<std::int64_t> CheckpointReader::shape(const std::string&, const std::string&) const { no_hdf5(path_); }
void CheckpointReader::read(const std::string&, const std::string&, const std::vector<std::int64_t>&, float*) const {
  no_hdf5(path_);
}

#endif

}  // namespace jetmoe
