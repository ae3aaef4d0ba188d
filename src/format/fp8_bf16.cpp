#include <bit>
#include <cmath>
#include <stdexcept>
#include <string>

#include "mxmoe/format.hpp"

namespace mxmoe {

float fp8_e4m3_to_float(uint8_t code) {
  const int exponent = (code >> 3) & 0xF;
  const int mantissa = code & 0x7;
  if (exponent == 0xF && mantissa == 0x7) return std::nanf("");
  const float magnitude = exponent == 0 ? std::ldexp(static_cast<float>(mantissa), -9)
                                        : std::ldexp(1.0f + mantissa / 8.0f, exponent - 7);
  return (code & 0x80) ? -magnitude : magnitude;
}

uint8_t float_to_fp8_e4m3(float value) {
  const uint32_t bits = std::bit_cast<uint32_t>(value);
  const uint8_t sign = static_cast<uint8_t>((bits >> 24) & 0x80);
  const uint32_t magnitude_bits = bits & 0x7FFFFFFFu;
  if (magnitude_bits > 0x7F800000u) return sign | kFp8E4m3Nan;
  if (magnitude_bits >= 0x43E00000u) return sign | 0x7E;  // >= 448 (and Inf): saturate
  const float a = std::bit_cast<float>(magnitude_bits);
  if (a < 0x1p-6f) {
    // Subnormal range, quantum 2^-9: the scaling is exact and nearbyint rounds to even. A result
    // of 8 is the smallest normal, code 0x08, so no special case is needed.
    return static_cast<uint8_t>(sign | static_cast<uint8_t>(std::nearbyint(a * 512.0f)));
  }
  // Keep 3 of float's 23 mantissa bits, rounding the other 20 to nearest-even; a carry out of the
  // mantissa correctly bumps the exponent.
  const uint32_t exponent = (magnitude_bits >> 23) - 127 + 7;
  const uint32_t mantissa = magnitude_bits & 0x7FFFFFu;
  uint32_t code = (exponent << 3) | (mantissa >> 20);
  const uint32_t rest = mantissa & 0xFFFFFu;
  if (rest > 0x80000u || (rest == 0x80000u && (code & 1u))) ++code;
  if (code > 0x7Eu) code = 0x7Eu;
  return static_cast<uint8_t>(sign | code);
}

float finite_abs_max(std::span<const float> values) {
  float amax = 0.0f;
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      throw std::domain_error("element " + std::to_string(i) + " is " + (std::isnan(values[i]) ? "NaN" : "Inf"));
    }
    amax = std::fmax(amax, std::fabs(values[i]));
  }
  return amax;
}

float fp8_dynamic_scale(std::span<const float> values) {
  const float amax = finite_abs_max(values);
  return amax > 0.0f ? amax / kFp8E4m3Max : 1.0f;
}

void quantize_fp8(std::span<const float> values, float scale, std::span<uint8_t> codes) {
  if (!(std::isfinite(scale) && scale > 0.0f)) {
    throw std::invalid_argument("fp8 quantization: scale " + std::to_string(scale) +
                                " must be finite and positive");
  }
  if (codes.size() != values.size()) throw std::invalid_argument("quantize_fp8: size mismatch");
  for (size_t i = 0; i < values.size(); ++i) {
    if (std::isnan(values[i])) {
      throw std::domain_error("fp8 quantization: element " + std::to_string(i) + " is NaN");
    }
    codes[i] = float_to_fp8_e4m3(values[i] / scale);
  }
}

void dequantize_fp8(std::span<const uint8_t> codes, float scale, std::span<float> values) {
  if (codes.size() != values.size()) throw std::invalid_argument("dequantize_fp8: size mismatch");
  for (size_t i = 0; i < codes.size(); ++i) values[i] = fp8_e4m3_to_float(codes[i]) * scale;
}

}  // namespace mxmoe
