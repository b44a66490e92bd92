#pragma once
// Shared by the kernel benchmarks (bench_*.cu): the command line every bench takes (--out FILE.csv,
// --reps N, --warmup N, plus its own flags), the device check (exit 77 when there is no CUDA device),
// device memory, and the timing: the median of cudaEvent-timed launches on one stream.
// CUDA errors are checked with CHECK_CUDA of tests/harness.cuh (throws std::runtime_error).
#include "harness.cuh"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <type_traits>
#include <vector>

namespace jkb {

inline constexpr int kExitNoDevice = jkt::kExitNoDevice;  // 77: nothing to measure here
inline constexpr int kContinue = -1;                       // parse_args / open_device: go on

// ---- command line -------------------------------------------------------------------------------

// The options every bench takes; a bench initialises them with its defaults.
struct Args {
  const char* out = nullptr;  // --out FILE.csv (nullptr: no CSV)
  int reps = 50;              // --reps N: timed launches per measurement
  int warmup = 5;             // --warmup N: untimed launches before them
};

// How a bench treats its command line beyond --out / --reps / --warmup.
struct ArgRules {
  const char* extra_usage = "";    // the bench's own flags, appended to the usage line: " [--quick]"
  bool reject_bad_counts = false;  // --reps < 1 or --warmup < 0: a message and exit 2 (else clamped to 1 / 0)
  bool help = false;               // "--help" prints the usage and exits 0 (else exit 2, as for any unknown flag)
  bool short_help = false;         // "-h" too
};

// A bench's own flags: called with argv[i] and the argument after it (nullptr when argv[i] is the last
// one); returns how many arguments it used (1: a flag, 2: a flag and its value), 0 when argv[i] is not
// one of its flags (or its value is missing), -1 for a bad value.
using ExtraFlags = std::function<int(const std::string& arg, const char* value)>;

// Parses argv into args. Returns kContinue, or the exit status after printing the usage: 2 for a bad
// command line, 0 for a help flag that ArgRules allows.
inline int parse_args(int argc, char** argv, Args& args, const ArgRules& rules = {},
                      const ExtraFlags& extra = nullptr) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const char* value = i + 1 < argc ? argv[i + 1] : nullptr;
    int used = 0;
    if (a == "--out" && value != nullptr) {
      args.out = value;
      used = 2;
    } else if (a == "--reps" && value != nullptr) {
      args.reps = rules.reject_bad_counts ? std::atoi(value) : std::max(1, std::atoi(value));
      used = 2;
    } else if (a == "--warmup" && value != nullptr) {
      args.warmup = rules.reject_bad_counts ? std::atoi(value) : std::max(0, std::atoi(value));
      used = 2;
    } else if (extra) {
      used = extra(a, value);
    }
    if (used > 0) {
      i += used - 1;
      continue;
    }
    std::printf("usage: %s [--out FILE.csv] [--reps N] [--warmup N]%s\n", argv[0], rules.extra_usage);
    return used == 0 && ((rules.help && a == "--help") || (rules.short_help && a == "-h")) ? 0 : 2;
  }
  if (rules.reject_bad_counts && (args.reps < 1 || args.warmup < 0)) {
    std::printf("--reps must be >= 1 and --warmup >= 0\n");
    return 2;
  }
  return kContinue;
}

// ---- the device ---------------------------------------------------------------------------------

inline std::string describe(const jk_runtime_info_t& info) {
  char description[1024];
  jk_runtime_info_describe(&info, description, sizeof(description));
  return description;
}

// Fills info. Returns kContinue when the device can run this build's kernels; otherwise prints
// "<program>: <why>: nothing to measure (exit N)" (and the runtime description) and returns N:
// kExitNoDevice when there is no CUDA device (or no driver), query_error_exit when jk_runtime_info
// fails, no_image_exit when this build has no kernel image for the device.
inline int open_device(const char* program, jk_runtime_info_t& info, int query_error_exit = kExitNoDevice,
                       int no_image_exit = kExitNoDevice) {
  const cudaError_t status = jk_runtime_info(&info);
  if (status != cudaSuccess) {
    std::printf("%s: jk_runtime_info failed: %s (%s): nothing to measure (exit %d)\n", program,
                cudaGetErrorName(status), cudaGetErrorString(status), query_error_exit);
    return query_error_exit;
  }
  if (info.device_count == 0) {
    std::printf("%s: no CUDA device (%s): nothing to measure (exit %d)\n%s", program,
                cudaGetErrorName(info.device_status), kExitNoDevice, describe(info).c_str());
    return kExitNoDevice;
  }
  if (!info.kernel_image_ok) {
    std::printf("%s: no kernel image for this device (sm_%d%d) in this build (built for %s): nothing to measure "
                "(exit %d)\n%s",
                program, info.sm_major, info.sm_minor, jk_compiled_architectures(), no_image_exit,
                describe(info).c_str());
    return no_image_exit;
  }
  return kContinue;
}

// Device memory for the scope of a bench section: uninitialised (the bench fills it), at least 16 bytes.
struct DeviceMemory {
  void* ptr = nullptr;
  explicit DeviceMemory(std::size_t bytes) { CHECK_CUDA(cudaMalloc(&ptr, std::max<std::size_t>(bytes, 16))); }
  ~DeviceMemory() { cudaFree(ptr); }  // destructor: nothing useful to do with an error
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  template <typename T>
  T* as() const {
    return static_cast<T*>(ptr);
  }
};

// ---- timing -------------------------------------------------------------------------------------

// Runs `launch` warmup times, synchronises `stream`, then times reps launches, each between two events
// recorded on `stream`; returns the median in ms. `launch` enqueues its work on `stream` and returns
// void or a cudaError_t (checked after every launch, the warm-up ones included).
template <typename Launch>
double median_ms(Launch&& launch, cudaStream_t stream, int warmup, int reps) {
  using Result = std::invoke_result_t<Launch&>;
  static_assert(std::is_void_v<Result> || std::is_same_v<Result, cudaError_t>, "launch returns void or cudaError_t");
  const auto run = [&] {
    if constexpr (std::is_void_v<Result>) {
      launch();
    } else {
      CHECK_CUDA(launch());
    }
  };
  for (int i = 0; i < warmup; ++i) run();
  CHECK_CUDA(cudaStreamSynchronize(stream));
  cudaEvent_t a, b;
  CHECK_CUDA(cudaEventCreate(&a));
  CHECK_CUDA(cudaEventCreate(&b));
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    CHECK_CUDA(cudaEventRecord(a, stream));
    run();
    CHECK_CUDA(cudaEventRecord(b, stream));
    CHECK_CUDA(cudaEventSynchronize(b));
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, a, b));
    t.push_back(ms);
  }
  CHECK_CUDA(cudaEventDestroy(a));
  CHECK_CUDA(cudaEventDestroy(b));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

template <typename Launch>
double median_us(Launch&& launch, cudaStream_t stream, int warmup, int reps) {
  return 1e3 * median_ms(std::forward<Launch>(launch), stream, warmup, reps);
}

}  // namespace jkb
