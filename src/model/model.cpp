#include "model/model.hpp"

#include <string>

#include "core/error.hpp"
#include "core/profiling.hpp"
#include "model/layers.hpp"

namespace jetmoe {

using Policy2 = Kokkos::MDRangePolicy<ExecSpace, Kokkos::Rank<2>>;
using Policy3 = Kokkos::MDRangePolicy<ExecSpace, Kokkos::Rank<3>>;

KvCache::KvCache(const ModelConfig& c, std::int64_t batch, std::int64_t capacity) {
  for (std::int64_t l = 0; l < c.num_layers; ++l) {
    k.emplace_back("kv_cache_k", batch, capacity, c.num_kv_heads, c.head_dim);
    v.emplace_back("kv_cache_v", batch, capacity, c.num_kv_heads, c.head_dim);
  }
}

Model::Model(const ModelConfig& config, ModelWeights weights) : config_(config), weights_(std::move(weights)) {
  config_.validate("model");
}

void Model::forward(const IntView2& ids, KvCache& cache, const View2& logits) {
  const std::int64_t B = std::int64_t(ids.extent(0)), T = std::int64_t(ids.extent(1)), past = cache.length;
  forward(ids, sequence_positions(B, T, past), IntView1(), cache, logits);
}

void Model::forward(const IntView2& ids, const IntView2& positions, const IntView1& key_start, KvCache& cache,
                    const View2& logits) {
  Region region("forward");
  const ModelConfig& c = config_;
  const std::int64_t B = std::int64_t(ids.extent(0)), T = std::int64_t(ids.extent(1)), N = B * T;
  const std::int64_t D = c.hidden_size, H = c.num_kv_heads, d = c.head_dim, A = c.attention_width(),
                     k = c.top_k, Hq = H * k, F = c.ffn_hidden_size, V = c.vocab_size;
  const std::int64_t past = cache.length;
  if (cache.batch() != B || past + T > cache.capacity())
    fail(ErrorKind::Input, "KV cache holds " + std::to_string(cache.batch()) + " sequences x " +
                               std::to_string(cache.capacity()) + " tokens; this step needs " + std::to_string(B) +
                               " x " + std::to_string(past + T));
  JETMOE_ASSERT(logits.extent(0) == std::size_t(N) && logits.extent(1) == std::size_t(V), "forward: logits shape");

  // Token ids must index the embedding.
  IntView1 flat_ids("flat_ids", N);
  if (const std::int64_t bad = flatten_ids(ids, V, flat_ids))
    fail(ErrorKind::Input, std::to_string(bad) + " token id(s) outside the model's vocabulary [0, " +
                               std::to_string(V) + ")");
  View2 x("hidden", N, D), u("normed", N, D), tmp("block_out", N, D);
  View2 gathered("gathered", N * k, D), q_sorted("q_sorted", N * k, A), o_sorted("o_sorted", N * k, A);
  View2 y_sorted("y_sorted", N * k, D), z("z", N * k, 2 * F), hidden_ffn("h", N * k, F), kv("kv", N, 2 * A);
  View4 q("q", B, T, Hq, d), k_new("k_new", B, T, H, d), attn_out("attn_out", B, T, Hq, d);

  embedding_forward(flat_ids, weights_.embed, x);
  View3 rope_cos("rope_cos", B, T, d / 2), rope_sin("rope_sin", B, T, d / 2);
  rope_tables(positions, c.rope_theta, d, rope_cos, rope_sin);

  for (std::size_t layer = 0; layer < weights_.layers.size(); ++layer) {
    const LayerWeights& w = weights_.layers[layer];
    Region layer_region("layer");
    // ---- Mixture of attention heads ----------------------------------------------------------------
    rmsnorm_forward(x, w.input_norm, float(c.block_norm_eps), u);
    route(u, w.moa_router, int(k), moa_routing_);
    const Routing& ra = moa_routing_;
    gather_rows(u, ra.sorted_token, gathered);
    expert_linear(gathered, w.moa_q, ra.offsets, q_sorted);
    {
      // Query head i = slot j * H + h (slot j: the j-th ranked expert).
      const IntView2 pos = ra.position;
      Kokkos::parallel_for(
          "scatter_queries", Policy3({0, 0, 0}, {N, k, A}), KOKKOS_LAMBDA(std::int64_t n, std::int64_t j, std::int64_t a) {
            q(n / T, n % T, j * H + a / d, a % d) = q_sorted(pos(n, j), a);
          });
    }
    linear(u, w.kv_proj, kv);
    {
      const View4 kc = cache.k[layer], vc = cache.v[layer];
      Kokkos::parallel_for(
          "split_kv", Policy2({0, 0}, {N, A}), KOKKOS_LAMBDA(std::int64_t n, std::int64_t a) {
            k_new(n / T, n % T, a / d, a % d) = kv(n, a);
            vc(n / T, past + n % T, a / d, a % d) = kv(n, A + a);
          });
      rope_forward(q, rope_cos, rope_sin);
      rope_forward(k_new, rope_cos, rope_sin);
      Kokkos::parallel_for(
          "append_k", Policy2({0, 0}, {N, A}), KOKKOS_LAMBDA(std::int64_t n, std::int64_t a) {
            kc(n / T, past + n % T, a / d, a % d) = k_new(n / T, n % T, a / d, a % d);
          });
      attention_forward(q, kc, vc, past, key_start, attn_out);
    }
    {
      const IntView1 tok = ra.sorted_token, slot = ra.sorted_slot;
      Kokkos::parallel_for(
          "gather_attention", Policy2({0, 0}, {N * k, A}), KOKKOS_LAMBDA(std::int64_t r, std::int64_t a) {
            const std::int64_t n = tok(r);
            o_sorted(r, a) = attn_out(n / T, n % T, slot(r) * H + a / d, a % d);
          });
    }
    expert_linear(o_sorted, w.moa_o, ra.offsets, y_sorted);
    combine_experts(y_sorted, ra, w.moa_bias, tmp);
    add_inplace(x, tmp);

    // ---- Mixture of experts MLP ---------------------------------------------------------------------
    rmsnorm_forward(x, w.post_norm, float(c.block_norm_eps), u);
    route(u, w.moe_router, int(k), moe_routing_);
    const Routing& rm = moe_routing_;
    gather_rows(u, rm.sorted_token, gathered);
    expert_linear(gathered, w.moe_in, rm.offsets, z);
    swiglu_forward(z, hidden_ffn);
    expert_linear(hidden_ffn, w.moe_out, rm.offsets, y_sorted);
    combine_experts(y_sorted, rm, w.moe_bias, tmp);
    add_inplace(x, tmp);
  }
  cache.length = past + T;

  rmsnorm_forward(x, weights_.final_norm, float(c.rms_norm_eps), u);
  Region head("lm_head");
  linear(u, weights_.lm_head, logits);
}

}  // namespace jetmoe
