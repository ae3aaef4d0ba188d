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
  w4a8_token,  // activations quantized to FP8 E4M3 with one dynamic scale per token (per row)
};

inline constexpr Scheme kAllSchemes[] = {Scheme::w4a16, Scheme::w4a8, Scheme::w4a4, Scheme::w4a32, Scheme::w4a8_token};

// What a scheme does to activations, in one table that the reference, the backends and the oracle
// read instead of testing for particular schemes.
enum class ActivationFormat { bf16, fp8_e4m3, mxfp4, fp32 };
enum class ScaleGranularity {
  none,        // the values are the activations' own (bf16, fp32)
  per_tensor,  // one dynamic scale for the whole tensor (w4a8: amax / 448)
  per_token,   // one dynamic scale per row: a token's hidden state, a (token, slot) pair's intermediate
  per_block,   // one power-of-two scale per 32 values along the reduction (MXFP4)
};

struct SchemeTraits {
  std::string_view name;
  ActivationFormat activation;
  ScaleGranularity scale;
  int gemm_input_bytes;    // bytes per activation in a GPU GEMM's input (MXFP4 values travel as bf16)
  int min_tensor_core_sm;  // oldest compute capability with tensor cores for that input; 0: none
};

inline constexpr SchemeTraits kSchemeTraits[] = {
    {"w4a16", ActivationFormat::bf16, ScaleGranularity::none, 2, 80},
    {"w4a8", ActivationFormat::fp8_e4m3, ScaleGranularity::per_tensor, 1, 89},
    {"w4a4", ActivationFormat::mxfp4, ScaleGranularity::per_block, 2, 80},
    {"w4a32", ActivationFormat::fp32, ScaleGranularity::none, 4, 0},
    {"w4a8_token", ActivationFormat::fp8_e4m3, ScaleGranularity::per_token, 1, 89},
};

constexpr const SchemeTraits& scheme_traits(Scheme scheme) { return kSchemeTraits[static_cast<int>(scheme)]; }

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
// batch with the whole batch's scale). A scheme with a scale per row (w4a8_token) needs the
// overload below (std::logic_error here).
float quantize_activations(Scheme scheme, std::span<const float> input, int64_t rows, int64_t cols,
                           std::span<float> output, std::optional<float> given_scale = std::nullopt);
// The same for every scheme, with each row's scale written to `row_scales` (rows values): the
// row's own amax / 448 for per-token schemes, the tensor scale for per-tensor ones, 1 otherwise.
// Returns the tensor scale (1 unless per-tensor); `given_scale` as above, for per-tensor schemes.
float quantize_activations(Scheme scheme, std::span<const float> input, int64_t rows, int64_t cols,
                           std::span<float> output, std::span<float> row_scales,
                           std::optional<float> given_scale = std::nullopt);

// The same in two steps, so the work can be split across threads with identical results:
// the tensor scale from the largest magnitude of the whole tensor (finite_abs_max of every part,
// combined with max), then any set of rows quantized with that scale.
float activation_tensor_scale(Scheme scheme, float abs_max);
void quantize_activation_rows(Scheme scheme, std::span<const float> input, int64_t rows, int64_t cols,
                              float tensor_scale, std::span<float> output);

}  // namespace mxmoe
