// Routing on the GPU: router logits, top-k with softmax, and the stable sort of pairs by expert.
#include <algorithm>
#include <cmath>

#include "backends/cuda/cuda_check.hpp"
#include "backends/cuda/device_utils.cuh"
#include "backends/cuda/kernels.hpp"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/paths.hpp"
#include "backends/cuda/routing.cuh"
#include "backends/cuda/timeline.cuh"

namespace mxmoe::cuda {

namespace {

// The first block of a router zeroes the pair counts that top-k adds to once it has waited for the
// router: no memset node ahead of the router in a captured layer.
__device__ __forceinline__ void zero_counts_in_first_block(int32_t* counts, int experts) {
  if (blockIdx.x != 0 || blockIdx.y != 0 || blockIdx.z != 0) return;
  for (int e = threadIdx.x; e < experts; e += blockDim.x) counts[e] = 0;
}

// Logits of expert blockIdx.x for the 8 tokens along blockIdx.y.
__global__ void __launch_bounds__(kLogitWarps * 32)
router_logits_kernel(const float* x, const float* weight, const float* bias, int tokens, int hidden, int experts,
                     float* logits, int32_t* counts) {
  allow_dependent_launch();  // top-k's blocks start and wait
  if (threadIdx.x == 0) MXMOE_STAMP(router, 0);  // events: 0 start, 1 end
  zero_counts_in_first_block(counts, experts);
  router_logits_block(x, weight, bias, tokens, hidden, experts, logits);
  if (threadIdx.x == 0) MXMOE_STAMP(router, 1);
}

// The router as a tiled GEMM on the tensor cores for larger batches, at fp32 accuracy: each operand
// is split into a tf32 part and a tf32 remainder, and three tf32 MMAs (remainder products first)
// recover what one fp32 product gives, to about 2^-21 relative. The weights arrive split (once, when
// the layer is prepared: launch_split_router_weight); x is split by the warps that read it. A block
// computes 64 tokens x RouterTile experts over one slice of K (blockIdx.z) from shared-memory tiles
// 32 deep, each of its warps 16 tokens x 32 experts. Slices write partial sums [slice][T][E] (the
// bias in slice 0), which the top-k kernel adds in slice order.
// Given x_bf16, the blocks of the first expert tile (which together read x once) also write x
// rounded to bf16, the w4a16 GEMM input, so that no separate pass reads x again; given x_amax, they
// take the largest |x| for the FP8 schemes' tensor scale, so that no separate pass finds it.
constexpr int kTiledDepth = 32;
constexpr int kTiledPitch = kTiledDepth + 4;  // floats per staged row: fragment reads hit 32 distinct banks
// Tiles in shared memory: two are on their way while the warps multiply the third (against one
// tile loaded ahead through registers: 133 -> 88 registers, gpt-oss-120b T=8192 366 -> 345 us under
// Nsight Compute, docs/PERFORMANCE.md).
constexpr int kTiledStages = 3;
constexpr int kTiledTokens = 64;

// A block's tile: 64 tokens x kExperts logits. Wider expert tiles read x fewer times (once per
// expert tile) at the cost of idle warps where experts < kExperts; the launch takes the narrowest
// tile that holds every expert, up to 128 (gpt-oss-120b T=8192 under Nsight Compute, 32 / 64 / 128
// experts per block: 313 / 263 / 247 us; gpt-oss-20b, 32 experts, takes the 32-wide one).
template <int kExperts>
struct RouterTile {
  static constexpr int tokens = kTiledTokens, experts = kExperts;
  static constexpr int threads = tokens / 16 * (experts / 32) * 32;
  // The stages: x tiles, then the weights' tf32 parts, then their remainders.
  struct Stages {
    float x[kTiledStages][tokens][kTiledPitch];
    uint32_t big[kTiledStages][experts][kTiledPitch];
    uint32_t small[kTiledStages][experts][kTiledPitch];
  };
};
// The experts of the tile the launch takes for `experts` (RouterTile).
int router_tile_experts(int experts) { return experts <= 32 ? 32 : experts <= 64 ? 64 : 128; }

// Rows row0.. of a [count][hidden] matrix of 4-byte values, columns k0..k0+31, copied into a staged
// tile by kThreads threads 16 bytes per thread and step, zeros past the last row.
template <int kRows, int kThreads, class T>
__device__ __forceinline__ void copy_tile(T (*tile)[kTiledPitch], const T* m, int row0, int count, int hidden, int k0) {
  static_assert(sizeof(T) == 4 && kRows * kTiledDepth / 4 % kThreads == 0);
  constexpr int kSteps = kRows * kTiledDepth / 4 / kThreads;
#pragma unroll
  for (int i = 0; i < kSteps; ++i) {
    const int index = threadIdx.x + i * kThreads, row = index / 8, quad = index % 8;
    const bool valid = row0 + row < count;
    cp_async_16(&tile[row][4 * quad], valid ? m + static_cast<int64_t>(row0 + row) * hidden + k0 + 4 * quad : m, valid);
  }
}

// The values this thread copied into a staged x tile: rounded to bf16 into x_bf16 ([count][hidden],
// 8-byte stores) when given, and their largest magnitude (rows past the last are zeros).
template <int kRows, int kThreads>
__device__ __forceinline__ float bf16_and_max_of_tile(const float (*tile)[kTiledPitch], uint16_t* x_bf16, int row0,
                                                      int count, int hidden, int k0) {
  constexpr int kSteps = kRows * kTiledDepth / 4 / kThreads;
  float m = 0.0f;
#pragma unroll
  for (int i = 0; i < kSteps; ++i) {
    const int index = threadIdx.x + i * kThreads, row = index / 8, quad = index % 8;
    const float4 v = *reinterpret_cast<const float4*>(&tile[row][4 * quad]);
    m = fmaxf(m, abs_max(v));
    if (x_bf16 != nullptr && row0 + row < count) {
      *reinterpret_cast<uint2*>(x_bf16 + static_cast<int64_t>(row0 + row) * hidden + k0 + 4 * quad) = bf16x4_bits(v);
    }
  }
  return m;
}

// v rounded to tf32, to nearest with ties away from zero: the bits cvt.rna.tf32.f32 gives for a
// finite v, in two integer operations instead of that conversion's about four on sm_90 (the router
// is bound by issued instructions: 20b T=8192 88 -> 82 us). A NaN may come out a number; the
// weights are checked finite, and a token whose x holds a NaN gets a NaN output from the expert
// GEMMs whatever its routing.
__device__ __forceinline__ uint32_t to_tf32(float v) { return (__float_as_uint(v) + 0x1000u) & 0xFFFFE000u; }

// v = big + small, both tf32.
__device__ __forceinline__ void split_tf32(float v, uint32_t& big, uint32_t& small) {
  big = to_tf32(v);
  small = to_tf32(v - __uint_as_float(big));
}

__global__ void split_router_weight_kernel(const float* weight, int64_t count, uint32_t* parts) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < count;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    split_tf32(weight[i], parts[i], parts[count + i]);
  }
}

template <class Tile>
__global__ void __launch_bounds__(Tile::threads)
router_logits_tiled_kernel(const float* x, const uint32_t* weight_parts, const float* bias, int tokens, int hidden,
                           int experts, int slice_depth, float* logits, int32_t* counts, uint16_t* x_bf16,
                           float* x_scale, uint32_t* x_amax) {
  extern __shared__ __align__(16) unsigned char stages_raw[];
  allow_dependent_launch();  // top-k's blocks start and wait
  if (threadIdx.x == 0) MXMOE_STAMP(router, 0);  // events: 0 start, 1 end
  zero_counts_in_first_block(counts, experts);
  auto& stages = *reinterpret_cast<typename Tile::Stages*>(stages_raw);
  auto& xs = stages.x;
  const uint32_t* weight_big = weight_parts;
  const uint32_t* weight_small = weight_parts + static_cast<int64_t>(experts) * hidden;
  const int t0 = blockIdx.y * Tile::tokens, e0 = blockIdx.x * Tile::experts;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  // The warp's 16 tokens and 32 experts of the block's tile.
  constexpr int kTokenGroups = Tile::tokens / 16;
  const int warp_tokens = warp % kTokenGroups * 16, warp_experts = warp / kTokenGroups * 32;
  constexpr int kExpertTiles = 4;  // the warp's 32 experts, 8 per MMA
  float acc[kExpertTiles][4] = {};
  const int k_begin = blockIdx.z * slice_depth, k_end = min(hidden, k_begin + slice_depth);
  const int tiles = (k_end - k_begin) / kTiledDepth;  // slices are whole tiles
  float* partial = logits + static_cast<int64_t>(blockIdx.z) * tokens * experts;
  const bool writes_bf16 = x_bf16 != nullptr && blockIdx.x == 0;
  if (writes_bf16 && blockIdx.y == 0 && blockIdx.z == 0 && threadIdx.x == 0) *x_scale = 1.0f;
  const bool finds_amax = x_amax != nullptr && blockIdx.x == 0;
  float x_max = 0.0f;
  // Tile `tile` of the slice into stage tile % kTiledStages; a group is committed either way, so
  // that the wait below counts groups per tile.
  auto issue = [&](int tile) {
    if (tile < tiles) {
      const int stage = tile % kTiledStages, k0 = k_begin + tile * kTiledDepth;
      copy_tile<Tile::tokens, Tile::threads>(xs[stage], x, t0, tokens, hidden, k0);
      copy_tile<Tile::experts, Tile::threads>(stages.big[stage], weight_big, e0, experts, hidden, k0);
      copy_tile<Tile::experts, Tile::threads>(stages.small[stage], weight_small, e0, experts, hidden, k0);
    }
    cp_async_commit();
  };
#pragma unroll
  for (int tile = 0; tile < kTiledStages - 1; ++tile) issue(tile);
  for (int tile = 0; tile < tiles; ++tile) {
    cp_async_wait<kTiledStages - 2>();
    __syncthreads();  // this tile is staged in every thread's part; every warp is done with the last one's stage
    issue(tile + kTiledStages - 1);  // into the stage of the tile before this one
    const int stage = tile % kTiledStages;
    if (writes_bf16 || finds_amax) {
      x_max = fmaxf(x_max, bf16_and_max_of_tile<Tile::tokens, Tile::threads>(
                               xs[stage], writes_bf16 ? x_bf16 : nullptr, t0, tokens, hidden, k_begin + tile * kTiledDepth));
    }
    // Each tile's products are summed by the tensor cores, then added to the running sums in fp32:
    // long MMA accumulation chains lose more than fp32 additions do.
    float tile_acc[kExpertTiles][4] = {};
#pragma unroll
    for (int k = 0; k < kTiledDepth; k += 8) {
      uint32_t a_big[4], a_small[4];
      const float* a_rows = &xs[stage][warp_tokens][k];
      split_tf32(a_rows[g * kTiledPitch + t], a_big[0], a_small[0]);
      split_tf32(a_rows[(g + 8) * kTiledPitch + t], a_big[1], a_small[1]);
      split_tf32(a_rows[g * kTiledPitch + t + 4], a_big[2], a_small[2]);
      split_tf32(a_rows[(g + 8) * kTiledPitch + t + 4], a_big[3], a_small[3]);
#pragma unroll
      for (int n = 0; n < kExpertTiles; ++n) {
        const int e = warp_experts + n * 8 + g;
        const uint32_t b_big[2] = {stages.big[stage][e][k + t], stages.big[stage][e][k + t + 4]};
        const uint32_t b_small[2] = {stages.small[stage][e][k + t], stages.small[stage][e][k + t + 4]};
        mma_tf32_1688(tile_acc[n], a_small, b_big[0], b_big[1]);
        mma_tf32_1688(tile_acc[n], a_big, b_small[0], b_small[1]);
        mma_tf32_1688(tile_acc[n], a_big, b_big[0], b_big[1]);
      }
    }
#pragma unroll
    for (int n = 0; n < kExpertTiles; ++n) {
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[n][i] += tile_acc[n][i];
    }
  }
  if (finds_amax) {
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) x_max = fmaxf(x_max, __shfl_xor_sync(0xFFFFFFFFu, x_max, offset));
    // Non-negative floats order like their bits (as in launch_abs_max).
    if (lane == 0) atomicMax(x_amax, __float_as_uint(x_max));
  }
  // Accumulator i of n-tile n: token g (i < 2) or g + 8 of the warp's 16, expert 8n + 2t + (i & 1).
#pragma unroll
  for (int n = 0; n < kExpertTiles; ++n) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int token = t0 + warp_tokens + g + (i >= 2 ? 8 : 0), e = e0 + warp_experts + n * 8 + 2 * t + (i & 1);
      if (token < tokens && e < experts) {
        partial[static_cast<int64_t>(token) * experts + e] = blockIdx.z == 0 ? acc[n][i] + bias[e] : acc[n][i];
      }
    }
  }
  if (threadIdx.x == 0) MXMOE_STAMP(router, 1);
}

// Logit `index` of a [T][E] matrix whose K slices lie `slice_stride` apart: the slices added in
// slice order, eight loads in flight at a time.
__device__ __forceinline__ float logit_sum(const float* logits, int64_t index, int64_t slice_stride, int slices) {
  constexpr int kInFlight = 8;
  float sum = 0.0f;
  for (int s0 = 0; s0 < slices; s0 += kInFlight) {
    float v[kInFlight];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) v[u] = s0 + u < slices ? __ldcg(logits + (s0 + u) * slice_stride + index) : 0.0f;
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      if (s0 + u < slices) sum += v[u];
    }
  }
  return sum;
}

// One warp per token; first the tiled router's K slices are added in order (into slice 0).
__global__ void router_topk_kernel(float* logits, int tokens, int experts, int top_k, int slices, int32_t* expert_ids,
                                   float* expert_weights, int32_t* counts) {
  if (threadIdx.x == 0) MXMOE_STAMP(topk, 0);  // events: 0 start, 1 waited, 2 end
  wait_for_previous_grid();  // the logits
  allow_dependent_launch();   // the sort's blocks start and wait
  if (threadIdx.x == 0) MXMOE_STAMP(topk, 1);
  const int warp = (blockIdx.x * blockDim.x + threadIdx.x) / 32;
  if (warp >= tokens) return;
  if (slices > 1) {
    const int64_t stride = static_cast<int64_t>(tokens) * experts;
    for (int e = threadIdx.x % 32; e < experts; e += 32) {
      const int64_t i = static_cast<int64_t>(warp) * experts + e;
      logits[i] = logit_sum(logits, i, stride, slices);
    }
    __syncwarp();
  }
  warp_top_k(logits, warp, experts, top_k, expert_ids, expert_weights, counts);
  if (threadIdx.x == 0) MXMOE_STAMP(topk, 2);
}

// Block e first sums the counts of the experts before it (its offsets; the last block also writes
// the totals), then lists expert e's pairs in pair order: a counting sort that is stable, so the
// sorted order does not depend on the order the router's atomics ran in. Each pass covers
// kRankPairsPerThread consecutive pairs per thread, ranked by one block-wide exclusive scan.
constexpr int kRankPairsPerThread = 8;

__global__ void rank_kernel(const int32_t* expert_ids, const int32_t* counts, int pairs, int experts, int top_k,
                            int tile_rows, int32_t* pair_offsets, int32_t* tile_offsets, int32_t* source_rows,
                            int32_t* position) {
  __shared__ int warp_totals[32];
  __shared__ int base;
  if (threadIdx.x == 0) MXMOE_STAMP(rank, 0);  // events: 0 start, 1 waited, 2 end
  wait_for_previous_grid();  // the routing and its counts
  allow_dependent_launch();   // the next kernel's blocks start and wait
  if (threadIdx.x == 0) MXMOE_STAMP(rank, 1);
  const int e = blockIdx.x;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, warps = blockDim.x / 32;
  if (warp == 0) {
    const bool last = e == experts - 1;
    int pair_sum = 0, tile_sum = 0;  // over the experts before e
    constexpr int kInFlight = 8;       // loads per lane at once: 256 experts per round trip
    for (int i0 = lane; i0 < e; i0 += 32 * kInFlight) {
      int c[kInFlight];
#pragma unroll
      for (int u = 0; u < kInFlight; ++u) c[u] = i0 + 32 * u < e ? counts[i0 + 32 * u] : 0;
#pragma unroll
      for (int u = 0; u < kInFlight; ++u) {
        pair_sum += c[u];
        tile_sum += (c[u] + tile_rows - 1) / tile_rows;
      }
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
  const int per_pass = blockDim.x * kRankPairsPerThread;
  for (int start = 0; start < pairs; start += per_pass) {
    const int first = start + threadIdx.x * kRankPairsPerThread;
    unsigned mine = 0;  // bit j: pair first + j belongs to e
#pragma unroll
    for (int j = 0; j < kRankPairsPerThread; ++j) {
      if (first + j < pairs && expert_ids[first + j] == e) mine |= 1u << j;
    }
    // Exclusive scan of the per-thread counts: within the warp, then over the warps.
    const int count = __popc(mine);
    int inclusive = count;
#pragma unroll
    for (int offset = 1; offset < 32; offset *= 2) {
      const int other = __shfl_up_sync(0xFFFFFFFFu, inclusive, offset);
      if (lane >= offset) inclusive += other;
    }
    if (lane == 31) warp_totals[warp] = inclusive;
    __syncthreads();
    if (warp == 0) {
      const int total = lane < warps ? warp_totals[lane] : 0;
      int scanned = total;
#pragma unroll
      for (int offset = 1; offset < 32; offset *= 2) {
        const int other = __shfl_up_sync(0xFFFFFFFFu, scanned, offset);
        if (lane >= offset) scanned += other;
      }
      if (lane < warps) warp_totals[lane] = scanned - total;  // exclusive, per warp
    }
    __syncthreads();
    int q = base + warp_totals[warp] + inclusive - count;
    for (unsigned bits = mine; bits != 0; bits &= bits - 1) {
      const int p = first + __ffs(bits) - 1;
      source_rows[q] = p / top_k;
      position[p] = q;
      ++q;
    }
    __syncthreads();  // every thread has read base and warp_totals
    if (threadIdx.x == blockDim.x - 1) base = q;
    __syncthreads();
  }
  if (threadIdx.x == 0) MXMOE_STAMP(rank, 2);
}

}  // namespace

namespace {
bool uses_small_router(int tokens, bool small_batch_router) { return small_batch_router && tokens <= kDecodeMaxTokens; }

template <class Tile>
void launch_tiled(dim3 grid, cudaStream_t stream, const float* x, const uint32_t* weight_parts, const float* bias,
                  int tokens, int hidden, int experts, int slice_depth, float* logits, int32_t* counts, uint16_t* x_bf16,
                  float* x_scale, uint32_t* x_amax) {
  const auto kernel = router_logits_tiled_kernel<Tile>;
  MXMOE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, sizeof(typename Tile::Stages)));
  kernel<<<grid, Tile::threads, sizeof(typename Tile::Stages), stream>>>(x, weight_parts, bias, tokens, hidden, experts,
                                                                       slice_depth, logits, counts, x_bf16, x_scale,
                                                                       x_amax);
}
}  // namespace

int router_logit_slices(int tokens, int experts, int hidden, bool small_batch_router) {
  if (uses_small_router(tokens, small_batch_router)) return 1;  // each block adds its own slices
  // Enough blocks for every SM of a large GPU twice over, each slice at least 4 tiles deep.
  constexpr int kTargetBlocks = 264;
  const int tile_experts = router_tile_experts(experts);
  const int blocks = ((tokens + kTiledTokens - 1) / kTiledTokens) * ((experts + tile_experts - 1) / tile_experts);
  const int depth_tiles = hidden / kTiledDepth;
  const int slices = std::clamp((kTargetBlocks + blocks - 1) / blocks, 1, std::max(1, depth_tiles / 4));
  // The slice count the launch really makes (slices of whole tiles).
  const int slice_tiles = (depth_tiles + slices - 1) / slices;
  return (depth_tiles + slice_tiles - 1) / slice_tiles;
}

void launch_split_router_weight(const float* weight, int64_t count, uint32_t* parts, cudaStream_t stream) {
  if (count == 0) return;
  split_router_weight_kernel<<<static_cast<int>(std::min<int64_t>(1024, (count + 255) / 256)), 256, 0, stream>>>(
      weight, count, parts);
  MXMOE_CUDA_CHECK_LAUNCH("split_router_weight_kernel");
}

bool launch_router(const float* x, const float* router_weight, const uint32_t* router_weight_parts,
                   const float* router_bias, int tokens, int hidden, int experts, int top_k, bool small_batch_router,
                   float* logits, int32_t* expert_ids, float* expert_weights, int32_t* counts, uint16_t* x_bf16,
                   float* x_scale, uint32_t* x_amax, bool overlap, cudaStream_t stream) {
  if (tokens == 0) return false;
  if (top_k > kMaxTopK || hidden % kTiledDepth != 0) {
    throw CudaError("router: top-k above 16 or hidden not a multiple of 32");
  }
  const int slices = router_logit_slices(tokens, experts, hidden, small_batch_router);
  const bool small = uses_small_router(tokens, small_batch_router);
  if (small) {
    // The small-batch path's router code, so that both paths route such batches bit for bit alike.
    const dim3 grid(experts, (tokens + kLogitTokens - 1) / kLogitTokens);
    router_logits_kernel<<<grid, kLogitWarps * 32, 0, stream>>>(x, router_weight, router_bias, tokens, hidden, experts,
                                                                 logits, counts);
    MXMOE_CUDA_CHECK_LAUNCH("router_logits_kernel");
  } else {
    const int depth_tiles = hidden / kTiledDepth;
    const int slice_depth = (depth_tiles + slices - 1) / slices * kTiledDepth;
    const int tile_experts = router_tile_experts(experts);
    const dim3 grid((experts + tile_experts - 1) / tile_experts, (tokens + kTiledTokens - 1) / kTiledTokens,
                    (hidden + slice_depth - 1) / slice_depth);
    const auto launch = [&]<class Tile>() {
      launch_tiled<Tile>(grid, stream, x, router_weight_parts, router_bias, tokens, hidden, experts, slice_depth, logits,
                         counts, x_bf16, x_scale, x_amax);
    };
    switch (tile_experts) {
      case 32: launch.operator()<RouterTile<32>>(); break;
      case 64: launch.operator()<RouterTile<64>>(); break;
      default: launch.operator()<RouterTile<128>>(); break;
    }
    MXMOE_CUDA_CHECK_LAUNCH("router_logits_tiled_kernel");
  }
  constexpr int kWarpsPerBlock = 8;
  launch_after_previous(router_topk_kernel, dim3((tokens + kWarpsPerBlock - 1) / kWarpsPerBlock), dim3(kWarpsPerBlock * 32),
                        0, overlap, stream, logits, tokens, experts, top_k, slices, expert_ids, expert_weights, counts);
  MXMOE_CUDA_CHECK_LAUNCH("router_topk_kernel");
  return !small && (x_bf16 != nullptr || x_amax != nullptr);
}

namespace {

__global__ void count_pairs_kernel(int32_t* expert_ids, float* expert_weights, int pairs, int experts, int32_t* counts) {
  const int p = blockIdx.x * blockDim.x + threadIdx.x;
  if (p >= pairs) return;
  int e = expert_ids[p];
  float w = 0.0f;
  if (replace_out_of_range_pair(e, w, experts)) {
    expert_ids[p] = e;
    expert_weights[p] = w;
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
                       bool overlap, cudaStream_t stream) {
  // Each block scans every pair: wide blocks take fewer passes (and barriers) through a large batch.
  const int threads = pairs > 2048 * kRankPairsPerThread ? 1024 : 256;
  launch_after_previous(rank_kernel, dim3(experts), dim3(threads), 0, overlap, stream, expert_ids, counts, pairs, experts,
                        top_k, tile_rows, pair_offsets, tile_offsets, source_rows, position);
  MXMOE_CUDA_CHECK_LAUNCH("rank_kernel");
}

}  // namespace mxmoe::cuda
