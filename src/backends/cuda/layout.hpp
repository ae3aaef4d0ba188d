// How MXFP4 weights are laid out on the GPU: in the register order of mma.sync B fragments, so each
// thread loads one 32-bit word per (8 output rows, 32-wide k block) and decodes it with a few
// integer operations.
//
// Words are grouped [expert][n/8][k/32][lane 0..31]. Lane l holds codes of row 8*(n/8) + l/4:
// - bf16 path (m16n8k16): nibble r (r < 4) = code of k = 2(l%4) + 8r, nibble 4 + r = code of k + 1,
//   so (word >> 4r) & 0x000F000F is the (k, k+1) pair of the r-th B register;
// - fp8 path (m16n8k32): nibble 2j = code of k = 4(l%4) + j, nibble 2j + 1 = code of 16 + 4(l%4) + j
//   (j < 4), so word & 0x0F0F0F0F and (word >> 4) & 0x0F0F0F0F are the two B registers.
// Scales follow as [expert][n/8][k/32][8 rows].
#pragma once

#include <cstdint>
#include <vector>

#include "moe/padded_view.hpp"
#include "mxmoe/moe.hpp"

namespace mxmoe::cuda {

enum class WeightLayout { bf16_mma, fp8_mma };

struct PackedWeights {
  std::vector<uint32_t> words;
  std::vector<uint8_t> scales;  // empty where a layout keeps the scales among the words (sm90)
  // Where a family runs FP8-activation schemes' batched GEMMs on FP8 tensor cores from a layout of
  // its own (sm90: layout_fp8.hpp), those words and their factor per weight row, beside `words`
  // (which its small-batch kernels read). Empty: the batched GEMMs read `words`.
  std::vector<uint32_t> fp8_words;
  std::vector<float> fp8_row_factors;
};

// `t` at its padded dims (padded rows and columns packed as zero codes).
PackedWeights pack_weights(const detail::PaddedMxfp4& t, WeightLayout layout);

}  // namespace mxmoe::cuda
