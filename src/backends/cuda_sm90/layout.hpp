// How the Hopper kernels want MXFP4 weights: each thread of a warpgroup loads, with one 16-byte
// load, exactly the codes of its wgmma A fragments for 64 k (two MXFP4 blocks, four k16 steps).
//
// Rows are cut into tiles of 64 (one warpgroup's M); warp w of the warpgroup owns tile rows
// 16w..16w+15, and lane l (g = l/4, t = l%4) rows g and g+8 of those, as in every m64nNk16 A
// fragment. Per (expert, row tile, 64-k chunk), one record of kChunkBytes, the words then the
// scales, records in (expert, row tile, chunk) order: a tile's chunks are contiguous, so one bulk
// copy brings any run of them, codes and scales together.
// - words [128 threads][4]: word s holds k16 step s, the eight codes of A registers r = 0..3 at
//   (row, k) = (g, 2t), (g+8, 2t), (g, 2t+8), (g+8, 2t+8) (second element of each: k + 1). The bits
//   are placed for a cheap decode: a code's mantissa, exponent and sign bits sit where a bf16 has
//   its top mantissa bit, low exponent bits and sign (bits 6-8 and 15 of each half) once the word
//   is rotated right by 0, 4, 10 or 6 for register 0..3 (one AND after the rotation extracts the
//   register), register 3's mantissa bits by 14 instead: no four rotations of those eight bit
//   places tile a 32-bit word, and a second rotation with two ANDs and an OR (9 integer
//   instructions per word) beats shifting 8 bits left over into place (11 per word).
// - scales [4 warps][8 groups][4 bytes]: row g block 0, row g block 1, row g+8 block 0, row g+8
//   block 1 (the four lanes of a group load the same word).
// gate_up rows are reordered so that a thread's two rows are one SwiGLU unit's gate and linear row:
// tile row 16w + g is gate row 2u and 16w + g + 8 is linear row 2u + 1 of unit u = (tile row base)/2 + g.
#pragma once

#include <functional>
#include <vector>

#include "backends/cuda/layout.hpp"
#include "mxmoe/moe.hpp"

namespace mxmoe::cuda::sm90 {

constexpr int kRotation1 = 4, kRotation2 = 10, kRotation3 = 6, kMantissaRotation3 = 14;  // register 0: none

// The bit of a step's word that holds bit i (0: mantissa, 1-2: exponent, 3: sign) of element `half`
// of A register r.
constexpr int code_bit_position(int r, int half, int i) {
  const int rotation = r == 0 ? 0 : r == 1 ? kRotation1 : r == 2 ? kRotation2 : i == 0 ? kMantissaRotation3 : kRotation3;
  return ((i < 3 ? 6 + i : 15) + 16 * half + rotation) % 32;
}

constexpr int kTileRows = 64;   // weight rows per warpgroup
constexpr int kChunkK = 64;     // k per pipeline step
// One (expert, row tile, chunk) record of the layout: 128 threads' 16-byte words, 32 scale words.
constexpr int kWordBytesPerChunk = 128 * 16;
constexpr int kScaleBytesPerChunk = 32 * 4;
constexpr int kChunkBytes = kWordBytesPerChunk + kScaleBytesPerChunk;  // a multiple of 16, as bulk copies need

// The source row of tile-ordered row `row`: gate_up interleaves (gate, linear) rows, which the
// kernels want 8 rows apart (above).
int64_t source_row(int64_t row, bool gate_up);

// Sizes `words` for the records of `t` (dims multiples of 64, else std::invalid_argument naming
// `layout`) and calls fill(expert, row tile, its first record) for every (expert, row tile), in
// parallel: a packer writes the tile's chunks' records from there, kChunkBytes apart.
void fill_row_tiles(const detail::PaddedMxfp4& t, const char* layout, std::vector<uint32_t>& words,
                    const std::function<void(int64_t expert, int64_t tile, uint32_t* records)>& fill);

// `t` at its padded dims, which must be multiples of 64 (padded rows and columns: zero codes). The
// records are the words (PackedWeights::scales stays empty).
PackedWeights pack_weights(const detail::PaddedMxfp4& t, bool gate_up);

}  // namespace mxmoe::cuda::sm90
