// Routing on the GPU: router logits, top-k with softmax, and the stable sort of pairs by expert.
#include <algorithm>

#include "backends/cuda/cuda_check.hpp"
#include "backends/cuda/device_utils.cuh"
#include "backends/cuda/kernels.hpp"

namespace mxmoe::cuda {

namespace {

constexpr int kRouterThreads = 128;
constexpr int kMaxExperts = 1024;

// A block routes `tokens_per_block` tokens, so each router row is read once for all of them.
// Each lane sums a strided slice in a fixed order and the warp adds the slices as a fixed tree:
// results do not depend on scheduling.
__global__ void __launch_bounds__(kRouterThreads)
router_kernel(const float* x, const float* weight, const float* bias, int tokens, int hidden, int experts, int top_k,
              int tokens_per_block, int32_t* expert_ids, float* expert_weights, int32_t* counts) {
  extern __shared__ float shared[];
  float* xs = shared;                                    // [tokens_per_block][hidden]
  float* logits = shared + tokens_per_block * hidden;    // [tokens_per_block][experts]
  const int t0 = blockIdx.x * tokens_per_block;
  const int count = min(tokens_per_block, tokens - t0);
  for (int i = threadIdx.x; i < count * hidden; i += blockDim.x) xs[i] = x[static_cast<int64_t>(t0) * hidden + i];
  __syncthreads();

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  for (int e = warp; e < experts; e += warps) {
    const float* w = weight + static_cast<int64_t>(e) * hidden;
    for (int t = 0; t < count; ++t) {
      float sum = 0.0f;
      for (int h = lane; h < hidden; h += 32) sum += xs[t * hidden + h] * w[h];
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xFFFFFFFFu, sum, offset);
      if (lane == 0) logits[t * experts + e] = sum + bias[e];
    }
  }
  __syncthreads();

  if (threadIdx.x < count) {
    const int t = threadIdx.x;
    const float* l = logits + t * experts;
    int chosen[16];
    float top[16];
    for (int j = 0; j < top_k; ++j) {
      int best = -1;
      for (int e = 0; e < experts; ++e) {
        bool taken = false;
        for (int i = 0; i < j; ++i) taken |= chosen[i] == e;
        if (!taken && (best < 0 || l[e] > l[best])) best = e;  // strict: ties keep the lower index
      }
      chosen[j] = best;
      top[j] = l[best];
    }
    float denominator = 0.0f;
    for (int j = 0; j < top_k; ++j) denominator += expf(top[j] - top[0]);
    const int64_t base = static_cast<int64_t>(t0 + t) * top_k;
    for (int j = 0; j < top_k; ++j) {
      expert_ids[base + j] = chosen[j];
      expert_weights[base + j] = expf(top[j] - top[0]) / denominator;
      atomicAdd(&counts[chosen[j]], 1);
    }
  }
}

__global__ void offsets_kernel(const int32_t* counts, int experts, int tile_rows, int32_t* pair_offsets,
                               int32_t* tile_offsets) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  int pairs = 0, tiles = 0;
  for (int e = 0; e < experts; ++e) {
    pair_offsets[e] = pairs;
    tile_offsets[e] = tiles;
    pairs += counts[e];
    tiles += (counts[e] + tile_rows - 1) / tile_rows;
  }
  pair_offsets[experts] = pairs;
  tile_offsets[experts] = tiles;
}

// Block e lists expert e's pairs in pair order: a counting sort that is stable, so the sorted order
// does not depend on the order the router's atomics ran in.
__global__ void rank_kernel(const int32_t* expert_ids, int pairs, int top_k, const int32_t* pair_offsets,
                            int32_t* source_rows, int32_t* position) {
  __shared__ int warp_totals[32];
  __shared__ int base;
  const int e = blockIdx.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  if (threadIdx.x == 0) base = pair_offsets[e];
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
                   int experts, int top_k, int32_t* expert_ids, float* expert_weights, int32_t* counts,
                   cudaStream_t stream) {
  if (tokens == 0) return;
  if (experts > kMaxExperts || top_k > 16) throw CudaError("router: at most 1024 experts and top-k 16 are supported");
  const int per_token = (hidden + experts) * static_cast<int>(sizeof(float));
  const int tokens_per_block = std::max(1, std::min(4, (40 * 1024) / per_token));
  const size_t smem = static_cast<size_t>(tokens_per_block) * per_token;
  if (smem > 48 * 1024) {
    MXMOE_CUDA_CHECK(cudaFuncSetAttribute(router_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  }
  const int blocks = (tokens + tokens_per_block - 1) / tokens_per_block;
  router_kernel<<<blocks, kRouterThreads, smem, stream>>>(x, router_weight, router_bias, tokens, hidden, experts, top_k,
                                                          tokens_per_block, expert_ids, expert_weights, counts);
  MXMOE_CUDA_CHECK_LAUNCH("router_kernel");
}

void launch_sort_pairs(const int32_t* expert_ids, const int32_t* counts, int pairs, int experts, int top_k, int tile_rows,
                       int32_t* pair_offsets, int32_t* tile_offsets, int32_t* source_rows, int32_t* position,
                       cudaStream_t stream) {
  offsets_kernel<<<1, 32, 0, stream>>>(counts, experts, tile_rows, pair_offsets, tile_offsets);
  MXMOE_CUDA_CHECK_LAUNCH("offsets_kernel");
  if (pairs == 0) return;
  rank_kernel<<<experts, 256, 0, stream>>>(expert_ids, pairs, top_k, pair_offsets, source_rows, position);
  MXMOE_CUDA_CHECK_LAUNCH("rank_kernel");
}

}  // namespace mxmoe::cuda
