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

void rope_forward(const View4& x, const IntView2& pos, double theta) {
  const std::int64_t B = std::int64_t(x.extent(0)), T = std::int64_t(x.extent(1)), H = std::int64_t(x.extent(2)),
                     d = std::int64_t(x.extent(3));
  JETMOE_ASSERT(d % 2 == 0 && pos.extent(0) == x.extent(0) && pos.extent(1) == x.extent(1), "rope_forward: shapes");
  const std::int64_t half = d / 2;
  const float base = float(theta);
  Kokkos::parallel_for(
      "rope_forward", Policy3({0, 0, 0}, {B, T, H}), KOKKOS_LAMBDA(std::int64_t b, std::int64_t t, std::int64_t h) {
        const float p = float(pos(b, t));
        for (std::int64_t i = 0; i < half; ++i) {
          // As HF: inv_freq = 1 / base^(2i/d) in fp32, angle = pos * inv_freq in fp32.
          const float inv_freq = 1.0f / kmath::pow(base, float(2 * i) / float(d));
          const float angle = p * inv_freq;
          const float c = kmath::cos(angle), s = kmath::sin(angle);
          const float x1 = x(b, t, h, i), x2 = x(b, t, h, i + half);
          x(b, t, h, i) = x1 * c - x2 * s;
          x(b, t, h, i + half) = x2 * c + x1 * s;
        }
      });
}

void attention_forward(const View4& q, const View4& k, const View4& v, std::int64_t past, const IntView1& key_start,
                       const View4& out, const View3& lse) {
  const std::int64_t B = std::int64_t(q.extent(0)), Tq = std::int64_t(q.extent(1)), Hq = std::int64_t(q.extent(2)),
                     d = std::int64_t(q.extent(3)), Hkv = std::int64_t(k.extent(2));
  JETMOE_ASSERT(k.extent(0) == q.extent(0) && k.extent(3) == q.extent(3) && v.extent(2) == k.extent(2) &&
                    Hq % Hkv == 0 && std::int64_t(k.extent(1)) >= past + Tq,
                "attention_forward: shapes");
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
