// Benchmark of the 'fused' kernels at JetMoE-8B shapes: RMSNorm backward (16k rows x 2048), RoPE
// (4096 tokens, 32 query and 16 key heads of 128), cross-entropy forward and backward (4096 x 32000),
// global gradient norm and multi-tensor AdamW (the expert input_linear 8x11264x2048 plus small tensors).
// Median of device-event-timed launches after a warm-up, fresh random non-zero inputs. Bytes are the
// essential traffic (each input read once, each output written once, plus the dw partials); GB/s and
// % of the H100 SXM HBM3 peak (3.35 TB/s). kernels/bench/peer_fused.py times the PyTorch equivalents
// with the same columns.
//   jetmoe-fused-bench [--out FILE.csv] [--reps N] [--warmup N]
// Exit: 0 done, 2 bad arguments, 77 no CUDA device.
#include "bench_timing.cuh"
#include "harness.cuh"

#include <memory>

namespace {

constexpr double kHbmPeak = 3.35e12;  // bytes/s, H100 SXM

template <typename T>
struct Device {
  T* ptr = nullptr;
  std::size_t n = 0;
  explicit Device(std::size_t count) : n(count) {
    CHECK_CUDA(cudaMalloc(&ptr, std::max<std::size_t>(1, n) * sizeof(T)));
  }
  ~Device() { cudaFree(ptr); }
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;
};

// Random non-zero fp32 in +-[lo, hi] (or bf16 bits of such values), generated on the host once.
std::mt19937_64 rng(20240407);
std::vector<float> random_floats(std::size_t n, float lo, float hi) {
  std::uniform_real_distribution<float> mag(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = (rng() & 1) ? mag(rng) : -mag(rng);
  return v;
}
std::vector<std::uint16_t> bf16_of(const std::vector<float>& v) {
  std::vector<std::uint16_t> out(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) {
    std::uint32_t u;
    std::memcpy(&u, &v[i], 4);
    u += 0x7fffu + ((u >> 16) & 1u);
    out[i] = static_cast<std::uint16_t>(u >> 16);
  }
  return out;
}
template <typename T>
void upload(Device<T>& d, const std::vector<T>& h) {
  CHECK_CUDA(cudaMemcpy(d.ptr, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice));
}

struct Row {
  std::string kernel, shape;
  double bytes, median_us;
};

// Every launch here is on the legacy default stream (stream argument 0).
using jkb::median_us;

}  // namespace

int main(int argc, char** argv) {
  jkb::Args args{nullptr, 50, 5};
  if (const int rc = jkb::parse_args(argc, argv, args); rc != jkb::kContinue) return rc;
  const char* out_path = args.out;
  const int reps = args.reps, warmup = args.warmup;
  jk_runtime_info_t info;
  if (const int rc = jkb::open_device("jetmoe-fused-bench", info); rc != jkb::kContinue) return rc;
  std::printf("jetmoe-fused-bench: median of %d event-timed launches after %d warm-up\n%s", reps, warmup,
              jkb::describe(info).c_str());

  std::vector<Row> rows;
  try {
    // ---- RMSNorm backward: 16k rows x 2048 -------------------------------------------------------------
    {
      const std::int64_t R = 16384, H = 2048;
      const std::size_t n = static_cast<std::size_t>(R * H);
      const std::vector<float> xf = random_floats(n, 0.01f, 2.0f), dyf = random_floats(n, 0.01f, 1.0f),
                               wf = random_floats(H, 0.5f, 1.5f), rf = random_floats(R, 0.5f, 1.0f);
      Device<float> x32(n), dy32(n), dx32(n), w32(H), rstd(R), dw(H), ws(jk_fused_rmsnorm_bwd_workspace_elems(R, H));
      Device<std::uint16_t> x16(n), dy16(n), dx16(n), w16(H);
      upload(x32, xf);
      upload(dy32, dyf);
      upload(w32, wf);
      upload(rstd, rf);
      upload(x16, bf16_of(xf));
      upload(dy16, bf16_of(dyf));
      upload(w16, bf16_of(wf));
      const double partial_bytes = 2.0 * ws.n * 4 + H * 4;
      const std::string shape = "16384x2048";
      rows.push_back({"rmsnorm_bwd bf16", shape, 3.0 * n * 2 + partial_bytes, median_us([&] {
        return jk_fused_rmsnorm_bwd_bf16(x16.ptr, w16.ptr, rstd.ptr, dy16.ptr, dx16.ptr, dw.ptr, 0.0f, ws.ptr, R, H, 0);
      }, 0, warmup, reps)});
      rows.push_back({"rmsnorm_bwd bf16 simple", shape, 3.0 * n * 2 + partial_bytes, median_us([&] {
        return jk_fused_rmsnorm_bwd_bf16_simple(x16.ptr, w16.ptr, rstd.ptr, dy16.ptr, dx16.ptr, dw.ptr, 0.0f, ws.ptr, R, H, 0);
      }, 0, warmup, reps)});
      rows.push_back({"rmsnorm_bwd f32", shape, 3.0 * n * 4 + partial_bytes, median_us([&] {
        return jk_fused_rmsnorm_bwd_f32(x32.ptr, w32.ptr, rstd.ptr, dy32.ptr, dx32.ptr, dw.ptr, 0.0f, ws.ptr, R, H, 0);
      }, 0, warmup, reps)});
      rows.push_back({"rmsnorm_bwd f32 simple", shape, 3.0 * n * 4 + partial_bytes, median_us([&] {
        return jk_fused_rmsnorm_bwd_f32_simple(x32.ptr, w32.ptr, rstd.ptr, dy32.ptr, dx32.ptr, dw.ptr, 0.0f, ws.ptr, R, H, 0);
      }, 0, warmup, reps)});
    }
    // ---- RoPE: 4096 tokens, 32 q heads + 16 k heads of 128 -------------------------------------------------
    {
      const std::int64_t T = 4096, HQ = 32, HK = 16, D = 128;
      const std::size_t nq = static_cast<std::size_t>(T * HQ * D), nk = static_cast<std::size_t>(T * HK * D);
      Device<std::uint16_t> q16(nq), k16(nk);
      Device<float> q32(nq), k32(nk), table(jk_fused_rope_table_elems(4096, D));
      Device<std::int32_t> pos(T);
      upload(q16, bf16_of(random_floats(nq, 0.01f, 4.0f)));
      upload(k16, bf16_of(random_floats(nk, 0.01f, 4.0f)));
      upload(q32, random_floats(nq, 0.01f, 4.0f));
      upload(k32, random_floats(nk, 0.01f, 4.0f));
      std::vector<std::int32_t> p(T);
      for (std::int64_t t = 0; t < T; ++t) p[t] = static_cast<std::int32_t>(t);
      upload(pos, p);
      CHECK_CUDA(jk_fused_rope_table(table.ptr, 4096, D, 10000.0f));
      const std::string shape = "4096 tok, 32+16 heads x128";
      rows.push_back({"rope_fwd bf16", shape, 2.0 * (nq + nk) * 2, median_us([&] {
        return jk_fused_rope_fwd_bf16(q16.ptr, k16.ptr, pos.ptr, table.ptr, 4096, T, HQ, HK, D, 0);
      }, 0, warmup, reps)});
      rows.push_back({"rope_bwd bf16", shape, 2.0 * (nq + nk) * 2, median_us([&] {
        return jk_fused_rope_bwd_bf16(q16.ptr, k16.ptr, pos.ptr, table.ptr, 4096, T, HQ, HK, D, 0);
      }, 0, warmup, reps)});
      rows.push_back({"rope_fwd f32", shape, 2.0 * (nq + nk) * 4, median_us([&] {
        return jk_fused_rope_fwd_f32(q32.ptr, k32.ptr, pos.ptr, table.ptr, 4096, T, HQ, HK, D, 0);
      }, 0, warmup, reps)});
      // The one-pair-per-thread paths (the vector paths' baseline, same bits).
      rows.push_back({"rope_fwd bf16 simple", shape, 2.0 * (nq + nk) * 2, median_us([&] {
        return jk_fused_rope_fwd_bf16_simple(q16.ptr, k16.ptr, pos.ptr, table.ptr, 4096, T, HQ, HK, D, 0);
      }, 0, warmup, reps)});
      rows.push_back({"rope_bwd bf16 simple", shape, 2.0 * (nq + nk) * 2, median_us([&] {
        return jk_fused_rope_bwd_bf16_simple(q16.ptr, k16.ptr, pos.ptr, table.ptr, 4096, T, HQ, HK, D, 0);
      }, 0, warmup, reps)});
    }
    // ---- cross-entropy: 4096 x 32000 --------------------------------------------------------------------------
    {
      const std::int64_t N = 4096, V = 32000;
      const std::size_t n = static_cast<std::size_t>(N * V);
      const std::vector<float> lf = random_floats(n, 1e-3f, 4.0f);
      Device<std::uint16_t> l16(n), g16(n);
      Device<float> l32(n), g32(n), loss(N), lse(N), mean(1), inv(1);
      Device<std::int32_t> labels(N), nvalid(1);
      upload(l16, bf16_of(lf));
      upload(l32, lf);
      std::vector<std::int32_t> lab(N);
      for (std::int64_t i = 0; i < N; ++i) lab[i] = i % 97 == 5 ? -100 : static_cast<std::int32_t>(rng() % V);
      upload(labels, lab);
      const std::string shape = "4096x32000";
      rows.push_back({"cross_entropy_fwd bf16", shape, n * 2.0, median_us([&] {
        return jk_fused_cross_entropy_fwd_bf16(l16.ptr, labels.ptr, loss.ptr, lse.ptr, mean.ptr, nvalid.ptr, inv.ptr, N, V, 0);
      }, 0, warmup, reps)});
      rows.push_back({"cross_entropy_bwd bf16", shape, n * 4.0, median_us([&] {
        return jk_fused_cross_entropy_bwd_bf16(l16.ptr, labels.ptr, lse.ptr, g16.ptr, inv.ptr, 0.0f, N, V, 0);
      }, 0, warmup, reps)});
      rows.push_back({"cross_entropy_fwd f32", shape, n * 4.0, median_us([&] {
        return jk_fused_cross_entropy_fwd_f32(l32.ptr, labels.ptr, loss.ptr, lse.ptr, mean.ptr, nvalid.ptr, inv.ptr, N, V, 0);
      }, 0, warmup, reps)});
      rows.push_back({"cross_entropy_bwd f32", shape, n * 8.0, median_us([&] {
        return jk_fused_cross_entropy_bwd_f32(l32.ptr, labels.ptr, lse.ptr, g32.ptr, inv.ptr, 0.0f, N, V, 0);
      }, 0, warmup, reps)});
    }
    // ---- gradient norm and AdamW: the 8x11264x2048 expert weight plus small tensors ------------------------
    {
      const std::vector<std::int64_t> sizes = {8LL * 11264 * 2048, 4096LL * 2048, 2048, 2048, 1};
      std::vector<std::unique_ptr<Device<float>>> bufs;
      std::vector<std::unique_ptr<Device<std::uint16_t>>> half;
      std::vector<jk_adamw_tensor_t> desc;
      double total = 0;
      for (std::int64_t s : sizes) {
        const std::size_t n = static_cast<std::size_t>(s);
        for (int b = 0; b < 4; ++b) bufs.emplace_back(new Device<float>(n));
        half.emplace_back(new Device<std::uint16_t>(n));
        const std::vector<float> init = random_floats(n, 1e-4f, 0.1f);
        for (int b = 0; b < 4; ++b) upload(*bufs[bufs.size() - 4 + b], init);
        float* p = bufs[bufs.size() - 4]->ptr;
        float* g = bufs[bufs.size() - 3]->ptr;
        float* m = bufs[bufs.size() - 2]->ptr;
        float* v = bufs[bufs.size() - 1]->ptr;
        CHECK_CUDA(cudaMemset(v, 0, n * sizeof(float)));  // v >= 0
        desc.push_back({p, half.back()->ptr, g, m, v, s, s > 2048 ? 1 : 0, 0});
        total += static_cast<double>(s);
      }
      Device<jk_adamw_tensor_t> d_desc(desc.size());
      upload(d_desc, desc);
      Device<float> ws(jk_fused_grad_norm_workspace_elems), norm(1), clip(1);
      const std::string shape = "8x11264x2048 + 4096x2048 + 3 small";
      const std::int64_t count = static_cast<std::int64_t>(desc.size());
      rows.push_back({"grad_norm f32", shape, total * 4, median_us([&] {
        return jk_fused_grad_norm(d_desc.ptr, count, 1.0, ws.ptr, norm.ptr, clip.ptr, nullptr, 0);
      }, 0, warmup, reps)});
      jk_adamw_hyper_t h{1e-4, 0.9, 0.95, 1e-8, 0.1, 10};
      rows.push_back({"adamw f32 (+bf16 copy)", shape, total * 30, median_us([&] {
        return jk_fused_adamw(d_desc.ptr, count, h, clip.ptr, 0);
      }, 0, warmup, reps)});
    }
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }

  std::printf("\n%-26s %-34s %12s %10s %10s %8s\n", "kernel", "shape", "MB", "time_us", "GB/s", "%peak");
  for (const Row& r : rows) {
    const double gbs = r.bytes / (r.median_us * 1e-6) / 1e9;
    std::printf("%-26s %-34s %12.1f %10.1f %10.1f %7.1f%%\n", r.kernel.c_str(), r.shape.c_str(), r.bytes / 1e6,
                r.median_us, gbs, 100.0 * gbs * 1e9 / kHbmPeak);
  }
  if (out_path != nullptr) {
    FILE* f = std::fopen(out_path, "w");
    if (f == nullptr) {
      std::printf("cannot write %s\n", out_path);
      return 1;
    }
    std::fprintf(f, "kernel,shape,bytes,median_us,gb_per_s,percent_hbm_peak\n");
    for (const Row& r : rows) {
      const double gbs = r.bytes / (r.median_us * 1e-6) / 1e9;
      std::fprintf(f, "%s,\"%s\",%.0f,%.3f,%.2f,%.2f\n", r.kernel.c_str(), r.shape.c_str(), r.bytes, r.median_us, gbs,
                   100.0 * gbs * 1e9 / kHbmPeak);
    }
    std::fclose(f);
    std::printf("wrote %s\n", out_path);
  }
  return 0;
}
