#pragma once
// CPU double-precision reference of the 'grouped_gemm' kernels (jetmoe/grouped_gemm.h): grouped expert
// GEMM forward, its data and weight gradients, SwiGLU forward/backward (exact maths and the HF bf16
// rounding sequence), and the tolerances the GPU test applies. Header-only, plain C++17, no CUDA: it is
// compiled by g++ (tests/kernel_reference/test_grouped_gemm.cpp proves it) and inside the nvcc-built GPU
// test (kernels/tests/test_grouped_gemm.cu).
//
// Element access is generic: every function takes raw pointers of some element type T plus a callable
// `val(T) -> double` (identity for double data, bf16 decoding for the GPU test's bf16 bits), so the GPU
// test can check rows or single elements of JetMoE-8B-sized tensors without widening them.
// Layouts are those of the kernels: in [rows, k], w [E, n, k], out [rows, n], dw [E, n, k], row-major.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "rounding.hpp"

namespace jkref {

// ---- bf16 rounding in double (independent of any bit trick) -------------------------------------

// Spacing of bf16 values at |v| (the ulp of the binade; 2^-133 for subnormals and zero).
inline double bf16_ulp(double v) {
  const double a = std::fabs(v);
  if (a == 0.0 || !std::isfinite(a)) return std::ldexp(1.0, -133);
  int e = 0;
  std::frexp(a, &e);  // a in [2^(e-1), 2^e)
  return std::ldexp(1.0, std::max(e - 1, -126) - 7);
}

// bf16_round: rounding.hpp (NaN, Inf and zero returned as they are).

// Spacing of fp32 values at |v|.
inline double f32_ulp(double v) {
  const double a = std::fabs(v);
  if (a == 0.0 || !std::isfinite(a)) return std::ldexp(1.0, -149);
  int e = 0;
  std::frexp(a, &e);
  return std::ldexp(1.0, std::max(e - 1, -126) - 23);
}

// The bf16 results a device may legitimately produce for an exact value x computed with an absolute
// error of at most `err` before the final rounding: every bf16 value between bf16(x - err) and
// bf16(x + err) (rounding is monotone, so that is all of them).
struct Bf16Interval {
  double lo, hi;
  bool contains(double v) const { return v >= lo && v <= hi; }
};
inline Bf16Interval bf16_interval(double x, double err) { return {bf16_round(x - err), bf16_round(x + err)}; }

// ---- grouped GEMM ------------------------------------------------------------------------------------

// Expert of row r (offsets non-decreasing, [E + 1]); -1 when r is outside [offsets[0], offsets[E]).
inline std::int64_t expert_of_row(const std::vector<std::int64_t>& offsets, std::int64_t r) {
  for (std::size_t e = 0; e + 1 < offsets.size(); ++e) {
    if (r >= offsets[e] && r < offsets[e + 1]) return static_cast<std::int64_t>(e);
  }
  return -1;
}

inline void check_offsets(const std::vector<std::int64_t>& offsets, std::int64_t rows) {
  if (offsets.size() < 2 || offsets.front() != 0 || offsets.back() != rows)
    throw std::invalid_argument("jkref: offsets must run from 0 to rows");
  for (std::size_t e = 0; e + 1 < offsets.size(); ++e)
    if (offsets[e + 1] < offsets[e]) throw std::invalid_argument("jkref: offsets must be non-decreasing");
}

// Forward, one row r of expert e: out[c] = sum_kk in[r, kk] w[e, c, kk]; abs_sum[c] = sum |in||w|.
template <class T, class Val>
void gg_fwd_row(const T* in, const T* w, std::int64_t e, std::int64_t r, std::int64_t n, std::int64_t k, Val val,
                double* out, double* abs_sum) {
  const T* x = in + r * k;
  for (std::int64_t c = 0; c < n; ++c) {
    const T* wr = w + (e * n + c) * k;
    double s = 0.0, a = 0.0;
    for (std::int64_t kk = 0; kk < k; ++kk) {
      const double p = val(x[kk]) * val(wr[kk]);
      s += p;
      a += std::fabs(p);
    }
    out[c] = s;
    if (abs_sum) abs_sum[c] = a;
  }
}

// Data gradient, one row r of expert e: din[c] = sum_j dout[r, j] w[e, j, c]   (c < k, j < n).
template <class T, class Val>
void gg_bwd_data_row(const T* dout, const T* w, std::int64_t e, std::int64_t r, std::int64_t n, std::int64_t k,
                     Val val, double* din, double* abs_sum) {
  for (std::int64_t c = 0; c < k; ++c) {
    din[c] = 0.0;
    if (abs_sum) abs_sum[c] = 0.0;
  }
  const T* g = dout + r * n;
  for (std::int64_t j = 0; j < n; ++j) {
    const double gj = val(g[j]);
    const T* wr = w + (e * n + j) * k;
    for (std::int64_t c = 0; c < k; ++c) {
      const double p = gj * val(wr[c]);
      din[c] += p;
      if (abs_sum) abs_sum[c] += std::fabs(p);
    }
  }
}

// Weight gradient, one element (i, c) of expert e whose rows are [r0, r1):
// dw[e, i, c] = sum_r dout[r, i] in[r, c]   (i < n, c < k).
template <class T, class Val>
double gg_bwd_weight_elem(const T* dout, const T* in, std::int64_t r0, std::int64_t r1, std::int64_t n,
                          std::int64_t k, std::int64_t i, std::int64_t c, Val val, double* abs_sum) {
  double s = 0.0, a = 0.0;
  for (std::int64_t r = r0; r < r1; ++r) {
    const double p = val(dout[r * n + i]) * val(in[r * k + c]);
    s += p;
    a += std::fabs(p);
  }
  if (abs_sum) *abs_sum = a;
  return s;
}

inline double identity(double v) { return v; }

// Whole-tensor versions on double data (the Catch2 proofs use these).
inline std::vector<double> gg_fwd(const std::vector<double>& in, const std::vector<double>& w,
                                  const std::vector<std::int64_t>& offsets, std::int64_t n, std::int64_t k) {
  const std::int64_t rows = offsets.back();
  check_offsets(offsets, rows);
  std::vector<double> out(static_cast<std::size_t>(rows * n));
  for (std::int64_t r = 0; r < rows; ++r)
    gg_fwd_row(in.data(), w.data(), expert_of_row(offsets, r), r, n, k, identity, &out[r * n], nullptr);
  return out;
}

inline std::vector<double> gg_bwd_data(const std::vector<double>& dout, const std::vector<double>& w,
                                       const std::vector<std::int64_t>& offsets, std::int64_t n, std::int64_t k) {
  const std::int64_t rows = offsets.back();
  check_offsets(offsets, rows);
  std::vector<double> din(static_cast<std::size_t>(rows * k));
  for (std::int64_t r = 0; r < rows; ++r)
    gg_bwd_data_row(dout.data(), w.data(), expert_of_row(offsets, r), r, n, k, identity, &din[r * k], nullptr);
  return din;
}

// dw = beta * dw_old + dout^T in per expert (dw_old ignored when beta == 0, so it may hold NaN).
inline std::vector<double> gg_bwd_weight(const std::vector<double>& dout, const std::vector<double>& in,
                                         const std::vector<std::int64_t>& offsets, std::int64_t n, std::int64_t k,
                                         double beta, const std::vector<double>& dw_old) {
  const std::int64_t rows = offsets.back();
  check_offsets(offsets, rows);
  const std::int64_t num_experts = static_cast<std::int64_t>(offsets.size()) - 1;
  std::vector<double> dw(static_cast<std::size_t>(num_experts * n * k));
  for (std::int64_t e = 0; e < num_experts; ++e)
    for (std::int64_t i = 0; i < n; ++i)
      for (std::int64_t c = 0; c < k; ++c) {
        const std::size_t idx = static_cast<std::size_t>((e * n + i) * k + c);
        const double g = gg_bwd_weight_elem(dout.data(), in.data(), offsets[e], offsets[e + 1], n, k, i, c, identity,
                                            nullptr);
        dw[idx] = beta == 0.0 ? g : beta * dw_old.at(idx) + g;
      }
  return dw;
}

// Accepted error of a GEMM output element computed in fp32 from products summed over `kred` terms
// whose absolute values add up to `abs_sum`: one ulp of the output type at the reference value (bf16
// or fp32 rounding of the result) plus the worst-case fp32 summation error kred * 2^-24 * abs_sum
// (any order, so the vendor path is covered too).
inline double gemm_tolerance(double ref, double abs_sum, std::int64_t kred, bool bf16_out) {
  const double rounding = bf16_out ? bf16_ulp(ref) : f32_ulp(ref);
  return rounding + static_cast<double>(kred) * std::ldexp(1.0, -24) * abs_sum;
}

// ---- SwiGLU --------------------------------------------------------------------------------------------

inline double sigmoid(double a) { return 1.0 / (1.0 + std::exp(-a)); }
inline double silu(double a) { return a * sigmoid(a); }

// Exact maths (jetmoe-spec.md sections 3 and 4): h = silu(a) b;
// da = dh b sig (1 + a (1 - sig)), db = dh silu(a).
inline double swiglu(double a, double b) { return silu(a) * b; }
inline void swiglu_grad(double a, double b, double dh, double* da, double* db) {
  const double s = sigmoid(a);
  *da = dh * b * s * (1.0 + a * (1.0 - s));
  *db = dh * silu(a);
}

// Relative error allowed for the fp32 evaluation of silu / sigmoid on the device or in PyTorch (expf
// and one division: a few fp32 ulps; 2^-20 leaves a wide margin and is still ~2^-12 of a bf16 ulp).
constexpr double kSiluRelErr = 0x1p-20;

// HF bf16 forward for bf16 inputs a, b (torch: F.silu in bf16 then the bf16 multiply):
// h = bf16(bf16(silu(a)) * b), with exact maths in between.
inline double swiglu_hf_bf16(double a, double b) { return bf16_round(bf16_round(silu(a)) * b); }

// The bf16 values a device computing silu in fp32 may give: s is within kSiluRelErr of silu(a) before
// its rounding; the product s * b is exact before the last rounding.
inline Bf16Interval swiglu_hf_bf16_interval(double a, double b) {
  const double x = silu(a);
  const Bf16Interval s = bf16_interval(x, std::fabs(x) * kSiluRelErr + 1e-300);
  const double p0 = bf16_round(s.lo * b);
  const double p1 = bf16_round(s.hi * b);
  return {std::min(p0, p1), std::max(p0, p1)};
}

// HF bf16 autograd of h = silu(a) * b (bf16 tensors), jetmoe-spec.md section 4 with torch's roundings:
//   db = bf16(dh * s)            with s = bf16(silu(a)) the saved forward output (mul backward)
//   ds = bf16(dh * b)                                                             (mul backward)
//   da = bf16(ds * sig * (1 + a (1 - sig)))  in fp32 from bf16 ds and a           (silu_backward)
inline void swiglu_bwd_hf_bf16(double a, double b, double dh, double* da, double* db) {
  const double s = bf16_round(silu(a));
  const double ds = bf16_round(dh * b);
  const double sg = sigmoid(a);
  *da = bf16_round(ds * sg * (1.0 + a * (1.0 - sg)));
  *db = bf16_round(dh * s);
}

// Accepted results of the backward on a device that evaluates sigmoid in fp32: db as for the forward
// (through s); da within an absolute error of kSiluRelErr * |ds| * (sig (1 + |a| (1 - sig)) + |a| + 1)
// (the fp32 evaluation of the factor, whose terms can cancel near a = -1.28).
inline void swiglu_bwd_hf_bf16_interval(double a, double b, double dh, Bf16Interval* da, Bf16Interval* db) {
  const double x = silu(a);
  const Bf16Interval s = bf16_interval(x, std::fabs(x) * kSiluRelErr + 1e-300);
  const double d0 = bf16_round(dh * s.lo);
  const double d1 = bf16_round(dh * s.hi);
  *db = {std::min(d0, d1), std::max(d0, d1)};
  const double ds = bf16_round(dh * b);
  const double sg = sigmoid(a);
  const double exact = ds * sg * (1.0 + a * (1.0 - sg));
  const double err = kSiluRelErr * std::fabs(ds) * (sg * (1.0 + std::fabs(a) * (1.0 - sg)) + std::fabs(a) + 1.0);
  *da = bf16_interval(exact, err + 1e-300);
}

}  // namespace jkref
