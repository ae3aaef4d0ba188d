// The Hopper weight layout for FP8 tensor cores (W4A8's batched GEMMs, gemm_fp8.cu):
// MXFP4 weights as the E4M3 A fragments of m64nNk32 wgmma (warp by warp those of mma.sync
// m16n8k32), each 32-value block's E8M0 scale folded into its values relative to a reference per
// weight row, whose factor 2^(reference - 127) scales the row's sums after the MMA.
//
// Records as in layout.hpp (per expert, 64-row tile and 64-deep chunk, kChunkBytes, the words then
// the scales, so the same bulk copies bring them): thread (warp w, lane l, g = l / 4, t = l % 4)
// owns tile rows 16w + g and 16w + g + 8 (gate_up rows paired as in layout.hpp).
// - words [128 threads][4]: word 2s + h holds block s of the chunk (k32 step s) for row g (h = 0)
//   or g + 8 (h = 1): register X, the values at k = 32s + 4t + i (A register h of step s), and
//   register Y, those at 32s + 16 + 4t + i (A register 2 + h), i = 0..3. The magnitude (code & 7) of
//   X's value i is nibble i, of Y's value i nibble 4 + i (bits 0-2); the sign of X's value i is bit
//   8i + 7, of Y's bit 8i + 3 (the nibbles' fourth bits). So one byte permute of the nibbles masked
//   to 0x7777 looks four magnitudes up in an 8-byte table, and one AND places their signs where
//   E4M3 has them: 7 integer instructions per word of 8 values (decode_fp8_word).
// - scales [4 warps][8 groups][4 bytes]: for the group's rows (g, block 0), (g, block 1), (g + 8,
//   block 0), (g + 8, block 1), the byte B = 8 (d + 6) of the block's shift d = scale - reference,
//   from which two integer multiply-adds build the block's table (fp8_table).
// The reference of a row is its largest nonzero block's scale minus codec::kFoldMaxShift (6), so
// no folded value exceeds 6 x 2^6 = 384 < 448. The table's arithmetic holds for d in [-5, 6]: a row
// is exact when its nonzero blocks' scales are within 11 binades of its largest (all-zero blocks
// fold to zeros at any shift); a layer with a row beyond that is not packed in this layout
// (Fp8PackedWeights::inexact_blocks), and runs on the bf16 layout.
#pragma once

#include <cstdint>
#include <vector>

#include "backends/cuda_sm90/layout.hpp"
#include "mxmoe/codecs.hpp"

namespace mxmoe::cuda::sm90 {

constexpr int kFp8MinShift = -5;  // the table arithmetic's range: d in [kFp8MinShift, codec::kFoldMaxShift]

struct Fp8PackedWeights {
  std::vector<uint32_t> words;       // the records
  std::vector<float> row_factors;    // [groups][rows], tile row order: 2^(reference - 127)
  int64_t inexact_blocks = 0;        // nonzero blocks below their row's range; nonzero: do not use
};

// `t` at its padded dims (multiples of 64), in the FP8 layout.
Fp8PackedWeights pack_fp8_weights(const detail::PaddedMxfp4& t, bool gate_up);

// prmt on the device; the same on the host, for the tests that read the layout back. In asm: the
// compiler knows that __byte_perm reads 16 bits of its selector and would mask two selectors cut
// from one word apart (three instructions, not two).
MXMOE_HD uint32_t byte_permute(uint32_t a, uint32_t b, uint32_t selector) {
#if defined(__CUDA_ARCH__)
  uint32_t out;
  asm("prmt.b32 %0, %1, %2, %3;" : "=r"(out) : "r"(a), "r"(b), "r"(selector));
  return out;
#else
  const uint64_t bytes = a | static_cast<uint64_t>(b) << 32;
  uint32_t out = 0;
  for (int i = 0; i < 4; ++i) {
    const uint32_t s = (selector >> (4 * i)) & 0xFu;
    uint32_t byte = (bytes >> (8 * (s & 7u))) & 0xFFu;
    if (s & 8u) byte = (byte & 0x80u) ? 0xFFu : 0u;
    out |= byte << (8 * i);
  }
  return out;
#endif
}

// The E4M3 codes of the eight magnitudes 0, 0.5, 1, 1.5, 2, 3, 4, 6 times 2^d, with B = 8 (d + 6):
// 0, then 2^(d - 1) (exponent field d + 6), then 4c + B for code c >= 2 (exponent and mantissa of an
// E2M1 code sit in E4M3's bits 2-4 once the bias is added).
MXMOE_HD void fp8_table(uint32_t b, uint32_t& low, uint32_t& high) {
  low = b * 0x01010100u + 0x0C080000u;
  high = b * 0x01010101u + 0x1C181410u;
}

// Registers X and Y of one word (above) under the table of its block.
MXMOE_HD void decode_fp8_word(uint32_t word, uint32_t low, uint32_t high, uint32_t& x, uint32_t& y) {
  const uint32_t magnitudes = word & 0x77777777u;
  x = byte_permute(low, high, magnitudes) | (word & 0x80808080u);
  y = byte_permute(low, high, magnitudes >> 16) | ((word << 4) & 0x80808080u);
}

}  // namespace mxmoe::cuda::sm90
