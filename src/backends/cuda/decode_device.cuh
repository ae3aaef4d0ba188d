// Device code shared by every GEMM family's small-batch expert kernels (decode.hpp): which rows a
// pass of pairs reads, and the top-k sum that ends the down kernel.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "backends/cuda/decode.hpp"

namespace mxmoe::cuda {

// Threads 0 .. count - 1 look up the pairs first .. first + count - 1 of the sorted pairs into
// s_pairs, and into s_rows the fp32 row each one's GEMM reads (k values): its token's hidden state
// for gate_up, its own intermediate for down.
template <bool kGateUp>
__device__ __forceinline__ void look_up_pass(const DecodeLayerArgs& a, int first, int count, int k, int32_t* s_pairs,
                                             const float** s_rows) {
  if (threadIdx.x >= count) return;
  const int p = a.sorted_pairs[first + threadIdx.x];
  s_pairs[threadIdx.x] = p;
  s_rows[threadIdx.x] =
      kGateUp ? a.x + static_cast<int64_t>(p / a.top_k) * k : a.intermediate_out + static_cast<int64_t>(p) * k;
}

// The top-k sum: once a block has written its pairs' rows of one row tile of H, the block that
// completes the last of a token's k pairs for that tile sums them in slot order, so the sum needs
// no separate pass and is deterministic.
// Called by threads 0 .. kThreads - 1 of the block, all of them, after they wrote pair_out rows
// [row0, row0 + rows) of the `count` pairs in s_pairs; `sync` is their barrier. s_complete holds
// `count` flags of scratch. The per-(token, tile) counters return to zero for the next run.
template <int kThreads, class Sync>
__device__ __forceinline__ void sum_completed_tokens(const DecodeLayerArgs& a, const int32_t* s_pairs, bool* s_complete,
                                                     int count, int tile, int tiles, int row0, int rows, int n,
                                                     Sync sync) {
  __threadfence();  // this thread's pair_out rows, before its block's counters count them
  sync();
  if (threadIdx.x < count) {
    const int token = s_pairs[threadIdx.x] / a.top_k;
    const uint32_t done = atomicAdd(&a.combine_counts[token * tiles + tile], 1u);
    s_complete[threadIdx.x] = done == static_cast<uint32_t>(a.top_k - 1);
    if (s_complete[threadIdx.x]) {
      a.combine_counts[token * tiles + tile] = 0;  // ready for the next run
      __threadfence();
    }
  }
  sync();
  for (int i = 0; i < count; ++i) {
    if (!s_complete[i]) continue;
    const int token = s_pairs[i] / a.top_k;
    for (int col = threadIdx.x; col < rows; col += kThreads) {
      const int h = row0 + col;
      if (h >= n) continue;
      float sum = 0.0f;
      for (int j = 0; j < a.top_k; ++j) {
        const int64_t q = static_cast<int64_t>(token) * a.top_k + j;
        sum += a.expert_weights[q] * __ldcg(a.pair_out + q * n + h);  // other blocks wrote them
      }
      a.out[static_cast<int64_t>(token) * n + h] = sum;
    }
  }
}

}  // namespace mxmoe::cuda
