// Element-wise steps around the strip products; plain loops the compiler vectorizes.
#include <algorithm>
#include <cmath>

#include "backends/cpu/kernels.hpp"
#include "mxmoe/codecs.hpp"

namespace mxmoe::cpu {

void swiglu_strip(const float* C, int64_t ldc, int64_t M, const float* row_scales, const float* bias, float alpha,
                  float limit, float* y, int64_t ldy) {
  constexpr int kUnits = kStripRows / 2;
  for (int64_t m = 0; m < M; ++m) {
    const float* c = C + m * ldc;
    const float scale = row_scales[m];
    float* out = y + m * ldy;
    for (int u = 0; u < kUnits; ++u) {
      out[u] = codec::swiglu(c[u] * scale + bias[u], c[kUnits + u] * scale + bias[kUnits + u], alpha, limit);
    }
  }
}

void scale_bias_strip(float* C, int64_t ldc, int64_t M, const float* row_scales, const float* bias) {
  for (int64_t m = 0; m < M; ++m) {
    float* c = C + m * ldc;
    const float scale = row_scales[m];
    for (int n = 0; n < kStripRows; ++n) c[n] = c[n] * scale + bias[n];
  }
}

void weighted_sum_rows(const float* rows, int64_t cols, const int64_t* index, const float* weights, int k,
                       int64_t begin, int64_t end, float* out) {
  for (int64_t t = begin; t < end; ++t) {
    float* o = out + t * cols;
    std::fill(o, o + cols, 0.0f);
    for (int j = 0; j < k; ++j) {
      const float w = weights[t * k + j];
      const float* r = rows + index[t * k + j] * cols;
      for (int64_t c = 0; c < cols; ++c) o[c] += w * r[c];
    }
  }
}

}  // namespace mxmoe::cpu
