// Where the Hopper backend's small-batch path ends: plain arithmetic, read by the backend's
// declaration (built without CUDA too, for the oracle's report) and by the backend itself.
#pragma once

namespace mxmoe::cuda::sm90 {

// Batches of up to this many tokens take the small-batch kernels (small_batch.cu), larger ones the
// wgmma pipeline. Measured crossover on an H200: docs/PERFORMANCE.md.
constexpr int kSmallBatchTokens = 16;

}  // namespace mxmoe::cuda::sm90
