// Routing on the GPU: router logits, top-k with softmax, and the stable sort of pairs by expert.
#include <algorithm>
#include <cmath>

#include "backends/cuda/cuda_check.hpp"
#include "backends/cuda/device_utils.cuh"
#include "backends/cuda/kernels.hpp"
#include "backends/cuda/routing.cuh"

namespace mxmoe::cuda {

namespace {

// logits[t][e] = x[t] . W[e] + b[e] for the 8 experts and 8 tokens of block (blockIdx.x,
// blockIdx.y).
__global__ void __launch_bounds__(kLogitWarps * 32)
router_logits_kernel(const float* x, const float* weight, const float* bias, int tokens, int hidden, int experts,
                     float* logits) {
  router_logits_block(x, weight, bias, tokens, hidden, experts, logits);
}

// One warp per token.
__global__ void router_topk_kernel(const float* logits, int tokens, int experts, int top_k, int32_t* expert_ids,
                                   float* expert_weights, int32_t* counts) {
  const int warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
  if (warp >= tokens) return;
  warp_top_k(logits, warp, experts, top_k, expert_ids, expert_weights, counts);
}

// Block e first sums the counts of the experts before it (its offsets; the last block also writes
// the totals), then lists expert e's pairs in pair order: a counting sort that is stable, so the
// sorted order does not depend on the order the router's atomics ran in.
__global__ void rank_kernel(const int32_t* expert_ids, const int32_t* counts, int pairs, int experts, int top_k,
                            int tile_rows, int32_t* pair_offsets, int32_t* tile_offsets, int32_t* source_rows,
                            int32_t* position) {
  __shared__ int warp_totals[32];
  __shared__ int base;
  const int e = blockIdx.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  if (warp == 0) {
    const bool last = e == experts - 1;
    int pair_sum = 0, tile_sum = 0;  // over the experts before e
    for (int i = lane; i < e; i += 32) {
      const int c = counts[i];
      pair_sum += c;
      tile_sum += (c + tile_rows - 1) / tile_rows;
    }
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
      pair_sum += __shfl_xor_sync(0xFFFFFFFFu, pair_sum, offset);
      tile_sum += __shfl_xor_sync(0xFFFFFFFFu, tile_sum, offset);
    }
    if (lane == 0) {
      pair_offsets[e] = pair_sum;
      tile_offsets[e] = tile_sum;
      base = pair_sum;
      if (last) {
        pair_offsets[experts] = pair_sum + counts[e];
        tile_offsets[experts] = tile_sum + (counts[e] + tile_rows - 1) / tile_rows;
      }
    }
  }
  __syncthreads();
  for (int start = 0; start < pairs; start += blockDim.x) {
    const int p = start + threadIdx.x;
    const bool mine = p < pairs && expert_ids[p] == e;
    const unsigned ballot = __ballot_sync(0xFFFFFFFFu, mine);
    if (lane == 0) warp_totals[warp] = __popc(ballot);
    __syncthreads();
    int before = __popc(ballot & ((1u << lane) - 1u));
    int chunk_total = 0;
    for (int w = 0; w < warps; ++w) {
      if (w < warp) before += warp_totals[w];
      chunk_total += warp_totals[w];
    }
    if (mine) {
      const int q = base + before;
      source_rows[q] = p / top_k;
      position[p] = q;
    }
    __syncthreads();
    if (threadIdx.x == 0) base += chunk_total;
    __syncthreads();
  }
}

}  // namespace

void launch_router(const float* x, const float* router_weight, const float* router_bias, int tokens, int hidden,
                   int experts, int top_k, float* logits, int32_t* expert_ids, float* expert_weights, int32_t* counts,
                   cudaStream_t stream) {
  if (tokens == 0) return;
  if (top_k > kMaxTopK || hidden % 4 != 0) throw CudaError("router: top-k above 16 or hidden not a multiple of 4");
  const dim3 grid((experts + kLogitWarps - 1) / kLogitWarps, (tokens + kLogitTokens - 1) / kLogitTokens);
  router_logits_kernel<<<grid, kLogitWarps * 32, 0, stream>>>(x, router_weight, router_bias, tokens, hidden, experts,
                                                               logits);
  MXMOE_CUDA_CHECK_LAUNCH("router_logits_kernel");
  constexpr int kWarpsPerBlock = 8;
  router_topk_kernel<<<(tokens + kWarpsPerBlock - 1) / kWarpsPerBlock, kWarpsPerBlock * 32, 0, stream>>>(
      logits, tokens, experts, top_k, expert_ids, expert_weights, counts);
  MXMOE_CUDA_CHECK_LAUNCH("router_topk_kernel");
}

void launch_sort_pairs(const int32_t* expert_ids, const int32_t* counts, int pairs, int experts, int top_k, int tile_rows,
                       int32_t* pair_offsets, int32_t* tile_offsets, int32_t* source_rows, int32_t* position,
                       cudaStream_t stream) {
  rank_kernel<<<experts, 256, 0, stream>>>(expert_ids, counts, pairs, experts, top_k, tile_rows, pair_offsets,
                                           tile_offsets, source_rows, position);
  MXMOE_CUDA_CHECK_LAUNCH("rank_kernel");
}

}  // namespace mxmoe::cuda
