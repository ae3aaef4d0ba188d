#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "mxmoe/moe.hpp"
#include "mxmoe/synth.hpp"
#include "support.hpp"

namespace mxmoe {
namespace {

TEST(ReferenceProperties, RoutingWeightsArePositiveSortedAndSumToOne) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const MoeShape shape{128, 64, 16, 4};
  const MoeLayer layer = random_layer(shape, seed);
  const int T = 50;
  const auto x = random_hidden(T, shape.hidden, seed + 1);
  const Routing r = route(layer, x, T);
  for (int t = 0; t < T; ++t) {
    double sum = 0.0;
    for (int j = 0; j < shape.top_k; ++j) {
      const float w = r.weights[t * shape.top_k + j];
      EXPECT_GT(w, 0.0f);
      if (j > 0) EXPECT_LE(w, r.weights[t * shape.top_k + j - 1]);
      sum += w;
      for (int i = 0; i < j; ++i) EXPECT_NE(r.expert_ids[t * shape.top_k + i], r.expert_ids[t * shape.top_k + j]);
    }
    EXPECT_NEAR(sum, 1.0, 1e-6);
  }
}

TEST(ReferenceProperties, AnExpertWithZeroWeightsContributesOnlyItsBias) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const MoeShape shape{64, 64, 4, 2};
  MoeLayer layer = random_layer(shape, seed);
  const int zeroed = 1, other = 2;
  const MoeLayer blank = MoeLayer::zeros(shape);
  std::copy_n(blank.gate_up.blocks.begin(), layer.gate_up.blocks.size() / 4, layer.gate_up.blocks.begin() + layer.gate_up.blocks.size() / 4 * zeroed);
  std::copy_n(blank.down.blocks.begin(), layer.down.blocks.size() / 4, layer.down.blocks.begin() + layer.down.blocks.size() / 4 * zeroed);
  const int T = 3;
  const auto x = random_hidden(T, shape.hidden, seed + 1);
  for (Scheme scheme : kAllSchemes) {
    Routing mixed{T, 2, {}, {}}, alone{T, 2, {}, {}};
    for (int t = 0; t < T; ++t) {
      mixed.expert_ids.insert(mixed.expert_ids.end(), {zeroed, other});
      mixed.weights.insert(mixed.weights.end(), {0.25f, 0.75f});
      alone.expert_ids.insert(alone.expert_ids.end(), {other, zeroed});
      alone.weights.insert(alone.weights.end(), {1.0f, 0.0f});
    }
    const auto a = reference_forward(layer, x, T, scheme, {.routing = &mixed});
    const auto b = reference_forward(layer, x, T, scheme, {.routing = &alone});
    for (int t = 0; t < T; ++t) {
      for (int h = 0; h < shape.hidden; ++h) {
        const double expected = 0.25 * layer.down_bias[zeroed * shape.hidden + h] + 0.75 * b.output[t * shape.hidden + h];
        EXPECT_NEAR(a.output[t * shape.hidden + h], expected, 1e-5 * (1 + std::fabs(expected))) << scheme_name(scheme);
      }
    }
  }
}

TEST(ReferenceProperties, PermutingExpertsWithTheirRouterRowsChangesNothing) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const MoeShape shape{96, 64, 8, 3};
  const MoeLayer layer = random_layer(shape, seed);
  std::vector<int> perm(shape.experts);
  std::iota(perm.begin(), perm.end(), 0);
  std::mt19937_64 rng(seed);
  std::shuffle(perm.begin(), perm.end(), rng);
  // Expert perm[e] of the new layer is expert e of the old one.
  MoeLayer permuted = layer;
  const int64_t H = shape.hidden, I = shape.intermediate;
  const size_t gu_bytes = layer.gate_up.blocks.size() / shape.experts, gu_scales = layer.gate_up.scales.size() / shape.experts;
  const size_t dn_bytes = layer.down.blocks.size() / shape.experts, dn_scales = layer.down.scales.size() / shape.experts;
  for (int e = 0; e < shape.experts; ++e) {
    const int p = perm[e];
    std::copy_n(layer.router_weight.begin() + e * H, H, permuted.router_weight.begin() + p * H);
    permuted.router_bias[p] = layer.router_bias[e];
    std::copy_n(layer.gate_up.blocks.begin() + e * gu_bytes, gu_bytes, permuted.gate_up.blocks.begin() + p * gu_bytes);
    std::copy_n(layer.gate_up.scales.begin() + e * gu_scales, gu_scales, permuted.gate_up.scales.begin() + p * gu_scales);
    std::copy_n(layer.gate_up_bias.begin() + e * 2 * I, 2 * I, permuted.gate_up_bias.begin() + p * 2 * I);
    std::copy_n(layer.down.blocks.begin() + e * dn_bytes, dn_bytes, permuted.down.blocks.begin() + p * dn_bytes);
    std::copy_n(layer.down.scales.begin() + e * dn_scales, dn_scales, permuted.down.scales.begin() + p * dn_scales);
    std::copy_n(layer.down_bias.begin() + e * H, H, permuted.down_bias.begin() + p * H);
  }
  const int T = 20;
  const auto x = random_hidden(T, shape.hidden, seed + 1, HiddenDistribution::heavy);
  for (Scheme scheme : kAllSchemes) {
    const auto a = reference_forward(layer, x, T, scheme);
    const auto b = reference_forward(permuted, x, T, scheme);
    for (size_t i = 0; i < a.routing.expert_ids.size(); ++i) {
      EXPECT_EQ(perm[a.routing.expert_ids[i]], b.routing.expert_ids[i]);
      EXPECT_EQ(a.routing.weights[i], b.routing.weights[i]);
    }
    // Only the order in which experts are added differs: float64 rounding, far below float.
    EXPECT_LT(test::relative_l2(b.output, a.output), 1e-12) << scheme_name(scheme);
  }
}

TEST(ReferenceProperties, ResultsDoNotDependOnTheThreadCount) {
  const uint64_t seed = test::fresh_seed();
  const MoeShape shape{128, 96, 8, 2};
  const MoeLayer layer = random_layer(shape, seed);
  const auto x = random_hidden(9, shape.hidden, seed + 1);
  const auto one = reference_forward(layer, x, 9, Scheme::w4a16, {.threads = 1});
  const auto many = reference_forward(layer, x, 9, Scheme::w4a16, {.threads = 3});
  EXPECT_EQ(one.output, many.output);
}

TEST(ReferenceProperties, BadInputsAreClearErrors) {
  const MoeShape shape{64, 64, 4, 2};
  MoeLayer layer = random_layer(shape, 7);
  std::vector<float> x(2 * 64, 0.5f);
  EXPECT_THROW(reference_forward(layer, std::span<const float>(x).first(100), 2, Scheme::w4a16), std::invalid_argument);
  x[70] = std::nanf("");
  EXPECT_THROW(reference_forward(layer, x, 2, Scheme::w4a16), std::domain_error);
  EXPECT_THROW(route(layer, x, 2), std::domain_error);
  x[70] = 0.0f;
  Routing bad{2, 2, {0, 0, 1, 2}, {0.5f, 0.5f, 0.5f, 0.5f}};
  EXPECT_THROW(reference_forward(layer, x, 2, Scheme::w4a16, {.routing = &bad}), std::invalid_argument);
  bad.expert_ids = {0, 9, 1, 2};
  EXPECT_THROW(reference_forward(layer, x, 2, Scheme::w4a16, {.routing = &bad}), std::invalid_argument);
  layer.down.scales[5] = 255;
  try {
    reference_forward(layer, x, 2, Scheme::w4a16);
    FAIL() << "NaN scale accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("down scale of expert 0, row 2"), std::string::npos) << e.what();
  }
  layer = random_layer(shape, 7);
  layer.gate_up_bias.pop_back();
  EXPECT_THROW(layer.validate(), std::invalid_argument);
}

}  // namespace
}  // namespace mxmoe
