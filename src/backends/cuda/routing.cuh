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

// The small-batch router: K is cut into slices of kLogitDepth, so that every warp has all of its
// loads in flight at once (a warp walking a whole router row was a chain of dependent round trips:
// on an H200 the route kernel took 79 us at 16 tokens of gpt-oss-120b, 23 us in slices).
constexpr int kLogitDepth = 384;
constexpr int kLogitSteps = kLogitDepth / 128;  // float4 loads per lane and row

__host__ __device__ constexpr int small_router_slices(int hidden) { return (hidden + kLogitDepth - 1) / kLogitDepth; }

// partial[z][t][e] = x[t] . W[e] over K slice z (blockIdx.z), plus b[e] in slice 0, for the
// kLogitWarps experts along blockIdx.x (a warp each) and the kLogitTokens tokens along blockIdx.y:
// each lane sums its float4 steps in a fixed order and the warp adds the lanes as a fixed tree, so
// results do not depend on scheduling; logit_sum adds the slices in slice order.
__device__ __forceinline__ void router_logits_block(const float* x, const float* weight, const float* bias, int tokens,
                                                    int hidden, int experts, float* partial) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int e = blockIdx.x * kLogitWarps + warp;
  if (e >= experts) return;
  const int t0 = blockIdx.y * kLogitTokens;
  const int count = min(kLogitTokens, tokens - t0);
  const int row_quads = hidden / 4;  // hidden is a multiple of 32
  const int q0 = blockIdx.z * (kLogitDepth / 4), quads = min(row_quads - q0, kLogitDepth / 4);
  const float4* w = reinterpret_cast<const float4*>(weight + static_cast<int64_t>(e) * hidden) + q0;
  const float4* xs = reinterpret_cast<const float4*>(x + static_cast<int64_t>(t0) * hidden) + q0;
  const float4 zero = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
  float4 wv[kLogitSteps], xv[kLogitTokens][kLogitSteps];
#pragma unroll
  for (int s = 0; s < kLogitSteps; ++s) wv[s] = lane + 32 * s < quads ? w[lane + 32 * s] : zero;
#pragma unroll
  for (int t = 0; t < kLogitTokens; ++t) {
#pragma unroll
    for (int s = 0; s < kLogitSteps; ++s) {
      xv[t][s] = t < count && lane + 32 * s < quads ? xs[static_cast<int64_t>(t) * row_quads + lane + 32 * s] : zero;
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
    if (lane == 0 && t < count) {
      partial[(static_cast<int64_t>(blockIdx.z) * tokens + t0 + t) * experts + e] = blockIdx.z == 0 ? sum + bias[e] : sum;
    }
  }
}

// Logit `index` of a [T][E] matrix whose K slices lie `slice_stride` apart: the slices added in
// slice order, eight loads in flight at a time. Read through L2 (__ldcg): other blocks of the same
// launch may have just written them.
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
