// How the Hopper backend's batched GEMMs tile a batch and which tensor cores they run on: plain
// arithmetic, read by the backend's declaration (built without CUDA too, for the oracle's report
// and the tests' bounds) and by the kernels' plan (gemm.cu).
#pragma once

#include <algorithm>
#include <cstdint>

#include "mxmoe/scheme.hpp"

namespace mxmoe::cuda::sm90 {

// The sorted pairs per tile (wgmma's N) for a batch: one tile should hold an expert's pairs where
// it can. Routing spreads pairs unevenly: sized for the mean, about half the experts would need a
// second tile, which reads their weights again; 1.5 x the mean covers most of them. `widest`: 128,
// or 256 where the GEMMs run on FP8 tensor cores (gemm_fp8.cu), which take tiles of 256 once the
// mean passes kWideTileMeanPairs: each decoded weight then meets twice the pairs (20b T=8192 16%
// faster, 120b 9%), while at a mean of 128 the tiles of 128 fill more waves of CTAs and were 7%
// faster (docs/PERFORMANCE.md, twenty-second session).
constexpr double kWideTileMeanPairs = 170.0;
inline int tile_width(int64_t pairs, int64_t active_experts, int widest = 128) {
  const double mean = static_cast<double>(pairs) / static_cast<double>(std::max<int64_t>(active_experts, 1));
  for (int width : {16, 32, 64}) {
    if (1.5 * mean <= width) return width;
  }
  return widest > 128 && mean > kWideTileMeanPairs ? 256 : 128;
}

// FP8-activation schemes' batched GEMMs run on FP8 tensor cores (gemm_fp8.cu) at tiles of 64 to
// 256 pairs; narrower tiles (memory-bound batches) stay on the bf16 ones, measured faster there
// (docs/PERFORMANCE.md, twenty-first session).
constexpr int kFp8MinTileWidth = 64;
inline bool runs_on_fp8_cores(Scheme scheme, int tile_width) {
  return scheme_traits(scheme).activation == ActivationFormat::fp8_e4m3 && tile_width >= kFp8MinTileWidth;
}

}  // namespace mxmoe::cuda::sm90
