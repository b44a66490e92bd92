#pragma once
// jetmoe training checkpoints: one HDF5 file per checkpoint (docs/user-guide.md, "Checkpoints").
//
//   /                      attributes format_version (int32 = 1), step, tokens_seen (int64), run_name,
//                          written_by (strings), checksum_algorithm ("CRC-64/XZ")
//   /meta/deck_text        the effective deck (string dataset)
//   /meta/model_config_json  the model shape as the config.json jetmoe-convert writes
//   /meta/run_setup        (optional) what the run's arithmetic depended on besides the deck's values
//   /meta/rng_state, /meta/data_state   uint64 [n], opaque to this layer
//   /meta/scalars          one float64 attribute per entry (last loss, ...)
//   /<group>/<name>        one dataset per tensor, e.g. /params/model.layers.0.mlp.bias,
//                          /adam_m/..., /adam_v/...; float32 (or bf16/fp16 for exports), row-major
// Every dataset carries an attribute `crc64`: CRC-64/XZ of its raw little-endian bytes as stored.
//
// A tensor is one contiguous dataset addressed by name. Under MPI with parallel HDF5 the ranks of a
// job write one file together (write_checkpoint with a Comm): every rank creates every dataset
// collectively and each tensor's owner (a pipeline stage, a ZeRO-1 shard) writes its bytes; the file
// is the same as one process would write, and any layout reads it.
//
// Writes are atomic: PATH.tmp in the same directory, flushed and fsync'ed, then renamed over PATH.
// Every error a user can meet (not HDF5, truncated, unknown version, missing tensor, wrong shape,
// checksum mismatch) is one ErrorKind::Input line naming the file and the tensor.
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace jetmoe {

class Comm;

inline constexpr int kCheckpointFormatVersion = 1;

// How a tensor is stored on disk; data in memory is always float32. Training checkpoints use F32
// (bit-exact restart); BF16/FP16 (round to nearest even) are for smaller exports.
enum class CheckpointDType { F32, BF16, F16 };

struct CheckpointTensor {
  std::string name;                  // dataset name: anything but '/' (HF names contain dots)
  std::vector<std::int64_t> shape;   // row-major; {} is a scalar (one element)
  const float* data;                 // host pointer, product(shape) floats; or null and `fill`:
  CheckpointDType stored_as = CheckpointDType::F32;
  // Instead of `data`: called once, when the writer reaches this tensor, to put its product(shape)
  // floats into a host buffer the writer owns (one buffer for all such tensors, as large as the
  // largest). Tensors in GPU memory are written this way, so that the host never holds more than one
  // of them; a tensor with `fill` is held by its rank as one with `data` is. An exception thrown
  // here fails the write as any other error does (nothing is written, PATH is untouched).
  std::function<void(float* out)> fill = nullptr;

  bool held() const { return data != nullptr || fill != nullptr; }
};

struct CheckpointMeta {
  std::int64_t step = 0, tokens_seen = 0;
  std::vector<std::uint64_t> rng_state, data_state;  // opaque
  std::string deck_text, model_config_json, run_name;
  std::map<std::string, double> scalars;  // e.g. last loss; optional extras
  // Optional (not written when empty, empty when the file has none): "key = value" lines naming what
  // the run's results depended on beyond the model and data (precision, layout, what computed the
  // matrix products), for the trainer to say when a restart differs (train/trainer.cpp, run_setup).
  std::string run_setup;
};

using CheckpointGroups = std::vector<std::pair<std::string, std::vector<CheckpointTensor>>>;

// Writes `path` atomically (see above). Group and tensor names must be non-empty, without '/', and
// unique; group "meta" is reserved. On any failure PATH.tmp is removed, an existing PATH is untouched,
// and the error names the file and what failed (for example the disk being full).
void write_checkpoint(const std::string& path, const CheckpointMeta& meta, const CheckpointGroups& groups);

// The collective form: every rank of `comm` calls it with the same groups (names, shapes, dtypes, in
// the same order); a tensor is held() on exactly one rank, its owner, which writes it
// (parallel HDF5, MPI-IO, independent data writes). Rank 0's `path` and `meta` are used (the directory
// must be on a file system every rank shares; a rank that cannot write there fails the call on every
// rank before the file is opened). Atomic like the
// serial form (rank 0 renames PATH.tmp once every rank has written and the file is closed). Every
// failure is agreed on: each rank throws the same CollectiveError (the lowest failing rank's
// message), PATH.tmp is removed and an existing PATH is untouched. With one rank it is the serial
// form; a build without parallel HDF5 accepts only one rank.
void write_checkpoint(const Comm& comm, const std::string& path, const CheckpointMeta& meta, const CheckpointGroups& groups);

// Whether this build writes checkpoints collectively (MPI and parallel HDF5); otherwise a job gathers
// its tensors to rank 0, which writes alone.
bool checkpoint_writes_collectively();

class CheckpointReader {
 public:
  // Opens and validates: HDF5 signature, format_version, the required metadata (whose checksums are
  // checked here). Tensors are read and checked on demand.
  explicit CheckpointReader(const std::string& path);
  ~CheckpointReader();
  CheckpointReader(CheckpointReader&&) noexcept;
  CheckpointReader& operator=(CheckpointReader&&) noexcept;
  CheckpointReader(const CheckpointReader&) = delete;
  CheckpointReader& operator=(const CheckpointReader&) = delete;

  const std::string& path() const { return path_; }
  const CheckpointMeta& meta() const { return meta_; }
  bool has(const std::string& group, const std::string& name) const;
  // Tensor names of a group in the order they were written; empty when the group does not exist.
  std::vector<std::string> names(const std::string& group) const;
  // The stored shape of a tensor; error when it does not exist.
  std::vector<std::int64_t> shape(const std::string& group, const std::string& name) const;
  // Reads into `out` (host, product(shape) floats), converting bf16/fp16 to float. Errors (naming the
  // file, group/tensor, expected vs found) on a missing tensor, shape mismatch, unreadable data
  // (truncated file) or checksum mismatch.
  void read(const std::string& group, const std::string& name, const std::vector<std::int64_t>& shape,
            float* out) const;

 private:
  struct File;
  std::string path_;
  std::unique_ptr<File> file_;
  CheckpointMeta meta_;
};

// Checkpoint file naming and retention in a directory.
std::string checkpoint_name(std::int64_t step);  // "step-000000300.h5"
// The complete checkpoint (step-N.h5, never *.tmp) with the largest step in `dir`, as a path in `dir`;
// nullopt when there is none or `dir` does not exist.
std::optional<std::string> latest_checkpoint(const std::string& dir);
// Deletes the oldest complete checkpoints beyond the newest `keep_last` (at least 1 is always kept);
// *.tmp files and files not named like checkpoints are left alone. Only checkpoints of steps up to
// `up_to_step` count: later ones (a trajectory abandoned by a restart from an earlier checkpoint) are
// neither kept in place of the run's own nor deleted; the run replaces them as it reaches their steps.
void prune_checkpoints(const std::string& dir, int keep_last,
                       std::int64_t up_to_step = std::numeric_limits<std::int64_t>::max());
// Every complete checkpoint in `dir` (paths, oldest first); empty when there is none or no `dir`.
std::vector<std::string> checkpoints_in(const std::string& dir);

// CRC-64/XZ (ECMA-182 polynomial, reflected, init and xorout all ones) of `size` bytes, continuing
// from `crc` (0 for a fresh sum). crc64("123456789") = 0x995dc9bbdf1939fa.
std::uint64_t crc64(const void* data, std::size_t size, std::uint64_t crc = 0);

}  // namespace jetmoe
