#include <gtest/gtest.h>

#include <vector>

#include "mxmoe/padding.hpp"
#include "mxmoe/synth.hpp"
#include "support.hpp"

namespace mxmoe {
namespace {

TEST(PaddingPlan, RoundsUpToTheAlignmentAndTheMxfp4Block) {
  EXPECT_EQ(PaddingPlan::for_alignment(2880, 2880, 256, 256), (PaddingPlan{2880, 2880, 3072, 3072}));
  EXPECT_EQ(PaddingPlan::for_alignment(2880, 2880, 64, 128), (PaddingPlan{2880, 2880, 2880, 2944}));
  EXPECT_EQ(PaddingPlan::for_alignment(96, 64, 1, 1), (PaddingPlan{96, 64, 96, 64}));
  EXPECT_EQ(PaddingPlan::for_alignment(100, 50, 1, 48), (PaddingPlan{100, 50, 128, 96}));  // lcm(32, 48) = 96
  EXPECT_TRUE(PaddingPlan::for_alignment(256, 512, 256, 256).is_identity());
  EXPECT_THROW(PaddingPlan::for_alignment(0, 64, 32, 32), std::invalid_argument);
  EXPECT_THROW(PaddingPlan::for_alignment(64, 64, 0, 32), std::invalid_argument);
}

// Backends are given the real layer and the plan, and pad as they pack: a layer of other dims (one
// padded already, or another layer's) is refused.
TEST(PaddingPlan, BackendsRejectALayerThePlanIsNotFor) {
  const auto plan = PaddingPlan::for_alignment(2880, 2880, 256, 256);
  EXPECT_NO_THROW(plan.check_layer({2880, 2880, 32, 4}, "x"));
  EXPECT_THROW(plan.check_layer({3072, 3072, 32, 4}, "x"), std::logic_error);
  EXPECT_THROW(plan.check_layer({2880, 2816, 32, 4}, "x"), std::logic_error);
}

// gpt-oss dims padded to 256: the same outputs on the real columns, in every scheme.
TEST(Padding, GptOssDimsPaddedTo256GiveTheSameOutput) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const MoeShape shape{2880, 2880, 4, 2};
  const MoeLayer layer = random_layer(shape, seed);
  const auto plan = PaddingPlan::for_alignment(shape.hidden, shape.intermediate, 256, 256);
  const MoeLayer padded = pad_layer(layer, plan);
  EXPECT_EQ(padded.shape, (MoeShape{3072, 3072, 4, 2}));
  const int T = 3;
  const auto x = random_hidden(T, shape.hidden, seed + 1, HiddenDistribution::heavy);
  const auto x_padded = pad_hidden(x, T, plan);
  for (Scheme scheme : kAllSchemes) {
    const auto plain = reference_forward(layer, x, T, scheme);
    const auto wide = reference_forward(padded, x_padded, T, scheme);
    EXPECT_EQ(wide.routing.expert_ids, plain.routing.expert_ids);
    const auto back = unpad_hidden(wide.output, T, plan);
    EXPECT_EQ(back, plain.output) << scheme_name(scheme);
    // The padded columns stay exactly zero.
    for (int t = 0; t < T; ++t) {
      for (int h = shape.hidden; h < plan.padded_hidden; ++h) EXPECT_EQ(wide.output[t * plan.padded_hidden + h], 0.0f);
    }
  }
}

TEST(Padding, MismatchedPlansAreRejected) {
  const MoeLayer layer = random_layer({64, 64, 2, 1}, 3);
  EXPECT_THROW(pad_layer(layer, PaddingPlan::for_alignment(96, 64, 32, 32)), std::invalid_argument);
  std::vector<float> x(10);
  EXPECT_THROW(pad_hidden(x, 1, PaddingPlan::for_alignment(64, 64, 32, 32)), std::invalid_argument);
}

}  // namespace
}  // namespace mxmoe
