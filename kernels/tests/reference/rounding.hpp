#pragma once
// Rounding of double values to the GPU's storage types, shared by the CPU references (namespace
// jkref): computed by scaling to an integer count of ulps, independent of the kernels' bit tricks.
#include <algorithm>
#include <cmath>
#include <limits>

namespace jkref {

// Nearest fp32 (ties to even): the hardware conversion.
inline double f32_round(double v) { return static_cast<double>(static_cast<float>(v)); }

// Nearest bf16 (ties to even) of a double. Overflow gives +-Inf; zero, Inf and NaN are returned as
// they are.
inline double bf16_round(double v) {
  if (v == 0.0 || !std::isfinite(v)) return v;
  const double a = std::fabs(v);
  int e = 0;
  std::frexp(a, &e);                                  // a in [2^(e-1), 2^e)
  const int quantum_exp = std::max(e - 1, -126) - 7;  // bf16 ulp in this binade (2^-133 when subnormal)
  const double units = std::ldexp(a, -quantum_exp);   // exact: a power-of-two scaling
  double rounded = std::floor(units);
  const double frac = units - rounded;
  if (frac > 0.5 || (frac == 0.5 && std::fmod(rounded, 2.0) == 1.0)) rounded += 1.0;
  double r = std::ldexp(rounded, quantum_exp);
  if (r >= 0x1p128) r = std::numeric_limits<double>::infinity();  // bf16 max is (2 - 2^-7) 2^127
  return std::copysign(r, v);
}

}  // namespace jkref
