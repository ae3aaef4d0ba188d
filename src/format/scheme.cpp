#include "mxmoe/scheme.hpp"

#include <algorithm>
#include <array>
#include <iterator>
#include <cmath>
#include <stdexcept>

#include "mxmoe/format.hpp"

namespace mxmoe {

static_assert(std::size(kSchemeTraits) == std::size(kAllSchemes));

std::string_view scheme_name(Scheme scheme) { return scheme_traits(scheme).name; }

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

}  // namespace

float activation_tensor_scale(Scheme scheme, float abs_max) {
  if (scheme_traits(scheme).scale != ScaleGranularity::per_tensor) return 1.0f;
  return codec::fp8_dynamic_scale(abs_max);
}

void quantize_activation_rows(Scheme scheme, std::span<const float> input, int64_t rows, int64_t cols,
                              float tensor_scale, std::span<float> output) {
  const size_t n = static_cast<size_t>(rows * cols);
  if (input.size() != n || output.size() != n) {
    throw std::invalid_argument("quantize_activations: spans do not hold " + std::to_string(rows) + " x " +
                                std::to_string(cols) + " values");
  }
  switch (scheme_traits(scheme).activation) {
    case ActivationFormat::fp32:
      std::copy(input.begin(), input.end(), output.begin());
      return;
    case ActivationFormat::bf16:
      for (size_t i = 0; i < n; ++i) output[i] = round_to_bf16(input[i]);
      return;
    case ActivationFormat::fp8_e4m3: {
      const auto& values = fp8_values();
      for (size_t i = 0; i < n; ++i) output[i] = values[float_to_fp8_e4m3(input[i] / tensor_scale)];
      return;
    }
    case ActivationFormat::mxfp4: {
      if (cols % kMxBlock != 0) {
        throw std::invalid_argument("w4a4 activations need a multiple of 32 columns, got " + std::to_string(cols));
      }
      uint8_t packed[kMxBlockBytes];
      for (size_t b = 0; b < n / kMxBlock; ++b) {
        const float* block = input.data() + b * kMxBlock;
        const float scale = e8m0_to_float(quantize_mxfp4_block(block, packed));
        for (int i = 0; i < kMxBlock; ++i) output[b * kMxBlock + i] = e2m1_to_float(mxfp4_code(packed, i)) * scale;
      }
      return;
    }
  }
  throw std::invalid_argument("quantize_activations: unknown scheme");
}

float quantize_activations(Scheme scheme, std::span<const float> input, int64_t rows, int64_t cols,
                           std::span<float> output, std::optional<float> given_scale) {
  if (scheme_traits(scheme).scale == ScaleGranularity::per_token) {
    throw std::logic_error(std::string("quantize_activations: ") + std::string(scheme_name(scheme)) +
                           " has a scale per row: pass row_scales");
  }
  float abs_max = 0.0f;
  try {
    abs_max = finite_abs_max(input);  // every scheme rejects NaN and Inf
  } catch (const std::domain_error& e) {
    throw std::domain_error(std::string("activation ") + e.what());
  }
  const float scale = given_scale ? *given_scale : activation_tensor_scale(scheme, abs_max);
  quantize_activation_rows(scheme, input, rows, cols, scale, output);
  return scale;
}

float quantize_activations(Scheme scheme, std::span<const float> input, int64_t rows, int64_t cols,
                           std::span<float> output, std::span<float> row_scales, std::optional<float> given_scale) {
  if (rows < 0 || row_scales.size() != static_cast<size_t>(rows)) {
    throw std::invalid_argument("quantize_activations: " + std::to_string(row_scales.size()) + " row scales for " +
                                std::to_string(rows) + " rows");
  }
  if (scheme_traits(scheme).scale != ScaleGranularity::per_token) {
    const float scale = quantize_activations(scheme, input, rows, cols, output, given_scale);
    std::fill(row_scales.begin(), row_scales.end(), scale);
    return scale;
  }
  if (input.size() != static_cast<size_t>(rows * cols) || output.size() != input.size()) {
    throw std::invalid_argument("quantize_activations: spans do not hold " + std::to_string(rows) + " x " +
                                std::to_string(cols) + " values");
  }
  for (int64_t r = 0; r < rows; ++r) {
    const auto row = input.subspan(r * cols, cols);
    float abs_max = 0.0f;
    try {
      abs_max = finite_abs_max(row);  // every scheme rejects NaN and Inf
    } catch (const std::domain_error& e) {
      throw std::domain_error("activation row " + std::to_string(r) + ": " + e.what());
    }
    row_scales[r] = codec::fp8_dynamic_scale(abs_max);
    quantize_activation_rows(scheme, row, 1, cols, row_scales[r], output.subspan(r * cols, cols));
  }
  return 1.0f;
}

}  // namespace mxmoe
