#include "model/model.hpp"

#include <string>

#include "core/error.hpp"
#include "core/profiling.hpp"
#include "model/layers.hpp"

namespace jetmoe {

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

void Model::reserve(std::int64_t B, std::int64_t T) {
  if (ws_.batch == B && ws_.tokens == T) return;
  const ModelConfig& c = config_;
  const std::int64_t N = B * T, D = c.hidden_size, H = c.num_kv_heads, d = c.head_dim, A = c.attention_width(),
                     k = c.top_k, F = c.ffn_hidden_size;
  ws_ = Workspace();  // the old shape's buffers go first
  const auto raw = [](const char* label) { return Kokkos::view_alloc(std::string(label), Kokkos::WithoutInitializing); };
  ws_.flat_ids = IntView1(raw("flat_ids"), N);
  ws_.x = View2(raw("hidden"), N, D), ws_.u = View2(raw("normed"), N, D), ws_.tmp = View2(raw("block_out"), N, D);
  ws_.gathered = View2(raw("gathered"), N * k, D), ws_.q_sorted = View2(raw("q_sorted"), N * k, A);
  ws_.o_sorted = View2(raw("o_sorted"), N * k, A), ws_.y_sorted = View2(raw("y_sorted"), N * k, D);
  ws_.z = View2(raw("z"), N * k, 2 * F), ws_.hidden_ffn = View2(raw("h"), N * k, F);
  ws_.rope_cos = View3(raw("rope_cos"), B, T, d / 2), ws_.rope_sin = View3(raw("rope_sin"), B, T, d / 2);
  ws_.q = View4(raw("q"), B, T, H * k, d), ws_.attn_out = View4(raw("attn_out"), B, T, H * k, d);
  ws_.batch = B, ws_.tokens = T;
}

void Model::forward(const IntView2& ids, const IntView2& positions, const IntView1& key_start, KvCache& cache,
                    const View2& logits) {
  Region region("forward");
  const ModelConfig& c = config_;
  const std::int64_t B = std::int64_t(ids.extent(0)), T = std::int64_t(ids.extent(1)), N = B * T;
  const std::int64_t D = c.hidden_size, H = c.num_kv_heads, A = c.attention_width(), k = c.top_k, V = c.vocab_size;
  const std::int64_t past = cache.length, capacity = cache.capacity();
  if (cache.batch() != B || past + T > capacity)
    fail(ErrorKind::Input, "KV cache holds " + std::to_string(cache.batch()) + " sequences x " +
                               std::to_string(capacity) + " tokens; this step needs " + std::to_string(B) + " x " +
                               std::to_string(past + T));
  const bool last_only = std::int64_t(logits.extent(0)) == B && T > 1;
  JETMOE_ASSERT((last_only || logits.extent(0) == std::size_t(N)) && logits.extent(1) == std::size_t(V),
                "forward: logits shape");
  reserve(B, T);
  const Workspace& ws = ws_;

  // Token ids must index the embedding.
  if (const std::int64_t bad = flatten_ids(ids, V, ws.flat_ids))
    fail(ErrorKind::Input, std::to_string(bad) + " token id(s) outside the model's vocabulary [0, " +
                               std::to_string(V) + ")");
  const View2 x = ws.x, u = ws.u, tmp = ws.tmp, gathered = ws.gathered, q_sorted = ws.q_sorted;
  const View2 o_sorted = ws.o_sorted, y_sorted = ws.y_sorted, z = ws.z, hidden_ffn = ws.hidden_ffn;
  const View4 q = ws.q, attn_out = ws.attn_out;

  embedding_forward(ws.flat_ids, weights_.embed, x);
  rope_tables(positions, c.rope_theta, c.head_dim, ws.rope_cos, ws.rope_sin);

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
      // Query heads j*H .. j*H + H-1 of token n (slot j: the j-th ranked expert) are one contiguous
      // row of A floats of q, and so is expert slot j's output row.
      const IntView2 pos = ra.position;
      Kokkos::parallel_for(
          "scatter_queries", Range(0, N * k), KOKKOS_LAMBDA(std::int64_t r) {
            const std::int64_t n = r / k, j = r % k;
            const float* const src = &q_sorted(pos(n, j), 0);
            float* const dst = &q(n / T, n % T, j * H, 0);
            for (std::int64_t a = 0; a < A; ++a) dst[a] = src[a];
          });
    }
    {
      // K and V straight into the cache: the rows of sequence b at positions past.. are one
      // contiguous [T, A] block of each cache tensor; kv_proj's K rows, then its V rows.
      const View4 kc = cache.k[layer], vc = cache.v[layer];
      for (std::int64_t b = 0; b < B; ++b) {
        const View2 ub = rows(u, b * T, (b + 1) * T);
        const std::size_t at = std::size_t((b * capacity + past) * A);
        linear(ub, rows(w.kv_proj, 0, A), View2(kc.data() + at, T, A));
        linear(ub, rows(w.kv_proj, A, 2 * A), View2(vc.data() + at, T, A));
      }
      rope_forward(q, ws.rope_cos, ws.rope_sin);
      rope_forward(kc, ws.rope_cos, ws.rope_sin, past);
      attention_forward(q, kc, vc, past, key_start, attn_out);
    }
    {
      const IntView1 tok = ra.sorted_token, slot = ra.sorted_slot;
      Kokkos::parallel_for(
          "gather_attention", Range(0, N * k), KOKKOS_LAMBDA(std::int64_t r) {
            const std::int64_t n = tok(r);
            const float* const src = &attn_out(n / T, n % T, slot(r) * H, 0);
            float* const dst = &o_sorted(r, 0);
            for (std::int64_t a = 0; a < A; ++a) dst[a] = src[a];
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

  View2 head_in = x;
  if (last_only) {  // the last position of each sequence: rows of tmp
    head_in = rows(tmp, 0, B);
    Kokkos::parallel_for(
        "last_positions", Kokkos::MDRangePolicy<ExecSpace, Kokkos::Rank<2>>({0, 0}, {B, D}),
        KOKKOS_LAMBDA(std::int64_t b, std::int64_t i) { head_in(b, i) = x((b + 1) * T - 1, i); });
  }
  const View2 normed = rows(u, 0, std::int64_t(head_in.extent(0)));
  rmsnorm_forward(head_in, weights_.final_norm, float(c.rms_norm_eps), normed);
  Region head("lm_head");
  linear(normed, weights_.lm_head, logits);
}

}  // namespace jetmoe
