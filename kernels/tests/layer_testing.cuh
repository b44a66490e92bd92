#pragma once
// Helpers shared by the GPU tests that run whole JetMoE blocks (test_layer.cu, test_model.cu): bf16 <->
// double conversions, the per-row relative comparison, random block weights, device copies of a block's
// weights and gradients, the RoPE table, and the routing check that allows the device's expert choices
// to differ from the reference's only at near ties. Host code only (included after harness.cuh).
#include "harness.cuh"
#include "reference/layer.hpp"

#include <memory>

namespace jkl {

using jkref::IVec;
using jkref::LayerShape;
using jkref::LayerWeights;
using jkref::Vec;
using jkt::GuardedBuffer;

inline Vec widen(const std::vector<std::uint16_t>& b) {
  Vec v(b.size());
  for (std::size_t i = 0; i < b.size(); ++i) v[i] = jkt::bf16_value(b[i]);
  return v;
}
inline Vec widen(const std::vector<float>& f) { return Vec(f.begin(), f.end()); }

inline std::vector<std::uint16_t> to_bits(const Vec& v) {
  std::vector<std::uint16_t> b(v.size());
  for (std::size_t i = 0; i < v.size(); ++i) b[i] = jkt::round_to_bf16(v[i]);
  return b;
}

struct Compare {
  double rel_rms = 0, max_rel = 0;  // worst over rows (row mode) or whole tensor
  bool finite = true;
};

// rows > 0: per row of `cols`, the worst row; rows == 0: whole tensor.
inline Compare compare(const Vec& got, const Vec& ref, std::int64_t rows, std::int64_t cols,
                const std::vector<bool>* skip_row = nullptr) {
  Compare c;
  const std::int64_t R = rows > 0 ? rows : 1, C = rows > 0 ? cols : static_cast<std::int64_t>(ref.size());
  for (std::int64_t r = 0; r < R; ++r) {
    if (skip_row && (*skip_row)[r]) continue;
    double se = 0, sr = 0, mx = 0;
    for (std::int64_t i = 0; i < C; ++i) {
      const double g = got[r * C + i], e = ref[r * C + i];
      if (!std::isfinite(g)) c.finite = false;
      se += (g - e) * (g - e);
      sr += e * e;
      mx = std::max(mx, std::fabs(g - e));
    }
    const double rms = std::sqrt(sr / double(C)) + 1e-30;
    c.rel_rms = std::max(c.rel_rms, std::sqrt(se / double(C)) / rms);
    c.max_rel = std::max(c.max_rel, mx / rms);
  }
  return c;
}

// Random bf16 weights: projections with magnitude U(0.25, 1.75) / sqrt(fan_in) (outputs of order 1),
// norms U(0.5, 1.5), biases U(0.01, 0.2); random signs, never zero. Values are bf16 (exact in double).
inline LayerWeights random_layer_weights(const LayerShape& s, jkt::Inputs& in) {
  LayerWeights w;
  const auto sizes = jkref::layer_weight_sizes(s);
  const double fan[11] = {
      1, double(s.D), double(s.D), double(s.D), double(s.A()), 1, 1, double(s.D), double(s.D), double(s.F), 1};
  const auto all = w.all();
  for (int i = 0; i < 11; ++i) {
    all[i]->resize(static_cast<std::size_t>(sizes[i]));
    for (auto& v : *all[i]) {
      float x;
      if (i == 0 || i == 6)
        x = 1.0f + in.nonzero(0.01f, 0.5f);
      else if (i == 5 || i == 10)
        x = in.nonzero(0.01f, 0.2f);
      else
        x = in.nonzero(0.25f, 1.75f) / static_cast<float>(std::sqrt(fan[i]));
      v = jkt::bf16_value(jkt::expected_f32_to_bf16(x));
    }
  }
  return w;
}

// Device copies of the weights (bf16, guarded) and the fp32 gradients (guarded).
struct DeviceLayer {
  std::vector<std::unique_ptr<GuardedBuffer<std::uint16_t>>> w;
  std::vector<std::unique_ptr<GuardedBuffer<float>>> g;
  jk_layer_weights_t wt{};
  jk_layer_grads_t gt{};
  DeviceLayer(const LayerShape& s, const LayerWeights& host) {
    const auto sizes = jkref::layer_weight_sizes(s);
    const auto all = host.all();
    for (int i = 0; i < 11; ++i) {
      w.emplace_back(new GuardedBuffer<std::uint16_t>(static_cast<std::size_t>(sizes[i])));
      w.back()->upload(to_bits(*all[i]));
      g.emplace_back(new GuardedBuffer<float>(static_cast<std::size_t>(sizes[i])));
    }
    const std::uint16_t** wp[11] = {&wt.input_norm, &wt.moa_router, &wt.moa_q,  &wt.kv_proj, &wt.moa_o,   &wt.moa_bias,
                                    &wt.post_norm,  &wt.moe_router, &wt.moe_in, &wt.moe_out, &wt.moe_bias};
    float** gp[11] = {&gt.input_norm, &gt.moa_router, &gt.moa_q,  &gt.kv_proj, &gt.moa_o,   &gt.moa_bias,
                      &gt.post_norm,  &gt.moe_router, &gt.moe_in, &gt.moe_out, &gt.moe_bias};
    for (int i = 0; i < 11; ++i) {
      *wp[i] = w[i]->data();
      *gp[i] = g[i]->data();
    }
  }
  bool guards_intact() const {
    for (const auto& b : w)
      if (!b->guards_intact()) return false;
    for (const auto& b : g)
      if (!b->guards_intact()) return false;
    return true;
  }
};

struct DeviceMem {
  void* p = nullptr;
  explicit DeviceMem(std::size_t bytes) { CHECK_CUDA(cudaMalloc(&p, std::max<std::size_t>(bytes, 256))); }
  ~DeviceMem() { cudaFree(p); }
  DeviceMem(const DeviceMem&) = delete;
  DeviceMem& operator=(const DeviceMem&) = delete;
};

struct RopeTable {
  std::unique_ptr<DeviceMem> mem;
  std::int64_t max_positions = 0;
  RopeTable(std::int64_t max_pos, std::int64_t d) : max_positions(max_pos) {
    mem.reset(new DeviceMem(static_cast<std::size_t>(jk_fused_rope_table_elems(max_pos, d)) * sizeof(float)));
    CHECK_CUDA(jk_fused_rope_table(static_cast<float*>(mem->p), max_pos, d, 10000.0f));
  }
};

// The block configuration of a LayerShape (eps 1e-6, theta 10000).
inline jk_layer_config_t layer_config(const LayerShape& s, const RopeTable& rope, jk_layer_path_t path, float cs,
                                      float cz) {
  jk_layer_config_t c{};
  c.hidden = s.D, c.num_experts = s.E, c.top_k = s.k, c.kv_heads = s.Hkv, c.head_dim = s.d, c.ffn = s.F;
  c.eps = 1e-6f;
  c.aux_switch_coef = cs;
  c.aux_z_coef = cz;
  c.rope_table = static_cast<const float*>(rope.mem->p);
  c.rope_max_positions = rope.max_positions;
  c.path = path;
  return c;
}

// k distinct experts in [0, E) per token.
inline bool ids_valid(const IVec& ids, std::int64_t N, int E, int k) {
  for (std::int64_t t = 0; t < N; ++t)
    for (int j = 0; j < k; ++j) {
      const int e = ids[t * k + j];
      if (e < 0 || e >= E) return false;
      for (int m = 0; m < j; ++m)
        if (ids[t * k + m] == e) return false;
    }
  return true;
}

// Tokens whose top-k of the reference logits is ambiguous: gap between the k-th and (k+1)-th logit
// <= 5e-2 of the row's logit RMS.
inline bool near_tie(const Vec& logits, std::int64_t t, int E, int k) {
  std::vector<double> row(logits.begin() + t * E, logits.begin() + (t + 1) * E);
  double sr = 0;
  for (double v : row) sr += v * v;
  const double rms = std::sqrt(sr / E);
  std::sort(row.begin(), row.end(), std::greater<double>());
  if (k >= E) return false;
  return row[k - 1] - row[k] <= 5e-2 * rms;
}

// Checks that the device's choices equal the reference's top-k except at near ties (as sets and in order).
inline bool routing_ok(const IVec& dev, const Vec& ref_logits, std::int64_t N, int E, int k, int* flips, std::string* why) {
  const jkref::TopK ref = jkref::topk_gates(ref_logits, N, E, k);
  for (std::int64_t t = 0; t < N; ++t) {
    bool same = true;
    for (int j = 0; j < k; ++j) same = same && dev[t * k + j] == ref.ids[t * k + j];
    if (same) continue;
    ++*flips;
    // an order swap of the chosen pair (equal bf16 logits resolved differently) or a near tie at the k-th
    bool near = near_tie(ref_logits, t, E, k);
    for (int j = 0; j + 1 < k && !near; ++j) {
      const double a = ref_logits[t * E + ref.ids[t * k + j]], b = ref_logits[t * E + ref.ids[t * k + j + 1]];
      near = std::fabs(a - b) <= 1e-12 + 5e-2 * std::fabs(a);
    }
    if (!near) {
      *why = jkt::format("token %" PRId64 " routed differently without a near tie", t);
      return false;
    }
  }
  return true;
}

}  // namespace jkl
