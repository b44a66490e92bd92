// Proof of the 'grouped_gemm' CPU reference (kernels/tests/reference/grouped_gemm.hpp), which the GPU
// test compares the kernels against: hand-checked bf16 roundings, closed-form GEMMs, invariants, finite
// differences for every backward, and fixtures written by PyTorch / HF transformers
// (scripts/oracle/kernel_fixtures/grouped_gemm.py).
#include <catch2/catch.hpp>

#include "fixture.hpp"
#include "grouped_gemm.hpp"

#include <cmath>
#include <cstdint>
#include <random>
#include <set>
#include <vector>

namespace {

using jkref::bf16_round;

std::vector<double> random_values(std::mt19937_64& gen, std::size_t n, double lo, double hi) {
  std::uniform_real_distribution<double> mag(lo, hi);
  std::vector<double> v(n);
  for (auto& x : v) x = (gen() & 1u) ? mag(gen) : -mag(gen);
  return v;
}

std::vector<std::int64_t> offsets_of(const jkref::FixtureTensor& t) {
  std::vector<std::int64_t> o;
  for (double v : t.values) o.push_back(static_cast<std::int64_t>(v));
  return o;
}

double dot(const std::vector<double>& a, const std::vector<double>& b) {
  double s = 0.0;
  for (std::size_t i = 0; i < a.size(); ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

TEST_CASE("grouped_gemm reference: bf16 rounding matches hand-checked values", "[unit][kernels][grouped_gemm]") {
  CHECK(bf16_round(1.0) == 1.0);
  CHECK(bf16_round(1.0 + 0x1p-8) == 1.0);                     // tie, even below: stays
  CHECK(bf16_round(1.0 + 3 * 0x1p-8) == 1.0 + 0x1p-6);        // tie, odd below: up to even
  CHECK(bf16_round(1.0 + 0x1p-8 + 0x1p-30) == 1.0 + 0x1p-7);  // above the tie: up
  CHECK(bf16_round(-(1.0 + 3 * 0x1p-8)) == -(1.0 + 0x1p-6));  // negative: symmetric
  CHECK(bf16_round(3.0e-3) == 197 * 0x1p-16);                 // 3e-3 = 196.608 ulps of 2^-16: up
  CHECK(bf16_round((2.0 - 0x1p-7) * 0x1p127) == (2.0 - 0x1p-7) * 0x1p127);  // largest finite bf16
  CHECK(std::isinf(bf16_round((2.0 - 0x1p-8) * 0x1p127)));               // tie at the top: Inf
  CHECK(bf16_round(0x1p-133) == 0x1p-133);                               // smallest subnormal
  CHECK(bf16_round(0x1p-134) == 0.0);                                    // subnormal tie, even below
  CHECK(bf16_round(3 * 0x1p-134) == 0x1p-132);                           // subnormal tie, odd below
  CHECK(jkref::bf16_ulp(1.0) == 0x1p-7);
  CHECK(jkref::bf16_ulp(1.99) == 0x1p-7);
  CHECK(jkref::bf16_ulp(0.5) == 0x1p-8);
  CHECK(jkref::f32_ulp(1.0) == 0x1p-23);
  const jkref::Bf16Interval iv = jkref::bf16_interval(1.0 + 0x1p-8, 0x1p-20);  // straddles a tie
  CHECK(iv.lo == 1.0);
  CHECK(iv.hi == 1.0 + 0x1p-7);
}

TEST_CASE("grouped_gemm reference: closed-form products and expert independence", "[unit][kernels][grouped_gemm]") {
  // Two experts, k = n = 2: W[0] = [[1, 2], [3, 4]], W[1] = 5 I; rows 0..1 -> expert 0, row 2 -> expert 1.
  const std::vector<double> w = {1, 2, 3, 4, 5, 0, 0, 5};
  const std::vector<double> x = {1, 1, 2, -1, 3, 7};
  const std::vector<std::int64_t> offsets = {0, 2, 3};
  const std::vector<double> out = jkref::gg_fwd(x, w, offsets, 2, 2);
  // row 0: [1*1 + 1*2, 1*3 + 1*4] = [3, 7]; row 1: [2 - 2, 6 - 4] = [0, 2]; row 2: 5 * [3, 7].
  CHECK(out == std::vector<double>({3, 7, 0, 2, 15, 35}));
  // din = dout W[e]: row 0 dout [1, 0] -> W[0] row 0 = [1, 2]; row 2 dout [1, 1] -> [5, 5].
  const std::vector<double> dout = {1, 0, 0, 1, 1, 1};
  CHECK(jkref::gg_bwd_data(dout, w, offsets, 2, 2) == std::vector<double>({1, 2, 3, 4, 5, 5}));
  // dW[0] = dout[0:2]^T x[0:2] = [[1, 1], [2, -1]]; dW[1] = [1, 1]^T [3, 7].
  const std::vector<double> dw = jkref::gg_bwd_weight(dout, x, offsets, 2, 2, 0.0, {});
  CHECK(dw == std::vector<double>({1, 1, 2, -1, 3, 7, 3, 7}));

  // Random: W[e] = c_e I gives out = c_e x for the rows of e; empty experts change nothing.
  std::mt19937_64 gen(7);
  const std::int64_t k = 5;
  const std::vector<std::int64_t> uneven = {0, 3, 3, 4, 9, 9};  // experts 1 and 4 empty
  const std::vector<double> xin = random_values(gen, 9 * k, 0.1, 2.0);
  std::vector<double> wid(5 * k * k, 0.0);
  for (int e = 0; e < 5; ++e)
    for (int i = 0; i < k; ++i) wid[(e * k + i) * k + i] = e + 1.5;
  const std::vector<double> o = jkref::gg_fwd(xin, wid, uneven, k, k);
  for (std::int64_t r = 0; r < 9; ++r) {
    const std::int64_t e = jkref::expert_of_row(uneven, r);
    for (std::int64_t c = 0; c < k; ++c) CHECK(o[r * k + c] == (e + 1.5) * xin[r * k + c]);
  }
  // Changing an expert's weights changes only its own rows.
  std::vector<double> w2 = random_values(gen, 5 * 4 * k, 0.1, 2.0);
  const std::vector<double> before = jkref::gg_fwd(xin, w2, uneven, 4, k);
  for (std::int64_t i = 0; i < 4 * k; ++i) w2[3 * 4 * k + i] *= -3.0;  // expert 3 owns rows 4..8
  const std::vector<double> after = jkref::gg_fwd(xin, w2, uneven, 4, k);
  for (std::int64_t r = 0; r < 9; ++r)
    for (std::int64_t c = 0; c < 4; ++c) {
      if (r < 4) CHECK(after[r * 4 + c] == before[r * 4 + c]);
      else CHECK(after[r * 4 + c] == Approx(-3.0 * before[r * 4 + c]).epsilon(1e-12));
    }
  // Empty experts get dW = 0 (beta 0) or keep the old value (beta 1); beta 1 adds exactly.
  const std::vector<double> g = random_values(gen, 9 * 4, 0.1, 2.0);
  const std::vector<double> old = random_values(gen, 5 * 4 * k, 0.1, 2.0);
  const std::vector<double> d0 = jkref::gg_bwd_weight(g, xin, uneven, 4, k, 0.0, std::vector<double>(5 * 4 * k, NAN));
  const std::vector<double> d1 = jkref::gg_bwd_weight(g, xin, uneven, 4, k, 1.0, old);
  for (std::int64_t i = 0; i < 5 * 4 * k; ++i) {
    const std::int64_t e = i / (4 * k);
    if (e == 1 || e == 4) {
      CHECK(d0[i] == 0.0);
      CHECK(d1[i] == old[i]);
    } else {
      CHECK(std::isfinite(d0[i]));
      CHECK(d1[i] == old[i] + d0[i]);
    }
  }
  CHECK_THROWS(jkref::gg_fwd(xin, w2, {0, 3, 2, 9}, 4, k));  // decreasing offsets are rejected
}

TEST_CASE("grouped_gemm reference: backward equals finite differences", "[unit][kernels][grouped_gemm]") {
  // L(x, W) = sum(G * fwd(x, W)); L is linear in each argument, so central differences are exact up to
  // the rounding of the double sums.
  std::mt19937_64 gen(11);
  const std::int64_t n = 6, k = 7;
  const std::vector<std::int64_t> offsets = {0, 4, 4, 5, 11};  // uneven, one empty, one single-row expert
  const std::int64_t rows = offsets.back();
  std::vector<double> x = random_values(gen, rows * k, 0.05, 2.0);
  std::vector<double> w = random_values(gen, 4 * n * k, 0.05, 2.0);
  const std::vector<double> g = random_values(gen, rows * n, 0.05, 2.0);
  const auto loss = [&] { return dot(g, jkref::gg_fwd(x, w, offsets, n, k)); };
  const double h = 1e-3;

  const std::vector<double> din = jkref::gg_bwd_data(g, w, offsets, n, k);
  for (std::size_t i = 0; i < x.size(); ++i) {
    const double keep = x[i];
    x[i] = keep + h;
    const double lp = loss();
    x[i] = keep - h;
    const double lm = loss();
    x[i] = keep;
    CHECK((lp - lm) / (2 * h) == Approx(din[i]).margin(1e-9));
  }
  const std::vector<double> dw = jkref::gg_bwd_weight(g, x, offsets, n, k, 0.0, {});
  for (std::size_t i = 0; i < w.size(); ++i) {
    const double keep = w[i];
    w[i] = keep + h;
    const double lp = loss();
    w[i] = keep - h;
    const double lm = loss();
    w[i] = keep;
    const double fd = (lp - lm) / (2 * h);
    CHECK(fd == Approx(dw[i]).margin(1e-9));
  }
  // The expert with no rows has an exactly zero weight gradient.
  for (std::int64_t i = 0; i < n * k; ++i) CHECK(dw[1 * n * k + i] == 0.0);
}

TEST_CASE("grouped_gemm reference: SwiGLU gradient equals finite differences", "[unit][kernels][grouped_gemm]") {
  const double step = 1e-5;
  const double as[] = {-30.0, -8.0, -2.5, -1.2785, -1.0, -0.3, 0.0, 1e-3, 0.7, 2.0, 6.5, 25.0};
  const double bs[] = {-1.7, 0.4, 3.0};
  for (double a : as)
    for (double b : bs) {
      const double dh = 0.8125;
      double da = 0, db = 0;
      jkref::swiglu_grad(a, b, dh, &da, &db);
      const double fda = dh * (jkref::swiglu(a + step, b) - jkref::swiglu(a - step, b)) / (2 * step);
      const double fdb = dh * (jkref::swiglu(a, b + step) - jkref::swiglu(a, b - step)) / (2 * step);
      CHECK(fda == Approx(da).margin(1e-8));
      CHECK(fdb == Approx(db).margin(1e-8));
    }
  // Closed forms: silu(0) = 0, silu'(0) = 1/2, sigmoid(0) = 1/2.
  double da = 0, db = 0;
  jkref::swiglu_grad(0.0, 2.0, 1.0, &da, &db);
  CHECK(da == 1.0);
  CHECK(db == 0.0);
  CHECK(jkref::silu(0.0) == 0.0);
  CHECK(jkref::silu(1.0) == Approx(0.7310585786300049).epsilon(1e-15));
}

TEST_CASE("grouped_gemm reference: matches HF JetMoeParallelExperts fp32 and bf16 (PyTorch fixtures)",
          "[unit][kernels][grouped_gemm]") {
  for (const char* name : {"grouped_gemm/parallel_experts_fp32.txt", "grouped_gemm/parallel_experts_bf16.txt"}) {
    INFO(name);
    const jkref::Fixture fx(jkref::fixture_path(name));
    const bool bf16 = std::string(name).find("bf16") != std::string::npos;
    const auto offsets = offsets_of(fx.tensor("offsets"));
    const auto& xt = fx.tensor("x");
    const auto& wt = fx.tensor("w");
    const std::int64_t k = xt.dim(1), n = wt.dim(1);
    const std::vector<double>& x = xt.values;
    const std::vector<double>& w = wt.values;
    const std::vector<double>& g = fx.tensor("grad_out").values;
    REQUIRE(offsets.size() == static_cast<std::size_t>(wt.dim(0)) + 1);
    REQUIRE(offsets.back() == xt.dim(0));
    for (double v : x) REQUIRE(bf16_round(v) == v);  // inputs are bf16 values (exact in both dtypes)

    // Forward: torch accumulates in fp32 (and rounds once to bf16 for the bf16 module).
    const auto out = jkref::gg_fwd(x, w, offsets, n, k);
    const auto& tout = fx.tensor("out").values;
    REQUIRE(tout.size() == out.size());
    int exact = 0;
    for (std::size_t i = 0; i < out.size(); ++i) {
      const std::int64_t r = static_cast<std::int64_t>(i) / n, c = static_cast<std::int64_t>(i) % n;
      double ref_row[64], abs_row[64];
      jkref::gg_fwd_row(x.data(), w.data(), jkref::expert_of_row(offsets, r), r, n, k, jkref::identity, ref_row, abs_row);
      REQUIRE(ref_row[c] == out[i]);
      const double ref = bf16 ? bf16_round(out[i]) : out[i];
      CHECK(std::fabs(tout[i] - out[i]) <= jkref::gemm_tolerance(out[i], abs_row[c], k, bf16));
      exact += tout[i] == ref ? 1 : 0;
    }
    if (bf16) CHECK(exact == static_cast<int>(out.size()));  // k = 8: no fp32 error reaches a bf16 boundary
    // Backward: grad_x = grad_out W[e]; grad_w = grad_out^T x (bf16 module: bf16 gradients).
    const auto din = jkref::gg_bwd_data(g, w, offsets, n, k);
    const auto& tdin = fx.tensor("grad_x").values;
    REQUIRE(tdin.size() == din.size());
    for (std::int64_t r = 0; r < xt.dim(0); ++r) {
      double ref_row[64], abs_row[64];
      jkref::gg_bwd_data_row(g.data(), w.data(), jkref::expert_of_row(offsets, r), r, n, k, jkref::identity, ref_row,
                             abs_row);
      for (std::int64_t c = 0; c < k; ++c) {
        REQUIRE(ref_row[c] == din[r * k + c]);
        CHECK(std::fabs(tdin[r * k + c] - din[r * k + c]) <= jkref::gemm_tolerance(din[r * k + c], abs_row[c], n, bf16));
      }
    }
    const auto dw = jkref::gg_bwd_weight(g, x, offsets, n, k, 0.0, {});
    const auto& tdw = fx.tensor("grad_w").values;
    REQUIRE(tdw.size() == dw.size());
    for (std::int64_t e = 0; e + 1 < static_cast<std::int64_t>(offsets.size()); ++e)
      for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t c = 0; c < k; ++c) {
          double abs_sum = 0;
          const double ref = jkref::gg_bwd_weight_elem(g.data(), x.data(), offsets[e], offsets[e + 1], n, k, i, c,
                                                       jkref::identity, &abs_sum);
          const std::size_t idx = static_cast<std::size_t>((e * n + i) * k + c);
          REQUIRE(ref == dw[idx]);
          CHECK(std::fabs(tdw[idx] - ref) <=
                jkref::gemm_tolerance(ref, abs_sum, offsets[e + 1] - offsets[e], bf16));
        }
    // The empty expert (index 1) has a zero gradient in torch too.
    for (std::int64_t i = 0; i < n * k; ++i) CHECK(tdw[n * k + i] == 0.0);
  }
}

TEST_CASE("grouped_gemm reference: HF bf16 SwiGLU rounding sequence (PyTorch fixture)", "[unit][kernels][grouped_gemm]") {
  const jkref::Fixture fx(jkref::fixture_path("grouped_gemm/swiglu_bf16.txt"));
  const auto& a = fx.tensor("a").values;
  const auto& b = fx.tensor("b").values;
  const auto& dh = fx.tensor("dh").values;
  const auto& h = fx.tensor("h").values;
  const auto& da = fx.tensor("da").values;
  const auto& db = fx.tensor("db").values;
  REQUIRE(a.size() >= 100);
  int h_exact = 0, h_single_rounding = 0, da_exact = 0, da_unrounded_ds = 0, db_exact = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    INFO("i = " << i << ", a = " << a[i] << ", b = " << b[i] << ", dh = " << dh[i]);
    // Forward: torch's h is always inside the accepted interval, and nearly always the exact sequence.
    CHECK(jkref::swiglu_hf_bf16_interval(a[i], b[i]).contains(h[i]));
    h_exact += h[i] == jkref::swiglu_hf_bf16(a[i], b[i]) ? 1 : 0;
    h_single_rounding += h[i] == bf16_round(jkref::silu(a[i]) * b[i]) ? 1 : 0;  // without the bf16 silu output
    double rda = 0, rdb = 0;
    jkref::swiglu_bwd_hf_bf16(a[i], b[i], dh[i], &rda, &rdb);
    jkref::Bf16Interval ida{}, idb{};
    jkref::swiglu_bwd_hf_bf16_interval(a[i], b[i], dh[i], &ida, &idb);
    CHECK(ida.contains(da[i]));
    CHECK(idb.contains(db[i]));
    da_exact += da[i] == rda ? 1 : 0;
    const double sg = jkref::sigmoid(a[i]);
    da_unrounded_ds += da[i] == bf16_round(dh[i] * b[i] * sg * (1.0 + a[i] * (1.0 - sg))) ? 1 : 0;
    db_exact += db[i] == rdb ? 1 : 0;
  }
  const int total = static_cast<int>(a.size());
  // The rounding sequence is the right one: bit-exact for every value (torch 2.15 CPU: 160 of 160),
  // while dropping an intermediate bf16 rounding is visibly off (109 and 118 of 160 match).
  CHECK(h_exact == total);
  CHECK(da_exact == total);
  CHECK(db_exact == total);
  CHECK(h_single_rounding <= total - 10);
  CHECK(da_unrounded_ds <= total - 10);
}

TEST_CASE("grouped_gemm reference: matches the expert part of HF JetMoeMoE in bf16 (PyTorch fixture)",
          "[unit][kernels][grouped_gemm]") {
  const jkref::Fixture fx(jkref::fixture_path("grouped_gemm/moe_experts_bf16.txt"));
  const auto offsets = offsets_of(fx.tensor("offsets"));
  const auto& x = fx.tensor("x").values;
  const auto& w_in = fx.tensor("w_in");
  const auto& w_out = fx.tensor("w_out");
  const std::int64_t d = fx.tensor("x").dim(1), two_f = w_in.dim(1), f = two_f / 2;
  REQUIRE(w_out.dim(1) == d);
  REQUIRE(w_out.dim(2) == f);
  const auto& tz = fx.tensor("z").values;
  const auto& th = fx.tensor("h").values;
  const auto& ty = fx.tensor("y").values;
  const std::int64_t rows = offsets.back();
  REQUIRE(rows == fx.tensor("x").dim(0));
  // fc1: z = bf16(x W_in[e]^T)  (k = 8: exact).
  const auto z = jkref::gg_fwd(x, w_in.values, offsets, two_f, d);
  for (std::size_t i = 0; i < z.size(); ++i) CHECK(tz[i] == bf16_round(z[i]));
  // SwiGLU on torch's bf16 z, gate half first: the HF sequence.
  std::vector<double> h(static_cast<std::size_t>(rows * f));
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t j = 0; j < f; ++j) {
      h[r * f + j] = jkref::swiglu_hf_bf16(tz[r * two_f + j], tz[r * two_f + f + j]);
      CHECK(th[r * f + j] == h[r * f + j]);
    }
  // fc2 on torch's bf16 h.
  const auto y = jkref::gg_fwd(th, w_out.values, offsets, d, f);
  for (std::size_t i = 0; i < y.size(); ++i) CHECK(ty[i] == bf16_round(y[i]));
}

// The tuned kernel (kernels/src/grouped_gemm.cu) places 16-byte cp.async chunks into swizzled shared
// tiles and reads m16n8k16 fragments with ldmatrix(.trans). This host emulation checks those formulas
// (copied verbatim from the kernel: keep them identical) for all four operand cases: every fragment
// register must hold the elements of the PTX m16n8k16 layout, and no ldmatrix phase may hit the same
// 16-byte bank group twice. ldmatrix.x4: lane 8j + r gives the address of row r of matrix j; without
// .trans thread t receives (row t/4, cols 2(t%4), +1), with .trans (rows 2(t%4), +1; col t/4).
namespace {
std::uint32_t kmajor_offset(int row, int chunk) { return static_cast<std::uint32_t>(row * 64 + ((chunk ^ ((row >> 1) & 3)) << 4)); }
std::uint32_t mnmajor_offset(int krow, int chunk) { return static_cast<std::uint32_t>(krow * 256 + ((chunk ^ (krow & 7)) << 4)); }
std::uint32_t pack2(std::uint16_t lo, std::uint16_t hi) { return static_cast<std::uint32_t>(lo) | (static_cast<std::uint32_t>(hi) << 16); }
}  // namespace

TEST_CASE("grouped_gemm: tuned kernel fragment layout (host emulation)", "[unit][kernels][grouped_gemm]") {
  // Logical tile T[r][k] (r < 128, k < 32) of unique ids; A uses r = m, B uses r = n.
  const auto id = [](int r, int k) { return static_cast<std::uint16_t>(r * 32 + k + 1); };
  int mismatches = 0, conflicts = 0, collisions = 0;
  for (int kmajor = 0; kmajor < 2; ++kmajor) {
    std::vector<std::uint16_t> smem(4096, 0);  // one 8 KB tile
    std::vector<int> written(512, 0);
    for (int i = 0; i < 512; ++i) {  // the cp.async loop: 512 chunks of 8 elements
      std::uint32_t off;
      std::uint16_t v[8];
      if (kmajor) {
        const int row = i >> 2, chunk = i & 3;
        off = kmajor_offset(row, chunk);
        for (int e = 0; e < 8; ++e) v[e] = id(row, chunk * 8 + e);
      } else {
        const int krow = i >> 4, chunk = i & 15;
        off = mnmajor_offset(krow, chunk);
        for (int e = 0; e < 8; ++e) v[e] = id(chunk * 8 + e, krow);
      }
      REQUIRE(off % 16 == 0);
      REQUIRE(off < 8192);
      collisions += written[off / 16]++ ? 1 : 0;
      for (int e = 0; e < 8; ++e) smem[off / 2 + e] = v[e];
    }
    const auto ldmatrix = [&](const std::uint32_t (&addr)[32], bool trans, std::uint32_t (&out)[32][4]) {
      for (int j = 0; j < 4; ++j) {
        std::set<int> groups;
        for (int r = 0; r < 8; ++r) groups.insert(static_cast<int>((addr[8 * j + r] / 16) % 8));
        conflicts += groups.size() == 8 ? 0 : 1;
        for (int t = 0; t < 32; ++t) {
          std::uint16_t e0, e1;
          if (!trans) {
            e0 = smem[addr[8 * j + t / 4] / 2 + 2 * (t % 4)];
            e1 = smem[addr[8 * j + t / 4] / 2 + 2 * (t % 4) + 1];
          } else {
            e0 = smem[addr[8 * j + 2 * (t % 4)] / 2 + t / 4];
            e1 = smem[addr[8 * j + 2 * (t % 4) + 1] / 2 + t / 4];
          }
          out[t][j] = pack2(e0, e1);
        }
      }
    };
    for (int warp = 0; warp < 8; ++warp) {
      const int warp_m = warp / 4, warp_n = warp % 4;
      for (int ks = 0; ks < 32; ks += 16) {
        for (int mi = 0; mi < 4; ++mi) {  // A fragments
          const int m_base = warp_m * 64 + mi * 16;
          std::uint32_t addr[32], out[32][4];
          for (int lane = 0; lane < 32; ++lane) {
            const int mat = lane >> 3;
            if (kmajor) {
              addr[lane] = kmajor_offset(m_base + (lane & 15), (ks >> 3) + (lane >> 4));
            } else {
              addr[lane] = mnmajor_offset(ks + (lane & 7) + ((mat >> 1) << 3), (m_base >> 3) + (mat & 1));
            }
          }
          ldmatrix(addr, !kmajor, out);
          for (int lane = 0; lane < 32; ++lane) {
            const int g = lane / 4, t = lane % 4;
            const std::uint32_t expect[4] = {pack2(id(m_base + g, ks + 2 * t), id(m_base + g, ks + 2 * t + 1)),
                                             pack2(id(m_base + g + 8, ks + 2 * t), id(m_base + g + 8, ks + 2 * t + 1)),
                                             pack2(id(m_base + g, ks + 2 * t + 8), id(m_base + g, ks + 2 * t + 9)),
                                             pack2(id(m_base + g + 8, ks + 2 * t + 8), id(m_base + g + 8, ks + 2 * t + 9))};
            for (int j = 0; j < 4; ++j) mismatches += out[lane][j] == expect[j] ? 0 : 1;
          }
        }
        for (int nj = 0; nj < 4; nj += 2) {  // B fragments, two n8 fragments per ldmatrix.x4
          const int n_base = warp_n * 32 + nj * 8;
          std::uint32_t addr[32], out[32][4];
          for (int lane = 0; lane < 32; ++lane) {
            const int mat = lane >> 3;
            if (kmajor) {
              addr[lane] = kmajor_offset(n_base + (lane & 7) + ((mat >> 1) << 3), (ks >> 3) + (mat & 1));
            } else {
              addr[lane] = mnmajor_offset(ks + (lane & 7) + ((mat & 1) << 3), (n_base >> 3) + (mat >> 1));
            }
          }
          ldmatrix(addr, !kmajor, out);
          for (int lane = 0; lane < 32; ++lane) {
            const int g = lane / 4, t = lane % 4;
            for (int h = 0; h < 2; ++h) {
              const int n = n_base + 8 * h + g;
              mismatches += out[lane][2 * h] == pack2(id(n, ks + 2 * t), id(n, ks + 2 * t + 1)) ? 0 : 1;
              mismatches += out[lane][2 * h + 1] == pack2(id(n, ks + 2 * t + 8), id(n, ks + 2 * t + 9)) ? 0 : 1;
            }
          }
        }
      }
    }
  }
  CHECK(collisions == 0);
  CHECK(mismatches == 0);
  CHECK(conflicts == 0);
}
