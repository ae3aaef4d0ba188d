// The reference on cases worked out by hand, and against an independent formula.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <utility>
#include <random>
#include <vector>

#include "mxmoe/format.hpp"
#include "mxmoe/moe.hpp"
#include "support.hpp"

namespace mxmoe {
namespace {

constexpr int H = 64, I = 32, E = 4, K = 2;

// gpt-oss's SwiGLU written out independently: min(gate, limit) * sigmoid(alpha * that) *
// (clamp(linear, -limit, limit) + 1), with alpha as the checkpoint's float.
double swiglu_by_hand(double gate, double linear) {
  const double alpha = 1.702f;
  const double g = std::min(gate, 7.0), l = std::clamp(linear, -7.0, 7.0);
  return g * (1.0 / (1.0 + std::exp(-alpha * g))) * (l + 1.0);
}

TEST(Swiglu, OneFormulaForTheReferenceAndTheFloatKernelsClampsAndKeepsNan) {
  const SwigluParams params{1.702f, 7.0f};
  for (const auto [gate, linear] : {std::pair{0.5, -1.25}, {9.0, 8.0}, {-3.0, -9.0}, {7.0, 7.0}, {-20.0, 0.0}}) {
    const double expected = swiglu_by_hand(gate, linear);
    EXPECT_NEAR(swiglu(gate, linear, params), expected, 1e-12 * std::max(1.0, std::abs(expected))) << gate;
    EXPECT_NEAR(codec::swiglu<float>(static_cast<float>(gate), static_cast<float>(linear), 1.702f, 7.0f), expected,
                1e-6 * std::max(1.0, std::abs(expected)))
        << gate;
  }
  // A clamp must not turn NaN into a finite value: a non-finite output is reported, not hidden.
  EXPECT_TRUE(std::isnan(swiglu(std::nan(""), 1.0, params)));
  EXPECT_TRUE(std::isnan(swiglu(1.0, std::nan(""), params)));
  EXPECT_TRUE(std::isnan(codec::swiglu<float>(std::nanf(""), 1.0f, 1.702f, 7.0f)));
  EXPECT_TRUE(std::isnan(codec::swiglu<float>(1.0f, std::nanf(""), 1.702f, 7.0f)));
}

void set_row(Mxfp4Tensor& t, int e, int r, const std::vector<float>& values) { t.set_row(e, r, values); }

std::vector<float> one_hot(int n, int at, float value) {
  std::vector<float> v(n, 0.0f);
  v[at] = value;
  return v;
}

double sigmoid(double z) { return 1.0 / (1.0 + std::exp(-z)); }

// Token x = e_0. Router rows put logit e on expert e, so experts 3 and 2 win with softmax weights
// 1/(1+e^-1) and 1/(1+e). Expert 3: every gate row reads 1, every linear row 0.5 -> each unit is
// 1 * sigmoid(1.702) * 1.5; its down weights are all 0.5 and its down bias 0.25, so each output is
// 32 * 0.5 * unit + 0.25. Expert 2: gate 8 clamps to 7, linear -8 clamps to -7; only unit 0 feeds
// the output (down weight 1 on column 0), so each output is 7 * sigmoid(7 * 1.702) * (-6).
TEST(ReferenceByHand, TinyLayerMatchesHandComputedValues) {
  MoeLayer layer = MoeLayer::zeros({H, I, E, K});
  for (int e = 0; e < E; ++e) layer.router_weight[e * H] = static_cast<float>(e);
  for (int r = 0; r < I; ++r) {
    set_row(layer.gate_up, 3, 2 * r, one_hot(H, 0, 1.0f));
    set_row(layer.gate_up, 3, 2 * r + 1, one_hot(H, 0, 0.5f));
    set_row(layer.gate_up, 2, 2 * r, one_hot(H, 0, 8.0f));
    set_row(layer.gate_up, 2, 2 * r + 1, one_hot(H, 0, -8.0f));
  }
  for (int h = 0; h < H; ++h) {
    set_row(layer.down, 3, h, std::vector<float>(I, 0.5f));
    layer.down_bias[3 * H + h] = 0.25f;
    set_row(layer.down, 2, h, one_hot(I, 0, 1.0f));
  }
  const std::vector<float> x = one_hot(H, 0, 1.0f);

  const MoeOutput out = reference_forward(layer, x, 1, Scheme::w4a32);

  const double w3 = 1.0 / (1.0 + std::exp(-1.0)), w2 = 1.0 / (1.0 + std::exp(1.0));
  ASSERT_EQ(out.routing.expert_ids, (std::vector<int32_t>{3, 2}));
  EXPECT_NEAR(out.routing.weights[0], w3, 1e-7);
  EXPECT_NEAR(out.routing.weights[1], w2, 1e-7);
  const double unit3 = 1.0 * sigmoid(1.702) * 1.5;
  const double unit2 = 7.0 * sigmoid(7.0 * 1.702) * (-7.0 + 1.0);
  const double expected = w3 * (16.0 * unit3 + 0.25) + w2 * unit2;
  EXPECT_NEAR(expected, 3.72713, 1e-5);  // 0.7311 * 20.549 + 0.2689 * (-41.9997)
  for (int h = 0; h < H; ++h) EXPECT_NEAR(out.output[h], expected, 1e-5 * std::fabs(expected)) << h;
}

TEST(ReferenceByHand, EqualLogitsPickTheLowerExpertIndex) {
  MoeLayer layer = MoeLayer::zeros({H, I, E, K});  // every logit is 0
  const std::vector<float> x(H, 1.0f);
  const MoeOutput out = reference_forward(layer, x, 1, Scheme::w4a32);
  EXPECT_EQ(out.routing.expert_ids, (std::vector<int32_t>{0, 1}));
  EXPECT_EQ(out.routing.weights, (std::vector<float>{0.5f, 0.5f}));
}

// Random weights drawn directly on the MXFP4 grid (E2M1 values times a power of two per block),
// so this check needs no quantizer: it multiplies plain float matrices with textbook loops.
TEST(ReferenceByHand, MatchesAnIndependentFormulaOnRandomExactWeights) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> code(0, 15), exponent(-6, -2);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto exact_matrix = [&](int rows, int cols) {
    std::vector<float> m(static_cast<size_t>(rows) * cols);
    for (int r = 0; r < rows; ++r) {
      for (int b = 0; b < cols / 32; ++b) {
        const float scale = std::ldexp(1.0f, exponent(rng));
        for (int i = 0; i < 32; ++i) m[r * cols + b * 32 + i] = e2m1_to_float(static_cast<uint8_t>(code(rng))) * scale;
      }
    }
    return m;
  };
  MoeLayer layer = MoeLayer::zeros({H, I, E, K});
  std::vector<std::vector<float>> gate_up(E), down(E);
  for (int e = 0; e < E; ++e) {
    gate_up[e] = exact_matrix(2 * I, H);
    down[e] = exact_matrix(H, I);
    for (int r = 0; r < 2 * I; ++r) layer.gate_up.set_row(e, r, {gate_up[e].data() + r * H, static_cast<size_t>(H)});
    for (int r = 0; r < H; ++r) layer.down.set_row(e, r, {down[e].data() + r * I, static_cast<size_t>(I)});
  }
  for (auto& v : layer.router_weight) v = normal(rng);
  for (auto& v : layer.router_bias) v = normal(rng);
  for (auto& v : layer.gate_up_bias) v = normal(rng);
  for (auto& v : layer.down_bias) v = normal(rng);
  const int T = 5;
  std::vector<float> x(T * H);
  for (auto& v : x) v = 2.0f * normal(rng);

  const MoeOutput out = reference_forward(layer, x, T, Scheme::w4a32);

  for (int t = 0; t < T; ++t) {
    std::vector<std::pair<double, int>> logits;
    for (int e = 0; e < E; ++e) {
      double s = layer.router_bias[e];
      for (int h = 0; h < H; ++h) s += static_cast<double>(x[t * H + h]) * layer.router_weight[e * H + h];
      logits.push_back({-s, e});
    }
    std::sort(logits.begin(), logits.end());
    const double z = std::exp(-logits[0].first) + std::exp(-logits[1].first);
    std::vector<double> expected(H, 0.0);
    for (int j = 0; j < K; ++j) {
      const int e = logits[j].second;
      const double weight = std::exp(-logits[j].first) / z;
      ASSERT_EQ(out.routing.expert_ids[t * K + j], e);
      EXPECT_NEAR(out.routing.weights[t * K + j], weight, 1e-6);
      std::vector<double> unit(I);
      for (int r = 0; r < I; ++r) {
        double g = layer.gate_up_bias[e * 2 * I + 2 * r], l = layer.gate_up_bias[e * 2 * I + 2 * r + 1];
        for (int h = 0; h < H; ++h) {
          g += gate_up[e][(2 * r) * H + h] * static_cast<double>(x[t * H + h]);
          l += gate_up[e][(2 * r + 1) * H + h] * static_cast<double>(x[t * H + h]);
        }
        g = std::min(g, 7.0);
        l = std::max(-7.0, std::min(l, 7.0));
        unit[r] = static_cast<float>(g / (1.0 + std::exp(-1.702 * g)) * (l + 1.0));
      }
      for (int h = 0; h < H; ++h) {
        double s = layer.down_bias[e * H + h];
        for (int r = 0; r < I; ++r) s += down[e][h * I + r] * unit[r];
        expected[h] += weight * s;
      }
    }
    for (int h = 0; h < H; ++h) {
      EXPECT_NEAR(out.output[t * H + h], expected[h], 1e-5 * (1.0 + std::fabs(expected[h]))) << t << "," << h;
    }
  }
}

}  // namespace
}  // namespace mxmoe
