#pragma once
// CPU double-precision reference of the 'router' kernels (kernels/include/jetmoe/router.h).
// Header-only plain C++17 (no CUDA): compiled by g++ in tests/kernel_reference/test_router.cpp, where
// it is proven (finite differences, closed forms, PyTorch / HF fixtures), and inside the nvcc-built
// GPU test kernels/tests/test_router.cu, which compares the kernels against it.
//
// Tensors are row-major std::vector<double> (bf16 / fp32 inputs widen exactly) and std::vector<int>.
// Everything is computed exactly in double; bf16 rounding steps that the HF numerics prescribe are
// applied with round_bf16 (round to nearest, ties to even, by scaling: independent of the kernels'
// bit trick).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <vector>

namespace jkref {

using Vec = std::vector<double>;
using IVec = std::vector<int>;

// ---- rounding ---------------------------------------------------------------------------------------

// Nearest bf16 value (8 significant bits, exponent range of fp32), ties to even; overflow -> +-Inf.
inline double round_bf16(double v) {
  if (std::isnan(v) || std::isinf(v) || v == 0.0) return v;
  const double a = std::fabs(v);
  int e = 0;
  std::frexp(a, &e);                                 // a in [2^(e-1), 2^e)
  const int quantum_exp = std::max(e - 1, -126) - 7;  // bf16 ulp in this binade
  const double units = std::ldexp(a, -quantum_exp);
  double r = std::floor(units);
  const double frac = units - r;
  if (frac > 0.5 || (frac == 0.5 && std::fmod(r, 2.0) == 1.0)) r += 1.0;
  double out = std::ldexp(r, quantum_exp);
  if (out >= 0x1p128) out = std::numeric_limits<double>::infinity();
  return v < 0 ? -out : out;
}

// True when the exact value v lies within rel * |v| of a bf16 rounding boundary (the midpoint
// between two neighbouring bf16 values), where an fp32 computation may round either way.
inline bool near_bf16_boundary(double v, double rel) {
  if (v == 0.0 || std::isnan(v) || std::isinf(v)) return false;
  const double a = std::fabs(v);
  int e = 0;
  std::frexp(a, &e);
  const int quantum_exp = std::max(e - 1, -126) - 7;
  const double units = std::ldexp(a, -quantum_exp);
  const double frac = units - std::floor(units);
  return std::fabs(frac - 0.5) * std::ldexp(1.0, quantum_exp) <= rel * a;
}

inline double round_f32(double v) { return static_cast<double>(static_cast<float>(v)); }

// ---- forward ------------------------------------------------------------------------------------

// logits[t, e] = sum_d u[t, d] w[e, d] exactly (double: products of bf16 values are exact, and the
// sum of D terms has error far below an fp32 ulp); round_to_bf16 applies HF's bf16 output rounding.
inline Vec router_logits(const Vec& u, const Vec& w, int64_t N, int64_t D, int E, bool round_to_bf16) {
  Vec logits(static_cast<size_t>(N * E));
  for (int64_t t = 0; t < N; ++t)
    for (int e = 0; e < E; ++e) {
      double s = 0;
      for (int64_t d = 0; d < D; ++d) s += u[t * D + d] * w[e * D + d];
      logits[t * E + e] = round_to_bf16 ? round_bf16(s) : s;
    }
  return logits;
}

struct TopK {
  IVec ids;    // [N, k]
  Vec gates;   // [N, k] softmax over the chosen logits (exact, double)
};

// Top-k by repeated arg-max: descending logit, the lower index on ties (torch.topk, routing.cpp).
inline TopK topk_gates(const Vec& logits, int64_t N, int E, int k) {
  TopK r;
  r.ids.assign(static_cast<size_t>(N * k), -1);
  r.gates.assign(static_cast<size_t>(N * k), 0.0);
  for (int64_t t = 0; t < N; ++t) {
    std::vector<bool> taken(static_cast<size_t>(E), false);
    for (int j = 0; j < k; ++j) {
      int best = -1;
      for (int e = 0; e < E; ++e) {
        if (taken[e]) continue;
        if (best < 0 || logits[t * E + e] > logits[t * E + best]) best = e;
      }
      taken[best] = true;
      r.ids[t * k + j] = best;
    }
    const double m = logits[t * E + r.ids[t * k]];
    double s = 0;
    for (int j = 0; j < k; ++j) s += std::exp(logits[t * E + r.ids[t * k + j]] - m);
    for (int j = 0; j < k; ++j) r.gates[t * k + j] = std::exp(logits[t * E + r.ids[t * k + j]] - m) / s;
  }
  return r;
}

struct Plan {
  IVec counts;        // [E]
  IVec offsets;       // [E + 1]
  IVec sorted_token;  // [N k]
  IVec sorted_slot;   // [N k]
  IVec position;      // [N, k]
};

// Stable grouping by expert: rows of expert e in (token, slot) order. Ids outside [0, E) get no row
// and position -1 (sorted arrays then hold -1 past offsets[E]).
inline Plan make_plan(const IVec& ids, int64_t N, int E, int k) {
  Plan p;
  p.counts.assign(static_cast<size_t>(E), 0);
  for (int64_t i = 0; i < N * k; ++i)
    if (ids[i] >= 0 && ids[i] < E) ++p.counts[ids[i]];
  p.offsets.assign(static_cast<size_t>(E + 1), 0);
  for (int e = 0; e < E; ++e) p.offsets[e + 1] = p.offsets[e] + p.counts[e];
  p.sorted_token.assign(static_cast<size_t>(N * k), -1);
  p.sorted_slot.assign(static_cast<size_t>(N * k), -1);
  p.position.assign(static_cast<size_t>(N * k), -1);
  IVec next(p.offsets.begin(), p.offsets.end() - 1);
  for (int64_t t = 0; t < N; ++t)
    for (int j = 0; j < k; ++j) {
      const int e = ids[t * k + j];
      if (e < 0 || e >= E) continue;
      const int row = next[e]++;
      p.sorted_token[row] = static_cast<int>(t);
      p.sorted_slot[row] = j;
      p.position[t * k + j] = row;
    }
  return p;
}

// ---- auxiliary losses -------------------------------------------------------------------------------

struct AuxLoss {
  double switch_loss = 0;  // E sum_e P_e f_e
  double z_loss = 0;       // mean_t lse_t^2
};

inline double logsumexp_row(const double* x, int E) {
  double m = x[0];
  for (int e = 1; e < E; ++e) m = std::max(m, x[e]);
  double s = 0;
  for (int e = 0; e < E; ++e) s += std::exp(x[e] - m);
  return m + std::log(s);
}

// f_e = count_e / (N k) from the ids.
inline Vec expert_fraction(const IVec& ids, int64_t N, int E, int k) {
  Vec f(static_cast<size_t>(E), 0.0);
  for (int64_t i = 0; i < N * k; ++i) f[ids[i]] += 1.0;
  for (auto& v : f) v /= static_cast<double>(N * k);
  return f;
}

inline AuxLoss aux_loss(const Vec& logits, const IVec& ids, int64_t N, int E, int k) {
  const Vec f = expert_fraction(ids, N, E, k);
  Vec P(static_cast<size_t>(E), 0.0);
  AuxLoss out;
  for (int64_t t = 0; t < N; ++t) {
    const double lse = logsumexp_row(&logits[t * E], E);
    for (int e = 0; e < E; ++e) P[e] += std::exp(logits[t * E + e] - lse);
    out.z_loss += lse * lse;
  }
  for (int e = 0; e < E; ++e) out.switch_loss += E * (P[e] / N) * f[e];
  out.z_loss /= static_cast<double>(N);
  return out;
}

// alpha d switch/dX + beta d z/dX (f held constant), [N, E].
inline Vec aux_loss_grad(const Vec& logits, const IVec& ids, int64_t N, int E, int k, double alpha, double beta) {
  const Vec f = expert_fraction(ids, N, E, k);
  Vec g(static_cast<size_t>(N * E));
  for (int64_t t = 0; t < N; ++t) {
    const double lse = logsumexp_row(&logits[t * E], E);
    double pf = 0;
    for (int e = 0; e < E; ++e) pf += std::exp(logits[t * E + e] - lse) * f[e];
    for (int e = 0; e < E; ++e) {
      const double p = std::exp(logits[t * E + e] - lse);
      g[t * E + e] = alpha * (double(E) / N) * p * (f[e] - pf) + beta * (2.0 / N) * lse * p;
    }
  }
  return g;
}

// ---- gather -------------------------------------------------------------------------------------------

inline Vec gather(const Vec& x, const IVec& sorted_token, int64_t rows, int64_t C) {
  Vec xp(static_cast<size_t>(rows * C));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < C; ++c) xp[r * C + c] = x[sorted_token[r] * C + c];
  return xp;
}

// dx[t] = sum_j dxp[position[t, j]] (exact).
inline Vec gather_backward(const Vec& dxp, const IVec& position, int64_t N, int k, int64_t C) {
  Vec dx(static_cast<size_t>(N * C), 0.0);
  for (int64_t t = 0; t < N; ++t)
    for (int j = 0; j < k; ++j)
      for (int64_t c = 0; c < C; ++c) dx[t * C + c] += dxp[position[t * k + j] * C + c];
  return dx;
}

// ---- combine ------------------------------------------------------------------------------------------

// HF bf16 sequence (y, gates_bf16, bias hold bf16 values): acc = bf16(acc + bf16(g_j y)), slot order,
// then bf16(acc + bias). An empty bias means none.
inline Vec combine_bf16(const Vec& y, const Vec& gates_bf16, const IVec& position, const Vec& bias, int64_t N,
                        int k, int64_t C) {
  Vec out(static_cast<size_t>(N * C));
  for (int64_t t = 0; t < N; ++t)
    for (int64_t c = 0; c < C; ++c) {
      double acc = 0.0;
      for (int j = 0; j < k; ++j) acc = round_bf16(acc + round_bf16(gates_bf16[t * k + j] * y[position[t * k + j] * C + c]));
      out[t * C + c] = bias.empty() ? acc : round_bf16(acc + bias[c]);
    }
  return out;
}

// Exact: out[t] = sum_j gates[t, j] y[position[t, j]] + bias.
inline Vec combine_exact(const Vec& y, const Vec& gates, const IVec& position, const Vec& bias, int64_t N, int k,
                         int64_t C) {
  Vec out(static_cast<size_t>(N * C));
  for (int64_t t = 0; t < N; ++t)
    for (int64_t c = 0; c < C; ++c) {
      double acc = bias.empty() ? 0.0 : bias[c];
      for (int j = 0; j < k; ++j) acc += gates[t * k + j] * y[position[t * k + j] * C + c];
      out[t * C + c] = acc;
    }
  return out;
}

struct CombineGrad {
  Vec dy;       // [N k, C]  gate_for_dy[t, j] * dout[t] (rounded to bf16 when asked)
  Vec dgate;    // [N, k]    <dout[t], y[position[t, j]]>
  Vec dlogits;  // [N, E]    softmax backward over the chosen slots, 0 elsewhere
  Vec dbias;    // [C]       sum_t dout[t]
};

// gates: the softmax values used in the softmax backward; gates_for_dy: the gates multiplying dout
// (gates_bf16 for the bf16 path, with round_dy_bf16 = true).
inline CombineGrad combine_backward(const Vec& dout, const Vec& y, const Vec& gates, const Vec& gates_for_dy,
                                    const IVec& ids, const IVec& position, int64_t N, int E, int k, int64_t C,
                                    bool round_dy_bf16) {
  CombineGrad g;
  g.dy.assign(static_cast<size_t>(N * k * C), 0.0);
  g.dgate.assign(static_cast<size_t>(N * k), 0.0);
  g.dlogits.assign(static_cast<size_t>(N * E), 0.0);
  g.dbias.assign(static_cast<size_t>(C), 0.0);
  for (int64_t t = 0; t < N; ++t) {
    double weighted = 0;
    for (int j = 0; j < k; ++j) {
      const int64_t row = position[t * k + j];
      double dot = 0;
      for (int64_t c = 0; c < C; ++c) {
        const double v = gates_for_dy[t * k + j] * dout[t * C + c];
        g.dy[row * C + c] = round_dy_bf16 ? round_bf16(v) : v;
        dot += dout[t * C + c] * y[row * C + c];
      }
      g.dgate[t * k + j] = dot;
      weighted += gates[t * k + j] * dot;
    }
    for (int j = 0; j < k; ++j)
      g.dlogits[t * E + ids[t * k + j]] = gates[t * k + j] * (g.dgate[t * k + j] - weighted);
    for (int64_t c = 0; c < C; ++c) g.dbias[c] += dout[t * C + c];
  }
  return g;
}

// ---- router backward ------------------------------------------------------------------------------

// dw[e, d] = sum_t dlogits[t, e] u[t, d];  du[t, d] = sum_e dlogits[t, e] w[e, d].
inline Vec router_dw(const Vec& u, const Vec& dlogits, int64_t N, int64_t D, int E) {
  Vec dw(static_cast<size_t>(E * D), 0.0);
  for (int64_t t = 0; t < N; ++t)
    for (int e = 0; e < E; ++e)
      for (int64_t d = 0; d < D; ++d) dw[e * D + d] += dlogits[t * E + e] * u[t * D + d];
  return dw;
}

inline Vec router_du(const Vec& w, const Vec& dlogits, int64_t N, int64_t D, int E) {
  Vec du(static_cast<size_t>(N * D), 0.0);
  for (int64_t t = 0; t < N; ++t)
    for (int e = 0; e < E; ++e)
      for (int64_t d = 0; d < D; ++d) du[t * D + d] += dlogits[t * E + e] * w[e * D + d];
  return du;
}

}  // namespace jkref
