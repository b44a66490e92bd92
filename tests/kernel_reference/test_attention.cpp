// Proof of the 'attention' CPU reference (kernels/tests/reference/attention.hpp), which the GPU test
// kernels/tests/test_attention.cu compares the kernels against:
//  - the backward by central finite differences in double precision (with padding, Hq = 2 H_kv and 3 H_kv);
//  - closed forms (T = 1, identical keys -> running mean of V, lse values);
//  - invariants (convex combination, the tiling rule, padding masks, decode == the forward's last row);
//  - fixtures of HF JetMoe's attention core (scripts/oracle/kernel_fixtures/attention.py): fp32 out,
//    lse and gradients, bf16 eager output, and a check that Llama's interleaved pairing does NOT match.
#include <catch2/catch.hpp>

#include "attention.hpp"
#include "fixture.hpp"

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdint>
#include <functional>
#include <random>
#include <vector>

namespace {

using jkref::AttentionShape;

std::vector<double> random_values(std::size_t n, std::mt19937_64& gen, double scale = 1.0) {
  std::normal_distribution<double> dist(0.0, scale);
  std::vector<double> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

double max_abs(const std::vector<double>& v) {
  double m = 0.0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

// L = sum(out * w) over the valid rows (padded rows are zero in out anyway).
double loss(const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& v,
            const std::vector<double>& w, const std::vector<std::int32_t>& len, const AttentionShape& s) {
  std::vector<double> out, lse;
  jkref::attention_forward(q, k, v, len, s, out, lse);
  double l = 0.0;
  for (std::size_t i = 0; i < out.size(); ++i) l += out[i] * w[i];
  return l;
}

// Central differences of every element of x against the analytic gradient g.
void check_fd(std::vector<double>& x, const std::vector<double>& g, const std::function<double()>& f,
              const char* what) {
  const double h = 1e-5;
  double worst = 0.0;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double saved = x[i];
    x[i] = saved + h;
    const double lp = f();
    x[i] = saved - h;
    const double lm = f();
    x[i] = saved;
    const double fd = (lp - lm) / (2 * h);
    worst = std::max(worst, std::fabs(fd - g[i]) / (1e-6 + std::fabs(g[i])));
    INFO(what << "[" << i << "]: fd " << fd << " analytic " << g[i]);
    REQUIRE(std::fabs(fd - g[i]) <= 1e-7 + 1e-6 * std::fabs(g[i]));
  }
  INFO(what << " worst relative error " << worst);
  CHECK(worst < 1e-3);
}

void fd_case(const AttentionShape& s, const std::vector<std::int32_t>& len, std::uint64_t seed, bool one_key = false) {
  std::mt19937_64 gen(seed);
  auto q = random_values(s.q_size(), gen), k = random_values(s.kv_size(), gen), v = random_values(s.kv_size(), gen);
  const auto w = random_values(s.q_size(), gen);
  std::vector<double> dq, dk, dv;
  jkref::attention_backward(q, k, v, w, len, s, dq, dk, dv);
  // a gradient that is identically zero would pass trivially: make sure there is signal
  if (one_key) {  // a softmax over one key is constant: dq = dk = 0 exactly
    REQUIRE(max_abs(dq) == 0.0);
    REQUIRE(max_abs(dk) == 0.0);
  } else {
    REQUIRE(max_abs(dq) > 1e-3);
    REQUIRE(max_abs(dk) > 1e-3);
  }
  REQUIRE(max_abs(dv) > 1e-3);
  const auto f = [&] { return loss(q, k, v, w, len, s); };
  check_fd(q, dq, f, "dq");
  check_fd(k, dk, f, "dk");
  check_fd(v, dv, f, "dv");
}

}  // namespace

TEST_CASE("attention reference backward matches finite differences", "[unit][kernels][attention]") {
  SECTION("Hq = 2 H_kv, no padding") { fd_case({2, 5, 4, 2, 3}, {}, 1); }
  SECTION("Hq = 2 H_kv, right padding (one sequence empty-ish)") { fd_case({3, 6, 4, 2, 4}, {6, 3, 1}, 2); }
  SECTION("Hq = 3 H_kv, padding") { fd_case({2, 4, 6, 2, 2}, {2, 4}, 3); }
  SECTION("T = 1, one head") { fd_case({1, 1, 1, 1, 5}, {}, 4, true); }
}

TEST_CASE("attention reference closed forms", "[unit][kernels][attention]") {
  std::mt19937_64 gen(7);
  SECTION("T = 1: out = v, lse = q.k / sqrt(d)") {
    const AttentionShape s{2, 1, 4, 2, 6};
    auto q = random_values(s.q_size(), gen), k = random_values(s.kv_size(), gen), v = random_values(s.kv_size(), gen);
    std::vector<double> out, lse;
    jkref::attention_forward(q, k, v, {}, s, out, lse);
    for (std::int64_t b = 0; b < s.B; ++b)
      for (std::int64_t i = 0; i < s.Hq; ++i) {
        const std::int64_t h = i % s.Hkv;
        double dot = 0;
        for (std::int64_t c = 0; c < s.d; ++c) {
          CHECK(out[s.q_index(b, 0, i, c)] == v[s.kv_index(b, 0, h, c)]);
          dot += q[s.q_index(b, 0, i, c)] * k[s.kv_index(b, 0, h, c)];
        }
        CHECK(lse[s.lse_index(b, i, 0)] == Approx(dot / std::sqrt(6.0)).epsilon(1e-14));
      }
  }
  SECTION("identical keys: out[t] = mean(v[0..t]), lse = s + log(t + 1)") {
    const AttentionShape s{1, 9, 2, 1, 4};
    auto q = random_values(s.q_size(), gen), v = random_values(s.kv_size(), gen);
    const auto key = random_values(4, gen);
    std::vector<double> k(s.kv_size());
    for (std::int64_t u = 0; u < s.T; ++u)
      for (std::int64_t c = 0; c < 4; ++c) k[s.kv_index(0, u, 0, c)] = key[c];
    std::vector<double> out, lse;
    jkref::attention_forward(q, k, v, {}, s, out, lse);
    for (std::int64_t i = 0; i < s.Hq; ++i)
      for (std::int64_t t = 0; t < s.T; ++t) {
        double dot = 0;
        for (std::int64_t c = 0; c < 4; ++c) dot += q[s.q_index(0, t, i, c)] * key[c];
        CHECK(lse[s.lse_index(0, i, t)] == Approx(dot / 2.0 + std::log(t + 1.0)).epsilon(1e-13));
        for (std::int64_t c = 0; c < 4; ++c) {
          double mean = 0;
          for (std::int64_t u = 0; u <= t; ++u) mean += v[s.kv_index(0, u, 0, c)];
          CHECK(out[s.q_index(0, t, i, c)] == Approx(mean / (t + 1.0)).epsilon(1e-13));
        }
      }
  }
  SECTION("two keys, hand-computed softmax") {
    // d = 1, q = 2 at t = 1, keys 1 and -1, values 10 and 20: scores 2 and -2, p = (e^2, e^-2) / sum.
    const AttentionShape s{1, 2, 1, 1, 1};
    const std::vector<double> q{0.5, 2.0}, k{1.0, -1.0}, v{10.0, 20.0};
    std::vector<double> out, lse;
    jkref::attention_forward(q, k, v, {}, s, out, lse);
    const double p0 = std::exp(2.0) / (std::exp(2.0) + std::exp(-2.0));
    CHECK(out[1] == Approx(10.0 * p0 + 20.0 * (1 - p0)).epsilon(1e-15));
    CHECK(lse[1] == Approx(std::log(std::exp(2.0) + std::exp(-2.0))).epsilon(1e-15));
    CHECK(out[0] == 10.0);
  }
}

TEST_CASE("attention reference invariants", "[unit][kernels][attention]") {
  std::mt19937_64 gen(11);
  const AttentionShape s{2, 7, 6, 3, 5};
  auto q = random_values(s.q_size(), gen, 2.0), k = random_values(s.kv_size(), gen, 2.0),
       v = random_values(s.kv_size(), gen);
  const std::vector<std::int32_t> len{7, 4};
  std::vector<double> out, lse;
  jkref::attention_forward(q, k, v, len, s, out, lse);

  SECTION("each output row lies in the per-column hull of the visible values") {
    for (std::int64_t b = 0; b < s.B; ++b)
      for (std::int64_t t = 0; t < len[b]; ++t)
        for (std::int64_t i = 0; i < s.Hq; ++i)
          for (std::int64_t c = 0; c < s.d; ++c) {
            double lo = 1e300, hi = -1e300;
            for (std::int64_t u = 0; u <= t; ++u) {
              lo = std::min(lo, v[s.kv_index(b, u, i % s.Hkv, c)]);
              hi = std::max(hi, v[s.kv_index(b, u, i % s.Hkv, c)]);
            }
            CHECK(out[s.q_index(b, t, i, c)] >= lo - 1e-12);
            CHECK(out[s.q_index(b, t, i, c)] <= hi + 1e-12);
          }
  }
  SECTION("padded rows: out = 0, lse = -inf; keys beyond len and the future do not matter") {
    for (std::int64_t t = len[1]; t < s.T; ++t)
      for (std::int64_t i = 0; i < s.Hq; ++i) {
        CHECK(std::isinf(lse[s.lse_index(1, i, t)]));
        CHECK(lse[s.lse_index(1, i, t)] < 0);
        for (std::int64_t c = 0; c < s.d; ++c) CHECK(out[s.q_index(1, t, i, c)] == 0.0);
      }
    auto k2 = k, v2 = v;
    for (std::int64_t u = len[1]; u < s.T; ++u)
      for (std::int64_t h = 0; h < s.Hkv; ++h)
        for (std::int64_t c = 0; c < s.d; ++c) {
          k2[s.kv_index(1, u, h, c)] += 3.0;
          v2[s.kv_index(1, u, h, c)] -= 5.0;
        }
    // causality in sequence 0: change the last key / value; rows t < T-1 must not move
    for (std::int64_t h = 0; h < s.Hkv; ++h)
      for (std::int64_t c = 0; c < s.d; ++c) {
        k2[s.kv_index(0, s.T - 1, h, c)] += 1.0;
        v2[s.kv_index(0, s.T - 1, h, c)] += 1.0;
      }
    std::vector<double> out2, lse2;
    jkref::attention_forward(q, k2, v2, len, s, out2, lse2);
    for (std::int64_t b = 0; b < s.B; ++b)
      for (std::int64_t t = 0; t < (b == 0 ? s.T - 1 : s.T); ++t)
        for (std::int64_t i = 0; i < s.Hq; ++i)
          for (std::int64_t c = 0; c < s.d; ++c) CHECK(out2[s.q_index(b, t, i, c)] == out[s.q_index(b, t, i, c)]);
  }
  SECTION("tiling rule: K/V head h feeds exactly the query heads i with i mod H_kv == h") {
    auto v2 = v;
    const std::int64_t h = 1;
    for (std::int64_t u = 0; u < s.T; ++u)
      for (std::int64_t c = 0; c < s.d; ++c) v2[s.kv_index(0, u, h, c)] += 1.0;
    std::vector<double> out2, lse2;
    jkref::attention_forward(q, k, v2, len, s, out2, lse2);
    for (std::int64_t i = 0; i < s.Hq; ++i) {
      // softmax weights sum to 1, so adding 1 to every value of head h adds exactly 1 to its outputs
      const double expected_shift = (i % s.Hkv == h) ? 1.0 : 0.0;
      for (std::int64_t t = 0; t < s.T; ++t)
        for (std::int64_t c = 0; c < s.d; ++c)
          CHECK(out2[s.q_index(0, t, i, c)] - out[s.q_index(0, t, i, c)] == Approx(expected_shift).margin(1e-12));
    }
    CHECK(jkref::attention_kv_head(17, 16) == 1);  // JetMoE-8B: head 17 = slot 1, K/V head 1 (interleave would give 8)
  }
  SECTION("decode equals the forward's row len - 1") {
    const std::int64_t B = 2, Tmax = s.T;
    std::vector<double> qd(static_cast<std::size_t>(B * s.Hq * s.d));
    const std::vector<std::int32_t> cache_len{5, 7};
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t i = 0; i < s.Hq; ++i)
        for (std::int64_t c = 0; c < s.d; ++c) qd[(b * s.Hq + i) * s.d + c] = q[s.q_index(b, cache_len[b] - 1, i, c)];
    std::vector<double> od, ld, of, lf;
    jkref::attention_decode(qd, k, v, cache_len, B, Tmax, s.Hq, s.Hkv, s.d, od, ld);
    jkref::attention_forward(q, k, v, {}, s, of, lf);
    for (std::int64_t b = 0; b < B; ++b)
      for (std::int64_t i = 0; i < s.Hq; ++i) {
        CHECK(ld[b * s.Hq + i] == Approx(lf[s.lse_index(b, i, cache_len[b] - 1)]).epsilon(1e-14));
        for (std::int64_t c = 0; c < s.d; ++c)
          CHECK(od[(b * s.Hq + i) * s.d + c] ==
                Approx(of[s.q_index(b, cache_len[b] - 1, i, c)]).epsilon(1e-13).margin(1e-14));
      }
    std::vector<double> oe, le;
    jkref::attention_decode(qd, k, v, {0, 3}, B, Tmax, s.Hq, s.Hkv, s.d, oe, le);
    CHECK(std::isinf(le[0]));
    CHECK(oe[0] == 0.0);
  }
}

namespace {

struct FixtureCase {
  AttentionShape s;
  std::vector<std::int32_t> len;
  std::vector<double> q, k, v;
};

FixtureCase load(const jkref::Fixture& f) {
  FixtureCase c;
  c.s = {static_cast<std::int64_t>(f.scalar("B")), static_cast<std::int64_t>(f.scalar("T")),
         static_cast<std::int64_t>(f.scalar("Hq")), static_cast<std::int64_t>(f.scalar("Hkv")),
         static_cast<std::int64_t>(f.scalar("d"))};
  for (double x : f.tensor("seq_len").values) c.len.push_back(static_cast<std::int32_t>(x));
  c.q = f.tensor("q").values;
  c.k = f.tensor("k").values;
  c.v = f.tensor("v").values;
  REQUIRE(c.q.size() == c.s.q_size());
  REQUIRE(c.k.size() == c.s.kv_size());
  return c;
}

// max |a - b| over the valid rows (t < len) of a [B, T, H, d] tensor
double max_diff_valid(const std::vector<double>& a, const std::vector<double>& b, const FixtureCase& c,
                      std::int64_t heads) {
  double m = 0;
  for (std::int64_t bi = 0; bi < c.s.B; ++bi)
    for (std::int64_t t = 0; t < c.len[bi]; ++t)
      for (std::int64_t x = 0; x < heads * c.s.d; ++x) {
        const std::size_t i = static_cast<std::size_t>((bi * c.s.T + t) * heads * c.s.d + x);
        m = std::max(m, std::fabs(a[i] - b[i]));
      }
  return m;
}

void check_fp32_fixture(const char* file) {
  const jkref::Fixture f(jkref::fixture_path(std::string("attention/") + file));
  const FixtureCase c = load(f);
  std::vector<double> out, lse;
  jkref::attention_forward(c.q, c.k, c.v, c.len, c.s, out, lse);
  const double scale = max_abs(f.tensor("out").values);
  // fp32 PyTorch vs double: a few fp32 ulps of the output magnitude
  CHECK(max_diff_valid(out, f.tensor("out").values, c, c.s.Hq) <= 2e-6 * scale);
  // the wrong (interleaved) pairing gives visibly different outputs: this comparison would catch it
  CHECK(max_diff_valid(out, f.tensor("out_interleave").values, c, c.s.Hq) > 0.05 * scale);
  const auto& lse_ref = f.tensor("lse").values;
  for (std::int64_t b = 0; b < c.s.B; ++b)
    for (std::int64_t i = 0; i < c.s.Hq; ++i)
      for (std::int64_t t = 0; t < c.len[b]; ++t)
        CHECK(lse[c.s.lse_index(b, i, t)] == Approx(lse_ref[c.s.lse_index(b, i, t)]).epsilon(1e-12).margin(1e-12));
  std::vector<double> dq, dk, dv;
  jkref::attention_backward(c.q, c.k, c.v, f.tensor("dout").values, c.len, c.s, dq, dk, dv);
  const auto& dq_ref = f.tensor("dq").values;
  const auto& dk_ref = f.tensor("dk").values;
  const auto& dv_ref = f.tensor("dv").values;
  const auto close = [](const std::vector<double>& a, const std::vector<double>& b) {
    const double tol = 1e-5 * max_abs(b);
    double worst = 0;
    for (std::size_t i = 0; i < a.size(); ++i) worst = std::max(worst, std::fabs(a[i] - b[i]));
    INFO("worst " << worst << " tolerance " << tol);
    CHECK(worst <= tol);
  };
  close(dq, dq_ref);
  close(dk, dk_ref);
  close(dv, dv_ref);
}

}  // namespace

TEST_CASE("attention reference matches HF JetMoe attention (fp32 fixtures)", "[unit][kernels][attention]") {
  SECTION("right padding, d = 8") { check_fp32_fixture("fp32_pad.txt"); }
  SECTION("full, d = 12") { check_fp32_fixture("fp32_full.txt"); }
}

TEST_CASE("attention reference matches HF JetMoe bf16 eager attention", "[unit][kernels][attention]") {
  const jkref::Fixture f(jkref::fixture_path("attention/bf16_full.txt"));
  const FixtureCase c = load(f);
  std::vector<double> out, lse;
  jkref::attention_forward(c.q, c.k, c.v, c.len, c.s, out, lse);
  const auto& hf = f.tensor("out").values;
  const double vmax = max_abs(c.v);
  // HF bf16 eager: probabilities rounded to bf16 (rel 2^-8), P.V in bf16 with fp32 accumulation,
  // output rounded to bf16 (rel 2^-8): |hf - exact| <= 2^-7 |exact| + 2^-8 max|V| is the worst case.
  double worst = 0;
  for (std::size_t i = 0; i < out.size(); ++i) {
    const double tol = std::ldexp(std::fabs(out[i]), -7) + std::ldexp(vmax, -8);
    worst = std::max(worst, std::fabs(hf[i] - out[i]) / tol);
  }
  INFO("worst error / tolerance = " << worst);
  CHECK(worst <= 1.0);
  CHECK(worst > 0.0);  // HF rounds: an exact match would mean the fixture is not the bf16 path
  CHECK(max_diff_valid(out, f.tensor("out_interleave").values, c, c.s.Hq) > 0.05 * vmax);
}

namespace {

// Round to the nearest bf16 (ties to even) in double, for the emulation below.
double bf16_round(double x) {
  if (x == 0.0 || !std::isfinite(x)) return x;
  int e = 0;
  std::frexp(x, &e);
  const double q = std::ldexp(1.0, std::max(e - 1, -126) - 7);
  return std::nearbyint(x / q) * q;  // default rounding mode: to nearest, ties to even
}

}  // namespace

// The GPU test's tolerance for the tuned (FlashAttention-2) forward assumes its numerics: online
// softmax over 64-key tiles in fp32, the unnormalised probabilities rounded to bf16 before P.V, fp32
// row sums of the unrounded probabilities, one bf16 rounding of the output. Emulate exactly that in
// float and check the bound |got - ref| <= 2^-7 |ref| + 2^-8 max|V| with margin (so a failure on the GPU
// means a bug, not an optimistic tolerance). Inputs are bf16 values, as on the GPU.
TEST_CASE("attention FA2-style bf16 numerics stay inside the GPU test's tuned tolerance",
          "[unit][kernels][attention]") {
  for (const double input_scale : {1.5, 6.0}) {
    const AttentionShape s{1, 300, 2, 1, 128};
    std::mt19937_64 gen(input_scale > 2 ? 21 : 22);
    std::uniform_real_distribution<double> mag(1.0 / 64, 1.0);
    const auto draw = [&](std::size_t n, double hi) {
      std::vector<double> x(n);
      for (auto& v : x) v = bf16_round((gen() & 1 ? 1 : -1) * mag(gen) * hi);
      return x;
    };
    const auto q = draw(s.q_size(), input_scale), k = draw(s.kv_size(), input_scale), v = draw(s.kv_size(), 2.0);
    std::vector<double> ref, lse;
    jkref::attention_forward(q, k, v, {}, s, ref, lse);
    const double vmax = max_abs(v);
    const float scale_log2 = static_cast<float>(1.0 / std::sqrt(128.0) * 1.4426950408889634);
    double worst = 0;
    for (std::int64_t i = 0; i < s.Hq; ++i)
      for (std::int64_t t = 0; t < s.T; ++t) {
        float m = -INFINITY, l = 0;
        std::vector<float> acc(128, 0.0f);
        for (std::int64_t n0 = 0; n0 <= t; n0 += 64) {
          const std::int64_t n1 = std::min<std::int64_t>(n0 + 64, t + 1);
          std::vector<float> sc(static_cast<std::size_t>(n1 - n0));
          float mx = m;
          for (std::int64_t u = n0; u < n1; ++u) {
            float dot = 0;
            for (std::int64_t c = 0; c < 128; ++c)
              dot += static_cast<float>(q[s.q_index(0, t, i, c)]) * static_cast<float>(k[s.kv_index(0, u, 0, c)]);
            sc[u - n0] = dot;
            mx = std::max(mx, dot);
          }
          const float corr = std::exp2(m * scale_log2 - mx * scale_log2);
          float sum = 0;
          for (auto& x : sc) sum += (x = std::exp2(x * scale_log2 - mx * scale_log2));
          l = l * corr + sum;
          for (std::int64_t c = 0; c < 128; ++c) {
            float a = 0;
            for (std::int64_t u = n0; u < n1; ++u)
              a += static_cast<float>(bf16_round(sc[u - n0])) * static_cast<float>(v[s.kv_index(0, u, 0, c)]);
            acc[c] = acc[c] * corr + a;
          }
          m = mx;
        }
        for (std::int64_t c = 0; c < 128; ++c) {
          const double got = bf16_round(acc[c] / l);
          const double r = ref[s.q_index(0, t, i, c)];
          worst = std::max(worst, std::fabs(got - r) / (std::ldexp(std::fabs(r), -7) + std::ldexp(vmax, -8)));
        }
      }
    INFO("input scale " << input_scale << ": worst error / tolerance " << worst);
    CHECK(worst < 0.5);  // measured: 0.27 (scale 1.5), 0.32 (scale 6, a few keys dominate)
    CHECK(worst > 0.0);
  }
}

// Same for the tuned backward: P and dS rounded to bf16 before their mma, D = rowsum(dout * out) from
// the bf16-rounded forward output, fp32 accumulation; dq/dk/dv compared with the exact reference with
// the GPU test's tolerance for the tuned path, |got - ref| <= 2^-7 |ref| + 2^-7 max|ref| (bf16 outputs,
// rounded to bf16 too, and fp32 outputs). Measured: <= 0.4 for scale-1.5 inputs, <= 0.63 for a sharp
// softmax (scale 6: dS cancels within each row, its bf16 rounding dominates dk).
TEST_CASE("attention FA2-style bf16 backward numerics stay inside the GPU test's tuned tolerance",
          "[unit][kernels][attention]") {
  for (const double input_scale : {1.5, 6.0}) {
    const AttentionShape s{1, 200, 2, 1, 64};
    std::mt19937_64 gen(input_scale > 2 ? 31 : 32);
    std::uniform_real_distribution<double> mag(1.0 / 64, 1.0);
    const auto draw = [&](std::size_t n, double hi) {
      std::vector<double> x(n);
      for (auto& v : x) v = bf16_round((gen() & 1 ? 1 : -1) * mag(gen) * hi);
      return x;
    };
    const auto q = draw(s.q_size(), input_scale), k = draw(s.kv_size(), input_scale), v = draw(s.kv_size(), 2.0);
    const auto go = draw(s.q_size(), 2.0);
    std::vector<double> dq, dk, dv, out, lse;
    jkref::attention_backward(q, k, v, go, {}, s, dq, dk, dv);
    jkref::attention_forward(q, k, v, {}, s, out, lse);
    const double scale = 1.0 / std::sqrt(64.0);
    std::vector<float> eq(s.q_size(), 0.0f), ek(s.kv_size(), 0.0f), ev(s.kv_size(), 0.0f);
    for (std::int64_t i = 0; i < s.Hq; ++i)
      for (std::int64_t t = 0; t < s.T; ++t) {
        float delta = 0;
        for (std::int64_t c = 0; c < 64; ++c)
          delta += static_cast<float>(go[s.q_index(0, t, i, c)]) *
                   static_cast<float>(bf16_round(out[s.q_index(0, t, i, c)]));
        for (std::int64_t u = 0; u <= t; ++u) {
          float sc = 0, dp = 0;
          for (std::int64_t c = 0; c < 64; ++c) {
            sc += static_cast<float>(q[s.q_index(0, t, i, c)]) * static_cast<float>(k[s.kv_index(0, u, 0, c)]);
            dp += static_cast<float>(go[s.q_index(0, t, i, c)]) * static_cast<float>(v[s.kv_index(0, u, 0, c)]);
          }
          const float p = std::exp(sc * static_cast<float>(scale) - static_cast<float>(lse[s.lse_index(0, i, t)]));
          const float pb = static_cast<float>(bf16_round(p));
          const float dsb = static_cast<float>(bf16_round(p * (dp - delta)));
          for (std::int64_t c = 0; c < 64; ++c) {
            ev[s.kv_index(0, u, 0, c)] += pb * static_cast<float>(go[s.q_index(0, t, i, c)]);
            ek[s.kv_index(0, u, 0, c)] += dsb * static_cast<float>(q[s.q_index(0, t, i, c)]);
            eq[s.q_index(0, t, i, c)] += dsb * static_cast<float>(k[s.kv_index(0, u, 0, c)]);
          }
        }
      }
    const auto ratio = [&](const std::vector<float>& got, const std::vector<double>& ref, double post_scale,
                           bool bf16_out) {
      const double mx = max_abs(ref);
      const double r = std::ldexp(1.0, -7);
      double worst = 0;
      for (std::size_t x = 0; x < ref.size(); ++x) {
        double g = static_cast<double>(got[x] * static_cast<float>(post_scale));
        if (bf16_out) g = bf16_round(g);
        worst = std::max(worst, std::fabs(g - ref[x]) / (r * std::fabs(ref[x]) + r * mx));
      }
      return worst;
    };
    for (const bool bf16_out : {true, false}) {
      const double wq = ratio(eq, dq, scale, bf16_out), wk = ratio(ek, dk, scale, bf16_out),
                   wv = ratio(ev, dv, 1.0, bf16_out);
      INFO("input scale " << input_scale << (bf16_out ? " bf16" : " fp32") << " outputs: worst error / tolerance dq "
                          << wq << " dk " << wk << " dv " << wv);
      CHECK(std::max({wq, wk, wv}) < 0.75);
      CHECK(std::min({wq, wk, wv}) > 0.0);
    }
  }
}

// =====================================================================================================
// The tuned (mma.sync) kernels of kernels/src/attention.cu, run on the CPU by an emulator of the warp
// primitives they use, against the double reference. The emulator implements ldmatrix (x4 and .trans),
// mma.sync m16n8k16 bf16 -> fp32, cp.async (completes at issue), __shfl_xor_sync and __syncthreads
// from the PTX ISA fragment layouts; each CUDA thread is a fiber (ucontext), a warp collective waits
// for its 32 lanes and __syncthreads for the block. Shared memory starts as 0xFF bytes (bf16 NaN), so
// a read of a tile that was never loaded poisons the result. This proves the kernels' index, mask,
// pipeline and softmax logic before a GPU runs them (what it cannot prove: that the PTX layouts
// written down here are the hardware's, and timing-dependent races).
//
// Host compilers only: a C++ compiler that compiles CUDA (Kokkos' nvcc_wrapper, which a Kokkos::Cuda
// build uses for every .cpp) has the real built-ins this section replaces, and such a build runs the
// kernels themselves (kernels/tests).
// =====================================================================================================
#if !defined(__CUDACC__)
#include <ucontext.h>

#include <cstring>
#include <memory>
#include <type_traits>

namespace emu {

struct Dim3 {
  unsigned x = 0, y = 0, z = 0;
};

enum class Wait { None, Warp, Block, Done };

struct Fiber {
  ucontext_t ctx;
  Wait wait = Wait::None;
  Dim3 thread_idx;
};

struct WarpExchange {
  std::uint32_t u[32][6];
  float f[32][4];
};

struct Runtime {
  Dim3 block_idx, grid_dim, block_dim;
  std::vector<std::uint8_t> smem;
  std::vector<WarpExchange> exchange;
  std::vector<Fiber> fibers;
  std::vector<std::vector<char>> stacks;
  std::function<void()> body;
  Fiber* current = nullptr;
  ucontext_t scheduler;
  std::string error;
};

inline Runtime& rt() {
  static Runtime r;
  return r;
}

inline int lane() { return static_cast<int>(rt().current->thread_idx.x % 32); }
inline int warp() { return static_cast<int>(rt().current->thread_idx.x / 32); }

inline void yield_as(Wait w) {
  Fiber* f = rt().current;
  f->wait = w;
  swapcontext(&f->ctx, &rt().scheduler);
}
inline void warp_sync() { yield_as(Wait::Warp); }
inline void block_sync() { yield_as(Wait::Block); }

inline void fiber_entry() {
  rt().body();
  rt().current->wait = Wait::Done;  // returning resumes the scheduler (uc_link)
}

// Runs body() as `threads` CUDA threads of every block of `grid`, blocks one after the other.
inline void launch(Dim3 grid, int threads, std::size_t smem_bytes, std::function<void()> body) {
  Runtime& r = rt();
  r.body = std::move(body);
  r.grid_dim = grid;
  r.block_dim = {static_cast<unsigned>(threads), 1, 1};
  r.stacks.resize(static_cast<std::size_t>(threads));
  for (auto& s : r.stacks) s.resize(128 * 1024);
  for (unsigned z = 0; z < grid.z; ++z)
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x) {
        r.block_idx = {x, y, z};
        r.smem.assign(smem_bytes, 0xff);
        r.exchange.assign(static_cast<std::size_t>(threads / 32), WarpExchange{});
        r.fibers.assign(static_cast<std::size_t>(threads), Fiber{});
        for (int t = 0; t < threads; ++t) {
          Fiber& f = r.fibers[t];
          f.thread_idx = {static_cast<unsigned>(t), 0, 0};
          getcontext(&f.ctx);
          f.ctx.uc_stack.ss_sp = r.stacks[t].data();
          f.ctx.uc_stack.ss_size = r.stacks[t].size();
          f.ctx.uc_link = &r.scheduler;
          makecontext(&f.ctx, fiber_entry, 0);
        }
        for (;;) {
          for (auto& f : r.fibers)
            if (f.wait == Wait::None) {
              r.current = &f;
              swapcontext(&r.scheduler, &f.ctx);
            }
          bool all_done = true, released = false;
          for (int w = 0; w < threads / 32; ++w) {
            int at_warp = 0, done = 0;
            for (int l = 0; l < 32; ++l) {
              const Wait s = r.fibers[w * 32 + l].wait;
              at_warp += s == Wait::Warp;
              done += s == Wait::Done;
            }
            if (at_warp == 32) {
              for (int l = 0; l < 32; ++l) r.fibers[w * 32 + l].wait = Wait::None;
              released = true;
            } else if (at_warp > 0 && done > 0) {
              r.error = "a warp collective with exited lanes";
            }
          }
          int at_block = 0, live = 0;
          for (auto& f : r.fibers) {
            all_done = all_done && f.wait == Wait::Done;
            live += f.wait != Wait::Done;
            at_block += f.wait == Wait::Block;
          }
          if (all_done) break;
          if (!released && at_block == live) {
            for (auto& f : r.fibers)
              if (f.wait == Wait::Block) f.wait = Wait::None;
            released = true;
          }
          if (!released) {
            r.error = "deadlock: threads wait at different barriers";
            return;
          }
        }
      }
}

}  // namespace emu

struct float2 {
  float x, y;
};
inline float2 make_float2(float a, float b) { return {a, b}; }

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define threadIdx (::emu::rt().current->thread_idx)
#define blockIdx (::emu::rt().block_idx)
#define gridDim (::emu::rt().grid_dim)
#define blockDim (::emu::rt().block_dim)
#define JK_ATTENTION_DYNAMIC_SMEM(name) std::uint16_t* name = reinterpret_cast<std::uint16_t*>(::emu::rt().smem.data())

inline void __syncthreads() { emu::block_sync(); }

inline float __shfl_xor_sync(unsigned /*mask*/, float v, int lane_mask) {
  auto& x = emu::rt().exchange[emu::warp()];
  x.f[emu::lane()][0] = v;
  emu::warp_sync();
  const float r = x.f[emu::lane() ^ lane_mask][0];
  emu::warp_sync();
  return r;
}

#define __shared__ static  // blocks run one after the other: a static local is the block's shared array

namespace jk::detail {

constexpr int kWarpSize = 32;

// common.cuh's helpers (that header needs the CUDA runtime headers), same arithmetic
inline float bf16_bits_to_float(std::uint16_t b) {
  const std::uint32_t u = static_cast<std::uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline std::uint16_t float_to_bf16_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<std::uint16_t>((u >> 16) | 0x0040u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>(u >> 16);
}
inline float warp_sum(float v) {
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

inline float emu_bf16(std::uint16_t h) {
  const std::uint32_t u = static_cast<std::uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline std::uint16_t emu_to_bf16(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even (no NaN handling needed here)
  return static_cast<std::uint16_t>(u >> 16);
}
inline std::uint16_t emu_smem16(std::uint32_t byte_offset) {
  std::uint16_t h;
  std::memcpy(&h, emu::rt().smem.data() + byte_offset, 2);
  return h;
}

inline std::uint32_t smem_address(const void* p) {
  return static_cast<std::uint32_t>(static_cast<const std::uint8_t*>(p) - emu::rt().smem.data());
}
inline void cp_async_16(std::uint32_t dst, const void* src, int src_bytes) {
  if (dst % 16 != 0 || dst + 16 > emu::rt().smem.size()) emu::rt().error = "cp.async out of shared memory or unaligned";
  if (src_bytes == 16) {
    std::memcpy(emu::rt().smem.data() + dst, src, 16);
  } else {
    std::memset(emu::rt().smem.data() + dst, 0, 16);
  }
}
inline void cp_async_commit() {}
template <int N>
inline void cp_async_wait() {}

// ldmatrix .x4: lanes 8j..8j+7 give the row addresses of matrix j; lane t receives of matrix j the
// elements (row t/4, cols 2(t%4), 2(t%4)+1), or with .trans (rows 2(t%4), 2(t%4)+1; col t/4).
inline void emu_ldmatrix(std::uint32_t addr, std::uint32_t (&r)[4], bool trans) {
  auto& x = emu::rt().exchange[emu::warp()];
  const int l = emu::lane();
  if (addr % 16 != 0) emu::rt().error = "ldmatrix row address not 16-byte aligned";
  x.u[l][0] = addr;
  emu::warp_sync();
  for (int j = 0; j < 4; ++j) {
    std::uint16_t lo, hi;
    if (!trans) {
      const std::uint32_t row = x.u[8 * j + l / 4][0];
      lo = emu_smem16(row + 2 * (2 * (l % 4)));
      hi = emu_smem16(row + 2 * (2 * (l % 4) + 1));
    } else {
      lo = emu_smem16(x.u[8 * j + 2 * (l % 4)][0] + 2 * (l / 4));
      hi = emu_smem16(x.u[8 * j + 2 * (l % 4) + 1][0] + 2 * (l / 4));
    }
    r[j] = static_cast<std::uint32_t>(lo) | (static_cast<std::uint32_t>(hi) << 16);
  }
  emu::warp_sync();
}
inline void ldmatrix_x4(std::uint32_t addr, std::uint32_t (&r)[4]) { emu_ldmatrix(addr, r, false); }
inline void ldmatrix_x4_trans(std::uint32_t addr, std::uint32_t (&r)[4]) { emu_ldmatrix(addr, r, true); }

// mma.sync.m16n8k16.row.col.f32.bf16.bf16.f32, fragment layouts of the PTX ISA:
//   A (16x16): reg i of lane (g = lane/4, q = lane%4) holds row g + 8 (i & 1), cols 2q + 8 (i >> 1) + {0, 1};
//   B (16x8):  reg i holds rows (k) 2q + 8 i + {0, 1}, col g;   C/D: element e at row g + 8 (e >> 1), col 2q + (e & 1).
inline void mma_bf16_16816(float (&d)[4], const std::uint32_t (&a)[4], std::uint32_t b0, std::uint32_t b1) {
  auto& x = emu::rt().exchange[emu::warp()];
  const int l = emu::lane();
  for (int i = 0; i < 4; ++i) {
    x.u[l][i] = a[i];
    x.f[l][i] = d[i];
  }
  x.u[l][4] = b0;
  x.u[l][5] = b1;
  emu::warp_sync();
  const auto half = [](std::uint32_t w, int k) {
    return emu_bf16(static_cast<std::uint16_t>(k % 2 ? w >> 16 : w & 0xffffu));
  };
  const auto A = [&](int r, int k) {
    return half(x.u[(r % 8) * 4 + (k % 8) / 2][(r >= 8 ? 1 : 0) + (k >= 8 ? 2 : 0)], k);
  };
  const auto B = [&](int k, int n) { return half(x.u[n * 4 + (k % 8) / 2][4 + (k >= 8 ? 1 : 0)], k); };
  const auto C = [&](int r, int n) { return x.f[(r % 8) * 4 + n / 2][(r >= 8 ? 2 : 0) + n % 2]; };
  float out[4];
  for (int e = 0; e < 4; ++e) {
    const int r = l / 4 + (e >= 2 ? 8 : 0), n = 2 * (l % 4) + (e & 1);
    float sum = C(r, n);
    for (int k = 0; k < 16; ++k) sum += A(r, k) * B(k, n);  // products of bf16 values are exact in fp32
    out[e] = sum;
  }
  emu::warp_sync();
  for (int e = 0; e < 4; ++e) d[e] = out[e];
}

inline std::uint32_t pack_bf16x2(float lo, float hi) {
  return static_cast<std::uint32_t>(emu_to_bf16(lo)) | (static_cast<std::uint32_t>(emu_to_bf16(hi)) << 16);
}

}  // namespace jk::detail

#define JK_ATTENTION_EMULATE
#define JK_UNROLL
#include "../../kernels/src/attention.cu"

namespace {

struct EmuCase {
  AttentionShape s;
  std::vector<std::int32_t> len;
  std::vector<std::uint16_t> q, k, v, dout;  // bf16 bits
  std::vector<double> qd, kd, vd, doutd;     // their values
};

EmuCase make_emu_case(const AttentionShape& s, std::vector<std::int32_t> len, std::uint64_t seed) {
  EmuCase c{s, std::move(len), {}, {}, {}, {}, {}, {}, {}, {}};
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> mag(1.0 / 64, 1.5);
  const auto fill = [&](std::size_t n, std::vector<std::uint16_t>& bits, std::vector<double>& val) {
    bits.resize(n);
    val.resize(n);
    for (std::size_t i = 0; i < n; ++i) {
      bits[i] = jk::detail::emu_to_bf16(static_cast<float>((gen() & 1 ? 1 : -1) * mag(gen)));
      val[i] = jk::detail::emu_bf16(bits[i]);
    }
  };
  fill(s.q_size(), c.q, c.qd);
  fill(s.kv_size(), c.k, c.kd);
  fill(s.kv_size(), c.v, c.vd);
  fill(s.q_size(), c.dout, c.doutd);
  return c;
}

template <int D, int G>
void emu_forward(const EmuCase& c, std::vector<std::uint16_t>& out, std::vector<float>& lse) {
  const AttentionShape& s = c.s;
  out.assign(s.q_size(), 0xffffu);
  lse.assign(s.lse_size(), std::nanf(""));
  const std::int32_t* len = c.len.empty() ? nullptr : c.len.data();
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const std::size_t smem = 2 * 2 * jk::detail::kTileN * (D + 8) * 2;
  emu::launch({static_cast<unsigned>((s.T + 63) / 64), static_cast<unsigned>(s.Hq / G), static_cast<unsigned>(s.B)},
              G * 128, smem, [&] {
                jk::detail::attn_fwd_tuned_kernel<D, G>(c.q.data(), c.k.data(), c.v.data(), len, out.data(), lse.data(),
                                                        s.T, s.Hq, s.Hkv, scale);
              });
  INFO(emu::rt().error);
  REQUIRE(emu::rt().error.empty());
}

template <int D, int G, typename TOut>
void emu_backward(const EmuCase& c, const std::vector<std::uint16_t>& out, const std::vector<float>& lse,
                  std::vector<TOut>& dq, std::vector<TOut>& dk, std::vector<TOut>& dv) {
  const AttentionShape& s = c.s;
  const std::int32_t* len = c.len.empty() ? nullptr : c.len.data();
  // delta as the device preprocess computes it: fp32 sum of bf16 out x bf16 dout, 0 on padded rows
  std::vector<float> delta(s.lse_size(), 0.0f);
  for (std::int64_t b = 0; b < s.B; ++b)
    for (std::int64_t i = 0; i < s.Hq; ++i)
      for (std::int64_t t = 0; t < jkref::attention_length(c.len, b, s.T); ++t) {
        float x = 0;
        for (std::int64_t col = 0; col < D; ++col)
          x += jk::detail::emu_bf16(out[s.q_index(b, t, i, col)]) *
               jk::detail::emu_bf16(c.dout[s.q_index(b, t, i, col)]);
        delta[s.lse_index(b, i, t)] = x;
      }
  const TOut poison = std::is_same_v<TOut, float> ? TOut(std::nanf("")) : TOut(0xffffu);
  dq.assign(s.q_size(), poison);
  dk.assign(s.kv_size(), poison);
  dv.assign(s.kv_size(), poison);
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  using jk::detail::kBwdKeys;
  using jk::detail::kBwdQueries;
  using jk::detail::kDqKeys;
  const std::size_t smem_kv = (2 * kBwdKeys + 4 * kBwdQueries) * (D + 8) * 2 + 4 * kBwdQueries * 4;
  emu::launch({static_cast<unsigned>((s.T + kBwdKeys - 1) / kBwdKeys), static_cast<unsigned>(s.Hkv),
               static_cast<unsigned>(s.B)},
              128, smem_kv, [&] {
                jk::detail::attn_bwd_dkdv_tuned_kernel<D, TOut>(c.q.data(), c.k.data(), c.v.data(), lse.data(),
                                                                c.dout.data(), delta.data(), len, dk.data(), dv.data(),
                                                                s.T, s.Hq, s.Hkv, scale);
              });
  INFO(emu::rt().error);
  REQUIRE(emu::rt().error.empty());
  const std::size_t smem_q = 2 * 2 * kDqKeys * (D + 8) * 2;
  emu::launch({static_cast<unsigned>((s.T + 63) / 64), static_cast<unsigned>(s.Hq / G), static_cast<unsigned>(s.B)},
              G * 128, smem_q, [&] {
                jk::detail::attn_bwd_dq_tuned_kernel<D, G, TOut>(c.q.data(), c.k.data(), c.v.data(), lse.data(),
                                                                 c.dout.data(), delta.data(), len, dq.data(), s.T, s.Hq,
                                                                 s.Hkv, scale);
              });
  INFO(emu::rt().error);
  REQUIRE(emu::rt().error.empty());
}

// max over elements of |got - ref| / (rel |ref| + abs_frac max|ref|); NaN counts as a failure (inf).
template <typename T>
double worst_ratio(const std::vector<T>& got, const std::vector<double>& ref, double rel, double abs_frac) {
  const double mx = max_abs(ref);
  double worst = 0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    double g;
    if constexpr (std::is_same_v<T, float>) {
      g = got[i];
    } else {
      g = jk::detail::emu_bf16(got[i]);
    }
    if (!std::isfinite(g)) return INFINITY;
    worst = std::max(worst, std::fabs(g - ref[i]) / (rel * std::fabs(ref[i]) + abs_frac * mx));
  }
  return worst;
}

template <int D, int G>
void emu_check(const AttentionShape& s, const std::vector<std::int32_t>& len, std::uint64_t seed) {
  REQUIRE(s.d == D);
  REQUIRE((s.Hq / s.Hkv) % G == 0);
  const EmuCase c = make_emu_case(s, len, seed);
  std::vector<std::uint16_t> out;
  std::vector<float> lse;
  emu_forward<D, G>(c, out, lse);
  std::vector<double> ref, ref_lse;
  jkref::attention_forward(c.qd, c.kd, c.vd, c.len, s, ref, ref_lse);
  // forward: the GPU test's tuned tolerance; lse exact to fp32 accuracy, -inf on padded rows
  const double w_out = worst_ratio(out, ref, std::ldexp(1.0, -7), std::ldexp(1.0, -8) * max_abs(c.vd) / max_abs(ref));
  INFO("forward out: worst error / tolerance " << w_out);
  CHECK(w_out <= 1.0);
  double w_lse = 0;
  for (std::size_t i = 0; i < ref_lse.size(); ++i) {
    if (std::isinf(ref_lse[i])) {
      CHECK((std::isinf(lse[i]) && lse[i] < 0));
    } else {
      w_lse = std::max(w_lse, std::fabs(lse[i] - ref_lse[i]) / (1e-4 + 1e-5 * std::fabs(ref_lse[i])));
    }
  }
  INFO("lse: worst error / tolerance " << w_lse);
  CHECK(w_lse <= 1.0);
  // backward, bf16 and fp32 outputs
  std::vector<double> dq, dk, dv;
  jkref::attention_backward(c.qd, c.kd, c.vd, c.doutd, c.len, s, dq, dk, dv);
  std::vector<std::uint16_t> gq, gk, gv;
  emu_backward<D, G, std::uint16_t>(c, out, lse, gq, gk, gv);
  const double r = std::ldexp(1.0, -7);
  const double wq = worst_ratio(gq, dq, r, r), wk = worst_ratio(gk, dk, r, r), wv = worst_ratio(gv, dv, r, r);
  INFO("backward bf16: worst error / tolerance dq " << wq << " dk " << wk << " dv " << wv);
  CHECK(std::max({wq, wk, wv}) <= 1.0);
  std::vector<float> fq, fk, fv;
  emu_backward<D, G, float>(c, out, lse, fq, fk, fv);
  const double xq = worst_ratio(fq, dq, r, r), xk = worst_ratio(fk, dk, r, r), xv = worst_ratio(fv, dv, r, r);
  INFO("backward fp32: worst error / tolerance dq " << xq << " dk " << xk << " dv " << xv);
  CHECK(std::max({xq, xk, xv}) <= 1.0);
}

}  // namespace

TEST_CASE("attention tuned kernels (emulated on the CPU) match the reference", "[unit][kernels][attention]") {
  SECTION("d = 64, two heads per CTA, padding (an empty and a 1-token sequence), T not a tile multiple") {
    emu_check<64, 2>({4, 70, 4, 2, 64}, {70, 33, 0, 1}, 41);
  }
  SECTION("d = 128, three slots (one head per CTA), T = 65") { emu_check<128, 1>({1, 65, 3, 1, 128}, {}, 42); }
  SECTION("d = 64, four slots (two CTAs of two heads per K/V head), T = 40") {
    emu_check<64, 2>({2, 40, 8, 2, 64}, {40, 23}, 44);
  }
  SECTION("d = 128, JetMoE pairing (Hq = 2 H_kv), T = 100, length 97") {
    emu_check<128, 2>({1, 100, 4, 2, 128}, {97}, 43);
  }
}

namespace {

// The simple kernels (warp per row) and the decode kernels under the same emulator.
void emu_check_simple(const AttentionShape& s, const std::vector<std::int32_t>& len, std::uint64_t seed) {
  using namespace jk::detail;
  const EmuCase c = make_emu_case(s, len, seed);
  const std::int32_t* lp = c.len.empty() ? nullptr : c.len.data();
  const int d = static_cast<int>(s.d);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const unsigned q_blocks = static_cast<unsigned>((s.B * s.T * s.Hq + kSimpleWarps - 1) / kSimpleWarps);
  const unsigned kv_blocks = static_cast<unsigned>((s.B * s.T * s.Hkv + kSimpleWarps - 1) / kSimpleWarps);
  std::vector<std::uint16_t> out(s.q_size(), 0xffffu);
  std::vector<float> lse(s.lse_size(), std::nanf("")), delta(s.lse_size(), std::nanf(""));
  std::vector<std::uint16_t> dq(s.q_size(), 0xffffu), dk(s.kv_size(), 0xffffu), dv(s.kv_size(), 0xffffu);
  const auto run = [&](auto per_lane) {
    constexpr int P = decltype(per_lane)::value;
    emu::launch({q_blocks, 1, 1}, kSimpleWarps * 32, 0, [&] {
      attn_fwd_simple_kernel<P>(c.q.data(), c.k.data(), c.v.data(), lp, out.data(), lse.data(), s.B, s.T, s.Hq, s.Hkv,
                                d, scale);
    });
    emu::launch({q_blocks, 1, 1}, kSimpleWarps * 32, 0,
                [&] { attn_bwd_delta_kernel(out.data(), c.dout.data(), lp, delta.data(), s.B, s.T, s.Hq, d); });
    emu::launch({q_blocks, 1, 1}, kSimpleWarps * 32, 0, [&] {
      attn_bwd_dq_simple_kernel<P, std::uint16_t>(c.q.data(), c.k.data(), c.v.data(), lse.data(), c.dout.data(),
                                                  delta.data(), lp, dq.data(), s.B, s.T, s.Hq, s.Hkv, d, scale);
    });
    emu::launch({kv_blocks, 1, 1}, kSimpleWarps * 32, 0, [&] {
      attn_bwd_dkdv_simple_kernel<P, std::uint16_t>(c.q.data(), c.k.data(), c.v.data(), lse.data(), c.dout.data(),
                                                    delta.data(), lp, dk.data(), dv.data(), s.B, s.T, s.Hq, s.Hkv, d,
                                                    scale);
    });
  };
  if (d <= 32) {
    run(std::integral_constant<int, 1>{});
  } else if (d <= 64) {
    run(std::integral_constant<int, 2>{});
  } else if (d <= 128) {
    run(std::integral_constant<int, 4>{});
  } else {
    run(std::integral_constant<int, 8>{});
  }
  INFO(emu::rt().error);
  REQUIRE(emu::rt().error.empty());
  std::vector<double> ref, ref_lse, rq, rk, rv;
  jkref::attention_forward(c.qd, c.kd, c.vd, c.len, s, ref, ref_lse);
  jkref::attention_backward(c.qd, c.kd, c.vd, c.doutd, c.len, s, rq, rk, rv);
  // the GPU test's simple-path tolerances
  const double w_out = worst_ratio(out, ref, std::ldexp(1.0, -7), 1e-4 * max_abs(c.vd) / max_abs(ref));
  double w_lse = 0;
  for (std::size_t i = 0; i < ref_lse.size(); ++i) {
    if (std::isinf(ref_lse[i])) {
      CHECK((std::isinf(lse[i]) && lse[i] < 0));
    } else {
      w_lse = std::max(w_lse, std::fabs(lse[i] - ref_lse[i]) / (1e-4 + 1e-5 * std::fabs(ref_lse[i])));
    }
  }
  const double wq = worst_ratio(dq, rq, std::ldexp(1.0, -7), std::ldexp(1.0, -8));
  const double wk = worst_ratio(dk, rk, std::ldexp(1.0, -7), std::ldexp(1.0, -8));
  const double wv = worst_ratio(dv, rv, std::ldexp(1.0, -7), std::ldexp(1.0, -8));
  INFO("simple: worst error / tolerance out " << w_out << " lse " << w_lse << " dq " << wq << " dk " << wk << " dv "
                                              << wv);
  CHECK(std::max({w_out, w_lse, wq, wk, wv}) <= 1.0);
}

void emu_check_decode(std::int64_t B, std::int64_t Tmax, std::int64_t Hq, std::int64_t Hkv, std::int64_t d,
                      const std::vector<std::int32_t>& len, std::uint64_t seed, bool contig) {
  using namespace jk::detail;
  // a [B, Tmax, ...] self-attention case provides the cache (K, V) and, per sequence, the query row
  const EmuCase c = make_emu_case({B, Tmax, Hq, Hkv, d}, {}, seed);
  std::vector<std::uint16_t> q(static_cast<std::size_t>(B * Hq * d));
  std::vector<double> qd(q.size());
  for (std::size_t i = 0; i < q.size(); ++i) {
    q[i] = c.q[i];
    qd[i] = c.qd[i];
  }
  const int chunks = static_cast<int>(std::max<std::int64_t>(1, (Tmax + kDecodeChunk - 1) / kDecodeChunk));
  std::vector<float> partial(static_cast<std::size_t>(B * Hq * chunks * (d + 2)), std::nanf(""));
  std::vector<std::uint16_t> out(q.size(), 0xffffu);
  std::vector<float> lse(static_cast<std::size_t>(B * Hq), std::nanf(""));
  const int di = static_cast<int>(d);
  const float scale = 1.0f / std::sqrt(static_cast<float>(d));
  const auto run = [&](auto per_lane) {
    constexpr int P = decltype(per_lane)::value;
    REQUIRE((!contig || d == 32 * P));  // the launcher takes the contiguous layout only when d == 32 P
    emu::launch({static_cast<unsigned>(chunks), static_cast<unsigned>(Hq), static_cast<unsigned>(B)}, kSimpleWarps * 32,
                0, [&] {
                  if (contig) {
                    attn_decode_partial_kernel<P, true>(q.data(), c.k.data(), c.v.data(), len.data(), partial.data(),
                                                        Tmax, Hq, Hkv, di, scale);
                  } else {
                    attn_decode_partial_kernel<P, false>(q.data(), c.k.data(), c.v.data(), len.data(), partial.data(),
                                                         Tmax, Hq, Hkv, di, scale);
                  }
                });
  };
  if (d <= 64) {
    run(std::integral_constant<int, 2>{});
  } else {
    run(std::integral_constant<int, 4>{});
  }
  emu::launch({static_cast<unsigned>(Hq), static_cast<unsigned>(B), 1}, kMaxHeadDim, 0,
              [&] { attn_decode_combine_kernel(partial.data(), out.data(), lse.data(), Hq, chunks, di); });
  INFO(emu::rt().error);
  REQUIRE(emu::rt().error.empty());
  std::vector<double> ref, ref_lse;
  jkref::attention_decode(qd, c.kd, c.vd, len, B, Tmax, Hq, Hkv, d, ref, ref_lse);
  const double w_out = worst_ratio(out, ref, std::ldexp(1.0, -7), 1e-4 * max_abs(c.vd) / std::max(1e-30, max_abs(ref)));
  double w_lse = 0;
  for (std::size_t i = 0; i < ref_lse.size(); ++i) {
    if (std::isinf(ref_lse[i])) {
      CHECK((std::isinf(lse[i]) && lse[i] < 0));
    } else {
      w_lse = std::max(w_lse, std::fabs(lse[i] - ref_lse[i]) / (1e-4 + 1e-5 * std::fabs(ref_lse[i])));
    }
  }
  INFO("decode: worst error / tolerance out " << w_out << " lse " << w_lse);
  CHECK(std::max(w_out, w_lse) <= 1.0);
}

}  // namespace

TEST_CASE("attention simple and decode kernels (emulated on the CPU) match the reference",
          "[unit][kernels][attention]") {
  SECTION("simple, d = 33, padding with an empty sequence") { emu_check_simple({3, 9, 4, 2, 33}, {9, 4, 0}, 51); }
  SECTION("simple, d = 64, three slots") { emu_check_simple({1, 12, 3, 1, 64}, {}, 52); }
  SECTION("simple, d = 256 and d = 1") {
    emu_check_simple({1, 5, 2, 2, 256}, {}, 55);
    emu_check_simple({2, 6, 2, 1, 1}, {6, 2}, 56);
  }
  SECTION("decode, chunk boundaries (255, 256, 257, 0, 1 keys), d = 64, both column layouts") {
    emu_check_decode(5, 300, 4, 2, 64, {255, 256, 257, 0, 1}, 53, true);
    emu_check_decode(5, 300, 4, 2, 64, {255, 256, 257, 0, 1}, 53, false);
  }
  SECTION("decode, d = 128 (contiguous columns, JetMoE pairing)") {
    emu_check_decode(1, 70, 4, 2, 128, {70}, 57, true);
  }
  SECTION("decode, d = 80, 3 slots") { emu_check_decode(2, 40, 3, 1, 80, {40, 17}, 54, false); }
}

#endif  // !defined(__CUDACC__)
