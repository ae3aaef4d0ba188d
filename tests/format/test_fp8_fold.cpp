// The W4A8 scale fold (codecs.hpp, src/format/fp8_fold.hpp): exact where it says it is, and what
// happens below that, on deliberately spread block scales.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "format/fp8_fold.hpp"
#include "mxmoe/codecs.hpp"
#include "mxmoe/format.hpp"

namespace mxmoe {
namespace {

// Every E2M1 code at every shift of the exact range, and the range is tight on both ends.
TEST(Fp8Fold, IsExactForEveryCodeOverTheStatedShifts) {
  for (int shift = codec::kFoldMinExactShift; shift <= codec::kFoldMaxShift; ++shift) {
    for (int code = 0; code < 16; ++code) {
      const double want = std::ldexp(static_cast<double>(codec::e2m1_value(static_cast<uint8_t>(code))), shift);
      EXPECT_EQ(codec::fp8_e4m3_value(codec::fp8_fold_code(static_cast<uint8_t>(code), shift)), want)
          << "code " << code << " shift " << shift;
    }
  }
  // One below: 0.5 x 2^-9 = 2^-10 is half E4M3's smallest subnormal (ties to even: zero), and
  // 1.5 x 2^-9 is a tie between 2^-9 and 2^-8.
  EXPECT_EQ(codec::fp8_e4m3_value(codec::fp8_fold_code(0x1, codec::kFoldMinExactShift - 1)), 0.0f);
  EXPECT_EQ(codec::fp8_e4m3_value(codec::fp8_fold_code(0x3, codec::kFoldMinExactShift - 1)), std::ldexp(1.0f, -8));
  // One above: 6 x 2^7 = 768 saturates at 448.
  EXPECT_EQ(codec::fp8_e4m3_value(codec::fp8_fold_code(0x7, codec::kFoldMaxShift + 1)), 448.0f);
  EXPECT_EQ(codec::fp8_e4m3_value(codec::fp8_fold_code(0xF, codec::kFoldMaxShift + 1)), -448.0f);
}

// Rows whose block scales span up to 14 binades fold exactly, whatever the codes; a block further
// below its row's largest is counted and rounded onto the 2^(reference - 136) grid.
TEST(Fp8Fold, SpreadScalesFoldExactlyWithin14BinadesAndRoundBeyond) {
  const uint64_t seed = std::random_device{}();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  constexpr int kRows = 6, kCols = 8 * kMxBlock;
  Mxfp4Tensor t(2, kRows, kCols);
  for (auto& b : t.blocks) b = static_cast<uint8_t>(rng());
  // Row spreads: 0, 7, 14 (exact), 15, 20, 60 binades (one block each at the bottom).
  constexpr int kSpread[kRows] = {0, 7, 14, 15, 20, 60};
  int64_t expected_inexact = 0;
  for (int64_t g = 0; g < t.groups; ++g) {
    for (int64_t r = 0; r < kRows; ++r) {
      uint8_t* s = t.row_scales(g, r);
      const int top = 100 + static_cast<int>(rng() % 40);
      for (int64_t b = 0; b < t.blocks_per_row(); ++b) s[b] = static_cast<uint8_t>(top - static_cast<int>(rng() % 8) * kSpread[r] / 7);
      const int64_t highest = static_cast<int64_t>(rng() % t.blocks_per_row());  // and a different lowest
      s[highest] = static_cast<uint8_t>(top);
      s[(highest + 1 + static_cast<int64_t>(rng() % (t.blocks_per_row() - 1))) % t.blocks_per_row()] =
          static_cast<uint8_t>(top - kSpread[r]);
      for (int64_t b = 0; b < t.blocks_per_row(); ++b) expected_inexact += top - s[b] > 14;
    }
  }
  const detail::Fp8Fold fold = detail::fold_to_fp8(t);
  EXPECT_EQ(fold.inexact_blocks, expected_inexact);
  EXPECT_GT(fold.inexact_blocks, 0);
  std::vector<double> exact(kCols);
  for (int64_t g = 0; g < t.groups; ++g) {
    for (int64_t r = 0; r < kRows; ++r) {
      t.row_to_double(g, r, exact.data());
      const int reference = fold.references[g * kRows + r];
      const double grid = std::ldexp(1.0, reference - 127 - 9);  // E4M3's subnormal step, unfolded
      for (int64_t k = 0; k < kCols; ++k) {
        const double got = detail::folded_value(fold, g, r, k);
        const int shift = t.row_scales(g, r)[k / kMxBlock] - reference;
        if (shift >= codec::kFoldMinExactShift) {
          ASSERT_EQ(got, exact[k]) << "group " << g << " row " << r << " k " << k;
        } else {
          ASSERT_LE(std::fabs(got - exact[k]), grid / 2) << "group " << g << " row " << r << " k " << k;
        }
      }
    }
  }
}

}  // namespace
}  // namespace mxmoe
