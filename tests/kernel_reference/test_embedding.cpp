// Proof of the 'embedding' CPU reference (kernels/tests/reference/embedding.hpp): closed forms
// (repeated ids, every token the same id, a permutation, out-of-range ids), invariants, finite
// differences of the backward, the fp32 summation order, and PyTorch / HF fixtures
// (scripts/oracle/kernel_fixtures/embedding.py).
#include <catch2/catch.hpp>

#include "embedding.hpp"
#include "fixture.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <random>
#include <vector>

namespace {

std::vector<double> random_values(std::size_t n, std::uint64_t seed, double lo = 0.1, double hi = 2.0) {
  std::mt19937_64 gen(seed);
  std::uniform_real_distribution<double> m(lo, hi);
  std::vector<double> v(n);
  for (auto& x : v) x = (gen() & 1u) ? m(gen) : -m(gen);
  return v;
}

std::vector<std::int32_t> to_ids(const jkref::FixtureTensor& t) {
  std::vector<std::int32_t> ids;
  for (double v : t.values) ids.push_back(static_cast<std::int32_t>(v));
  return ids;
}

}  // namespace

TEST_CASE("embedding forward copies rows, zero-fills and counts out-of-range ids", "[unit][kernels][embedding]") {
  const std::int64_t V = 4, D = 3;
  std::vector<double> emb(V * D);
  for (std::int64_t i = 0; i < V * D; ++i) emb[static_cast<std::size_t>(i)] = 10.0 * static_cast<double>(i / D) + static_cast<double>(i % D) + 1;
  const std::vector<std::int32_t> ids = {3, 0, -1, 3, 4, 1};
  std::vector<double> x;
  REQUIRE(jkref::embedding_fwd(emb, ids, V, D, x) == 2);
  const std::vector<double> expected = {31, 32, 33, 1, 2, 3, 0, 0, 0, 31, 32, 33, 0, 0, 0, 11, 12, 13};
  CHECK(x == expected);
}

TEST_CASE("embedding grouping: counting sort, tokens ascending within an id", "[unit][kernels][embedding]") {
  const std::vector<std::int32_t> ids = {2, 0, 2, 7, 2, 0, -3, 4};
  std::vector<std::int32_t> offsets, order;
  REQUIRE(jkref::embedding_group_tokens(ids, 5, offsets, order) == 2);
  CHECK(offsets == std::vector<std::int32_t>({0, 2, 2, 5, 5, 6}));
  CHECK(order == std::vector<std::int32_t>({1, 5, 0, 2, 4, 7, -1, -1}));
}

TEST_CASE("embedding backward closed forms: repeated ids, beta, untouched rows", "[unit][kernels][embedding]") {
  const std::int64_t V = 4, D = 2;
  // tokens 0, 2, 3 have id 2; token 1 id 0; token 4 out of range.
  const std::vector<std::int32_t> ids = {2, 0, 2, 2, 9};
  const std::vector<double> dx = {1, 2, 10, 20, 100, 200, 1000, 2000, 5, 5};
  const std::vector<double> init = {-1, -2, -3, -4, -5, -6, -7, -8};
  SECTION("beta 0, zero untouched") {
    std::vector<double> demb = init;
    REQUIRE(jkref::embedding_bwd(dx, ids, V, D, 0.0, true, demb) == 1);
    CHECK(demb == std::vector<double>({10, 20, 0, 0, 1101, 2202, 0, 0}));
  }
  SECTION("beta 0, untouched rows left") {
    std::vector<double> demb = init;
    jkref::embedding_bwd(dx, ids, V, D, 0.0, false, demb);
    CHECK(demb == std::vector<double>({10, 20, -3, -4, 1101, 2202, -7, -8}));
  }
  SECTION("beta 1 accumulates touched rows only") {
    std::vector<double> demb = init;
    jkref::embedding_bwd(dx, ids, V, D, 1.0, true, demb);
    CHECK(demb == std::vector<double>({9, 18, -3, -4, 1096, 2196, -7, -8}));
  }
  SECTION("the fp32 ordered form agrees where fp32 is exact") {
    for (const double beta : {0.0, 1.0}) {
      for (const bool zero : {false, true}) {
        std::vector<double> a = init, b = init;
        jkref::embedding_bwd(dx, ids, V, D, beta, zero, a);
        REQUIRE(jkref::embedding_bwd_f32_ordered(dx, ids, V, D, beta, zero, b) == 1);
        CHECK(a == b);
      }
    }
  }
}

TEST_CASE("embedding backward: every token the same id sums all rows", "[unit][kernels][embedding]") {
  const std::int64_t N = 50, V = 3, D = 4;
  const std::vector<std::int32_t> ids(N, 1);
  std::vector<double> dx(N * D);
  for (std::int64_t t = 0; t < N; ++t)
    for (std::int64_t c = 0; c < D; ++c) dx[static_cast<std::size_t>(t * D + c)] = static_cast<double>((t + 1) * (c + 1));
  std::vector<double> demb(V * D, 7.0), ordered(V * D, 7.0);
  jkref::embedding_bwd(dx, ids, V, D, 0.0, true, demb);
  jkref::embedding_bwd_f32_ordered(dx, ids, V, D, 0.0, true, ordered);
  for (std::int64_t c = 0; c < D; ++c) {
    const double expected = static_cast<double>(N * (N + 1) / 2 * (c + 1));  // exact in fp32 too
    CHECK(demb[static_cast<std::size_t>(D + c)] == expected);
    CHECK(ordered[static_cast<std::size_t>(D + c)] == expected);
    CHECK(demb[static_cast<std::size_t>(c)] == 0.0);
    CHECK(demb[static_cast<std::size_t>(2 * D + c)] == 0.0);
  }
}

TEST_CASE("embedding backward of a permutation scatters each row once", "[unit][kernels][embedding]") {
  const std::int64_t V = 37, D = 5;
  std::vector<std::int32_t> ids(V);
  std::iota(ids.begin(), ids.end(), 0);
  std::shuffle(ids.begin(), ids.end(), std::mt19937_64(5));
  const auto dx = random_values(static_cast<std::size_t>(V * D), 6);
  std::vector<double> demb(V * D, 0.0), ordered(V * D, 0.0);
  jkref::embedding_bwd(dx, ids, V, D, 0.0, true, demb);
  jkref::embedding_bwd_f32_ordered(dx, ids, V, D, 0.0, true, ordered);
  for (std::int64_t t = 0; t < V; ++t)
    for (std::int64_t c = 0; c < D; ++c) {
      const double want = dx[static_cast<std::size_t>(t * D + c)];
      CHECK(demb[static_cast<std::size_t>(ids[static_cast<std::size_t>(t)] * D + c)] == want);
      CHECK(ordered[static_cast<std::size_t>(ids[static_cast<std::size_t>(t)] * D + c)] == jkref::f32_round(want));
    }
  // The forward of a permutation followed by the backward of its output gives back the table.
  const auto emb = random_values(static_cast<std::size_t>(V * D), 7);
  std::vector<double> x, back(V * D, 0.0);
  jkref::embedding_fwd(emb, ids, V, D, x);
  jkref::embedding_bwd(x, ids, V, D, 0.0, true, back);
  CHECK(back == emb);
}

TEST_CASE("embedding backward invariant: column sums are preserved", "[unit][kernels][embedding]") {
  const std::int64_t N = 200, V = 13, D = 3;
  std::mt19937_64 gen(8);
  std::vector<std::int32_t> ids(N);
  for (auto& id : ids) id = static_cast<std::int32_t>(gen() % (V + 2)) - 1;  // includes -1 and V
  const auto dx = random_values(static_cast<std::size_t>(N * D), 9);
  std::vector<double> demb(V * D, 0.0);
  const std::int64_t invalid = jkref::embedding_bwd(dx, ids, V, D, 0.0, true, demb);
  std::int64_t expected_invalid = 0;
  for (const auto id : ids) expected_invalid += (id < 0 || id >= V) ? 1 : 0;
  CHECK(invalid == expected_invalid);
  CHECK(invalid > 0);
  for (std::int64_t c = 0; c < D; ++c) {
    double in = 0, out = 0;
    for (std::int64_t t = 0; t < N; ++t)
      if (ids[static_cast<std::size_t>(t)] >= 0 && ids[static_cast<std::size_t>(t)] < V) in += dx[static_cast<std::size_t>(t * D + c)];
    for (std::int64_t v = 0; v < V; ++v) out += demb[static_cast<std::size_t>(v * D + c)];
    CHECK(out == Approx(in).epsilon(1e-12));
  }
}

TEST_CASE("embedding backward matches finite differences of L = sum(w * Emb[ids])", "[unit][kernels][embedding]") {
  const std::int64_t N = 17, V = 6, D = 4;
  std::mt19937_64 gen(10);
  std::vector<std::int32_t> ids(N);
  for (auto& id : ids) id = static_cast<std::int32_t>(gen() % V);
  ids[3] = ids[8] = ids[11] = 2;  // a repeated id
  ids[5] = -1;                    // skipped
  const auto emb = random_values(static_cast<std::size_t>(V * D), 11);
  const auto w = random_values(static_cast<std::size_t>(N * D), 12);  // dL/dx
  const auto loss = [&](const std::vector<double>& e) {
    std::vector<double> x;
    jkref::embedding_fwd(e, ids, V, D, x);
    double l = 0;
    for (std::size_t i = 0; i < x.size(); ++i) l += w[i] * x[i];
    return l;
  };
  std::vector<double> grad(V * D, 0.0);
  jkref::embedding_bwd(w, ids, V, D, 0.0, true, grad);
  const double h = 1e-3;
  for (std::int64_t i = 0; i < V * D; ++i) {
    auto plus = emb, minus = emb;
    plus[static_cast<std::size_t>(i)] += h;
    minus[static_cast<std::size_t>(i)] -= h;
    const double fd = (loss(plus) - loss(minus)) / (2 * h);
    CHECK(grad[static_cast<std::size_t>(i)] == Approx(fd).epsilon(1e-9).margin(1e-9));
  }
}

TEST_CASE("embedding fp32 backward sums in ascending token order", "[unit][kernels][embedding]") {
  // Id 0 gets 2^25, 1, -2^25 (tokens 0, 2, 3): ascending order in fp32 gives (2^25 + 1) - 2^25 = 0 because
  // 2^25 + 1 rounds to 2^25; the exact sum (and any order that adds 1 last) is 1.
  const std::vector<std::int32_t> ids = {0, 1, 0, 0};
  const std::vector<double> dx = {0x1p25, 5, 1, -0x1p25};
  std::vector<double> exact(2, 0.0), ordered(2, 0.0);
  jkref::embedding_bwd(dx, ids, 2, 1, 0.0, true, exact);
  jkref::embedding_bwd_f32_ordered(dx, ids, 2, 1, 0.0, true, ordered);
  CHECK(exact[0] == 1.0);
  CHECK(ordered[0] == 0.0);
  CHECK(ordered[1] == 5.0);
  // The token order decides: with token 3 before token 2 the fp32 result is 1.
  const std::vector<double> swapped = {0x1p25, 5, -0x1p25, 1};
  jkref::embedding_bwd_f32_ordered(swapped, ids, 2, 1, 0.0, true, ordered);
  CHECK(ordered[0] == 1.0);
  // beta 1 adds the finished sum to the old value (one rounding): f32(1 + 0x1p-24 ... ) stays 1 here.
  std::vector<double> acc = {1.0, 0.0};
  const std::vector<double> tiny = {0x1p-25, 0, 0x1p-25, 0};  // 2^-24 in total; 1 + 2^-24 rounds to 1 (tie to even)
  jkref::embedding_bwd_f32_ordered(tiny, ids, 2, 1, 1.0, true, acc);
  CHECK(acc[0] == 1.0);
}

TEST_CASE("embedding reference matches HF JetMoe embed_tokens (PyTorch fixtures)", "[unit][kernels][embedding]") {
  for (const char* file : {"fp32_repeats.txt", "fp32_all_same.txt", "bf16_repeats.txt"}) {
    INFO(file);
    const jkref::Fixture fx(jkref::fixture_path(std::string("embedding/") + file));
    const auto V = static_cast<std::int64_t>(fx.scalar("V"));
    const auto D = static_cast<std::int64_t>(fx.scalar("D"));
    const auto ids = to_ids(fx.tensor("ids"));
    const auto& emb = fx.tensor("emb").values;
    const auto& dx = fx.tensor("dx").values;
    const auto& want_x = fx.tensor("x").values;
    const auto& want_demb = fx.tensor("demb").values;
    REQUIRE(fx.tensor("emb").shape == std::vector<long long>({V, D}));
    std::vector<double> x;
    REQUIRE(jkref::embedding_fwd(emb, ids, V, D, x) == 0);
    CHECK(x == want_x);  // a copy: bit-exact
    std::vector<double> demb(static_cast<std::size_t>(V * D), 123.0), ordered = demb;
    jkref::embedding_bwd(dx, ids, V, D, 0.0, true, demb);
    jkref::embedding_bwd_f32_ordered(dx, ids, V, D, 0.0, true, ordered);
    const bool bf16 = std::string(file).rfind("bf16", 0) == 0;
    for (std::size_t i = 0; i < demb.size(); ++i) {
      if (bf16) {
        // PyTorch accumulates the bf16 gradient in bf16: a rounding (half an ulp, <= 2^-9 relative) of
        // each partial sum, so the error is bounded by count * 2^-9 * sum |dx| of the row's tokens.
        const std::int64_t v = static_cast<std::int64_t>(i) / D, c = static_cast<std::int64_t>(i) % D;
        double sum_abs = 0;
        int count = 0;
        for (std::size_t t = 0; t < ids.size(); ++t)
          if (ids[t] == v) sum_abs += std::fabs(dx[t * static_cast<std::size_t>(D) + static_cast<std::size_t>(c)]), ++count;
        CHECK(std::fabs(want_demb[i] - demb[i]) <= count * 0x1p-9 * sum_abs);
      } else {
        // PyTorch's fp32 sum (its own order) vs the exact sum: a few fp32 ulps.
        CHECK(want_demb[i] == Approx(demb[i]).epsilon(1e-6).margin(1e-7));
        CHECK(ordered[i] == Approx(want_demb[i]).epsilon(1e-6).margin(1e-7));
      }
    }
    // Rows of absent ids carry no gradient in PyTorch either.
    for (std::int64_t v = 0; v < V; ++v) {
      if (std::find(ids.begin(), ids.end(), v) != ids.end()) continue;
      for (std::int64_t c = 0; c < D; ++c) CHECK(want_demb[static_cast<std::size_t>(v * D + c)] == 0.0);
    }
  }
}
