// Number formats of MXFP4 MoE layers: E2M1 (FP4), E8M0 scales, MXFP4 blocks, FP8 E4M3, BF16 and F16.
//
// All conversions round to nearest, ties to even, and are exact where the target can hold the value.
#pragma once

#include <cstdint>
#include <span>

#include "mxmoe/codecs.hpp"

namespace mxmoe {

// ---------------------------------------------------------------------------------------------
// E2M1 (FP4). Code bits: [3] sign, [2:1] exponent (bias 1), [0] mantissa.
// Magnitudes of codes 0..7: 0, 0.5, 1, 1.5, 2, 3, 4, 6. Codes 8..15 are their negatives (8 = -0).
inline constexpr float kE2m1Max = 6.0f;

// Value of the low four bits of `code`.
float e2m1_to_float(uint8_t code);

// Round-to-nearest-even onto the E2M1 grid, saturating to +-6 (also for +-Inf).
// Throws std::domain_error for NaN: E2M1 has no NaN, and a silent code would hide the problem.
uint8_t float_to_e2m1(float value);

// ---------------------------------------------------------------------------------------------
// E8M0 scale: the value 2^(code - 127); code 255 is NaN.
inline constexpr uint8_t kE8m0Nan = 0xFF;
inline constexpr uint8_t kE8m0One = 127;

// 2^(code - 127) as a double (exact for every code), NaN for 255.
double e8m0_to_double(uint8_t code);
// 2^(code - 127) as a float: exact for codes 1..254; code 0 is the subnormal 2^-127; NaN for 255.
float e8m0_to_float(uint8_t code);

// ---------------------------------------------------------------------------------------------
// MXFP4 (OCP Microscaling v1.0): blocks of 32 E2M1 elements sharing one E8M0 scale.
// Packing follows the gpt-oss checkpoints: 16 bytes per block, element 2i in the low nibble of
// byte i and element 2i+1 in its high nibble.
inline constexpr int kMxBlock = 32;
inline constexpr int kMxBlockBytes = kMxBlock / 2;

// Code of element `i` of a packed row.
inline uint8_t mxfp4_code(const uint8_t* packed, int64_t i) {
  const uint8_t byte = packed[i >> 1];
  return (i & 1) ? static_cast<uint8_t>(byte >> 4) : static_cast<uint8_t>(byte & 0x0F);
}

// Quantizes one block of 32 floats; writes 16 packed bytes and returns the E8M0 scale code.
//
// Scale rule (OCP MX v1.0): shared exponent = floor(log2(amax)) - 2, where 2 is the exponent of
// E2M1's largest power of two, clamped to [-127, 127]; elements are divided by 2^shared, rounded
// to nearest-even on the E2M1 grid and clamped to +-6.
// - A block of all zeros gets scale code 127 (2^0): any scale holds zeros exactly, and 1.0 keeps
//   kernels away from subnormal scale arithmetic. Signs of zeros are kept (-0 becomes code 8).
// - A block containing NaN or +-Inf is rejected with std::domain_error naming the element: E2M1
//   cannot hold either, and the spec's NaN scale would poison all 32 elements silently.
uint8_t quantize_mxfp4_block(const float* values, uint8_t* packed);

// Quantizes a row of `values.size()` floats (a multiple of 32) into packed bytes (size/2) and
// scales (size/32). Throws std::invalid_argument on size mismatches, std::domain_error as above.
void quantize_mxfp4(std::span<const float> values, std::span<uint8_t> packed,
                    std::span<uint8_t> scales);

// Inverse of quantize_mxfp4. A NaN scale (255) throws std::domain_error. Codes near the top of the
// scale range overflow float (6 * 2^127 > FLT_MAX) and come out as +-Inf.
void dequantize_mxfp4(std::span<const uint8_t> packed, std::span<const uint8_t> scales,
                      std::span<float> values);

// ---------------------------------------------------------------------------------------------
// FP8 E4M3 (OCP "E4M3FN"): bias 7, no infinities, max 448, NaN = S.1111.111, subnormals down to
// 2^-9.
inline constexpr float kFp8E4m3Max = 448.0f;
inline constexpr uint8_t kFp8E4m3Nan = 0x7F;

float fp8_e4m3_to_float(uint8_t code);
// Round-to-nearest-even with saturation: finite values beyond +-448 and +-Inf become +-448
// (the OCP "satfinite" conversion); NaN becomes the NaN code.
uint8_t float_to_fp8_e4m3(float value);

// ---------------------------------------------------------------------------------------------
// BF16: the upper half of an IEEE float. NaN stays a (quiet) NaN; overflow rounds to Inf.
// Inline: activation quantization calls these for every element.
inline uint16_t float_to_bf16(float value) { return codec::bf16_bits(value); }
inline float bf16_to_float(uint16_t bits) { return codec::bf16_value(bits); }
// IEEE half (F16) -> float, exact for every code.
inline float f16_to_float(uint16_t bits) { return codec::f16_value(bits); }
inline float round_to_bf16(float value) { return bf16_to_float(float_to_bf16(value)); }

// ---------------------------------------------------------------------------------------------
// FP8 activation quantization with one scale per tensor: value ~= code * scale.
// The dynamic scale is amax / 448 (computed in float), or 1 when the tensor is all zeros; a static
// scale must be finite and positive. Non-finite inputs throw std::domain_error.
float fp8_dynamic_scale(std::span<const float> values);
// The largest magnitude; NaN or Inf throws std::domain_error naming the element.
float finite_abs_max(std::span<const float> values);
// Writes codes = fp8(value / scale), the division done in float.
void quantize_fp8(std::span<const float> values, float scale, std::span<uint8_t> codes);
void dequantize_fp8(std::span<const uint8_t> codes, float scale, std::span<float> values);

}  // namespace mxmoe
