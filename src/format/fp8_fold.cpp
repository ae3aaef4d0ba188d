#include "format/fp8_fold.hpp"

#include <algorithm>
#include <cmath>

#include "mxmoe/codecs.hpp"
#include "mxmoe/format.hpp"
#include "util/parallel.hpp"

namespace mxmoe::detail {

Fp8Fold fold_to_fp8(const Mxfp4Tensor& t) {
  Fp8Fold f;
  f.groups = t.groups;
  f.rows = t.rows;
  f.cols = t.cols;
  f.codes.resize(static_cast<size_t>(t.groups * t.rows * t.cols));
  f.references.resize(static_cast<size_t>(t.groups * t.rows));
  std::vector<int64_t> inexact(static_cast<size_t>(t.groups * t.rows), 0);
  const int64_t blocks = t.blocks_per_row();
  parallel_for(t.groups * t.rows, 0, 64, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t g = i / t.rows, r = i % t.rows;
      const uint8_t* scales = t.row_scales(g, r);
      const uint8_t* packed = t.row_blocks(g, r);
      const int reference = (blocks > 0 ? *std::max_element(scales, scales + blocks) : 127) - codec::kFoldMaxShift;
      f.references[i] = reference;
      uint8_t* out = f.codes.data() + i * t.cols;
      for (int64_t b = 0; b < blocks; ++b) {
        const int shift = scales[b] - reference;
        inexact[i] += shift < codec::kFoldMinExactShift;
        for (int64_t k = b * kMxBlock; k < (b + 1) * kMxBlock; ++k) {
          out[k] = codec::fp8_fold_code(mxfp4_code(packed, k), std::max(shift, -126));
        }
      }
    }
  });
  for (int64_t n : inexact) f.inexact_blocks += n;
  return f;
}

double folded_value(const Fp8Fold& fold, int64_t group, int64_t row, int64_t k) {
  const int64_t i = group * fold.rows + row;
  return static_cast<double>(codec::fp8_e4m3_value(fold.codes[static_cast<size_t>(i * fold.cols + k)])) *
         std::ldexp(1.0, fold.references[static_cast<size_t>(i)] - 127);
}

}  // namespace mxmoe::detail
