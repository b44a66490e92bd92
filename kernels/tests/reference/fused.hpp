#pragma once
// CPU reference of the 'fused' kernels (include/jetmoe/fused.h): RMSNorm backward, RoPE, cross-entropy,
// global gradient norm and AdamW. Header-only, plain C++17 (no CUDA), so it compiles both in the host
// Catch2 proof (tests/kernel_reference/test_fused.cpp: finite differences, closed forms, PyTorch
// fixtures) and inside the nvcc-compiled GPU test (kernels/tests/test_fused.cu).
//
// Arithmetic is double precision, with the roundings of the HF bf16/fp32 sequences applied explicitly
// where a kernel promises them (bf16_round, f32_round). AdamW is the exception: it is fp32 operation
// for operation (the CPU optimizer's and torch's arithmetic), because the kernel promises bit equality.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <vector>

#include "rounding.hpp"

namespace jkref {

// ---- rounding -------------------------------------------------------------------------------------

// f32_round, bf16_round: rounding.hpp.

// ---- RMSNorm (HF JetMoeRMSNorm) -------------------------------------------------------------------
// x, y, dy, dx [rows, hidden]; w, dw [hidden]; rstd [rows].

inline std::vector<double> rmsnorm_rstd(const std::vector<double>& x, std::int64_t rows, std::int64_t hidden,
                                        double eps) {
  std::vector<double> r(static_cast<std::size_t>(rows));
  for (std::int64_t i = 0; i < rows; ++i) {
    double ss = 0;
    for (std::int64_t c = 0; c < hidden; ++c) ss += x[i * hidden + c] * x[i * hidden + c];
    r[i] = 1.0 / std::sqrt(ss / static_cast<double>(hidden) + eps);
  }
  return r;
}

// y = w * (x r) exactly; with bf16 = true the HF bf16 sequence y = bf16(w * bf16(x r)).
inline std::vector<double> rmsnorm_forward(const std::vector<double>& x, const std::vector<double>& w,
                                           std::int64_t rows, std::int64_t hidden, double eps, bool bf16) {
  const std::vector<double> r = rmsnorm_rstd(x, rows, hidden, eps);
  std::vector<double> y(x.size());
  for (std::int64_t i = 0; i < rows; ++i)
    for (std::int64_t c = 0; c < hidden; ++c) {
      const double n = x[i * hidden + c] * r[i];
      y[i * hidden + c] = bf16 ? bf16_round(w[c] * bf16_round(n)) : w[c] * n;
    }
  return y;
}

// The exact gradient of y = w * x * r(x) for the given rstd (the roundings of the bf16 forward are
// identity, as autograd treats them):
//   dx = r (g - xhat mean_c(g xhat)),  g = dy w,  xhat = x r;    dw = sum_rows dy n
// with n = xhat, or n = bf16(fp32(x r)) when bf16_normed (the value the bf16 forward multiplied by w:
// HF and the kernels form x * r in fp32 and round it to bf16).
inline void rmsnorm_backward(const std::vector<double>& x, const std::vector<double>& w,
                             const std::vector<double>& rstd, const std::vector<double>& dy, std::int64_t rows,
                             std::int64_t hidden, bool bf16_normed, std::vector<double>* dx, std::vector<double>* dw) {
  dx->assign(x.size(), 0.0);
  dw->assign(static_cast<std::size_t>(hidden), 0.0);
  for (std::int64_t i = 0; i < rows; ++i) {
    const double r = rstd[i];
    double dot = 0;
    for (std::int64_t c = 0; c < hidden; ++c) dot += dy[i * hidden + c] * w[c] * x[i * hidden + c] * r;
    const double mean = dot / static_cast<double>(hidden);
    for (std::int64_t c = 0; c < hidden; ++c) {
      const std::size_t k = static_cast<std::size_t>(i * hidden + c);
      const double xhat = x[k] * r;
      (*dx)[k] = r * (dy[k] * w[c] - xhat * mean);
      (*dw)[c] += dy[k] * (bf16_normed ? bf16_round(f32_round(xhat)) : xhat);
    }
  }
}

// ---- RoPE (HF JetMoeRotaryEmbedding + apply_rotary_pos_emb, half-split) ---------------------------

// HF: inv_freq = 1.0 / (theta ** (arange(0, d, 2).float() / d)), every step in fp32.
inline std::vector<float> rope_inv_freq(std::int64_t head_dim, float theta) {
  std::vector<float> inv(static_cast<std::size_t>(head_dim / 2));
  for (std::int64_t i = 0; i < head_dim / 2; ++i) {
    const float exponent = static_cast<float>(2 * i) / static_cast<float>(head_dim);
    const float power = static_cast<float>(std::pow(static_cast<double>(theta), static_cast<double>(exponent)));
    inv[i] = 1.0f / power;
  }
  return inv;
}

// fp32 angle = float(pos) * inv_freq (one rounding); cos, sin correctly rounded to fp32.
inline void rope_cos_sin(std::int64_t position, float inv_freq, double* c, double* s) {
  const double angle = f32_round(static_cast<double>(static_cast<float>(position)) * static_cast<double>(inv_freq));
  *c = f32_round(std::cos(angle));
  *s = f32_round(std::sin(angle));
}

enum class RopeRounding { none, f32, bf16 };

// In place on v [tokens, heads, d] with cos_t[t * half + i], sin_t[t * half + i] per token (fp32 values).
// backward = true applies the transposed rotation. Rounding:
//   none: exact arithmetic (the linear map, for finite differences);
//   f32:  each product and the sum rounded to fp32 (the kernel's and torch's fp32 sequence);
//   bf16: cos/sin, each product and the sum rounded to bf16 (HF's bf16 sequence).
inline void rope_apply_tables(std::vector<double>& v, const std::vector<double>& cos_t, const std::vector<double>& sin_t,
                              std::int64_t tokens, std::int64_t heads, std::int64_t head_dim, bool backward,
                              RopeRounding rounding) {
  const std::int64_t half = head_dim / 2;
  auto rd = [rounding](double a) {
    return rounding == RopeRounding::bf16 ? bf16_round(a) : rounding == RopeRounding::f32 ? f32_round(a) : a;
  };
  for (std::int64_t t = 0; t < tokens; ++t)
    for (std::int64_t h = 0; h < heads; ++h)
      for (std::int64_t i = 0; i < half; ++i) {
        const double c = rd(cos_t[t * half + i]), s = rd(sin_t[t * half + i]);
        double* base = v.data() + (t * heads + h) * head_dim;
        const double a = base[i], b = base[i + half];
        const double ac = rd(a * c), as = rd(a * s), bc = rd(b * c), bs = rd(b * s);
        base[i] = backward ? rd(ac + bs) : rd(ac - bs);
        base[i + half] = backward ? rd(bc - as) : rd(bc + as);
      }
}

// cos, sin [tokens, head_dim / 2] of the given positions (rope_inv_freq, rope_cos_sin).
inline void rope_tables(const std::vector<std::int32_t>& positions, std::int64_t head_dim, float theta,
                        std::vector<double>* cos_t, std::vector<double>* sin_t) {
  const std::vector<float> inv = rope_inv_freq(head_dim, theta);
  const std::int64_t half = head_dim / 2;
  cos_t->assign(positions.size() * static_cast<std::size_t>(half), 0.0);
  sin_t->assign(cos_t->size(), 0.0);
  for (std::size_t t = 0; t < positions.size(); ++t)
    for (std::int64_t i = 0; i < half; ++i) rope_cos_sin(positions[t], inv[i], &(*cos_t)[t * half + i], &(*sin_t)[t * half + i]);
}

inline void rope_apply(std::vector<double>& v, const std::vector<std::int32_t>& positions, std::int64_t heads,
                       std::int64_t head_dim, float theta, bool backward, RopeRounding rounding) {
  std::vector<double> c, s;
  rope_tables(positions, head_dim, theta, &c, &s);
  rope_apply_tables(v, c, s, static_cast<std::int64_t>(positions.size()), heads, head_dim, backward, rounding);
}

// ---- cross-entropy ----------------------------------------------------------------------------------
constexpr std::int32_t kIgnoreIndex = -100;

struct CrossEntropyResult {
  std::vector<double> loss_rows;  // 0 for ignored rows
  std::vector<double> lse;
  double loss_mean = 0;           // 0 when no row counts (the project's convention)
  std::int64_t n_valid = 0;
};

inline CrossEntropyResult cross_entropy_forward(const std::vector<double>& logits,
                                                const std::vector<std::int32_t>& labels, std::int64_t rows,
                                                std::int64_t vocab) {
  CrossEntropyResult r;
  r.loss_rows.assign(static_cast<std::size_t>(rows), 0.0);
  r.lse.assign(static_cast<std::size_t>(rows), 0.0);
  double sum = 0;
  for (std::int64_t i = 0; i < rows; ++i) {
    const double* x = logits.data() + i * vocab;
    const double m = *std::max_element(x, x + vocab);
    double s = 0;
    for (std::int64_t c = 0; c < vocab; ++c) s += std::exp(x[c] - m);
    r.lse[i] = m + std::log(s);
    if (labels[i] == kIgnoreIndex) continue;
    r.loss_rows[i] = r.lse[i] - x[labels[i]];
    sum += r.loss_rows[i];
    ++r.n_valid;
  }
  r.loss_mean = r.n_valid > 0 ? sum / static_cast<double>(r.n_valid) : 0.0;
  return r;
}

// dlogits = (softmax(x) - onehot(label)) * scale; zero rows for ignored labels.
inline std::vector<double> cross_entropy_backward(const std::vector<double>& logits,
                                                  const std::vector<std::int32_t>& labels, std::int64_t rows,
                                                  std::int64_t vocab, double scale) {
  std::vector<double> d(logits.size(), 0.0);
  const CrossEntropyResult f = cross_entropy_forward(logits, labels, rows, vocab);
  for (std::int64_t i = 0; i < rows; ++i) {
    if (labels[i] == kIgnoreIndex) continue;
    for (std::int64_t c = 0; c < vocab; ++c) {
      const double p = std::exp(logits[i * vocab + c] - f.lse[i]);
      d[i * vocab + c] = (p - (c == labels[i] ? 1.0 : 0.0)) * scale;
    }
  }
  return d;
}

// ---- gradient norm and AdamW (the project's src/train/optimizer.cpp) -----------------------------

// grad_sum_of_squares: 4096-element blocks, 8 interleaved double lanes, lanes and blocks in a fixed order.
inline double grad_sum_of_squares(const std::vector<std::vector<float>>& grads) {
  constexpr std::int64_t block = 4096;
  double total = 0;
  for (const auto& g : grads) {
    const std::int64_t n = static_cast<std::int64_t>(g.size());
    for (std::int64_t begin = 0; begin < n; begin += block) {
      const std::int64_t end = std::min(n, begin + block);
      double acc[8] = {};
      std::int64_t j = begin;
      for (; j + 8 <= end; j += 8)
        for (int l = 0; l < 8; ++l) acc[l] += double(g[j + l]) * double(g[j + l]);
      for (int l = 0; j < end; ++j, ++l) acc[l] += double(g[j]) * double(g[j]);
      total += ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    }
  }
  return total;
}

// clip_grad_norm_'s factor: min(1, max_norm / (norm + 1e-6)); 1 when max_norm <= 0.
inline double clip_factor(double norm, double max_norm) {
  if (max_norm <= 0) return 1.0;
  return std::min(1.0, max_norm / (norm + 1e-6));
}

struct AdamWHyper {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
  std::int64_t step = 1;
};

// One AdamW update of one tensor, fp32 operation for operation (AdamW::step / torch's single-tensor
// AdamW). volatile stores keep the compiler from contracting or reordering (no -ffast-math here).
inline void adamw_step_f32(std::vector<float>& p, const std::vector<float>& g, std::vector<float>& m,
                           std::vector<float>& v, bool decays, const AdamWHyper& h, float grad_scale) {
  const double bias_correction1 = 1.0 - std::pow(h.beta1, double(h.step));
  const double bias_correction2 = 1.0 - std::pow(h.beta2, double(h.step));
  const float step_size = float(h.lr / bias_correction1);
  const float bc2_sqrt = float(std::sqrt(bias_correction2));
  const float b1w = float(1.0 - h.beta1), b2 = float(h.beta2), b2w = float(1.0 - h.beta2), eps = float(h.eps);
  const float decay = decays ? float(1.0 - h.lr * h.weight_decay) : 1.0f;
  for (std::size_t j = 0; j < p.size(); ++j) {
    volatile float gj = g[j] * grad_scale;
    volatile float pj = p[j] * decay;
    volatile float diff = gj - m[j];
    volatile float md = b1w * diff;  // own statement: a contracting host compiler cannot fuse it
    volatile float mj = m[j] + md;
    volatile float vb = v[j] * b2;
    volatile float gw = b2w * gj;
    volatile float gg = gw * gj;
    volatile float vj = vb + gg;
    volatile float root = std::sqrt(float(vj));
    volatile float denom0 = root / bc2_sqrt;
    volatile float denom = denom0 + eps;
    volatile float ratio = mj / denom;
    volatile float upd = (-step_size) * ratio;
    m[j] = mj;
    v[j] = vj;
    p[j] = pj + upd;
  }
}

}  // namespace jkref
