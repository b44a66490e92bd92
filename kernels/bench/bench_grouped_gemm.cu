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
#include "bench_timing.cuh"
#include "harness.cuh"

namespace {

constexpr double kPeakTflops = 989.0;   // H100 SXM dense bf16
constexpr double kPeakGBs = 3350.0;     // H100 SXM HBM3
constexpr std::int64_t kD = 2048, kF = 5632, kE = 8, kQ = 2048;

using jkb::DeviceMemory;

struct Options {
  jkb::Args common{"jetmoe-grouped-gemm-bench.csv", 15, 3};  // --out, --reps, --warmup
  std::vector<std::int64_t> tokens = {4096, 16384};
  std::vector<jk_grouped_gemm_algo_t> algos = {JK_GROUPED_GEMM_SIMPLE, JK_GROUPED_GEMM_MMA, JK_GROUPED_GEMM_WGMMA,
                                               JK_GROUPED_GEMM_CUBLASLT};
};

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

int run(const Options& opt, const jk_runtime_info_t& info) {
  std::printf("JetMoE-8B shapes: D=%lld F=%lld E=%lld top-2; median of %d reps after %d warm-up; "
              "peaks: %.0f TFLOP/s bf16 dense, %.0f GB/s (H100 SXM)\n",
              static_cast<long long>(kD), static_cast<long long>(kF), static_cast<long long>(kE), opt.common.reps,
              opt.common.warmup, kPeakTflops, kPeakGBs);
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
          const double ms = jkb::median_ms([&] { return op.launch(algo); }, stream, opt.common.warmup, opt.common.reps);
          report({op.name, routing, jk_grouped_gemm_algo_name(algo), tokens, ms, op.flop / (ms * 1e-3) / 1e12, 0.0});
        }
      }
      // Memory-bound: SwiGLU backward reads Z (2F) and dH (F), writes dZ (2F), all bf16.
      const double bytes = r * kF * 2.0 * 5;
      const double ms = jkb::median_ms(
          [&] { return jk_swiglu_bwd_bf16(z.as<U16>(), dh.as<U16>(), dz.as<U16>(), rows, kF, stream); }, stream,
          opt.common.warmup, opt.common.reps);
      report({"swiglu.bwd", routing, "own", tokens, ms, 0.0, bytes / (ms * 1e-3) / 1e9});
    }
  }
  CHECK_CUDA(cudaStreamDestroy(stream));

  FILE* csv = std::fopen(opt.common.out, "w");
  if (csv == nullptr) {
    std::printf("cannot write %s\n", opt.common.out);
    return 1;
  }
  std::fprintf(csv, "op,tokens,routing,impl,time_ms,tflops,pct_989,gbs,pct_3350,device\n");
  for (const Row& r : rows_out) {
    std::fprintf(csv, "%s,%lld,%s,%s,%.6f,%.3f,%.3f,%.3f,%.3f,%s\n", r.op.c_str(), static_cast<long long>(r.tokens),
                 r.routing.c_str(), r.impl.c_str(), r.ms, r.tflops, 100.0 * r.tflops / kPeakTflops, r.gbs,
                 100.0 * r.gbs / kPeakGBs, info.device_name);
  }
  std::fclose(csv);
  std::printf("\nwrote %s\n", opt.common.out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options opt;
  jkb::ArgRules rules;
  rules.extra_usage = " [--tokens T1,T2,...] [--algos simple,mma,wgmma,cublaslt]";
  rules.help = rules.short_help = true;
  const auto flags = [&](const std::string& arg, const char* value) {
    if (value == nullptr) return 0;
    if (arg == "--tokens") {
      opt.tokens.clear();
      for (const auto& t : split(value)) {
        const long long v = std::atoll(t.c_str());
        if (v <= 0) return -1;
        opt.tokens.push_back(v);
      }
      return 2;
    }
    if (arg == "--algos") {
      opt.algos.clear();
      for (const auto& t : split(value)) {
        if (t == "simple") opt.algos.push_back(JK_GROUPED_GEMM_SIMPLE);
        else if (t == "mma") opt.algos.push_back(JK_GROUPED_GEMM_MMA);
        else if (t == "wgmma") opt.algos.push_back(JK_GROUPED_GEMM_WGMMA);
        else if (t == "cublaslt") opt.algos.push_back(JK_GROUPED_GEMM_CUBLASLT);
        else return -1;
      }
      return 2;
    }
    return 0;
  };
  if (const int rc = jkb::parse_args(argc, argv, opt.common, rules, flags); rc != jkb::kContinue) return rc;
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  jk_runtime_info_t info;
  // jk_runtime_info failing, or no kernel image for the device: exit 1 (an error), not 77.
  if (const int rc = jkb::open_device("jetmoe-grouped-gemm-bench", info, 1, 1); rc != jkb::kContinue) return rc;
  std::printf("jetmoe-grouped-gemm-bench\n%s", jkb::describe(info).c_str());
  try {
    return run(opt, info);
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }
}
