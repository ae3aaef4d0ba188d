#include "mxmoe/scheme.hpp"

#include <array>
#include <cmath>
#include <stdexcept>

#include "mxmoe/format.hpp"

namespace mxmoe {

std::string_view scheme_name(Scheme scheme) {
  switch (scheme) {
    case Scheme::w4a16: return "w4a16";
    case Scheme::w4a8: return "w4a8";
    case Scheme::w4a4: return "w4a4";
    case Scheme::w4a32: return "w4a32";
  }
  return "unknown";
}

std::optional<Scheme> parse_scheme(std::string_view name) {
  for (Scheme s : kAllSchemes) {
    if (scheme_name(s) == name) return s;
  }
  return std::nullopt;
}

std::string scheme_names() {
  std::string names;
  for (Scheme s : kAllSchemes) {
    if (!names.empty()) names += ", ";
    names += scheme_name(s);
  }
  return names;
}

namespace {

const std::array<float, 256>& fp8_values() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> t{};
    for (int c = 0; c < 256; ++c) t[c] = fp8_e4m3_to_float(static_cast<uint8_t>(c));
    return t;
  }();
  return table;
}

void check_finite(std::span<const float> input) {
  for (size_t i = 0; i < input.size(); ++i) {
    if (!std::isfinite(input[i])) {
      throw std::domain_error("activation element " + std::to_string(i) + " is " +
                              (std::isnan(input[i]) ? "NaN" : "Inf"));
    }
  }
}

}  // namespace

float quantize_activations(Scheme scheme, std::span<const float> input, int64_t rows, int64_t cols,
                           std::span<float> output) {
  const size_t n = static_cast<size_t>(rows * cols);
  if (input.size() != n || output.size() != n) {
    throw std::invalid_argument("quantize_activations: spans do not hold " + std::to_string(rows) +
                                " x " + std::to_string(cols) + " values");
  }
  switch (scheme) {
    case Scheme::w4a32:
      check_finite(input);
      std::copy(input.begin(), input.end(), output.begin());
      return 1.0f;
    case Scheme::w4a16:
      check_finite(input);
      for (size_t i = 0; i < n; ++i) output[i] = round_to_bf16(input[i]);
      return 1.0f;
    case Scheme::w4a8: {
      const float scale = fp8_dynamic_scale(input);  // also rejects non-finite values
      const auto& values = fp8_values();
      for (size_t i = 0; i < n; ++i) output[i] = values[float_to_fp8_e4m3(input[i] / scale)];
      return scale;
    }
    case Scheme::w4a4: {
      if (cols % kMxBlock != 0) {
        throw std::invalid_argument("w4a4 activations need a multiple of 32 columns, got " +
                                    std::to_string(cols));
      }
      uint8_t packed[kMxBlockBytes];
      for (size_t b = 0; b < n / kMxBlock; ++b) {
        const float* block = input.data() + b * kMxBlock;
        const float scale = e8m0_to_float(quantize_mxfp4_block(block, packed));
        for (int i = 0; i < kMxBlock; ++i) {
          output[b * kMxBlock + i] = e2m1_to_float(mxfp4_code(packed, i)) * scale;
        }
      }
      return 1.0f;
    }
  }
  throw std::invalid_argument("quantize_activations: unknown scheme");
}

}  // namespace mxmoe
