// Benchmark of the grouped expert GEMMs at JetMoE-8B shapes (D = 2048, F = 5632, E = 8, top-2):
//   fc1+SwiGLU  Z = X W_in[e]^T [rows, 2F] -> H [rows, F] (Z saved)   2 rows 2F D flop
//   fc2         Y = H W_out[e]^T [rows, D]                             2 rows D F
//   fc2.dgrad   dH = dY W_out[e]                                       2 rows D F
//   fc2.wgrad   dW_out[e] = dY^T H (fp32, beta 0)                      2 rows D F
//   fc1.dgrad   dX = dZ W_in[e]                                        2 rows 2F D
//   fc1.wgrad   dW_in[e] = dZ^T X (fp32, beta 0)                       2 rows 2F D
//   moa.q       Q = X W_q[e]^T [rows, 2048]                            2 rows 2048 D
//   swiglu.bwd  dZ from Z, dH (memory bound: GB/s)
// for 4096 and 16384 tokens (rows = 2 tokens), balanced and skewed routing, and every algorithm
// (simple, mma, cublaslt). Median of cudaEvent-timed launches after a warm-up; TFLOP/s and % of the
// H100 SXM dense bf16 peak (989 TFLOP/s), GB/s and % of HBM3 (3.35 TB/s) for the memory-bound op.
// Prints a table and writes CSV (--out). Never a CTest test.
// Exit: 0 done, 1 CUDA error, 2 bad arguments, 77 no CUDA device.
#include "jetmoe/kernels.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

constexpr int kExitNoDevice = 77;
constexpr double kPeakTflops = 989.0;   // H100 SXM dense bf16
constexpr double kPeakGBs = 3350.0;     // H100 SXM HBM3
constexpr std::int64_t kD = 2048, kF = 5632, kE = 8, kQ = 2048;

void check_cuda(cudaError_t status, const char* what, int line) {
  if (status == cudaSuccess) return;
  throw std::runtime_error(std::string("bench_grouped_gemm.cu:") + std::to_string(line) + ": " + what + ": " +
                           cudaGetErrorName(status) + " (" + cudaGetErrorString(status) + ")");
}
#define CHECK_CUDA(expr) check_cuda((expr), #expr, __LINE__)

struct DeviceMemory {
  void* ptr = nullptr;
  explicit DeviceMemory(std::size_t bytes) { CHECK_CUDA(cudaMalloc(&ptr, bytes)); }
  ~DeviceMemory() { cudaFree(ptr); }
  DeviceMemory(const DeviceMemory&) = delete;
  DeviceMemory& operator=(const DeviceMemory&) = delete;
  template <typename T>
  T* as() const { return static_cast<T*>(ptr); }
};

struct Options {
  int warmup = 3;
  int reps = 15;
  std::string out = "jetmoe-grouped-gemm-bench.csv";
  std::vector<std::int64_t> tokens = {4096, 16384};
  std::vector<jk_grouped_gemm_algo_t> algos = {JK_GROUPED_GEMM_SIMPLE, JK_GROUPED_GEMM_MMA, JK_GROUPED_GEMM_CUBLASLT};
};

double median_ms(const Options& opt, cudaStream_t stream, const std::function<cudaError_t()>& launch) {
  cudaEvent_t start, stop;
  CHECK_CUDA(cudaEventCreate(&start));
  CHECK_CUDA(cudaEventCreate(&stop));
  for (int i = 0; i < opt.warmup; ++i) CHECK_CUDA(launch());
  CHECK_CUDA(cudaStreamSynchronize(stream));
  std::vector<double> times;
  for (int i = 0; i < opt.reps; ++i) {
    CHECK_CUDA(cudaEventRecord(start, stream));
    CHECK_CUDA(launch());
    CHECK_CUDA(cudaEventRecord(stop, stream));
    CHECK_CUDA(cudaEventSynchronize(stop));
    float ms = 0.0f;
    CHECK_CUDA(cudaEventElapsedTime(&ms, start, stop));
    times.push_back(ms);
  }
  CHECK_CUDA(cudaEventDestroy(start));
  CHECK_CUDA(cudaEventDestroy(stop));
  std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
  return times[times.size() / 2];
}

// Random non-zero bf16 bits (magnitude 2^-6 .. 2), splitmix64.
void fill_bf16(std::uint16_t* device, std::size_t n, std::uint64_t seed) {
  std::vector<std::uint16_t> host(n);
  std::uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
  for (auto& v : host) {
    std::uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    const int exponent = 121 + static_cast<int>((z >> 8) % 7);
    v = static_cast<std::uint16_t>(((z & 1u) << 15) | (exponent << 7) | ((z >> 1) & 0x7fu));
  }
  CHECK_CUDA(cudaMemcpy(device, host.data(), n * sizeof(std::uint16_t), cudaMemcpyHostToDevice));
  // A pageable cudaMemcpy may return before the DMA lands, and the timed launches run on a
  // non-blocking stream that does not wait for the legacy stream.
  CHECK_CUDA(cudaDeviceSynchronize());
}

// Expert sizes for `rows` routed rows: balanced, or skewed (35/20/15/12/8/6/4 %, one expert empty).
std::vector<std::int32_t> offsets_for(std::int64_t rows, bool skewed) {
  std::vector<std::int64_t> sizes(kE, rows / kE);
  if (skewed) {
    const double frac[kE] = {0.35, 0.20, 0.15, 0.12, 0.08, 0.06, 0.04, 0.0};
    std::int64_t used = 0;
    for (int e = 0; e < kE; ++e) used += (sizes[e] = static_cast<std::int64_t>(frac[e] * static_cast<double>(rows)));
    sizes[0] += rows - used;
  } else {
    sizes[0] += rows - (rows / kE) * kE;
  }
  std::vector<std::int32_t> off(1, 0);
  for (auto s : sizes) off.push_back(off.back() + static_cast<std::int32_t>(s));
  return off;
}

struct Row {
  std::string op, routing, impl;
  std::int64_t tokens;
  double ms, tflops, gbs;
};

void usage(const char* argv0) {
  std::printf("usage: %s [--out FILE.csv] [--reps N] [--warmup N] [--tokens T1,T2,...] [--algos simple,mma,cublaslt]\n",
              argv0);
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (start <= s.size()) {
    const std::size_t comma = s.find(',', start);
    parts.push_back(s.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return parts;
}

int run(const Options& opt) {
  jk_runtime_info_t info;
  CHECK_CUDA(jk_runtime_info(&info));
  char description[1024];
  jk_runtime_info_describe(&info, description, sizeof(description));
  std::printf("jetmoe-grouped-gemm-bench\n%s", description);
  if (info.device_count == 0) {
    std::printf("no CUDA device: nothing to benchmark (exit %d)\n", kExitNoDevice);
    return kExitNoDevice;
  }
  if (!info.kernel_image_ok) {
    std::printf("no kernel image for this device in this build (built for %s)\n", jk_compiled_architectures());
    return 1;
  }
  std::printf("JetMoE-8B shapes: D=%lld F=%lld E=%lld top-2; median of %d reps after %d warm-up; "
              "peaks: %.0f TFLOP/s bf16 dense, %.0f GB/s (H100 SXM)\n",
              static_cast<long long>(kD), static_cast<long long>(kF), static_cast<long long>(kE), opt.reps,
              opt.warmup, kPeakTflops, kPeakGBs);
  const std::int64_t max_rows = 2 * *std::max_element(opt.tokens.begin(), opt.tokens.end());
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  using U16 = std::uint16_t;
  DeviceMemory x(max_rows * kD * 2), w_in(kE * 2 * kF * kD * 2), w_out(kE * kD * kF * 2), w_q(kE * kQ * kD * 2);
  DeviceMemory z(max_rows * 2 * kF * 2), h(max_rows * kF * 2), y(max_rows * kD * 2), dz(max_rows * 2 * kF * 2);
  DeviceMemory dh(max_rows * kF * 2), dy(max_rows * kD * 2), dx(max_rows * kD * 2), q(max_rows * kQ * 2);
  DeviceMemory dw_in(kE * 2 * kF * kD * 4), dw_out(kE * kD * kF * 4), d_off((kE + 1) * 4);
  fill_bf16(x.as<U16>(), max_rows * kD, 1);
  fill_bf16(w_in.as<U16>(), kE * 2 * kF * kD, 2);
  fill_bf16(w_out.as<U16>(), kE * kD * kF, 3);
  fill_bf16(w_q.as<U16>(), kE * kQ * kD, 4);
  fill_bf16(z.as<U16>(), max_rows * 2 * kF, 5);
  fill_bf16(h.as<U16>(), max_rows * kF, 6);
  fill_bf16(dz.as<U16>(), max_rows * 2 * kF, 7);
  fill_bf16(dh.as<U16>(), max_rows * kF, 8);
  fill_bf16(dy.as<U16>(), max_rows * kD, 9);

  std::vector<Row> rows_out;
  std::printf("\n%-11s %7s %-8s %-9s %9s %8s %7s %8s %7s\n", "op", "tokens", "routing", "impl", "time_ms", "TFLOP/s",
              "%989", "GB/s", "%3350");
  const auto report = [&](const Row& r) {
    rows_out.push_back(r);
    std::printf("%-11s %7lld %-8s %-9s %9.3f %8.1f %6.1f%% %8.1f %6.1f%%\n", r.op.c_str(),
                static_cast<long long>(r.tokens), r.routing.c_str(), r.impl.c_str(), r.ms, r.tflops,
                100.0 * r.tflops / kPeakTflops, r.gbs, 100.0 * r.gbs / kPeakGBs);
  };
  for (std::int64_t tokens : opt.tokens) {
    const std::int64_t rows = 2 * tokens;
    for (bool skewed : {false, true}) {
      const std::vector<std::int32_t> off = offsets_for(rows, skewed);
      CHECK_CUDA(cudaMemcpy(d_off.ptr, off.data(), off.size() * 4, cudaMemcpyHostToDevice));
      CHECK_CUDA(cudaDeviceSynchronize());  // see fill_bf16
      const std::int32_t* od = d_off.as<std::int32_t>();
      const std::int32_t* oh = off.data();
      const char* routing = skewed ? "skewed" : "balanced";
      const double r = static_cast<double>(rows);
      struct Op {
        const char* name;
        double flop;
        std::function<cudaError_t(jk_grouped_gemm_algo_t)> launch;
      };
      const std::vector<Op> ops = {
          {"fc1+swiglu", 2 * r * 2 * kF * kD,
           [&](jk_grouped_gemm_algo_t a) {
             return jk_grouped_gemm_fc1_swiglu_bf16(x.as<U16>(), w_in.as<U16>(), h.as<U16>(), z.as<U16>(), od, oh, rows,
                                                    kE, kF, kD, a, stream);
           }},
          {"fc2", 2 * r * kD * kF,
           [&](jk_grouped_gemm_algo_t a) {
             return jk_grouped_gemm_fwd_bf16(h.as<U16>(), w_out.as<U16>(), y.as<U16>(), od, oh, rows, kE, kD, kF, a,
                                             stream);
           }},
          {"fc2.dgrad", 2 * r * kD * kF,
           [&](jk_grouped_gemm_algo_t a) {
             return jk_grouped_gemm_bwd_data_bf16(dy.as<U16>(), w_out.as<U16>(), dh.as<U16>(), od, oh, rows, kE, kD, kF,
                                                  a, stream);
           }},
          {"fc2.wgrad", 2 * r * kD * kF,
           [&](jk_grouped_gemm_algo_t a) {
             return jk_grouped_gemm_bwd_weight_f32(dy.as<U16>(), h.as<U16>(), dw_out.as<float>(), 0.0f, od, oh, rows,
                                                   kE, kD, kF, a, stream);
           }},
          {"fc1.dgrad", 2 * r * 2 * kF * kD,
           [&](jk_grouped_gemm_algo_t a) {
             return jk_grouped_gemm_bwd_data_bf16(dz.as<U16>(), w_in.as<U16>(), dx.as<U16>(), od, oh, rows, kE, 2 * kF,
                                                  kD, a, stream);
           }},
          {"fc1.wgrad", 2 * r * 2 * kF * kD,
           [&](jk_grouped_gemm_algo_t a) {
             return jk_grouped_gemm_bwd_weight_f32(dz.as<U16>(), x.as<U16>(), dw_in.as<float>(), 0.0f, od, oh, rows,
                                                   kE, 2 * kF, kD, a, stream);
           }},
          {"moa.q", 2 * r * kQ * kD,
           [&](jk_grouped_gemm_algo_t a) {
             return jk_grouped_gemm_fwd_bf16(x.as<U16>(), w_q.as<U16>(), q.as<U16>(), od, oh, rows, kE, kQ, kD, a,
                                             stream);
           }},
      };
      for (const Op& op : ops) {
        for (auto algo : opt.algos) {
          const double ms = median_ms(opt, stream, [&] { return op.launch(algo); });
          report({op.name, routing, jk_grouped_gemm_algo_name(algo), tokens, ms, op.flop / (ms * 1e-3) / 1e12, 0.0});
        }
      }
      // Memory-bound: SwiGLU backward reads Z (2F) and dH (F), writes dZ (2F), all bf16.
      const double bytes = r * kF * 2.0 * 5;
      const double ms = median_ms(opt, stream, [&] {
        return jk_swiglu_bwd_bf16(z.as<U16>(), dh.as<U16>(), dz.as<U16>(), rows, kF, stream);
      });
      report({"swiglu.bwd", routing, "own", tokens, ms, 0.0, bytes / (ms * 1e-3) / 1e9});
    }
  }
  CHECK_CUDA(cudaStreamDestroy(stream));

  FILE* csv = std::fopen(opt.out.c_str(), "w");
  if (csv == nullptr) {
    std::printf("cannot write %s\n", opt.out.c_str());
    return 1;
  }
  std::fprintf(csv, "op,tokens,routing,impl,time_ms,tflops,pct_989,gbs,pct_3350,device\n");
  for (const Row& r : rows_out) {
    std::fprintf(csv, "%s,%lld,%s,%s,%.6f,%.3f,%.3f,%.3f,%.3f,%s\n", r.op.c_str(), static_cast<long long>(r.tokens),
                 r.routing.c_str(), r.impl.c_str(), r.ms, r.tflops, 100.0 * r.tflops / kPeakTflops, r.gbs,
                 100.0 * r.gbs / kPeakGBs, info.device_name);
  }
  std::fclose(csv);
  std::printf("\nwrote %s\n", opt.out.c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has_value = i + 1 < argc;
    if (a == "--out" && has_value) {
      opt.out = argv[++i];
    } else if (a == "--reps" && has_value) {
      opt.reps = std::max(1, std::atoi(argv[++i]));
    } else if (a == "--warmup" && has_value) {
      opt.warmup = std::max(0, std::atoi(argv[++i]));
    } else if (a == "--tokens" && has_value) {
      opt.tokens.clear();
      for (const auto& t : split(argv[++i])) {
        const long long v = std::atoll(t.c_str());
        if (v <= 0) {
          usage(argv[0]);
          return 2;
        }
        opt.tokens.push_back(v);
      }
    } else if (a == "--algos" && has_value) {
      opt.algos.clear();
      for (const auto& t : split(argv[++i])) {
        if (t == "simple") opt.algos.push_back(JK_GROUPED_GEMM_SIMPLE);
        else if (t == "mma") opt.algos.push_back(JK_GROUPED_GEMM_MMA);
        else if (t == "cublaslt") opt.algos.push_back(JK_GROUPED_GEMM_CUBLASLT);
        else {
          usage(argv[0]);
          return 2;
        }
      }
    } else {
      usage(argv[0]);
      return a == "--help" || a == "-h" ? 0 : 2;
    }
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  try {
    return run(opt);
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }
}
