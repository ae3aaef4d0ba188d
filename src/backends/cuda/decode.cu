// The small-batch path (decode.hpp): route, gate_up with SwiGLU, down with the top-k sum.
#include "backends/cuda/decode.hpp"

#include <cuda_bf16.h>

#include <algorithm>
#include <type_traits>

#include "backends/cuda/cuda_check.hpp"
#include "backends/cuda/device_utils.cuh"
#include "backends/cuda/decode_device.cuh"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/routing.cuh"
#include "backends/cuda/timeline.cuh"
#include "mxmoe/codecs.hpp"

namespace mxmoe::cuda {

namespace {

constexpr int kThreads = 256;     // eight warps
constexpr int kChunkTokens = 8;   // tokens per pass over an item's weights: the rows of the MMA's M used
constexpr int kPrefetch = 8;      // k blocks of weights in flight per warp ahead of the one in use
constexpr int kRouteThreads = kLogitWarps * 32;

// The staged token rows: GEMM-input format per scheme, each row padded by 16 bytes so the eight
// rows an MMA fragment reads sit in distinct banks.
__host__ __device__ constexpr int staged_row_bytes(int k, bool fp8) { return k * (fp8 ? 1 : 2) + 16; }

// ---------------------------------------------------------------------------------------------
// 1. Route.

// FP8 schemes: the largest |x| of each of the block's kLogitTokens tokens (along blockIdx.y), from a
// column of blocks beside the router's, so that it costs the route kernel no time: w4a8_token's
// scale per token (row_scales[t], for gate_up and the caller), w4a8's over the tensor
// (amax_bits[0]). Every thread has its loads of all the tokens in flight at once. The column's first
// block also readies what gate_up gathers: w4a8's largest intermediate, w4a8_token's per pair, start
// from zero (the previous run's down has read them).
__device__ __forceinline__ void hidden_magnitudes_block(const DecodeLayerArgs& a) {
  const bool per_token = a.scheme == Scheme::w4a8_token;
  if (blockIdx.y == 0) {
    if (per_token) {
      for (int p = threadIdx.x; p < a.tokens * a.top_k; p += kRouteThreads) a.pair_max_bits[p] = 0;
    } else if (threadIdx.x == 0) {
      a.control->amax_bits[1] = 0;
    }
  }
  const int t0 = blockIdx.y * kLogitTokens, count = min(kLogitTokens, a.tokens - t0);
  const int quads = a.hidden / 4;  // a multiple of 32, as the router takes it
  const float4* xs = reinterpret_cast<const float4*>(a.x + static_cast<int64_t>(t0) * a.hidden);
  float m[kLogitTokens] = {};
#pragma unroll 4
  for (int q = threadIdx.x; q < quads; q += kRouteThreads) {
#pragma unroll
    for (int t = 0; t < kLogitTokens; ++t) {
      if (t >= count) continue;
      const float4 v = xs[static_cast<int64_t>(t) * quads + q];
      m[t] = fmaxf(m[t], abs_max(v));
    }
  }
  __shared__ uint32_t warp_max[kRouteThreads / 32][kLogitTokens];
#pragma unroll
  for (int t = 0; t < kLogitTokens; ++t) {
    const uint32_t most = __reduce_max_sync(0xFFFFFFFFu, __float_as_uint(m[t]));  // non-negative: bits order as values
    if (threadIdx.x % 32 == 0) warp_max[threadIdx.x / 32][t] = most;
  }
  __syncthreads();
  if (per_token && threadIdx.x < count) {
    uint32_t most = 0;
#pragma unroll
    for (int w = 0; w < kRouteThreads / 32; ++w) most = max(most, warp_max[w][threadIdx.x]);
    a.row_scales[t0 + threadIdx.x] = fp8_scale_from_bits(most);
  } else if (!per_token && threadIdx.x == 0) {
    uint32_t most = 0;
    for (int t = 0; t < count; ++t) {
#pragma unroll
      for (int w = 0; w < kRouteThreads / 32; ++w) most = max(most, warp_max[w][t]);
    }
    atomicMax(&a.control->amax_bits[0], most);
  }
}

// The grid: a block per (expert, kLogitTokens tokens) for the logits (none for the caller's
// routing), and for the FP8 schemes one more column of blocks for the hidden states' magnitudes.
__global__ void __launch_bounds__(kRouteThreads) decode_route_kernel(DecodeLayerArgs a) {
  allow_dependent_launch();
  if (threadIdx.x == 0) MXMOE_STAMP(decode_route, 0);  // events: 0 start, 1 logits (or magnitudes) written
  const bool fp8 = a.scheme == Scheme::w4a8 || a.scheme == Scheme::w4a8_token;
  if (fp8 && blockIdx.x == gridDim.x - 1) {
    hidden_magnitudes_block(a);
  } else {
    router_logits_block(a.x, a.router_weight, a.router_bias, a.tokens, a.hidden, a.experts, a.logits);
  }
  if (threadIdx.x == 0) MXMOE_STAMP(decode_route, 1);
}

// ---------------------------------------------------------------------------------------------
// 2 and 3. Expert GEMMs over (active expert, row tile) items.

template <Scheme S>
struct Act {
  static constexpr bool per_token = S == Scheme::w4a8_token;
  static constexpr bool fp8 = per_token || S == Scheme::w4a8;
};

// Quantizes `count` rows of `k` fp32 values (rows[r]) into the staged format of the scheme: w4a8
// under the tensor's `scale`, w4a8_token under each row's own (row_scales[r]).
template <Scheme S>
__device__ __forceinline__ void stage_rows(unsigned char* staged, int row_bytes, const float* const* rows, int count,
                                           int k, float scale, const float* row_scales) {
  if constexpr (S == Scheme::w4a4) {
    // The OCP MX rule per 32-value block, one warp per block; values stored dequantized as bf16.
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, blocks_per_row = k / 32;
    for (int b = warp; b < count * blocks_per_row; b += kThreads / 32) {
      const int r = b / blocks_per_row, kb = b % blocks_per_row;
      const float v = rows[r][kb * 32 + lane];
      float amax = fabsf(v);
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2) amax = fmaxf(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, offset));
      reinterpret_cast<uint16_t*>(staged + r * row_bytes)[kb * 32 + lane] =
          codec::bf16_bits(codec::mx_round_trip(v, codec::mx_shared_exponent(amax)));
    }
  } else {
    const int quads = k / 4;
    const codec::Fp8Divisor tensor_divisor(scale);  // w4a8's, the same for every row
    for (int i = threadIdx.x; i < count * quads; i += kThreads) {
      const int r = i / quads, c = i % quads;
      const float4 v = reinterpret_cast<const float4*>(rows[r])[c];
      if constexpr (Act<S>::fp8) {
        const codec::Fp8Divisor divisor = Act<S>::per_token ? codec::Fp8Divisor(row_scales[r]) : tensor_divisor;
        const uint32_t q = fp8_e4m3_codes_x2(divisor.quotient(v.x), divisor.quotient(v.y)) |
                           fp8_e4m3_codes_x2(divisor.quotient(v.z), divisor.quotient(v.w)) << 16;
        reinterpret_cast<uint32_t*>(staged + r * row_bytes)[c] = q;
      } else {
        reinterpret_cast<uint2*>(staged + r * row_bytes)[c] = bf16x4_bits(v);
      }
    }
  }
}

// The two B fragments' worth of one packed word (8 weight rows x 32 k, layout.hpp), decoded.
template <bool kFoldedScale>
__device__ __forceinline__ void decode_bf16_word(uint32_t word, uint32_t scale_code, uint32_t (&b)[4]) {
  if constexpr (kFoldedScale) {
    const __nv_bfloat162 m = e8m0_times_2pow126_bf16x2(scale_code);
#pragma unroll
    for (int r = 0; r < 4; ++r) b[r] = bf16x2_bits(__hmul2(bits_bf16x2(e2m1_pair_bits(word >> (4 * r))), m));
  } else {
    const __nv_bfloat162 scale2 = e8m0_bf16x2(scale_code);
#pragma unroll
    for (int r = 0; r < 4; ++r) b[r] = decode_bf16x2(word >> (4 * r), scale2);
  }
}

__device__ __forceinline__ uint32_t load_scale(const uint8_t* p, bool fp8) {
  return fp8 ? __ldg(reinterpret_cast<const uint16_t*>(p)) : __ldg(p);
}

// Items of kGroups row groups (8 weight rows each) of one active expert. Each warp streams two
// row groups over a 1/kSplit slice of K, so the tokens' fragments it reads from shared memory serve
// both; kSplit slices of the same groups are added in slice order at the end.
template <Scheme S, bool kGateUp, int kGroups, int kSplit, bool kFoldedScale>
__global__ void __launch_bounds__(kThreads, 2) decode_expert_kernel(DecodeLayerArgs a) {
  constexpr int kWarpPairs = kGroups / 2;
  static_assert(kWarpPairs * kSplit * 32 == kThreads);
  static_assert(kDecodeMaxTopK <= kMaxTopK);
  constexpr bool fp8 = Act<S>::fp8, per_token = Act<S>::per_token;
  constexpr int kBlockBytes = fp8 ? 32 : 64;  // one k block of one staged token row
  extern __shared__ __align__(16) unsigned char staged[];
  __shared__ const float* s_rows[kChunkTokens];
  __shared__ int32_t s_pairs[kChunkTokens];
  __shared__ bool s_complete[kChunkTokens];
  __shared__ float s_row_scale[kChunkTokens];  // w4a8_token: the staged rows' scales
  __shared__ float2 s_partial[kSplit > 1 ? kSplit - 1 : 1][kGroups][32];

  // gate_up reads the route's logits; down's routing reads them too (final before gate_up got past
  // its own wait), and it waits for gate_up only before it stages the intermediates.
  if constexpr (kGateUp) wait_for_previous_grid();
  allow_dependent_launch();
  const int n = kGateUp ? 2 * a.intermediate : a.hidden;
  const int k = kGateUp ? a.hidden : a.intermediate;
  const int kblocks = k / 32;
  const int row_bytes = staged_row_bytes(k, fp8);
  const BlockRouting routing = BlockRouting::at(staged + kChunkTokens * row_bytes, a.tokens, a.experts, a.top_k);
  route_in_block<kThreads>(a, routing, kGateUp && blockIdx.x == 0);
  const int tiles = (n + 8 * kGroups - 1) / (8 * kGroups);
  const int items = routing.active() * tiles;
  const uint32_t* words = kGateUp ? a.gate_up_words : a.down_words;
  const uint8_t* scales = kGateUp ? a.gate_up_scales : a.down_scales;
  const float* bias = kGateUp ? a.gate_up_bias : a.down_bias;
  // w4a8: tokens enter gate_up scaled by the hidden states' scale; the intermediate's scale comes
  // from the largest value gate_up wrote (read once gate_up is done). w4a8_token: each staged row
  // under its own (s_row_scale); the tensor scales are 1.
  constexpr bool per_tensor = fp8 && !per_token;
  float a_scale = per_tensor && kGateUp ? fp8_scale_from_bits(__ldcg(&a.control->amax_bits[0])) : 1.0f;
  if (blockIdx.x == 0 && threadIdx.x == 0) {  // the scales, for the caller
    if constexpr (kGateUp) {
      a.tensor_scales[0] = a_scale;
    } else if constexpr (per_tensor) {
      wait_for_previous_grid();
      a.tensor_scales[1] = fp8_scale_from_bits(__ldcg(&a.control->amax_bits[1]));
      a.control->amax_bits[0] = 0;  // every gate_up block has read it: zero for the next run
    } else {
      a.tensor_scales[1] = 1.0f;
    }
  }

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, c = lane % 4;
  const int pair_in_item = warp % kWarpPairs, split = warp / kWarpPairs;
  const int per_split = (kblocks + kSplit - 1) / kSplit;
  const int kb_begin = min(kblocks, split * per_split), kb_end = min(kblocks, kb_begin + per_split);
  const int nkb = kb_end - kb_begin;
  // The lane's token row (lane / 4) and fragment column, at this slice's first k block.
  const int a_offset = (lane / 4) * row_bytes + kb_begin * kBlockBytes + (fp8 ? 4 * c : 4 * c);
  float intermediate_max = 0.0f;

  // Each block takes a contiguous run of items: consecutive items mostly share an expert, whose
  // staged tokens then stay.
  const int per_block = (items + gridDim.x - 1) / gridDim.x;
  const int item_begin = min(items, blockIdx.x * per_block), item_end = min(items, item_begin + per_block);
  int staged_first = -1;  // the sorted-pair index of the staged chunk
  for (int item = item_begin; item < item_end; ++item) {
    const int slot = item / tiles, tile = item % tiles;
    const int expert = routing.experts()[slot];
    const int group0 = tile * kGroups + 2 * pair_in_item;
    const bool has_rows[2] = {group0 * 8 < n, (group0 + 1) * 8 < n};
    // A missing second group (N not a multiple of 16) streams the first one again, unused.
    const int64_t base0 = (static_cast<int64_t>(expert) * (n / 8) + min(group0, n / 8 - 1)) * kblocks + kb_begin;
    const int64_t base1 = (static_cast<int64_t>(expert) * (n / 8) + min(group0 + 1, n / 8 - 1)) * kblocks + kb_begin;
    const uint32_t* w[2] = {words + base0 * 32 + lane, words + base1 * 32 + lane};
    const int scale_lane = fp8 ? 2 * c : lane / 4;
    const uint8_t* sc[2] = {scales + base0 * 8 + scale_lane, scales + base1 * 8 + scale_lane};

    const int last = routing.pair_begin()[slot + 1];
    for (int first = routing.pair_begin()[slot]; first < last; first += kChunkTokens) {
      const int count = min(kChunkTokens, last - first);
      // The first weights are on their way while the tokens are staged.
      uint32_t wq[2][kPrefetch], sq[2][kPrefetch];
#pragma unroll
      for (int d = 0; d < kPrefetch; ++d) {
        if (d < nkb) {
#pragma unroll
          for (int g = 0; g < 2; ++g) {
            wq[g][d] = load_stream_u32(w[g] + d * 32);
            sq[g][d] = load_scale(sc[g] + d * 8, fp8);
          }
        }
      }
      if (first != staged_first) {
        __syncthreads();  // the previous chunk's readers are done with the staged rows
        if constexpr (!kGateUp) {
          wait_for_previous_grid();  // gate_up's intermediates and their largest magnitude
          if (per_tensor) a_scale = fp8_scale_from_bits(__ldcg(&a.control->amax_bits[1]));
        }
        look_up_pass<kGateUp>(a, routing, first, count, k, s_pairs, s_rows, per_token ? s_row_scale : nullptr);
        __syncthreads();
        stage_rows<S>(staged, row_bytes, s_rows, count, k, a_scale, s_row_scale);
        __syncthreads();
        staged_first = first;
      }

      float acc[2][4] = {};
      auto step = [&](int kb, const uint32_t (&word)[2], const uint32_t (&scale)[2]) {
        const unsigned char* at = staged + a_offset + kb * kBlockBytes;
        if constexpr (fp8) {
          const uint32_t frag[4] = {*reinterpret_cast<const uint32_t*>(at), 0u,
                                    *reinterpret_cast<const uint32_t*>(at + 16), 0u};
#pragma unroll
          for (int g = 0; g < 2; ++g) {
            float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
            mma_e4m3_16832(part, frag, decode_e4m3x4(word[g] & 0x0F0F0F0Fu), decode_e4m3x4((word[g] >> 4) & 0x0F0F0F0Fu));
            // The E4M3 weights are the values times 2^-6: 2^6 goes into the block scales.
            acc[g][0] += part[0] * (e8m0_float(scale[g] & 0xFFu) * 64.0f);
            acc[g][1] += part[1] * (e8m0_float(scale[g] >> 8) * 64.0f);
          }
        } else {
          uint32_t b[2][4];
#pragma unroll
          for (int g = 0; g < 2; ++g) decode_bf16_word<kFoldedScale>(word[g], scale[g], b[g]);
#pragma unroll
          for (int ks = 0; ks < 2; ++ks) {
            const uint32_t frag[4] = {*reinterpret_cast<const uint32_t*>(at + ks * 32), 0u,
                                      *reinterpret_cast<const uint32_t*>(at + ks * 32 + 16), 0u};
#pragma unroll
            for (int g = 0; g < 2; ++g) mma_bf16_16816(acc[g], frag, b[g][2 * ks], b[g][2 * ks + 1]);
          }
        }
      };
      // The ring: block kb + d is in slot d; using it refills the slot with block kb + kPrefetch + d.
      // Pointers advance by one k block per refill (no index arithmetic per load).
      const uint32_t* wn[2] = {w[0] + kPrefetch * 32, w[1] + kPrefetch * 32};
      const uint8_t* sn[2] = {sc[0] + kPrefetch * 8, sc[1] + kPrefetch * 8};
      auto pass = [&](int kb, auto refill_guarded) {
#pragma unroll
        for (int d = 0; d < kPrefetch; ++d) {
          const uint32_t word[2] = {wq[0][d], wq[1][d]}, scale[2] = {sq[0][d], sq[1][d]};
          if (!decltype(refill_guarded)::value || kb + kPrefetch + d < nkb) {
#pragma unroll
            for (int g = 0; g < 2; ++g) {
              wq[g][d] = load_stream_u32(wn[g]);
              sq[g][d] = load_scale(sn[g], fp8);
              wn[g] += 32;
              sn[g] += 8;
            }
          }
          step(kb + d, word, scale);
        }
      };
      int kb = 0;
      for (; kb + 2 * kPrefetch <= nkb; kb += kPrefetch) pass(kb, std::false_type{});
      for (; kb + kPrefetch <= nkb; kb += kPrefetch) pass(kb, std::true_type{});
#pragma unroll
      for (int d = 0; d < kPrefetch; ++d) {  // the last blocks, already in the ring
        if (kb + d < nkb) {
          const uint32_t word[2] = {wq[0][d], wq[1][d]}, scale[2] = {sq[0][d], sq[1][d]};
          step(kb + d, word, scale);
        }
      }
      if constexpr (kSplit > 1) {  // the K slices of each row group, added in slice order
#pragma unroll
        for (int g = 0; g < 2; ++g) {
          if (split > 0) s_partial[split - 1][2 * pair_in_item + g][lane] = make_float2(acc[g][0], acc[g][1]);
        }
        __syncthreads();
        if (split == 0) {
#pragma unroll
          for (int i = 0; i < kSplit - 1; ++i) {
#pragma unroll
            for (int g = 0; g < 2; ++g) {
              const float2 v = s_partial[i][2 * pair_in_item + g][lane];
              acc[g][0] += v.x;
              acc[g][1] += v.y;
            }
          }
        }
        if constexpr (kGateUp) __syncthreads();  // read before the next item writes (down syncs below)
      }

      // Epilogue: C fragment elements 0 and 1 are token lane / 4, columns 2 (lane % 4) and + 1.
      const int r = lane / 4;
      float pair_max = 0.0f;  // w4a8_token: the largest |y| this lane wrote for pair s_pairs[r]
#pragma unroll
      for (int g = 0; g < 2; ++g) {
        const int col = (group0 + g) * 8 + 2 * c;
        if (split == 0 && has_rows[g] && r < count) {
          const int p = s_pairs[r];
          const float scale = per_token ? s_row_scale[r] : a_scale;
          const float v0 = acc[g][0] * scale + bias[static_cast<int64_t>(expert) * n + col];
          const float v1 = acc[g][1] * scale + bias[static_cast<int64_t>(expert) * n + col + 1];
          if constexpr (kGateUp) {
            const float y = swiglu(v0, v1, a.alpha, a.limit);
            a.intermediate_out[static_cast<int64_t>(p) * (n / 2) + col / 2] = y;
            intermediate_max = fmaxf(intermediate_max, fabsf(y));
            pair_max = fmaxf(pair_max, fabsf(y));
          } else {
            *reinterpret_cast<float2*>(a.pair_out + static_cast<int64_t>(p) * n + col) = make_float2(v0, v1);
          }
        }
      }
      if constexpr (kGateUp && per_token) {  // one atomic per warp and pair: the lanes of row r, then lane 4 r
        pair_max = fmaxf(pair_max, __shfl_xor_sync(0xFFFFFFFFu, pair_max, 1));
        pair_max = fmaxf(pair_max, __shfl_xor_sync(0xFFFFFFFFu, pair_max, 2));
        if (c == 0 && pair_max > 0.0f) atomicMax(&a.pair_max_bits[s_pairs[r]], __float_as_uint(pair_max));
      }
      if (!kGateUp && per_token && tile == 0 && threadIdx.x < count) {  // for the caller
        a.row_scales[a.tokens + s_pairs[threadIdx.x]] = s_row_scale[threadIdx.x];
      }
      if constexpr (!kGateUp) {
        sum_completed_tokens<kThreads>(a, routing, s_pairs, s_complete, count, tile, tiles, tile * 8 * kGroups,
                                       8 * kGroups, n, 1, [] { __syncthreads(); });
      }
    }
  }
  if constexpr (kGateUp && per_tensor) {
    __shared__ uint32_t warp_max[kThreads / 32];
    block_max_into<kThreads>(&a.control->amax_bits[1], intermediate_max, warp_max, [] { __syncthreads(); });
  }
}

// Items large enough that a batch of one token gives every block one: its set-up (the expert, the
// staged tokens) then happens once while its weights stream.
constexpr int kGateUpGroups = 16, kGateUpSplit = 1;
constexpr int kDownGroups = kDecodeDownRows / 8, kDownSplit = 2;

template <Scheme S, bool kFolded>
constexpr auto gate_up_kernel() {
  return decode_expert_kernel<S, true, kGateUpGroups, kGateUpSplit, kFolded>;
}
template <Scheme S, bool kFolded>
constexpr auto down_kernel() {
  return decode_expert_kernel<S, false, kDownGroups, kDownSplit, kFolded>;
}

// The staged rows, then the block's routing tables.
int smem_bytes(int k, bool fp8, int tokens, int experts, int top_k) {
  return kChunkTokens * staged_row_bytes(k, fp8) + BlockRouting::bytes(tokens, experts, top_k);
}

// One grid for every batch size: shared memory sized for the largest.
template <Scheme S, bool kFolded>
void prepare_kernels(int hidden, int intermediate, int experts, int top_k, int sm_count, int* gate_up_grid,
                     int* down_grid) {
  constexpr bool fp8 = Act<S>::fp8;
  const int gate_up_smem = smem_bytes(hidden, fp8, kDecodeMaxTokens, experts, top_k);
  const int down_smem = smem_bytes(intermediate, fp8, kDecodeMaxTokens, experts, top_k);
  const auto gate_up = gate_up_kernel<S, kFolded>(), down = down_kernel<S, kFolded>();
  MXMOE_CUDA_CHECK(cudaFuncSetAttribute(gate_up, cudaFuncAttributeMaxDynamicSharedMemorySize, gate_up_smem));
  MXMOE_CUDA_CHECK(cudaFuncSetAttribute(down, cudaFuncAttributeMaxDynamicSharedMemorySize, down_smem));
  int per_sm = 0;
  MXMOE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, gate_up, kThreads, gate_up_smem));
  *gate_up_grid = std::max(1, per_sm) * sm_count;
  MXMOE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, down, kThreads, down_smem));
  *down_grid = std::max(1, per_sm) * sm_count;
}

void launch_dependent(void (*kernel)(DecodeLayerArgs), int grid, int smem, bool overlap, const DecodeLayerArgs& a,
                      cudaStream_t stream) {
  launch_after_previous(kernel, dim3(grid), dim3(kThreads), smem, overlap, stream, a);
}

template <Scheme S, bool kFolded>
void launch_experts(const DecodeLayerArgs& a, cudaStream_t stream) {
  constexpr bool fp8 = Act<S>::fp8;
  launch_dependent(gate_up_kernel<S, kFolded>(), a.gate_up_grid, smem_bytes(a.hidden, fp8, a.tokens, a.experts, a.top_k),
                   a.overlap_launches, a, stream);
  launch_dependent(down_kernel<S, kFolded>(), a.down_grid, smem_bytes(a.intermediate, fp8, a.tokens, a.experts, a.top_k),
                   a.overlap_launches, a, stream);
}

// The scheme and the scale fold as template arguments: FP8 weights take their scale in fp32 after
// the MMA, so the FP8 schemes have no folded variant.
template <class F>
void dispatch(Scheme scheme, bool folded_scales, F&& f) {
  switch (scheme) {
    case Scheme::w4a16:
      return folded_scales ? f.template operator()<Scheme::w4a16, true>() : f.template operator()<Scheme::w4a16, false>();
    case Scheme::w4a8: return f.template operator()<Scheme::w4a8, false>();
    case Scheme::w4a8_token: return f.template operator()<Scheme::w4a8_token, false>();
    case Scheme::w4a4:
      return folded_scales ? f.template operator()<Scheme::w4a4, true>() : f.template operator()<Scheme::w4a4, false>();
    case Scheme::w4a32: break;
  }
  throw CudaError("the small-batch path does not run scheme " + std::string(scheme_name(scheme)));
}

DecodeGrids generic_grids(Scheme scheme, bool folded_scales, int hidden, int intermediate, int experts, int top_k,
                          int sm_count) {
  int gate_up = 0, down = 0;
  dispatch(scheme, folded_scales, [&]<Scheme S, bool kFolded>() {
    prepare_kernels<S, kFolded>(hidden, intermediate, experts, top_k, sm_count, &gate_up, &down);
  });
  DecodeGrids grids;
  for (int i = 0; i < kDecodeGridTokens; ++i) {
    grids.gate_up[i] = gate_up;
    grids.down[i] = down;
  }
  return grids;
}

void launch_generic_experts(const DecodeLayerArgs& a, cudaStream_t stream) {
  dispatch(a.scheme, a.folded_scales, [&]<Scheme S, bool kFolded>() { launch_experts<S, kFolded>(a, stream); });
}

}  // namespace

const SmallBatchExperts& generic_small_batch_experts() {
  static const SmallBatchExperts experts{
      .max_tokens = kSmallBatchTokens, .grids = generic_grids, .launch = launch_generic_experts};
  return experts;
}

void launch_decode_layer(const DecodeLayerArgs& a, const SmallBatchExperts& experts, cudaStream_t stream) {
  if (a.tokens == 0) return;
  if (a.tokens > kDecodeMaxTokens) throw CudaError("small-batch path: more than kDecodeMaxTokens tokens");
  const int logit_blocks = a.given_ids ? 0 : a.experts;
  const int magnitude_blocks = a.scheme == Scheme::w4a8 || a.scheme == Scheme::w4a8_token ? 1 : 0;
  if (logit_blocks + magnitude_blocks > 0) {
    const dim3 route_grid(logit_blocks + magnitude_blocks, (a.tokens + kLogitTokens - 1) / kLogitTokens);
    decode_route_kernel<<<route_grid, kRouteThreads, 0, stream>>>(a);
    MXMOE_CUDA_CHECK_LAUNCH("decode_route_kernel");
  }
  experts.launch(a, stream);
}

}  // namespace mxmoe::cuda
