// The Hopper weight layouts (src/backends/cuda_sm90/layout.hpp, layout_fp8.hpp) read back on the
// host from their documented descriptions: every code and scale of random weights is where a wgmma
// A fragment wants it, gate_up rows paired (gate, linear) eight rows apart; the FP8 layout's values
// decode, through the kernels' own decode, to the weights times their row's factor. Runs without a GPU.
#include <gtest/gtest.h>

#ifdef MXMOE_WITH_CUDA
#include <random>

#include "backends/cuda/cuda_check.hpp"
#include "backends/cuda_sm90/family.hpp"
#include "backends/cuda_sm90/gemm_fp8.hpp"
#include "backends/cuda_sm90/layout.hpp"
#include "backends/cuda_sm90/layout_fp8.hpp"
#include "backends/cuda_sm90/tile_widths.hpp"
#include "mxmoe/codecs.hpp"
#include "mxmoe/synth.hpp"
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
  EXPECT_THROW(cuda::sm90::pack_fp8_weights(whole(a), false), std::invalid_argument);
  EXPECT_THROW(cuda::sm90::pack_fp8_weights(whole(b), true), std::invalid_argument);
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

// Every E2M1 code at every nibble of a word, at every shift the FP8 table holds: decode_fp8_word
// gives the E4M3 code of the folded value (codec::fp8_fold_code), sign and all.
TEST(CudaSm90Fp8Layout, TheDecodeGivesEveryFoldedCode) {
  for (int shift = cuda::sm90::kFp8MinShift; shift <= codec::kFoldMaxShift; ++shift) {
    uint32_t low = 0, high = 0;
    cuda::sm90::fp8_table(static_cast<uint32_t>(8 * (shift + 6)), low, high);
    for (int position = 0; position < 4; ++position) {
      for (uint32_t code = 0; code < 16; ++code) {
        // X's value `position` and Y's value 3 - position carry the code; the others carry code 9
        // (-0.5), so a sign or magnitude written to a neighbour shows.
        uint32_t word = 0;
        for (int i = 0; i < 4; ++i) {
          const uint32_t x = i == position ? code : 9u, y = i == 3 - position ? code : 9u;
          word |= (x & 7u) << (4 * i) | (x >> 3) << (8 * i + 7) | (y & 7u) << (16 + 4 * i) | (y >> 3) << (8 * i + 3);
        }
        uint32_t x = 0, y = 0;
        cuda::sm90::decode_fp8_word(word, low, high, x, y);
        for (int i = 0; i < 4; ++i) {
          const uint8_t want_x = codec::fp8_fold_code(static_cast<uint8_t>(i == position ? code : 9u), shift);
          const uint8_t want_y = codec::fp8_fold_code(static_cast<uint8_t>(i == 3 - position ? code : 9u), shift);
          ASSERT_EQ((x >> (8 * i)) & 0xFFu, want_x) << "shift " << shift << " code " << code << " X value " << i;
          ASSERT_EQ((y >> (8 * i)) & 0xFFu, want_y) << "shift " << shift << " code " << code << " Y value " << i;
        }
      }
    }
  }
}

// A tensor whose rows' nonzero block scales lie within `spread` binades of the row's largest.
Mxfp4Tensor tensor_with_spread(int groups, int rows, int cols, int spread, uint64_t seed) {
  Mxfp4Tensor t = random_tensor(groups, rows, cols, seed);
  std::mt19937_64 rng(seed + 1);
  for (int64_t r = 0; r < t.groups * t.rows; ++r) {
    const int largest = 100 + static_cast<int>(rng() % 40);
    uint8_t* scales = t.scales.data() + r * t.blocks_per_row();
    for (int64_t b = 0; b < t.blocks_per_row(); ++b) scales[b] = static_cast<uint8_t>(largest - rng() % (spread + 1));
    scales[rng() % t.blocks_per_row()] = static_cast<uint8_t>(largest);
  }
  return t;
}

// Reads the FP8 layout back as the kernels will: record, thread, word 2s + h, registers X and Y,
// through decode_fp8_word and the block's table; every value times its tile row's factor must be
// the MXFP4 weight at the documented (row, k), exactly.
void expect_fp8_layout(const Mxfp4Tensor& t, bool gate_up) {
  const cuda::sm90::Fp8PackedWeights p = cuda::sm90::pack_fp8_weights(whole(t), gate_up);
  ASSERT_EQ(p.inexact_blocks, 0);
  const int tiles = t.rows / 64, chunks = t.cols / 64;
  ASSERT_EQ(p.words.size(), static_cast<size_t>(t.groups) * tiles * chunks * 544);
  ASSERT_EQ(p.row_factors.size(), static_cast<size_t>(t.groups) * t.rows);
  int checked = 0;
  for (int e = 0; e < t.groups; ++e) {
    for (int tile = 0; tile < tiles; ++tile) {
      for (int c = 0; c < chunks; ++c) {
        const uint32_t* words = p.words.data() + ((static_cast<size_t>(e) * tiles + tile) * chunks + c) * 544;
        const auto* scales = reinterpret_cast<const uint8_t*>(words + 512);
        for (int thread = 0; thread < 128; ++thread) {
          const int warp = thread / 32, g = thread % 32 / 4, t4 = thread % 4;
          for (int s = 0; s < 2; ++s) {
            for (int h = 0; h < 2; ++h) {
              const int tile_row = tile * 64 + warp * 16 + g + 8 * h;
              const int unit = tile_row / 16 * 8 + g;
              const int row = gate_up ? 2 * unit + h : tile_row;
              uint32_t low = 0, high = 0, x = 0, y = 0;
              cuda::sm90::fp8_table(scales[(warp * 8 + g) * 4 + 2 * h + s], low, high);
              cuda::sm90::decode_fp8_word(words[thread * 4 + 2 * s + h], low, high, x, y);
              const double factor = p.row_factors[static_cast<size_t>(e) * t.rows + tile_row];
              for (int i = 0; i < 4; ++i) {
                for (int part = 0; part < 2; ++part) {
                  const int k = c * 64 + 32 * s + 16 * part + 4 * t4 + i;
                  const auto byte = static_cast<uint8_t>(((part == 0 ? x : y) >> (8 * i)) & 0xFFu);
                  const double want = codec::e2m1_value(mxfp4_code(t.row_blocks(e, row), k)) *
                                      e8m0_to_double(t.row_scales(e, row)[k / 32]);
                  ASSERT_EQ(codec::fp8_e4m3_value(byte) * factor, want) << "expert " << e << " row " << row << " k " << k;
                  ++checked;
                }
              }
            }
          }
        }
      }
    }
  }
  EXPECT_EQ(checked, t.groups * t.rows * t.cols) << "every value read back exactly once";
}

TEST(CudaSm90Fp8Layout, EveryValueTimesItsRowFactorIsTheWeight) {
  expect_fp8_layout(tensor_with_spread(2, 128, 192, 11, 3), false);
  expect_fp8_layout(tensor_with_spread(2, 128, 192, 11, 4), true);
  expect_fp8_layout(tensor_with_spread(1, 64, 64, 0, 5), false);
}

// Exact while a row's nonzero blocks are within 11 binades of its largest; a nonzero block further
// down, or a NaN scale, is counted, and such a layer is not for this layout. Zero blocks fold at any
// scale; a row of zeros has factor 1.
TEST(CudaSm90Fp8Layout, CountsTheBlocksItCannotHold) {
  Mxfp4Tensor t = tensor_with_spread(1, 64, 128, 0, 6);  // every block of a row at one scale
  const auto inexact = [&] { return cuda::sm90::pack_fp8_weights(whole(t), false).inexact_blocks; };
  ASSERT_EQ(inexact(), 0);
  uint8_t* row0 = t.row_scales(0, 0);
  row0[1] = static_cast<uint8_t>(row0[0] - 11);
  EXPECT_EQ(inexact(), 0);
  row0[1] = static_cast<uint8_t>(row0[0] - 12);
  EXPECT_EQ(inexact(), 1);
  std::fill(t.row_blocks(0, 0) + 16, t.row_blocks(0, 0) + 32, uint8_t{0x88});  // block 1: zeros (and -0)
  EXPECT_EQ(inexact(), 0);
  t.row_scales(0, 5)[2] = 0xFF;
  EXPECT_EQ(inexact(), 1);
  t.row_scales(0, 5)[2] = t.row_scales(0, 5)[0];
  std::fill(t.row_blocks(0, 7), t.row_blocks(0, 7) + 64, uint8_t{0});
  const auto p = cuda::sm90::pack_fp8_weights(whole(t), false);
  EXPECT_EQ(p.inexact_blocks, 0);
  EXPECT_EQ(p.row_factors[7], 1.0f);
}

// The generator's spread weights (rows up to 8-9 binades wide) fit the FP8 layout whole.
TEST(CudaSm90Fp8Layout, SpreadSyntheticWeightsFitIt) {
  const MoeLayer layer = random_layer({2880, 2880, 1, 1}, 20, 0, WeightDistribution::spread);
  EXPECT_EQ(cuda::sm90::pack_fp8_weights(whole(layer.gate_up), true).inexact_blocks, 0);
  EXPECT_EQ(cuda::sm90::pack_fp8_weights(whole(layer.down), false).inexact_blocks, 0);
}

// The family packs the FP8 layout beside the bf16 one for FP8-activation schemes only, and not for
// a layer the layout cannot hold exactly (whose GEMMs then stay on bf16 tensor cores).
TEST(CudaSm90Fp8Layout, TheFamilyPacksItForFp8SchemesAndLayersItHolds) {
  Mxfp4Tensor t = tensor_with_spread(2, 128, 192, 11, 7);
  const cuda::GemmFamily& family = cuda::sm90::gemm_family();
  for (Scheme scheme : {Scheme::w4a16, Scheme::w4a4, Scheme::w4a8, Scheme::w4a8_token}) {
    SCOPED_TRACE(scheme_name(scheme));
    const cuda::PackedWeights packed = family.pack(whole(t), scheme, true);
    const bool fp8 = scheme == Scheme::w4a8 || scheme == Scheme::w4a8_token;
    EXPECT_EQ(packed.words, cuda::sm90::pack_weights(whole(t), true).words) << "the bf16 layout, always";
    EXPECT_EQ(packed.fp8_words.size(), fp8 ? packed.words.size() : 0u);
    EXPECT_EQ(packed.fp8_row_factors.size(), fp8 ? 2u * 128 : 0u);
  }
  uint8_t* scales = t.row_scales(1, 3);
  scales[1] = static_cast<uint8_t>(scales[0] - 12);  // at least 12 binades under the row's largest
  const cuda::PackedWeights packed = family.pack(whole(t), Scheme::w4a8, true);
  EXPECT_FALSE(packed.words.empty());
  EXPECT_TRUE(packed.fp8_words.empty());
  EXPECT_TRUE(packed.fp8_row_factors.empty());
}

// The family's batch plan: tiles of 256 pairs only on FP8 tensor cores, so only for FP8-activation
// schemes whose layer holds the FP8 layout, and only past the mean where they measured faster.
TEST(CudaSm90Plan, TilesOf256PairsOnlyOnFp8CoresWithTheFp8Layout) {
  const cuda::GemmFamily& family = cuda::sm90::gemm_family();
  const MoeShape shape{2880, 2880, 32, 4};
  const auto width = [&](Scheme scheme, int64_t pairs, bool fp8_layout) {
    return family.plan(scheme, pairs, 32, shape, 132, fp8_layout).tile_rows;
  };
  for (Scheme scheme : {Scheme::w4a8, Scheme::w4a8_token}) {
    SCOPED_TRACE(scheme_name(scheme));
    EXPECT_EQ(width(scheme, 4 * 8192, true), 256);   // 1024 pairs per expert
    const auto wide_from = static_cast<int64_t>(cuda::sm90::kWideTileMeanPairs) + 1;
    EXPECT_EQ(width(scheme, 32 * wide_from, true), 256);  // just past kWideTileMeanPairs
    EXPECT_EQ(width(scheme, 32 * (wide_from - 1), true), 128);
    EXPECT_EQ(width(scheme, 4 * 1024, true), 128);   // 128 per expert
    EXPECT_EQ(width(scheme, 4 * 256, true), 64);     // 32 per expert
    EXPECT_EQ(width(scheme, 4 * 8192, false), 128);  // a layer the FP8 layout cannot hold: bf16 cores
    EXPECT_TRUE(family.plan(scheme, 4 * 8192, 32, shape, 132, true).fp8_operands);
  }
  for (Scheme scheme : {Scheme::w4a16, Scheme::w4a4}) {
    SCOPED_TRACE(scheme_name(scheme));
    EXPECT_EQ(width(scheme, 4 * 8192, true), 128) << "bf16 cores have no tile of 256";
    EXPECT_FALSE(family.plan(scheme, 4 * 8192, 32, shape, 132, true).fp8_operands);
  }
}

// The FP8 kernels' producer holds each activation row's place in 32 bits of 16-byte units: a batch
// past that is refused by name before anything launches (so this runs without a GPU), never read
// from a wrapped address.
TEST(CudaSm90Fp8, RefusesActivationsPastItsRowAddressing) {
  const float factor = 1.0f;
  cuda::GemmProblem p;
  p.row_factors = &factor;
  p.k = 2880;
  p.pairs = static_cast<int>((int64_t{1} << 36) / p.k + 1);  // one row past 2^32 units of 16 bytes
  for (int variant : {64, 128, 256}) {
    try {
      cuda::sm90::launch_fp8(p, variant, nullptr);
      ADD_FAILURE() << "tile width " << variant << ": " << p.pairs << " rows of " << p.k << " bytes were launched";
    } catch (const cuda::CudaError& e) {
      EXPECT_NE(std::string(e.what()).find("run the batch in parts"), std::string::npos) << e.what();
    }
  }
}

}  // namespace
}  // namespace mxmoe
#endif  // MXMOE_WITH_CUDA
