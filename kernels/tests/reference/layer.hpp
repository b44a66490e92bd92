#pragma once
// CPU double-precision reference of one JetMoE block (jetmoe/layer.h), composed from the families'
// references: router.hpp (logits, top-k, plan, gather, combine and their backward, aux losses),
// attention.hpp (MoA attention forward/backward with tiled K/V), fused.hpp (RMSNorm, RoPE). The expert
// and K/V linears are plain loops here (written before grouped_gemm.hpp and fused.hpp could be included
// together; both now take bf16_round from rounding.hpp). Header-only, plain C++17, no CUDA: compiled by g++ in
// tests/kernel_reference/test_layer.cpp (proven there against HF JetMoeDecoderLayer fixtures and by
// finite differences) and by nvcc inside kernels/tests/test_layer.cu.
//
// Mirrors src/train/network.cpp block_forward / block_backward. Layouts (row-major, N = B T tokens,
// NK = N k grouped rows, A = H_kv d, Hq = k H_kv): x, out, dx [N, D]; q, attn [N, Hq, d] (query head
// i = slot j * H_kv + h); k, v [N, H_kv, d]; grouped rows [NK, *]; weights as jetmoe/layer.h.
//
// Numerics: LayerNumerics::exact is the exact maths (for the fp32 HF fixture and finite differences).
// LayerNumerics::hf_bf16 applies HF's bf16 roundings at the points where HF stores a bf16 tensor
// (RMSNorm, router logits and gates, every linear's output, RoPE sequence, attention output, the gated
// combine, residual adds, SwiGLU): the reference the bf16 GPU forward is compared with. Attention is
// exact maths rounded once to bf16 (as the kernels, in fp32; HF eager also rounds the scores Q K^T and
// the probabilities to bf16, which neither does). With that attention it reproduces HF's bf16 layer bit
// for bit on the fixture bf16_fwd. The backward is always exact maths evaluated at the (possibly
// rounded) saved forward values.
#include "attention.hpp"
#include "fused.hpp"
#include "router.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

namespace jkref {

// Same sequence as lcg_values in scripts/oracle/kernel_fixtures/layer.py: multiples of (hi - lo) / 1024.
inline std::vector<double> layer_lcg_values(std::uint64_t seed, std::int64_t n, double lo, double hi) {
  std::vector<double> out(static_cast<std::size_t>(n));
  std::uint64_t state = seed;
  for (auto& v : out) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    const double m = static_cast<double>((state >> 33) % 1024);
    v = lo + (hi - lo) * m / 1024.0;
  }
  return out;
}

struct LayerShape {
  std::int64_t B = 1, T = 1, D = 0, E = 0, k = 2, Hkv = 0, d = 0, F = 0;
  double eps = 1e-6;
  float theta = 10000.0f;
  std::int64_t N() const { return B * T; }
  std::int64_t NK() const { return B * T * k; }
  std::int64_t A() const { return Hkv * d; }
  std::int64_t Hq() const { return k * Hkv; }
};

struct LayerWeights {
  Vec input_norm;  // [D]
  Vec moa_router;  // [E, D]
  Vec moa_q;       // [E, A, D]
  Vec kv_proj;     // [2A, D]
  Vec moa_o;       // [E, D, A]
  Vec moa_bias;    // [D]
  Vec post_norm;   // [D]
  Vec moe_router;  // [E, D]
  Vec moe_in;      // [E, 2F, D]
  Vec moe_out;     // [E, D, F]
  Vec moe_bias;    // [D]
  std::vector<Vec*> all() {
    return {&input_norm, &moa_router, &moa_q,  &kv_proj, &moa_o,   &moa_bias,
            &post_norm,  &moe_router, &moe_in, &moe_out, &moe_bias};
  }
  std::vector<const Vec*> all() const {
    return {&input_norm, &moa_router, &moa_q,  &kv_proj, &moa_o,   &moa_bias,
            &post_norm,  &moe_router, &moe_in, &moe_out, &moe_bias};
  }
};

inline const char* const* layer_weight_names() {
  static const char* const names[] = {"input_norm", "moa_router", "moa_q",  "kv_proj", "moa_o",   "moa_bias",
                                      "post_norm",  "moe_router", "moe_in", "moe_out", "moe_bias"};
  return names;
}

inline std::vector<std::int64_t> layer_weight_sizes(const LayerShape& s) {
  const std::int64_t D = s.D, E = s.E, A = s.A(), F = s.F;
  return {D, E * D, E * A * D, 2 * A * D, E * D * A, D, D, E * D, E * 2 * F * D, E * D * F, D};
}

// Random weights for the CPU checks (tests/kernel_reference): projections of magnitude U(0.2, 0.7) with
// random signs (biases half that), norms U(0.6, 1.4); never zero.
inline LayerWeights layer_random_weights(const LayerShape& s, std::mt19937_64& gen) {
  LayerWeights w;
  const auto sizes = layer_weight_sizes(s);
  const auto all = w.all();
  std::uniform_real_distribution<double> mag(0.2, 0.7), norm(0.6, 1.4);
  for (int i = 0; i < 11; ++i) {
    all[i]->resize(static_cast<std::size_t>(sizes[i]));
    const bool is_norm = (i == 0 || i == 6);
    for (auto& v : *all[i])
      v = is_norm ? norm(gen) : ((gen() & 1) ? 1 : -1) * mag(gen) * (i == 5 || i == 10 ? 0.5 : 1.0);
  }
  return w;
}

enum class LayerNumerics { exact, hf_bf16 };

// ---- helpers -----------------------------------------------------------------------------------------

// Runs body(i) for i in [0, n), on several threads when the work is large (the GPU test's
// JetMoE-sized reference); each i is independent, so the result does not depend on the threading.
inline void layer_parallel_for(std::int64_t n, double work, const std::function<void(std::int64_t)>& body) {
  unsigned threads = std::thread::hardware_concurrency();
  if (threads == 0) threads = 1;
  threads = std::min<unsigned>(threads, 32);
  if (work < 2e7 || threads == 1 || n < 2) {
    for (std::int64_t i = 0; i < n; ++i) body(i);
    return;
  }
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t)
    pool.emplace_back([&, t] {
      for (std::int64_t i = t; i < n; i += threads) body(i);
    });
  for (auto& th : pool) th.join();
}

inline std::int64_t layer_expert_of(const IVec& offsets, std::int64_t r) {
  const std::int64_t E = static_cast<std::int64_t>(offsets.size()) - 1;
  for (std::int64_t e = 0; e < E; ++e)
    if (r >= offsets[e] && r < offsets[e + 1]) return e;
  throw std::logic_error("jkref layer: row outside the plan");
}

// out[r, i] = sum_c in[r, c] W[e(r), i, c]   (in [rows, K], W [E, n, K], out [rows, n]).
inline Vec layer_grouped_linear(const Vec& in, const Vec& W, const IVec& offsets, std::int64_t rows, std::int64_t n,
                                std::int64_t K) {
  Vec out(static_cast<std::size_t>(rows * n));
  layer_parallel_for(rows, double(rows) * n * K, [&](std::int64_t r) {
    const double* w = W.data() + layer_expert_of(offsets, r) * n * K;
    const double* x = in.data() + r * K;
    for (std::int64_t i = 0; i < n; ++i) {
      double s = 0;
      for (std::int64_t c = 0; c < K; ++c) s += x[c] * w[i * K + c];
      out[r * n + i] = s;
    }
  });
  return out;
}

// din[r, c] = sum_i dout[r, i] W[e(r), i, c].
inline Vec layer_grouped_linear_bwd_data(const Vec& dout, const Vec& W, const IVec& offsets, std::int64_t rows,
                                         std::int64_t n, std::int64_t K) {
  Vec din(static_cast<std::size_t>(rows * K), 0.0);
  layer_parallel_for(rows, double(rows) * n * K, [&](std::int64_t r) {
    const double* w = W.data() + layer_expert_of(offsets, r) * n * K;
    double* o = din.data() + r * K;
    for (std::int64_t i = 0; i < n; ++i) {
      const double g = dout[r * n + i];
      for (std::int64_t c = 0; c < K; ++c) o[c] += g * w[i * K + c];
    }
  });
  return din;
}

// dW[e, i, c] = sum_{r of e} dout[r, i] in[r, c]   ([E, n, K], written).
inline Vec layer_grouped_linear_bwd_weight(const Vec& dout, const Vec& in, const IVec& offsets, std::int64_t n,
                                           std::int64_t K) {
  const std::int64_t E = static_cast<std::int64_t>(offsets.size()) - 1;
  Vec dW(static_cast<std::size_t>(E * n * K), 0.0);
  layer_parallel_for(E * n, double(offsets.back()) * n * K, [&](std::int64_t ei) {
    const std::int64_t e = ei / n, i = ei % n;
    double* o = dW.data() + ei * K;
    for (std::int64_t r = offsets[e]; r < offsets[e + 1]; ++r) {
      const double g = dout[r * n + i];
      for (std::int64_t c = 0; c < K; ++c) o[c] += g * in[r * K + c];
    }
  });
  return dW;
}

inline void layer_round_all(Vec& v, LayerNumerics num) {
  if (num == LayerNumerics::hf_bf16)
    for (auto& x : v) x = round_bf16(x);
}

// Gates of given ids: softmax over the chosen logits (the router's rule for forced choices).
inline Vec layer_gates_for_ids(const Vec& logits, const IVec& ids, std::int64_t N, int E, int k) {
  Vec g(static_cast<std::size_t>(N * k));
  for (std::int64_t t = 0; t < N; ++t) {
    double m = -INFINITY;
    for (int j = 0; j < k; ++j) m = std::max(m, logits[t * E + ids[t * k + j]]);
    double s = 0;
    for (int j = 0; j < k; ++j) s += std::exp(logits[t * E + ids[t * k + j]] - m);
    for (int j = 0; j < k; ++j) g[t * k + j] = std::exp(logits[t * E + ids[t * k + j]] - m) / s;
  }
  return g;
}

// Row (t k + j) of a token tensor [N, k C] viewed as [N k, C] for each grouped row.
inline IVec layer_token_slot_rows(const Plan& p, std::int64_t NK, int k) {
  IVec flat(static_cast<std::size_t>(NK));
  for (std::int64_t r = 0; r < NK; ++r) flat[r] = p.sorted_token[r] * k + p.sorted_slot[r];
  return flat;
}

// ---- forward ------------------------------------------------------------------------------------------

struct LayerRouting {
  Vec logits;      // [N, E]
  IVec ids;        // [N, k]
  Vec gates;       // [N, k] softmax over the chosen logits (exact)
  Vec gates_used;  // [N, k] the gates the combine multiplies by (bf16(fp32(g)) in hf_bf16, else = gates)
  Plan plan;
  IVec flat;    // [NK] sorted_token * k + sorted_slot
  AuxLoss aux;  // switch, z (unscaled)
};

struct LayerForward {
  Vec u1, rstd1;  // [N, D], [N]
  LayerRouting moa;
  Vec q, k, v;    // after RoPE: [N, Hq, d], [N, H_kv, d] x2
  Vec attn, lse;  // [N, Hq, d], [B, Hq, T]
  Vec y_attn;     // [NK, D]
  Vec x_mid;      // [N, D]
  Vec u2, rstd2;
  LayerRouting moe;
  Vec z, h, y_mlp;  // [NK, 2F], [NK, F], [NK, D]
  Vec out;          // [N, D]
};

inline std::vector<std::int32_t> layer_positions(const LayerShape& s) {
  std::vector<std::int32_t> pos(static_cast<std::size_t>(s.N()));
  for (std::int64_t i = 0; i < s.N(); ++i) pos[i] = static_cast<std::int32_t>(i % s.T);
  return pos;
}

inline LayerRouting layer_route(const Vec& u, const Vec& w_router, const LayerShape& s, LayerNumerics num,
                                const IVec* force_ids) {
  const std::int64_t N = s.N();
  const int E = static_cast<int>(s.E), k = static_cast<int>(s.k);
  LayerRouting r;
  r.logits = router_logits(u, w_router, N, s.D, E, num == LayerNumerics::hf_bf16);
  if (force_ids != nullptr) {
    r.ids = *force_ids;
    r.gates = layer_gates_for_ids(r.logits, r.ids, N, E, k);
  } else {
    TopK tk = topk_gates(r.logits, N, E, k);
    r.ids = tk.ids;
    r.gates = tk.gates;
  }
  r.gates_used = r.gates;
  if (num == LayerNumerics::hf_bf16)
    for (auto& g : r.gates_used) g = round_bf16(round_f32(g));
  r.plan = make_plan(r.ids, N, E, k);
  r.flat = layer_token_slot_rows(r.plan, s.NK(), k);
  r.aux = aux_loss(r.logits, r.ids, N, E, k);
  return r;
}

inline Vec layer_combine(const Vec& y, const LayerRouting& r, const Vec& bias, const LayerShape& s, LayerNumerics num) {
  const int k = static_cast<int>(s.k);
  return num == LayerNumerics::hf_bf16 ? combine_bf16(y, r.gates_used, r.plan.position, bias, s.N(), k, s.D)
                                       : combine_exact(y, r.gates_used, r.plan.position, bias, s.N(), k, s.D);
}

inline Vec layer_add(const Vec& a, const Vec& b, LayerNumerics num) {
  Vec out(a.size());
  for (std::size_t i = 0; i < a.size(); ++i) out[i] = a[i] + b[i];
  layer_round_all(out, num);
  return out;
}

// force_moa_ids / force_moe_ids (may be null): use these expert choices instead of the top-k (the GPU
// test feeds the device's choices where a near tie of the bf16 logits may legitimately flip them).
inline LayerForward layer_forward(const LayerShape& s, const LayerWeights& w, const Vec& x, LayerNumerics num,
                                  const IVec* force_moa_ids = nullptr, const IVec* force_moe_ids = nullptr) {
  const std::int64_t N = s.N(), NK = s.NK(), D = s.D, A = s.A(), F = s.F, Hq = s.Hq();
  const bool bf16 = num == LayerNumerics::hf_bf16;
  const int k = static_cast<int>(s.k);
  LayerForward f;
  // MoA
  f.u1 = rmsnorm_forward(x, w.input_norm, N, D, s.eps, bf16);
  f.rstd1 = rmsnorm_rstd(x, N, D, s.eps);
  f.moa = layer_route(f.u1, w.moa_router, s, num, force_moa_ids);
  const Vec g1 = gather(f.u1, f.moa.plan.sorted_token, NK, D);
  Vec q_sorted = layer_grouped_linear(g1, w.moa_q, f.moa.plan.offsets, NK, A, D);
  layer_round_all(q_sorted, num);
  f.q.assign(static_cast<std::size_t>(N * Hq * s.d), 0.0);
  for (std::int64_t t = 0; t < N; ++t)
    for (int j = 0; j < k; ++j)
      for (std::int64_t c = 0; c < A; ++c) f.q[(t * k + j) * A + c] = q_sorted[f.moa.plan.position[t * k + j] * A + c];
  const IVec one_expert = {0, static_cast<int>(N)};
  const Vec wk(w.kv_proj.begin(), w.kv_proj.begin() + A * D), wv(w.kv_proj.begin() + A * D, w.kv_proj.end());
  f.k = layer_grouped_linear(f.u1, wk, one_expert, N, A, D);
  f.v = layer_grouped_linear(f.u1, wv, one_expert, N, A, D);
  layer_round_all(f.k, num);
  layer_round_all(f.v, num);
  const auto pos = layer_positions(s);
  const RopeRounding rr = bf16 ? RopeRounding::bf16 : RopeRounding::none;
  rope_apply(f.q, pos, Hq, s.d, s.theta, false, rr);
  rope_apply(f.k, pos, s.Hkv, s.d, s.theta, false, rr);
  const AttentionShape as{s.B, s.T, Hq, s.Hkv, s.d};
  attention_forward(f.q, f.k, f.v, {}, as, f.attn, f.lse);
  layer_round_all(f.attn, num);
  const Vec o_sorted = gather(f.attn, f.moa.flat, NK, A);
  f.y_attn = layer_grouped_linear(o_sorted, w.moa_o, f.moa.plan.offsets, NK, D, A);
  layer_round_all(f.y_attn, num);
  f.x_mid = layer_add(x, layer_combine(f.y_attn, f.moa, w.moa_bias, s, num), num);
  // MoE
  f.u2 = rmsnorm_forward(f.x_mid, w.post_norm, N, D, s.eps, bf16);
  f.rstd2 = rmsnorm_rstd(f.x_mid, N, D, s.eps);
  f.moe = layer_route(f.u2, w.moe_router, s, num, force_moe_ids);
  const Vec g2 = gather(f.u2, f.moe.plan.sorted_token, NK, D);
  f.z = layer_grouped_linear(g2, w.moe_in, f.moe.plan.offsets, NK, 2 * F, D);
  layer_round_all(f.z, num);
  f.h.assign(static_cast<std::size_t>(NK * F), 0.0);
  for (std::int64_t r = 0; r < NK; ++r)
    for (std::int64_t j = 0; j < F; ++j) {
      const double a = f.z[r * 2 * F + j], b = f.z[r * 2 * F + F + j];
      const double silu = a / (1.0 + std::exp(-a));
      f.h[r * F + j] = bf16 ? round_bf16(round_bf16(silu) * b) : silu * b;
    }
  f.y_mlp = layer_grouped_linear(f.h, w.moe_out, f.moe.plan.offsets, NK, D, F);
  layer_round_all(f.y_mlp, num);
  f.out = layer_add(f.x_mid, layer_combine(f.y_mlp, f.moe, w.moe_bias, s, num), num);
  return f;
}

// ---- backward -----------------------------------------------------------------------------------------

struct LayerGrads {
  Vec dx;           // [N, D]
  LayerWeights dw;  // the weight gradients
};

// Gradient of L = sum(out * dout) + cs * (switch_moa + switch_moe) + cz * (z_moa + z_moe) with respect to
// x and every weight (exact maths at the saved forward values; f of the switch loss is constant).
inline LayerGrads layer_backward(const LayerShape& s, const LayerWeights& w, const Vec& x, const LayerForward& f,
                                 const Vec& dout, double cs, double cz, LayerNumerics num) {
  const std::int64_t N = s.N(), NK = s.NK(), D = s.D, A = s.A(), F = s.F, Hq = s.Hq();
  const int E = static_cast<int>(s.E), k = static_cast<int>(s.k);
  const bool bf16 = num == LayerNumerics::hf_bf16;
  LayerGrads g;
  // MoE combine (+ aux) -> dy_mlp, router logits gradient, bias gradient.
  CombineGrad cm =
      combine_backward(dout, f.y_mlp, f.moe.gates, f.moe.gates_used, f.moe.ids, f.moe.plan.position, N, E, k, D, false);
  {
    const Vec ga = aux_loss_grad(f.moe.logits, f.moe.ids, N, E, k, cs, cz);
    for (std::size_t i = 0; i < ga.size(); ++i) cm.dlogits[i] += ga[i];
  }
  g.dw.moe_bias = cm.dbias;
  g.dw.moe_out = layer_grouped_linear_bwd_weight(cm.dy, f.h, f.moe.plan.offsets, D, F);
  const Vec dh = layer_grouped_linear_bwd_data(cm.dy, w.moe_out, f.moe.plan.offsets, NK, D, F);
  Vec dz(static_cast<std::size_t>(NK * 2 * F));
  for (std::int64_t r = 0; r < NK; ++r)
    for (std::int64_t j = 0; j < F; ++j) {
      const double a = f.z[r * 2 * F + j], b = f.z[r * 2 * F + F + j], gh = dh[r * F + j];
      const double sig = 1.0 / (1.0 + std::exp(-a));
      dz[r * 2 * F + j] = gh * b * sig * (1.0 + a * (1.0 - sig));
      dz[r * 2 * F + F + j] = gh * a * sig;
    }
  const Vec g2 = gather(f.u2, f.moe.plan.sorted_token, NK, D);
  g.dw.moe_in = layer_grouped_linear_bwd_weight(dz, g2, f.moe.plan.offsets, 2 * F, D);
  const Vec dg2 = layer_grouped_linear_bwd_data(dz, w.moe_in, f.moe.plan.offsets, NK, 2 * F, D);
  Vec du2 = gather_backward(dg2, f.moe.plan.position, N, k, D);
  {
    const Vec dr = router_du(w.moe_router, cm.dlogits, N, D, E);
    for (std::size_t i = 0; i < du2.size(); ++i) du2[i] += dr[i];
  }
  g.dw.moe_router = router_dw(f.u2, cm.dlogits, N, D, E);
  Vec dn2, dwn2;
  rmsnorm_backward(f.x_mid, w.post_norm, f.rstd2, du2, N, D, bf16, &dn2, &dwn2);
  g.dw.post_norm = dwn2;
  Vec dxmid(static_cast<std::size_t>(N * D));
  for (std::size_t i = 0; i < dxmid.size(); ++i) dxmid[i] = dout[i] + dn2[i];

  // MoA
  CombineGrad ca = combine_backward(dxmid, f.y_attn, f.moa.gates, f.moa.gates_used, f.moa.ids, f.moa.plan.position, N,
                                    E, k, D, false);
  {
    const Vec ga = aux_loss_grad(f.moa.logits, f.moa.ids, N, E, k, cs, cz);
    for (std::size_t i = 0; i < ga.size(); ++i) ca.dlogits[i] += ga[i];
  }
  g.dw.moa_bias = ca.dbias;
  const Vec o_sorted = gather(f.attn, f.moa.flat, NK, A);
  g.dw.moa_o = layer_grouped_linear_bwd_weight(ca.dy, o_sorted, f.moa.plan.offsets, D, A);
  const Vec do_sorted = layer_grouped_linear_bwd_data(ca.dy, w.moa_o, f.moa.plan.offsets, NK, D, A);
  Vec dattn(static_cast<std::size_t>(N * Hq * s.d));
  for (std::int64_t r = 0; r < NK; ++r)
    for (std::int64_t c = 0; c < A; ++c) dattn[f.moa.flat[r] * A + c] = do_sorted[r * A + c];
  const AttentionShape as{s.B, s.T, Hq, s.Hkv, s.d};
  Vec dq, dk, dv;
  attention_backward(f.q, f.k, f.v, dattn, {}, as, dq, dk, dv);
  const auto pos = layer_positions(s);
  rope_apply(dq, pos, Hq, s.d, s.theta, true, RopeRounding::none);
  rope_apply(dk, pos, s.Hkv, s.d, s.theta, true, RopeRounding::none);
  const Vec dq_sorted = gather(dq, f.moa.flat, NK, A);
  const Vec g1 = gather(f.u1, f.moa.plan.sorted_token, NK, D);
  g.dw.moa_q = layer_grouped_linear_bwd_weight(dq_sorted, g1, f.moa.plan.offsets, A, D);
  const Vec dg1 = layer_grouped_linear_bwd_data(dq_sorted, w.moa_q, f.moa.plan.offsets, NK, A, D);
  Vec du1 = gather_backward(dg1, f.moa.plan.position, N, k, D);
  // kv_proj as one [2A, D] linear with output [dk | dv].
  Vec dkv(static_cast<std::size_t>(N * 2 * A));
  for (std::int64_t t = 0; t < N; ++t)
    for (std::int64_t c = 0; c < A; ++c) {
      dkv[t * 2 * A + c] = dk[t * A + c];
      dkv[t * 2 * A + A + c] = dv[t * A + c];
    }
  const IVec one_expert = {0, static_cast<int>(N)};
  g.dw.kv_proj = layer_grouped_linear_bwd_weight(dkv, f.u1, one_expert, 2 * A, D);
  {
    const Vec dkv_u = layer_grouped_linear_bwd_data(dkv, w.kv_proj, one_expert, N, 2 * A, D);
    const Vec dr = router_du(w.moa_router, ca.dlogits, N, D, E);
    for (std::size_t i = 0; i < du1.size(); ++i) du1[i] += dkv_u[i] + dr[i];
  }
  g.dw.moa_router = router_dw(f.u1, ca.dlogits, N, D, E);
  Vec dn1, dwn1;
  rmsnorm_backward(x, w.input_norm, f.rstd1, du1, N, D, bf16, &dn1, &dwn1);
  g.dw.input_norm = dwn1;
  g.dx.resize(static_cast<std::size_t>(N * D));
  for (std::size_t i = 0; i < g.dx.size(); ++i) g.dx[i] = dxmid[i] + dn1[i];
  return g;
}

// The scalar the backward differentiates (for finite differences).
inline double layer_objective(const LayerShape& s, const LayerWeights& w, const Vec& x, const Vec& dout, double cs,
                              double cz) {
  const LayerForward f = layer_forward(s, w, x, LayerNumerics::exact);
  double L = 0;
  for (std::size_t i = 0; i < f.out.size(); ++i) L += f.out[i] * dout[i];
  return L + cs * (f.moa.aux.switch_loss + f.moe.aux.switch_loss) + cz * (f.moa.aux.z_loss + f.moe.aux.z_loss);
}

}  // namespace jkref
