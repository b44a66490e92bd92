#pragma once
// safetensors: the Hugging Face checkpoint format (one file, or shards listed by
// model.safetensors.index.json). Reading maps the file and validates the whole header before any
// tensor is handed out; writing is atomic per file and lays files out as the reference library does.
//
// File layout: u64 little-endian header length N, N bytes of JSON header
//   {"__metadata__": {str: str}, "<name>": {"dtype": "BF16", "shape": [..], "data_offsets": [b, e]}, ...}
// then the data section; [b, e) are byte offsets into it. As in the reference (and its format
// description), the tensors must tile the data section exactly: no overlap, no holes, nothing after
// the last tensor.
//
// Every problem with a file is a jetmoe::Error of kind Input whose message names the file and the
// tensor; a mistake in what our own code asks to write is kind Internal.
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace jetmoe::io {

// The element types we read and write: numpy's safetensors dtypes plus BF16 (FP8, FP4/FP6 and C64
// are reported as unsupported). Declared in the reference library's order (increasing alignment);
// its writer sorts by that order, and so does ours.
enum class DType { BOOL, U8, I8, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64 };

std::string_view dtype_name(DType dtype);                          // "BF16"
std::size_t dtype_size(DType dtype);                               // bytes per element
std::optional<DType> parse_dtype(std::string_view name);           // nullopt if unknown or unsupported
bool is_floating(DType dtype);                                     // F16, BF16, F32, F64
std::string shape_string(const std::vector<std::int64_t>& shape);  // "[2, 3]"

struct ByteSpan {
  const std::uint8_t* data = nullptr;
  std::size_t size = 0;
};

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;  // [] for a scalar
  std::uint64_t data_begin = 0;     // byte offsets into the data section, as in the header
  std::uint64_t data_end = 0;

  std::int64_t numel() const;
  std::size_t nbytes() const { return static_cast<std::size_t>(data_end - data_begin); }
};

// A read-only memory map of a whole file (RAII, movable). Empty files map to an empty span.
class MappedFile {
 public:
  MappedFile() = default;
  // Throws ErrorKind::Input naming the file when it cannot be opened or mapped.
  explicit MappedFile(const std::string& path);
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;
  ~MappedFile();

  const std::uint8_t* data() const { return data_; }
  std::size_t size() const { return size_; }

 private:
  const std::uint8_t* data_ = nullptr;
  std::size_t size_ = 0;
};

// One .safetensors file, mapped and validated. Tensor bytes point into the mapping and stay valid
// while the object lives (moving it keeps them valid). Const methods are safe to call concurrently.
class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::string& path);

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }  // in data-section order
  std::vector<std::string> names() const;                              // sorted
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  const TensorInfo* find(std::string_view name) const;  // nullptr when absent
  const TensorInfo& info(std::string_view name) const;  // throws naming file and tensor when absent
  ByteSpan bytes(std::string_view name) const;
  ByteSpan bytes(const TensorInfo& tensor) const;

  // The tensor converted to float (F16/BF16/F32 exactly, F64 rounded to nearest) or to int64 (any
  // integer dtype or BOOL), after checking its shape: "expected shape [a, b], found [c, d]".
  // The second forms write numel values to `out`.
  std::vector<float> read_as_float(std::string_view name, const std::vector<std::int64_t>& expected_shape) const;
  void read_as_float(std::string_view name, const std::vector<std::int64_t>& expected_shape, float* out) const;
  std::vector<std::int64_t> read_as_int64(std::string_view name, const std::vector<std::int64_t>& expected_shape) const;
  void read_as_int64(std::string_view name, const std::vector<std::int64_t>& expected_shape, std::int64_t* out) const;

 private:
  SafetensorsFile() = default;
  const TensorInfo& checked(std::string_view name, const std::vector<std::int64_t>& expected_shape) const;

  std::string path_;
  MappedFile mapping_;
  std::size_t data_start_ = 0;  // 8 + header length
  std::vector<TensorInfo> tensors_;
  std::unordered_map<std::string, std::size_t> index_;  // name -> position in tensors_
  std::map<std::string, std::string> metadata_;
};

// A Hugging Face checkpoint: a directory holding model.safetensors or model.safetensors.index.json
// (the single file wins when both exist, as in transformers), a .safetensors file, or an index file.
// Every shard is opened once; the index and the shards must agree exactly.
class SafetensorsCheckpoint {
 public:
  static SafetensorsCheckpoint open(const std::string& path);

  const std::string& source() const { return source_; }  // the index or the single file, for messages
  const std::vector<SafetensorsFile>& files() const { return files_; }
  std::vector<std::string> names() const;  // every tensor of every shard, sorted

  const TensorInfo* find(std::string_view name) const;  // nullptr when absent
  const TensorInfo& info(std::string_view name) const;  // throws naming the checkpoint and tensor
  const SafetensorsFile& file_of(std::string_view name) const;
  ByteSpan bytes(std::string_view name) const;

  std::vector<float> read_as_float(std::string_view name, const std::vector<std::int64_t>& expected_shape) const;
  void read_as_float(std::string_view name, const std::vector<std::int64_t>& expected_shape, float* out) const;
  std::vector<std::int64_t> read_as_int64(std::string_view name, const std::vector<std::int64_t>& expected_shape) const;

 private:
  SafetensorsCheckpoint() = default;

  std::string source_;
  std::vector<SafetensorsFile> files_;
  std::unordered_map<std::string, std::size_t> owner_;  // tensor name -> index into files_
};

// A tensor to write: `data` holds numel * dtype_size little-endian bytes and must stay valid for
// the call. Or, with `data` null, `fill` puts those bytes into a buffer the writer owns when the
// writer reaches the tensor (one buffer for all such tensors, as large as the largest): a tensor in
// GPU memory, or one converted to another dtype, then never needs a host copy of the whole model. An
// exception thrown by `fill` fails the write (the file is not written, an earlier one is untouched).
struct TensorToWrite {
  std::string name;
  DType dtype = DType::F32;
  std::vector<std::int64_t> shape;
  const void* data = nullptr;
  std::function<void(void* out)> fill = nullptr;
};

// Writes one .safetensors file byte-identical to the reference library's (Python safetensors
// save_file / Rust serialize_to_file) for the same tensors and at most one metadata entry: tensors
// sorted by dtype, most aligned first (reference enum order, descending), then by name (bytewise);
// data in that order; header compact JSON ("__metadata__" first, then the tensors in that order,
// fields dtype, shape, data_offsets) padded with spaces to a multiple of 8 bytes. With two or more
// metadata entries the reference's order is that of a Rust HashMap (unspecified); ours is sorted.
// Atomic: writes `path`.tmp in the same directory, fsyncs it, renames it over `path`, fsyncs the
// directory; on any failure the temporary file is removed and an existing `path` is untouched.
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Writes a checkpoint directory as transformers' save_pretrained does (created if needed): the
// tensors, in the given order, are cut into shards of at most `max_shard_bytes` of data
// (huggingface_hub's split_state_dict_into_shards: a tensor larger than the limit gets a shard of its
// own; otherwise a shard is closed when the next tensor would overflow it). One shard is written as
// model.safetensors; several as model-00001-of-0000N.safetensors plus model.safetensors.index.json
// ({"metadata": {"total_parameters", "total_size"}, "weight_map"}, keys sorted, indent 2, as
// transformers writes it). Each shard carries `metadata`; transformers' loader requires
// "format" = "pt". Shard and index files left from an earlier save of another layout are removed,
// as save_pretrained does. Each file is written atomically, the index last; the directory as a whole
// is not (write into a fresh directory and rename it for that). Returns the file names written.
std::vector<std::string> write_sharded_safetensors(
    const std::string& directory, const std::vector<TensorToWrite>& tensors, std::uint64_t max_shard_bytes,
    const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// The pieces of write_sharded_safetensors, for a checkpoint whose shards are written elsewhere (by
// several ranks: see save_hf_checkpoint).
//
// The name of shard i (from 0) of n: model.safetensors when n = 1, else model-00001-of-0000N.safetensors.
std::string safetensors_shard_name(std::size_t i, std::size_t n);
// Whether a file name is one of a checkpoint directory's weight files: model.safetensors, its index,
// or a shard named as above.
bool is_safetensors_weight_file(const std::string& name);

// What model.safetensors.index.json lists.
struct SafetensorsIndex {
  std::map<std::string, std::string> weight_map;  // tensor name -> shard file name
  std::uint64_t total_size = 0;                   // bytes of tensor data, all shards
  std::uint64_t total_parameters = 0;             // elements, all shards
};
// Writes `directory`/model.safetensors.index.json atomically, as transformers does; returns its file name.
std::string write_safetensors_index(const std::string& directory, const SafetensorsIndex& index);

}  // namespace jetmoe::io
