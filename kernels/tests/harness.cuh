#pragma once
// Shared harness of the kernel test programs (one program per kernel family): CUDA error checks,
// the independent bf16 reference (field decoding, rounding by scaling in double), device buffers
// with NaN-poisoned guard zones, random non-zero inputs, the case list and the common main().
//
// A test program defines its cases and calls the driver:
//   std::vector<jkt::Case> make_cases(jkt::Context& ctx);
//   int main(int argc, char** argv) { return jkt::run_main(argc, argv, "jetmoe-router-test", make_cases); }
// Exit status: 0 all passed, 1 any failure, 2 bad command line, 77 no CUDA device (never a pass).
#include "jetmoe/kernels.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cinttypes>
#include <cstdarg>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <iterator>
#include <optional>
#include <random>
#include <regex>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

namespace jkt {


inline constexpr int kExitNoDevice = 77;
inline constexpr std::uint64_t kDefaultSeed = 20240407;  // fixed: every run sees the same inputs

// ---- CUDA error handling ------------------------------------------------------------------------

inline void check_cuda(cudaError_t status, const char* what, const char* file, int line) {
  if (status == cudaSuccess) return;
  throw std::runtime_error(std::string(file) + ":" + std::to_string(line) + ": " + what + " failed: " +
                           cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")");
}
#define CHECK_CUDA(expr) ::jkt::check_cuda((expr), #expr, __FILE__, __LINE__)

inline std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
inline std::string format(const char* fmt, ...) {
  char buf[1024];
  va_list args;
  va_start(args, fmt);
  std::vsnprintf(buf, sizeof(buf), fmt, args);
  va_end(args);
  return buf;
}

// ---- bits and the independent bf16 reference ----------------------------------------------------

inline std::uint32_t bits_of(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  return u;
}

inline float float_of(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

inline bool bf16_is_nan(std::uint16_t b) { return (b & 0x7f80u) == 0x7f80u && (b & 0x007fu) != 0; }

// Value of a bf16 bit pattern from its fields (not by shifting into an fp32).
inline double bf16_value(std::uint16_t b) {
  const int exponent = (b >> 7) & 0xff;
  const int mantissa = b & 0x7f;
  const double sign = (b & 0x8000u) ? -1.0 : 1.0;
  if (exponent == 0xff) return mantissa ? std::nan("") : sign * INFINITY;
  if (exponent == 0) return sign * std::ldexp(mantissa, -133);  // subnormal: m * 2^-126 / 2^7
  return sign * std::ldexp(128 + mantissa, exponent - 127 - 7);
}

// Round a (non-NaN) double to the nearest bf16, ties to even, by scaling to an integer count of ulps
// (independent of the kernels' bit trick). Overflow gives Inf.
inline std::uint16_t round_to_bf16(double v) {
  const std::uint16_t sign = std::signbit(v) ? 0x8000u : 0u;
  const double a = std::fabs(v);
  if (std::isinf(a)) return sign | 0x7f80u;
  if (a == 0.0) return sign;
  int e = 0;
  std::frexp(a, &e);                                // a in [2^(e-1), 2^e)
  const int quantum_exp = std::max(e - 1, -126) - 7;  // bf16 ulp in this binade (2^-133 when subnormal)
  const double units = std::ldexp(a, -quantum_exp);   // exact
  double rounded = std::floor(units);
  const double frac = units - rounded;
  if (frac > 0.5 || (frac == 0.5 && std::fmod(rounded, 2.0) == 1.0)) rounded += 1.0;
  const double r = std::ldexp(rounded, quantum_exp);
  if (r >= 0x1p128) return sign | 0x7f80u;
  return sign | static_cast<std::uint16_t>(bits_of(static_cast<float>(r)) >> 16);  // r is exact in fp32
}

// The library's documented fp32 -> bf16 rule, NaN included.
inline std::uint16_t expected_f32_to_bf16(float f) {
  if (std::isnan(f)) return static_cast<std::uint16_t>((bits_of(f) >> 16) | 0x0040u);
  return round_to_bf16(static_cast<double>(f));
}

// Distance in units in the last place between two non-NaN bf16 values (+0 and -0 are equal).
inline int bf16_ulp_distance(std::uint16_t a, std::uint16_t b) {
  const auto ordered = [](std::uint16_t x) { return (x & 0x8000u) ? -static_cast<int>(x & 0x7fffu) : static_cast<int>(x); };
  return std::abs(ordered(a) - ordered(b));
}

// ---- device buffers with guard zones --------------------------------------------------------------

// n elements preceded by kGuard + offset and followed by kGuard elements. A non-zero offset makes the
// data pointer unaligned (to exercise the scalar paths). Everything starts poisoned: 0xFF bytes, which
// is a NaN for fp32 and for bf16.
template <typename T>
class GuardedBuffer {
 public:
  static constexpr std::size_t kGuard = 64;

  explicit GuardedBuffer(std::size_t n, std::size_t offset = 0) : n_(n), offset_(offset) {
    total_ = kGuard + offset_ + n_ + kGuard;
    CHECK_CUDA(cudaMalloc(&base_, total_ * sizeof(T)));
    poison();
  }
  ~GuardedBuffer() { cudaFree(base_); }  // destructor: nothing useful to do with an error
  GuardedBuffer(const GuardedBuffer&) = delete;
  GuardedBuffer& operator=(const GuardedBuffer&) = delete;

  T* data() { return base_ + kGuard + offset_; }
  std::size_t size() const { return n_; }

  // poison() and upload() complete before returning: they run on the legacy default stream, which
  // the tests' non-blocking streams do not wait for (cudaMemset is asynchronous, and cudaMemcpy from
  // pageable memory may return before the DMA lands), so a kernel launched next could see stale bytes.
  void poison() {
    CHECK_CUDA(cudaMemset(base_, 0xff, total_ * sizeof(T)));
    CHECK_CUDA(cudaDeviceSynchronize());
  }

  void upload(const std::vector<T>& host) {
    if (host.size() != n_) throw std::runtime_error("upload: size mismatch");
    CHECK_CUDA(cudaMemcpy(data(), host.data(), n_ * sizeof(T), cudaMemcpyHostToDevice));
    CHECK_CUDA(cudaDeviceSynchronize());
  }

  std::vector<T> download() const {
    std::vector<T> host(n_);
    CHECK_CUDA(cudaMemcpy(host.data(), base_ + kGuard + offset_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return host;
  }

  // True when nothing outside [data, data + n) was written.
  bool guards_intact() const {
    std::vector<unsigned char> all(total_ * sizeof(T));
    CHECK_CUDA(cudaMemcpy(all.data(), base_, all.size(), cudaMemcpyDeviceToHost));
    const std::size_t data_begin = (kGuard + offset_) * sizeof(T);
    const std::size_t data_end = data_begin + n_ * sizeof(T);
    for (std::size_t i = 0; i < all.size(); ++i) {
      if ((i < data_begin || i >= data_end) && all[i] != 0xff) return false;
    }
    return true;
  }

 private:
  T* base_ = nullptr;
  std::size_t n_ = 0;
  std::size_t offset_ = 0;
  std::size_t total_ = 0;
};

// ---- random inputs --------------------------------------------------------------------------------

class Inputs {
 public:
  explicit Inputs(std::uint64_t seed) : gen_(seed) {}

  // Uniform magnitude in [lo, hi] (lo > 0), random sign: never zero.
  float nonzero(float lo, float hi) {
    std::uniform_real_distribution<float> magnitude(lo, hi);
    return (gen_() & 1u) ? magnitude(gen_) : -magnitude(gen_);
  }
  std::uint32_t bits32() { return static_cast<std::uint32_t>(gen_()); }

  // Activations: per-row scales from 1e-4 (where eps dominates) to 1e3, so rows differ in magnitude.
  std::vector<float> activations(std::int64_t rows, std::int64_t hidden) {
    static const float kRowScale[] = {1.0f, 1e-4f, 3.7f, 1e3f, 0.05f, 0.6f};
    std::vector<float> x(static_cast<std::size_t>(rows * hidden));
    for (std::int64_t r = 0; r < rows; ++r) {
      const float scale = kRowScale[r % 6];
      for (std::int64_t c = 0; c < hidden; ++c) x[r * hidden + c] = scale * nonzero(1.0f / 64, 2.0f);
    }
    return x;
  }
  std::vector<float> weights(std::int64_t hidden) {
    std::vector<float> w(static_cast<std::size_t>(hidden));
    for (auto& v : w) v = nonzero(0.25f, 2.0f);
    return w;
  }

 private:
  std::mt19937_64 gen_;
};

inline std::vector<std::uint16_t> to_bf16(const std::vector<float>& v) {
  std::vector<std::uint16_t> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) out[i] = expected_f32_to_bf16(v[i]);
  return out;
}

// ---- cases ------------------------------------------------------------------------------------------

struct CaseResult {
  bool pass;
  std::string detail;
};

struct Case {
  std::string name;
  std::function<CaseResult()> run;
};

struct Context {
  cudaStream_t stream = nullptr;
  std::uint64_t seed = kDefaultSeed;
  int case_index = 0;
  std::uint64_t next_seed() { return seed * 1000003u + static_cast<std::uint64_t>(case_index++); }
};

inline void finish(cudaError_t launch_status, cudaStream_t stream, const char* what) {
  check_cuda(launch_status, what, __FILE__, __LINE__);
  check_cuda(cudaStreamSynchronize(stream), "cudaStreamSynchronize after kernel", __FILE__, __LINE__);
}

inline void usage(const char* argv0) {
  std::printf("usage: %s [--seed N] [--only REGEX]\n"
              "Runs every kernel against a CPU double-precision reference.\n"
              "--only: only the cases whose name matches REGEX (ECMAScript, searched anywhere in the name);\n"
              "        their inputs then differ from a full run's (seeds are drawn in run order).\n"
              "Exit: 0 all passed, 1 a case failed, 2 bad arguments, %d no CUDA device.\n",
              argv0, kExitNoDevice);
}

inline int run_main(int argc, char** argv, const char* program,
                    const std::function<std::vector<Case>(Context&)>& make_cases) {
  Context ctx;
  std::optional<std::regex> only;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
      ctx.seed = std::strtoull(argv[++i], nullptr, 10);
    } else if (std::strcmp(argv[i], "--only") == 0 && i + 1 < argc) {
      try {
        only.emplace(argv[++i]);
      } catch (const std::regex_error& e) {
        std::printf("--only '%s': not a regular expression (%s)\n", argv[i], e.what());
        return 2;
      }
    } else if (std::strcmp(argv[i], "--help") == 0 || std::strcmp(argv[i], "-h") == 0) {
      usage(argv[0]);
      return 0;
    } else {
      usage(argv[0]);
      return 2;
    }
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);

  jk_runtime_info_t info;
  const cudaError_t info_status = jk_runtime_info(&info);
  if (info_status != cudaSuccess) {
    std::printf("FAIL jk_runtime_info: %s (%s)\n0 passed, 1 failed\n", cudaGetErrorName(info_status),
                cudaGetErrorString(info_status));
    return 1;
  }
  char description[1024];
  jk_runtime_info_describe(&info, description, sizeof(description));
  std::printf("%s (seed %" PRIu64 ")\n%s", program, ctx.seed, description);
  if (info.device_count == 0) {
    std::printf("no CUDA device: the kernels self-test cannot run here (exit %d, not a pass)\n", kExitNoDevice);
    return kExitNoDevice;
  }
  if (!info.kernel_image_ok) {
    std::printf("FAIL device.kernel_image: no kernel image for sm_%d%d in this build (built for %s); "
                "reconfigure with -DCMAKE_CUDA_ARCHITECTURES=%d%d%s\n0 passed, 1 failed\n",
                info.sm_major, info.sm_minor, jk_compiled_architectures(), info.sm_major, info.sm_minor,
                info.sm_major >= 9 ? "a" : "");
    return 1;
  }

  int passed = 0;
  int failed = 0;
  try {
    CHECK_CUDA(cudaStreamCreateWithFlags(&ctx.stream, cudaStreamNonBlocking));
  } catch (const std::exception& e) {
    std::printf("FAIL setup: %s\n0 passed, 1 failed\n", e.what());
    return 1;
  }
  std::vector<Case> cases = make_cases(ctx);
  if (only) {
    cases.erase(std::remove_if(cases.begin(), cases.end(),
                               [&](const Case& c) { return !std::regex_search(c.name, *only); }),
                cases.end());
    if (cases.empty()) {
      std::printf("no case matches --only\n0 passed, 0 failed\n");
      return 2;
    }
  }
  for (const Case& c : cases) {
    CaseResult result{false, ""};
    try {
      result = c.run();
    } catch (const std::exception& e) {
      result = {false, std::string("error: ") + e.what()};
    }
    std::printf("%s %s: %s\n", result.pass ? "PASS" : "FAIL", c.name.c_str(), result.detail.c_str());
    (result.pass ? passed : failed) += 1;
  }
  cudaStreamDestroy(ctx.stream);
  std::printf("%d passed, %d failed\n", passed, failed);
  return failed == 0 ? 0 : 1;
}

}  // namespace jkt
