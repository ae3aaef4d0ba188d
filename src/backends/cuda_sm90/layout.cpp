#include "backends/cuda_sm90/layout.hpp"

#include <stdexcept>
#include <string>

#include "mxmoe/format.hpp"
#include "util/parallel.hpp"

namespace mxmoe::cuda::sm90 {

int64_t source_row(int64_t row, bool gate_up) {
  if (!gate_up) return row;
  const int64_t base = row - row % 16, r = row % 16;
  return base + (r < 8 ? 2 * r : 2 * (r - 8) + 1);
}

void fill_row_tiles(const detail::PaddedMxfp4& t, const char* layout, std::vector<uint32_t>& words,
                    const std::function<void(int64_t expert, int64_t tile, uint32_t* records)>& fill) {
  if (t.rows % kTileRows != 0 || t.cols % kChunkK != 0) {
    throw std::invalid_argument(std::string(layout) + ": rows and columns must be multiples of 64");
  }
  const int64_t tiles = t.rows / kTileRows, chunks = t.cols / kChunkK;
  words.resize(static_cast<size_t>(t.groups * tiles * chunks * (kChunkBytes / 4)));
  detail::parallel_for(t.groups * tiles, 0, 4, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) fill(i / tiles, i % tiles, words.data() + i * chunks * (kChunkBytes / 4));
  });
}

PackedWeights pack_weights(const detail::PaddedMxfp4& t, bool gate_up) {
  PackedWeights p;
  fill_row_tiles(t, "sm90 weight layout", p.words, [&](int64_t e, int64_t tile, uint32_t* records) {
    for (int64_t c = 0; c < t.cols / kChunkK; ++c) {
      uint32_t* words = records + c * (kChunkBytes / 4);
      uint8_t* scales = reinterpret_cast<uint8_t*>(words) + kWordBytesPerChunk;  // little-endian, as the GPU reads them
      for (int thread = 0; thread < 128; ++thread) {
        const int warp = thread / 32, lane = thread % 32, g = lane / 4, t4 = lane % 4;
        const int64_t rows[2] = {source_row(tile * kTileRows + warp * 16 + g, gate_up),
                                 source_row(tile * kTileRows + warp * 16 + g + 8, gate_up)};
        for (int step = 0; step < 4; ++step) {
          uint32_t word = 0;
          for (int r = 0; r < 4; ++r) {
            const int64_t k = c * kChunkK + step * 16 + 2 * t4 + (r >= 2 ? 8 : 0);
            for (int half = 0; half < 2; ++half) {
              const uint8_t code = t.code(e, rows[r & 1], k + half);
              for (int i = 0; i < 4; ++i) word |= static_cast<uint32_t>((code >> i) & 1u) << code_bit_position(r, half, i);
            }
          }
          words[thread * 4 + step] = word;
        }
        if (t4 == 0) {
          uint8_t* s = scales + (warp * 8 + g) * 4;
          for (int half = 0; half < 2; ++half) {
            s[2 * half] = t.scale(e, rows[half], 2 * c);
            s[2 * half + 1] = t.scale(e, rows[half], 2 * c + 1);
          }
        }
      }
    }
  });
  return p;
}

}  // namespace mxmoe::cuda::sm90
