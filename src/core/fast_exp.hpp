#pragma once
// exp() for the element-wise kernels (softmaxes, cross-entropy, SiLU): in float, a branch-free
// Cody-Waite range reduction and a degree-6 polynomial (Cephes expf) that compilers vectorise on the
// host, where std::exp is a library call per element (glibc's expf: about 7 ns in these loops, the
// largest non-GEMM cost of a training step). Relative error within 2 ulp of the exact exponential
// on [-87.33, 88.3]; below that it returns at most 2^-126, above it exp(88.3); NaN stays NaN.
// In double (the gradient checks) and in device code it is kmath::exp itself.
#include <cstdint>
#include <cstring>

#include "core/kokkos_compat.hpp"

namespace jetmoe {

KOKKOS_INLINE_FUNCTION double fast_exp(double x) { return kmath::exp(x); }

KOKKOS_INLINE_FUNCTION float fast_exp(float x) {
#if defined(__CUDA_ARCH__) || defined(__HIP_DEVICE_COMPILE__) || defined(__SYCL_DEVICE_ONLY__)
  return kmath::exp(x);
#else
  // Saturating: x is clamped to [lo, hi] (n in [-126, 127] below), so exp(-inf) is 2^-126 and
  // exp(+inf) is exp(88.3); a NaN stays NaN. Few selects: they cost as much as the polynomial.
  constexpr float hi = 88.3f, lo = -87.3365447504f;
  float xc = x < lo ? lo : x;
  xc = xc > hi ? hi : xc;
  // n = round(x / ln 2) by the 1.5 * 2^23 trick (exact for |n| < 2^22); r = x - n ln 2 in two steps.
  const float shifter = 12582912.0f;
  const float n = (xc * 1.44269504088896341f + shifter) - shifter;
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  // exp(r) = 1 + r + r^2 q(r), q of degree 5 evaluated in Estrin's scheme (three short chains instead
  // of one long one: these loops are bound by the latency of the dependent multiplies and adds).
  const float r2 = r * r, r4 = r2 * r2;
  const float q01 = 5.0000001201e-1f + 1.6666665459e-1f * r;
  const float q23 = 4.1665795894e-2f + 8.3334519073e-3f * r;
  const float q45 = 1.3981999507e-3f + 1.9875691500e-4f * r;
  const float q = q01 + r2 * q23 + r4 * q45;
  const float p = q * r2 + r + 1.0f;
  // 2^n through the exponent bits.
  const std::int32_t bits = (std::int32_t(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  const float y = p * scale;
  return x == x ? y : x;
#endif
}

}  // namespace jetmoe
