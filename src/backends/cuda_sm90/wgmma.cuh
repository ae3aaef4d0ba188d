// What the batched wgmma kernels (gemm.cu: bf16 tensor cores, gemm_fp8.cu: FP8 ones) share: the
// warpgroup MMA's fences, the descriptor of their activation stages, and the epilogue that scales,
// biases and stores a tile's sums.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "backends/cuda/device_utils.cuh"
#include "backends/cuda/kernels.hpp"
#include "backends/cuda_sm90/layout.hpp"
#include "mxmoe/codecs.hpp"

namespace mxmoe::cuda::sm90 {

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

// A warpgroup's registers per thread from here on (setmaxnreg: every thread of the warpgroup runs
// it; the CTA's total stays what the launch bound gave).
template <int kRegisters>
__device__ __forceinline__ void claim_registers() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
}
template <int kRegisters>
__device__ __forceinline__ void release_registers() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
}

// Runs step(set, i) for i = 0 .. count - 1, set = i % 2 as a compile-time constant: the batched
// kernels decode fragments for i + 1 into one set while i's MMAs read the other, and fragments
// indexed by a runtime set would leave registers.
template <class Step>
__device__ __forceinline__ void alternate_fragment_sets(int count, Step&& step) {
  int i = 0;
  for (; i + 1 < count; i += 2) {
    step(std::integral_constant<int, 0>{}, i);
    step(std::integral_constant<int, 1>{}, i + 1);
  }
  if (i < count) step(std::integral_constant<int, 0>{}, i);
}

// Keeps the compiler from moving accumulator accesses across the asynchronous MMAs.
template <int N>
__device__ __forceinline__ void fence_operands(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}
template <int M, int N>
__device__ __forceinline__ void fence_operands(float (&d)[M][N]) {
#pragma unroll
  for (int m = 0; m < M; ++m) fence_operands(d[m]);
}

template <int M, int N>
__device__ __forceinline__ void zero(float (&d)[M][N]) {
#pragma unroll
  for (int m = 0; m < M; ++m) {
#pragma unroll
    for (int i = 0; i < N; ++i) d[m][i] = 0.0f;
  }
}

// Descriptor of a K-major tile in shared memory with rows of 128 bytes (64 bf16 or 128 FP8 values),
// 128-byte swizzle (16-byte chunk c of row r at c ^ (r % 8)), 8-row atoms 1024 bytes apart. The tile
// starts 1024-aligned; adding 2 advances it by 32 bytes of every row (one k16 bf16 or k32 FP8 step).
__device__ __forceinline__ uint64_t tile_descriptor(const void* tile) {
  const uint64_t address = smem_address(tile);
  return ((address & 0x3FFFFu) >> 4) | (uint64_t{1} << 16) | (uint64_t{1024 >> 4} << 32) | (uint64_t{1} << 62);
}

// The kMTiles row tiles a warpgroup owns, from row tile `first`. Tiles past N (where the tile
// count does not divide) repeat the last tile and store nothing: every warpgroup runs the same
// straight-line MMA code (a branch around wgmma serializes it).
template <int kMTiles>
__device__ __forceinline__ void warpgroup_row_tiles(int first, int row_tiles, int (&row_tile)[kMTiles],
                                                    bool (&stores)[kMTiles]) {
#pragma unroll
  for (int m = 0; m < kMTiles; ++m) {
    row_tile[m] = min(first + m, row_tiles - 1);
    stores[m] = first + m < row_tiles;
  }
}

// The 16-byte chunk c of activation row r in a stage of 128-byte swizzled rows.
__device__ __forceinline__ int swizzled_chunk(int r, int c) { return r * 128 + ((c ^ (r & 7)) << 4); }

// The epilogue's operands of a thread's rows g and g + 8 of one row tile (gate_up: its unit's gate
// and linear): the sums' scales (with kRowFactors, the FP8 layout's row factor, times the tensor
// scale where no per-token scales replace it) and the biases. Loaded where the epilogue would wait
// for them, or before the MMAs (the persistent FP8 kernels), their round trips under them.
struct RowOperands {
  float scale0, scale8, bias0, bias8;
};
template <bool kGateUp, bool kRowFactors>
__device__ __forceinline__ RowOperands row_operands(const GemmProblem& p, int row_tile, int expert) {
  const int warp = threadIdx.x % 128 / 32, g = threadIdx.x % 32 / 4;
  const int tile_row = row_tile * kTileRows + warp * 16 + g;  // the thread's first row; the second is 8 on
  const float tensor_scale = p.a_row_scales != nullptr ? 1.0f : *p.a_scale;
  const int64_t expert_row0 = static_cast<int64_t>(expert) * p.n;
  // The FP8 layout's row factors are powers of two: folded into the tensor scale, the sums round
  // as they did multiplied by each in turn.
  const float factor0 = kRowFactors ? p.row_factors[expert_row0 + tile_row] : 1.0f;
  const float factor8 = kRowFactors ? p.row_factors[expert_row0 + tile_row + 8] : 1.0f;
  const int unit = row_tile * (kTileRows / 2) + warp * 8 + g;
  const float* bias = p.bias + expert_row0 + (kGateUp ? 2 * unit : tile_row);
  return {factor0 * tensor_scale, factor8 * tensor_scale, bias[0], bias[kGateUp ? 1 : 8]};
}

// store_tiles with the launch's choices fixed: kRowScales, each pair's activation scale from
// column_scale (else the tensor's); kBf16Out, gate_up writes p.out_activations in bf16 (else
// fp32 to p.out). Columns past the item's pairs hold sums of zero-filled rows: computed with the
// others, never stored.
template <bool kGateUp, bool kRowFactors, bool kRowScales, bool kBf16Out, int kN, int kMTiles, class ColumnScale>
__device__ __forceinline__ float store_tiles_as(const GemmProblem& p, float (&acc)[kMTiles][kN / 2],
                                                const int (&row_tile)[kMTiles], const bool (&stores)[kMTiles],
                                                const RowOperands (&operands)[kMTiles], int row0, int rows,
                                                ColumnScale column_scale) {
  const int warp = threadIdx.x % 128 / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const float alpha = p.alpha, limit = p.limit;
  const int64_t out_stride = kGateUp ? p.n / 2 : p.n;  // between pairs' rows of the output
  float written_max = 0.0f;
#pragma unroll
  for (int m = 0; m < kMTiles; ++m) {
    if (!stores[m]) continue;
    const auto [scale0, scale8, bias0, bias8] = operands[m];
    const int tile_row = row_tile[m] * kTileRows + warp * 16 + g;  // the thread's first row; the second is 8 on
    const int unit = row_tile[m] * (kTileRows / 2) + warp * 8 + g;
    const int64_t first = (row0 + 2 * t) * out_stride + (kGateUp ? unit : tile_row);  // column 2t's output
#pragma unroll
    for (int j = 0; j < kN / 8; ++j) {
      float units[2];  // gate_up: the SwiGLU units of columns 8j + 2t and 8j + 2t + 1
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        const int column = 8 * j + 2 * t + i;
        const bool real = column < rows;
        const float a_scale = kRowScales ? (real ? column_scale(column) : 0.0f) : 1.0f;
        const float sum0 = fmaf(acc[m][4 * j + i], scale0 * a_scale, bias0);
        const float sum8 = fmaf(acc[m][4 * j + 2 + i], scale8 * a_scale, bias8);
        const int64_t at = first + (8 * j + i) * out_stride;
        if constexpr (kGateUp) {
          units[i] = swiglu(sum0, sum8, alpha, limit);
          // For an FP8 pass: the largest of the fp32 values sets its scale (the FP8 kernels' bf16
          // units are per-tensor FP8's).
          if constexpr (!kBf16Out || kRowFactors) written_max = real ? fmaxf(written_max, fabsf(units[i])) : written_max;
          if constexpr (!kBf16Out) {
            if (real) p.out[at] = units[i];
          }
        } else if (real) {
          p.out[at] = sum0;
          p.out[at + 8] = sum8;
        }
      }
      if constexpr (kGateUp && kBf16Out) {  // both units by one conversion, each to its pair's row
        const uint32_t bits = bf16x2_rn(units[0], units[1]);
        const int64_t at = first + 8 * j * out_stride;
        if (8 * j + 2 * t < rows) p.out_activations[at] = static_cast<uint16_t>(bits);
        if (8 * j + 2 * t + 1 < rows) p.out_activations[at + out_stride] = static_cast<uint16_t>(bits >> 16);
      }
    }
  }
  return written_max;
}

// Stores a warpgroup's sums of kMTiles row tiles x kN pairs (pairs row0.., `rows` of them real,
// with each tile's row_operands): each sum times its pair's activation scale (per-token schemes:
// column_scale(c), pair row0 + c's, asked for real columns only; else the tensor's) (and, with
// kRowFactors, its weight row's factor: the FP8 layout's reference scale), plus the bias; gate_up pairs a
// thread's rows g and g + 8 (gate, linear) through SwiGLU. Accumulator 4j + i: row g (i < 2) or
// g + 8 of the warp's 16, pair column 8j + 2t + (i & 1). Returns gate_up's largest |value| written
// (for p.out_amax). The launch's choices are taken once, not per value: tested per value,
// they and the IEEE exp and division made ~95 instructions a value while the tensor cores waited
// (docs/PERFORMANCE.md, twenty-third session).
template <bool kGateUp, bool kRowFactors, int kN, int kMTiles, class ColumnScale>
__device__ __forceinline__ float store_tiles(const GemmProblem& p, float (&acc)[kMTiles][kN / 2],
                                             const int (&row_tile)[kMTiles], const bool (&stores)[kMTiles],
                                             const RowOperands (&operands)[kMTiles], int row0, int rows,
                                             ColumnScale column_scale) {
  const auto as = [&](auto row_scales, auto bf16_out) {
    return store_tiles_as<kGateUp, kRowFactors, decltype(row_scales)::value, decltype(bf16_out)::value, kN, kMTiles>(
        p, acc, row_tile, stores, operands, row0, rows, column_scale);
  };
  using Yes = std::true_type;
  using No = std::false_type;
  const bool row_scales = p.a_row_scales != nullptr;
  // The FP8 kernels' (kRowFactors) gate_up writes per-tensor FP8's units in bf16 (half the bytes
  // for the quantization pass to read) and per-token's, whose rows' scales the pass takes from the
  // values, in fp32 (launch_fp8 checks): two forms, as before.
  if constexpr (kGateUp && kRowFactors) {
    return row_scales ? as(Yes{}, No{}) : as(No{}, Yes{});
  } else {
    if constexpr (kGateUp) {
      if (p.out_activations != nullptr) return row_scales ? as(Yes{}, Yes{}) : as(No{}, Yes{});
    }
    return row_scales ? as(Yes{}, No{}) : as(No{}, No{});
  }
}

// gate_up's largest |value| written by the CTA's storing threads, into p.out_amax (uniform: every
// thread of a warp calls it).
__device__ __forceinline__ void publish_written_max(const GemmProblem& p, float written_max) {
  if (p.out_amax == nullptr) return;
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) {
    written_max = fmaxf(written_max, __shfl_xor_sync(0xFFFFFFFFu, written_max, offset));
  }
  if (threadIdx.x % 32 == 0) atomicMax(p.out_amax, __float_as_uint(written_max));  // non-negative floats order like their bits
}

}  // namespace mxmoe::cuda::sm90
