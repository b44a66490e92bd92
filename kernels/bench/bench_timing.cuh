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

// The median time of `launch` (one enqueue on `stream`) captured once into a CUDA graph and replayed:
// what a step costs without its launch latencies. Throws (CHECK_CUDA) when the capture is refused.
template <typename Launch>
double median_ms_graph(Launch&& launch, cudaStream_t stream, int warmup, int reps) {
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  CHECK_CUDA(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
  const cudaError_t captured = launch();
  const cudaError_t ended = cudaStreamEndCapture(stream, &graph);
  CHECK_CUDA(captured);
  CHECK_CUDA(ended);
  CHECK_CUDA(cudaGraphInstantiate(&exec, graph, 0));
  const double ms = median_ms([&] { CHECK_CUDA(cudaGraphLaunch(exec, stream)); }, stream, warmup, reps);
  CHECK_CUDA(cudaGraphExecDestroy(exec));
  CHECK_CUDA(cudaGraphDestroy(graph));
  return ms;
}

// ---- the throughput table of the layer and model benches (and of their peers) ----------------------

inline constexpr double kHbmPeak = 3.35e12;  // bytes/s, H100 SXM HBM3
inline constexpr double kBf16Peak = 989e12;  // FLOP/s, H100 SXM dense bf16

struct ThroughputRow {
  std::string op;
  long long B, T;
  double ms, tokens_per_s, tflops, mfu_pct, gbs, hbm_pct;
};

// A row from a time, the tokens it processed, its model FLOPs and the bytes of its bandwidth bound.
inline ThroughputRow throughput_row(const std::string& op, long long B, long long T, double ms, double tokens,
                                    double flops, double bytes) {
  const double tf = flops / (ms * 1e-3) / 1e12, gbs = bytes / (ms * 1e-3) / 1e9;
  return {op, B, T, ms, tokens / (ms * 1e-3), tf, 100.0 * tf * 1e12 / kBf16Peak, gbs, 100.0 * gbs * 1e9 / kHbmPeak};
}

// The table on stdout, then the peaks and `targets`; the raw rows to `csv` when it is not null. False
// when the CSV cannot be written (said on stdout).
inline bool report_throughput(const std::vector<ThroughputRow>& rows, const char* targets, const char* csv) {
  std::printf("\n%-16s %5s %6s %11s %13s %9s %7s %9s %7s\n", "op", "B", "T", "time_ms", "tokens_per_s", "TFLOP/s",
              "MFU%", "GB/s", "HBM%");
  for (const ThroughputRow& r : rows)
    std::printf("%-16s %5lld %6lld %11.3f %13.1f %9.1f %7.1f %9.1f %7.1f\n", r.op.c_str(), r.B, r.T, r.ms,
                r.tokens_per_s, r.tflops, r.mfu_pct, r.gbs, r.hbm_pct);
  std::printf("peaks: bf16 dense %.0f TFLOP/s, HBM3 %.2f TB/s (H100 SXM). %s\n", kBf16Peak / 1e12, kHbmPeak / 1e12,
              targets);
  if (!csv) return true;
  FILE* f = std::fopen(csv, "w");
  if (!f) {
    std::printf("cannot write %s\n", csv);
    return false;
  }
  std::fprintf(f, "op,B,T,time_ms,tokens_per_s,tflops,mfu_pct,gbs,hbm_pct\n");
  for (const ThroughputRow& r : rows)
    std::fprintf(f, "%s,%lld,%lld,%.6f,%.3f,%.3f,%.3f,%.3f,%.3f\n", r.op.c_str(), r.B, r.T, r.ms, r.tokens_per_s,
                 r.tflops, r.mfu_pct, r.gbs, r.hbm_pct);
  std::fclose(f);
  return true;
}

// Bytes one decode step of a block reads at least (its bandwidth bound): the weights of the experts
// both routers choose (min(E, B k) each), the shared K/V projection, both routers, the norms and
// biases, and the K/V cache of B sequences of `context` tokens.
inline double decode_block_bytes(const jk_layer_config_t& c, std::int64_t B, std::int64_t context) {
  const double E = double(c.num_experts), k = double(c.top_k), F = double(c.ffn), D = double(c.hidden);
  const double A = double(c.kv_heads * c.head_dim), experts = std::min(E, double(B) * k);
  const double weights = 2.0 * (experts * (2.0 * A * D)    // W_q + W_o of the active MoA experts
                                + 2.0 * A * D              // shared K/V projection
                                + 2.0 * E * D              // both routers
                                + experts * (3.0 * F * D)  // fc1 (2F x D) + fc2 (D x F), MoE
                                + 4.0 * D);                // norms and biases
  return weights + double(B) * double(context) * 2.0 * A * 2.0;
}

}  // namespace jkb
