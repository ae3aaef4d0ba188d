#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "mxmoe/format.hpp"
#include "mxmoe/scheme.hpp"

namespace mxmoe {
namespace {

TEST(Scheme, NamesRoundTrip) {
  for (Scheme s : kAllSchemes) EXPECT_EQ(parse_scheme(scheme_name(s)), s);
  EXPECT_FALSE(parse_scheme("w4a2").has_value());
  EXPECT_EQ(scheme_names(), "w4a16, w4a8, w4a4, w4a32, w4a8_token");
}

// The traits table against what each scheme's quantization really does, on random data.
TEST(Scheme, TraitsDescribeTheQuantization) {
  std::vector<float> x(64);
  uint32_t state = 12345;
  for (float& v : x) {
    state = state * 1664525u + 1013904223u;
    v = static_cast<float>(static_cast<int>(state >> 8) % 20001 - 10000) / 997.0f;
  }
  float amax = 0.0f;
  for (float v : x) amax = std::max(amax, std::fabs(v));
  for (Scheme s : kAllSchemes) {
    const SchemeTraits& t = scheme_traits(s);
    SCOPED_TRACE(std::string(t.name));
    EXPECT_EQ(parse_scheme(t.name), s);
    std::vector<float> q(x.size()), row_scales(2);
    const float scale = quantize_activations(s, x, 2, 32, q, row_scales);
    EXPECT_EQ(scale, t.scale == ScaleGranularity::per_tensor ? codec::fp8_dynamic_scale(amax) : 1.0f);
    for (int r = 0; r < 2; ++r) {
      float row_max = 0.0f;
      for (int i = 0; i < 32; ++i) row_max = std::max(row_max, std::fabs(x[32 * r + i]));
      EXPECT_EQ(row_scales[r], t.scale == ScaleGranularity::per_token ? codec::fp8_dynamic_scale(row_max) : scale);
    }
    if (t.scale != ScaleGranularity::per_token) {
      std::vector<float> same(x.size());
      EXPECT_EQ(quantize_activations(s, x, 2, 32, same), scale);
      EXPECT_EQ(same, q) << "the overloads quantize alike";
    } else {
      EXPECT_THROW(quantize_activations(s, x, 2, 32, q), std::logic_error) << "a scale per row needs row_scales";
    }
    for (size_t i = 0; i < x.size(); ++i) {
      switch (t.activation) {
        case ActivationFormat::fp32: EXPECT_EQ(q[i], x[i]); break;
        case ActivationFormat::bf16: EXPECT_EQ(q[i], round_to_bf16(x[i])); break;
        case ActivationFormat::fp8_e4m3: EXPECT_EQ(fp8_e4m3_to_float(float_to_fp8_e4m3(q[i])), q[i]); break;
        case ActivationFormat::mxfp4: {
          float block_max = 0.0f;  // the block's scale is 2^(floor(log2 amax) - 2)
          for (size_t j = i / 32 * 32; j < i / 32 * 32 + 32; ++j) block_max = std::max(block_max, std::fabs(x[j]));
          const float block_scale = std::ldexp(1.0f, static_cast<int>(std::floor(std::log2(block_max))) - 2);
          EXPECT_EQ(e2m1_to_float(float_to_e2m1(q[i] / block_scale)) * block_scale, q[i]);
          break;
        }
      }
    }
    EXPECT_EQ(t.gemm_input_bytes, t.activation == ActivationFormat::fp8_e4m3 ? 1 : t.activation == ActivationFormat::fp32 ? 4 : 2);
    EXPECT_EQ(t.min_tensor_core_sm == 0, t.activation == ActivationFormat::fp32);
  }
}

TEST(Scheme, W4a16RoundsEachValueToBf16) {
  std::vector<float> x = {1.0f + std::ldexp(1.0f, -9), 3.14159265f, -2.0f};
  std::vector<float> q(3);
  EXPECT_EQ(quantize_activations(Scheme::w4a16, x, 1, 3, q), 1.0f);
  EXPECT_EQ(q[0], 1.0f);
  EXPECT_EQ(q[1], bf16_to_float(0x4049));
  EXPECT_EQ(q[2], -2.0f);
}

TEST(Scheme, W4a8UsesOneScaleForTheWholeTensor) {
  std::vector<float> x = {4.48f, 1.0f, -0.3f, 2.0f};  // amax 4.48 -> scale 0.01
  std::vector<float> q(4);
  const float scale = quantize_activations(Scheme::w4a8, x, 2, 2, q);
  EXPECT_FLOAT_EQ(scale, 0.01f);
  EXPECT_EQ(q[0], 448.0f);
  for (size_t i = 0; i < x.size(); ++i) {
    EXPECT_EQ(q[i], fp8_e4m3_to_float(float_to_fp8_e4m3(x[i] / scale)));
    EXPECT_NEAR(q[i] * scale, x[i], std::fabs(x[i]) / 16 + 1e-6) << i;  // 3 mantissa bits
  }
}

TEST(Scheme, W4a8TokenScalesEveryRowOnItsOwn) {
  // Row 0 small, row 1 large: one tensor scale would flush row 0 to FP8 subnormals.
  std::vector<float> x = {0.0448f, -0.01f, 0.003f, 448.0f, -100.0f, 1.0f};
  std::vector<float> q(6), row_scales(2);
  EXPECT_EQ(quantize_activations(Scheme::w4a8_token, x, 2, 3, q, row_scales), 1.0f);
  EXPECT_FLOAT_EQ(row_scales[0], 0.0001f);
  EXPECT_FLOAT_EQ(row_scales[1], 1.0f);
  EXPECT_EQ(q[0], 448.0f);
  EXPECT_EQ(q[3], 448.0f);
  for (int i = 0; i < 6; ++i) {
    const float s = row_scales[i / 3];
    EXPECT_EQ(q[i], fp8_e4m3_to_float(float_to_fp8_e4m3(x[i] / s))) << i;
    EXPECT_NEAR(q[i] * s, x[i], std::fabs(x[i]) / 16 + 1e-7) << i;  // 3 mantissa bits, in every row
  }
  std::vector<float> one_scale(1);
  EXPECT_THROW(quantize_activations(Scheme::w4a8_token, x, 2, 3, q, one_scale), std::invalid_argument);
}

TEST(Scheme, W4a4QuantizesEveryRowBlockOnItsOwn) {
  std::vector<float> x(64);
  for (int i = 0; i < 32; ++i) x[i] = 0.01f * (i - 16);   // row 0: small values
  for (int i = 32; i < 64; ++i) x[i] = 100.0f * (i - 40);  // row 1: large values
  std::vector<float> q(64);
  EXPECT_EQ(quantize_activations(Scheme::w4a4, x, 2, 32, q), 1.0f);
  uint8_t packed[16];
  for (int row = 0; row < 2; ++row) {
    const float scale = e8m0_to_float(quantize_mxfp4_block(x.data() + 32 * row, packed));
    for (int i = 0; i < 32; ++i) EXPECT_EQ(q[32 * row + i], e2m1_to_float(mxfp4_code(packed, i)) * scale);
  }
  std::vector<float> odd(40), odd_q(40);
  EXPECT_THROW(quantize_activations(Scheme::w4a4, odd, 1, 40, odd_q), std::invalid_argument);
}

TEST(Scheme, NonFiniteActivationsAreRejectedInEveryScheme) {
  for (Scheme s : kAllSchemes) {
    std::vector<float> x(32, 1.0f), q(32), row_scales(1);
    x[7] = std::nanf("");
    EXPECT_THROW(quantize_activations(s, x, 1, 32, q, row_scales), std::domain_error) << scheme_name(s);
    x[7] = -std::numeric_limits<float>::infinity();
    EXPECT_THROW(quantize_activations(s, x, 1, 32, q, row_scales), std::domain_error) << scheme_name(s);
  }
}

}  // namespace
}  // namespace mxmoe
