// Benchmark of the memory-bound kernels: median time over many launches (device events, warm-up
// first, fresh random non-zero inputs), effective bandwidth, and the ratio to a device-to-device
// cudaMemcpyAsync moving the same bytes, measured side by side in the same run.
// Prints a table and writes the raw numbers as CSV (--out). Never a CTest test.
// Exit: 0 done, 1 CUDA error, 2 bad arguments, 77 no CUDA device.
#include "bench_timing.cuh"
#include "harness.cuh"

namespace {

constexpr double kH100HbmPeakGBs = 3350.0;  // H100 SXM HBM3; the H200 has 4800

using jkb::DeviceMemory;

// Median device time in microseconds of `launch` (--warmup untimed launches, then --reps timed ones).
template <typename Launch>
double median_us(const jkb::Args& opt, cudaStream_t stream, Launch&& launch) {
  return jkb::median_us(std::forward<Launch>(launch), stream, opt.warmup, opt.reps);
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

void print_and_save(const std::vector<Row>& rows, const jkb::Args& opt, const jk_runtime_info_t& info) {
  std::printf("\n%-18s %-22s %12s %10s %10s %9s %9s\n", "kernel", "shape", "MB moved", "median us", "GB/s",
              "% memcpy", "% HBM pk");
  for (const Row& r : rows) {
    const double gbs = r.bytes / (r.us * 1e3);
    const double copy_gbs = r.bytes / (r.copy_us * 1e3);
    std::printf("%-18s %-22s %12.2f %10.2f %10.1f %8.1f%% %8.1f%%\n", r.kernel.c_str(), r.shape.c_str(),
                r.bytes / 1e6, r.us, gbs, 100.0 * gbs / copy_gbs, 100.0 * gbs / kH100HbmPeakGBs);
  }
  std::FILE* f = std::fopen(opt.out, "w");
  if (f == nullptr) {
    std::fprintf(stderr, "cannot write %s\n", opt.out);
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
  std::printf("\nraw numbers written to %s\n", opt.out);
}

int run(const jkb::Args& opt, const jk_runtime_info_t& info) {
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
  jkb::Args opt{"jetmoe-kernels-bench.csv", 100, 10};
  jkb::ArgRules rules;
  rules.help = true;
  if (const int rc = jkb::parse_args(argc, argv, opt, rules); rc != jkb::kContinue) return rc;
  jk_runtime_info_t info;
  // jk_runtime_info failing, or no kernel image for the device: exit 1 (an error), not 77.
  if (const int rc = jkb::open_device("jetmoe-kernels-bench", info, 1, 1); rc != jkb::kContinue) return rc;
  std::printf("jetmoe-kernels-bench\n%s", jkb::describe(info).c_str());
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
