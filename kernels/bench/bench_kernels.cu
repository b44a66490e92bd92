// Benchmark of the memory-bound kernels: median time over many launches (device events, warm-up
// first, fresh random non-zero inputs), effective bandwidth, and the ratio to a device-to-device
// cudaMemcpyAsync moving the same bytes, measured side by side in the same run.
// Prints a table and writes the raw numbers as CSV (--out). Never a CTest test.
// Exit: 0 done, 1 CUDA error, 2 bad arguments, 77 no CUDA device.
#include "jetmoe/kernels.h"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

constexpr int kExitNoDevice = 77;
constexpr double kH100HbmPeakGBs = 3350.0;  // H100 SXM HBM3; the H200 has 4800

void check_cuda(cudaError_t status, const char* what, int line) {
  if (status == cudaSuccess) return;
  throw std::runtime_error(std::string("bench_kernels.cu:") + std::to_string(line) + ": " + what + ": " +
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
  int warmup = 10;
  int reps = 100;
  std::string out = "jetmoe-kernels-bench.csv";
};

// Median device time in microseconds of `launch`, each repetition timed on its own.
double median_us(const Options& opt, cudaStream_t stream, const std::function<cudaError_t()>& launch) {
  cudaEvent_t start;
  cudaEvent_t stop;
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
    times.push_back(1e3 * ms);
  }
  CHECK_CUDA(cudaEventDestroy(start));
  CHECK_CUDA(cudaEventDestroy(stop));
  std::nth_element(times.begin(), times.begin() + times.size() / 2, times.end());
  return times[times.size() / 2];
}

// Non-zero random fp32 in [-2, -1/64] u [1/64, 2], converted on the device for bf16 buffers.
void fill_random(float* device, std::size_t n, std::uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<float> magnitude(1.0f / 64, 2.0f);
  std::vector<float> host(n);
  for (auto& v : host) v = (gen() & 1u) ? magnitude(gen) : -magnitude(gen);
  CHECK_CUDA(cudaMemcpy(device, host.data(), n * sizeof(float), cudaMemcpyHostToDevice));
}

struct Row {
  std::string kernel;
  std::string shape;
  double bytes;  // DRAM traffic the kernel needs at minimum (reads + writes)
  double us;
  double copy_us;  // cudaMemcpyAsync D2D moving the same total traffic
};

void print_and_save(const std::vector<Row>& rows, const Options& opt, const jk_runtime_info_t& info) {
  std::printf("\n%-18s %-22s %12s %10s %10s %9s %9s\n", "kernel", "shape", "MB moved", "median us", "GB/s",
              "% memcpy", "% HBM pk");
  for (const Row& r : rows) {
    const double gbs = r.bytes / (r.us * 1e3);
    const double copy_gbs = r.bytes / (r.copy_us * 1e3);
    std::printf("%-18s %-22s %12.2f %10.2f %10.1f %8.1f%% %8.1f%%\n", r.kernel.c_str(), r.shape.c_str(),
                r.bytes / 1e6, r.us, gbs, 100.0 * gbs / copy_gbs, 100.0 * gbs / kH100HbmPeakGBs);
  }
  std::FILE* f = std::fopen(opt.out.c_str(), "w");
  if (f == nullptr) {
    std::fprintf(stderr, "cannot write %s\n", opt.out.c_str());
    return;
  }
  std::fprintf(f, "# device=%s sm_%d%d runtime=%d driver=%d warmup=%d reps=%d\n", info.device_name, info.sm_major,
               info.sm_minor, info.runtime_version, info.driver_version, opt.warmup, opt.reps);
  std::fprintf(f, "kernel,shape,bytes,median_us,gb_per_s,memcpy_median_us,memcpy_gb_per_s\n");
  for (const Row& r : rows) {
    std::fprintf(f, "%s,%s,%.0f,%.3f,%.2f,%.3f,%.2f\n", r.kernel.c_str(), r.shape.c_str(), r.bytes, r.us,
                 r.bytes / (r.us * 1e3), r.copy_us, r.bytes / (r.copy_us * 1e3));
  }
  std::fclose(f);
  std::printf("\nraw numbers written to %s\n", opt.out.c_str());
}

int run(const Options& opt, const jk_runtime_info_t& info) {
  cudaStream_t stream;
  CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  std::vector<Row> rows;

  // Same-traffic device-to-device copy: `bytes` of traffic is bytes/2 read plus bytes/2 written.
  DeviceMemory copy_src(std::size_t{1} << 30);
  DeviceMemory copy_dst(std::size_t{1} << 30);
  const auto copy_us = [&](double bytes) {
    const std::size_t half = static_cast<std::size_t>(bytes / 2);
    return median_us(opt, stream, [&] {
      return cudaMemcpyAsync(copy_dst.ptr, copy_src.ptr, half, cudaMemcpyDeviceToDevice, stream);
    });
  };

  constexpr std::int64_t kHidden = 2048;  // JetMoE-8B
  for (std::int64_t tokens : {1, 16, 512, 4096, 16384}) {
    const std::int64_t n = tokens * kHidden;
    DeviceMemory x32(n * sizeof(float));
    DeviceMemory y32(n * sizeof(float));
    DeviceMemory w32(kHidden * sizeof(float));
    DeviceMemory x16(n * sizeof(std::uint16_t));
    DeviceMemory y16(n * sizeof(std::uint16_t));
    DeviceMemory w16(kHidden * sizeof(std::uint16_t));
    DeviceMemory rstd(tokens * sizeof(float));
    fill_random(x32.as<float>(), n, 1 + tokens);
    fill_random(w32.as<float>(), kHidden, 2 + tokens);
    CHECK_CUDA(jk_f32_to_bf16(x32.as<float>(), x16.as<std::uint16_t>(), n, stream));
    CHECK_CUDA(jk_f32_to_bf16(w32.as<float>(), w16.as<std::uint16_t>(), kHidden, stream));
    CHECK_CUDA(cudaStreamSynchronize(stream));
    const std::string shape = std::to_string(tokens) + "x" + std::to_string(kHidden);

    double bytes = 2.0 * n * 2 + kHidden * 2 + tokens * 4;
    rows.push_back({"rmsnorm_fwd_bf16", shape, bytes,
                    median_us(opt, stream,
                              [&] {
                                return jk_rmsnorm_fwd_bf16(x16.as<std::uint16_t>(), w16.as<std::uint16_t>(),
                                                           y16.as<std::uint16_t>(), rstd.as<float>(), tokens,
                                                           kHidden, 1e-6f, stream);
                              }),
                    copy_us(bytes)});
    bytes = 2.0 * n * 4 + kHidden * 4 + tokens * 4;
    rows.push_back({"rmsnorm_fwd_f32", shape, bytes,
                    median_us(opt, stream,
                              [&] {
                                return jk_rmsnorm_fwd_f32(x32.as<float>(), w32.as<float>(), y32.as<float>(),
                                                          rstd.as<float>(), tokens, kHidden, 1e-6f, stream);
                              }),
                    copy_us(bytes)});
  }

  for (std::int64_t n : {std::int64_t{1} << 20, std::int64_t{1} << 26}) {
    DeviceMemory f32(n * sizeof(float));
    DeviceMemory b16(n * sizeof(std::uint16_t));
    fill_random(f32.as<float>(), n, 3 + n);
    const std::string shape = "n=" + std::to_string(n);
    const double bytes = n * 6.0;
    rows.push_back({"f32_to_bf16", shape, bytes,
                    median_us(opt, stream,
                              [&] { return jk_f32_to_bf16(f32.as<float>(), b16.as<std::uint16_t>(), n, stream); }),
                    copy_us(bytes)});
    rows.push_back({"bf16_to_f32", shape, bytes,
                    median_us(opt, stream,
                              [&] { return jk_bf16_to_f32(b16.as<std::uint16_t>(), f32.as<float>(), n, stream); }),
                    copy_us(bytes)});
  }
  CHECK_CUDA(cudaStreamDestroy(stream));
  print_and_save(rows, opt, info);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  for (int i = 1; i < argc; ++i) {
    const bool has_value = i + 1 < argc;
    if (std::strcmp(argv[i], "--out") == 0 && has_value) {
      opt.out = argv[++i];
    } else if (std::strcmp(argv[i], "--reps") == 0 && has_value) {
      opt.reps = std::max(1, std::atoi(argv[++i]));
    } else if (std::strcmp(argv[i], "--warmup") == 0 && has_value) {
      opt.warmup = std::max(0, std::atoi(argv[++i]));
    } else {
      std::printf("usage: %s [--out FILE.csv] [--reps N] [--warmup N]\n", argv[0]);
      return std::strcmp(argv[i], "--help") == 0 ? 0 : 2;
    }
  }
  jk_runtime_info_t info;
  const cudaError_t status = jk_runtime_info(&info);
  if (status != cudaSuccess) {
    std::printf("jk_runtime_info failed: %s\n", cudaGetErrorString(status));
    return 1;
  }
  char description[1024];
  jk_runtime_info_describe(&info, description, sizeof(description));
  std::printf("jetmoe-kernels-bench\n%s", description);
  if (info.device_count == 0) {
    std::printf("no CUDA device: nothing to benchmark\n");
    return kExitNoDevice;
  }
  std::printf("warm-up %d, median of %d launches; %% memcpy = bandwidth relative to a D2D cudaMemcpyAsync "
              "of the same traffic; %% HBM pk relative to %.0f GB/s (H100 SXM)\n",
              opt.warmup, opt.reps, kH100HbmPeakGBs);
  try {
    return run(opt, info);
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }
}
