#include "backends/cuda/layout.hpp"

#include "mxmoe/format.hpp"
#include "util/parallel.hpp"

namespace mxmoe::cuda {

PackedWeights pack_weights(const detail::PaddedMxfp4& t, WeightLayout layout) {
  const int64_t groups = t.rows / 8, kblocks = t.cols / 32;
  PackedWeights p;
  p.words.resize(static_cast<size_t>(t.groups * groups * kblocks * 32));
  p.scales.resize(static_cast<size_t>(t.groups * groups * kblocks * 8));
  detail::parallel_for(t.groups * groups, 0, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t e = i / groups, g = i % groups;
      for (int64_t b = 0; b < kblocks; ++b) {
        uint32_t* words = p.words.data() + (i * kblocks + b) * 32;
        for (int lane = 0; lane < 32; ++lane) {
          const int64_t row = g * 8 + lane / 4, k0 = b * kMxBlock;
          uint32_t w = 0;
          for (int j = 0; j < 4; ++j) {
            if (layout == WeightLayout::bf16_mma) {
              const int k = 2 * (lane % 4) + 8 * j;
              w |= static_cast<uint32_t>(t.code(e, row, k0 + k)) << (4 * j);
              w |= static_cast<uint32_t>(t.code(e, row, k0 + k + 1)) << (16 + 4 * j);
            } else {
              const int k = 4 * (lane % 4) + j;
              w |= static_cast<uint32_t>(t.code(e, row, k0 + k)) << (8 * j);
              w |= static_cast<uint32_t>(t.code(e, row, k0 + 16 + k)) << (8 * j + 4);
            }
          }
          words[lane] = w;
        }
        uint8_t* scales = p.scales.data() + (i * kblocks + b) * 8;
        for (int r = 0; r < 8; ++r) scales[r] = t.scale(e, g * 8 + r, b);
      }
    }
  });
  return p;
}

}  // namespace mxmoe::cuda
