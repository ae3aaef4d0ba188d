#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "mxmoe/format.hpp"

namespace mxmoe {
namespace {

TEST(E2M1, CodesDecodeToTheGrid) {
  const float magnitudes[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
  for (int code = 0; code < 8; ++code) {
    EXPECT_EQ(e2m1_to_float(static_cast<uint8_t>(code)), magnitudes[code]) << code;
    EXPECT_EQ(e2m1_to_float(static_cast<uint8_t>(code | 8)), -magnitudes[code]) << code;
  }
  EXPECT_TRUE(std::signbit(e2m1_to_float(8)));
  // Only the low nibble counts.
  EXPECT_EQ(e2m1_to_float(0x7F), -6.0f);
}

TEST(E2M1, EveryCodeRoundTrips) {
  for (int code = 0; code < 16; ++code) {
    EXPECT_EQ(float_to_e2m1(e2m1_to_float(static_cast<uint8_t>(code))), code) << code;
  }
}

TEST(E2M1, TiesGoToTheEvenCode) {
  struct Case { float in; float out; };
  const Case ties[] = {{0.25f, 0.0f}, {0.75f, 1.0f}, {1.25f, 1.0f}, {1.75f, 2.0f},
                       {2.5f, 2.0f},  {3.5f, 4.0f},  {5.0f, 4.0f}};
  for (const auto& c : ties) {
    EXPECT_EQ(e2m1_to_float(float_to_e2m1(c.in)), c.out) << c.in;
    EXPECT_EQ(e2m1_to_float(float_to_e2m1(-c.in)), -c.out) << -c.in;
    EXPECT_EQ(float_to_e2m1(c.in) & 1, 0) << "tie " << c.in << " must land on an even code";
  }
}

TEST(E2M1, RoundsToNearestAndSaturates) {
  struct Case { float in; float out; };
  const Case cases[] = {{0.2499f, 0.0f}, {0.2501f, 0.5f}, {0.7499f, 0.5f}, {1.2501f, 1.5f},
                        {2.49f, 2.0f},   {2.51f, 3.0f},   {4.99f, 4.0f},   {5.01f, 6.0f},
                        {7.0f, 6.0f},    {1e30f, 6.0f},   {std::numeric_limits<float>::infinity(), 6.0f},
                        {1e-40f, 0.0f}};
  for (const auto& c : cases) {
    EXPECT_EQ(e2m1_to_float(float_to_e2m1(c.in)), c.out) << c.in;
    EXPECT_EQ(e2m1_to_float(float_to_e2m1(-c.in)), -c.out) << -c.in;
  }
  EXPECT_EQ(float_to_e2m1(-0.0f), 8);
}

TEST(E2M1, NanIsAnError) {
  EXPECT_THROW(float_to_e2m1(std::nanf("")), std::domain_error);
}

TEST(E8M0, EveryCodeIsAPowerOfTwo) {
  for (int code = 0; code < 255; ++code) {
    const double v = e8m0_to_double(static_cast<uint8_t>(code));
    int exponent = 0;
    EXPECT_EQ(std::frexp(v, &exponent), 0.5) << code;  // exactly a power of two
    EXPECT_EQ(exponent - 1, code - 127) << code;          // round trip: value -> code
    if (code >= 1 && code <= 254) EXPECT_EQ(static_cast<double>(e8m0_to_float(static_cast<uint8_t>(code))), v);
  }
  EXPECT_EQ(e8m0_to_float(0), std::ldexp(1.0f, -127));  // float subnormal, still exact
  EXPECT_TRUE(std::isnan(e8m0_to_double(255)));
  EXPECT_TRUE(std::isnan(e8m0_to_float(255)));
  EXPECT_EQ(e8m0_to_double(127), 1.0);
}

TEST(E8M0, Bf16BitsHoldEveryCodeExactly) {
  for (int code = 0; code < 255; ++code) {
    EXPECT_EQ(static_cast<double>(bf16_to_float(codec::e8m0_bf16_bits(static_cast<uint32_t>(code)))),
              e8m0_to_double(static_cast<uint8_t>(code)))
        << code;
  }
}

}  // namespace
}  // namespace mxmoe
