// Proof of the 'router' CPU reference (kernels/tests/reference/router.hpp), which the GPU test
// kernels/tests/test_router.cu compares the kernels against: finite differences (double) for every
// backward, closed forms, plan invariants, and fixtures written by PyTorch / HF transformers
// (scripts/oracle/kernel_fixtures/router.py -> tests/fixtures/kernels/router/).
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>

#include "fixture.hpp"
#include "router.hpp"

namespace {

using jkref::IVec;
using jkref::Vec;

Vec random_vec(std::mt19937_64& gen, std::size_t n, double scale) {
  std::uniform_real_distribution<double> dist(-scale, scale);
  Vec v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

double dot(const Vec& a, const Vec& b) {
  double s = 0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

// Central differences of f at x, compared with the analytic gradient g (max abs error / scale).
double fd_error(const std::function<double(const Vec&)>& f, Vec x, const Vec& g, double h = 1e-6) {
  double worst = 0, scale = 1e-300;
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double keep = x[i];
    x[i] = keep + h;
    const double fp = f(x);
    x[i] = keep - h;
    const double fm = f(x);
    x[i] = keep;
    const double fd = (fp - fm) / (2 * h);
    worst = std::max(worst, std::fabs(fd - g[i]));
    scale = std::max(scale, std::fabs(g[i]));
  }
  return worst / scale;
}

IVec to_ivec(const jkref::FixtureTensor& t) {
  IVec v(t.values.size());
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<int>(t.values[i]);
  return v;
}

// Gates as a function of the logits for FIXED choices (what the backward differentiates).
Vec gates_for(const Vec& logits, const IVec& ids, int64_t N, int E, int k) {
  Vec g(static_cast<std::size_t>(N * k));
  for (int64_t t = 0; t < N; ++t) {
    double m = -INFINITY, s = 0;
    for (int j = 0; j < k; ++j) m = std::max(m, logits[t * E + ids[t * k + j]]);
    for (int j = 0; j < k; ++j) s += std::exp(logits[t * E + ids[t * k + j]] - m);
    for (int j = 0; j < k; ++j) g[t * k + j] = std::exp(logits[t * E + ids[t * k + j]] - m) / s;
  }
  return g;
}

void check_plan_invariants(const jkref::Plan& p, const IVec& ids, int64_t N, int E, int k) {
  REQUIRE(p.offsets[0] == 0);
  REQUIRE(p.offsets[E] == N * k);
  for (int e = 0; e < E; ++e) {
    REQUIRE(p.offsets[e + 1] - p.offsets[e] == p.counts[e]);
    for (int row = p.offsets[e]; row < p.offsets[e + 1]; ++row) {
      REQUIRE(ids[p.sorted_token[row] * k + p.sorted_slot[row]] == e);
      if (row > p.offsets[e]) REQUIRE(p.sorted_token[row] > p.sorted_token[row - 1]);  // ascending, distinct
    }
  }
  for (int64_t t = 0; t < N; ++t)
    for (int j = 0; j < k; ++j) {
      const int row = p.position[t * k + j];
      REQUIRE(p.sorted_token[row] == t);
      REQUIRE(p.sorted_slot[row] == j);
    }
}

}  // namespace

// ---- rounding helpers ---------------------------------------------------------------------------

TEST_CASE("router reference: bf16 rounding by hand", "[unit][kernels][router]") {
  CHECK(jkref::round_bf16(1.0) == 1.0);
  CHECK(jkref::round_bf16(1.0 + 0x1p-8) == 1.0);                     // tie, even below
  CHECK(jkref::round_bf16(1.0 + 3 * 0x1p-8) == 1.0 + 0x1p-6);        // tie, even above
  CHECK(jkref::round_bf16(1.0 + 0x1p-8 + 0x1p-30) == 1.0 + 0x1p-7);  // just above the tie
  CHECK(jkref::round_bf16(-3.14159) == -3.140625);
  CHECK(std::isinf(jkref::round_bf16(0x1.ffp127)));
  CHECK(jkref::round_bf16(0x1p-130) == 0x1p-130);                    // subnormal, exact
  CHECK(jkref::near_bf16_boundary(1.0 + 0x1p-8 + 0x1p-30, 1e-6));
  CHECK_FALSE(jkref::near_bf16_boundary(1.0 + 0x1p-9, 1e-6));
}

// ---- forward: top-k, gates, plan ---------------------------------------------------------------

TEST_CASE("router reference: top-k order, ties to the lower index, gates", "[unit][kernels][router]") {
  const int E = 6;
  const Vec logits = {0.5, 2.0, 2.0, -1.0, 0.5, 3.0,   // ties between 1/2 and 0/4
                      0.0, 0.0, 0.0, 0.0, 0.0, 0.0};   // all equal
  const auto r = jkref::topk_gates(logits, 2, E, 4);
  CHECK(r.ids == IVec{5, 1, 2, 0, 0, 1, 2, 3});
  const double s = std::exp(0.0) + 2 * std::exp(-1.0) + std::exp(-2.5);
  CHECK(r.gates[0] == Approx(1.0 / s).epsilon(1e-15));
  CHECK(r.gates[3] == Approx(std::exp(-2.5) / s).epsilon(1e-15));
  for (int j = 0; j < 4; ++j) CHECK(r.gates[4 + j] == Approx(0.25).epsilon(1e-15));
  // k = E is a full descending sort.
  const auto full = jkref::topk_gates(logits, 1, E, E);
  CHECK(full.ids == IVec{5, 1, 2, 0, 4, 3});
}

TEST_CASE("router reference: plan invariants (random, one expert, empty experts)", "[unit][kernels][router]") {
  std::mt19937_64 gen(7);
  for (int E : {1, 3, 8, 64}) {
    for (int k : {1, 2, std::min(E, 5)}) {
      if (k > E) continue;
      const int64_t N = 37;
      const auto logits = random_vec(gen, static_cast<std::size_t>(N * E), 1.0);
      const auto r = jkref::topk_gates(logits, N, E, k);
      const auto p = jkref::make_plan(r.ids, N, E, k);
      check_plan_invariants(p, r.ids, N, E, k);
    }
  }
  // All tokens to experts 3 and 1 (E = 8): every other expert empty.
  const int64_t N = 9;
  IVec ids;
  for (int64_t t = 0; t < N; ++t) ids.insert(ids.end(), {3, 1});
  const auto p = jkref::make_plan(ids, N, 8, 2);
  check_plan_invariants(p, ids, N, 8, 2);
  CHECK(p.counts == IVec{0, 9, 0, 9, 0, 0, 0, 0});
  CHECK(p.offsets == IVec{0, 0, 9, 9, 18, 18, 18, 18, 18});
  CHECK(p.sorted_token[0] == 0);
  CHECK(p.sorted_slot[0] == 1);
  CHECK(p.position[1] == 0);   // token 0 slot 1 (expert 1) is row 0
  CHECK(p.position[0] == 9);   // token 0 slot 0 (expert 3) is row 9
}

// ---- HF fixtures: gating ------------------------------------------------------------------------

namespace {

// Compares the reference routing with HF's on one gating fixture. Tokens whose chosen set is decided
// by a tie (torch.topk on the CPU does not break ties by index) must agree in the chosen logit values.
void check_gating_fixture(const std::string& file, bool bf16) {
  const jkref::Fixture fx(jkref::fixture_path("router/" + file));
  const int64_t N = static_cast<int64_t>(fx.scalar("N")), D = static_cast<int64_t>(fx.scalar("D"));
  const int E = static_cast<int>(fx.scalar("E")), k = static_cast<int>(fx.scalar("k"));
  const Vec& u = fx.tensor("u").values;
  const Vec& w = fx.tensor("w").values;
  const Vec& hf_logits = fx.tensor("logits").values;

  // Logits: bf16 = the correctly rounded exact dot (HF accumulates in fp32, so a value within fp32
  // accumulation error of a rounding boundary may round either way); fp32 within accumulation error.
  const Vec exact = jkref::router_logits(u, w, N, D, E, false);
  const Vec ours = jkref::router_logits(u, w, N, D, E, bf16);
  int near = 0;
  for (std::size_t i = 0; i < ours.size(); ++i) {
    if (bf16) {
      if (jkref::near_bf16_boundary(exact[i], 1e-5)) {
        ++near;
        CHECK(std::fabs(hf_logits[i] - ours[i]) <= 0x1p-7 * std::fabs(exact[i]));
      } else {
        CHECK(hf_logits[i] == ours[i]);
      }
    } else {
      CHECK(std::fabs(hf_logits[i] - ours[i]) <= 1e-6 * (1 + std::fabs(exact[i])));
    }
  }
  INFO("logits near a bf16 rounding boundary: " << near);

  // Top-k and gates from HF's logits.
  const auto r = jkref::topk_gates(hf_logits, N, E, k);
  const IVec hf_ids = to_ivec(fx.tensor("topk_ids"));
  const Vec& hf_gates = fx.tensor("gates_f32").values;
  int tied_tokens = 0, differing = 0;
  for (int64_t t = 0; t < N; ++t) {
    bool same = true;
    for (int j = 0; j < k; ++j) {
      same = same && r.ids[t * k + j] == hf_ids[t * k + j];
      // The j-th largest value is the same whatever the tie rule.
      CHECK(hf_logits[t * E + r.ids[t * k + j]] == hf_logits[t * E + hf_ids[t * k + j]]);
      CHECK(r.gates[t * k + j] == Approx(hf_gates[t * k + j]).epsilon(1e-6));
    }
    bool tie = false;
    for (int a = 0; a < E; ++a)
      for (int b = a + 1; b < E; ++b) tie = tie || hf_logits[t * E + a] == hf_logits[t * E + b];
    tied_tokens += tie ? 1 : 0;
    if (!same) {
      ++differing;
      CHECK(tie);  // a different choice is allowed only where logits tie
    }
  }
  CHECK(tied_tokens >= 1);  // the fixture has ties by construction (token 3, experts 2 and 5)
  INFO("tokens with tied logits " << tied_tokens << ", of which HF chose differently: " << differing);

  // HF's grouping equals our plan built from HF's choices (up to HF's unstable sort inside a group).
  const auto p = jkref::make_plan(hf_ids, N, E, k);
  const IVec hf_sizes = to_ivec(fx.tensor("expert_size"));
  const IVec hf_batch_index = to_ivec(fx.tensor("batch_index"));
  const IVec hf_index_sorted = to_ivec(fx.tensor("index_sorted"));
  const Vec& hf_batch_gates = fx.tensor("batch_gates").values;
  CHECK(p.counts == hf_sizes);
  for (int e = 0; e < E; ++e) {
    IVec hf_tokens(hf_batch_index.begin() + p.offsets[e], hf_batch_index.begin() + p.offsets[e + 1]);
    std::sort(hf_tokens.begin(), hf_tokens.end());
    CHECK(hf_tokens == IVec(p.sorted_token.begin() + p.offsets[e], p.sorted_token.begin() + p.offsets[e + 1]));
  }
  for (int64_t row = 0; row < N * k; ++row) {
    const int flat = hf_index_sorted[row];
    CHECK(hf_batch_index[row] == flat / k);
    const double g = hf_gates[flat];
    // Gates in the activation dtype: bf16(fp32 gate), or the fp32 gate itself.
    CHECK(hf_batch_gates[row] == (bf16 ? jkref::round_bf16(g) : g));
  }
}

}  // namespace

TEST_CASE("router reference: HF JetMoeTopKGating fixture, bf16", "[unit][kernels][router]") {
  check_gating_fixture("gating_bf16.txt", true);
}

TEST_CASE("router reference: HF JetMoeTopKGating fixture, fp32", "[unit][kernels][router]") {
  check_gating_fixture("gating_f32.txt", false);
}

// ---- HF fixtures: combine and its gradients --------------------------------------------------------

namespace {

struct MoeFixture {
  int64_t N, D;
  int E, k;
  Vec u, w, y_grouped, bias, logits, gates, out;
  IVec ids;
  jkref::Plan plan;
  const jkref::Fixture fx;

  explicit MoeFixture(const std::string& file) : fx(jkref::fixture_path("router/" + file)) {
    N = static_cast<int64_t>(fx.scalar("N"));
    D = static_cast<int64_t>(fx.scalar("D"));
    E = static_cast<int>(fx.scalar("E"));
    k = static_cast<int>(fx.scalar("k"));
    u = fx.tensor("u").values;
    w = fx.tensor("w").values;
    bias = fx.tensor("bias").values;
    logits = fx.tensor("logits").values;
    out = fx.tensor("out").values;
    ids = to_ivec(fx.tensor("topk_ids"));  // HF's choices (ties may differ from ours: see gating)
    gates = gates_for(logits, ids, N, E, k);
    plan = jkref::make_plan(ids, N, E, k);
    const Vec& y_ts = fx.tensor("y_ts").values;  // [N, k, D]
    y_grouped.assign(static_cast<std::size_t>(N * k * D), 0.0);
    for (int64_t row = 0; row < N * k; ++row)
      for (int64_t c = 0; c < D; ++c)
        y_grouped[row * D + c] = y_ts[(plan.sorted_token[row] * k + plan.sorted_slot[row]) * D + c];
  }
  // Gradient of y per (token, slot) back from the grouped layout.
  Vec to_ts(const Vec& grouped) const {
    Vec ts(grouped.size());
    for (int64_t row = 0; row < N * k; ++row)
      for (int64_t c = 0; c < D; ++c)
        ts[(plan.sorted_token[row] * k + plan.sorted_slot[row]) * D + c] = grouped[row * D + c];
    return ts;
  }
};

double max_abs(const Vec& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

void check_close(const Vec& ours, const Vec& theirs, double rel_to_max, const char* what) {
  REQUIRE(ours.size() == theirs.size());
  const double tol = rel_to_max * std::max(max_abs(theirs), 1e-30);
  double worst = 0;
  for (std::size_t i = 0; i < ours.size(); ++i) worst = std::max(worst, std::fabs(ours[i] - theirs[i]));
  INFO(what << ": max abs difference " << worst << ", tolerance " << tol);
  CHECK(worst <= tol);
}

}  // namespace

TEST_CASE("router reference: HF JetMoeMoE combine fixture, bf16 (bit-exact)", "[unit][kernels][router]") {
  const MoeFixture m("moe_combine_bf16.txt");
  const Vec& hf_gates = m.fx.tensor("gates_f32").values;
  for (std::size_t i = 0; i < m.gates.size(); ++i) CHECK(m.gates[i] == Approx(hf_gates[i]).epsilon(1e-6));
  Vec gates_bf16(hf_gates.size());
  for (std::size_t i = 0; i < gates_bf16.size(); ++i) gates_bf16[i] = jkref::round_bf16(hf_gates[i]);
  const Vec out = jkref::combine_bf16(m.y_grouped, gates_bf16, m.plan.position, m.bias, m.N, m.k, m.D);
  int mismatches = 0;
  for (std::size_t i = 0; i < out.size(); ++i) mismatches += out[i] != m.out[i] ? 1 : 0;
  CHECK(mismatches == 0);
  // The rounding steps matter: the exact gated sum differs from HF's bf16 result somewhere.
  const Vec exact = jkref::combine_exact(m.y_grouped, gates_bf16, m.plan.position, m.bias, m.N, m.k, m.D);
  int differ = 0;
  for (std::size_t i = 0; i < out.size(); ++i) differ += jkref::round_bf16(exact[i]) != m.out[i] ? 1 : 0;
  CHECK(differ > 0);

  // Backward: dy = bf16(g_bf16 dout) bit-exact; HF's bf16 autograd reduces dgate/dbias in bf16, so the
  // exact reference is compared loosely there.
  const Vec& dout = m.fx.tensor("dout").values;
  const auto g = jkref::combine_backward(dout, m.y_grouped, hf_gates, gates_bf16, m.ids, m.plan.position, m.N, m.E,
                                         m.k, m.D, true);
  CHECK(m.to_ts(g.dy) == m.fx.tensor("dy_ts").values);
  check_close(g.dbias, m.fx.tensor("dbias").values, 1e-2, "dbias");
  check_close(g.dlogits, m.fx.tensor("dlogits").values, 3e-2, "dlogits");
  const Vec dw = jkref::router_dw(m.u, g.dlogits, m.N, m.D, m.E);
  const Vec du = jkref::router_du(m.w, g.dlogits, m.N, m.D, m.E);
  check_close(dw, m.fx.tensor("dw").values, 3e-2, "dw");
  check_close(du, m.fx.tensor("du").values, 3e-2, "du");
}

TEST_CASE("router reference: HF JetMoeMoE combine fixture, fp32 with gradients", "[unit][kernels][router]") {
  const MoeFixture m("moe_combine_f32.txt");
  const Vec out = jkref::combine_exact(m.y_grouped, m.gates, m.plan.position, m.bias, m.N, m.k, m.D);
  check_close(out, m.out, 1e-6, "out");
  const Vec& dout = m.fx.tensor("dout").values;
  const auto g =
      jkref::combine_backward(dout, m.y_grouped, m.gates, m.gates, m.ids, m.plan.position, m.N, m.E, m.k, m.D, false);
  check_close(m.to_ts(g.dy), m.fx.tensor("dy_ts").values, 1e-6, "dy");
  check_close(g.dbias, m.fx.tensor("dbias").values, 1e-6, "dbias");
  check_close(g.dlogits, m.fx.tensor("dlogits").values, 1e-5, "dlogits");
  check_close(jkref::router_dw(m.u, g.dlogits, m.N, m.D, m.E), m.fx.tensor("dw").values, 1e-5, "dw");
  check_close(jkref::router_du(m.w, g.dlogits, m.N, m.D, m.E), m.fx.tensor("du").values, 1e-5, "du");
}

// ---- aux losses -------------------------------------------------------------------------------------

TEST_CASE("router reference: aux losses against the [JM] form in PyTorch", "[unit][kernels][router]") {
  for (const char* file : {"aux_loss.txt", "aux_loss_large.txt"}) {
    const jkref::Fixture fx(jkref::fixture_path(std::string("router/") + file));
    const int64_t N = static_cast<int64_t>(fx.scalar("N"));
    const int E = static_cast<int>(fx.scalar("E")), k = static_cast<int>(fx.scalar("k"));
    const Vec& x = fx.tensor("logits").values;
    const IVec ids = to_ivec(fx.tensor("ids"));
    const auto loss = jkref::aux_loss(x, ids, N, E, k);
    CHECK(loss.switch_loss == Approx(fx.scalar("switch")).epsilon(1e-12));
    CHECK(loss.z_loss == Approx(fx.scalar("z")).epsilon(1e-12));
    const Vec g = jkref::aux_loss_grad(x, ids, N, E, k, fx.scalar("alpha"), fx.scalar("beta"));
    check_close(g, fx.tensor("dlogits").values, 1e-12, "aux dlogits");
  }
}

TEST_CASE("router reference: aux losses, closed forms", "[unit][kernels][router]") {
  std::mt19937_64 gen(3);
  // Balanced routing (every expert chosen equally often): switch = sum_e P_e = 1 for ANY logits, and
  // its gradient vanishes (f_e = 1/E for all e).
  const int64_t N = 8;
  const int E = 8, k = 2;
  IVec ids;
  for (int64_t t = 0; t < N; ++t) ids.insert(ids.end(), {static_cast<int>(t), static_cast<int>((t + 3) % E)});
  const Vec x = random_vec(gen, N * E, 3.0);
  CHECK(jkref::aux_loss(x, ids, N, E, k).switch_loss == Approx(1.0).epsilon(1e-14));
  for (double v : jkref::aux_loss_grad(x, ids, N, E, k, 1.0, 0.0)) CHECK(std::fabs(v) < 1e-15);
  // Uniform logits c: p = 1/E, switch = 1 whatever the choices, z = (c + log E)^2.
  const Vec flat(static_cast<std::size_t>(N * E), 0.75);
  const auto r = jkref::topk_gates(flat, N, E, k);  // all choose experts 0, 1: maximally unbalanced
  const auto loss = jkref::aux_loss(flat, r.ids, N, E, k);
  CHECK(loss.switch_loss == Approx(1.0).epsilon(1e-14));
  CHECK(loss.z_loss == Approx(std::pow(0.75 + std::log(8.0), 2)).epsilon(1e-14));
  // Fully unbalanced with a confident router: switch -> E * f_0 P_0 -> E/k when p concentrates on the
  // chosen experts equally (logits +L on experts 0 and 1).
  Vec peaked(static_cast<std::size_t>(N * E), -40.0);
  for (int64_t t = 0; t < N; ++t) peaked[t * E] = peaked[t * E + 1] = 40.0;
  const auto rp = jkref::topk_gates(peaked, N, E, k);
  CHECK(jkref::aux_loss(peaked, rp.ids, N, E, k).switch_loss == Approx(double(E) / k).epsilon(1e-12));
  // Stable log-sum-exp: huge logits where the naive exp overflows.
  const Vec huge(static_cast<std::size_t>(E), 1000.0);
  CHECK(jkref::aux_loss(huge, IVec{0, 1}, 1, E, k).z_loss == Approx(std::pow(1000.0 + std::log(8.0), 2)).epsilon(1e-14));
}

TEST_CASE("router reference: aux loss gradient by finite differences", "[unit][kernels][router]") {
  std::mt19937_64 gen(11);
  for (int E : {3, 8}) {
    const int k = E == 3 ? 1 : 3;
    const int64_t N = 6;
    const Vec x = random_vec(gen, N * E, 2.0);
    const IVec ids = jkref::topk_gates(x, N, E, k).ids;  // held fixed (f has no gradient)
    const double alpha = 0.7, beta = 0.3;
    const auto f = [&](const Vec& xv) {
      const auto l = jkref::aux_loss(xv, ids, N, E, k);
      return alpha * l.switch_loss + beta * l.z_loss;
    };
    CHECK(fd_error(f, x, jkref::aux_loss_grad(x, ids, N, E, k, alpha, beta)) < 1e-7);
  }
}

// ---- combine, gather and router backward by finite differences ------------------------------------------

TEST_CASE("router reference: combine backward by finite differences", "[unit][kernels][router]") {
  std::mt19937_64 gen(5);
  const int64_t N = 5, C = 7;
  for (int E : {4, 8}) {
    const int k = E == 4 ? 3 : 2;
    const Vec logits = random_vec(gen, N * E, 2.0);
    const IVec ids = jkref::topk_gates(logits, N, E, k).ids;
    const auto plan = jkref::make_plan(ids, N, E, k);
    const Vec y = random_vec(gen, N * k * C, 1.0);
    const Vec bias = random_vec(gen, C, 1.0);
    const Vec dout = random_vec(gen, N * C, 1.0);
    const Vec gates = gates_for(logits, ids, N, E, k);
    const auto g = jkref::combine_backward(dout, y, gates, gates, ids, plan.position, N, E, k, C, false);
    const auto loss = [&](const Vec& lg, const Vec& yv, const Vec& b) {
      return dot(dout, jkref::combine_exact(yv, gates_for(lg, ids, N, E, k), plan.position, b, N, k, C));
    };
    CHECK(fd_error([&](const Vec& v) { return loss(v, y, bias); }, logits, g.dlogits) < 1e-7);
    CHECK(fd_error([&](const Vec& v) { return loss(logits, v, bias); }, y, g.dy) < 1e-7);
    CHECK(fd_error([&](const Vec& v) { return loss(logits, y, v); }, bias, g.dbias) < 1e-7);
    // dgate_j = d loss / d gate_j with the gates as free variables.
    const auto loss_g = [&](const Vec& gv) { return dot(dout, jkref::combine_exact(y, gv, plan.position, bias, N, k, C)); };
    CHECK(fd_error(loss_g, gates, g.dgate) < 1e-7);
    // Unchosen experts get exactly zero; each token's dlogits sum to zero (softmax shift invariance).
    for (int64_t t = 0; t < N; ++t) {
      double s = 0;
      for (int e = 0; e < E; ++e) s += g.dlogits[t * E + e];
      CHECK(std::fabs(s) < 1e-12);
    }
  }
}

TEST_CASE("router reference: gather and router backward by finite differences", "[unit][kernels][router]") {
  std::mt19937_64 gen(9);
  const int64_t N = 6, D = 5;
  const int E = 4, k = 2;
  const Vec u = random_vec(gen, N * D, 1.0);
  const Vec w = random_vec(gen, E * D, 1.0);
  const Vec seed = random_vec(gen, N * E, 1.0);  // plays dlogits
  const auto lin = [&](const Vec& uv, const Vec& wv) { return dot(seed, jkref::router_logits(uv, wv, N, D, E, false)); };
  CHECK(fd_error([&](const Vec& v) { return lin(v, w); }, u, jkref::router_du(w, seed, N, D, E)) < 1e-8);
  CHECK(fd_error([&](const Vec& v) { return lin(u, v); }, w, jkref::router_dw(u, seed, N, D, E)) < 1e-8);

  const IVec ids = jkref::topk_gates(random_vec(gen, N * E, 1.0), N, E, k).ids;
  const auto plan = jkref::make_plan(ids, N, E, k);
  const Vec x = random_vec(gen, N * D, 1.0);
  const Vec dxp = random_vec(gen, N * k * D, 1.0);
  const auto gl = [&](const Vec& xv) { return dot(dxp, jkref::gather(xv, plan.sorted_token, N * k, D)); };
  CHECK(fd_error(gl, x, jkref::gather_backward(dxp, plan.position, N, k, D)) < 1e-8);
}

TEST_CASE("router reference: bf16 combine, closed forms", "[unit][kernels][router]") {
  // One slot with gate 1: out = bf16(y + bias). Two slots: the bf16 sum is rounded after each step.
  const Vec y = {1.0, 0.5};       // rows 0, 1
  const IVec position = {0, 1};   // token 0: slot 0 -> row 0, slot 1 -> row 1
  const Vec g = {1.0, 0.0078125};  // 2^-7: g1 * y1 = 2^-8 -> 1 + 2^-8 is a tie, rounds to 1
  CHECK(jkref::combine_bf16(y, g, position, {}, 1, 2, 1)[0] == 1.0);
  CHECK(jkref::combine_bf16(y, g, position, {0x1p-8}, 1, 2, 1)[0] == 1.0);   // 1 + 2^-8: tie again
  CHECK(jkref::combine_exact(y, g, position, {0x1p-8}, 1, 2, 1)[0] == 1.0 + 0x1p-7);
}
