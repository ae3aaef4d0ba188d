#include "backends/cuda/layout.hpp"

#include "mxmoe/format.hpp"
#include "util/parallel.hpp"

namespace mxmoe::cuda {

PackedWeights pack_weights(const Mxfp4Tensor& t, WeightLayout layout) {
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
          const int64_t row = g * 8 + lane / 4;
          const uint8_t* packed = t.row_blocks(e, row) + b * kMxBlockBytes;
          uint32_t w = 0;
          for (int j = 0; j < 4; ++j) {
            if (layout == WeightLayout::bf16_mma) {
              const int k = 2 * (lane % 4) + 8 * j;
              w |= static_cast<uint32_t>(mxfp4_code(packed, k)) << (4 * j);
              w |= static_cast<uint32_t>(mxfp4_code(packed, k + 1)) << (16 + 4 * j);
            } else {
              const int k = 4 * (lane % 4) + j;
              w |= static_cast<uint32_t>(mxfp4_code(packed, k)) << (8 * j);
              w |= static_cast<uint32_t>(mxfp4_code(packed, 16 + k)) << (8 * j + 4);
            }
          }
          words[lane] = w;
        }
        uint8_t* scales = p.scales.data() + (i * kblocks + b) * 8;
        for (int r = 0; r < 8; ++r) scales[r] = t.row_scales(e, g * 8 + r)[b];
      }
    }
  });
  return p;
}

}  // namespace mxmoe::cuda
