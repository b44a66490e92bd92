// Benchmark of generation's decode step through the whole JetMoE-8B model on the device
// (jk_model_decode, jetmoe/model.h): V 32000, 24 blocks of D 2048, E 8, k 2, H_kv 16, d 128, F 5632,
// untied head, bf16 weights (17 GB, every block its own), at context 4096 (cache_len 4095: the new
// token is the 4096th) for B = 1 and 8:
//  - tokens/s, and GB/s of the bandwidth bound's bytes against the HBM3 peak 3.35 TB/s: per block the
//    active experts' weights of both routers' choices (min(E, B k) experts each), the shared K/V
//    projection, both routers, the norms and biases, and the K/V cache read (B * 4096 * 2 * H_kv * d * 2
//    bytes); plus the B embedding rows, the final norm and the LM head (V x D). Target: >= 60% (HBM%);
//  - once with plain launches (decode.step), once replayed from a CUDA graph (decode.graph);
// and the prefill of 8 prompts of different lengths (1024, 96, 512, 37, 768, 256, 1, 640 tokens): each
// alone (prefill.alone, jk_model_prefill with B 1) and as one right-padded batch (prefill.batched, with
// lens); tokens/s and MFU count the prompts' own tokens (not the padding), the head once per prompt;
// and the LM head of training (head.train.cC): a last stage without blocks (final norm, LM head,
// cross-entropy) forward and backward over 2 x context tokens, the whole micro-batch's logits at once
// (c0) and in chunks of C rows (jk_model_config_t::head_chunk; the backward computes each chunk's
// logits again), with the stage's saved + scratch bytes printed per row; MFU counts 6 N D V (the
// recomputed chunks' forward not included).
// Median of cudaEvent-timed steps after a warm-up; weights and caches filled on the device with
// non-zero values from a counter hash (fast for 8.5B parameters). Prints a table and writes raw rows
// with --out FILE.csv; the same columns as kernels/bench/peer_model.py (HF JetMoeForCausalLM on the GPU).
// Exit: 0 done, 2 bad arguments, 77 no CUDA device.
#include "bench_timing.cuh"
#include "harness.cuh"

namespace {

using jkb::kHbmPeak;

// The prefill rows' prompts (tokens; scaled down when --context is below the longest).
constexpr std::int64_t kPrefillLens[] = {1024, 96, 512, 37, 768, 256, 1, 640};
constexpr std::int64_t kPrefillLongest = 1024;

// x[i] = offset +- U(lo, hi) from a hash of (seed, i), as bf16 bits (round to nearest even).
__global__ void fill_bf16(std::uint16_t* x, std::int64_t n, std::uint64_t seed, float lo, float hi, float offset) {
  const std::int64_t stride = std::int64_t(gridDim.x) * blockDim.x;
  for (std::int64_t i = blockIdx.x * std::int64_t(blockDim.x) + threadIdx.x; i < n; i += stride) {
    std::uint64_t z = seed + 0x9e3779b97f4a7c15ull * static_cast<std::uint64_t>(i + 1);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    const float u = static_cast<float>(z >> 40) * (1.0f / 16777216.0f);
    const float v = offset + ((z & 1u) ? 1.0f : -1.0f) * (lo + (hi - lo) * u);
    const std::uint32_t b = __float_as_uint(v);
    x[i] = static_cast<std::uint16_t>((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
  }
}

struct Owned {
  std::vector<void*> blocks;
  ~Owned() {
    for (void* p : blocks) cudaFree(p);
  }
  std::uint16_t* bf16(std::size_t n, std::uint64_t seed, float lo, float hi, float offset = 0.0f) {
    std::uint16_t* d = nullptr;
    CHECK_CUDA(cudaMalloc(&d, std::max<std::size_t>(n, 1) * sizeof(std::uint16_t)));
    blocks.push_back(d);
    fill_bf16<<<1024, 256, 0, cudaStreamLegacy>>>(d, static_cast<std::int64_t>(n), seed, lo, hi, offset);
    CHECK_CUDA(cudaGetLastError());
    return d;
  }
  template <typename T>
  T* zero(std::size_t n) {
    T* d = nullptr;
    CHECK_CUDA(cudaMalloc(&d, std::max<std::size_t>(n, 1) * sizeof(T)));
    blocks.push_back(d);
    CHECK_CUDA(cudaMemset(d, 0, std::max<std::size_t>(n, 1) * sizeof(T)));
    return d;
  }
};

// One block's weights, scaled by 1/sqrt(fan-in) as bench_layer.cu draws them.
jk_layer_weights_t make_block(Owned& own, const jk_layer_config_t& c, std::uint64_t seed) {
  jk_layer_weights_t w{};
  const std::int64_t D = c.hidden, E = c.num_experts, A = c.kv_heads * c.head_dim, F = c.ffn;
  const std::int64_t sizes[11] = {D, E * D, E * A * D, 2 * A * D, E * D * A, D, D, E * D, E * 2 * F * D, E * D * F, D};
  const double fan[11] = {1, double(D), double(D), double(D), double(A), 1, 1, double(D), double(D), double(F), 1};
  const std::uint16_t** slots[11] = {&w.input_norm, &w.moa_router, &w.moa_q,   &w.kv_proj,  &w.moa_o,  &w.moa_bias,
                                     &w.post_norm,  &w.moe_router, &w.moe_in, &w.moe_out, &w.moe_bias};
  for (int i = 0; i < 11; ++i) {
    const bool norm = i == 0 || i == 6, bias = i == 5 || i == 10;
    const float s = static_cast<float>(1.0 / std::sqrt(fan[i]));
    const std::size_t n = static_cast<std::size_t>(sizes[i]);
    *slots[i] = norm ? own.bf16(n, seed + i, 0.01f, 0.5f, 1.0f)
                : bias ? own.bf16(n, seed + i, 0.01f, 0.2f)
                       : own.bf16(n, seed + i, 0.25f * s, 1.75f * s);
  }
  return w;
}

}  // namespace

int main(int argc, char** argv) {
  jkb::Args args{nullptr, 50, 5};
  std::int64_t layers = 24, context = 4096;
  jkb::ArgRules rules;
  rules.extra_usage = " [--layers N] [--context N]";
  const auto flags = [&](const std::string& arg, const char* value) {
    if (arg != "--layers" && arg != "--context") return 0;
    if (value == nullptr) return 0;
    const long long v = std::atoll(value);
    if (v < 1) return -1;
    (arg == "--layers" ? layers : context) = v;
    return 2;
  };
  if (const int rc = jkb::parse_args(argc, argv, args, rules, flags); rc != jkb::kContinue) return rc;
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  jk_runtime_info_t info;
  if (const int rc = jkb::open_device("jetmoe-model-bench", info, jkb::kExitNoDevice, 1); rc != jkb::kContinue)
    return rc;
  std::printf("jetmoe-model-bench: decode and prefill through %lld blocks at context %lld\n%s", (long long)layers,
              (long long)context, jkb::describe(info).c_str());

  std::vector<jkb::ThroughputRow> rows;
  try {
    Owned own;
    cudaStream_t stream;
    CHECK_CUDA(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
    const std::int64_t D = 2048, V = 32000, T = context;
    float* rope = own.zero<float>(static_cast<std::size_t>(jk_fused_rope_table_elems(T, 128)));
    CHECK_CUDA(jk_fused_rope_table(rope, T, 128, 10000.0f));
    jk_model_config_t cfg{};
    jk_layer_config_t& l = cfg.layer;
    l.hidden = D, l.num_experts = 8, l.top_k = 2, l.kv_heads = 16, l.head_dim = 128, l.ffn = 5632, l.eps = 1e-6f;
    l.rope_table = rope, l.rope_max_positions = T, l.path = JK_LAYER_TUNED;
    cfg.vocab = V, cfg.num_layers = layers, cfg.has_embedding = 1, cfg.has_head = 1, cfg.final_eps = 1e-5f;
    std::vector<jk_layer_weights_t> blocks;
    for (std::int64_t b = 0; b < layers; ++b) blocks.push_back(make_block(own, l, 1000 + 100 * std::uint64_t(b)));
    const float es = static_cast<float>(1.0 / std::pow(double(D), 0.25));
    jk_model_weights_t w{};
    w.embedding = own.bf16(static_cast<std::size_t>(V * D), 7, 0.25f * es, 1.75f * es);
    w.layers = blocks.data();
    w.final_norm = own.bf16(static_cast<std::size_t>(D), 8, 0.01f, 0.5f, 1.0f);
    w.lm_head = own.bf16(static_cast<std::size_t>(V * D), 9, 0.25f * es, 1.75f * es);
    CHECK_CUDA(cudaDeviceSynchronize());

    for (const std::int64_t B : {std::int64_t(1), std::int64_t(8)}) {
      const std::int64_t A = l.kv_heads * l.head_dim;
      Owned step_own;
      std::vector<std::uint16_t*> kc, vc;
      for (std::int64_t b = 0; b < layers; ++b) {
        kc.push_back(step_own.bf16(static_cast<std::size_t>(B * T * A), 50 + b, 0.05f, 2.0f));
        vc.push_back(step_own.bf16(static_cast<std::size_t>(B * T * A), 90 + b, 0.05f, 2.0f));
      }
      const std::size_t nb = static_cast<std::size_t>(B);
      std::vector<std::int32_t> ids_h(nb), len_h(nb, std::int32_t(T - 1));
      for (std::int64_t b = 0; b < B; ++b) ids_h[b] = static_cast<std::int32_t>((7919 * (b + 1)) % V);
      std::int32_t* ids = step_own.zero<std::int32_t>(static_cast<std::size_t>(B));
      std::int32_t* len = step_own.zero<std::int32_t>(static_cast<std::size_t>(B));
      CHECK_CUDA(cudaMemcpy(ids, ids_h.data(), ids_h.size() * 4, cudaMemcpyHostToDevice));
      CHECK_CUDA(cudaMemcpy(len, len_h.data(), len_h.size() * 4, cudaMemcpyHostToDevice));
      float* logits = step_own.zero<float>(static_cast<std::size_t>(B * V));
      const std::size_t bytes = jk_model_decode_bytes(&cfg, B, T);
      void* scratch = step_own.zero<char>(bytes);
      CHECK_CUDA(cudaDeviceSynchronize());
      auto step = [&] {
        CHECK_CUDA(jk_model_decode(&w, &cfg, ids, B, kc.data(), vc.data(), len, T, logits, nullptr, scratch, bytes,
                                   stream));
      };
      // The bandwidth bound's bytes: every block's (as bench_layer.cu), the embedding rows, the final
      // norm and the LM head.
      const double Dd = double(D);
      const double total_bytes =
          double(layers) * jkb::decode_block_bytes(l, B, T) + 2.0 * (double(B) * Dd + Dd + double(V) * Dd);
      const double flops = double(B) * (double(layers) * jk_layer_flops_per_token(&l, 2 * T) + 2.0 * double(V) * Dd);
      auto add = [&](const char* op, double ms) {
        rows.push_back(jkb::throughput_row(op, B, T, ms, double(B), flops, total_bytes));
      };
      add("decode.step", jkb::median_ms(step, stream, std::max(args.warmup, 3), args.reps));
      try {  // non-fatal: if capture is refused, say so and keep the other rows
        const auto launch = [&] {
          return jk_model_decode(&w, &cfg, ids, B, kc.data(), vc.data(), len, T, logits, nullptr, scratch, bytes,
                                 stream);
        };
        add("decode.graph", jkb::median_ms_graph(launch, stream, std::max(args.warmup, 3), args.reps));
      } catch (const std::exception& e) {
        std::printf("decode B %lld: CUDA graph capture failed (%s); decode.graph row skipped\n", (long long)B,
                    e.what());
        cudaGetLastError();
      }
      std::printf("decode B %lld: bandwidth-bound bytes %.3f GB per step: bound %.3f ms, %.0f tokens/s\n", (long long)B,
                  total_bytes / 1e9, total_bytes / kHbmPeak * 1e3, double(B) * kHbmPeak / total_bytes);
    }
    {  // Prefill of prompts of different lengths: each alone (B 1), then as one right-padded batch (lens).
      const std::int64_t A = l.kv_heads * l.head_dim, Tp = std::min<std::int64_t>(kPrefillLongest, T);
      std::vector<std::int64_t> lens;
      for (const std::int64_t n : kPrefillLens) lens.push_back(std::max<std::int64_t>(1, n * Tp / kPrefillLongest));
      const std::int64_t n = static_cast<std::int64_t>(lens.size());
      Owned pre_own;
      std::vector<std::uint16_t*> kc, vc;
      for (std::int64_t b = 0; b < layers; ++b) {
        kc.push_back(pre_own.zero<std::uint16_t>(static_cast<std::size_t>(n * Tp * A)));
        vc.push_back(pre_own.zero<std::uint16_t>(static_cast<std::size_t>(n * Tp * A)));
      }
      std::vector<std::int32_t> ids_h(static_cast<std::size_t>(n * Tp));
      for (std::size_t i = 0; i < ids_h.size(); ++i) ids_h[i] = static_cast<std::int32_t>((7919 * (i + 1)) % V);
      std::int32_t* ids = pre_own.zero<std::int32_t>(ids_h.size());
      CHECK_CUDA(cudaMemcpy(ids, ids_h.data(), ids_h.size() * 4, cudaMemcpyHostToDevice));
      float* logits = pre_own.zero<float>(static_cast<std::size_t>(n * V));
      const std::size_t bytes = jk_model_prefill_bytes(&cfg, n, Tp);
      void* scratch = pre_own.zero<char>(bytes);
      CHECK_CUDA(cudaDeviceSynchronize());
      double tokens = 0, flops = 0;  // the prompts' own tokens (padding excluded) and their model FLOPs
      for (const std::int64_t len : lens) {
        tokens += double(len);
        flops += double(len) * double(layers) * jk_layer_flops_per_token(&l, len) + 2.0 * double(V) * double(D);
      }
      auto alone = [&] {
        std::vector<std::uint16_t*> kb(kc.size()), vb(vc.size());
        for (std::int64_t b = 0; b < n; ++b) {
          for (std::size_t i = 0; i < kc.size(); ++i) kb[i] = kc[i] + b * Tp * A, vb[i] = vc[i] + b * Tp * A;
          CHECK_CUDA(jk_model_prefill(&w, &cfg, ids + b * Tp, 1, lens[b], nullptr, kb.data(), vb.data(), Tp,
                                      logits + b * V, nullptr, scratch, bytes, stream));
        }
      };
      auto batched = [&] {
        CHECK_CUDA(jk_model_prefill(&w, &cfg, ids, n, Tp, lens.data(), kc.data(), vc.data(), Tp, logits, nullptr,
                                    scratch, bytes, stream));
      };
      const int reps = std::max(3, args.reps / 5);
      rows.push_back(jkb::throughput_row("prefill.alone", n, Tp, jkb::median_ms(alone, stream, 1, reps), tokens, flops, 0));
      rows.push_back(
          jkb::throughput_row("prefill.batched", n, Tp, jkb::median_ms(batched, stream, 1, reps), tokens, flops, 0));
      std::printf("prefill: %lld prompts of %.0f tokens in all, the longest %lld\n", (long long)n, tokens,
                  (long long)Tp);
    }
    {  // The LM head of training, whole and in chunks: a stage of no blocks from x_in to the loss.
      const std::int64_t Bh = 2, Th = T, N = Bh * Th;
      Owned head_own;
      jk_model_config_t hc = cfg;
      hc.num_layers = 0, hc.has_embedding = 0;
      jk_model_weights_t hw{};
      hw.final_norm = w.final_norm, hw.lm_head = w.lm_head;
      const std::uint16_t* x = head_own.bf16(static_cast<std::size_t>(N * D), 11, 0.05f, 1.5f);
      std::vector<std::int32_t> labels_h(static_cast<std::size_t>(N));
      for (std::size_t i = 0; i < labels_h.size(); ++i) labels_h[i] = static_cast<std::int32_t>((104729 * (i + 3)) % V);
      std::int32_t* labels = head_own.zero<std::int32_t>(labels_h.size());
      CHECK_CUDA(cudaMemcpy(labels, labels_h.data(), labels_h.size() * 4, cudaMemcpyHostToDevice));
      float* loss = head_own.zero<float>(static_cast<std::size_t>(N));
      jk_model_grads_t hg{};
      hg.final_norm = head_own.zero<float>(static_cast<std::size_t>(D));
      hg.lm_head = head_own.zero<float>(static_cast<std::size_t>(V * D));
      const jk_model_batch_t hb{Bh, Th, nullptr, x, labels};
      const float scale = 1.0f / static_cast<float>(N);
      const double flops = 6.0 * double(N) * double(D) * double(V);
      for (const std::int64_t C : {std::int64_t(0), std::int64_t(4096), std::int64_t(1024), std::int64_t(256)}) {
        if (C >= N) continue;
        hc.head_chunk = C;
        std::size_t sb = 0, cb = 0;
        CHECK_CUDA(jk_model_train_bytes(&hc, Bh, Th, &sb, &cb));
        Owned run_own;
        void* saved = run_own.zero<char>(sb);
        void* scratch = run_own.zero<char>(cb);
        auto step = [&] {
          CHECK_CUDA(jk_model_fwd(&hw, &hc, &hb, nullptr, loss, nullptr, nullptr, saved, sb, scratch, cb, stream));
          CHECK_CUDA(jk_model_bwd(&hw, &hc, &hb, nullptr, scale, nullptr, nullptr, &hg, 0.0f, saved, sb, scratch, cb,
                                  stream));
        };
        const std::string op = "head.train.c" + std::to_string(C);
        rows.push_back(jkb::throughput_row(op, Bh, Th, jkb::median_ms(step, stream, std::max(args.warmup, 2), args.reps),
                                           double(N), flops, 0));
        std::printf("%s: %lld tokens, saved %.1f MB + scratch %.1f MB\n", op.c_str(), (long long)N, double(sb) / 1e6,
                    double(cb) / 1e6);
      }
    }
    CHECK_CUDA(cudaStreamDestroy(stream));
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }

  if (!jkb::report_throughput(rows,
                              "Target: decode >= 60% of the bandwidth bound (HBM% column); prefill.batched ahead of "
                              "prefill.alone; head.train.cC within ~1/3 of head.train.c0 (one more head GEMM forward).",
                              args.out))
    return 1;
  return 0;
}
