#pragma once
// CPU double-precision reference of a JetMoE pipeline stage (jetmoe/model.h): embedding, blocks
// (layer.hpp), final RMSNorm, LM head, cross-entropy, and the backward of
//     ce_scale * sum_t loss_t + sum_l (cs * switch_l + cz * z_l) + sum(out * dout)   (no head).
// Composed from layer.hpp, fused.hpp (RMSNorm, cross-entropy) and embedding.hpp. Header-only, plain
// C++17, no CUDA: proven by tests/kernel_reference/test_model.cpp against HF JetMoeForCausalLM
// fixtures and finite differences, and used by kernels/tests/test_model.cu for the device stage.
//
// Numerics as layer.hpp: LayerNumerics::exact is exact maths; hf_bf16 applies HF's bf16 roundings in
// the forward (blocks, final norm, logits = bf16(h W^T)); the backward is exact maths at the saved
// forward values. HF computes the loss on logits.float(): the cross-entropy is exact on the (rounded)
// logits in both modes.
#include "embedding.hpp"
#include "layer.hpp"

#include <cstdint>
#include <vector>

namespace jkref {

struct ModelShape {
  LayerShape layer;  // B, T, block sizes (D, E, k, Hkv, d, F), block eps, rope theta
  std::int64_t V = 0, L = 0;
  bool has_embedding = true, has_head = true;
  bool tied = true;  // the head is the embedding (lm_head unused)
  double final_eps = 1e-5;
};

struct ModelWeights {
  Vec embedding;                     // [V, D]
  std::vector<LayerWeights> layers;  // [L]
  Vec final_norm;                    // [D]
  Vec lm_head;                       // [V, D] (untied only)
  const Vec& head(const ModelShape& s) const { return s.tied ? embedding : lm_head; }
};

struct ModelForward {
  std::vector<Vec> x;                 // [L + 1] block inputs and the stage output, [N, D]
  std::vector<LayerForward> layers;   // [L]
  Vec h, rstd;                        // final norm output [N, D] and rstd [N] (head)
  Vec logits;                         // [N, V] (head)
  CrossEntropyResult ce;              // loss_rows, lse (head)
};

// ids [N] (embedding) or x_in [N, D] (no embedding); labels [N] (head, -100 ignored).
// force_ids: per layer {moa ids, moe ids} to use instead of the top-k (may be null; see layer_forward).
inline ModelForward model_forward(const ModelShape& s, const ModelWeights& w, const std::vector<std::int32_t>& ids,
                                  const Vec& x_in, const std::vector<std::int32_t>& labels, LayerNumerics num,
                                  const std::vector<std::pair<IVec, IVec>>* force_ids = nullptr) {
  const std::int64_t N = s.layer.N(), D = s.layer.D;
  ModelForward f;
  Vec x0;
  if (s.has_embedding)
    embedding_fwd(w.embedding, ids, s.V, D, x0);
  else
    x0 = x_in;
  f.x.push_back(x0);
  for (std::int64_t l = 0; l < s.L; ++l) {
    const IVec* fa = force_ids ? &(*force_ids)[static_cast<std::size_t>(l)].first : nullptr;
    const IVec* fe = force_ids ? &(*force_ids)[static_cast<std::size_t>(l)].second : nullptr;
    f.layers.push_back(layer_forward(s.layer, w.layers[static_cast<std::size_t>(l)], f.x.back(), num, fa, fe));
    f.x.push_back(f.layers.back().out);
  }
  if (!s.has_head) return f;
  const bool bf16 = num == LayerNumerics::hf_bf16;
  f.h = rmsnorm_forward(f.x.back(), w.final_norm, N, D, s.final_eps, bf16);
  f.rstd = rmsnorm_rstd(f.x.back(), N, D, s.final_eps);
  const IVec one_expert = {0, static_cast<int>(N)};
  f.logits = layer_grouped_linear(f.h, w.head(s), one_expert, N, s.V, D);
  layer_round_all(f.logits, num);
  f.ce = cross_entropy_forward(f.logits, labels, N, s.V);
  return f;
}

struct ModelGrads {
  Vec embedding;                     // [V, D] (embedding; tied: head + embedding)
  std::vector<LayerWeights> layers;  // [L]
  Vec final_norm, lm_head;           // head (lm_head untied only)
  Vec dx_in;                         // [N, D] (no embedding)
};

// Gradient of the objective above (exact maths at f's values); cs, cz the aux coefficients. With
// row_weights ([N]), sum_t row_weights[t] loss_t in place of ce_scale * sum_t loss_t.
inline ModelGrads model_backward(const ModelShape& s, const ModelWeights& w, const ModelForward& f,
                                 const std::vector<std::int32_t>& ids, const std::vector<std::int32_t>& labels,
                                 const Vec& dout, double ce_scale, double cs, double cz, LayerNumerics num,
                                 const Vec* row_weights = nullptr) {
  const std::int64_t N = s.layer.N(), D = s.layer.D;
  const bool bf16 = num == LayerNumerics::hf_bf16;
  ModelGrads g;
  Vec dx;
  if (s.has_head) {
    Vec dlogits = cross_entropy_backward(f.logits, labels, N, s.V, row_weights ? 1.0 : ce_scale);
    if (row_weights)
      for (std::int64_t t = 0; t < N; ++t)
        for (std::int64_t c = 0; c < s.V; ++c) dlogits[t * s.V + c] *= (*row_weights)[static_cast<std::size_t>(t)];
    const IVec one_expert = {0, static_cast<int>(N)};
    Vec dhead = layer_grouped_linear_bwd_weight(dlogits, f.h, one_expert, s.V, D);
    const Vec dh = layer_grouped_linear_bwd_data(dlogits, w.head(s), one_expert, N, s.V, D);
    rmsnorm_backward(f.x.back(), w.final_norm, f.rstd, dh, N, D, bf16, &dx, &g.final_norm);
    if (s.tied)
      g.embedding = dhead;
    else
      g.lm_head = dhead;
  } else {
    dx = dout;
  }
  g.layers.resize(static_cast<std::size_t>(s.L));
  for (std::int64_t l = s.L - 1; l >= 0; --l) {
    const std::size_t i = static_cast<std::size_t>(l);
    LayerGrads lg = layer_backward(s.layer, w.layers[i], f.x[i], f.layers[i], dx, cs, cz, num);
    g.layers[i] = lg.dw;
    dx = lg.dx;
  }
  if (s.has_embedding) {
    const bool accumulate = s.has_head && s.tied;
    if (!accumulate) g.embedding.assign(static_cast<std::size_t>(s.V * D), 0.0);
    embedding_bwd(dx, ids, s.V, D, accumulate ? 1.0 : 0.0, true, g.embedding);
  } else {
    g.dx_in = dx;
  }
  return g;
}

// The scalar model_backward differentiates, at exact maths (for finite differences).
inline double model_objective(const ModelShape& s, const ModelWeights& w, const std::vector<std::int32_t>& ids,
                              const Vec& x_in, const std::vector<std::int32_t>& labels, const Vec& dout, double ce_scale,
                              double cs, double cz) {
  const ModelForward f = model_forward(s, w, ids, x_in, labels, LayerNumerics::exact);
  double L = 0;
  for (const LayerForward& lf : f.layers)
    L += cs * (lf.moa.aux.switch_loss + lf.moe.aux.switch_loss) + cz * (lf.moa.aux.z_loss + lf.moe.aux.z_loss);
  if (s.has_head)
    for (double v : f.ce.loss_rows) L += ce_scale * v;
  else
    for (std::size_t i = 0; i < dout.size(); ++i) L += f.x.back()[i] * dout[i];
  return L;
}

}  // namespace jkref
