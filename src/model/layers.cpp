#include "model/layers.hpp"

#include <algorithm>
#include <vector>

#include "core/error.hpp"
#include "core/fast_exp.hpp"
#include "core/kokkos_compat.hpp"

namespace jetmoe {

using Policy2 = Kokkos::MDRangePolicy<ExecSpace, Kokkos::Rank<2>>;
using Policy3 = Kokkos::MDRangePolicy<ExecSpace, Kokkos::Rank<3>>;

namespace {
// Host backends give each thread a block of this many columns in the column reductions below, so
// that the inner loop runs along rows of contiguous memory (and vectorises); a device takes one
// column per thread. Each column is summed over rows in order either way: the same bits.
constexpr std::int64_t column_block = host_memory ? 64 : 1;
// Query positions per block of the GEMM-based attention (forward and backward).
constexpr std::int64_t attention_query_block = 64;
}  // namespace

std::int64_t flatten_ids(const IntView2& ids, std::int64_t vocab, const IntView1& flat) {
  const std::int64_t B = std::int64_t(ids.extent(0)), T = std::int64_t(ids.extent(1));
  JETMOE_ASSERT(std::int64_t(flat.extent(0)) == B * T, "flatten_ids: shapes");
  std::int64_t bad = 0;
  Kokkos::parallel_reduce(
      "flatten_ids", Policy2({0, 0}, {B, T}),
      KOKKOS_LAMBDA(std::int64_t b, std::int64_t t, std::int64_t & n) {
        const std::int32_t id = ids(b, t);
        flat(b * T + t) = id;
        n += (id < 0 || id >= vocab);
      },
      bad);
  return bad;
}

IntView2 sequence_positions(std::int64_t B, std::int64_t T, std::int64_t past) {
  IntView2 positions("positions", B, T);
  Kokkos::parallel_for(
      "positions", Policy2({0, 0}, {B, T}),
      KOKKOS_LAMBDA(std::int64_t b, std::int64_t t) { positions(b, t) = std::int32_t(past + t); });
  return positions;
}

template <class R>
void embedding_forward(const IntView1& ids, const Mat<R>& emb, const Mat<R>& x) {
  const std::int64_t N = std::int64_t(x.extent(0)), D = std::int64_t(x.extent(1));
  JETMOE_ASSERT(ids.extent(0) == x.extent(0) && emb.extent(1) == x.extent(1), "embedding_forward: shapes");
  Kokkos::parallel_for(
      "embedding_forward", Policy2({0, 0}, {N, D}),
      KOKKOS_LAMBDA(std::int64_t t, std::int64_t c) { x(t, c) = emb(ids(t), c); });
}

template <class R>
void embedding_backward(const IntView1& ids, const Mat<R>& dx, const Mat<R>& demb) {
  const std::int64_t N = std::int64_t(dx.extent(0)), D = std::int64_t(dx.extent(1)), V = std::int64_t(demb.extent(0));
  JETMOE_ASSERT(ids.extent(0) == dx.extent(0) && demb.extent(1) == dx.extent(1), "embedding_backward: shapes");
  // Tokens grouped by id (a counting sort on the host, tokens ascending within an id), then one
  // thread per (distinct id, column) sums its tokens in order: deterministic, no atomics.
  auto h_ids = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), ids);
  std::vector<std::int64_t> count(std::size_t(V) + 1, 0);
  for (std::int64_t t = 0; t < N; ++t) ++count[std::size_t(h_ids(t)) + 1];
  std::vector<std::int32_t> distinct;
  for (std::int64_t v = 0; v < V; ++v)
    if (count[std::size_t(v) + 1] > 0) distinct.push_back(std::int32_t(v));
  for (std::int64_t v = 0; v < V; ++v) count[std::size_t(v) + 1] += count[std::size_t(v)];
  const std::int64_t U = std::int64_t(distinct.size());
  IntView1 order("emb_order", std::size_t(N)), ids_u("emb_distinct", std::size_t(U)), start("emb_start", std::size_t(U + 1));
  auto h_order = Kokkos::create_mirror_view(order);
  auto h_u = Kokkos::create_mirror_view(ids_u);
  auto h_start = Kokkos::create_mirror_view(start);
  {
    std::vector<std::int64_t> next(count.begin(), count.end() - 1);
    for (std::int64_t t = 0; t < N; ++t) h_order(next[std::size_t(h_ids(t))]++) = std::int32_t(t);
    for (std::int64_t u = 0; u < U; ++u) {
      h_u(u) = distinct[std::size_t(u)];
      h_start(u) = std::int32_t(count[std::size_t(distinct[std::size_t(u)])]);
    }
    h_start(U) = std::int32_t(N);
  }
  Kokkos::deep_copy(order, h_order);
  Kokkos::deep_copy(ids_u, h_u);
  Kokkos::deep_copy(start, h_start);
  Kokkos::parallel_for(
      "embedding_backward", Policy2({0, 0}, {U, D}), KOKKOS_LAMBDA(std::int64_t u, std::int64_t c) {
        R acc = 0;
        for (std::int32_t i = start(u); i < start(u + 1); ++i) acc += dx(order(i), c);
        demb(ids_u(u), c) += acc;
      });
}

template <class R>
void rmsnorm_forward(const Mat<R>& x, const Vec<R>& w, double eps_, const Mat<R>& y, const Vec<R>& rstd) {
  const R eps = R(eps_);
  const std::int64_t N = std::int64_t(x.extent(0)), D = std::int64_t(x.extent(1));
  JETMOE_ASSERT(w.extent(0) == x.extent(1) && y.extent(0) == x.extent(0) && y.extent(1) == x.extent(1),
                "rmsnorm_forward: shapes");
  const bool keep = rstd.extent(0) == x.extent(0);
  Kokkos::parallel_for(
      "rmsnorm_forward", Range(0, N), KOKKOS_LAMBDA(std::int64_t t) {
        R ss = 0;
        for (std::int64_t c = 0; c < D; ++c) ss += x(t, c) * x(t, c);
        const R r = R(1) / kmath::sqrt(ss / R(D) + eps);
        for (std::int64_t c = 0; c < D; ++c) y(t, c) = w(c) * (x(t, c) * r);
        if (keep) rstd(t) = r;
      });
}

template <class R>
void rmsnorm_backward(const Mat<R>& x, const Vec<R>& w, const Vec<R>& rstd, const Mat<R>& dy, const Mat<R>& dx,
                      const Vec<R>& dw) {
  const std::int64_t N = std::int64_t(x.extent(0)), D = std::int64_t(x.extent(1));
  JETMOE_ASSERT(w.extent(0) == x.extent(1) && rstd.extent(0) == x.extent(0) && dy.extent(0) == x.extent(0) &&
                    dy.extent(1) == x.extent(1) && dx.extent(0) == x.extent(0) && dx.extent(1) == x.extent(1) &&
                    dw.extent(0) == w.extent(0),
                "rmsnorm_backward: shapes");
  Kokkos::parallel_for(
      "rmsnorm_backward", Range(0, N), KOKKOS_LAMBDA(std::int64_t t) {
        const R r = rstd(t);
        R s = 0;
        for (std::int64_t c = 0; c < D; ++c) s += w(c) * dy(t, c) * x(t, c);
        const R coef = r * r * r * s / R(D);
        for (std::int64_t c = 0; c < D; ++c) dx(t, c) += r * w(c) * dy(t, c) - x(t, c) * coef;
      });
  const std::int64_t cb = column_block;
  Kokkos::parallel_for(
      "rmsnorm_backward_weight", Range(0, (D + cb - 1) / cb), KOKKOS_LAMBDA(std::int64_t block) {
        const std::int64_t c0 = block * cb, n = D - c0 < cb ? D - c0 : cb;
        R acc[column_block] = {};
        for (std::int64_t t = 0; t < N; ++t) {
          const R r = rstd(t);
          const R* const dyt = &dy(t, c0);
          const R* const xt = &x(t, c0);
          for (std::int64_t i = 0; i < n; ++i) acc[i] += dyt[i] * xt[i] * r;
        }
        for (std::int64_t i = 0; i < n; ++i) dw(c0 + i) += acc[i];
      });
}

template <class R>
void rope_tables(const IntView2& pos, double theta, std::int64_t head_dim, const Ten3<R>& cos, const Ten3<R>& sin) {
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
        cos(b, t, i) = R(kmath::cos(angle));
        sin(b, t, i) = R(kmath::sin(angle));
      });
}

template <class R>
void rope_forward(const Ten4<R>& x, const Ten3<R>& cos, const Ten3<R>& sin, std::int64_t offset) {
  const std::int64_t B = std::int64_t(x.extent(0)), T = std::int64_t(cos.extent(1)), H = std::int64_t(x.extent(2)),
                     d = std::int64_t(x.extent(3));
  const std::int64_t half = d / 2;
  JETMOE_ASSERT(d % 2 == 0 && cos.extent(0) == x.extent(0) && offset >= 0 &&
                    offset + T <= std::int64_t(x.extent(1)) && std::int64_t(cos.extent(2)) == half,
                "rope_forward: shapes");
  Kokkos::parallel_for(
      "rope_forward", Policy3({0, 0, 0}, {B, T, H}), KOKKOS_LAMBDA(std::int64_t b, std::int64_t t, std::int64_t h) {
        R* const row = &x(b, offset + t, h, 0);
        for (std::int64_t i = 0; i < half; ++i) {
          const R c = cos(b, t, i), s = sin(b, t, i);
          const R x1 = row[i], x2 = row[i + half];
          row[i] = x1 * c - x2 * s;
          row[i + half] = x2 * c + x1 * s;
        }
      });
}

template <class R>
void rope_backward(const Ten4<R>& x, const Ten3<R>& cos, const Ten3<R>& sin) {
  const std::int64_t B = std::int64_t(x.extent(0)), T = std::int64_t(x.extent(1)), H = std::int64_t(x.extent(2)),
                     d = std::int64_t(x.extent(3));
  const std::int64_t half = d / 2;
  JETMOE_ASSERT(d % 2 == 0 && cos.extent(0) == x.extent(0) && cos.extent(1) == x.extent(1) &&
                    std::int64_t(cos.extent(2)) == half,
                "rope_backward: shapes");
  Kokkos::parallel_for(
      "rope_backward", Policy3({0, 0, 0}, {B, T, H}), KOKKOS_LAMBDA(std::int64_t b, std::int64_t t, std::int64_t h) {
        for (std::int64_t i = 0; i < half; ++i) {
          const R c = cos(b, t, i), s = sin(b, t, i);
          const R g1 = x(b, t, h, i), g2 = x(b, t, h, i + half);
          x(b, t, h, i) = g1 * c + g2 * s;
          x(b, t, h, i + half) = g2 * c - g1 * s;
        }
      });
}

namespace {

// Over row[begin, end): m = max(row * scale), row <- exp(row * scale - m), sum = the sum of those
// (8 interleaved lanes added in a fixed order: independent chains the compiler vectorises).
template <class R>
struct RowMaxSum {
  R max, sum;
};
template <class R>
KOKKOS_INLINE_FUNCTION RowMaxSum<R> softmax_in_place(R* row, std::int64_t begin, std::int64_t end, R scale) {
  constexpr int lanes = 8;
  R mx[lanes], acc[lanes];
  for (int l = 0; l < lanes; ++l) mx[l] = R(-3.0e38), acc[l] = 0;
  std::int64_t s = begin;
  for (; s + lanes <= end; s += lanes)
    for (int l = 0; l < lanes; ++l) {
      const R v = row[s + l] * scale;
      mx[l] = v > mx[l] ? v : mx[l];
    }
  for (int l = 0; s < end; ++s, ++l) {
    const R v = row[s] * scale;
    mx[l] = v > mx[l] ? v : mx[l];
  }
  R m = mx[0];
  for (int l = 1; l < lanes; ++l) m = mx[l] > m ? mx[l] : m;
  for (s = begin; s < end; ++s) row[s] = fast_exp(row[s] * scale - m);
  for (s = begin; s + lanes <= end; s += lanes)
    for (int l = 0; l < lanes; ++l) acc[l] += row[s + l];
  for (int l = 0; s < end; ++s, ++l) acc[l] += row[s];
  return RowMaxSum<R>{m, ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))};
}

// o[c] += a x[c] for c < n (o and x do not overlap).
template <class R>
KOKKOS_INLINE_FUNCTION void add_scaled(R* KOKKOS_RESTRICT o, const R* KOKKOS_RESTRICT x, R a, std::int64_t n) {
  for (std::int64_t c = 0; c < n; ++c) o[c] += a * x[c];
}

// Each row of a few queries (decoding) against its keys in two passes over them: the scores into a
// row of scratch (dot products of contiguous d-vectors in 8 independent lanes), the masked softmax
// as in the prefill path, then out = sum_s p_s v_s, one contiguous d-vector at a time.
template <class R>
void attention_direct(const Ten4<R>& q, const Ten4<R>& k, const Ten4<R>& v, std::int64_t past, const IntView1& key_start,
                      const Ten4<R>& out, const Ten3<R>& lse) {
  const std::int64_t B = std::int64_t(q.extent(0)), Tq = std::int64_t(q.extent(1)), Hq = std::int64_t(q.extent(2)),
                     d = std::int64_t(q.extent(3)), Hkv = std::int64_t(k.extent(2)), Tk = past + Tq;
  const bool has_start = key_start.extent(0) == q.extent(0);
  const bool keep_lse = lse.extent(0) == q.extent(0);
  const R scale = R(1) / kmath::sqrt(R(d));
  const Mat<R> scores(Kokkos::view_alloc("attn_direct_scores", Kokkos::WithoutInitializing), B * Hq * Tq, Tk);
  Kokkos::parallel_for(
      "attention_forward", Policy3({0, 0, 0}, {B, Hq, Tq}), KOKKOS_LAMBDA(std::int64_t b, std::int64_t i, std::int64_t t) {
        const std::int64_t h = i % Hkv;  // tiled K/V heads
        const std::int64_t first = has_start ? std::int64_t(key_start(b)) : 0;
        const std::int64_t last = past + t;  // inclusive
        R* const row = &scores((b * Hq + i) * Tq + t, 0);
        const R* const qr = &q(b, t, i, 0);
        for (std::int64_t s = first; s <= last; ++s) row[s] = dot_lanes(qr, &k(b, s, h, 0), d);
        const RowMaxSum<R> ms = softmax_in_place(row, first, last + 1, scale);
        R* const o = &out(b, t, i, 0);
        for (std::int64_t c = 0; c < d; ++c) o[c] = 0;
        for (std::int64_t s = first; s <= last; ++s) add_scaled(o, &v(b, s, h, 0), row[s], d);
        const R inv = ms.sum > R(0) ? R(1) / ms.sum : R(0);
        for (std::int64_t c = 0; c < d; ++c) o[c] *= inv;
        if (keep_lse) lse(b, i, t) = ms.max + kmath::log(ms.sum);
      });
}

// Prefill: per sequence b and shared K/V head h, the k query heads that use h (i = j*H_kv + h) over a
// block of queries become one matrix [rows, d]; scores = Q K^T and out = P V are two GEMMs (the
// vendor BLAS), with the masked softmax between them. Scores are held for a block of query rows at a
// time (at most ~16M floats), never for the whole sequence at once.
template <class R>
void attention_blocked(const Ten4<R>& q, const Ten4<R>& k, const Ten4<R>& v, std::int64_t past, const IntView1& key_start,
                       const Ten4<R>& out, const Ten3<R>& lse) {
  const std::int64_t B = std::int64_t(q.extent(0)), Tq = std::int64_t(q.extent(1)), Hq = std::int64_t(q.extent(2)),
                     d = std::int64_t(q.extent(3)), Hkv = std::int64_t(k.extent(2)), slots = Hq / Hkv;
  const std::int64_t Tk = past + Tq;
  const bool has_start = key_start.extent(0) == q.extent(0);
  const bool keep_lse = lse.extent(0) == q.extent(0);
  const R scale = R(1) / kmath::sqrt(R(d));
  // Blocks of at most attention_query_block positions: a block multiplies only the keys it can see,
  // which skips most of the masked upper triangle of the causal score matrix.
  const std::int64_t block_t = std::max<std::int64_t>(
      1, std::min({Tq, attention_query_block, (std::int64_t(1) << 24) / (Tk * slots)}));
  Mat<R> keys("attn_keys", Tk, d), values("attn_values", Tk, d);
  Mat<R> queries("attn_queries", block_t * slots, d), context("attn_context", block_t * slots, d);
  Vec<R> score_storage(Kokkos::view_alloc("attn_scores", Kokkos::WithoutInitializing), std::size_t(block_t * slots * Tk));
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
        const Mat<R> qb = rows(queries, 0, rows_n), cb = rows(context, 0, rows_n);
        Kokkos::parallel_for(
            "attn_gather_q", Policy2({0, 0}, {rows_n, d}), KOKKOS_LAMBDA(std::int64_t r, std::int64_t c) {
              qb(r, c) = q(b, t0 + r / slots, (r % slots) * Hkv + h, c);
            });
        // scores = Q K^T over the visible keys (a contiguous leading block of rows of `keys`).
        const Mat<R> kvis = rows(keys, 0, key_end), vvis = rows(values, 0, key_end);
        const Mat<R> sc(score_storage.data(), rows_n, key_end);  // contiguous [rows_n, key_end]
        linear(qb, kvis, sc);
        Kokkos::parallel_for(
            "attn_softmax", Range(0, rows_n), KOKKOS_LAMBDA(std::int64_t r) {
              const std::int64_t last = past + t0 + r / slots;  // inclusive
              R* const row = &sc(r, 0);
              const RowMaxSum<R> ms = softmax_in_place(row, first, last + 1, scale);
              for (std::int64_t s = 0; s < first; ++s) row[s] = 0;
              for (std::int64_t s = last + 1; s < key_end; ++s) row[s] = 0;
              const R inv = ms.sum > R(0) ? R(1) / ms.sum : R(0);
              for (std::int64_t s = first; s <= last; ++s) row[s] *= inv;
              if (keep_lse) lse(b, (r % slots) * Hkv + h, t0 + r / slots) = ms.max + kmath::log(ms.sum);
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

template <class R>
void attention_forward(const Ten4<R>& q, const Ten4<R>& k, const Ten4<R>& v, std::int64_t past,
                       const IntView1& key_start, const Ten4<R>& out, const Ten3<R>& lse) {
  const std::int64_t Tq = std::int64_t(q.extent(1)), Hq = std::int64_t(q.extent(2)), d = std::int64_t(q.extent(3)),
                     Hkv = std::int64_t(k.extent(2));
  JETMOE_ASSERT(k.extent(0) == q.extent(0) && k.extent(3) == q.extent(3) && v.extent(2) == k.extent(2) &&
                    Hq % Hkv == 0 && std::int64_t(k.extent(1)) >= past + Tq && out.extent(3) == std::size_t(d),
                "attention_forward: shapes");
  // A handful of queries (decoding): the direct kernel; a prompt: GEMMs.
  if (Tq < 8) attention_direct(q, k, v, past, key_start, out, lse);
  else attention_blocked(q, k, v, past, key_start, out, lse);
}

template <class R>
void attention_backward(const Ten4<R>& q, const Ten4<R>& k, const Ten4<R>& v, const Ten4<R>& out,
                        const Ten3<R>& lse, const Ten4<R>& dout, const Ten4<R>& dq, const Ten4<R>& dk,
                        const Ten4<R>& dv) {
  const std::int64_t B = std::int64_t(q.extent(0)), T = std::int64_t(q.extent(1)), Hq = std::int64_t(q.extent(2)),
                     d = std::int64_t(q.extent(3)), Hkv = std::int64_t(k.extent(2)), slots = Hq / Hkv;
  JETMOE_ASSERT(k.extent(0) == q.extent(0) && std::int64_t(k.extent(1)) == T && k.extent(3) == q.extent(3) &&
                    v.extent(2) == k.extent(2) && Hq % Hkv == 0 && lse.extent(1) == q.extent(2) &&
                    lse.extent(2) == q.extent(1) && dq.extent(2) == q.extent(2) && dk.extent(2) == k.extent(2),
                "attention_backward: shapes");
  const R scale = R(1) / kmath::sqrt(R(d));
  // Per (sequence b, K/V head h): the k query heads on h over a block of query positions are one
  // matrix of rows r = (t - t0) * slots + j, as in the forward. With P = exp(S scale - lse):
  //   dV += P^T dO,  dP = dO V^T,  dS = P (dP - rowsum(dO o O)) scale,  dQ = dS K,  dK += dS^T Q.
  const std::int64_t block_t =
      std::max<std::int64_t>(1, std::min({T, attention_query_block, (std::int64_t(1) << 22) / (T * slots)}));
  const std::int64_t max_rows = block_t * slots;
  Mat<R> keys("attn_keys", T, d), values("attn_values", T, d), dkeys("attn_dkeys", T, d), dvalues("attn_dvalues", T, d);
  Mat<R> queries("attn_queries", max_rows, d), douts("attn_douts", max_rows, d), dqueries("attn_dqueries", max_rows, d);
  Vec<R> delta_storage("attn_delta", max_rows), lse_storage("attn_lse", max_rows);
  Vec<R> p_storage(Kokkos::view_alloc("attn_probs", Kokkos::WithoutInitializing), std::size_t(max_rows * T));
  Vec<R> dp_storage(Kokkos::view_alloc("attn_dprobs", Kokkos::WithoutInitializing), std::size_t(max_rows * T));
  for (std::int64_t b = 0; b < B; ++b) {
    for (std::int64_t h = 0; h < Hkv; ++h) {
      Kokkos::parallel_for(
          "attn_bwd_gather_kv", Policy2({0, 0}, {T, d}), KOKKOS_LAMBDA(std::int64_t s, std::int64_t c) {
            keys(s, c) = k(b, s, h, c);
            values(s, c) = v(b, s, h, c);
            dkeys(s, c) = 0;
            dvalues(s, c) = 0;
          });
      for (std::int64_t t0 = 0; t0 < T; t0 += block_t) {
        const std::int64_t nt = std::min(block_t, T - t0), rows_n = nt * slots, key_end = t0 + nt;
        const Mat<R> qb = rows(queries, 0, rows_n), gb = rows(douts, 0, rows_n), dqb = rows(dqueries, 0, rows_n);
        const Vec<R> delta = delta_storage, lse_b = lse_storage;
        Kokkos::parallel_for(
            "attn_bwd_gather_q", Range(0, rows_n), KOKKOS_LAMBDA(std::int64_t r) {
              const std::int64_t t = t0 + r / slots, i = (r % slots) * Hkv + h;
              R acc = 0;
              for (std::int64_t c = 0; c < d; ++c) {
                qb(r, c) = q(b, t, i, c);
                gb(r, c) = dout(b, t, i, c);
                acc += dout(b, t, i, c) * out(b, t, i, c);
              }
              delta(r) = acc;
              lse_b(r) = lse(b, i, t);
            });
        const Mat<R> kvis = rows(keys, 0, key_end), vvis = rows(values, 0, key_end);
        const Mat<R> dkvis = rows(dkeys, 0, key_end), dvvis = rows(dvalues, 0, key_end);
        const Mat<R> p(p_storage.data(), rows_n, key_end), dp(dp_storage.data(), rows_n, key_end);
        linear(qb, kvis, p);
        Kokkos::parallel_for(
            "attn_bwd_probs", Range(0, rows_n), KOKKOS_LAMBDA(std::int64_t r) {
              const std::int64_t last = t0 + r / slots;
              R* const row = &p(r, 0);
              const R shift = lse_b(r);
              for (std::int64_t s = 0; s <= last; ++s) row[s] = fast_exp(row[s] * scale - shift);
              for (std::int64_t s = last + 1; s < key_end; ++s) row[s] = 0;
            });
        matmul_tn(p, gb, dvvis, 1.0);
        linear(gb, vvis, dp);
        Kokkos::parallel_for(
            "attn_bwd_dscores", Range(0, rows_n), KOKKOS_LAMBDA(std::int64_t r) {
              const std::int64_t last = t0 + r / slots;  // p is 0 beyond the causal limit
              R* const drow = &dp(r, 0);
              const R* const prow = &p(r, 0);
              const R dr = delta(r);
              for (std::int64_t s = 0; s <= last; ++s) drow[s] = prow[s] * (drow[s] - dr) * scale;
              for (std::int64_t s = last + 1; s < key_end; ++s) drow[s] = 0;
            });
        matmul_nn(dp, kvis, dqb);
        matmul_tn(dp, qb, dkvis, 1.0);
        Kokkos::parallel_for(
            "attn_bwd_scatter_q", Policy2({0, 0}, {rows_n, d}), KOKKOS_LAMBDA(std::int64_t r, std::int64_t c) {
              dq(b, t0 + r / slots, (r % slots) * Hkv + h, c) = dqb(r, c);
            });
      }
      Kokkos::parallel_for(
          "attn_bwd_scatter_kv", Policy2({0, 0}, {T, d}), KOKKOS_LAMBDA(std::int64_t s, std::int64_t c) {
            dk(b, s, h, c) = dkeys(s, c);
            dv(b, s, h, c) = dvalues(s, c);
          });
    }
  }
}

template <class R>
void swiglu_forward(const Mat<R>& z, const Mat<R>& h) {
  const std::int64_t M = std::int64_t(h.extent(0)), F = std::int64_t(h.extent(1));
  JETMOE_ASSERT(z.extent(0) == h.extent(0) && z.extent(1) == 2 * h.extent(1), "swiglu_forward: shapes");
  Kokkos::parallel_for(
      "swiglu_forward", Range(0, M), KOKKOS_LAMBDA(std::int64_t r) {
        const R* const zr = &z(r, 0);
        R* const hr = &h(r, 0);
        for (std::int64_t c = 0; c < F; ++c) {
          const R a = zr[c], g = zr[c + F];
          hr[c] = a / (R(1) + fast_exp(-a)) * g;
        }
      });
}

template <class R>
void swiglu_backward(const Mat<R>& z, const Mat<R>& dh, const Mat<R>& dz) {
  const std::int64_t M = std::int64_t(dh.extent(0)), F = std::int64_t(dh.extent(1));
  JETMOE_ASSERT(z.extent(0) == dh.extent(0) && z.extent(1) == 2 * dh.extent(1) && dz.extent(0) == z.extent(0) &&
                    dz.extent(1) == z.extent(1),
                "swiglu_backward: shapes");
  Kokkos::parallel_for(
      "swiglu_backward", Range(0, M), KOKKOS_LAMBDA(std::int64_t r) {
        const R* const zr = &z(r, 0);
        const R* const dhr = &dh(r, 0);
        R* const dzr = &dz(r, 0);
        for (std::int64_t c = 0; c < F; ++c) {
          const R a = zr[c], g = zr[c + F], sig = R(1) / (R(1) + fast_exp(-a));
          dzr[c] = dhr[c] * g * sig * (R(1) + a * (R(1) - sig));
          dzr[c + F] = dhr[c] * a * sig;
        }
      });
}

template <class R>
void add_inplace(const Mat<R>& x, const Mat<R>& y) {
  const std::int64_t N = std::int64_t(x.extent(0)), D = std::int64_t(x.extent(1));
  Kokkos::parallel_for(
      "add_inplace", Policy2({0, 0}, {N, D}), KOKKOS_LAMBDA(std::int64_t t, std::int64_t c) { x(t, c) += y(t, c); });
}

template <class R>
void bias_backward(const Mat<R>& dy, const Vec<R>& db) {
  const std::int64_t N = std::int64_t(dy.extent(0)), D = std::int64_t(dy.extent(1));
  JETMOE_ASSERT(db.extent(0) == dy.extent(1), "bias_backward: shapes");
  const std::int64_t cb = column_block;
  Kokkos::parallel_for(
      "bias_backward", Range(0, (D + cb - 1) / cb), KOKKOS_LAMBDA(std::int64_t block) {
        const std::int64_t c0 = block * cb, n = D - c0 < cb ? D - c0 : cb;
        R acc[column_block] = {};
        for (std::int64_t t = 0; t < N; ++t) {
          const R* const dyt = &dy(t, c0);
          for (std::int64_t i = 0; i < n; ++i) acc[i] += dyt[i];
        }
        for (std::int64_t i = 0; i < n; ++i) db(c0 + i) += acc[i];
      });
}

#define JETMOE_INSTANTIATE(R)                                                                                      \
  template void embedding_forward<R>(const IntView1&, const Mat<R>&, const Mat<R>&);                              \
  template void embedding_backward<R>(const IntView1&, const Mat<R>&, const Mat<R>&);                             \
  template void rmsnorm_forward<R>(const Mat<R>&, const Vec<R>&, double, const Mat<R>&, const Vec<R>&);           \
  template void rmsnorm_backward<R>(const Mat<R>&, const Vec<R>&, const Vec<R>&, const Mat<R>&, const Mat<R>&,    \
                                    const Vec<R>&);                                                               \
  template void rope_tables<R>(const IntView2&, double, std::int64_t, const Ten3<R>&, const Ten3<R>&);             \
  template void rope_forward<R>(const Ten4<R>&, const Ten3<R>&, const Ten3<R>&, std::int64_t);                    \
  template void rope_backward<R>(const Ten4<R>&, const Ten3<R>&, const Ten3<R>&);                                 \
  template void attention_forward<R>(const Ten4<R>&, const Ten4<R>&, const Ten4<R>&, std::int64_t,                \
                                     const IntView1&, const Ten4<R>&, const Ten3<R>&);                            \
  template void attention_backward<R>(const Ten4<R>&, const Ten4<R>&, const Ten4<R>&, const Ten4<R>&,             \
                                      const Ten3<R>&, const Ten4<R>&, const Ten4<R>&, const Ten4<R>&,             \
                                      const Ten4<R>&);                                                            \
  template void swiglu_forward<R>(const Mat<R>&, const Mat<R>&);                                                  \
  template void swiglu_backward<R>(const Mat<R>&, const Mat<R>&, const Mat<R>&);                                  \
  template void add_inplace<R>(const Mat<R>&, const Mat<R>&);                                                      \
  template void bias_backward<R>(const Mat<R>&, const Vec<R>&);
JETMOE_INSTANTIATE(float)
JETMOE_INSTANTIATE(double)
#undef JETMOE_INSTANTIATE

}  // namespace jetmoe
