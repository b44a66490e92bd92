// The forward layers against plain double-precision loops written from the definitions in
// jetmoe-spec.md section 3 (the HF parity tests check the whole model against transformers).
#include <catch2/catch.hpp>

#include <cmath>
#include <random>
#include <vector>

#include "core/fast_exp.hpp"
#include "model/layers.hpp"
#include "moe/routing.hpp"

using namespace jetmoe;

namespace {
std::mt19937 rng(20261122);

template <class V>
void fill_random(const V& v, float scale = 1.0f) {
  auto h = Kokkos::create_mirror_view(v);
  float* p = h.data();
  std::normal_distribution<float> dist(0.0f, scale);
  for (std::size_t i = 0; i < h.size(); ++i) p[i] = dist(rng);
  Kokkos::deep_copy(v, h);
}

template <class V>
std::vector<float> to_host(const V& v) {
  auto h = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), v);
  return std::vector<float>(h.data(), h.data() + h.size());
}

double rel_err(double a, double b) { return std::fabs(a - b) / std::max(1e-6, std::fabs(b)); }
}  // namespace

TEST_CASE("fast_exp: within 2 ulp of the exact exponential, saturating outside float's range", "[unit][layers]") {
  // Arguments spaced 0.1% apart over [-87.3, 88.3] (and densely near 0) against exp in double, in ulps
  // of the correctly rounded result.
  double worst = 0;
  std::uint32_t checked = 0;
  for (float x = -87.3f; x < 88.3f; x = std::nextafter(x + 1e-3f * std::abs(x) + 1e-4f, 100.0f)) {
    const double exact = std::exp(double(x));
    const float rounded = float(exact);
    const double ulp = double(std::nextafter(rounded, INFINITY)) - double(rounded);
    worst = std::max(worst, std::abs(double(fast_exp(x)) - exact) / ulp);
    ++checked;
  }
  INFO("checked " << checked << " arguments");
  CHECK(checked > 10000);
  CHECK(worst <= 2.0);
  CHECK(fast_exp(0.0f) == 1.0f);
  // Below the range: at most 2^-126 (what a softmax adds for a masked or hopeless entry); above: huge.
  CHECK(fast_exp(-1000.0f) <= std::ldexp(1.0f, -126));
  CHECK(fast_exp(-INFINITY) <= std::ldexp(1.0f, -126));
  CHECK(fast_exp(100.0f) > 1e38f);
  CHECK(std::isnan(fast_exp(NAN)));
  // Double keeps the library exponential (the finite-difference checks run in double).
  CHECK(fast_exp(0.5) == std::exp(0.5));
}

TEST_CASE("rmsnorm forward matches the definition", "[unit][layers]") {
  const int N = 5, D = 37;
  View2 x("x", N, D), y("y", N, D);
  View1 w("w", D), rstd("rstd", N);
  fill_random(x, 3.0f);
  fill_random(w);
  rmsnorm_forward(x, w, 1e-6f, y, rstd);
  const auto hx = to_host(x), hw = to_host(w), hy = to_host(y), hr = to_host(rstd);
  for (int t = 0; t < N; ++t) {
    double ss = 0;
    for (int c = 0; c < D; ++c) ss += double(hx[t * D + c]) * hx[t * D + c];
    const double r = 1.0 / std::sqrt(ss / D + 1e-6);
    CHECK(rel_err(hr[t], r) < 1e-5);
    for (int c = 0; c < D; ++c) REQUIRE(rel_err(hy[t * D + c], hw[c] * hx[t * D + c] * r) < 1e-5);
  }
}

TEST_CASE("rope rotates half-split pairs by position times inverse frequency", "[unit][layers]") {
  const int B = 2, T = 3, H = 2, d = 8;
  View4 x("x", B, T, H, d);
  IntView2 pos("pos", B, T);
  fill_random(x);
  auto hp = Kokkos::create_mirror_view(pos);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t) hp(b, t) = 7 * b + 3 * t;  // includes position 0
  Kokkos::deep_copy(pos, hp);
  const auto before = to_host(x);
  View3 cos("cos", B, T, d / 2), sin("sin", B, T, d / 2);
  rope_tables(pos, 500.0, d, cos, sin);
  rope_forward(x, cos, sin);
  const auto after = to_host(x);
  for (int b = 0; b < B; ++b)
    for (int t = 0; t < T; ++t)
      for (int h = 0; h < H; ++h)
        for (int i = 0; i < d / 2; ++i) {
          const double angle = hp(b, t) * std::pow(500.0, -2.0 * i / d);
          const std::size_t base = ((std::size_t(b) * T + t) * H + h) * d;
          const double x1 = before[base + i], x2 = before[base + i + d / 2];
          REQUIRE(std::fabs(after[base + i] - (x1 * std::cos(angle) - x2 * std::sin(angle))) < 1e-5);
          REQUIRE(std::fabs(after[base + i + d / 2] - (x2 * std::cos(angle) + x1 * std::sin(angle))) < 1e-5);
        }
}

TEST_CASE("attention: causal softmax with tiled shared K/V heads and left padding", "[unit][layers]") {
  // T < 8 takes the direct (decoding) kernel, T >= 8 the blocked GEMM (prefill) path; T = 150 spans
  // several query blocks, each multiplying only the keys it can see.
  const int T = GENERATE(6, 40, 150);
  const int B = 2, Hkv = 2, k = 3, Hq = Hkv * k, d = 4, past = 2, Tk = past + T;
  View4 q("q", B, T, Hq, d), kc("k", B, Tk, Hkv, d), vc("v", B, Tk, Hkv, d), out("out", B, T, Hq, d);
  View3 lse("lse", B, Hq, T);
  IntView1 start("start", B);
  fill_random(q);
  fill_random(kc);
  fill_random(vc);
  auto hs = Kokkos::create_mirror_view(start);
  hs(0) = 0;
  hs(1) = 3;  // sequence 1 is left-padded by 3 tokens
  Kokkos::deep_copy(start, hs);
  attention_forward(q, kc, vc, past, start, out, lse);
  const auto hq = to_host(q), hk = to_host(kc), hv = to_host(vc), ho = to_host(out), hl = to_host(lse);
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < Hq; ++i)
      for (int t = 0; t < T; ++t) {
        const int h = i % Hkv;  // tiled: query head i uses K/V head i mod H_kv
        std::vector<double> s;
        for (int j = hs(b); j <= past + t; ++j) {
          double dot = 0;
          for (int c = 0; c < d; ++c) dot += double(hq[((b * T + t) * Hq + i) * d + c]) * hk[((b * Tk + j) * Hkv + h) * d + c];
          s.push_back(dot / std::sqrt(double(d)));
        }
        if (s.empty()) {  // a padding query with no visible key: zero output
          for (int c = 0; c < d; ++c) REQUIRE(ho[((b * T + t) * Hq + i) * d + c] == 0.0f);
          continue;
        }
        double m = -1e300, z = 0;
        for (double v : s) m = std::max(m, v);
        for (double v : s) z += std::exp(v - m);
        CHECK(std::fabs(hl[(b * Hq + i) * T + t] - (m + std::log(z))) < 1e-5);
        for (int c = 0; c < d; ++c) {
          double acc = 0;
          for (std::size_t j = 0; j < s.size(); ++j) acc += std::exp(s[j] - m) / z * hv[((b * Tk + hs(b) + int(j)) * Hkv + h) * d + c];
          REQUIRE(std::fabs(ho[((b * T + t) * Hq + i) * d + c] - acc) < 1e-5);
        }
      }
}

TEST_CASE("routing: top-k of logits, softmax over the chosen, grouped dispatch", "[unit][routing]") {
  const int N = 40, D = 9, E = 5, k = 3;
  View2 x("x", N, D), wr("wr", E, D);
  fill_random(x);
  fill_random(wr);
  Routing r;
  route(x, wr, k, r);
  const auto hx = to_host(x), hw = to_host(wr), hg = to_host(r.gates);
  auto he = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), r.experts);
  auto hpos = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), r.position);
  auto htok = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), r.sorted_token);
  auto hslot = Kokkos::create_mirror_view_and_copy(Kokkos::HostSpace(), r.sorted_slot);
  std::vector<int> counts(E, 0);
  for (int t = 0; t < N; ++t) {
    std::vector<std::pair<double, int>> logit;
    for (int e = 0; e < E; ++e) {
      double dot = 0;
      for (int c = 0; c < D; ++c) dot += double(hx[t * D + c]) * hw[e * D + c];
      logit.push_back({dot, e});
    }
    std::stable_sort(logit.begin(), logit.end(), [](auto a, auto b) { return a.first > b.first; });
    double z = 0;
    for (int j = 0; j < k; ++j) z += std::exp(logit[j].first - logit[0].first);
    for (int j = 0; j < k; ++j) {
      REQUIRE(he(t, j) == logit[j].second);
      REQUIRE(std::fabs(hg[t * k + j] - std::exp(logit[j].first - logit[0].first) / z) < 1e-6);
      const int row = hpos(t, j);
      REQUIRE(htok(row) == t);
      REQUIRE(hslot(row) == j);
      counts[he(t, j)]++;
    }
  }
  // Expert e owns rows [offsets[e], offsets[e+1]) and they are its assignments, tokens ascending.
  for (int e = 0; e < E; ++e) {
    REQUIRE(r.offsets[e + 1] - r.offsets[e] == counts[e]);
    for (auto row = r.offsets[e]; row < r.offsets[e + 1]; ++row) {
      REQUIRE(he(htok(row), hslot(row)) == e);
      if (row > r.offsets[e]) REQUIRE(htok(row - 1) <= htok(row));
    }
  }
}

TEST_CASE("swiglu activates the first half", "[unit][layers]") {
  View2 z("z", 3, 8), h("h", 3, 4);
  fill_random(z, 2.0f);
  swiglu_forward(z, h);
  const auto hz = to_host(z), hh = to_host(h);
  for (int r = 0; r < 3; ++r)
    for (int c = 0; c < 4; ++c) {
      const double a = hz[r * 8 + c], g = hz[r * 8 + 4 + c];
      REQUIRE(rel_err(hh[r * 4 + c], a / (1 + std::exp(-a)) * g) < 1e-5);
    }
}
