#include "model/layers.hpp"

#include "core/error.hpp"
#include "core/kokkos_compat.hpp"

namespace jetmoe {

using Policy2 = Kokkos::MDRangePolicy<ExecSpace, Kokkos::Rank<2>>;
using Policy3 = Kokkos::MDRangePolicy<ExecSpace, Kokkos::Rank<3>>;

void embedding_forward(const IntView1& ids, const View2& emb, const View2& x) {
  const std::int64_t N = std::int64_t(x.extent(0)), D = std::int64_t(x.extent(1));
  JETMOE_ASSERT(ids.extent(0) == x.extent(0) && emb.extent(1) == x.extent(1), "embedding_forward: shapes");
  Kokkos::parallel_for(
      "embedding_forward", Policy2({0, 0}, {N, D}),
      KOKKOS_LAMBDA(std::int64_t t, std::int64_t c) { x(t, c) = emb(ids(t), c); });
}

void rmsnorm_forward(const View2& x, const View1& w, float eps, const View2& y, const View1& rstd) {
  const std::int64_t N = std::int64_t(x.extent(0)), D = std::int64_t(x.extent(1));
  JETMOE_ASSERT(w.extent(0) == x.extent(1) && y.extent(0) == x.extent(0) && y.extent(1) == x.extent(1),
                "rmsnorm_forward: shapes");
  const bool keep = rstd.extent(0) == x.extent(0);
  Kokkos::parallel_for(
      "rmsnorm_forward", Range(0, N), KOKKOS_LAMBDA(std::int64_t t) {
        float ss = 0.0f;
        for (std::int64_t c = 0; c < D; ++c) ss += x(t, c) * x(t, c);
        const float r = 1.0f / kmath::sqrt(ss / float(D) + eps);
        for (std::int64_t c = 0; c < D; ++c) y(t, c) = w(c) * (x(t, c) * r);
        if (keep) rstd(t) = r;
      });
}

void rope_tables(const IntView2& pos, double theta, std::int64_t head_dim, const View3& cos, const View3& sin) {
  const std::int64_t B = std::int64_t(pos.extent(0)), T = std::int64_t(pos.extent(1)), half = head_dim / 2;
  JETMOE_ASSERT(head_dim % 2 == 0 && cos.extent(0) == pos.extent(0) && cos.extent(1) == pos.extent(1) &&
                    std::int64_t(cos.extent(2)) == half && sin.extent(2) == cos.extent(2),
                "rope_tables: shapes");
  const float base = float(theta);
  Kokkos::parallel_for(
      "rope_tables", Policy3({0, 0, 0}, {B, T, half}), KOKKOS_LAMBDA(std::int64_t b, std::int64_t t, std::int64_t i) {
        // As HF: inv_freq = 1 / base^(2i/d) in fp32, angle = pos * inv_freq in fp32.
        const float inv_freq = 1.0f / kmath::pow(base, float(2 * i) / float(2 * half));
        const float angle = float(pos(b, t)) * inv_freq;
        cos(b, t, i) = kmath::cos(angle);
        sin(b, t, i) = kmath::sin(angle);
      });
}

void rope_forward(const View4& x, const View3& cos, const View3& sin) {
  const std::int64_t B = std::int64_t(x.extent(0)), T = std::int64_t(x.extent(1)), H = std::int64_t(x.extent(2)),
                     d = std::int64_t(x.extent(3));
  const std::int64_t half = d / 2;
  JETMOE_ASSERT(d % 2 == 0 && cos.extent(0) == x.extent(0) && cos.extent(1) == x.extent(1) &&
                    std::int64_t(cos.extent(2)) == half,
                "rope_forward: shapes");
  Kokkos::parallel_for(
      "rope_forward", Policy3({0, 0, 0}, {B, T, H}), KOKKOS_LAMBDA(std::int64_t b, std::int64_t t, std::int64_t h) {
        for (std::int64_t i = 0; i < half; ++i) {
          const float c = cos(b, t, i), s = sin(b, t, i);
          const float x1 = x(b, t, h, i), x2 = x(b, t, h, i + half);
          x(b, t, h, i) = x1 * c - x2 * s;
          x(b, t, h, i + half) = x2 * c + x1 * s;
        }
      });
}

namespace {

// One query at a time against its keys, online softmax: for decoding (few queries per sequence).
void attention_direct(const View4& q, const View4& k, const View4& v, std::int64_t past, const IntView1& key_start,
                      const View4& out, const View3& lse) {
  const std::int64_t B = std::int64_t(q.extent(0)), Tq = std::int64_t(q.extent(1)), Hq = std::int64_t(q.extent(2)),
                     d = std::int64_t(q.extent(3)), Hkv = std::int64_t(k.extent(2));
  const bool has_start = key_start.extent(0) == q.extent(0);
  const bool keep_lse = lse.extent(0) == q.extent(0);
  const float scale = 1.0f / kmath::sqrt(float(d));
  Kokkos::parallel_for(
      "attention_forward", Policy3({0, 0, 0}, {B, Hq, Tq}), KOKKOS_LAMBDA(std::int64_t b, std::int64_t i, std::int64_t t) {
        const std::int64_t h = i % Hkv;  // tiled K/V heads
        const std::int64_t first = has_start ? std::int64_t(key_start(b)) : 0;
        const std::int64_t last = past + t;  // inclusive
        for (std::int64_t c = 0; c < d; ++c) out(b, t, i, c) = 0.0f;
        float running_max = -3.0e38f, running_sum = 0.0f;
        for (std::int64_t s = first; s <= last; ++s) {
          float score = 0.0f;
          for (std::int64_t c = 0; c < d; ++c) score += q(b, t, i, c) * k(b, s, h, c);
          score *= scale;
          const float new_max = score > running_max ? score : running_max;
          const float correction = kmath::exp(running_max - new_max);
          const float p = kmath::exp(score - new_max);
          running_sum = running_sum * correction + p;
          for (std::int64_t c = 0; c < d; ++c) out(b, t, i, c) = out(b, t, i, c) * correction + p * v(b, s, h, c);
          running_max = new_max;
        }
        const float inv = running_sum > 0.0f ? 1.0f / running_sum : 0.0f;
        for (std::int64_t c = 0; c < d; ++c) out(b, t, i, c) *= inv;
        if (keep_lse) lse(b, i, t) = running_max + kmath::log(running_sum);
      });
}

// Prefill: per sequence b and shared K/V head h, the k query heads that use h (i = j*H_kv + h) over a
// block of queries become one matrix [rows, d]; scores = Q K^T and out = P V are two GEMMs (the
// vendor BLAS), with the masked softmax between them. Scores are held for a block of query rows at a
// time (at most ~16M floats), never for the whole sequence at once.
void attention_blocked(const View4& q, const View4& k, const View4& v, std::int64_t past, const IntView1& key_start,
                       const View4& out, const View3& lse) {
  const std::int64_t B = std::int64_t(q.extent(0)), Tq = std::int64_t(q.extent(1)), Hq = std::int64_t(q.extent(2)),
                     d = std::int64_t(q.extent(3)), Hkv = std::int64_t(k.extent(2)), slots = Hq / Hkv;
  const std::int64_t Tk = past + Tq;
  const bool has_start = key_start.extent(0) == q.extent(0);
  const bool keep_lse = lse.extent(0) == q.extent(0);
  const float scale = 1.0f / kmath::sqrt(float(d));
  const std::int64_t block_t = std::max<std::int64_t>(1, std::min<std::int64_t>(Tq, (std::int64_t(1) << 24) / (Tk * slots)));
  View2 keys("attn_keys", Tk, d), values("attn_values", Tk, d);
  View2 queries("attn_queries", block_t * slots, d), context("attn_context", block_t * slots, d);
  View1 score_storage(Kokkos::view_alloc("attn_scores", Kokkos::WithoutInitializing), std::size_t(block_t * slots * Tk));
  auto starts = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), has_start ? key_start : IntView1("zero_start", B));
  for (std::int64_t b = 0; b < B; ++b) {
    const std::int64_t first = starts(b);
    for (std::int64_t h = 0; h < Hkv; ++h) {
      Kokkos::parallel_for(
          "attn_gather_kv", Policy2({0, 0}, {Tk, d}), KOKKOS_LAMBDA(std::int64_t s, std::int64_t c) {
            keys(s, c) = k(b, s, h, c);
            values(s, c) = v(b, s, h, c);
          });
      for (std::int64_t t0 = 0; t0 < Tq; t0 += block_t) {
        const std::int64_t nt = std::min(block_t, Tq - t0), rows_n = nt * slots;
        // Keys visible to the block: [first, past + t0 + nt).
        const std::int64_t key_end = past + t0 + nt;
        const View2 qb = rows(queries, 0, rows_n), cb = rows(context, 0, rows_n);
        Kokkos::parallel_for(
            "attn_gather_q", Policy2({0, 0}, {rows_n, d}), KOKKOS_LAMBDA(std::int64_t r, std::int64_t c) {
              qb(r, c) = q(b, t0 + r / slots, (r % slots) * Hkv + h, c);
            });
        // scores = Q K^T over the visible keys (a contiguous leading block of rows of `keys`).
        const View2 kvis = rows(keys, 0, key_end), vvis = rows(values, 0, key_end);
        const View2 sc(score_storage.data(), rows_n, key_end);  // contiguous [rows_n, key_end]
        linear(qb, kvis, sc);
        Kokkos::parallel_for(
            "attn_softmax", Range(0, rows_n), KOKKOS_LAMBDA(std::int64_t r) {
              const std::int64_t last = past + t0 + r / slots;  // inclusive
              float m = -3.0e38f;
              for (std::int64_t s = first; s <= last; ++s) m = kmath::fmax(m, sc(r, s) * scale);
              float z = 0.0f;
              for (std::int64_t s = 0; s < key_end; ++s) {
                const float p = (s >= first && s <= last) ? kmath::exp(sc(r, s) * scale - m) : 0.0f;
                sc(r, s) = p;
                z += p;
              }
              const float inv = z > 0.0f ? 1.0f / z : 0.0f;
              for (std::int64_t s = 0; s < key_end; ++s) sc(r, s) *= inv;
              if (keep_lse) lse(b, (r % slots) * Hkv + h, t0 + r / slots) = m + kmath::log(z);
            });
        matmul_nn(sc, vvis, cb);
        Kokkos::parallel_for(
            "attn_scatter", Policy2({0, 0}, {rows_n, d}), KOKKOS_LAMBDA(std::int64_t r, std::int64_t c) {
              out(b, t0 + r / slots, (r % slots) * Hkv + h, c) = cb(r, c);
            });
      }
    }
  }
}

}  // namespace

void attention_forward(const View4& q, const View4& k, const View4& v, std::int64_t past, const IntView1& key_start,
                       const View4& out, const View3& lse) {
  const std::int64_t Tq = std::int64_t(q.extent(1)), Hq = std::int64_t(q.extent(2)), d = std::int64_t(q.extent(3)),
                     Hkv = std::int64_t(k.extent(2));
  JETMOE_ASSERT(k.extent(0) == q.extent(0) && k.extent(3) == q.extent(3) && v.extent(2) == k.extent(2) &&
                    Hq % Hkv == 0 && std::int64_t(k.extent(1)) >= past + Tq && out.extent(3) == std::size_t(d),
                "attention_forward: shapes");
  // A handful of queries (decoding): the direct kernel; a prompt: GEMMs.
  if (Tq < 8) attention_direct(q, k, v, past, key_start, out, lse);
  else attention_blocked(q, k, v, past, key_start, out, lse);
}

void swiglu_forward(const View2& z, const View2& h) {
  const std::int64_t M = std::int64_t(h.extent(0)), F = std::int64_t(h.extent(1));
  JETMOE_ASSERT(z.extent(0) == h.extent(0) && z.extent(1) == 2 * h.extent(1), "swiglu_forward: shapes");
  Kokkos::parallel_for(
      "swiglu_forward", Policy2({0, 0}, {M, F}), KOKKOS_LAMBDA(std::int64_t r, std::int64_t c) {
        const float a = z(r, c), g = z(r, c + F);
        h(r, c) = a / (1.0f + kmath::exp(-a)) * g;
      });
}

void add_inplace(const View2& x, const View2& y) {
  const std::int64_t N = std::int64_t(x.extent(0)), D = std::int64_t(x.extent(1));
  Kokkos::parallel_for(
      "add_inplace", Policy2({0, 0}, {N, D}), KOKKOS_LAMBDA(std::int64_t t, std::int64_t c) { x(t, c) += y(t, c); });
}

}  // namespace jetmoe
