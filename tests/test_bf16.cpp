// bf16/fp16 conversions against independent references: the IEEE definitions evaluated in double
// precision (no bit tricks), over every 16-bit pattern and over random and boundary floats.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "core/bf16.hpp"

using jetmoe::bf16;
using jetmoe::fp16;

namespace {

// Value of a binary16/bfloat16 pattern from its definition.
double decode(std::uint16_t bits, int exponent_bits, int mantissa_bits) {
  const int bias = (1 << (exponent_bits - 1)) - 1;
  const int e = (bits >> mantissa_bits) & ((1 << exponent_bits) - 1);
  const int m = bits & ((1 << mantissa_bits) - 1);
  const double sign = (bits >> 15) ? -1.0 : 1.0;
  if (e == (1 << exponent_bits) - 1) return m ? std::numeric_limits<double>::quiet_NaN() : sign * INFINITY;
  if (e == 0) return sign * std::ldexp(double(m), 1 - bias - mantissa_bits);
  return sign * std::ldexp(1.0 + std::ldexp(double(m), -mantissa_bits), e - bias);
}

// Round-to-nearest-even by search over the sorted finite non-negative values of the format.
struct Reference {
  std::vector<double> values;  // index = bit pattern of the non-negative finite values
  int exponent_bits, mantissa_bits;
  Reference(int eb, int mb) : exponent_bits(eb), mantissa_bits(mb) {
    const std::uint16_t inf_bits = std::uint16_t(((1u << eb) - 1) << mb);
    for (std::uint32_t b = 0; b < inf_bits; ++b) values.push_back(decode(std::uint16_t(b), eb, mb));
  }
  std::uint16_t round(float f) const {
    const std::uint16_t sign = std::signbit(f) ? 0x8000 : 0;
    const double a = std::fabs(double(f));
    const std::uint16_t inf_bits = std::uint16_t(values.size());
    const double max = values.back();
    const double ulp_max = max - values[values.size() - 2];
    // Beyond max + half an ulp rounds to infinity (the tie at exactly half an ulp goes to even = Inf).
    if (a >= max + ulp_max / 2) return sign | inf_bits;
    std::size_t hi = std::size_t(std::lower_bound(values.begin(), values.end(), a) - values.begin());
    if (hi == values.size()) return sign | std::uint16_t(values.size() - 1);
    if (values[hi] == a || hi == 0) return sign | std::uint16_t(hi);
    const std::size_t lo = hi - 1;
    const double dl = a - values[lo], dh = values[hi] - a;
    if (dl < dh) return sign | std::uint16_t(lo);
    if (dh < dl) return sign | std::uint16_t(hi);
    return sign | std::uint16_t((lo % 2 == 0) ? lo : hi);
  }
};

std::vector<float> test_floats() {
  std::vector<float> xs = {0.0f, -0.0f, 1.0f, -1.0f, 65504.0f, 65520.0f, 65519.99f, 6.1035156e-05f, 5.9604645e-08f,
                           2.9802322e-08f, 2.9802326e-08f, 1e-45f, std::numeric_limits<float>::max(),
                           std::numeric_limits<float>::min(), std::numeric_limits<float>::denorm_min(), 3.0e38f,
                           3.3961776e38f, 1.0039062f, 1.0117188f, 1.0078125f};
  std::mt19937 rng(12345);
  std::uniform_int_distribution<std::uint32_t> bits;
  for (int i = 0; i < 200000; ++i) {
    float f = jetmoe::bits_float(bits(rng));
    if (!std::isfinite(f)) continue;
    xs.push_back(f);
  }
  std::normal_distribution<float> normal(0.0f, 3.0f);
  for (int i = 0; i < 100000; ++i) xs.push_back(normal(rng));
  // Exact midpoints between neighbouring bf16 values (ties), from the definition.
  for (std::uint32_t b = 0x3f00; b < 0x3f40; ++b)
    xs.push_back(float((decode(std::uint16_t(b), 8, 7) + decode(std::uint16_t(b + 1), 8, 7)) / 2));
  return xs;
}

}  // namespace

TEST_CASE("bf16: every pattern decodes to its IEEE value and round-trips", "[unit][bf16]") {
  for (std::uint32_t b = 0; b < 0x10000; ++b) {
    const bf16 h = bf16::from_bits(std::uint16_t(b));
    const double expected = decode(std::uint16_t(b), 8, 7);
    if (std::isnan(expected)) {
      REQUIRE(std::isnan(h.to_float()));
      REQUIRE(std::isnan(bf16::from_float(h.to_float()).to_float()));
      continue;
    }
    REQUIRE(double(h.to_float()) == expected);
    REQUIRE(bf16::from_float(h.to_float()).bits == b);
  }
}

TEST_CASE("bf16: float rounds to nearest, ties to even", "[unit][bf16]") {
  const Reference ref(8, 7);
  for (float f : test_floats()) {
    INFO("f = " << f);
    REQUIRE(bf16::from_float(f).bits == ref.round(f));
  }
  CHECK(std::isnan(bf16::from_float(std::numeric_limits<float>::quiet_NaN()).to_float()));
  CHECK(std::isnan(bf16::from_float(jetmoe::bits_float(0x7f800001u)).to_float()));  // signalling NaN stays NaN
  CHECK(bf16::from_float(INFINITY).bits == 0x7f80);
}

TEST_CASE("fp16: every pattern decodes to its IEEE value and round-trips", "[unit][bf16]") {
  for (std::uint32_t b = 0; b < 0x10000; ++b) {
    const fp16 h = fp16::from_bits(std::uint16_t(b));
    const double expected = decode(std::uint16_t(b), 5, 10);
    if (std::isnan(expected)) {
      REQUIRE(std::isnan(h.to_float()));
      REQUIRE(std::isnan(fp16::from_float(h.to_float()).to_float()));
      continue;
    }
    REQUIRE(double(h.to_float()) == expected);
    REQUIRE(fp16::from_float(h.to_float()).bits == b);
  }
}

TEST_CASE("fp16: float rounds to nearest, ties to even, overflows to Inf", "[unit][bf16]") {
  const Reference ref(5, 10);
  for (float f : test_floats()) {
    INFO("f = " << f);
    REQUIRE(fp16::from_float(f).bits == ref.round(f));
  }
  CHECK(fp16::from_float(65504.0f).bits == 0x7bff);
  CHECK(fp16::from_float(65520.0f).bits == 0x7c00);
  CHECK(fp16::from_float(-INFINITY).bits == 0xfc00);
  CHECK(std::isnan(fp16::from_float(NAN).to_float()));
}
