#pragma once
// CPU double-precision reference of the 'attention' kernels (jetmoe/attention.h): naive
// softmax(Q K^T / sqrt(d)) V with the MoA tiling rule (query head i uses K/V head i mod H_kv), causal
// mask and right padding, its backward (gradients summed over the query heads that share a K/V head),
// and single-token decode against a KV cache. Plain C++17, header-only, no CUDA: compiled by g++ for
// tests/kernel_reference/test_attention.cpp (which proves it by finite differences, closed forms and
// PyTorch / HF fixtures) and by nvcc inside kernels/tests/test_attention.cu.
//
// Layouts (token major, as the kernels): q, out, dout, dq [B, T, Hq, d]; k, v, dk, dv [B, T, H_kv, d];
// lse [B, Hq, T]. seq_len: empty = all T, else B lengths (clamped to [0, T]).
// Padded query rows (t >= len) give out = 0 and lse = -infinity; their dout is ignored.
#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <vector>

namespace jkref {

struct AttentionShape {
  std::int64_t B = 0, T = 0, Hq = 0, Hkv = 0, d = 0;
  std::size_t q_size() const { return static_cast<std::size_t>(B * T * Hq * d); }
  std::size_t kv_size() const { return static_cast<std::size_t>(B * T * Hkv * d); }
  std::size_t lse_size() const { return static_cast<std::size_t>(B * Hq * T); }
  std::size_t q_index(std::int64_t b, std::int64_t t, std::int64_t i, std::int64_t c) const {
    return static_cast<std::size_t>(((b * T + t) * Hq + i) * d + c);
  }
  std::size_t kv_index(std::int64_t b, std::int64_t u, std::int64_t h, std::int64_t c) const {
    return static_cast<std::size_t>(((b * T + u) * Hkv + h) * d + c);
  }
  std::size_t lse_index(std::int64_t b, std::int64_t i, std::int64_t t) const {
    return static_cast<std::size_t>((b * Hq + i) * T + t);
  }
  void validate() const {
    if (B < 0 || T < 0 || Hq < 1 || Hkv < 1 || d < 1 || Hq % Hkv != 0)
      throw std::invalid_argument("jkref attention: bad shape");
  }
};

// The MoA pairing rule: K/V tiled along the head axis (spec section 9), not repeat_interleave.
inline std::int64_t attention_kv_head(std::int64_t query_head, std::int64_t kv_heads) { return query_head % kv_heads; }

inline std::int64_t attention_length(const std::vector<std::int32_t>& seq_len, std::int64_t b, std::int64_t T) {
  if (seq_len.empty()) return T;
  return std::clamp<std::int64_t>(seq_len.at(static_cast<std::size_t>(b)), 0, T);
}

// Probabilities of query row (b, i, t) over keys u = 0..n-1 (n = min(t + 1, len)); returns lse.
inline double attention_row_probs(const std::vector<double>& q, const std::vector<double>& k, const AttentionShape& s,
                                  std::int64_t b, std::int64_t i, std::int64_t t, std::int64_t n,
                                  std::vector<double>& p) {
  const std::int64_t h = attention_kv_head(i, s.Hkv);
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.d));
  p.assign(static_cast<std::size_t>(n), 0.0);
  double m = -std::numeric_limits<double>::infinity();
  for (std::int64_t u = 0; u < n; ++u) {
    double dot = 0.0;
    for (std::int64_t c = 0; c < s.d; ++c) dot += q[s.q_index(b, t, i, c)] * k[s.kv_index(b, u, h, c)];
    p[static_cast<std::size_t>(u)] = dot * scale;
    m = std::max(m, dot * scale);
  }
  double sum = 0.0;
  for (auto& x : p) sum += (x = std::exp(x - m));
  for (auto& x : p) x /= sum;
  return m + std::log(sum);
}

// out [B, T, Hq, d], lse [B, Hq, T] (resized here).
inline void attention_forward(const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& v,
                              const std::vector<std::int32_t>& seq_len, const AttentionShape& s,
                              std::vector<double>& out, std::vector<double>& lse) {
  s.validate();
  if (q.size() != s.q_size() || k.size() != s.kv_size() || v.size() != s.kv_size())
    throw std::invalid_argument("jkref attention_forward: sizes");
  out.assign(s.q_size(), 0.0);
  lse.assign(s.lse_size(), -std::numeric_limits<double>::infinity());
  std::vector<double> p;
  for (std::int64_t b = 0; b < s.B; ++b) {
    const std::int64_t len = attention_length(seq_len, b, s.T);
    for (std::int64_t i = 0; i < s.Hq; ++i) {
      const std::int64_t h = attention_kv_head(i, s.Hkv);
      for (std::int64_t t = 0; t < len; ++t) {
        const std::int64_t n = t + 1;  // t < len, so the causal bound is the tighter one
        lse[s.lse_index(b, i, t)] = attention_row_probs(q, k, s, b, i, t, n, p);
        for (std::int64_t c = 0; c < s.d; ++c) {
          double acc = 0.0;
          for (std::int64_t u = 0; u < n; ++u) acc += p[static_cast<std::size_t>(u)] * v[s.kv_index(b, u, h, c)];
          out[s.q_index(b, t, i, c)] = acc;
        }
      }
    }
  }
}

// Gradients of L = sum(out * dout) (padded query rows excluded): dq [B,T,Hq,d], dk, dv [B,T,H_kv,d].
// Every query head i adds into K/V head i mod H_kv (the transpose of the tiling copy).
inline void attention_backward(const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& v,
                               const std::vector<double>& dout, const std::vector<std::int32_t>& seq_len,
                               const AttentionShape& s, std::vector<double>& dq, std::vector<double>& dk,
                               std::vector<double>& dv) {
  s.validate();
  if (q.size() != s.q_size() || k.size() != s.kv_size() || v.size() != s.kv_size() || dout.size() != s.q_size())
    throw std::invalid_argument("jkref attention_backward: sizes");
  dq.assign(s.q_size(), 0.0);
  dk.assign(s.kv_size(), 0.0);
  dv.assign(s.kv_size(), 0.0);
  const double scale = 1.0 / std::sqrt(static_cast<double>(s.d));
  std::vector<double> p, dp;
  for (std::int64_t b = 0; b < s.B; ++b) {
    const std::int64_t len = attention_length(seq_len, b, s.T);
    for (std::int64_t i = 0; i < s.Hq; ++i) {
      const std::int64_t h = attention_kv_head(i, s.Hkv);
      for (std::int64_t t = 0; t < len; ++t) {
        const std::int64_t n = t + 1;
        attention_row_probs(q, k, s, b, i, t, n, p);
        dp.assign(static_cast<std::size_t>(n), 0.0);
        double delta = 0.0;  // sum_u P dP = rowsum(dout * out)
        for (std::int64_t u = 0; u < n; ++u) {
          double x = 0.0;
          for (std::int64_t c = 0; c < s.d; ++c) x += dout[s.q_index(b, t, i, c)] * v[s.kv_index(b, u, h, c)];
          dp[static_cast<std::size_t>(u)] = x;
          delta += p[static_cast<std::size_t>(u)] * x;
        }
        for (std::int64_t u = 0; u < n; ++u) {
          const double pu = p[static_cast<std::size_t>(u)];
          const double ds = pu * (dp[static_cast<std::size_t>(u)] - delta) * scale;
          for (std::int64_t c = 0; c < s.d; ++c) {
            dq[s.q_index(b, t, i, c)] += ds * k[s.kv_index(b, u, h, c)];
            dk[s.kv_index(b, u, h, c)] += ds * q[s.q_index(b, t, i, c)];
            dv[s.kv_index(b, u, h, c)] += pu * dout[s.q_index(b, t, i, c)];
          }
        }
      }
    }
  }
}

// Decode: q [B, Hq, d]; caches [B, Tmax, H_kv, d]; cache_len [B] (clamped to [0, Tmax]) counts the
// valid rows including the new token; out [B, Hq, d]; lse [B, Hq] (-infinity for an empty cache).
inline void attention_decode(const std::vector<double>& q, const std::vector<double>& k_cache,
                             const std::vector<double>& v_cache, const std::vector<std::int32_t>& cache_len,
                             std::int64_t B, std::int64_t Tmax, std::int64_t Hq, std::int64_t Hkv, std::int64_t d,
                             std::vector<double>& out, std::vector<double>& lse) {
  if (B < 0 || Tmax < 0 || Hq < 1 || Hkv < 1 || d < 1 || Hq % Hkv != 0 ||
      cache_len.size() != static_cast<std::size_t>(B) || q.size() != static_cast<std::size_t>(B * Hq * d) ||
      k_cache.size() != static_cast<std::size_t>(B * Tmax * Hkv * d) || v_cache.size() != k_cache.size())
    throw std::invalid_argument("jkref attention_decode: shape");
  out.assign(static_cast<std::size_t>(B * Hq * d), 0.0);
  lse.assign(static_cast<std::size_t>(B * Hq), -std::numeric_limits<double>::infinity());
  const double scale = 1.0 / std::sqrt(static_cast<double>(d));
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t len = std::clamp<std::int64_t>(cache_len[static_cast<std::size_t>(b)], 0, Tmax);
    for (std::int64_t i = 0; i < Hq; ++i) {
      if (len == 0) continue;
      const std::int64_t h = attention_kv_head(i, Hkv);
      std::vector<double> sc(static_cast<std::size_t>(len));
      double m = -std::numeric_limits<double>::infinity();
      for (std::int64_t u = 0; u < len; ++u) {
        double dot = 0.0;
        for (std::int64_t c = 0; c < d; ++c)
          dot += q[static_cast<std::size_t>((b * Hq + i) * d + c)] *
                 k_cache[static_cast<std::size_t>(((b * Tmax + u) * Hkv + h) * d + c)];
        sc[static_cast<std::size_t>(u)] = dot * scale;
        m = std::max(m, dot * scale);
      }
      double sum = 0.0;
      for (auto& x : sc) sum += (x = std::exp(x - m));
      lse[static_cast<std::size_t>(b * Hq + i)] = m + std::log(sum);
      for (std::int64_t c = 0; c < d; ++c) {
        double acc = 0.0;
        for (std::int64_t u = 0; u < len; ++u)
          acc +=
              sc[static_cast<std::size_t>(u)] * v_cache[static_cast<std::size_t>(((b * Tmax + u) * Hkv + h) * d + c)];
        out[static_cast<std::size_t>((b * Hq + i) * d + c)] = acc / sum;
      }
    }
  }
}

}  // namespace jkref
