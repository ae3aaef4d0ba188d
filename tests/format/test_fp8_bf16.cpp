#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <limits>
#include <vector>

#include "mxmoe/codecs.hpp"
#include "mxmoe/format.hpp"

namespace mxmoe {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

TEST(Fp8E4m3, DecodesHandPickedCodes) {
  EXPECT_EQ(fp8_e4m3_to_float(0x00), 0.0f);
  EXPECT_TRUE(std::signbit(fp8_e4m3_to_float(0x80)));
  EXPECT_EQ(fp8_e4m3_to_float(0x01), std::ldexp(1.0f, -9));      // smallest subnormal
  EXPECT_EQ(fp8_e4m3_to_float(0x07), 7 * std::ldexp(1.0f, -9));  // largest subnormal
  EXPECT_EQ(fp8_e4m3_to_float(0x08), std::ldexp(1.0f, -6));      // smallest normal
  EXPECT_EQ(fp8_e4m3_to_float(0x38), 1.0f);
  EXPECT_EQ(fp8_e4m3_to_float(0x3C), 1.5f);
  EXPECT_EQ(fp8_e4m3_to_float(0x7E), 448.0f);
  EXPECT_EQ(fp8_e4m3_to_float(0xFE), -448.0f);
  EXPECT_EQ(fp8_e4m3_to_float(0x78), 256.0f);  // exponent 15 is a normal binade in E4M3FN
  EXPECT_TRUE(std::isnan(fp8_e4m3_to_float(0x7F)));
  EXPECT_TRUE(std::isnan(fp8_e4m3_to_float(0xFF)));
}

TEST(Fp8E4m3, EveryCodeRoundTrips) {
  for (int code = 0; code < 256; ++code) {
    if ((code & 0x7F) == 0x7F) continue;  // NaN
    EXPECT_EQ(float_to_fp8_e4m3(fp8_e4m3_to_float(static_cast<uint8_t>(code))), code) << code;
  }
}

TEST(Fp8E4m3, RoundsToNearestEven) {
  const float q = std::ldexp(1.0f, -9);  // subnormal quantum
  EXPECT_EQ(float_to_fp8_e4m3(0.5f * q), 0x00);   // tie -> 0 (even)
  EXPECT_EQ(float_to_fp8_e4m3(0.51f * q), 0x01);
  EXPECT_EQ(float_to_fp8_e4m3(1.5f * q), 0x02);   // tie -> 2 (even)
  EXPECT_EQ(float_to_fp8_e4m3(2.5f * q), 0x02);   // tie -> 2 (even)
  EXPECT_EQ(float_to_fp8_e4m3(7.5f * q), 0x08);   // tie across into the normal range
  EXPECT_EQ(float_to_fp8_e4m3(1.0625f), 0x38);    // 1 + 1/16: tie between 1 and 1.125 -> 1
  EXPECT_EQ(float_to_fp8_e4m3(1.1875f), 0x3A);    // tie between 1.125 and 1.25 -> 1.25
  EXPECT_EQ(float_to_fp8_e4m3(1.07f), 0x39);
  EXPECT_EQ(float_to_fp8_e4m3(15.5f), 0x58);      // tie between 15 and 16 -> 16 (carry into exponent)
  EXPECT_EQ(float_to_fp8_e4m3(-3.3f), 0xC5);      // -3.25
}

TEST(Fp8E4m3, SaturatesAndKeepsNan) {
  EXPECT_EQ(float_to_fp8_e4m3(448.0f), 0x7E);
  EXPECT_EQ(float_to_fp8_e4m3(460.0f), 0x7E);
  EXPECT_EQ(float_to_fp8_e4m3(1e6f), 0x7E);
  EXPECT_EQ(float_to_fp8_e4m3(kInf), 0x7E);
  EXPECT_EQ(float_to_fp8_e4m3(-kInf), 0xFE);
  EXPECT_EQ(float_to_fp8_e4m3(std::nanf("")) & 0x7F, 0x7F);
  EXPECT_EQ(float_to_fp8_e4m3(1e-30f), 0x00);
}

TEST(Bf16, RoundsToNearestEven) {
  EXPECT_EQ(float_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(float_to_bf16(-1.0f), 0xBF80);
  EXPECT_EQ(float_to_bf16(1.0f + std::ldexp(1.0f, -8)), 0x3F80);      // tie -> even
  EXPECT_EQ(float_to_bf16(1.0f + 3 * std::ldexp(1.0f, -8)), 0x3F82);  // tie -> even
  EXPECT_EQ(float_to_bf16(1.0f + std::ldexp(1.0f, -8) + std::ldexp(1.0f, -20)), 0x3F81);
  EXPECT_EQ(float_to_bf16(3.14159265f), 0x4049);
}

TEST(Bf16, SubnormalsOverflowAndNan) {
  EXPECT_EQ(float_to_bf16(std::ldexp(1.0f, -130)), 0x0008);                        // subnormal, exact
  EXPECT_EQ(float_to_bf16(std::bit_cast<float>(0x00008000u)), 0x0000);              // tie -> even
  EXPECT_EQ(float_to_bf16(std::bit_cast<float>(0x00018000u)), 0x0002);              // tie -> even
  EXPECT_EQ(float_to_bf16(std::numeric_limits<float>::max()), 0x7F80);             // rounds to Inf
  EXPECT_EQ(float_to_bf16(kInf), 0x7F80);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::nanf("")))));
  // A NaN whose payload sits in the low half must not become Inf.
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(std::bit_cast<float>(0x7F800001u)))));
  EXPECT_EQ(bf16_to_float(0x3FC0), 1.5f);
  for (uint32_t bits = 0; bits < 0x10000; bits += 7) {
    const float v = bf16_to_float(static_cast<uint16_t>(bits));
    if (!std::isnan(v)) EXPECT_EQ(float_to_bf16(v), bits);
  }
}

// Every half against the IEEE definition written out with ldexp.
TEST(F16, EveryCodeDecodesExactly) {
  for (uint32_t h = 0; h < 65536; ++h) {
    const int exponent = (h >> 10) & 0x1F, mantissa = h & 0x3FF;
    const float sign = (h & 0x8000) ? -1.0f : 1.0f;
    const float got = f16_to_float(static_cast<uint16_t>(h));
    if (exponent == 31 && mantissa != 0) {
      EXPECT_TRUE(std::isnan(got)) << h;
      continue;
    }
    const float expected = exponent == 31  ? sign * INFINITY
                           : exponent == 0 ? sign * std::ldexp(static_cast<float>(mantissa), -24)
                                           : sign * std::ldexp(static_cast<float>(mantissa | 0x400), exponent - 25);
    EXPECT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(expected)) << h;  // -0 too
  }
}

TEST(Fp8Tensor, DynamicScaleIsAmaxOver448) {
  std::vector<float> x = {1.0f, -896.0f, 3.0f};
  EXPECT_EQ(fp8_dynamic_scale(x), 2.0f);
  std::vector<uint8_t> codes(3);
  quantize_fp8(x, 2.0f, codes);
  EXPECT_EQ(codes[1], 0xFE);                       // -448 * 2
  EXPECT_EQ(fp8_e4m3_to_float(codes[0]), 0.5f);
  EXPECT_EQ(fp8_e4m3_to_float(codes[2]), 1.5f);
  std::vector<float> back(3);
  dequantize_fp8(codes, 2.0f, back);
  EXPECT_EQ(back, x);
  std::vector<float> zeros(5, 0.0f);
  EXPECT_EQ(fp8_dynamic_scale(zeros), 1.0f);
}

TEST(Fp8Tensor, StaticScaleSaturatesAndBadInputsAreErrors) {
  std::vector<float> x = {1000.0f, -0.001f};
  std::vector<uint8_t> codes(2);
  quantize_fp8(x, 1.0f, codes);
  EXPECT_EQ(fp8_e4m3_to_float(codes[0]), 448.0f);
  EXPECT_THROW(quantize_fp8(x, 0.0f, codes), std::invalid_argument);
  EXPECT_THROW(quantize_fp8(x, -1.0f, codes), std::invalid_argument);
  EXPECT_THROW(quantize_fp8(x, kInf, codes), std::invalid_argument);
  x[1] = std::nanf("");
  EXPECT_THROW(quantize_fp8(x, 1.0f, codes), std::domain_error);
  EXPECT_THROW(fp8_dynamic_scale(x), std::domain_error);
  x[1] = kInf;
  EXPECT_THROW(fp8_dynamic_scale(x), std::domain_error);
}

// The GPU stagings' division by reciprocal (codec::Fp8Divisor) against IEEE division, over scales
// from the smallest subnormal to the largest an fp32 maximum gives, and every binade of quotients
// from far below E4M3's smallest value to 448: the same E4M3 codes everywhere (zeros' signs too),
// the same bits from 2^-11 up.
TEST(Fp8Divisor, QuotientsRoundAsIeeeDivision) {
  std::vector<float> scales = {std::ldexp(1.0f, -149), 0x1p-91f, 0x1p-90f, std::nextafter(0x1p-90f, 1.0f),
                               std::nextafter(0x1p-90f, 0.0f), 1.0f, 0x1.fffffep119f};
  for (int e = -140; e <= 118; e += 9) {
    scales.push_back(std::ldexp(1.0f, e));
    scales.push_back(std::ldexp(0x1.fffffep0f, e));      // an all-ones significand
    scales.push_back(codec::fp8_dynamic_scale(std::ldexp(1.3717f, e + 9)));
  }
  uint32_t seed = 12345;
  const auto next = [&seed] { return seed = seed * 1664525u + 1013904223u; };
  int64_t checked = 0;
  for (const float scale : scales) {
    const codec::Fp8Divisor divisor(scale);
    const auto check = [&](float a) {
      const float expected = a / scale, got = divisor.quotient(a);
      ASSERT_EQ(codec::fp8_e4m3_code(got), codec::fp8_e4m3_code(expected)) << a << " / " << scale;
      if (std::fabs(expected) >= 0x1p-11f) ASSERT_EQ(std::bit_cast<uint32_t>(got), std::bit_cast<uint32_t>(expected)) << a << " / " << scale;
      ++checked;
    };
    check(0.0f);
    check(-0.0f);
    if (std::isfinite(448.0f * scale)) {
      check(448.0f * scale);
      check(-448.0f * scale);
    }
    for (int binade = -30; binade <= 8; ++binade) {  // quotients in [2^binade, 2^(binade + 1))
      const float low = std::ldexp(scale, binade);
      if (low == 0.0f || !std::isfinite(low)) continue;
      for (int i = 0; i < 3000; ++i) {
        const float a = low * (1.0f + static_cast<float>(next() >> 9) * 0x1p-23f);
        if (std::isfinite(a) && std::fabs(a) <= 448.0f * scale) check((next() & 1) ? a : -a);
      }
    }
    for (int i = 0; i < 2000; ++i) check(std::bit_cast<float>(next() & 0x807FFFFFu));  // subnormal values
  }
  EXPECT_GT(checked, 1000000);
}

}  // namespace
}  // namespace mxmoe
