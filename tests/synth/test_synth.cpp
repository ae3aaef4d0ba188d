// Synthetic layers and the comparison measures (src/synth/).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "mxmoe/metrics.hpp"
#include "mxmoe/synth.hpp"

namespace mxmoe {
namespace {

struct ScaleSpread {
  int tensor = 0;    // largest minus smallest block scale code over the tensor
  int widest_row = 0;  // the same within one row, the widest row's
  double mean_square = 0;  // of the dequantized weights
};

ScaleSpread spread_of(const Mxfp4Tensor& t) {
  ScaleSpread s;
  int lowest = 255, highest = 0;
  std::vector<double> row(static_cast<size_t>(t.cols));
  double sum = 0;
  for (int64_t g = 0; g < t.groups; ++g) {
    for (int64_t r = 0; r < t.rows; ++r) {
      const uint8_t* codes = t.row_scales(g, r);
      const auto [lo, hi] = std::minmax_element(codes, codes + t.blocks_per_row());
      s.widest_row = std::max(s.widest_row, *hi - *lo);
      lowest = std::min<int>(lowest, *lo);
      highest = std::max<int>(highest, *hi);
      t.row_to_double(g, r, row.data());
      for (double v : row) sum += v * v;
    }
  }
  s.tensor = highest - lowest;
  s.mean_square = sum / static_cast<double>(t.groups * t.rows * t.cols);
  return s;
}

// The spread weights are what their comment says: block scales over 14-16 binades of a tensor and
// up to 8-9 of a row (the normal ones within 2), at the normal weights' mean square.
TEST(SynthWeights, SpreadWeightsSpreadTheirBlockScalesAtTheSameMeanSquare) {
  const MoeShape shape{2880, 2880, 2, 4};
  const MoeLayer normal = random_layer(shape, 11, 0, WeightDistribution::normal);
  const MoeLayer spread = random_layer(shape, 11, 0, WeightDistribution::spread);
  for (const auto tensor : {&MoeLayer::gate_up, &MoeLayer::down}) {
    const ScaleSpread n = spread_of(normal.*tensor), s = spread_of(spread.*tensor);
    EXPECT_LE(n.tensor, 3);
    EXPECT_LE(n.widest_row, 3);
    EXPECT_GE(s.tensor, 13);
    EXPECT_LE(s.tensor, 17);
    EXPECT_GE(s.widest_row, 7);
    EXPECT_LE(s.widest_row, 10);
    EXPECT_NEAR(s.mean_square / n.mean_square, 1.0, 0.2);
  }
  // Reproducible from the seed; another seed differs.
  EXPECT_EQ(random_layer(shape, 11, 0, WeightDistribution::spread).down.scales, spread.down.scales);
  EXPECT_NE(random_layer(shape, 12, 0, WeightDistribution::spread).down.scales, spread.down.scales);
}

TEST(SynthWeights, DistributionNamesParse) {
  EXPECT_EQ(parse_weight_distribution("normal"), WeightDistribution::normal);
  EXPECT_EQ(parse_weight_distribution("spread"), WeightDistribution::spread);
  EXPECT_FALSE(parse_weight_distribution("wide"));
}

// The worst row's relative L2 is each row's own, not the batch's (which weights rows by their norm).
TEST(Metrics, WorstRowRelativeL2IsTheWorstRowsOwn) {
  const std::vector<float> reference = {100, 0, 0, 1, 0, 0};  // rows of 3: a large one, a small one
  const std::vector<float> got = {101, 0, 0, 1.5f, 0, 0};     // 1% off, 50% off
  EXPECT_NEAR(worst_row_relative_l2(got, reference, 3), 0.5, 1e-12);
  EXPECT_NEAR(relative_l2(got, reference), std::sqrt(1.25 / 10001.0), 1e-12);
  EXPECT_THROW(worst_row_relative_l2(got, reference, 4), std::invalid_argument);
  EXPECT_THROW(worst_row_relative_l2(got, reference, 0), std::invalid_argument);
}

}  // namespace
}  // namespace mxmoe
