// Device code shared by every GEMM family's small-batch expert kernels (decode.hpp): the batch's
// routing as each block builds it, which rows a pass of pairs reads, the largest magnitudes that
// set the FP8 schemes' scales, and the top-k sum that ends the down kernel.
#pragma once

#include <cuda_runtime.h>

#include <climits>
#include <cstdint>

#include "backends/cuda/decode.hpp"
#include "backends/cuda/device_utils.cuh"
#include "backends/cuda/routing.cuh"

namespace mxmoe::cuda {

// The batch's routing in a block's shared memory: every expert block builds the same tables from
// the route kernel's final logits, so no serial step (one block taking the top-k while the GPU
// waits) sits between the router and the expert kernels, and a block finds its experts and pairs
// without a round trip to global memory.
struct BlockRouting {
  int32_t* base;
  int slots, pairs;  // min(E, P) and P, the tables' lengths

  __host__ __device__ static constexpr int bytes(int tokens, int experts, int top_k) {
    const int pairs = tokens * top_k, slots = experts < pairs ? experts : pairs;
    return (4 * (2 * slots + 2 + 3 * pairs + experts) + 15) / 16 * 16;
  }
  __device__ static BlockRouting at(unsigned char* tables, int tokens, int experts, int top_k) {
    return {reinterpret_cast<int32_t*>(tables), min(experts, tokens * top_k), tokens * top_k};
  }
  // Experts with at least one pair.
  __device__ int32_t& active() const { return base[0]; }
  // [slots]: the active experts, ascending.
  __device__ int32_t* experts() const { return base + 1; }
  // [slots + 1]: where each active expert's pairs start in sorted_pairs.
  __device__ int32_t* pair_begin() const { return base + 1 + slots; }
  // [P]: pair ids t k + j grouped by active expert, in pair order.
  __device__ int32_t* sorted_pairs() const { return base + 2 + 2 * slots; }
  // [P]: the top-k experts of each token, and their softmax weights.
  __device__ int32_t* ids() const { return sorted_pairs() + pairs; }
  __device__ float* weights() const { return reinterpret_cast<float*>(ids() + pairs); }
  // [E]: pairs per expert, then where each expert's pairs start.
  __device__ int32_t* counts() const { return reinterpret_cast<int32_t*>(weights() + pairs); }
};

// route_in_block's stamps where a kernel keeps no timeline.
struct NoStamp {
  __device__ void operator()(int) const {}
};

// Up to kFewPairs pairs, the tables come from one warp's ranks instead of the block's counting
// sort: lane p ranks its pair by (expert, pair), and the first pair of each expert (its group's
// head) places the expert. The same tables with two barriers instead of four, for the decode sizes
// where the routing sits on the critical path. Measured on an H200 (2026-12-01): 1.5 us off
// gpt-oss-120b's T=1 and T=2 layers, 0.7 at T=4, and at 32 pairs (T=8) gpt-oss-20b 1.5% slower,
// so it stops at 16 (any value up to a warp's 32 is correct).
constexpr int kFewPairs = 16;
static_assert(kFewPairs <= 32, "route_few_pairs ranks with one warp");
template <int kThreads, class Stamp>
__device__ __forceinline__ void route_few_pairs(const DecodeLayerArgs& a, const BlockRouting& r, bool publish,
                                                Stamp stamp) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, pairs = a.tokens * a.top_k;
  if (a.given_ids) {
    if (threadIdx.x < pairs) {
      int e = a.given_ids[threadIdx.x];
      float w = a.given_weights[threadIdx.x];
      replace_out_of_range_pair(e, w, a.experts);
      r.ids()[threadIdx.x] = e;
      r.weights()[threadIdx.x] = w;
    }
  } else {
    for (int t = warp; t < a.tokens; t += kThreads / 32) {
      warp_top_k(a.logits, t, a.experts, a.top_k, r.ids(), r.weights(), nullptr);
    }
  }
  stamp(0);
  __syncthreads();
  stamp(1);
  if (warp == 0) {
    const int e = lane < pairs ? r.ids()[lane] : INT_MAX;
    int rank = 0;
    bool head = lane < pairs;
    for (int q = 0; q < pairs; ++q) {
      const int f = __shfl_sync(0xFFFFFFFFu, e, q);
      rank += f < e || (f == e && q < lane);
      head = head && !(f == e && q < lane);
    }
    const unsigned heads = __ballot_sync(0xFFFFFFFFu, head);
    int slot = 0;  // experts below this one
    for (int q = 0; q < pairs; ++q) slot += ((heads >> q) & 1u) && __shfl_sync(0xFFFFFFFFu, e, q) < e;
    if (lane < pairs) {
      r.sorted_pairs()[rank] = lane;
      if (head) {
        r.experts()[slot] = e;
        r.pair_begin()[slot] = rank;
      }
      if (publish) {
        a.expert_ids[lane] = e;
        a.expert_weights[lane] = r.weights()[lane];
      }
    }
    if (lane == 0) {
      r.pair_begin()[__popc(heads)] = pairs;
      r.active() = __popc(heads);
    }
  }
  __syncthreads();
}

// Any number of pairs: called by every thread of the block (kThreads of them) once the logits (or
// the caller's routing) are final: the top-k and softmax per token (warp_top_k, as the batched
// path's router) or the caller's pairs, then the active experts in expert order and each one's
// pairs in pair order (a stable counting sort: the order does not depend on the order the counts'
// atomics ran in). With `publish`, the block also writes the routing to a.expert_ids and
// a.expert_weights (the layer's routing output). `stamp(event)`, called by every thread, marks the
// top-k done (0) and the barrier after it passed (1), for the kernels' timelines (timeline.hpp).
template <int kThreads, class Stamp>
__device__ __forceinline__ void route_many_pairs(const DecodeLayerArgs& a, const BlockRouting& r, bool publish,
                                                 Stamp stamp) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, pairs = a.tokens * a.top_k;
  for (int e = threadIdx.x; e < a.experts; e += kThreads) r.counts()[e] = 0;
  __syncthreads();
  if (a.given_ids) {
    for (int p = threadIdx.x; p < pairs; p += kThreads) {
      int e = a.given_ids[p];
      float w = a.given_weights[p];
      replace_out_of_range_pair(e, w, a.experts);
      r.ids()[p] = e;
      r.weights()[p] = w;
      atomicAdd(&r.counts()[e], 1);
    }
  } else {
    for (int t = warp; t < a.tokens; t += kThreads / 32) {
      warp_top_k(a.logits, t, a.experts, a.top_k, r.ids(), r.weights(), r.counts());
    }
  }
  stamp(0);
  __syncthreads();
  stamp(1);
  if (warp == 0) {  // the active experts and where their pairs start
    int pair_base = 0, active = 0;
    for (int base = 0; base < a.experts; base += 32) {
      const int e = base + lane;
      const int c = e < a.experts ? r.counts()[e] : 0;
      int inclusive = c;
#pragma unroll
      for (int offset = 1; offset < 32; offset *= 2) {
        const int v = __shfl_up_sync(0xFFFFFFFFu, inclusive, offset);
        if (lane >= offset) inclusive += v;
      }
      const unsigned used = __ballot_sync(0xFFFFFFFFu, c > 0);
      if (c > 0) {
        const int slot = active + __popc(used & ((1u << lane) - 1u));
        r.experts()[slot] = e;
        r.pair_begin()[slot] = pair_base + inclusive - c;
        r.counts()[e] = pair_base + inclusive - c;
      }
      pair_base += __shfl_sync(0xFFFFFFFFu, inclusive, 31);
      active += __popc(used);
    }
    if (lane == 0) {
      r.pair_begin()[active] = pair_base;
      r.active() = active;
    }
  }
  __syncthreads();
  for (int p = threadIdx.x; p < pairs; p += kThreads) {
    const int e = r.ids()[p];
    int rank = 0;
    for (int q = 0; q < p; ++q) rank += r.ids()[q] == e;
    r.sorted_pairs()[r.counts()[e] + rank] = p;
    if (publish) {
      a.expert_ids[p] = e;
      a.expert_weights[p] = r.weights()[p];
    }
  }
  __syncthreads();
}

// The block's routing by its pair count. A kernel that knows the count's side at compile time
// (kRoutes) holds only that side's code: the many-pairs sort is over 20 KB of a kernel's code that
// never runs at T <= 4, and a decode layer's time grows with its kernels' code
// (docs/PERFORMANCE.md, thirty-first and thirty-second sessions).
enum class Routes { any, few, many };
constexpr Routes routes_for(int pairs) { return pairs <= kFewPairs ? Routes::few : Routes::many; }

template <int kThreads, Routes kRoutes = Routes::any, class Stamp = NoStamp>
__device__ __forceinline__ void route_in_block(const DecodeLayerArgs& a, const BlockRouting& r, bool publish,
                                               Stamp stamp = {}) {
  if constexpr (kRoutes == Routes::few) {
    route_few_pairs<kThreads>(a, r, publish, stamp);
  } else if constexpr (kRoutes == Routes::many) {
    route_many_pairs<kThreads>(a, r, publish, stamp);
  } else if (a.tokens * a.top_k <= kFewPairs) {
    route_few_pairs<kThreads>(a, r, publish, stamp);
  } else {
    route_many_pairs<kThreads>(a, r, publish, stamp);
  }
}

// The largest `value` of the kThreads threads that call this (each >= 0 and not NaN: an fmaxf chain
// from zero), into *target by atomicMax on its bits (non-negative floats order as their bits do):
// one atomic per block. One per warp put thousands on one address at a kernel's end, queued at the
// L2 ahead of the next kernel's wait. `scratch` holds kThreads / 32 words; `sync` is the callers' barrier.
template <int kThreads, class Sync>
__device__ __forceinline__ void block_max_into(uint32_t* target, float value, uint32_t* scratch, Sync sync) {
  const uint32_t warp_max = __reduce_max_sync(0xFFFFFFFFu, __float_as_uint(value));
  if (threadIdx.x % 32 == 0) scratch[threadIdx.x / 32] = warp_max;
  sync();
  if (threadIdx.x == 0) {
    uint32_t most = 0;
#pragma unroll
    for (int w = 0; w < kThreads / 32; ++w) most = max(most, scratch[w]);
    atomicMax(target, most);
  }
}

// Threads 0 .. count - 1 look up the pairs first .. first + count - 1 of the sorted pairs into
// s_pairs, and into s_rows the fp32 row each one's GEMM reads (k values): its token's hidden state
// for gate_up, its own intermediate for down. Per-token schemes (s_row_scales given) also look up
// the row's FP8 scale: a token's from the route kernel, a pair's from the largest |intermediate|
// gate_up gathered (down looks up only once gate_up is done).
template <bool kGateUp>
__device__ __forceinline__ void look_up_pass(const DecodeLayerArgs& a, const BlockRouting& r, int first, int count,
                                             int k, int32_t* s_pairs, const float** s_rows, float* s_row_scales) {
  if (threadIdx.x >= count) return;
  const int p = r.sorted_pairs()[first + threadIdx.x];
  s_pairs[threadIdx.x] = p;
  s_rows[threadIdx.x] =
      kGateUp ? a.x + static_cast<int64_t>(p / a.top_k) * k : a.intermediate_out + static_cast<int64_t>(p) * k;
  if (s_row_scales) {
    s_row_scales[threadIdx.x] =
        kGateUp ? __ldcg(&a.row_scales[p / a.top_k]) : fp8_scale_from_bits(__ldcg(&a.pair_max_bits[p]));
  }
}

// The top-k sum: once a block has written its pairs' rows of one row tile of H, the block that
// completes the last of a token's k pairs (each in `parts` K parts) for that tile sums them in slot
// order, each pair's parts in part order, so the sum needs no separate pass and is deterministic.
// Called by threads 0 .. kThreads - 1 of the block, all of them, after they wrote pair_out rows
// [row0, row0 + rows) of the `count` pairs in s_pairs (one part of them); `sync` is their barrier.
// s_complete holds `count` flags of scratch. The per-(token, tile) counters return to zero for the
// next run.
template <int kThreads, class Sync>
__device__ __forceinline__ void sum_completed_tokens(const DecodeLayerArgs& a, const BlockRouting& r,
                                                     const int32_t* s_pairs, bool* s_complete, int count, int tile,
                                                     int tiles, int row0, int rows, int n, int parts, Sync sync) {
  sync();  // every thread's pair_out rows are written...
  if (threadIdx.x < count) {
    const int token = s_pairs[threadIdx.x] / a.top_k;
    // ...and a counting thread's release orders them all (cumulative, after the barrier) before its
    // count, as CUTLASS's semaphores release; its acquire orders the other blocks' rows before the
    // sum that the barrier below passes on. One acq_rel atomic per pair: a __threadfence (fence.sc)
    // before a relaxed atomic waited longer (docs/PERFORMANCE.md, thirty-second session).
    uint32_t done;
    asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], 1;\n"
                 : "=r"(done)
                 : "l"(&a.combine_counts[token * tiles + tile])
                 : "memory");
    s_complete[threadIdx.x] = done == static_cast<uint32_t>(a.top_k * parts - 1);
    // Ready for the next run, which reads it only after this grid has ended.
    if (s_complete[threadIdx.x]) a.combine_counts[token * tiles + tile] = 0;
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
        float y = __ldcg(a.pair_out + q * n + h);  // other blocks wrote them
        for (int part = 1; part < parts; ++part) y += __ldcg(a.pair_out + (part * r.pairs + q) * n + h);
        sum += r.weights()[q] * y;
      }
      a.out[static_cast<int64_t>(token) * n + h] = sum;
    }
  }
}

}  // namespace mxmoe::cuda
