#include "backends/cpu/kernels.hpp"
#include "mxmoe/format.hpp"
#include "util/parallel.hpp"

namespace mxmoe::cpu {

PackedMatrix pack_matrix(const detail::PaddedMxfp4& t, const std::function<int64_t(int64_t)>& source_row) {
  PackedMatrix p;
  p.groups = t.groups;
  p.rows = t.rows;
  p.cols = t.cols;
  p.tiles.resize(static_cast<size_t>(t.groups * t.rows * t.cols / 2));
  p.scales.resize(static_cast<size_t>(t.groups * t.rows * t.blocks_per_row()));
  const int64_t strips = p.strips(), kblocks = p.kblocks();
  detail::parallel_for(p.groups * strips, 0, 4, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t g = i / strips, s = i % strips;
      uint8_t* tiles = p.tiles.data() + i * kblocks * kTileBytes;
      uint8_t* scales = p.scales.data() + i * kblocks * kStripRows;
      for (int n = 0; n < kStripRows; ++n) {
        const int64_t row = source_row(s * kStripRows + n);
        for (int64_t b = 0; b < kblocks; ++b) {
          for (int q = 0; q < 4; ++q) {
            uint32_t word = 0;
            for (int i = 0; i < 8; ++i) {
              const uint32_t code = t.code(g, row, b * kMxBlock + 8 * q + i);
              word |= code << (4 * nibble_of_step(i));
            }
            uint8_t* at = tiles + b * kTileBytes + q * kGroupBytes + 4 * n;
            for (int byte = 0; byte < 4; ++byte) at[byte] = static_cast<uint8_t>(word >> (8 * byte));
          }
          scales[b * kStripRows + n] = t.scale(g, row, b);
        }
      }
    }
  });
  return p;
}

}  // namespace mxmoe::cpu
