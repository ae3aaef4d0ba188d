// The Hopper weight layout (src/backends/cuda_sm90/layout.hpp) read back on the host from its
// documented description: every code and scale of random weights is where a wgmma A fragment wants
// it, gate_up rows paired (gate, linear) eight rows apart. Runs without a GPU.
#include <gtest/gtest.h>

#ifdef MXMOE_WITH_CUDA
#include <random>

#include "backends/cuda_sm90/layout.hpp"
#include "moe/padded_view.hpp"
#include "mxmoe/padding.hpp"
#include "mxmoe/format.hpp"

namespace mxmoe {
namespace {

Mxfp4Tensor random_tensor(int groups, int rows, int cols, uint64_t seed) {
  Mxfp4Tensor t;
  t.groups = groups;
  t.rows = rows;
  t.cols = cols;
  t.blocks.resize(static_cast<size_t>(groups) * rows * cols / 2);
  t.scales.resize(static_cast<size_t>(groups) * rows * cols / 32);
  std::mt19937_64 rng(seed);
  for (auto& b : t.blocks) b = static_cast<uint8_t>(rng());
  for (auto& s : t.scales) s = static_cast<uint8_t>(rng() % 255);
  return t;
}

// Bits 6, 7, 8 and 15 of each bf16 half after rotating right by 0, 4, 10 and 6 for registers 0-3,
// register 3's mantissa (bit 6) by 14 instead. Returns the 4-bit code of element `half` of register r.
uint8_t code_in_word(uint32_t word, int r, int half) {
  static constexpr int kBf16Bits[4] = {6, 7, 8, 15}, kRotations[4] = {0, 4, 10, 6};
  uint8_t code = 0;
  for (int i = 0; i < 4; ++i) {
    const int rotation = r == 3 && i == 0 ? 14 : kRotations[r];
    const int position = (kBf16Bits[i] + 16 * half + rotation) % 32;
    code |= static_cast<uint8_t>(((word >> position) & 1u) << i);
  }
  return code;
}

detail::PaddedMxfp4 whole(const Mxfp4Tensor& t) { return {t, t.rows, t.cols}; }

void expect_layout(const Mxfp4Tensor& t, bool gate_up) {
  const cuda::PackedWeights p = cuda::sm90::pack_weights(whole(t), gate_up);
  const int tiles = t.rows / 64, chunks = t.cols / 64;
  // One record per (expert, row tile, chunk): 512 words of codes, then 128 bytes of scales.
  ASSERT_EQ(p.words.size(), static_cast<size_t>(t.groups) * tiles * chunks * 544);
  EXPECT_TRUE(p.scales.empty());
  int checked = 0;
  for (int e = 0; e < t.groups; ++e) {
    for (int tile = 0; tile < tiles; ++tile) {
      for (int c = 0; c < chunks; ++c) {
        const size_t record = (static_cast<size_t>(e) * tiles + tile) * chunks + c;
        const uint32_t* words = p.words.data() + record * 544;
        const auto* scales = reinterpret_cast<const uint8_t*>(words + 512);
        for (int thread = 0; thread < 128; ++thread) {
          const int warp = thread / 32, g = thread % 32 / 4, t4 = thread % 4;
          for (int half_row = 0; half_row < 2; ++half_row) {
            const int tile_row = tile * 64 + warp * 16 + g + 8 * half_row;
            // gate_up: the unit's gate row, then its linear row eight rows further down.
            const int unit = tile_row / 16 * 8 + g;
            const int row = gate_up ? 2 * unit + half_row : tile_row;
            for (int step = 0; step < 4; ++step) {
              const uint32_t word = words[thread * 4 + step];
              for (int high_k = 0; high_k < 2; ++high_k) {
                const int r = half_row + 2 * high_k;
                const int k = c * 64 + step * 16 + 2 * t4 + 8 * high_k;
                for (int element = 0; element < 2; ++element) {
                  ASSERT_EQ(code_in_word(word, r, element), mxfp4_code(t.row_blocks(e, row), k + element))
                      << "expert " << e << " row " << row << " k " << k + element;
                  ++checked;
                }
              }
            }
            for (int block = 0; block < 2; ++block) {
              EXPECT_EQ(scales[(warp * 8 + g) * 4 + 2 * half_row + block], t.row_scales(e, row)[2 * c + block]);
            }
          }
        }
      }
    }
  }
  EXPECT_EQ(checked, t.groups * t.rows * t.cols) << "every code read back exactly once";
}

TEST(CudaSm90Layout, EveryCodeAndScaleSitsWhereTheFragmentsWantIt) {
  expect_layout(random_tensor(2, 128, 192, 7), false);
  expect_layout(random_tensor(2, 128, 192, 8), true);
}

TEST(CudaSm90Layout, RefusesShapesThatAreNotMultiplesOf64) {
  const Mxfp4Tensor a = random_tensor(1, 96, 64, 1), b = random_tensor(1, 64, 96, 1);
  EXPECT_THROW(cuda::sm90::pack_weights(whole(a), false), std::invalid_argument);
  EXPECT_THROW(cuda::sm90::pack_weights(whole(b), false), std::invalid_argument);
}

// Both CUDA packers write the plan's padding while they re-lay the weights: packing a tensor through
// its padded view gives the bytes of packing a padded copy (pad_layer's), for every layout.
TEST(CudaPacking, WritesThePaddingOfThePlanWithoutAPaddedCopy) {
  MoeLayer layer;
  layer.shape = {96, 160, 2, 1};
  layer.gate_up = random_tensor(2, 320, 96, 7);
  layer.down = random_tensor(2, 96, 160, 8);
  layer.router_weight.assign(2 * 96, 0.5f);
  layer.router_bias.assign(2, 0.0f);
  layer.gate_up_bias.assign(2 * 320, 0.25f);
  layer.down_bias.assign(2 * 96, 0.125f);
  const PaddingPlan plan = PaddingPlan::for_alignment(96, 160, 64, 64);
  ASSERT_EQ(plan.padded_hidden, 128);
  ASSERT_EQ(plan.padded_intermediate, 192);
  const MoeLayer copy = pad_layer(layer, plan);
  const detail::PaddedLayer view{layer, plan};
  const auto expect_same = [](const cuda::PackedWeights& a, const cuda::PackedWeights& b) {
    EXPECT_EQ(a.words, b.words);
    EXPECT_EQ(a.scales, b.scales);
  };
  for (bool gate_up : {true, false}) {
    const detail::PaddedMxfp4 padded = gate_up ? view.gate_up() : view.down();
    const Mxfp4Tensor& copied = gate_up ? copy.gate_up : copy.down;
    expect_same(cuda::sm90::pack_weights(padded, gate_up), cuda::sm90::pack_weights(whole(copied), gate_up));
    for (cuda::WeightLayout layout : {cuda::WeightLayout::bf16_mma, cuda::WeightLayout::fp8_mma}) {
      expect_same(cuda::pack_weights(padded, layout), cuda::pack_weights(whole(copied), layout));
    }
  }
}

}  // namespace
}  // namespace mxmoe
#endif  // MXMOE_WITH_CUDA
