// Self-checking test of the jetmoe kernels against an independent CPU reference in double precision.
//
// Every case: fresh random inputs from a fixed seed (never zeros), outputs poisoned with NaN (0xFF
// bytes) inside guard zones before the run, results compared with stated tolerances, guard zones
// checked for stray writes. One PASS/FAIL line per case, then 'N passed, N failed'.
// Exit status: 0 all passed, 1 any failure, 2 bad command line, 77 no CUDA device (never a pass).
#include "harness.cuh"

#include <cinttypes>
#include <cmath>
#include <string>
#include <vector>

namespace {

using namespace jkt;

// ---- RMSNorm reference (HF JetMoeRMSNorm numerics, exact arithmetic in double) --------------------

// The device computes x * r in fp32 with a relative error far below kNearBoundary (sum of squares
// through the block's reduction tree, rsqrtf, one multiply: ~5e-6 worst case at hidden 65k). Where
// the exact x * r lies closer than that to a bf16 rounding boundary, bf16(x * r) may legitimately be
// either neighbour; everywhere else the device must be bit-exact.
constexpr double kNearBoundary = 2e-5;

struct RmsnormReference {
  std::vector<double> rstd;           // per row
  std::vector<double> y_f32;          // fp32 path: w * x * r, unrounded
  std::vector<std::uint16_t> y_bf16;  // bf16 path: bf16(w * bf16(x * r)), exact arithmetic
  std::vector<std::uint16_t> y_bf16_alt;  // the other acceptable result near a boundary, else == y_bf16
};

template <typename T>
double value_of(T v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else {
    return bf16_value(v);
  }
}

template <typename T>
RmsnormReference reference_rmsnorm(const std::vector<T>& x, const std::vector<T>& w, std::int64_t rows,
                                   std::int64_t hidden, float eps) {
  RmsnormReference ref;
  ref.rstd.resize(rows);
  if constexpr (std::is_same_v<T, float>) {
    ref.y_f32.resize(x.size());
  } else {
    ref.y_bf16.resize(x.size());
    ref.y_bf16_alt.resize(x.size());
  }
  for (std::int64_t r = 0; r < rows; ++r) {
    double sum_sq = 0.0;
    for (std::int64_t c = 0; c < hidden; ++c) sum_sq += value_of(x[r * hidden + c]) * value_of(x[r * hidden + c]);
    const double rstd = 1.0 / std::sqrt(sum_sq / static_cast<double>(hidden) + static_cast<double>(eps));
    ref.rstd[r] = rstd;
    for (std::int64_t c = 0; c < hidden; ++c) {
      const std::size_t i = static_cast<std::size_t>(r * hidden + c);
      if constexpr (std::is_same_v<T, float>) {
        ref.y_f32[i] = value_of(w[c]) * (value_of(x[i]) * rstd);
      } else {
        const double exact = value_of(x[i]) * rstd;
        const std::uint16_t normed = round_to_bf16(exact);
        // Rounding is monotone and kNearBoundary is far below the bf16 spacing, so the perturbed
        // values can only land on `normed` or on one neighbour.
        std::uint16_t neighbour = round_to_bf16(exact * (1.0 - kNearBoundary));
        if (neighbour == normed) neighbour = round_to_bf16(exact * (1.0 + kNearBoundary));
        ref.y_bf16[i] = round_to_bf16(value_of(w[c]) * bf16_value(normed));
        ref.y_bf16_alt[i] = round_to_bf16(value_of(w[c]) * bf16_value(neighbour));
      }
    }
  }
  return ref;
}

// bf16 -> fp32: exact for every pattern, NaN payloads kept bit for bit.
CaseResult check_bf16_to_f32(Context& ctx, const std::vector<std::uint16_t>& in, std::size_t offset) {
  GuardedBuffer<std::uint16_t> d_in(in.size(), offset);
  GuardedBuffer<float> d_out(in.size(), offset);
  d_in.upload(in);
  finish(jk_bf16_to_f32(d_in.data(), d_out.data(), static_cast<std::int64_t>(in.size()), ctx.stream),
         ctx.stream, "jk_bf16_to_f32");
  const std::vector<float> out = d_out.download();
  std::size_t bad = 0;
  std::size_t first_bad = 0;
  for (std::size_t i = 0; i < in.size(); ++i) {
    const bool ok = bf16_is_nan(in[i]) ? bits_of(out[i]) == (static_cast<std::uint32_t>(in[i]) << 16)
                                       : static_cast<double>(out[i]) == bf16_value(in[i]) &&
                                             std::signbit(out[i]) == ((in[i] & 0x8000u) != 0);
    if (!ok && bad++ == 0) first_bad = i;
  }
  const bool guards = d_out.guards_intact();
  std::string detail = format("%zu values, %zu wrong (tol: exact)", in.size(), bad);
  if (bad) detail += format("; first at %zu: in 0x%04x out 0x%08x", first_bad, in[first_bad], bits_of(out[first_bad]));
  if (!guards) detail += "; WROTE OUTSIDE THE OUTPUT";
  return {bad == 0 && guards, detail};
}

// fp32 -> bf16: every value must equal the reference rounding bit for bit.
CaseResult check_f32_to_bf16(Context& ctx, const std::vector<float>& in, std::size_t offset) {
  GuardedBuffer<float> d_in(in.size(), offset);
  GuardedBuffer<std::uint16_t> d_out(in.size(), offset);
  d_in.upload(in);
  finish(jk_f32_to_bf16(d_in.data(), d_out.data(), static_cast<std::int64_t>(in.size()), ctx.stream),
         ctx.stream, "jk_f32_to_bf16");
  const std::vector<std::uint16_t> out = d_out.download();
  std::size_t bad = 0;
  std::size_t first_bad = 0;
  std::size_t nans = 0;
  for (std::size_t i = 0; i < in.size(); ++i) {
    nans += std::isnan(in[i]) ? 1 : 0;
    if (out[i] != expected_f32_to_bf16(in[i]) && bad++ == 0) first_bad = i;
  }
  const bool guards = d_out.guards_intact();
  std::string detail = format("%zu values (%zu NaN), %zu wrong (tol: bit-exact RNE)", in.size(), nans, bad);
  if (bad) {
    detail += format("; first at %zu: in 0x%08x out 0x%04x expected 0x%04x", first_bad, bits_of(in[first_bad]),
                     out[first_bad], expected_f32_to_bf16(in[first_bad]));
  }
  if (!guards) detail += "; WROTE OUTSIDE THE OUTPUT";
  return {bad == 0 && guards, detail};
}

// Hand-checked roundings: guards the reference itself (and the kernel with it).
const struct {
  std::uint32_t in;
  std::uint16_t out;
} kRoundingTable[] = {
    {0x3f800000u, 0x3f80u},  // 1.0
    {0x3f808000u, 0x3f80u},  // tie, even below: stays
    {0x3f818000u, 0x3f82u},  // tie, odd below: up
    {0x3f808001u, 0x3f81u},  // above the tie: up
    {0x3f80ffffu, 0x3f81u},
    {0xbf818000u, 0xbf82u},  // negative tie: away from zero to even
    {0x7f7fffffu, 0x7f80u},  // FLT_MAX rounds to +Inf
    {0x7f7f7fffu, 0x7f7fu},  // just below the tie: largest finite bf16
    {0x7f7f8000u, 0x7f80u},  // tie at the top, odd below: Inf
    {0x7f800000u, 0x7f80u},  // +Inf
    {0xff800000u, 0xff80u},  // -Inf
    {0x7fc00000u, 0x7fc0u},  // quiet NaN
    {0x7f800001u, 0x7fc0u},  // signalling NaN with a low payload: quiet NaN, never Inf
    {0xff800001u, 0xffc0u},  // negative signalling NaN
    {0x7fa00000u, 0x7fe0u},  // NaN payload bits kept, quiet bit set
    {0x00000001u, 0x0000u},  // smallest subnormal: to +0
    {0x00008000u, 0x0000u},  // subnormal tie, even below
    {0x00018000u, 0x0002u},  // subnormal tie, odd below
    {0x007fffffu, 0x0080u},  // largest subnormal rounds up to the smallest normal
    {0x80000000u, 0x8000u},  // -0
};

CaseResult check_reference_table() {
  int bad = 0;
  std::string detail;
  for (const auto& entry : kRoundingTable) {
    const std::uint16_t got = expected_f32_to_bf16(float_of(entry.in));
    if (got != entry.out) {
      ++bad;
      detail += format(" 0x%08x->0x%04x(want 0x%04x)", entry.in, got, entry.out);
    }
  }
  return {bad == 0, format("%zu hand-checked roundings, %d wrong%s", std::size(kRoundingTable), bad, detail.c_str())};
}

struct NormShape {
  std::int64_t rows;
  std::int64_t hidden;
  float eps;
  std::size_t offset;  // elements: non-zero makes every pointer unaligned
  bool in_place;
  bool with_rstd;
  const char* note;
};

std::string shape_label(const NormShape& s) {
  std::string label = format("rows=%" PRId64 " hidden=%" PRId64 " eps=%g", s.rows, s.hidden, static_cast<double>(s.eps));
  if (s.offset) label += format(" offset=%zu", s.offset);
  if (s.in_place) label += " in-place";
  if (!s.with_rstd) label += " no-rstd";
  if (s.note && *s.note) label += format(" [%s]", s.note);
  return label;
}

// Runs one RMSNorm launch and returns y and rstd. x is uploaded into the output buffer when in place.
template <typename T>
void run_rmsnorm(Context& ctx, const NormShape& s, const std::vector<T>& x, const std::vector<T>& w,
                 std::vector<T>* y, std::vector<float>* rstd, bool* guards) {
  const std::size_t n = static_cast<std::size_t>(s.rows * s.hidden);
  GuardedBuffer<T> d_x(s.in_place ? 0 : n, s.offset);
  GuardedBuffer<T> d_w(static_cast<std::size_t>(s.hidden), s.offset);
  GuardedBuffer<T> d_y(n, s.offset);
  GuardedBuffer<float> d_rstd(static_cast<std::size_t>(s.rows));
  d_w.upload(w);
  if (s.in_place) {
    d_y.upload(x);
  } else {
    d_x.upload(x);
  }
  const T* x_ptr = s.in_place ? d_y.data() : d_x.data();
  float* rstd_ptr = s.with_rstd ? d_rstd.data() : nullptr;
  cudaError_t status;
  if constexpr (std::is_same_v<T, float>) {
    status = jk_rmsnorm_fwd_f32(x_ptr, d_w.data(), d_y.data(), rstd_ptr, s.rows, s.hidden, s.eps, ctx.stream);
  } else {
    status = jk_rmsnorm_fwd_bf16(x_ptr, d_w.data(), d_y.data(), rstd_ptr, s.rows, s.hidden, s.eps, ctx.stream);
  }
  finish(status, ctx.stream, "jk_rmsnorm_fwd");
  *y = d_y.download();
  *rstd = d_rstd.download();
  *guards = d_y.guards_intact() && d_rstd.guards_intact();
}

// rstd: relative error against double.
constexpr double kRstdRtol = 1e-5;

std::size_t count_bad_rstd(const std::vector<float>& rstd, const std::vector<double>& ref, bool with_rstd) {
  std::size_t bad = 0;
  for (std::size_t r = 0; r < ref.size(); ++r) {
    const bool ok = with_rstd ? std::fabs(rstd[r] - ref[r]) <= kRstdRtol * ref[r] : std::isnan(rstd[r]);
    bad += ok ? 0 : 1;
  }
  return bad;
}

// fp32: |y - ref| <= atol + rtol |ref|. Error budget: fp32 sum of squares and rsqrtf (a few ulp,
// ~1e-6 relative at hidden 65k), then two fp32 multiplies.
CaseResult check_rmsnorm_f32(Context& ctx, const NormShape& s) {
  constexpr double kAtol = 1e-6;
  constexpr double kRtol = 1e-5;
  Inputs inputs(ctx.next_seed());
  const std::vector<float> x = inputs.activations(s.rows, s.hidden);
  const std::vector<float> w = inputs.weights(s.hidden);
  std::vector<float> y;
  std::vector<float> rstd;
  bool guards = false;
  run_rmsnorm(ctx, s, x, w, &y, &rstd, &guards);
  const RmsnormReference ref = reference_rmsnorm(x, w, s.rows, s.hidden, s.eps);

  std::size_t bad = 0;
  double worst = 0.0;  // largest |error| / tolerance
  for (std::size_t i = 0; i < y.size(); ++i) {
    const double tol = kAtol + kRtol * std::fabs(ref.y_f32[i]);
    const double err = std::fabs(static_cast<double>(y[i]) - ref.y_f32[i]);
    if (!(err <= tol)) ++bad;  // NaN (poison left behind) counts as bad
    worst = std::max(worst, std::isnan(err) ? INFINITY : err / tol);
  }
  const std::size_t bad_rstd = count_bad_rstd(rstd, ref.rstd, s.with_rstd);
  std::string detail = format("%zu wrong of %zu, worst err/tol %.3f, rstd wrong %zu (tol: |d| <= %g + %g|ref|, rstd rtol %g)",
                              bad, y.size(), worst, bad_rstd, kAtol, kRtol, kRstdRtol);
  if (!guards) detail += "; WROTE OUTSIDE THE OUTPUT";
  return {bad == 0 && bad_rstd == 0 && guards, detail};
}

// bf16: the reference rounds as HF does (normalise, round to bf16, multiply by the weight, round),
// in exact arithmetic. Every value must be bit-exact, except that near a bf16 rounding boundary of
// x * r (see kNearBoundary) the result from the other neighbour is accepted too.
CaseResult check_rmsnorm_bf16(Context& ctx, const NormShape& s) {
  Inputs inputs(ctx.next_seed());
  const std::vector<std::uint16_t> x = to_bf16(inputs.activations(s.rows, s.hidden));
  const std::vector<std::uint16_t> w = to_bf16(inputs.weights(s.hidden));
  std::vector<std::uint16_t> y;
  std::vector<float> rstd;
  bool guards = false;
  run_rmsnorm(ctx, s, x, w, &y, &rstd, &guards);
  const RmsnormReference ref = reference_rmsnorm(x, w, s.rows, s.hidden, s.eps);

  std::size_t bad = 0;
  std::size_t near_boundary = 0;  // values where two results are acceptable
  std::size_t took_other = 0;     // ... and the device gave the other one
  std::size_t first_bad = 0;
  for (std::size_t i = 0; i < y.size(); ++i) {
    const bool ambiguous = ref.y_bf16_alt[i] != ref.y_bf16[i];
    near_boundary += ambiguous ? 1 : 0;
    if (y[i] == ref.y_bf16[i]) continue;
    if (ambiguous && y[i] == ref.y_bf16_alt[i]) {
      ++took_other;
      continue;
    }
    if (bad++ == 0) first_bad = i;  // NaN (poison left behind) lands here too
  }
  const std::size_t bad_rstd = count_bad_rstd(rstd, ref.rstd, s.with_rstd);
  std::string detail = format("%zu wrong of %zu, %zu near a rounding boundary of which %zu took the other "
                              "neighbour, rstd wrong %zu (tol: bit-exact, either neighbour within %g relative "
                              "of a boundary; rstd rtol %g)",
                              bad, y.size(), near_boundary, took_other, bad_rstd, kNearBoundary, kRstdRtol);
  if (bad) {
    detail += format("; first at %zu: got 0x%04x want 0x%04x (%d ulp)", first_bad, y[first_bad],
                     ref.y_bf16[first_bad], bf16_is_nan(y[first_bad]) ? -1 : bf16_ulp_distance(y[first_bad], ref.y_bf16[first_bad]));
  }
  if (!guards) detail += "; WROTE OUTSIDE THE OUTPUT";
  return {bad == 0 && bad_rstd == 0 && guards, detail};
}

// Argument validation and no-op calls: no launch, no sticky error left behind.
CaseResult check_arguments(Context& ctx) {
  struct Expect {
    const char* what;
    cudaError_t got;
    cudaError_t want;
  };
  float* f = nullptr;
  std::uint16_t* h = nullptr;
  const float nan = std::nanf("");
  const Expect expects[] = {
      {"rmsnorm f32 rows=0 (no-op)", jk_rmsnorm_fwd_f32(f, f, f, f, 0, 8, 1e-6f, ctx.stream), cudaSuccess},
      {"rmsnorm bf16 rows=0 (no-op)", jk_rmsnorm_fwd_bf16(h, h, h, f, 0, 8, 1e-6f, ctx.stream), cudaSuccess},
      {"rmsnorm rows<0", jk_rmsnorm_fwd_f32(f, f, f, f, -1, 8, 1e-6f, ctx.stream), cudaErrorInvalidValue},
      {"rmsnorm hidden=0", jk_rmsnorm_fwd_f32(f, f, f, f, 0, 0, 1e-6f, ctx.stream), cudaErrorInvalidValue},
      {"rmsnorm eps=NaN", jk_rmsnorm_fwd_bf16(h, h, h, f, 0, 8, nan, ctx.stream), cudaErrorInvalidValue},
      {"rmsnorm eps<0", jk_rmsnorm_fwd_bf16(h, h, h, f, 0, 8, -1.0f, ctx.stream), cudaErrorInvalidValue},
      {"rmsnorm null x", jk_rmsnorm_fwd_f32(nullptr, f, f, f, 4, 8, 1e-6f, ctx.stream), cudaErrorInvalidValue},
      {"f32_to_bf16 n=0 (no-op)", jk_f32_to_bf16(nullptr, nullptr, 0, ctx.stream), cudaSuccess},
      {"f32_to_bf16 n<0", jk_f32_to_bf16(f, h, -1, ctx.stream), cudaErrorInvalidValue},
      {"bf16_to_f32 null", jk_bf16_to_f32(nullptr, f, 16, ctx.stream), cudaErrorInvalidValue},
      {"runtime_info null", jk_runtime_info(nullptr), cudaErrorInvalidValue},
  };
  int bad = 0;
  std::string detail;
  for (const auto& e : expects) {
    if (e.got != e.want) {
      ++bad;
      detail += format("; %s gave %s, want %s", e.what, cudaGetErrorName(e.got), cudaGetErrorName(e.want));
    }
  }
  const cudaError_t sticky = cudaGetLastError();
  if (sticky != cudaSuccess) {
    ++bad;
    detail += format("; left error %s behind", cudaGetErrorName(sticky));
  }
  return {bad == 0, format("%zu calls, %d wrong%s", std::size(expects), bad, detail.c_str())};
}

std::vector<Case> make_cases(Context& ctx) {
  std::vector<Case> cases;
  cases.push_back({"api.argument_checks", [&] { return check_arguments(ctx); }});
  cases.push_back({"reference.bf16_rounding_table", [] { return check_reference_table(); }});

  // bf16 -> fp32
  cases.push_back({"bf16_to_f32 all 65536 patterns", [&] {
                     std::vector<std::uint16_t> in(65536);
                     for (std::size_t i = 0; i < in.size(); ++i) in[i] = static_cast<std::uint16_t>(i);
                     return check_bf16_to_f32(ctx, in, 0);
                   }});
  for (const auto& [n, offset] : std::vector<std::pair<std::size_t, std::size_t>>{{1, 0}, {7, 0}, {1000003, 0}, {4099, 3}}) {
    cases.push_back({format("bf16_to_f32 random n=%zu offset=%zu", n, offset), [&ctx, n = n, offset = offset] {
                       Inputs inputs(ctx.next_seed());
                       std::vector<std::uint16_t> in(n);
                       for (auto& v : in) v = static_cast<std::uint16_t>(inputs.bits32());
                       return check_bf16_to_f32(ctx, in, offset);
                     }});
  }

  // fp32 -> bf16
  cases.push_back({"f32_to_bf16 hand-checked table", [&] {
                     std::vector<float> in;
                     for (const auto& entry : kRoundingTable) in.push_back(float_of(entry.in));
                     return check_f32_to_bf16(ctx, in, 0);
                   }});
  cases.push_back({"f32_to_bf16 every 4093rd bit pattern (NaN, Inf, subnormals)", [&] {
                     std::vector<float> in;
                     for (std::uint64_t u = 0; u <= 0xffffffffu; u += 4093) in.push_back(float_of(static_cast<std::uint32_t>(u)));
                     return check_f32_to_bf16(ctx, in, 0);
                   }});
  cases.push_back({"f32_to_bf16 ties (low half 0x8000) and neighbours", [&] {
                     Inputs inputs(ctx.next_seed());
                     std::vector<float> in;
                     for (int i = 0; i < 100000; ++i) {
                       const std::uint32_t high = inputs.bits32() & 0xffff0000u;
                       for (std::uint32_t low : {0x7fffu, 0x8000u, 0x8001u}) in.push_back(float_of(high | low));
                     }
                     return check_f32_to_bf16(ctx, in, 0);
                   }});
  for (const auto& [n, offset] : std::vector<std::pair<std::size_t, std::size_t>>{{1, 0}, {3, 0}, {1000003, 0}, {4099, 1}}) {
    cases.push_back({format("f32_to_bf16 random n=%zu offset=%zu", n, offset), [&ctx, n = n, offset = offset] {
                       Inputs inputs(ctx.next_seed());
                       std::vector<float> in(n);
                       for (auto& v : in) v = inputs.nonzero(1e-3f, 1e3f);
                       return check_f32_to_bf16(ctx, in, offset);
                     }});
  }

  // RMSNorm
  const NormShape shapes[] = {
      {1, 1, 1e-6f, 0, false, true, "one element"},
      {3, 7, 1e-6f, 0, false, true, "odd"},
      {4, 32, 1e-6f, 0, false, true, ""},
      {5, 33, 1e-6f, 0, false, true, "odd"},
      {2, 127, 1e-6f, 0, false, true, "odd"},
      {9, 1000, 1e-6f, 0, false, true, ""},
      {6, 1004, 1e-6f, 0, false, true, "multiple of 4, not of 8"},
      {64, 2048, 1e-6f, 0, false, true, "JetMoE-8B block norm"},
      {64, 2048, 1e-5f, 0, false, true, "JetMoE-8B final norm"},
      {4096, 2048, 1e-6f, 0, false, false, "JetMoE-8B, 4096 tokens"},
      {3, 2051, 1e-6f, 0, false, true, "odd"},
      {2, 8191, 1e-6f, 0, false, true, "odd"},
      {1, 16384, 1e-6f, 0, false, true, ""},
      {2, 65537, 1e-6f, 0, false, true, "odd, many passes per thread"},
      {7, 2048, 1e-6f, 1, false, true, "unaligned: scalar path"},
      {8, 2048, 1e-6f, 0, true, true, "in place"},
      {5, 33, 1e-6f, 0, true, true, "in place, odd"},
  };
  for (const NormShape& s : shapes) {
    cases.push_back({"rmsnorm_f32 " + shape_label(s), [&ctx, s] { return check_rmsnorm_f32(ctx, s); }});
  }
  for (const NormShape& s : shapes) {
    cases.push_back({"rmsnorm_bf16 " + shape_label(s), [&ctx, s] { return check_rmsnorm_bf16(ctx, s); }});
  }
  return cases;
}

}  // namespace

int main(int argc, char** argv) { return jkt::run_main(argc, argv, "jetmoe-kernels-test", make_cases); }
