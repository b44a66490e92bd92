// Self-checking GPU test of the 'grouped_gemm' kernels (jetmoe/grouped_gemm.h) against the CPU
// double-precision reference kernels/tests/reference/grouped_gemm.hpp (itself proven on the CPU by
// tests/kernel_reference/test_grouped_gemm.cpp against finite differences and PyTorch / HF fixtures).
//
// Every case: fresh random non-zero bf16 inputs from a per-case seed, outputs poisoned with NaN (0xFF)
// inside guard zones, the call checked, the guard zones checked for stray writes, every output element
// checked to be written (no NaN left), the run repeated and required to be bit-identical (determinism),
// and the values compared with the reference: all rows (or, for JetMoE-8B shapes, every expert's first,
// last and tile-boundary rows plus random ones, all columns) with the stated tolerances:
//   GEMM, bf16 out:  |got - ref| <= ulp_bf16(ref) + K * 2^-24 * sum_k |a_k b_k|
//   GEMM, fp32 out:  |got - ref| <= ulp_f32(ref)  + K * 2^-24 * sum_k |a_k b_k|   (K = reduction length)
//   plus a relative RMS error over the checked elements <= 2^-7 (bf16) / 2^-16 (fp32);
//   SwiGLU: the HF bf16 rounding sequence, where the device's fp32 silu/sigmoid (relative error
//   <= 2^-20) may land on either side of a bf16 rounding boundary (jkref::swiglu_*_interval).
// Path comparisons (tuned vs simple vs cuBLASLt) check every element of full JetMoE-sized outputs:
//   |x - y| <= 2 ulp(max(|x|, |y|)) + 2 K 2^-24 ||a_row|| ||b_col||  (Cauchy-Schwarz bounds sum |a b|).
// Exit status: 0 all passed, 1 any failure, 2 bad command line, 77 no CUDA device (never a pass).
#include "harness.cuh"
#include "reference/grouped_gemm.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <tuple>
#include <vector>

namespace {

using namespace jkt;

// WGMMA runs its own kernel where k (and for the backward calls n) % 8 == 0 and the bases are 16-byte
// aligned (here: the small shapes with n, k = 72, 200 / 8, 16 / 256, 136 / 136, 264, every 8B case),
// MMA's path otherwise (the odd shapes, the unaligned pointers).
constexpr jk_grouped_gemm_algo_t kOwnAlgos[] = {JK_GROUPED_GEMM_SIMPLE, JK_GROUPED_GEMM_MMA, JK_GROUPED_GEMM_WGMMA};
constexpr jk_grouped_gemm_algo_t kAllAlgos[] = {JK_GROUPED_GEMM_SIMPLE, JK_GROUPED_GEMM_MMA, JK_GROUPED_GEMM_WGMMA,
                                                JK_GROUPED_GEMM_AUTO, JK_GROUPED_GEMM_CUBLASLT};

// ---- inputs -----------------------------------------------------------------------------------------

// Fast generator of random non-zero bf16 bit patterns (JetMoE-8B weights have 184 M elements).
class Rng {
 public:
  explicit Rng(std::uint64_t seed) : state_(seed * 0x9e3779b97f4a7c15ull + 1) {}
  std::uint64_t next() {  // splitmix64
    std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  // Random sign, magnitude in [2^(emin-127), 2^(emax-126)) with a random 7-bit mantissa: never zero.
  std::uint16_t bf16(int emin = 121, int emax = 127) {
    const std::uint64_t r = next();
    const int exponent = emin + static_cast<int>((r >> 8) % static_cast<std::uint64_t>(emax - emin + 1));
    return static_cast<std::uint16_t>(((r & 1u) << 15) | (exponent << 7) | ((r >> 1) & 0x7fu));
  }
  std::vector<std::uint16_t> bf16_vector(std::size_t n, int emin = 121, int emax = 127) {
    std::vector<std::uint16_t> v(n);
    for (auto& x : v) x = bf16(emin, emax);
    return v;
  }
  double uniform() { return static_cast<double>(next() >> 11) * 0x1p-53; }
  std::int64_t below(std::int64_t n) { return static_cast<std::int64_t>(next() % static_cast<std::uint64_t>(n)); }

 private:
  std::uint64_t state_;
};

double bval(std::uint16_t b) { return bf16_value(b); }
const auto kVal = [](std::uint16_t b) { return bf16_value(b); };

struct Routing {
  std::vector<std::int64_t> sizes;
  std::vector<std::int64_t> off64;
  std::vector<std::int32_t> off32;
  std::int64_t rows = 0;
  std::int64_t experts() const { return static_cast<std::int64_t>(sizes.size()); }
  std::string describe() const {
    std::string s = format("E=%lld rows=%lld sizes=[", static_cast<long long>(experts()), static_cast<long long>(rows));
    for (std::size_t i = 0; i < sizes.size(); ++i) s += format(i ? ",%lld" : "%lld", static_cast<long long>(sizes[i]));
    return s + "]";
  }
};

Routing routing(const std::vector<std::int64_t>& sizes) {
  Routing r;
  r.sizes = sizes;
  r.off64.push_back(0);
  for (auto s : sizes) r.off64.push_back(r.off64.back() + s);
  r.rows = r.off64.back();
  for (auto o : r.off64) r.off32.push_back(static_cast<std::int32_t>(o));
  return r;
}

// JetMoE-8B MoE/MoA routing of 4096 tokens, top-2: 8192 rows, balanced or skewed (an empty expert,
// single-row experts, one expert with 3000 rows).
Routing routing_8b(bool skewed) {
  if (skewed) return routing({3000, 0, 1, 2047, 129, 1, 2000, 1014});
  return routing(std::vector<std::int64_t>(8, 1024));
}

// Rows whose results are checked: all when the reference is cheap, else every expert's first and
// last rows and rows at 64/128-row tile boundaries, plus random rows, up to max_rows.
std::vector<std::int64_t> sample_rows(const Routing& rt, std::int64_t cost_per_row, std::uint64_t seed) {
  const std::int64_t budget = std::max<std::int64_t>(16, 600000000 / std::max<std::int64_t>(cost_per_row, 1));
  std::set<std::int64_t> rows;
  if (rt.rows <= budget) {
    for (std::int64_t r = 0; r < rt.rows; ++r) rows.insert(r);
  } else {
    for (std::int64_t e = 0; e < rt.experts(); ++e) {
      const std::int64_t r0 = rt.off64[e], r1 = rt.off64[e + 1];
      for (std::int64_t d : {0, 1, 63, 64, 127, 128}) {
        if (r0 + d < r1) rows.insert(r0 + d);
      }
      if (r1 > r0) rows.insert(r1 - 1);
    }
    Rng rng(seed);
    while (static_cast<std::int64_t>(rows.size()) < budget) rows.insert(rng.below(rt.rows));
  }
  return {rows.begin(), rows.end()};
}

// Accumulates the comparison of checked elements.
struct Tally {
  std::size_t checked = 0;
  std::size_t bad = 0;
  double worst = 0.0;  // max |err| / tol
  double err_sq = 0.0, ref_sq = 0.0;
  std::string first;
  void add(double got, double ref, double tol, const std::string& where) {
    ++checked;
    const double err = std::fabs(got - ref);
    const bool ok = err <= tol;  // false for NaN
    if (std::isfinite(err)) {
      worst = std::max(worst, err / tol);
      err_sq += err * err;
      ref_sq += ref * ref;
    }
    if (!ok && bad++ == 0) first = format("%s: got %.9g ref %.9g tol %.3g", where.c_str(), got, ref, tol);
  }
  double rel_rms() const { return ref_sq > 0 ? std::sqrt(err_sq / ref_sq) : 0.0; }
  bool pass(double rms_limit) const { return bad == 0 && rel_rms() <= rms_limit; }
  std::string describe(double rms_limit) const {
    std::string s = format("%zu checked, %zu outside tol, max err/tol %.3f, rel rms %.2e (limit %.1e)", checked, bad,
                           worst, rel_rms(), rms_limit);
    if (bad) s += "; first: " + first;
    return s;
  }
};

constexpr double kRmsBf16 = 0x1p-7;
constexpr double kRmsF32 = 0x1p-16;

template <typename T>
std::size_t count_nan(const std::vector<T>& v) {
  std::size_t n = 0;
  for (const T& x : v) {
    if constexpr (std::is_same_v<T, float>) {
      n += std::isnan(x) ? 1 : 0;
    } else {
      n += bf16_is_nan(x) ? 1 : 0;
    }
  }
  return n;
}

template <typename T>
double out_val(T v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else {
    return bval(v);
  }
}

// Common tail of a case: guards, unwritten elements, repeatability.
struct Verdict {
  bool pass = true;
  std::string detail;
  void require(bool ok, const std::string& what) {
    if (!ok) {
      pass = false;
      detail += "; " + what;
    }
  }
};

// ---- forward ---------------------------------------------------------------------------------------

template <typename OutT>
cudaError_t call_fwd(const std::uint16_t* in, const std::uint16_t* w, OutT* out, const std::int32_t* off_dev,
                     const std::int32_t* off_host, const Routing& rt, std::int64_t n, std::int64_t k,
                     jk_grouped_gemm_algo_t algo, cudaStream_t stream) {
  if constexpr (std::is_same_v<OutT, float>) {
    return jk_grouped_gemm_fwd_f32out(in, w, out, off_dev, off_host, rt.rows, rt.experts(), n, k, algo, stream);
  } else {
    return jk_grouped_gemm_fwd_bf16(in, w, out, off_dev, off_host, rt.rows, rt.experts(), n, k, algo, stream);
  }
}

template <typename OutT>
CaseResult check_fwd(Context& ctx, std::uint64_t seed, const Routing& rt, std::int64_t n, std::int64_t k,
                     jk_grouped_gemm_algo_t algo, std::size_t misalign) {
  Rng rng(seed);
  const auto in = rng.bf16_vector(static_cast<std::size_t>(rt.rows * k));
  const auto w = rng.bf16_vector(static_cast<std::size_t>(rt.experts() * n * k));
  GuardedBuffer<std::uint16_t> d_in(in.size(), misalign), d_w(w.size(), misalign);
  GuardedBuffer<std::int32_t> d_off(rt.off32.size());
  GuardedBuffer<OutT> d_out(static_cast<std::size_t>(rt.rows * n), misalign);
  d_in.upload(in);
  d_w.upload(w);
  d_off.upload(rt.off32);
  finish(call_fwd<OutT>(d_in.data(), d_w.data(), d_out.data(), d_off.data(), rt.off32.data(), rt, n, k, algo,
                        ctx.stream),
         ctx.stream, "grouped fwd");
  const auto out = d_out.download();
  d_out.poison();
  finish(call_fwd<OutT>(d_in.data(), d_w.data(), d_out.data(), d_off.data(), rt.off32.data(), rt, n, k, algo,
                        ctx.stream),
         ctx.stream, "grouped fwd (repeat)");
  const auto again = d_out.download();

  const bool bf16_out = !std::is_same_v<OutT, float>;
  Tally tally;
  std::vector<double> ref(static_cast<std::size_t>(n)), abs_sum(static_cast<std::size_t>(n));
  for (std::int64_t r : sample_rows(rt, n * k, seed + 1)) {
    jkref::gg_fwd_row(in.data(), w.data(), jkref::expert_of_row(rt.off64, r), r, n, k, kVal, ref.data(), abs_sum.data());
    for (std::int64_t c = 0; c < n; ++c) {
      tally.add(out_val(out[r * n + c]), ref[c], jkref::gemm_tolerance(ref[c], abs_sum[c], k, bf16_out),
                format("row %lld col %lld", static_cast<long long>(r), static_cast<long long>(c)));
    }
  }
  const double rms = bf16_out ? kRmsBf16 : kRmsF32;
  Verdict v{tally.pass(rms), rt.describe() + format(" n=%lld k=%lld: ", static_cast<long long>(n),
                                                     static_cast<long long>(k)) + tally.describe(rms)};
  v.require(count_nan(out) == 0, format("%zu elements not written (NaN)", count_nan(out)));
  v.require(std::memcmp(out.data(), again.data(), out.size() * sizeof(OutT)) == 0, "repeat run not bit-identical");
  v.require(d_out.guards_intact(), "WROTE OUTSIDE THE OUTPUT");
  return {v.pass, v.detail};
}

// ---- fc1 + SwiGLU ----------------------------------------------------------------------------------

CaseResult check_fc1_swiglu(Context& ctx, std::uint64_t seed, const Routing& rt, std::int64_t f, std::int64_t k,
                            jk_grouped_gemm_algo_t algo, std::size_t misalign) {
  Rng rng(seed);
  const std::int64_t n = 2 * f;
  const auto in = rng.bf16_vector(static_cast<std::size_t>(rt.rows * k));
  const auto w = rng.bf16_vector(static_cast<std::size_t>(rt.experts() * n * k));
  GuardedBuffer<std::uint16_t> d_in(in.size(), misalign), d_w(w.size(), misalign);
  GuardedBuffer<std::int32_t> d_off(rt.off32.size());
  GuardedBuffer<std::uint16_t> d_h(static_cast<std::size_t>(rt.rows * f), misalign);
  GuardedBuffer<std::uint16_t> d_z(static_cast<std::size_t>(rt.rows * n), misalign);
  d_in.upload(in);
  d_w.upload(w);
  d_off.upload(rt.off32);
  const auto run = [&](std::uint16_t* z, const char* what) {
    finish(jk_grouped_gemm_fc1_swiglu_bf16(d_in.data(), d_w.data(), d_h.data(), z, d_off.data(), rt.off32.data(),
                                           rt.rows, rt.experts(), f, k, algo, ctx.stream),
           ctx.stream, what);
  };
  run(d_z.data(), "fc1_swiglu");
  const auto h = d_h.download();
  const auto z = d_z.download();
  d_h.poison();
  d_z.poison();
  run(d_z.data(), "fc1_swiglu (repeat)");
  const auto h2 = d_h.download();
  const auto z2 = d_z.download();

  // Z against the GEMM reference.
  Tally tz;
  std::vector<double> ref(static_cast<std::size_t>(n)), abs_sum(static_cast<std::size_t>(n));
  const std::vector<std::int64_t> checked_rows = sample_rows(rt, n * k, seed + 1);
  for (std::int64_t r : checked_rows) {
    jkref::gg_fwd_row(in.data(), w.data(), jkref::expert_of_row(rt.off64, r), r, n, k, kVal, ref.data(), abs_sum.data());
    for (std::int64_t c = 0; c < n; ++c) {
      tz.add(bval(z[r * n + c]), ref[c], jkref::gemm_tolerance(ref[c], abs_sum[c], k, true),
             format("z row %lld col %lld", static_cast<long long>(r), static_cast<long long>(c)));
    }
  }
  // H against the HF bf16 SwiGLU sequence applied to the device's bf16 Z (every column of the checked
  // rows; the rest of H is covered by the NaN scan and by the H-without-Z comparison).
  std::size_t h_bad = 0, h_exact = 0, h_checked = 0;
  std::string h_first;
  for (std::int64_t r : checked_rows) {
    h_checked += static_cast<std::size_t>(f);
    for (std::int64_t j = 0; j < f; ++j) {
      const double a = bval(z[r * n + j]), b = bval(z[r * n + f + j]), got = bval(h[r * f + j]);
      h_exact += got == jkref::swiglu_hf_bf16(a, b) ? 1 : 0;
      if (!jkref::swiglu_hf_bf16_interval(a, b).contains(got) && h_bad++ == 0) {
        h_first = format("h row %lld col %lld: a %.9g b %.9g got %.9g ref %.9g", static_cast<long long>(r),
                         static_cast<long long>(j), a, b, got, jkref::swiglu_hf_bf16(a, b));
      }
    }
  }
  Verdict v{tz.pass(kRmsBf16) && h_bad == 0,
            rt.describe() + format(" f=%lld k=%lld: Z %s; H %zu outside, %zu/%zu bit-exact to the HF sequence",
                                   static_cast<long long>(f), static_cast<long long>(k), tz.describe(kRmsBf16).c_str(),
                                   h_bad, h_exact, h_checked)};
  if (h_bad) v.detail += "; first: " + h_first;
  v.require(count_nan(z) == 0 && count_nan(h) == 0, "elements not written (NaN)");
  v.require(h == h2 && z == z2, "repeat run not bit-identical");
  v.require(d_h.guards_intact() && d_z.guards_intact(), "WROTE OUTSIDE THE OUTPUT");
  if (algo != JK_GROUPED_GEMM_CUBLASLT) {  // without Z: the same H, and Z untouched
    d_h.poison();
    d_z.poison();
    run(nullptr, "fc1_swiglu (z = null)");
    const auto h3 = d_h.download();
    const auto z3 = d_z.download();
    v.require(h3 == h, "H without Z differs from H with Z");
    v.require(std::all_of(z3.begin(), z3.end(), [](std::uint16_t b) { return b == 0xffffu; }), "z = null but Z written");
    v.require(d_h.guards_intact(), "WROTE OUTSIDE THE OUTPUT (z = null)");
  }
  return {v.pass, v.detail};
}

// ---- backward: data gradient ------------------------------------------------------------------------

CaseResult check_bwd_data(Context& ctx, std::uint64_t seed, const Routing& rt, std::int64_t n, std::int64_t k,
                          jk_grouped_gemm_algo_t algo, std::size_t misalign) {
  Rng rng(seed);
  const auto dout = rng.bf16_vector(static_cast<std::size_t>(rt.rows * n));
  const auto w = rng.bf16_vector(static_cast<std::size_t>(rt.experts() * n * k));
  GuardedBuffer<std::uint16_t> d_dout(dout.size(), misalign), d_w(w.size(), misalign);
  GuardedBuffer<std::int32_t> d_off(rt.off32.size());
  GuardedBuffer<std::uint16_t> d_din(static_cast<std::size_t>(rt.rows * k), misalign);
  d_dout.upload(dout);
  d_w.upload(w);
  d_off.upload(rt.off32);
  const auto run = [&](const char* what) {
    finish(jk_grouped_gemm_bwd_data_bf16(d_dout.data(), d_w.data(), d_din.data(), d_off.data(), rt.off32.data(),
                                         rt.rows, rt.experts(), n, k, algo, ctx.stream),
           ctx.stream, what);
  };
  run("bwd_data");
  const auto din = d_din.download();
  d_din.poison();
  run("bwd_data (repeat)");
  const auto again = d_din.download();
  Tally tally;
  std::vector<double> ref(static_cast<std::size_t>(k)), abs_sum(static_cast<std::size_t>(k));
  for (std::int64_t r : sample_rows(rt, n * k, seed + 1)) {
    jkref::gg_bwd_data_row(dout.data(), w.data(), jkref::expert_of_row(rt.off64, r), r, n, k, kVal, ref.data(),
                           abs_sum.data());
    for (std::int64_t c = 0; c < k; ++c) {
      tally.add(bval(din[r * k + c]), ref[c], jkref::gemm_tolerance(ref[c], abs_sum[c], n, true),
                format("row %lld col %lld", static_cast<long long>(r), static_cast<long long>(c)));
    }
  }
  Verdict v{tally.pass(kRmsBf16), rt.describe() + format(" n=%lld k=%lld: ", static_cast<long long>(n),
                                                          static_cast<long long>(k)) + tally.describe(kRmsBf16)};
  v.require(count_nan(din) == 0, "elements not written (NaN)");
  v.require(din == again, "repeat run not bit-identical");
  v.require(d_din.guards_intact(), "WROTE OUTSIDE THE OUTPUT");
  return {v.pass, v.detail};
}

// ---- backward: weight gradient ----------------------------------------------------------------------

CaseResult check_bwd_weight(Context& ctx, std::uint64_t seed, const Routing& rt, std::int64_t n, std::int64_t k,
                            float beta, jk_grouped_gemm_algo_t algo, std::size_t misalign) {
  Rng rng(seed);
  const auto dout = rng.bf16_vector(static_cast<std::size_t>(rt.rows * n));
  const auto in = rng.bf16_vector(static_cast<std::size_t>(rt.rows * k));
  std::vector<float> old(static_cast<std::size_t>(rt.experts() * n * k));
  for (auto& x : old) x = static_cast<float>((rng.next() & 1u ? 1.0 : -1.0) * (0.5 + 1.5 * rng.uniform()));
  GuardedBuffer<std::uint16_t> d_dout(dout.size(), misalign), d_in(in.size(), misalign);
  GuardedBuffer<std::int32_t> d_off(rt.off32.size());
  GuardedBuffer<float> d_dw(old.size(), misalign);
  d_dout.upload(dout);
  d_in.upload(in);
  d_off.upload(rt.off32);
  const auto run = [&](const char* what) {
    if (beta != 0.0f) {
      d_dw.upload(old);
    } else {
      d_dw.poison();  // beta 0 must never read the old values
    }
    finish(jk_grouped_gemm_bwd_weight_f32(d_dout.data(), d_in.data(), d_dw.data(), beta, d_off.data(),
                                          rt.off32.data(), rt.rows, rt.experts(), n, k, algo, ctx.stream),
           ctx.stream, what);
  };
  run("bwd_weight");
  const auto dw = d_dw.download();
  run("bwd_weight (repeat)");
  const auto again = d_dw.download();

  Tally tally;
  Rng pick(seed + 1);
  const bool all = rt.experts() * n * k <= (1 << 18);
  for (std::int64_t e = 0; e < rt.experts(); ++e) {
    std::set<std::pair<std::int64_t, std::int64_t>> elems;
    if (all) {
      for (std::int64_t i = 0; i < n; ++i)
        for (std::int64_t c = 0; c < k; ++c) elems.insert({i, c});
    } else {
      for (std::int64_t i : {0, 63, 64, 127, 128, 255, 256}) {
        for (std::int64_t c : {0, 63, 64, 127, 128, 255, 256}) {
          elems.insert({std::min(i, n - 1), std::min(c, k - 1)});
        }
      }
      elems.insert({n - 1, k - 1});
      while (elems.size() < 400) elems.insert({pick.below(n), pick.below(k)});
    }
    for (const auto& [i, c] : elems) {
      double abs_sum = 0;
      const double g = jkref::gg_bwd_weight_elem(dout.data(), in.data(), rt.off64[e], rt.off64[e + 1], n, k, i, c, kVal,
                                                 &abs_sum);
      const std::size_t idx = static_cast<std::size_t>((e * n + i) * k + c);
      const double expect = beta != 0.0f ? static_cast<double>(old[idx]) + g : g;
      tally.add(dw[idx], expect, jkref::gemm_tolerance(expect, abs_sum, rt.sizes[e], false),
                format("expert %lld (%lld rows) elem (%lld, %lld)", static_cast<long long>(e),
                       static_cast<long long>(rt.sizes[e]), static_cast<long long>(i), static_cast<long long>(c)));
    }
  }
  Verdict v{tally.pass(kRmsF32), rt.describe() + format(" n=%lld k=%lld beta=%g: ", static_cast<long long>(n),
                                                         static_cast<long long>(k), beta) + tally.describe(kRmsF32)};
  v.require(count_nan(dw) == 0, "elements not written (NaN)");
  v.require(std::memcmp(dw.data(), again.data(), dw.size() * sizeof(float)) == 0, "repeat run not bit-identical");
  v.require(d_dw.guards_intact(), "WROTE OUTSIDE THE OUTPUT");
  return {v.pass, v.detail};
}

// ---- standalone SwiGLU --------------------------------------------------------------------------------

CaseResult check_swiglu(Context& ctx, std::uint64_t seed, std::int64_t rows, std::int64_t f, std::size_t misalign) {
  Rng rng(seed);
  // Gate values from 2^-9 to 16 in magnitude (silu saturates both ways), up and dh from 2^-6 to 2.
  std::vector<std::uint16_t> z(static_cast<std::size_t>(rows * 2 * f));
  for (std::int64_t r = 0; r < rows; ++r)
    for (std::int64_t j = 0; j < 2 * f; ++j) z[r * 2 * f + j] = j < f ? rng.bf16(118, 130) : rng.bf16();
  const auto dh = rng.bf16_vector(static_cast<std::size_t>(rows * f));
  GuardedBuffer<std::uint16_t> d_z(z.size(), misalign), d_dh(dh.size(), misalign);
  GuardedBuffer<std::uint16_t> d_h(dh.size(), misalign), d_dz(z.size(), misalign);
  d_z.upload(z);
  d_dh.upload(dh);
  finish(jk_swiglu_fwd_bf16(d_z.data(), d_h.data(), rows, f, ctx.stream), ctx.stream, "jk_swiglu_fwd_bf16");
  finish(jk_swiglu_bwd_bf16(d_z.data(), d_dh.data(), d_dz.data(), rows, f, ctx.stream), ctx.stream, "jk_swiglu_bwd_bf16");
  const auto h = d_h.download();
  const auto dz = d_dz.download();
  std::size_t bad = 0, exact = 0;
  std::string first;
  for (std::int64_t r = 0; r < rows; ++r) {
    for (std::int64_t j = 0; j < f; ++j) {
      const double a = bval(z[r * 2 * f + j]), b = bval(z[r * 2 * f + f + j]), g = bval(dh[r * f + j]);
      const double got_h = bval(h[r * f + j]), got_da = bval(dz[r * 2 * f + j]), got_db = bval(dz[r * 2 * f + f + j]);
      double rda = 0, rdb = 0;
      jkref::swiglu_bwd_hf_bf16(a, b, g, &rda, &rdb);
      jkref::Bf16Interval ida{}, idb{};
      jkref::swiglu_bwd_hf_bf16_interval(a, b, g, &ida, &idb);
      const bool ok = jkref::swiglu_hf_bf16_interval(a, b).contains(got_h) && ida.contains(got_da) && idb.contains(got_db);
      exact += (got_h == jkref::swiglu_hf_bf16(a, b) && got_da == rda && got_db == rdb) ? 1 : 0;
      if (!ok && bad++ == 0) {
        first = format("row %lld col %lld: a %.9g b %.9g dh %.9g: h %.9g (ref %.9g) da %.9g (ref %.9g) db %.9g (ref %.9g)",
                       static_cast<long long>(r), static_cast<long long>(j), a, b, g, got_h,
                       jkref::swiglu_hf_bf16(a, b), got_da, rda, got_db, rdb);
      }
    }
  }
  Verdict v{bad == 0, format("rows=%lld f=%lld: %zu outside the accepted values, %zu/%zu bit-exact to the HF sequence "
                             "(tol: HF bf16 sequence, fp32 silu within 2^-20)",
                             static_cast<long long>(rows), static_cast<long long>(f), bad, exact, h.size())};
  if (bad) v.detail += "; first: " + first;
  v.require(count_nan(h) == 0 && count_nan(dz) == 0, "elements not written (NaN)");
  v.require(d_h.guards_intact() && d_dz.guards_intact(), "WROTE OUTSIDE THE OUTPUT");
  return {v.pass, v.detail};
}

// ---- path comparisons over full outputs -----------------------------------------------------------------

// Compares every element of the outputs of all algorithms for one op against each other with the
// norm bound in the header comment. op: 0 fwd (bf16), 1 bwd_data, 2 bwd_weight.
CaseResult check_paths(Context& ctx, std::uint64_t seed, const Routing& rt, std::int64_t n, std::int64_t k, int op) {
  Rng rng(seed);
  const std::int64_t E = rt.experts();
  // fwd: a = in [rows, k], b = w [E, n, k]; bwd_data: a = dout [rows, n], b = w; bwd_weight: a = dout, b = in.
  const std::int64_t a_cols = op == 0 ? k : n;
  const auto a = rng.bf16_vector(static_cast<std::size_t>(rt.rows * a_cols));
  const auto b = rng.bf16_vector(static_cast<std::size_t>(op == 2 ? rt.rows * k : E * n * k));
  GuardedBuffer<std::uint16_t> d_a(a.size()), d_b(b.size());
  GuardedBuffer<std::int32_t> d_off(rt.off32.size());
  d_a.upload(a);
  d_b.upload(b);
  d_off.upload(rt.off32);
  const std::size_t out_size = static_cast<std::size_t>(op == 0 ? rt.rows * n : op == 1 ? rt.rows * k : E * n * k);
  std::vector<std::vector<double>> results;
  std::vector<std::string> names;
  for (jk_grouped_gemm_algo_t algo :
       {JK_GROUPED_GEMM_SIMPLE, JK_GROUPED_GEMM_MMA, JK_GROUPED_GEMM_WGMMA, JK_GROUPED_GEMM_CUBLASLT}) {
    std::vector<double> vals(out_size);
    if (op == 2) {
      GuardedBuffer<float> d_out(out_size);
      finish(jk_grouped_gemm_bwd_weight_f32(d_a.data(), d_b.data(), d_out.data(), 0.0f, d_off.data(), rt.off32.data(),
                                            rt.rows, E, n, k, algo, ctx.stream),
             ctx.stream, "bwd_weight");
      const auto o = d_out.download();
      for (std::size_t i = 0; i < o.size(); ++i) vals[i] = o[i];
    } else {
      GuardedBuffer<std::uint16_t> d_out(out_size);
      if (op == 0) {
        finish(jk_grouped_gemm_fwd_bf16(d_a.data(), d_b.data(), d_out.data(), d_off.data(), rt.off32.data(), rt.rows, E,
                                        n, k, algo, ctx.stream),
               ctx.stream, "fwd");
      } else {
        finish(jk_grouped_gemm_bwd_data_bf16(d_a.data(), d_b.data(), d_out.data(), d_off.data(), rt.off32.data(),
                                             rt.rows, E, n, k, algo, ctx.stream),
               ctx.stream, "bwd_data");
      }
      const auto o = d_out.download();
      for (std::size_t i = 0; i < o.size(); ++i) vals[i] = bval(o[i]);
    }
    results.push_back(std::move(vals));
    names.push_back(jk_grouped_gemm_algo_name(algo));
  }
  // Norms of the reduction vectors: output element (p, q) reduces a-vector p with b-vector q.
  // fwd: p = row r (in[r, :]), q = (e, c) (w[e, c, :]); bwd_data: p = row r (dout[r, :]), q = (e, c)
  // (w[e, :, c]); bwd_weight: p = (e, i) (dout[rows e, i]), q = (e, c) (in[rows e, c]).
  std::vector<double> pa, qb;
  if (op == 2) {
    pa.assign(static_cast<std::size_t>(E * n), 0.0);
    qb.assign(static_cast<std::size_t>(E * k), 0.0);
    for (std::int64_t e = 0; e < E; ++e)
      for (std::int64_t r = rt.off64[e]; r < rt.off64[e + 1]; ++r) {
        for (std::int64_t i = 0; i < n; ++i) pa[e * n + i] += bval(a[r * n + i]) * bval(a[r * n + i]);
        for (std::int64_t c = 0; c < k; ++c) qb[e * k + c] += bval(b[r * k + c]) * bval(b[r * k + c]);
      }
  } else {
    pa.assign(static_cast<std::size_t>(rt.rows), 0.0);
    for (std::int64_t r = 0; r < rt.rows; ++r)
      for (std::int64_t c = 0; c < a_cols; ++c) pa[r] += bval(a[r * a_cols + c]) * bval(a[r * a_cols + c]);
    const std::int64_t q_count = op == 0 ? n : k;
    qb.assign(static_cast<std::size_t>(E * q_count), 0.0);
    for (std::int64_t e = 0; e < E; ++e)
      for (std::int64_t j = 0; j < n; ++j)
        for (std::int64_t c = 0; c < k; ++c) {
          const double v = bval(b[(e * n + j) * k + c]);
          qb[e * q_count + (op == 0 ? j : c)] += v * v;
        }
  }
  for (auto& x : pa) x = std::sqrt(x);
  for (auto& x : qb) x = std::sqrt(x);
  std::string detail = rt.describe() + format(" n=%lld k=%lld:", static_cast<long long>(n), static_cast<long long>(k));
  bool pass = true;
  for (std::size_t x = 0; x < results.size(); ++x) {
    for (std::size_t y = x + 1; y < results.size(); ++y) {
      std::size_t bad = 0, identical = 0;
      double worst = 0;
      std::string first;
      for (std::size_t i = 0; i < out_size; ++i) {
        std::int64_t p = 0, q = 0, kred = 0;
        if (op == 2) {
          const std::int64_t e = static_cast<std::int64_t>(i) / (n * k);
          const std::int64_t rem = static_cast<std::int64_t>(i) % (n * k);
          p = e * n + rem / k;
          q = e * k + rem % k;
          kred = rt.sizes[e];
        } else {
          const std::int64_t cols = op == 0 ? n : k;
          const std::int64_t r = static_cast<std::int64_t>(i) / cols;
          p = r;
          q = jkref::expert_of_row(rt.off64, r) * cols + static_cast<std::int64_t>(i) % cols;
          kred = op == 0 ? k : n;
        }
        const double u = results[x][i], v = results[y][i];
        const double big = std::max(std::fabs(u), std::fabs(v));
        const double ulp = op == 2 ? jkref::f32_ulp(big) : jkref::bf16_ulp(big);
        const double tol = 2 * ulp + 2.0 * static_cast<double>(kred) * 0x1p-24 * pa[p] * qb[q];
        const double err = std::fabs(u - v);
        identical += u == v ? 1 : 0;
        if (std::isfinite(err)) worst = std::max(worst, err / tol);
        if (!(err <= tol) && bad++ == 0) first = format(" (first at %zu: %.9g vs %.9g)", i, u, v);
      }
      pass = pass && bad == 0;
      detail += format(" %s~%s: %zu outside, %zu/%zu identical, max err/tol %.3f%s;", names[x].c_str(),
                       names[y].c_str(), bad, identical, out_size, worst, first.c_str());
    }
  }
  return {pass, detail};
}

// ---- argument checks ----------------------------------------------------------------------------------

CaseResult check_arguments(Context& ctx) {
  const Routing rt = routing({2, 0, 3});
  GuardedBuffer<std::uint16_t> a(5 * 16), w(3 * 16 * 16), out(5 * 32);
  GuardedBuffer<float> dw(3 * 16 * 16);
  GuardedBuffer<std::int32_t> off(4);
  off.upload(rt.off32);
  const std::int32_t* oh = rt.off32.data();
  const std::int32_t bad_host[] = {0, 3, 2, 5};
  const std::int32_t short_host[] = {0, 2, 2, 4};
  const auto S = ctx.stream;
  const auto G = JK_GROUPED_GEMM_SIMPLE;
  const auto L = JK_GROUPED_GEMM_CUBLASLT;
  std::vector<std::pair<const char*, cudaError_t>> invalid = {
      {"fwd null in", jk_grouped_gemm_fwd_bf16(nullptr, w.data(), out.data(), off.data(), oh, 5, 3, 16, 16, G, S)},
      {"fwd null w", jk_grouped_gemm_fwd_bf16(a.data(), nullptr, out.data(), off.data(), oh, 5, 3, 16, 16, G, S)},
      {"fwd null out", jk_grouped_gemm_fwd_bf16(a.data(), w.data(), nullptr, off.data(), oh, 5, 3, 16, 16, G, S)},
      {"fwd null offsets_dev", jk_grouped_gemm_fwd_bf16(a.data(), w.data(), out.data(), nullptr, oh, 5, 3, 16, 16, G, S)},
      {"fwd negative rows", jk_grouped_gemm_fwd_bf16(a.data(), w.data(), out.data(), off.data(), oh, -1, 3, 16, 16, G, S)},
      {"fwd negative n", jk_grouped_gemm_fwd_bf16(a.data(), w.data(), out.data(), off.data(), oh, 5, 3, -16, 16, G, S)},
      {"fwd negative k", jk_grouped_gemm_fwd_bf16(a.data(), w.data(), out.data(), off.data(), oh, 5, 3, 16, -1, G, S)},
      {"fwd zero experts", jk_grouped_gemm_fwd_bf16(a.data(), w.data(), out.data(), off.data(), oh, 5, 0, 16, 16, G, S)},
      {"fwd too many experts",
       jk_grouped_gemm_fwd_bf16(a.data(), w.data(), out.data(), off.data(), oh, 5, JK_GROUPED_GEMM_MAX_EXPERTS + 1, 16,
                                16, G, S)},
      {"fwd bad algo", jk_grouped_gemm_fwd_bf16(a.data(), w.data(), out.data(), off.data(), oh, 5, 3, 16, 16,
                                                static_cast<jk_grouped_gemm_algo_t>(42), S)},
      {"fwd cublaslt without host offsets",
       jk_grouped_gemm_fwd_bf16(a.data(), w.data(), out.data(), off.data(), nullptr, 5, 3, 16, 16, L, S)},
      {"fwd cublaslt decreasing host offsets",
       jk_grouped_gemm_fwd_bf16(a.data(), w.data(), out.data(), off.data(), bad_host, 5, 3, 16, 16, L, S)},
      {"fwd cublaslt host offsets not ending at rows",
       jk_grouped_gemm_fwd_bf16(a.data(), w.data(), out.data(), off.data(), short_host, 5, 3, 16, 16, L, S)},
      {"f32out null out", jk_grouped_gemm_fwd_f32out(a.data(), w.data(), nullptr, off.data(), oh, 5, 3, 16, 16, G, S)},
      {"fc1 null h", jk_grouped_gemm_fc1_swiglu_bf16(a.data(), w.data(), nullptr, out.data(), off.data(), oh, 5, 3, 8, 16, G, S)},
      {"fc1 negative f", jk_grouped_gemm_fc1_swiglu_bf16(a.data(), w.data(), out.data(), nullptr, off.data(), oh, 5, 3, -8, 16, G, S)},
      {"fc1 cublaslt without z",
       jk_grouped_gemm_fc1_swiglu_bf16(a.data(), w.data(), out.data(), nullptr, off.data(), oh, 5, 3, 8, 16, L, S)},
      {"bwd_data null din", jk_grouped_gemm_bwd_data_bf16(a.data(), w.data(), nullptr, off.data(), oh, 5, 3, 16, 16, G, S)},
      {"bwd_data null dout", jk_grouped_gemm_bwd_data_bf16(nullptr, w.data(), out.data(), off.data(), oh, 5, 3, 16, 16, G, S)},
      {"bwd_weight null dw", jk_grouped_gemm_bwd_weight_f32(a.data(), a.data(), nullptr, 0.0f, off.data(), oh, 5, 3, 16, 16, G, S)},
      {"bwd_weight beta 0.5", jk_grouped_gemm_bwd_weight_f32(a.data(), a.data(), dw.data(), 0.5f, off.data(), oh, 5, 3, 16, 16, G, S)},
      {"bwd_weight beta NaN", jk_grouped_gemm_bwd_weight_f32(a.data(), a.data(), dw.data(), NAN, off.data(), oh, 5, 3, 16, 16, G, S)},
      {"swiglu_fwd null z", jk_swiglu_fwd_bf16(nullptr, out.data(), 5, 8, S)},
      {"swiglu_fwd negative f", jk_swiglu_fwd_bf16(a.data(), out.data(), 5, -8, S)},
      {"swiglu_bwd null dh", jk_swiglu_bwd_bf16(a.data(), nullptr, out.data(), 5, 8, S)},
      {"swiglu_bwd negative rows", jk_swiglu_bwd_bf16(a.data(), a.data(), out.data(), -5, 8, S)},
  };
  std::string detail;
  bool pass = true;
  for (const auto& [what, status] : invalid) {
    if (status != cudaErrorInvalidValue) {
      pass = false;
      detail += format("%s gave %s; ", what, cudaGetErrorName(status));
    }
  }
  // Zero sizes: no-ops that succeed and write nothing (null inputs are fine then). The outputs are
  // real poisoned buffers (so "wrote nothing" is checked) except for the null-pointer no-ops.
  out.poison();
  dw.poison();
  const std::vector<std::pair<const char*, cudaError_t>> noops = {
      {"fwd rows 0", jk_grouped_gemm_fwd_bf16(nullptr, nullptr, out.data(), off.data(), oh, 0, 3, 16, 16, G, S)},
      {"fwd n 0", jk_grouped_gemm_fwd_bf16(nullptr, nullptr, out.data(), off.data(), oh, 5, 3, 0, 16, G, S)},
      {"fwd n 0 null out", jk_grouped_gemm_fwd_bf16(nullptr, nullptr, nullptr, off.data(), oh, 5, 3, 0, 16, G, S)},
      {"fc1 f 0", jk_grouped_gemm_fc1_swiglu_bf16(nullptr, nullptr, out.data(), out.data(), off.data(), oh, 5, 3, 0, 16, G, S)},
      {"bwd_data k 0", jk_grouped_gemm_bwd_data_bf16(nullptr, nullptr, out.data(), off.data(), oh, 5, 3, 16, 0, G, S)},
      {"bwd_weight n 0", jk_grouped_gemm_bwd_weight_f32(nullptr, nullptr, dw.data(), 0.0f, off.data(), oh, 5, 3, 0, 16, G, S)},
      {"bwd_weight k 0", jk_grouped_gemm_bwd_weight_f32(nullptr, nullptr, dw.data(), 1.0f, off.data(), oh, 5, 3, 16, 0, L, S)},
      {"swiglu_fwd rows 0", jk_swiglu_fwd_bf16(nullptr, out.data(), 0, 8, S)},
      {"swiglu_bwd f 0", jk_swiglu_bwd_bf16(nullptr, nullptr, out.data(), 5, 0, S)},
  };
  for (const auto& [what, status] : noops) {
    if (status != cudaSuccess) {
      pass = false;
      detail += format("%s gave %s; ", what, cudaGetErrorName(status));
    }
  }
  CHECK_CUDA(cudaStreamSynchronize(S));
  const auto untouched = out.download();
  const auto untouched_dw = dw.download();
  if (!std::all_of(untouched.begin(), untouched.end(), [](std::uint16_t b) { return b == 0xffffu; }) ||
      !std::all_of(untouched_dw.begin(), untouched_dw.end(), [](float v) { return std::isnan(v); })) {
    pass = false;
    detail += "a zero-size call wrote; ";
  }
  // k == 0: the empty sum, out = 0 (own and cuBLASLt paths); rows == 0 with beta 0: dW = 0.
  for (auto algo : {G, L}) {
    out.poison();
    finish(jk_grouped_gemm_fwd_bf16(nullptr, nullptr, out.data(), off.data(), oh, 5, 3, 32, 0, algo, S), S, "fwd k=0");
    const auto zeros = out.download();
    if (!std::all_of(zeros.begin(), zeros.end(), [](std::uint16_t b) { return b == 0; })) {
      pass = false;
      detail += format("fwd k=0 (%s) did not write zeros; ", jk_grouped_gemm_algo_name(algo));
    }
    dw.poison();
    const std::int32_t none[] = {0, 0, 0, 0};
    GuardedBuffer<std::int32_t> off0(4);
    off0.upload(std::vector<std::int32_t>(none, none + 4));
    finish(jk_grouped_gemm_bwd_weight_f32(nullptr, nullptr, dw.data(), 0.0f, off0.data(), none, 0, 3, 16, 16, algo, S),
           S, "bwd_weight rows=0");
    const auto dz = dw.download();
    if (!std::all_of(dz.begin(), dz.end(), [](float v) { return v == 0.0f; })) {
      pass = false;
      detail += format("bwd_weight rows=0 beta=0 (%s) did not zero dW; ", jk_grouped_gemm_algo_name(algo));
    }
  }
  const cudaError_t sticky = cudaGetLastError();
  if (sticky != cudaSuccess) {
    pass = false;
    detail += format("error left behind: %s; ", cudaGetErrorName(sticky));
  }
  if (!out.guards_intact() || !dw.guards_intact()) {
    pass = false;
    detail += "WROTE OUTSIDE THE OUTPUT; ";
  }
  if (detail.empty()) {
    detail = format("%zu invalid calls rejected with cudaErrorInvalidValue, %zu zero-size no-ops, k=0 writes zeros, "
                    "rows=0 beta=0 zeroes dW",
                    invalid.size(), noops.size());
  }
  return {pass, detail};
}

// ---- the case list --------------------------------------------------------------------------------------

struct Shape {
  std::vector<std::int64_t> sizes;
  std::int64_t n, k;
  const char* what;
};

std::vector<Case> make_cases(Context& ctx) {
  std::vector<Case> cases;
  cases.push_back({"api.argument_checks", [&] { return check_arguments(ctx); }});

  // Small and odd shapes: every algorithm, all rows checked.
  const std::vector<Shape> small = {
      {{1}, 1, 1, "one element"},
      {{3, 0, 1, 17, 9}, 37, 29, "odd sizes, empty and single-row experts"},
      {{70, 0, 65, 128}, 72, 200, "K not a multiple of the tile, rows across tile edges"},
      {{0, 0, 5}, 8, 16, "only the last expert has rows"},
      {{100, 1, 0, 300, 64, 64, 1, 470}, 256, 136, "E=8 uneven"},
      {{129, 127, 256}, 136, 264, "tile +-1 rows, aligned multiples of 8"},
  };
  for (const auto& s : small) {
    for (auto algo : kAllAlgos) {
      const std::string tag = format("%s [%s]", s.what, jk_grouped_gemm_algo_name(algo));
      cases.push_back({"fwd_bf16 " + tag, [&ctx, s, algo] {
                         return check_fwd<std::uint16_t>(ctx, ctx.next_seed(), routing(s.sizes), s.n, s.k, algo, 0);
                       }});
      cases.push_back({"fwd_f32out " + tag, [&ctx, s, algo] {
                         return check_fwd<float>(ctx, ctx.next_seed(), routing(s.sizes), s.n, s.k, algo, 0);
                       }});
      cases.push_back({"fc1_swiglu " + tag, [&ctx, s, algo] {
                         return check_fc1_swiglu(ctx, ctx.next_seed(), routing(s.sizes), (s.n + 1) / 2, s.k, algo, 0);
                       }});
      cases.push_back({"bwd_data " + tag, [&ctx, s, algo] {
                         return check_bwd_data(ctx, ctx.next_seed(), routing(s.sizes), s.n, s.k, algo, 0);
                       }});
      for (float beta : {0.0f, 1.0f}) {
        cases.push_back({format("bwd_weight beta=%g ", beta) + tag, [&ctx, s, algo, beta] {
                           return check_bwd_weight(ctx, ctx.next_seed(), routing(s.sizes), s.n, s.k, beta, algo, 0);
                         }});
      }
    }
  }
  // Unaligned base pointers (one element off): the tuned path must fall back and stay correct.
  for (auto algo : kOwnAlgos) {
    const Shape s{{40, 0, 90}, 64, 128, "unaligned pointers"};
    const std::string tag = format("%s [%s]", s.what, jk_grouped_gemm_algo_name(algo));
    cases.push_back({"fwd_bf16 " + tag, [&ctx, s, algo] {
                       return check_fwd<std::uint16_t>(ctx, ctx.next_seed(), routing(s.sizes), s.n, s.k, algo, 1);
                     }});
    cases.push_back({"fc1_swiglu " + tag, [&ctx, s, algo] {
                       return check_fc1_swiglu(ctx, ctx.next_seed(), routing(s.sizes), s.n / 2, s.k, algo, 1);
                     }});
    cases.push_back({"bwd_data " + tag, [&ctx, s, algo] {
                       return check_bwd_data(ctx, ctx.next_seed(), routing(s.sizes), s.n, s.k, algo, 1);
                     }});
    cases.push_back({"bwd_weight beta=1 " + tag, [&ctx, s, algo] {
                       return check_bwd_weight(ctx, ctx.next_seed(), routing(s.sizes), s.n, s.k, 1.0f, algo, 1);
                     }});
  }

  // Standalone SwiGLU.
  for (const auto& [rows, f, misalign] : std::vector<std::tuple<std::int64_t, std::int64_t, std::size_t>>{
           {1, 1, 0}, {3, 37, 0}, {17, 1000, 1}, {2048, 5632, 0}}) {
    cases.push_back({format("swiglu fwd+bwd rows=%lld f=%lld misalign=%zu", static_cast<long long>(rows),
                            static_cast<long long>(f), misalign),
                     [&ctx, rows = rows, f = f, misalign = misalign] {
                       return check_swiglu(ctx, ctx.next_seed(), rows, f, misalign);
                     }});
  }

  // JetMoE-8B shapes (4096 tokens, top-2: 8192 rows), skewed routing; sampled rows / elements.
  const Routing skew = routing_8b(true);
  for (auto algo : kAllAlgos) {
    if (algo == JK_GROUPED_GEMM_AUTO) continue;
    const char* name = jk_grouped_gemm_algo_name(algo);
    cases.push_back({format("8B MoE fc1+SwiGLU [8192x2048]x[8,11264,2048] [%s]", name), [&ctx, skew, algo] {
                       return check_fc1_swiglu(ctx, ctx.next_seed(), skew, 5632, 2048, algo, 0);
                     }});
    cases.push_back({format("8B MoE fc2 fwd [8192x5632]x[8,2048,5632] [%s]", name), [&ctx, skew, algo] {
                       return check_fwd<std::uint16_t>(ctx, ctx.next_seed(), skew, 2048, 5632, algo, 0);
                     }});
    cases.push_back({format("8B MoA W_q fwd fp32 out [8192x2048]x[8,2048,2048] [%s]", name), [&ctx, skew, algo] {
                       return check_fwd<float>(ctx, ctx.next_seed(), skew, 2048, 2048, algo, 0);
                     }});
    cases.push_back({format("8B MoE fc1 bwd_data dZ[8192x11264] W_in [%s]", name), [&ctx, skew, algo] {
                       return check_bwd_data(ctx, ctx.next_seed(), skew, 11264, 2048, algo, 0);
                     }});
    cases.push_back({format("8B MoE fc2 bwd_data dY[8192x2048] W_out [%s]", name), [&ctx, skew, algo] {
                       return check_bwd_data(ctx, ctx.next_seed(), skew, 2048, 5632, algo, 0);
                     }});
    cases.push_back({format("8B MoE fc1 bwd_weight dW_in [8,11264,2048] beta=1 [%s]", name), [&ctx, skew, algo] {
                       return check_bwd_weight(ctx, ctx.next_seed(), skew, 11264, 2048, 1.0f, algo, 0);
                     }});
    cases.push_back({format("8B MoE fc2 bwd_weight dW_out [8,2048,5632] beta=0 [%s]", name), [&ctx, skew, algo] {
                       return check_bwd_weight(ctx, ctx.next_seed(), skew, 2048, 5632, 0.0f, algo, 0);
                     }});
  }

  // Every element of full outputs, all algorithms against each other.
  const Routing mid = routing({700, 0, 1, 1200, 333, 1, 64, 1});
  cases.push_back({"paths fwd (simple, mma, wgmma, cublaslt) E=8 skewed n=1000 k=1024",
                   [&ctx, mid] { return check_paths(ctx, ctx.next_seed(), mid, 1000, 1024, 0); }});
  cases.push_back({"paths bwd_data (simple, mma, wgmma, cublaslt) E=8 skewed n=1024 k=1000",
                   [&ctx, mid] { return check_paths(ctx, ctx.next_seed(), mid, 1024, 1000, 1); }});
  cases.push_back({"paths bwd_weight (simple, mma, wgmma, cublaslt) E=8 skewed n=512 k=520",
                   [&ctx, mid] { return check_paths(ctx, ctx.next_seed(), mid, 512, 520, 2); }});
  cases.push_back({"paths 8B MoA W_o fwd (simple, mma, wgmma, cublaslt) balanced [8192x2048]x[8,2048,2048]", [&ctx] {
                     return check_paths(ctx, ctx.next_seed(), routing_8b(false), 2048, 2048, 0);
                   }});
  return cases;
}

}  // namespace

int main(int argc, char** argv) { return jkt::run_main(argc, argv, "jetmoe-grouped-gemm-test", make_cases); }
