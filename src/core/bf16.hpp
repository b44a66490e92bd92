#pragma once
// 16-bit storage types. Kokkos 3.4 has no bhalf_t and its half_t is plain float on the host, so the
// project keeps its own: checkpoints, communication buffers and GPU tensors store raw bits, and every
// conversion is explicit. Arithmetic is always done in float.
#include <Kokkos_Core.hpp>

#include <cstdint>
#include <cstring>

namespace jetmoe {

KOKKOS_INLINE_FUNCTION std::uint32_t float_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}
KOKKOS_INLINE_FUNCTION float bits_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

// bfloat16: the top 16 bits of an IEEE float.
struct bf16 {
  std::uint16_t bits = 0;

  // Round to nearest even, as torch's float->bfloat16 cast; NaN stays a (quiet) NaN.
  KOKKOS_INLINE_FUNCTION static bf16 from_float(float f) {
    const std::uint32_t u = float_bits(f);
    bf16 b;
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu) != 0) {
      b.bits = static_cast<std::uint16_t>((u >> 16) | 0x0040u);
      return b;
    }
    const std::uint32_t rounding_bias = 0x7fffu + ((u >> 16) & 1u);
    b.bits = static_cast<std::uint16_t>((u + rounding_bias) >> 16);
    return b;
  }
  KOKKOS_INLINE_FUNCTION static bf16 from_bits(std::uint16_t raw) {
    bf16 b;
    b.bits = raw;
    return b;
  }
  KOKKOS_INLINE_FUNCTION float to_float() const { return bits_float(std::uint32_t(bits) << 16); }
};

// IEEE binary16 (safetensors F16 checkpoints).
struct fp16 {
  std::uint16_t bits = 0;

  KOKKOS_INLINE_FUNCTION static fp16 from_bits(std::uint16_t raw) {
    fp16 h;
    h.bits = raw;
    return h;
  }

  KOKKOS_INLINE_FUNCTION float to_float() const {
    const std::uint32_t sign = std::uint32_t(bits & 0x8000u) << 16;
    const std::uint32_t exponent = (bits >> 10) & 0x1fu;
    std::uint32_t mantissa = bits & 0x3ffu;
    if (exponent == 0x1f) return bits_float(sign | 0x7f800000u | (mantissa << 13));  // Inf/NaN
    if (exponent == 0) {
      if (mantissa == 0) return bits_float(sign);  // +-0
      // Subnormal: value = mantissa * 2^-24.
      int e = -1;
      do {
        ++e;
        mantissa <<= 1;
      } while ((mantissa & 0x400u) == 0);
      return bits_float(sign | (std::uint32_t(127 - 15 - e) << 23) | ((mantissa & 0x3ffu) << 13));
    }
    return bits_float(sign | ((exponent + 127 - 15) << 23) | (mantissa << 13));
  }

  // Round to nearest even; overflow to Inf; NaN stays NaN.
  KOKKOS_INLINE_FUNCTION static fp16 from_float(float f) {
    const std::uint32_t u = float_bits(f);
    const std::uint32_t sign = (u >> 16) & 0x8000u;
    const std::uint32_t abs = u & 0x7fffffffu;
    fp16 h;
    if (abs >= 0x7f800000u) {  // Inf or NaN
      h.bits = static_cast<std::uint16_t>(sign | 0x7c00u | (abs > 0x7f800000u ? 0x200u : 0u));
      return h;
    }
    if (abs >= 0x477ff000u) {  // rounds to >= 65520: overflow
      h.bits = static_cast<std::uint16_t>(sign | 0x7c00u);
      return h;
    }
    if (abs < 0x38800000u) {  // below the smallest normal half (2^-14): subnormal or zero
      // Add 0.5 (as a float whose ulp is 2^-24) so the FPU does the round-to-nearest-even.
      const float shifted = bits_float(abs) + 0.5f;
      h.bits = static_cast<std::uint16_t>(sign | (float_bits(shifted) - 0x3f000000u));
      return h;
    }
    const std::uint32_t odd = (abs >> 13) & 1u;
    const std::uint32_t rounded = abs + 0xc8000fffu + odd;  // rebias exponent (-112 << 23) and round
    h.bits = static_cast<std::uint16_t>(sign | (rounded >> 13));
    return h;
  }
};

}  // namespace jetmoe
