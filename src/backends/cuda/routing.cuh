// The router's device code, shared by the batched path (routing.cu) and the small-batch path
// (decode.cu), so both route bit for bit alike.
#pragma once

#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

namespace mxmoe::cuda {

constexpr int kLogitWarps = 8;   // experts per block of the logits kernel
constexpr int kLogitTokens = 8;  // tokens per block: each router row is read once for them
constexpr int kMaxTopK = 16;

// logits[t][e] = x[t] . W[e] + b[e] for the experts and tokens of this block (kLogitWarps experts
// along blockIdx.x, kLogitTokens tokens along blockIdx.y): one warp per expert, 16-byte loads, each
// lane summing a strided slice in a fixed order and the warp adding the slices as a fixed tree, so
// results do not depend on scheduling. Each slice of the router row is loaded once for all the
// block's tokens, with the loads of several steps in flight. Many small blocks keep every SM busy
// even for one token.
__device__ __forceinline__ void router_logits_block(const float* x, const float* weight, const float* bias, int tokens,
                                                    int hidden, int experts, float* logits) {
  constexpr int kSteps = 8;  // float4 steps per lane per pass
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int e = blockIdx.x * kLogitWarps + warp;
  if (e >= experts) return;
  const int t0 = blockIdx.y * kLogitTokens;
  const int count = min(kLogitTokens, tokens - t0);
  const float4* w = reinterpret_cast<const float4*>(weight + static_cast<int64_t>(e) * hidden);
  const float4* xs = reinterpret_cast<const float4*>(x + static_cast<int64_t>(t0) * hidden);
  const int quads = hidden / 4;  // hidden is a multiple of 32
  float sum[kLogitTokens];
#pragma unroll
  for (int t = 0; t < kLogitTokens; ++t) sum[t] = 0.0f;
  for (int first = lane; first < quads; first += 32 * kSteps) {
    float4 wv[kSteps];
#pragma unroll
    for (int s = 0; s < kSteps; ++s) {
      if (first + 32 * s < quads) wv[s] = w[first + 32 * s];
    }
#pragma unroll
    for (int t = 0; t < kLogitTokens; ++t) {
      if (t >= count) break;
#pragma unroll
      for (int s = 0; s < kSteps; ++s) {  // each token's sum keeps the order i = lane, lane + 32, ...
        if (first + 32 * s < quads) {
          const float4 a = xs[static_cast<int64_t>(t) * quads + first + 32 * s], b = wv[s];
          sum[t] += a.x * b.x;
          sum[t] += a.y * b.y;
          sum[t] += a.z * b.z;
          sum[t] += a.w * b.w;
        }
      }
    }
  }
#pragma unroll
  for (int t = 0; t < kLogitTokens; ++t) {
    if (t >= count) break;
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) sum[t] += __shfl_xor_sync(0xFFFFFFFFu, sum[t], offset);
    if (lane == 0) logits[static_cast<int64_t>(t0 + t) * experts + e] = sum[t] + bias[e];
  }
}

// Called by a whole warp for token t: the k largest logits (equal logits: the lower expert first),
// softmax over them; lane 0 writes the ids and weights and, when `counts` is set, counts the pairs
// per expert. Logits are read through L2 (__ldcg): other blocks of the same launch may have just
// written them.
__device__ __forceinline__ void warp_top_k(const float* logits, int t, int experts, int top_k, int32_t* expert_ids,
                                           float* expert_weights, int32_t* counts) {
  const int lane = threadIdx.x % 32;
  const float* l = logits + static_cast<int64_t>(t) * experts;
  // The lane's first logits stay in registers across the k rounds (all of them up to 256 experts).
  constexpr int kCached = 8;
  float cached[kCached];
#pragma unroll
  for (int i = 0; i < kCached; ++i) cached[i] = lane + 32 * i < experts ? __ldcg(l + lane + 32 * i) : 0.0f;
  int chosen[kMaxTopK];
  float top[kMaxTopK];
  for (int j = 0; j < top_k; ++j) {
    float best = -INFINITY;
    int best_e = experts;
    auto consider = [&](int e, float v) {
      bool taken = false;
      for (int i = 0; i < j; ++i) taken |= chosen[i] == e;
      if (!taken && (v > best || best_e == experts)) {  // ascending e per lane: ties keep the lower
        best = v;
        best_e = e;
      }
    };
#pragma unroll
    for (int i = 0; i < kCached; ++i) {
      if (lane + 32 * i < experts) consider(lane + 32 * i, cached[i]);
    }
    for (int e = lane + 32 * kCached; e < experts; e += 32) consider(e, __ldcg(l + e));
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) {
      const float other = __shfl_xor_sync(0xFFFFFFFFu, best, offset);
      const int other_e = __shfl_xor_sync(0xFFFFFFFFu, best_e, offset);
      if (other_e < experts && (best_e == experts || other > best || (other == best && other_e < best_e))) {
        best = other;
        best_e = other_e;
      }
    }
    chosen[j] = best_e;
    top[j] = best;
  }
  if (lane != 0) return;
  float denominator = 0.0f;
  for (int j = 0; j < top_k; ++j) denominator += expf(top[j] - top[0]);
  const int64_t base = static_cast<int64_t>(t) * top_k;
  for (int j = 0; j < top_k; ++j) {
    expert_ids[base + j] = chosen[j];
    expert_weights[base + j] = expf(top[j] - top[0]) / denominator;
    if (counts) atomicAdd(&counts[chosen[j]], 1);
  }
}

}  // namespace mxmoe::cuda
