// Strip products with AVX512-BF16 dot products, for CPUs that have them (AMD Zen 4 and later,
// Intel Cooper Lake and Sapphire Rapids and later), chosen at run time.
//
// Why: on these CPUs the fp32 kernels are bound by vector instructions, not memory, when few
// tokens share the weights. vpermw decodes 32 codes per shuffle into bf16 (E2M1 values are exact
// in bf16), and vdpbf16ps does 32 multiply-adds per instruction, halving the instruction count.
// The products stay exact: every quantized activation (bf16, FP8 or E2M1 times a power of two) is
// a bf16 value, and bf16 x bf16 fits a float. The instruction flushes subnormal inputs to zero,
// which only touches activations below 2^-126.
//
// Uses the packed layout of kernels.hpp: the low 16 bits of a row's word hold k-steps 0, 2, 4, 6
// and the high 16 bits k-steps 1, 3, 5, 7, so nibble j of each half gives the pair (2j, 2j + 1) in
// adjacent 16-bit lanes: exactly the pairs vdpbf16ps sums.
#include "backends/cpu/kernels.hpp"
#include "mxmoe/codecs.hpp"

#include <cstdint>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

namespace mxmoe::cpu {

namespace {

// The functions below are compiled for AVX512-BF16 (called only where the CPU has it).
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))), apply_to = function)
#else
#pragma GCC push_options
// GCC 12 warns about the deliberately undefined lanes inside its own AVX-512 intrinsics.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512bf16")
#endif

// bf16 bit patterns of the 16 E2M1 codes, in the low 16 lanes of a 32-lane word table.
inline __m512i e2m1_bf16_table() {
  return _mm512_set_epi16(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,  //
                          static_cast<short>(0xC0C0), static_cast<short>(0xC080), static_cast<short>(0xC040),
                          static_cast<short>(0xC000), static_cast<short>(0xBFC0), static_cast<short>(0xBF80),
                          static_cast<short>(0xBF00), static_cast<short>(0x8000), 0x40C0, 0x4080, 0x4040, 0x4000,
                          0x3FC0, 0x3F80, 0x3F00, 0x0000);
}

inline __m512 decode_scales(const uint8_t* p) {
  const __m512i codes = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  const __mmask16 zero = _mm512_cmpeq_epi32_mask(codes, _mm512_setzero_si512());
  const __m512i bits = _mm512_mask_mov_epi32(_mm512_slli_epi32(codes, 23), zero, _mm512_set1_epi32(codec::kE8m0ZeroFloatBits));
  return _mm512_castsi512_ps(bits);
}

inline __m512 dot(__m512 acc, __m512i weights, const uint16_t* activation_pair) {
  const __m512i pair = _mm512_set1_epi32(*reinterpret_cast<const int32_t*>(activation_pair));
  return _mm512_dpbf16_ps(acc, reinterpret_cast<__m512bh&>(weights), reinterpret_cast<const __m512bh&>(pair));
}

// MR token rows against the 32 rows of one strip.
template <int MR>
__attribute__((always_inline)) inline void strip_rows(const uint8_t* tiles, const uint8_t* scales, int64_t kblocks,
                                                      const uint16_t* A, int64_t lda, float* C, int64_t ldc) {
  const __m512i table = e2m1_bf16_table();
  const __m512i nibble = _mm512_set1_epi16(0x000F);
  __m512 acc[MR][2];
#pragma GCC unroll 4
  for (int m = 0; m < MR; ++m) acc[m][0] = acc[m][1] = _mm512_setzero_ps();
  for (int64_t b = 0; b < kblocks; ++b) {
    // Tiles four blocks ahead, before the hardware prefetcher would (it restarts at every strip).
    // Prefetches never fault, so running past the strip's end is harmless; integer arithmetic
    // keeps the pointer computation defined.
    const uintptr_t ahead = reinterpret_cast<uintptr_t>(tiles) + static_cast<uintptr_t>(b + 4) * kTileBytes;
    for (int line = 0; line < kTileBytes; line += 64) _mm_prefetch(reinterpret_cast<const char*>(ahead + line), _MM_HINT_T0);
    // Two partial sums per output vector (even and odd planes) keep the dot-product chains short.
    __m512 part[MR][2][2];
#pragma GCC unroll 4
    for (int m = 0; m < MR; ++m) {
#pragma GCC unroll 2
      for (int g = 0; g < 2; ++g) part[m][g][0] = part[m][g][1] = _mm512_setzero_ps();
    }
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) {
      const uint8_t* group = tiles + b * kTileBytes + q * kGroupBytes;
      const uint16_t* a = A + b * 32 + q * 8;
#pragma GCC unroll 2
      for (int g = 0; g < 2; ++g) {  // rows 0..15, 16..31
        const __m512i words = _mm512_loadu_si512(group + g * 64);
        const __m512i plane0 = _mm512_and_si512(words, nibble);
        const __m512i plane1 = _mm512_and_si512(_mm512_srli_epi16(words, 4), nibble);
        const __m512i plane2 = _mm512_and_si512(_mm512_srli_epi16(words, 8), nibble);
        const __m512i plane3 = _mm512_srli_epi16(words, 12);
        const __m512i w0 = _mm512_permutexvar_epi16(plane0, table);
        const __m512i w1 = _mm512_permutexvar_epi16(plane1, table);
        const __m512i w2 = _mm512_permutexvar_epi16(plane2, table);
        const __m512i w3 = _mm512_permutexvar_epi16(plane3, table);
#pragma GCC unroll 4
        for (int m = 0; m < MR; ++m) {
          part[m][g][0] = dot(part[m][g][0], w0, a + m * lda + 0);
          part[m][g][1] = dot(part[m][g][1], w1, a + m * lda + 2);
          part[m][g][0] = dot(part[m][g][0], w2, a + m * lda + 4);
          part[m][g][1] = dot(part[m][g][1], w3, a + m * lda + 6);
        }
      }
    }
#pragma GCC unroll 2
    for (int g = 0; g < 2; ++g) {
      const __m512 scale = decode_scales(scales + b * kStripRows + 16 * g);
#pragma GCC unroll 4
      for (int m = 0; m < MR; ++m) {
        acc[m][g] = _mm512_fmadd_ps(_mm512_add_ps(part[m][g][0], part[m][g][1]), scale, acc[m][g]);
      }
    }
  }
#pragma GCC unroll 4
  for (int m = 0; m < MR; ++m) {
    _mm512_storeu_ps(C + m * ldc, acc[m][0]);
    _mm512_storeu_ps(C + m * ldc + 16, acc[m][1]);
  }
}

void strip_matmul_avx512bf16(const uint8_t* tiles, const uint8_t* scales, int64_t kblocks, const uint16_t* A,
                             int64_t lda, int64_t M, float* C, int64_t ldc) {
  int64_t m0 = 0;
  for (; m0 + 4 <= M; m0 += 4) strip_rows<4>(tiles, scales, kblocks, A + m0 * lda, lda, C + m0 * ldc, ldc);
  switch (M - m0) {
    case 3: strip_rows<3>(tiles, scales, kblocks, A + m0 * lda, lda, C + m0 * ldc, ldc); break;
    case 2: strip_rows<2>(tiles, scales, kblocks, A + m0 * lda, lda, C + m0 * ldc, ldc); break;
    case 1: strip_rows<1>(tiles, scales, kblocks, A + m0 * lda, lda, C + m0 * ldc, ldc); break;
    default: break;
  }
}

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif

}  // namespace

bool bf16_dot_available() {
  static const bool available = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
  }();
  return available;
}

void strip_matmul_bf16(const uint8_t* tiles, const uint8_t* scales, int64_t kblocks, const uint16_t* A, int64_t lda,
                       int64_t M, float* C, int64_t ldc) {
  strip_matmul_avx512bf16(tiles, scales, kblocks, A, lda, M, C, ldc);
}

}  // namespace mxmoe::cpu

#else

namespace mxmoe::cpu {

bool bf16_dot_available() { return false; }

void strip_matmul_bf16(const uint8_t*, const uint8_t*, int64_t, const uint16_t*, int64_t, int64_t, float*, int64_t) {}

}  // namespace mxmoe::cpu

#endif
