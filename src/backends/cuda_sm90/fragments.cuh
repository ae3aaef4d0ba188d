// Decoding the sm90 weight layout (layout.hpp) into the A fragments of m64nNk16 wgmma, which are,
// warp by warp, those of mma.sync m16n8k16: shared by the batched GEMMs and the small-batch kernels.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

#include "backends/cuda/device_utils.cuh"
#include "backends/cuda_sm90/layout.hpp"

namespace mxmoe::cuda::sm90 {

// Register r's two codes placed as bf16 bits (layout.hpp): value * 2^-126 in each half.
__device__ __forceinline__ uint32_t placed_pair(uint32_t word, int r) {
  constexpr uint32_t kBf16Bits = 0x81C081C0u;  // sign, low exponent bits and top mantissa bit of each half
  constexpr uint32_t kMantissas = 0x00400040u;
  const auto rotated = [word](int by) { return __funnelshift_r(word, word, by); };
  switch (r) {
    case 0: return word & kBf16Bits;
    case 1: return rotated(kRotation1) & kBf16Bits;
    case 2: return rotated(kRotation2) & kBf16Bits;
    default: return (rotated(kRotation3) & (kBf16Bits & ~kMantissas)) | (rotated(kMantissaRotation3) & kMantissas);
  }
}

// The A registers of a 64-deep chunk, block scales applied: register r of k16 step s takes the
// scale of its row (r odd: row g + 8) and block (s >= 2: the chunk's second block).
template <bool kFolded>
__device__ __forceinline__ void decode_fragments(const uint4& words, uint32_t scale_bytes, uint32_t (&a)[4][4]) {
  const __nv_bfloat162 two126 = bits_bf16x2(0x7E807E80u);
  // Folded codes are <= 128: adding 126 to every byte carries into none, and a byte permute that
  // places code + 126 in bits 0-7 of both halves, shifted into the exponent, is 2^(code - 1) in
  // bf16 (e8m0_times_2pow126_bf16x2 for four scales in nine instructions instead of twenty).
  if constexpr (kFolded) scale_bytes += 0x7E7E7E7Eu;
  __nv_bfloat162 scale[2][2];  // [row half][block]
#pragma unroll
  for (int half = 0; half < 2; ++half) {
#pragma unroll
    for (int block = 0; block < 2; ++block) {
      const int byte = 2 * half + block;
      scale[half][block] = kFolded ? bits_bf16x2(__byte_perm(scale_bytes, 0, 0x4040 | byte << 8 | byte) << 7)
                                   : e8m0_bf16x2((scale_bytes >> (8 * byte)) & 0xFFu);
    }
  }
  const uint32_t word[4] = {words.x, words.y, words.z, words.w};
#pragma unroll
  for (int s = 0; s < 4; ++s) {
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const __nv_bfloat162 placed = bits_bf16x2(placed_pair(word[s], r));
      const __nv_bfloat162 sc = scale[r & 1][s / 2];
      a[s][r] = bf16x2_bits(kFolded ? __hmul2(placed, sc) : __hmul2(__hmul2(placed, two126), sc));
    }
  }
}

}  // namespace mxmoe::cuda::sm90
