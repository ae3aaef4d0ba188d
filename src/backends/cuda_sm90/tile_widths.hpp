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
// mean passes kWideTileMeanPairs: each decoded weight then meets twice the pairs (20b T=8192, a
// mean of 1024, 5% faster), while below it the tiles of 128, with three consumer warpgroups, fill
// more waves of CTAs (a mean of 256: 20b T=2048 6% faster, 120b T=8192 the same; a mean of 512,
// 20b T=4096, the same; docs/PERFORMANCE.md, twenty-sixth session).
constexpr double kWideTileMeanPairs = 384.0;
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
