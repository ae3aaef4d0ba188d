// The W4A8 scale fold of a whole MXFP4 tensor (codecs.hpp: fp8_fold_code): E4M3 weights with each
// block's E8M0 scale folded in relative to a reference code per row, and the row factors applied
// after the MMA. The host definition the FP8 kernels' packer and tests are held to.
#pragma once

#include <cstdint>
#include <vector>

#include "mxmoe/moe.hpp"

namespace mxmoe::detail {

struct Fp8Fold {
  int64_t groups = 0, rows = 0, cols = 0;
  std::vector<uint8_t> codes;     // [groups][rows][cols] E4M3: e2m1 x 2^(block scale code - reference)
  std::vector<int> references;    // [groups][rows]: the row's products are scaled by 2^(reference - 127)
  int64_t inexact_blocks = 0;     // blocks more than 14 binades below their row's largest: rounded
};

// The reference of a row is its largest block scale code minus kFoldMaxShift, so no folded value
// saturates; a row is folded exactly when its smallest block code is within 14 of its largest.
Fp8Fold fold_to_fp8(const Mxfp4Tensor& t);

// The folded weight (group, row, k) as the MMA sees it, times its row factor: equal to the MXFP4
// value for blocks folded exactly.
double folded_value(const Fp8Fold& fold, int64_t group, int64_t row, int64_t k);

}  // namespace mxmoe::detail
