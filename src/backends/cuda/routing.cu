// Routing on the GPU: router logits, top-k with softmax, and the stable sort of pairs by expert.
#include <algorithm>
#include <cmath>

#include "backends/cuda/cuda_check.hpp"
#include "backends/cuda/device_utils.cuh"
#include "backends/cuda/kernels.hpp"
#include "backends/cuda/paths.hpp"
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

// The router as a tiled fp32 GEMM for larger batches: a block computes 64 tokens x 32 experts over
// one slice of K (blockIdx.z) from shared-memory tiles 32 deep, each thread 4 x 4 logits, each
// summed in k order. Every router row and token row is read once per block instead of once per
// (expert, token) group. Slices write partial sums [slice][T][E] (the bias in slice 0), which the
// top-k kernel adds in slice order.
constexpr int kTiledTokens = 64, kTiledExperts = 32, kTiledDepth = 32, kTiledThreads = 128;

// Rows row0.. of a [count][hidden] matrix, columns k0..k0+31, into shared memory k-major (zeros
// past the last row), 16 bytes per load.
template <int kRows>
__device__ __forceinline__ void stage_transposed(const float* m, int row0, int count, int hidden, int k0,
                                                 float (&tile)[kTiledDepth][kRows + 4]) {
#pragma unroll
  for (int i = 0; i < kRows * kTiledDepth / 4 / kTiledThreads; ++i) {
    const int index = threadIdx.x + i * kTiledThreads, row = index / 8, quad = index % 8;
    float4 v = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    if (row0 + row < count) v = *reinterpret_cast<const float4*>(m + static_cast<int64_t>(row0 + row) * hidden + k0 + 4 * quad);
    tile[4 * quad][row] = v.x;
    tile[4 * quad + 1][row] = v.y;
    tile[4 * quad + 2][row] = v.z;
    tile[4 * quad + 3][row] = v.w;
  }
}

__global__ void __launch_bounds__(kTiledThreads)
router_logits_tiled_kernel(const float* x, const float* weight, const float* bias, int tokens, int hidden, int experts,
                           int slice_depth, float* logits) {
  __shared__ __align__(16) float xs[kTiledDepth][kTiledTokens + 4];  // k-major; rows padded, 16-byte aligned
  __shared__ __align__(16) float ws[kTiledDepth][kTiledExperts + 4];
  const int t0 = blockIdx.y * kTiledTokens, e0 = blockIdx.x * kTiledExperts;
  const int tx = threadIdx.x % 8, ty = threadIdx.x / 8;  // experts 4tx.., tokens 4ty..
  float acc[4][4] = {};
  const int k_begin = blockIdx.z * slice_depth, k_end = min(hidden, k_begin + slice_depth);
  float* partial = logits + static_cast<int64_t>(blockIdx.z) * tokens * experts;
  for (int k0 = k_begin; k0 < k_end; k0 += kTiledDepth) {
    stage_transposed<kTiledTokens>(x, t0, tokens, hidden, k0, xs);
    stage_transposed<kTiledExperts>(weight, e0, experts, hidden, k0, ws);
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kTiledDepth; ++k) {
      const float4 a = *reinterpret_cast<const float4*>(&xs[k][4 * ty]);
      const float4 b = *reinterpret_cast<const float4*>(&ws[k][4 * tx]);
      const float av[4] = {a.x, a.y, a.z, a.w}, bv[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
      for (int i = 0; i < 4; ++i) {
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
      }
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int t = t0 + 4 * ty + i;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const int e = e0 + 4 * tx + j;
      if (t < tokens && e < experts) {
        partial[static_cast<int64_t>(t) * experts + e] = blockIdx.z == 0 ? acc[i][j] + bias[e] : acc[i][j];
      }
    }
  }
}

// One warp per token; first the logits' K slices are added in order (into slice 0).
__global__ void router_topk_kernel(float* logits, int tokens, int experts, int top_k, int slices, int32_t* expert_ids,
                                   float* expert_weights, int32_t* counts) {
  const int warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
  if (warp >= tokens) return;
  if (slices > 1) {
    float* row = logits + static_cast<int64_t>(warp) * experts;
    for (int e = threadIdx.x % 32; e < experts; e += 32) {
      float sum = row[e];
      for (int s = 1; s < slices; ++s) sum += row[static_cast<int64_t>(s) * tokens * experts + e];
      row[e] = sum;
    }
    __syncwarp();
  }
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

int router_logit_slices(int tokens, int experts, int hidden) {
  if (tokens <= kDecodeMaxTokens) return 0;
  // Enough blocks for every SM of a large GPU twice over, each slice at least 4 tiles deep.
  constexpr int kTargetBlocks = 264;
  const int blocks = ((tokens + kTiledTokens - 1) / kTiledTokens) * ((experts + kTiledExperts - 1) / kTiledExperts);
  const int depth_tiles = hidden / kTiledDepth;
  const int slices = std::clamp((kTargetBlocks + blocks - 1) / blocks, 1, std::max(1, depth_tiles / 4));
  // The slice count the launch really makes (slices of whole tiles).
  const int slice_tiles = (depth_tiles + slices - 1) / slices;
  return (depth_tiles + slice_tiles - 1) / slice_tiles;
}

void launch_router(const float* x, const float* router_weight, const float* router_bias, int tokens, int hidden,
                   int experts, int top_k, float* logits, int32_t* expert_ids, float* expert_weights, int32_t* counts,
                   cudaStream_t stream) {
  if (tokens == 0) return;
  if (top_k > kMaxTopK || hidden % kTiledDepth != 0) {
    throw CudaError("router: top-k above 16 or hidden not a multiple of 32");
  }
  const int slices = router_logit_slices(tokens, experts, hidden);
  if (slices == 0) {
    // The small-batch path's router code, so that both paths route such batches bit for bit alike.
    const dim3 grid((experts + kLogitWarps - 1) / kLogitWarps, (tokens + kLogitTokens - 1) / kLogitTokens);
    router_logits_kernel<<<grid, kLogitWarps * 32, 0, stream>>>(x, router_weight, router_bias, tokens, hidden, experts,
                                                                 logits);
    MXMOE_CUDA_CHECK_LAUNCH("router_logits_kernel");
  } else {
    const int depth_tiles = hidden / kTiledDepth;
    const int slice_depth = (depth_tiles + slices - 1) / slices * kTiledDepth;
    const dim3 grid((experts + kTiledExperts - 1) / kTiledExperts, (tokens + kTiledTokens - 1) / kTiledTokens,
                    (hidden + slice_depth - 1) / slice_depth);
    router_logits_tiled_kernel<<<grid, kTiledThreads, 0, stream>>>(x, router_weight, router_bias, tokens, hidden,
                                                                    experts, slice_depth, logits);
    MXMOE_CUDA_CHECK_LAUNCH("router_logits_tiled_kernel");
  }
  constexpr int kWarpsPerBlock = 8;
  router_topk_kernel<<<(tokens + kWarpsPerBlock - 1) / kWarpsPerBlock, kWarpsPerBlock * 32, 0, stream>>>(
      logits, tokens, experts, top_k, std::max(slices, 1), expert_ids, expert_weights, counts);
  MXMOE_CUDA_CHECK_LAUNCH("router_topk_kernel");
}

namespace {

__global__ void count_pairs_kernel(int32_t* expert_ids, float* expert_weights, int pairs, int experts, int32_t* counts) {
  const int p = blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= pairs) return;
  int e = expert_ids[p];
  if (e < 0 || e >= experts) {
    e = expert_ids[p] = 0;
    expert_weights[p] = __int_as_float(0x7FC00000);  // NaN
  }
  atomicAdd(&counts[e], 1);
}

}  // namespace

void launch_count_pairs(int32_t* expert_ids, float* expert_weights, int pairs, int experts, int32_t* counts,
                        cudaStream_t stream) {
  if (pairs == 0) return;
  count_pairs_kernel<<<(pairs + 255) / 256, 256, 0, stream>>>(expert_ids, expert_weights, pairs, experts, counts);
  MXMOE_CUDA_CHECK_LAUNCH("count_pairs_kernel");
}

void launch_sort_pairs(const int32_t* expert_ids, const int32_t* counts, int pairs, int experts, int top_k, int tile_rows,
                       int32_t* pair_offsets, int32_t* tile_offsets, int32_t* source_rows, int32_t* position,
                       cudaStream_t stream) {
  // Each block scans every pair: wide blocks take fewer steps (and barriers) through a large batch.
  const int threads = pairs > 4096 ? 1024 : 256;
  rank_kernel<<<experts, threads, 0, stream>>>(expert_ids, counts, pairs, experts, top_k, tile_rows, pair_offsets,
                                           tile_offsets, source_rows, position);
  MXMOE_CUDA_CHECK_LAUNCH("rank_kernel");
}

}  // namespace mxmoe::cuda
