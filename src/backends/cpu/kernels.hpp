// SIMD kernels of the CPU backend (Highway, with runtime dispatch to AVX-512, AVX2 or portable
// code). They multiply activations by MXFP4 weights decoded on the fly; nothing here knows about
// experts or schemes.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "moe/padded_view.hpp"
#include "mxmoe/moe.hpp"

namespace mxmoe::cpu {

// Weights are repacked once into strips of 32 output rows. Within a strip, each 32-wide block of
// the reduction dim is a tile of 512 bytes: four groups of 8 k-steps, each 32 little-endian 32-bit
// words, one per row. Word n of group q holds row n's codes for k = 8q + {0, 2, 4, 6} in nibbles
// 0..3 and k = 8q + {1, 3, 5, 7} in nibbles 4..7. A plain vector load thus gives one code per row
// in every nibble (no widening shuffle), and the even/odd split puts consecutive k-pairs in the
// two 16-bit halves, as bf16 dot-product instructions want them. The strip's 32 scale codes for
// the block follow in row order. All gpt-oss dims are multiples of 32: strips never have tails.
inline constexpr int kStripRows = 32;
inline constexpr int kTileBytes = 16 * kStripRows;
inline constexpr int kGroupBytes = 4 * kStripRows;  // 8 k-steps of one strip

// Position in a 32-bit word (nibble index) of k-step 8q + i, i < 8.
constexpr int nibble_of_step(int i) { return (i % 2) * 4 + i / 2; }

struct PackedMatrix {
  int64_t groups = 0;  // experts
  int64_t rows = 0;    // N, a multiple of 32
  int64_t cols = 0;    // K, a multiple of 32
  std::vector<uint8_t> tiles;
  std::vector<uint8_t> scales;

  int64_t strips() const { return rows / kStripRows; }
  int64_t kblocks() const { return cols / 32; }
  const uint8_t* strip_tiles(int64_t group, int64_t strip) const {
    return tiles.data() + (group * strips() + strip) * kblocks() * kTileBytes;
  }
  const uint8_t* strip_scales(int64_t group, int64_t strip) const {
    return scales.data() + (group * strips() + strip) * kblocks() * kStripRows;
  }
};

// Repacks `t` at its padded dims; packed row r of a group is row source_row(r) of the padded tensor.
PackedMatrix pack_matrix(const detail::PaddedMxfp4& t, const std::function<int64_t(int64_t)>& source_row);

// Activation rows for a strip product: fp32 always; bf16 copies (exact, since quantized activations
// are bf16 values) when the caller made them for the bf16 dot-product kernels.
struct Activations {
  const float* f32 = nullptr;
  const uint16_t* bf16 = nullptr;  // may be null
  int64_t stride = 0;              // elements between rows, the same for both
};

// C[m, 0:32) = sum_k A[m, k] * W[strip row, k] for m < M; C has row stride ldc. `panel` is scratch
// of at least K * 32 floats, used when M is large enough to decode the strip once and reuse it.
void strip_matmul(const uint8_t* tiles, const uint8_t* scales, int64_t kblocks, const Activations& A, int64_t M,
                  float* C, int64_t ldc, float* panel);

// Whether this CPU runs the AVX512-BF16 kernels (then callers should pass bf16 activations). They
// win at every batch size: even re-decoding per 4 token rows, vdpbf16ps outruns an fp32 panel.
bool bf16_dot_available();

// The AVX512-BF16 strip product (kernels_avx512bf16.cpp); only when bf16_dot_available().
void strip_matmul_bf16(const uint8_t* tiles, const uint8_t* scales, int64_t kblocks, const uint16_t* A, int64_t lda,
                       int64_t M, float* C, int64_t ldc);

// gpt-oss SwiGLU on a gate_up strip packed as [16 gates, 16 linears]: for each of M rows m, with
// its activation scale s = row_scales[m], y[u] = swiglu(C[u] * s + bias[u], C[16 + u] * s + bias[16 + u]).
void swiglu_strip(const float* C, int64_t ldc, int64_t M, const float* row_scales, const float* bias, float alpha,
                  float limit, float* y, int64_t ldy);

// C[m, 0:32) = C[m, 0:32) * row_scales[m] + bias[0:32) for m < M.
void scale_bias_strip(float* C, int64_t ldc, int64_t M, const float* row_scales, const float* bias);

// out[t, :] = sum_j weights[t*k + j] * rows[index[t*k + j], :], j in order, for t in [begin, end).
void weighted_sum_rows(const float* rows, int64_t cols, const int64_t* index, const float* weights, int k,
                       int64_t begin, int64_t end, float* out);

// The instruction set the dispatcher picked on this machine ("AVX3", "AVX2", "EMU128", ...).
const char* kernel_target();

// Tests and benchmarks pin the kernels to one instruction set, so every path is checked on a
// machine that would otherwise always take its best one. `best` undoes it.
enum class KernelIsa { best, avx512_bf16, avx512, avx2, portable };
const char* kernel_isa_name(KernelIsa isa);
// The instruction sets this machine can run, best first.
std::vector<KernelIsa> runnable_kernel_isas();
// Returns false (and changes nothing) when this machine cannot run `isa`.
bool pin_kernels_for_test(KernelIsa isa);

}  // namespace mxmoe::cpu
