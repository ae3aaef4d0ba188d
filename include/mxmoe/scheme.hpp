// Quantization schemes: weights are always MXFP4; the scheme names what happens to activations
// before each expert GEMM.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace mxmoe {

enum class Scheme {
  w4a16,  // activations rounded to bf16
  w4a8,   // activations quantized to FP8 E4M3 with one dynamic scale per tensor
  w4a4,   // activations quantized to MXFP4 along the reduction dimension
  w4a32,  // activations kept in fp32: the exact mode of the reference, for checking checkpoints
};

inline constexpr Scheme kAllSchemes[] = {Scheme::w4a16, Scheme::w4a8, Scheme::w4a4, Scheme::w4a32};

std::string_view scheme_name(Scheme scheme);
std::optional<Scheme> parse_scheme(std::string_view name);
// "w4a16, w4a8, w4a4, w4a32", for error messages.
std::string scheme_names();

// Applies the scheme's activation quantization to a row-major [rows, cols] tensor and writes the
// quantized values as floats, each exactly representable (a bf16 value, an FP8 E4M3 value, or an
// E2M1 value times its block's power-of-two scale). The returned tensor scale multiplies every
// value back to the activation's magnitude: the FP8 per-tensor scale for w4a8, 1 otherwise.
// w4a4 needs cols to be a multiple of 32. NaN or Inf activations throw std::domain_error.
// `given_scale`, when set, is used instead of the input's own w4a8 scale (checking a sample of a
// batch with the whole batch's scale).
float quantize_activations(Scheme scheme, std::span<const float> input, int64_t rows, int64_t cols,
                           std::span<float> output, std::optional<float> given_scale = std::nullopt);

// The same in two steps, so the work can be split across threads with identical results:
// the tensor scale from the largest magnitude of the whole tensor (finite_abs_max of every part,
// combined with max), then any set of rows quantized with that scale.
float activation_tensor_scale(Scheme scheme, float abs_max);
void quantize_activation_rows(Scheme scheme, std::span<const float> input, int64_t rows, int64_t cols,
                              float tensor_scale, std::span<float> output);

}  // namespace mxmoe
