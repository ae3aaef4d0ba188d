#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "mxmoe/codecs.hpp"
#include "mxmoe/format.hpp"
#include "support.hpp"

namespace mxmoe {
namespace {

// Random MXFP4 blocks in canonical form: quantizing their values must give them back. Canonical
// means the largest magnitude code is 4 or 6 (that is what fixes the scale; see the header) and the
// scale code is at most 252, so 6 * scale still fits in a float. All-zero blocks use code 127.
void random_canonical_blocks(std::mt19937_64& rng, int blocks, std::vector<uint8_t>& packed,
                             std::vector<uint8_t>& scales) {
  packed.assign(static_cast<size_t>(blocks) * kMxBlockBytes, 0);
  scales.assign(static_cast<size_t>(blocks), 0);
  std::uniform_int_distribution<int> code(0, 15), scale(0, 252), position(0, kMxBlock - 1);
  for (int b = 0; b < blocks; ++b) {
    uint8_t codes[kMxBlock];
    const bool zero_block = b % 17 == 5;
    for (auto& c : codes) c = zero_block ? static_cast<uint8_t>(code(rng) & 8) : static_cast<uint8_t>(code(rng));
    if (!zero_block) {
      bool canonical = false;
      for (auto c : codes) canonical |= (c & 7) >= 6;
      if (!canonical) codes[position(rng)] = static_cast<uint8_t>((code(rng) & 8) | (6 + (code(rng) & 1)));
    }
    for (int i = 0; i < kMxBlockBytes; ++i) {
      packed[b * kMxBlockBytes + i] = static_cast<uint8_t>(codes[2 * i] | (codes[2 * i + 1] << 4));
    }
    scales[b] = zero_block ? kE8m0One : static_cast<uint8_t>(scale(rng));
  }
}

TEST(Mxfp4, PackingIsLowNibbleFirst) {
  float values[kMxBlock] = {};
  values[0] = 1.0f;   // code 2
  values[1] = -6.0f;  // code 15
  values[31] = 4.0f;  // code 6, high nibble of byte 15
  uint8_t packed[kMxBlockBytes];
  const uint8_t scale = quantize_mxfp4_block(values, packed);
  EXPECT_EQ(scale, 127);  // amax 6: floor(log2 6) - 2 = 0
  EXPECT_EQ(packed[0], 0xF2);
  EXPECT_EQ(packed[15], 0x60);
  EXPECT_EQ(mxfp4_code(packed, 1), 15);
  EXPECT_EQ(mxfp4_code(packed, 31), 6);
}

TEST(Mxfp4, SharedExponentFollowsOcpRule) {
  float values[kMxBlock];
  uint8_t packed[kMxBlockBytes];
  for (int e = -120; e <= 120; e += 7) {
    // amax in [2^e, 2^(e+1)): shared exponent e - 2.
    for (float m : {1.0f, 1.3f, 1.99f}) {
      for (auto& v : values) v = 0.0f;
      values[3] = std::ldexp(m, e);
      EXPECT_EQ(quantize_mxfp4_block(values, packed), e - 2 + 127) << m << " * 2^" << e;
    }
  }
  // Clamped at -127: tiny blocks get code 0.
  for (auto& v : values) v = 0.0f;
  values[0] = std::numeric_limits<float>::denorm_min();
  EXPECT_EQ(quantize_mxfp4_block(values, packed), 0);
}

TEST(Mxfp4, ElementsAboveSixTimesScaleAreClamped) {
  float values[kMxBlock] = {};
  values[0] = 7.9f;   // shared exponent 0, 7.9 clamps to 6
  values[1] = -7.0f;  // clamps to -6
  values[2] = 5.0f;   // tie between 4 and 6 goes to 4 (even)
  uint8_t packed[kMxBlockBytes];
  EXPECT_EQ(quantize_mxfp4_block(values, packed), 127);
  float out[kMxBlock];
  dequantize_mxfp4(packed, std::span<const uint8_t>(&kE8m0One, 1), out);
  EXPECT_EQ(out[0], 6.0f);
  EXPECT_EQ(out[1], -6.0f);
  EXPECT_EQ(out[2], 4.0f);
}

TEST(Mxfp4, ZeroBlockUsesScaleOneAndKeepsSigns) {
  float values[kMxBlock] = {};
  values[4] = -0.0f;
  uint8_t packed[kMxBlockBytes];
  EXPECT_EQ(quantize_mxfp4_block(values, packed), kE8m0One);
  EXPECT_EQ(mxfp4_code(packed, 4), 8);
  EXPECT_EQ(mxfp4_code(packed, 5), 0);
}

TEST(Mxfp4, NonFiniteInputIsRejectedWithItsPosition) {
  std::vector<float> values(64, 1.0f);
  std::vector<uint8_t> packed(32), scales(2);
  values[40] = std::numeric_limits<float>::infinity();
  try {
    quantize_mxfp4(values, packed, scales);
    FAIL() << "Inf accepted";
  } catch (const std::domain_error& e) {
    EXPECT_NE(std::string(e.what()).find("element 8"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("block 1"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("Inf"), std::string::npos) << e.what();
  }
  values[40] = std::nanf("");
  EXPECT_THROW(quantize_mxfp4(values, packed, scales), std::domain_error);
}

TEST(Mxfp4, SizeMismatchesAreRejected) {
  std::vector<float> values(33);
  std::vector<uint8_t> packed(16), scales(1);
  EXPECT_THROW(quantize_mxfp4(values, packed, scales), std::invalid_argument);
  values.resize(32);
  scales.resize(2);
  EXPECT_THROW(quantize_mxfp4(values, packed, scales), std::invalid_argument);
}

TEST(Mxfp4, NanScaleIsRejectedOnDequantize) {
  std::vector<uint8_t> packed(16, 0x11), scales(1, kE8m0Nan);
  std::vector<float> out(32);
  EXPECT_THROW(dequantize_mxfp4(packed, scales, out), std::domain_error);
}

TEST(Mxfp4, QuantizeOfDequantizeIsIdentityOnRandomBlocks) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  const int blocks = 4096;
  std::vector<uint8_t> packed, scales;
  random_canonical_blocks(rng, blocks, packed, scales);
  std::vector<float> values(static_cast<size_t>(blocks) * kMxBlock);
  dequantize_mxfp4(packed, scales, values);
  std::vector<uint8_t> packed2(packed.size()), scales2(scales.size());
  quantize_mxfp4(values, packed2, scales2);
  EXPECT_EQ(scales2, scales);
  EXPECT_EQ(packed2, packed);
}

// Derived bound. With amax in [2^e, 2^(e+1)) the scale is X = 2^(e-2), so every |v|/X < 8.
// For |v| >= X the grid spacing around v/X is at most half of it, and clamping [6, 8) to 6 loses
// less than a quarter, so the error is at most |v|/4; for |v| < X it is at most X/4. Hence
// ||e||^2 <= (||v||^2 + 32 X^2) / 16 <= (||v||^2 + 2 amax^2) / 16 <= 3 ||v||^2 / 16, and the
// relative L2 error of every block is at most sqrt(3)/4 = 0.433.
// For N(0,1) data the typical error is far lower: about 0.115 over many blocks (measured,
// see docs/FORMATS.md); we assert the aggregate below 0.2, which a correct quantizer meets with
// a wide margin and an off-by-one scale exponent (twice the error) does not.
// The device kernels' one-value form of the OCP MX rule (codec::mx_round_trip, with the block's
// shared exponent) gives what quantizing the block and dequantizing it gives, value by value.
TEST(Mxfp4, TheRoundTripOfOneValueIsTheBlocksQuantizeThenDequantize) {
  std::mt19937_64 rng(31);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::uniform_int_distribution<int> binade(-40, 40);
  for (int trial = 0; trial < 2000; ++trial) {
    std::vector<float> values(kMxBlock);
    const float gain = std::ldexp(1.0f, binade(rng));
    float amax = 0.0f;
    for (auto& v : values) {
      v = normal(rng) * gain;
      amax = std::fmax(amax, std::fabs(v));
    }
    std::vector<uint8_t> packed(kMxBlockBytes), scale(1);
    std::vector<float> back(kMxBlock);
    quantize_mxfp4(values, packed, scale);
    dequantize_mxfp4(packed, scale, back);
    const int shared = codec::mx_shared_exponent(amax);
    ASSERT_EQ(shared + 127, scale[0]);
    for (int i = 0; i < kMxBlock; ++i) ASSERT_EQ(codec::mx_round_trip(values[i], shared), back[i]) << "trial " << trial;
  }
}

TEST(Mxfp4, QuantizationErrorOfNormalDataIsWithinTheDerivedBound) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int blocks = 20000;
  std::vector<float> values(static_cast<size_t>(blocks) * kMxBlock);
  for (size_t i = 0; i < values.size(); ++i) values[i] = normal(rng) * std::ldexp(1.0f, static_cast<int>(i / kMxBlock % 40) - 20);
  std::vector<uint8_t> packed(values.size() / 2), scales(blocks);
  quantize_mxfp4(values, packed, scales);
  std::vector<float> back(values.size());
  dequantize_mxfp4(packed, scales, back);
  double worst = 0.0, err_sum = 0.0, ref_sum = 0.0;
  for (int b = 0; b < blocks; ++b) {
    std::span<const float> v(values.data() + b * kMxBlock, kMxBlock), q(back.data() + b * kMxBlock, kMxBlock);
    worst = std::max(worst, test::relative_l2(q, v));
    for (int i = 0; i < kMxBlock; ++i) {
      const double d = static_cast<double>(q[i]) - v[i];
      // Scale out the per-block magnitude so every block weighs the same in the aggregate.
      const double s = std::ldexp(1.0, -(static_cast<int>(b % 40) - 20));
      err_sum += d * d * s * s;
      ref_sum += static_cast<double>(v[i]) * v[i] * s * s;
    }
  }
  EXPECT_LE(worst, std::sqrt(3.0) / 4.0);
  EXPECT_LT(std::sqrt(err_sum / ref_sum), 0.2);
  RecordProperty("typical_relative_error", std::to_string(std::sqrt(err_sum / ref_sum)));
}

}  // namespace
}  // namespace mxmoe
