// The router's device code, shared by the batched path (routing.cu) and the small-batch path
// (decode.cu), so both route bit for bit alike.
#pragma once

#include <cuda_runtime.h>

#include <climits>
#include <cmath>
#include <cstdint>

namespace mxmoe::cuda {

constexpr int kLogitWarps = 8;   // warps per block of the small-batch router, each over K slices
constexpr int kLogitTokens = 8;  // tokens per block: each router row is read once for them
constexpr int kMaxTopK = 16;

// The small-batch router: a block per (expert, 8 tokens), its warps over K in slices of
// kLogitDepth, so that every warp has all of its loads in flight at once (a warp walking a whole
// router row was a chain of dependent round trips: on an H200 the route kernel took 79 us at 16
// tokens of gpt-oss-120b, 23 us in slices). The block adds its warps' sums itself: no other block
// waits on them, and the logits are final when the kernel ends.
constexpr int kLogitDepth = 384;
constexpr int kLogitSteps = kLogitDepth / 128;  // float4 loads per lane and row

// logits[t][e] = b[e] + x[t] . W[e] for expert e = blockIdx.x and the kLogitTokens tokens along
// blockIdx.y. Warp w sums slices w, w + kLogitWarps, ... in order, each lane its float4 steps in a
// fixed order and the warp its lanes as a fixed tree; the bias and the warps' sums are added in
// warp order: results do not depend on scheduling.
__device__ __forceinline__ void router_logits_block(const float* x, const float* weight, const float* bias, int tokens,
                                                    int hidden, int experts, float* logits) {
  __shared__ float s_partial[kLogitWarps][kLogitTokens];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int e = blockIdx.x;
  const int t0 = blockIdx.y * kLogitTokens;
  const int count = min(kLogitTokens, tokens - t0);
  const int row_quads = hidden / 4;  // hidden is a multiple of 32
  const float4* w = reinterpret_cast<const float4*>(weight + static_cast<int64_t>(e) * hidden);
  const float4* xs = reinterpret_cast<const float4*>(x + static_cast<int64_t>(t0) * hidden);
  const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  float sums[kLogitTokens] = {};
  for (int q0 = warp * (kLogitDepth / 4); q0 < row_quads; q0 += kLogitWarps * (kLogitDepth / 4)) {
    const int quads = min(row_quads - q0, kLogitDepth / 4);
    float4 wv[kLogitSteps], xv[kLogitTokens][kLogitSteps];
#pragma unroll
    for (int s = 0; s < kLogitSteps; ++s) wv[s] = lane + 32 * s < quads ? w[q0 + lane + 32 * s] : zero;
#pragma unroll
    for (int t = 0; t < kLogitTokens; ++t) {
#pragma unroll
      for (int s = 0; s < kLogitSteps; ++s) {
        xv[t][s] = t < count && lane + 32 * s < quads ? xs[static_cast<int64_t>(t) * row_quads + q0 + lane + 32 * s] : zero;
      }
    }
#pragma unroll
    for (int t = 0; t < kLogitTokens; ++t) {
      float sum = 0.0f;
#pragma unroll
      for (int s = 0; s < kLogitSteps; ++s) {
        sum += xv[t][s].x * wv[s].x;
        sum += xv[t][s].y * wv[s].y;
        sum += xv[t][s].z * wv[s].z;
        sum += xv[t][s].w * wv[s].w;
      }
#pragma unroll
      for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xFFFFFFFFu, sum, offset);
      sums[t] += sum;
    }
  }
  if (lane < kLogitTokens) {
    float mine = 0.0f;  // lane t keeps token t's sum (indexing sums by lane would put it in local memory)
#pragma unroll
    for (int t = 0; t < kLogitTokens; ++t) mine = lane == t ? sums[t] : mine;
    s_partial[warp][lane] = mine;
  }
  __syncthreads();
  if (threadIdx.x < count) {
    float logit = bias[e];
#pragma unroll
    for (int i = 0; i < kLogitWarps; ++i) logit += s_partial[i][threadIdx.x];
    logits[static_cast<int64_t>(t0 + threadIdx.x) * experts + e] = logit;
  }
}

// A pair of the caller's routing as the kernels take it: an expert id outside [0, experts) becomes
// expert 0 with a NaN weight, so its token's output is NaN instead of memory out of bounds (a
// device cannot throw). Returns whether the pair was replaced.
__device__ __forceinline__ bool replace_out_of_range_pair(int& expert, float& weight, int experts) {
  if (expert >= 0 && expert < experts) return false;
  expert = 0;
  weight = __int_as_float(0x7FC00000);  // NaN
  return true;
}

// A float's bits as an unsigned that orders as the floats do, -0 as +0 (so equal logits stay equal).
// Not NaN; no finite value or -inf maps to 0.
__device__ __forceinline__ unsigned ordered_bits(float v) {
  const unsigned u = v == 0.0f ? 0u : __float_as_uint(v);
  return u & 0x80000000u ? ~u : u | 0x80000000u;
}
__device__ __forceinline__ float from_ordered_bits(unsigned key) {
  return __uint_as_float(key & 0x80000000u ? key & 0x7FFFFFFFu : ~key);
}

// Called by a whole warp for token t: the k largest logits (equal logits: the lower expert first),
// softmax over them; lanes 0 .. k - 1 write the ids and weights and, when `counts` is set, count
// the pairs per expert. Logits are read through L2 (__ldcg): other blocks may have just written
// them. Round j takes the largest logit after round j - 1's in the order (logit descending, expert
// ascending), so no list of taken experts is kept (a NaN logit counts as -inf).
__device__ __forceinline__ void warp_top_k(const float* logits, int t, int experts, int top_k, int32_t* expert_ids,
                                           float* expert_weights, int32_t* counts) {
  const int lane = threadIdx.x % 32;
  const float* l = logits + static_cast<int64_t>(t) * experts;
  auto read = [&](int e) {
    const float v = __ldcg(l + e);
    return v != v ? -INFINITY : v;
  };
  // The lane's first logits stay in registers across the k rounds (all of them up to 256 experts).
  constexpr int kCached = 8;
  float cached[kCached];
#pragma unroll
  for (int i = 0; i < kCached; ++i) cached[i] = lane + 32 * i < experts ? read(lane + 32 * i) : 0.0f;
  float previous = INFINITY, top0 = 0.0f, denominator = 0.0f, mine = 0.0f;
  int previous_e = -1, mine_e = 0;
  for (int j = 0; j < top_k; ++j) {
    float best = -INFINITY;
    int best_e = experts;
    // Selects, not branches: the lanes disagree on every test, and short-circuit branches put each
    // candidate behind divergent jumps in the round's dependent chain (0.5-3.7% off the small-batch
    // layer at T=1-8 on an H200, docs/PERFORMANCE.md, twenty-ninth session).
    auto consider = [&](int e, float v, bool valid) {
      const bool after_previous = (v < previous) | ((v == previous) & (e > previous_e));
      // Ascending e per lane: a strict > keeps the lower expert of a tie.
      const bool take = valid & after_previous & ((best_e == experts) | (v > best));
      best = take ? v : best;
      best_e = take ? e : best_e;
    };
#pragma unroll
    for (int i = 0; i < kCached; ++i) consider(lane + 32 * i, cached[i], lane + 32 * i < experts);
    for (int e = lane + 32 * kCached; e < experts; e += 32) consider(e, read(e), true);
    // The warp's best by two reductions (redux) instead of five rounds of shuffles: the largest
    // logit by its order-preserving bits, then the lowest expert holding it.
    const unsigned key = best_e < experts ? ordered_bits(best) : 0u;  // 0: the lane has none left
    const unsigned top = __reduce_max_sync(0xFFFFFFFFu, key);
    best_e = static_cast<int>(__reduce_min_sync(0xFFFFFFFFu, key == top ? static_cast<unsigned>(best_e) : UINT_MAX));
    best = top == 0u ? -INFINITY : from_ordered_bits(top);
    if (j == 0) top0 = best;
    denominator += expf(best - top0);  // in round order, as a sequential sum over the k
    if (lane == j) {
      mine = best;
      mine_e = best_e;
    }
    previous = best;
    previous_e = best_e;
  }
  if (lane >= top_k) return;
  const int64_t q = static_cast<int64_t>(t) * top_k + lane;
  expert_ids[q] = mine_e;
  expert_weights[q] = expf(mine - top0) / denominator;
  if (counts) atomicAdd(&counts[mine_e], 1);
}

}  // namespace mxmoe::cuda
