#include <cmath>
#include <stdexcept>
#include <string>

#include "mxmoe/format.hpp"

namespace mxmoe {

float fp8_e4m3_to_float(uint8_t code) { return codec::fp8_e4m3_value(code); }

uint8_t float_to_fp8_e4m3(float value) { return codec::fp8_e4m3_code(value); }

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
  return codec::fp8_dynamic_scale(finite_abs_max(values));
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
