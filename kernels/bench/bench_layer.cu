// Benchmark of one JetMoE-8B block on the device (jetmoe/layer.h): D 2048, E 8, k 2, H_kv 16, d 128,
// F 5632, T 4096.
//  - training: forward, backward and forward+backward at B*T = 8192 and 16384 tokens (T = 4096):
//    tokens/s and MFU = 3 * flops_per_token * tokens / time / 989 TFLOP/s, where flops_per_token is
//    jk_layer_flops_per_token (2 * active matmul params per token: 2 routers, 2 of 8 W_q / W_o / fc1 / fc2
//    experts, the shared K/V projection; plus causal attention 2 * 2 * (T/2) * Hq * d), the
//    performance.md convention; plus a per-stage time breakdown from cudaEvents (jk_layer_profile_t);
//    for each layer path: tuned (rows train.*) and the sm_90a kernels (rows train.*.wgmma; JK_LAYER_WGMMA,
//    which runs the tuned kernels where the sm_90a ones cannot run); --path tuned|wgmma keeps one;
//  - decode: B = 1 and 8 single-token steps at context 4096 (cache_len 4095, the new token the 4096th):
//    tokens/s and achieved GB/s of the bandwidth bound's bytes (active experts' weights of both routers'
//    choices, min(E, B k) experts each, the shared K/V projection, both routers, the norms and biases,
//    and the K/V cache read B * 4096 * 2 * H_kv * d * 2 bytes) vs the HBM3 peak 3.35 TB/s; once with
//    plain launches (decode.step) and once replayed from a CUDA graph (decode.graph).
// Median of cudaEvent-timed runs after a warm-up; fresh random non-zero inputs. Prints a table and writes
// raw rows with --out FILE.csv; the same columns as kernels/bench/peer_layer.py (HF JetMoe on the GPU).
// Exit: 0 done, 2 bad arguments, 77 no CUDA device.
#include "bench_timing.cuh"
#include "harness.cuh"

namespace {

using jkb::kBf16Peak;
using jkb::kHbmPeak;

std::uint16_t* device_bf16(std::size_t n, std::mt19937_64& gen, float lo, float hi, float offset = 0.0f) {
  std::vector<float> v(n);
  std::uniform_real_distribution<float> m(lo, hi);
  for (auto& x : v) x = offset + ((gen() & 1u) ? m(gen) : -m(gen));
  const auto b = jkt::to_bf16(v);
  std::uint16_t* d = nullptr;
  CHECK_CUDA(cudaMalloc(&d, n * sizeof(std::uint16_t)));
  CHECK_CUDA(cudaMemcpy(d, b.data(), n * sizeof(std::uint16_t), cudaMemcpyHostToDevice));
  return d;
}

template <typename T>
T* device_zero(std::size_t n) {
  T* d = nullptr;
  CHECK_CUDA(cudaMalloc(&d, std::max<std::size_t>(n, 1) * sizeof(T)));
  CHECK_CUDA(cudaMemset(d, 0, std::max<std::size_t>(n, 1) * sizeof(T)));
  return d;
}

using jkb::median_ms;

// One profiled run: prints each stage's time and share.
void print_breakdown(const char* title, const std::function<void(jk_layer_profile_t*)>& launch, cudaStream_t s) {
  jk_layer_profile_t prof{};
  cudaEvent_t start;
  CHECK_CUDA(cudaEventCreate(&start));
  for (auto& e : prof.events) CHECK_CUDA(cudaEventCreate(&e));
  prof.count = 0;
  CHECK_CUDA(cudaEventRecord(start, s));
  launch(&prof);
  CHECK_CUDA(cudaStreamSynchronize(s));
  float total = 0;
  if (prof.count > 0) CHECK_CUDA(cudaEventElapsedTime(&total, start, prof.events[prof.count - 1]));
  std::printf("  stage breakdown, %s (one run, %.3f ms):\n", title, total);
  for (int i = 0; i < prof.count; ++i) {
    float ms = 0;
    CHECK_CUDA(cudaEventElapsedTime(&ms, i == 0 ? start : prof.events[i - 1], prof.events[i]));
    std::printf("    %-24s %9.3f ms %5.1f%%\n", prof.names[i], ms, total > 0 ? 100.0 * ms / total : 0.0);
  }
  for (auto& e : prof.events) CHECK_CUDA(cudaEventDestroy(e));
  CHECK_CUDA(cudaEventDestroy(start));
}

struct Weights {
  jk_layer_weights_t w{};
  jk_layer_grads_t g{};
  std::vector<void*> owned;
};

Weights make_weights(const jk_layer_config_t& c, std::mt19937_64& gen) {
  Weights r;
  const std::int64_t D = c.hidden, E = c.num_experts, A = c.kv_heads * c.head_dim, F = c.ffn;
  const std::int64_t sizes[11] = {D, E * D, E * A * D, 2 * A * D, E * D * A, D, D, E * D, E * 2 * F * D, E * D * F, D};
  const double fan[11] = {1, double(D), double(D), double(D), double(A), 1, 1, double(D), double(D), double(F), 1};
  const std::uint16_t** wp[11] = {&r.w.input_norm, &r.w.moa_router, &r.w.moa_q,     &r.w.kv_proj,
                                  &r.w.moa_o,      &r.w.moa_bias,   &r.w.post_norm, &r.w.moe_router,
                                  &r.w.moe_in,     &r.w.moe_out,    &r.w.moe_bias};
  float** gp[11] = {&r.g.input_norm, &r.g.moa_router, &r.g.moa_q,  &r.g.kv_proj, &r.g.moa_o,   &r.g.moa_bias,
                    &r.g.post_norm,  &r.g.moe_router, &r.g.moe_in, &r.g.moe_out, &r.g.moe_bias};
  for (int i = 0; i < 11; ++i) {
    const bool norm = i == 0 || i == 6, bias = i == 5 || i == 10;
    const float s = static_cast<float>(1.0 / std::sqrt(fan[i]));
    std::uint16_t* d = norm   ? device_bf16(sizes[i], gen, 0.01f, 0.5f, 1.0f)
                       : bias ? device_bf16(sizes[i], gen, 0.01f, 0.2f)
                              : device_bf16(sizes[i], gen, 0.25f * s, 1.75f * s);
    *wp[i] = d;
    r.owned.push_back(d);
    float* g = device_zero<float>(static_cast<std::size_t>(sizes[i]));
    *gp[i] = g;
    r.owned.push_back(g);
  }
  return r;
}

}  // namespace

int main(int argc, char** argv) {
  jkb::Args args{nullptr, 10, 2};
  bool quick = false;
  std::vector<jk_layer_path_t> paths = {JK_LAYER_TUNED, JK_LAYER_WGMMA};
  jkb::ArgRules rules;
  rules.extra_usage = " [--quick] [--path tuned|wgmma]";
  const auto flags = [&](const std::string& arg, const char* value) {
    if (arg == "--path") {
      if (value == nullptr) return 0;
      const std::string v = value;
      if (v != "tuned" && v != "wgmma") return -1;
      paths = {v == "tuned" ? JK_LAYER_TUNED : JK_LAYER_WGMMA};
      return 2;
    }
    if (arg != "--quick") return 0;
    quick = true;  // 8192 tokens only, fewer decode reps
    return 1;
  };
  if (const int rc = jkb::parse_args(argc, argv, args, rules, flags); rc != jkb::kContinue) return rc;
  const char* out_path = args.out;
  const int reps = args.reps, warmup = args.warmup;
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  jk_runtime_info_t info;
  // No kernel image for the device: exit 1 (a build to fix), not 77.
  if (const int rc = jkb::open_device("jetmoe-layer-bench", info, jkb::kExitNoDevice, 1); rc != jkb::kContinue)
    return rc;
  std::printf("jetmoe-layer-bench\n%s", jkb::describe(info).c_str());

  std::vector<jkb::ThroughputRow> rows;
  try {
    cudaStream_t stream;
    CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    std::mt19937_64 gen(20240407);
    const std::int64_t T = 4096, D = 2048;
    float* rope = nullptr;
    CHECK_CUDA(cudaMalloc(&rope, static_cast<std::size_t>(jk_fused_rope_table_elems(T, 128)) * sizeof(float)));
    CHECK_CUDA(jk_fused_rope_table(rope, T, 128, 10000.0f));
    jk_layer_config_t cfg{};
    cfg.hidden = D, cfg.num_experts = 8, cfg.top_k = 2, cfg.kv_heads = 16, cfg.head_dim = 128, cfg.ffn = 5632;
    cfg.eps = 1e-6f, cfg.aux_switch_coef = 0.01f, cfg.aux_z_coef = 0.001f;
    cfg.rope_table = rope, cfg.rope_max_positions = T, cfg.path = JK_LAYER_TUNED;
    Weights W = make_weights(cfg, gen);
    const double fpt = jk_layer_flops_per_token(&cfg, T);
    std::printf("FLOPs per token per layer (forward, T = 4096): %.4g (training 3x: %.4g)\n", fpt, 3 * fpt);

    std::vector<std::int64_t> batches = {2, 4};
    if (quick) batches = {2};
    for (const jk_layer_path_t path : paths)
    for (const std::int64_t B : batches) {
      cfg.path = path;
      const char* suffix = path == JK_LAYER_WGMMA ? ".wgmma" : "";
      const std::int64_t N = B * T;
      std::size_t sb = 0, cb = 0;
      CHECK_CUDA(jk_layer_train_bytes(&cfg, B, T, &sb, &cb));
      std::printf("B %lld x T %lld: saved %.2f GB, scratch %.2f GB\n", (long long)B, (long long)T, sb / 1e9, cb / 1e9);
      void* saved = device_zero<char>(sb);
      void* scratch = device_zero<char>(cb);
      std::uint16_t* x = device_bf16(static_cast<std::size_t>(N * D), gen, 0.05f, 2.0f);
      std::uint16_t* dout = device_bf16(static_cast<std::size_t>(N * D), gen, 0.01f, 1.0f);
      std::uint16_t* out = device_zero<std::uint16_t>(static_cast<std::size_t>(N * D));
      std::uint16_t* dx = device_zero<std::uint16_t>(static_cast<std::size_t>(N * D));
      float* losses = device_zero<float>(4);
      auto fwd = [&](jk_layer_profile_t* p) {
        CHECK_CUDA(jk_layer_fwd(&W.w, &cfg, x, B, T, out, losses, saved, sb, scratch, cb, p, stream));
      };
      auto bwd = [&](jk_layer_profile_t* p) {
        CHECK_CUDA(jk_layer_bwd(&W.w, &cfg, x, dout, B, T, dx, &W.g, 0.0f, saved, sb, scratch, cb, p, stream));
      };
      const double t_fwd = median_ms([&] { fwd(nullptr); }, stream, warmup, reps);
      const double t_bwd = median_ms([&] { bwd(nullptr); }, stream, warmup, reps);
      const double t_all = median_ms(
          [&] {
            fwd(nullptr);
            bwd(nullptr);
          },
          stream, warmup, reps);
      const double flop[3] = {fpt * N, 2 * fpt * N, 3 * fpt * N};
      const double t[3] = {t_fwd, t_bwd, t_all};
      const char* names[3] = {"train.fwd", "train.bwd", "train.fwd+bwd"};
      for (int i = 0; i < 3; ++i)
        rows.push_back(jkb::throughput_row(std::string(names[i]) + suffix, B, T, t[i], double(N), flop[i], 0.0));
      print_breakdown("forward", fwd, stream);
      print_breakdown("backward", bwd, stream);
      for (void* p : {saved, scratch, (void*)x, (void*)dout, (void*)out, (void*)dx, (void*)losses})
        CHECK_CUDA(cudaFree(p));
    }

    // ---- decode at context 4096 (the tuned path: the sm_90a kernels have no decode variant) ----
    cfg.path = JK_LAYER_TUNED;
    for (const std::int64_t B : {std::int64_t(1), std::int64_t(8)}) {
      const std::int64_t Tmax = T, A = cfg.kv_heads * cfg.head_dim;
      std::uint16_t* kc = device_bf16(static_cast<std::size_t>(B * Tmax * A), gen, 0.05f, 2.0f);
      std::uint16_t* vc = device_bf16(static_cast<std::size_t>(B * Tmax * A), gen, 0.05f, 2.0f);
      std::uint16_t* x = device_bf16(static_cast<std::size_t>(B * D), gen, 0.05f, 2.0f);
      std::uint16_t* out = device_zero<std::uint16_t>(static_cast<std::size_t>(B * D));
      std::vector<std::int32_t> len_h(static_cast<std::size_t>(B), static_cast<std::int32_t>(Tmax - 1));
      std::int32_t* len = device_zero<std::int32_t>(static_cast<std::size_t>(B));
      CHECK_CUDA(cudaMemcpy(len, len_h.data(), len_h.size() * 4, cudaMemcpyHostToDevice));
      const std::size_t bytes = jk_layer_decode_bytes(&cfg, B, Tmax);
      void* scratch = device_zero<char>(bytes);
      auto step = [&](jk_layer_profile_t* p) {
        CHECK_CUDA(jk_layer_decode(&W.w, &cfg, x, B, kc, vc, len, Tmax, out, scratch, bytes, p, stream));
      };
      const double ms = median_ms([&] { step(nullptr); }, stream, std::max(warmup, 5), quick ? 50 : 200);
      const double kv_bytes = double(B) * double(Tmax) * 2.0 * A * 2.0;
      const double bound_bytes = jkb::decode_block_bytes(cfg, B, Tmax), weight_bytes = bound_bytes - kv_bytes;
      // one token attending Tmax keys: the causal formula's T/2 becomes Tmax, hence seq = 2 Tmax
      const double flops = double(B) * jk_layer_flops_per_token(&cfg, 2 * Tmax);
      rows.push_back(jkb::throughput_row("decode.step", B, Tmax, ms, double(B), flops, bound_bytes));
      // The same step captured once in a CUDA graph (the layer never synchronises with the host, so it
      // is capturable): removes the ~35 launch latencies that dominate a single-token step.
      // Non-fatal: if capture is refused, say so and keep the other rows.
      try {
        const double ms_graph = jkb::median_ms_graph(
            [&] { return jk_layer_decode(&W.w, &cfg, x, B, kc, vc, len, Tmax, out, scratch, bytes, nullptr, stream); },
            stream, std::max(warmup, 5), quick ? 50 : 200);
        rows.push_back(jkb::throughput_row("decode.graph", B, Tmax, ms_graph, double(B), flops, bound_bytes));
      } catch (const std::exception& e) {
        std::printf("decode B %lld: CUDA graph capture failed (%s); decode.graph row skipped\n", (long long)B,
                    e.what());
        cudaGetLastError();
      }
      std::printf("decode B %lld: bandwidth-bound bytes %.3f GB (weights %.3f, KV %.3f): bound %.1f us\n", (long long)B,
                  (weight_bytes + kv_bytes) / 1e9, weight_bytes / 1e9, kv_bytes / 1e9,
                  (weight_bytes + kv_bytes) / kHbmPeak * 1e6);
      print_breakdown(B == 1 ? "decode B=1" : "decode B=8", step, stream);
      for (void* p : {(void*)kc, (void*)vc, (void*)x, (void*)out, (void*)len, scratch}) CHECK_CUDA(cudaFree(p));
    }
    CHECK_CUDA(cudaFree(rope));
    for (void* p : W.owned) CHECK_CUDA(cudaFree(p));
    CHECK_CUDA(cudaStreamDestroy(stream));
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }

  if (!jkb::report_throughput(rows, "Targets: train MFU >= 40%, decode >= 60% of the bandwidth bound (HBM% column).", out_path)) return 1;
  return 0;
}
