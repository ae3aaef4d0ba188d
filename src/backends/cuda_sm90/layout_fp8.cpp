#include "backends/cuda_sm90/layout_fp8.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "mxmoe/format.hpp"

namespace mxmoe::cuda::sm90 {

namespace {

// A row's reference scale code (layout_fp8.hpp), counting the blocks the layout cannot hold: nonzero
// ones below the table's range, and NaN-scaled ones (code 255: NaN values whatever their codes);
// 127 (factor 1) for a row of zeros.
int row_reference(const detail::PaddedMxfp4& t, int64_t group, int64_t row, int64_t& inexact) {
  // The scale codes of the row's nonzero blocks that are not NaN.
  std::vector<int> scales;
  for (int64_t b = 0; b < t.cols / kMxBlock; ++b) {
    const int scale = t.scale(group, row, b);
    bool nonzero = false;
    for (int64_t k = b * kMxBlock; k < (b + 1) * kMxBlock && !nonzero; ++k) nonzero = (t.code(group, row, k) & 7u) != 0;
    if (scale == 0xFF) {
      ++inexact;
    } else if (nonzero) {
      scales.push_back(scale);
    }
  }
  if (scales.empty()) return 127;
  const int reference = *std::max_element(scales.begin(), scales.end()) - codec::kFoldMaxShift;
  for (int scale : scales) inexact += scale - reference < kFp8MinShift;
  return reference;
}

}  // namespace

Fp8PackedWeights pack_fp8_weights(const detail::PaddedMxfp4& t, bool gate_up) {
  const int64_t tiles = t.rows / kTileRows;
  Fp8PackedWeights p;
  p.row_factors.resize(static_cast<size_t>(t.groups * t.rows));
  std::vector<int> references(static_cast<size_t>(t.groups * t.rows));
  std::vector<int64_t> inexact(static_cast<size_t>(t.groups * tiles), 0);
  fill_row_tiles(t, "sm90 FP8 weight layout", p.words, [&](int64_t e, int64_t tile, uint32_t* records) {
    for (int64_t r = tile * kTileRows; r < (tile + 1) * kTileRows; ++r) {
      const int reference = row_reference(t, e, source_row(r, gate_up), inexact[e * tiles + tile]);
      references[e * t.rows + r] = reference;
      p.row_factors[e * t.rows + r] = std::ldexp(1.0f, reference - 127);
    }
    for (int64_t c = 0; c < t.cols / kChunkK; ++c) {
      uint32_t* words = records + c * (kChunkBytes / 4);
      uint8_t* scales = reinterpret_cast<uint8_t*>(words) + kWordBytesPerChunk;  // little-endian, as the GPU reads them
      for (int thread = 0; thread < 128; ++thread) {
        const int warp = thread / 32, lane = thread % 32, g = lane / 4, t4 = lane % 4;
        const int64_t tile_rows[2] = {tile * kTileRows + warp * 16 + g, tile * kTileRows + warp * 16 + g + 8};
        for (int s = 0; s < 2; ++s) {
          for (int h = 0; h < 2; ++h) {
            const int64_t row = source_row(tile_rows[h], gate_up);
            uint32_t word = 0;
            for (int i = 0; i < 4; ++i) {
              const int64_t k = c * kChunkK + 32 * s + 4 * t4 + i;
              const uint32_t x = t.code(e, row, k), y = t.code(e, row, k + 16);
              word |= (x & 7u) << (4 * i) | (x >> 3) << (8 * i + 7);
              word |= (y & 7u) << (16 + 4 * i) | (y >> 3) << (8 * i + 3);
            }
            words[thread * 4 + 2 * s + h] = word;
          }
        }
        if (t4 == 0) {
          uint8_t* s = scales + (warp * 8 + g) * 4;
          for (int h = 0; h < 2; ++h) {
            const int reference = references[e * t.rows + tile_rows[h]];
            for (int block = 0; block < 2; ++block) {
              // Outside the range only where the block is zero (or the layer is inexact): any
              // table maps code 0 to 0.
              const int shift = std::clamp(t.scale(e, source_row(tile_rows[h], gate_up), 2 * c + block) - reference,
                                           kFp8MinShift, codec::kFoldMaxShift);
              s[2 * h + block] = static_cast<uint8_t>(8 * (shift + 6));
            }
          }
        }
      }
    }
  });
  for (int64_t n : inexact) p.inexact_blocks += n;
  return p;
}

}  // namespace mxmoe::cuda::sm90
