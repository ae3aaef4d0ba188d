// The gpt-oss MoE layer: its shape, its weights in MXFP4, routing, and the float64 reference.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "mxmoe/scheme.hpp"

namespace mxmoe {

struct MoeShape {
  int hidden = 0;        // H
  int intermediate = 0;  // I
  int experts = 0;       // E
  int top_k = 0;         // k

  bool operator==(const MoeShape&) const = default;
  std::string to_string() const;
};

// gpt-oss SwiGLU: gate = min(gate, limit); lin = clamp(lin, -limit, limit);
// y = gate * sigmoid(alpha * gate) * (lin + 1).
struct SwigluParams {
  float alpha = 1.702f;
  float limit = 7.0f;
};

// A stack of MXFP4 matrices [groups, rows, cols], quantized along cols, in the gpt-oss checkpoint
// layout: `blocks` is [groups, rows, cols/32, 16] bytes, `scales` is [groups, rows, cols/32].
struct Mxfp4Tensor {
  int64_t groups = 0;
  int64_t rows = 0;
  int64_t cols = 0;
  std::vector<uint8_t> blocks;
  std::vector<uint8_t> scales;

  Mxfp4Tensor() = default;
  Mxfp4Tensor(int64_t groups, int64_t rows, int64_t cols);  // zeros (scale code 127)

  int64_t blocks_per_row() const { return cols / 32; }
  const uint8_t* row_blocks(int64_t group, int64_t row) const {
    return blocks.data() + (group * rows + row) * cols / 2;
  }
  uint8_t* row_blocks(int64_t group, int64_t row) { return blocks.data() + (group * rows + row) * cols / 2; }
  const uint8_t* row_scales(int64_t group, int64_t row) const {
    return scales.data() + (group * rows + row) * blocks_per_row();
  }
  uint8_t* row_scales(int64_t group, int64_t row) {
    return scales.data() + (group * rows + row) * blocks_per_row();
  }
  size_t bytes() const { return blocks.size() + scales.size(); }

  // Quantizes one float row of `cols` values into (group, row).
  void set_row(int64_t group, int64_t row, std::span<const float> values);
  // Dequantizes (group, row) into `cols` doubles (exact for every scale).
  void row_to_double(int64_t group, int64_t row, double* out) const;
};

// One MoE layer. Weights follow the gpt-oss layout: gate_up rows interleave gate (even rows) and
// linear (odd rows) units; all biases are stored as float.
struct MoeLayer {
  MoeShape shape;
  SwigluParams swiglu;
  std::vector<float> router_weight;  // [E, H]
  std::vector<float> router_bias;    // [E]
  Mxfp4Tensor gate_up;               // [E, 2I, H]
  std::vector<float> gate_up_bias;   // [E, 2I]
  Mxfp4Tensor down;                  // [E, H, I]
  std::vector<float> down_bias;      // [E, H]

  // An all-zero layer (weights zero, biases zero) of the given shape.
  static MoeLayer zeros(const MoeShape& shape);

  // Throws std::invalid_argument naming the first inconsistency: sizes that do not match the
  // shape, dims that are not multiples of 32, top_k out of range, NaN scale codes, non-finite
  // router weights or biases.
  void validate() const;
  size_t weight_bytes() const;
};

// About how much host memory one forward of `tokens` tokens allocates beyond the weights (hidden
// states, routing, intermediates, outputs): what admission control compares with the memory
// available before anything is allocated.
uint64_t forward_memory_bytes(const MoeShape& shape, int64_t tokens);
// The bytes of one layer's weights and biases in the checkpoint format.
uint64_t layer_weight_bytes(const MoeShape& shape);

// Routing of T tokens: for token t, expert_ids[t*k + j] with weight weights[t*k + j], j < k,
// ordered by decreasing router logit.
struct Routing {
  int tokens = 0;
  int top_k = 0;
  std::vector<int32_t> expert_ids;
  std::vector<float> weights;
};

// gpt-oss routing in float64: logits = x W_r^T + b_r, the k largest logits (equal logits: the lower
// expert index first), softmax over those k only.
Routing route(const MoeLayer& layer, std::span<const float> hidden, int tokens);
// The same from the router's tensors alone: router_weight [E, H], router_bias [E].
Routing route(std::span<const float> router_weight, std::span<const float> router_bias, const MoeShape& shape,
              std::span<const float> hidden, int tokens);

// The SwiGLU of gpt-oss on one (gate, linear) pair.
double swiglu(double gate, double linear, const SwigluParams& params);

// The scales that multiply quantized activations back (scheme.hpp): a tensor scale each for the
// hidden states and the intermediate activations (1 unless the scheme's scale is per tensor), and
// for per-token schemes one per token's hidden state and one per (token, slot) pair's intermediate
// (in pair order: token t's slot j is t * top_k + j); empty otherwise.
struct ActivationScales {
  float hidden = 1.0f;
  float intermediate = 1.0f;
  std::vector<float> hidden_rows, intermediate_rows;
};

struct ReferenceOptions {
  // Use this routing instead of computing it, so a backend's expert math can be checked on its own
  // routing when near-tied logits could route differently.
  const Routing* routing = nullptr;
  // Use these per-tensor scales instead of computing them: w4a8 scales depend on the whole batch,
  // so checking a sample of a large batch's tokens needs the batch's scales. (Per-token scales
  // depend on their own row only and are always computed.)
  const ActivationScales* scales = nullptr;
  int threads = 0;  // 0: all hardware threads
};

struct MoeOutput {
  std::vector<float> output;  // [T, H]
  Routing routing;
  ActivationScales scales;
};

// The ground truth for every backend: weights dequantized exactly, activations quantized as the
// scheme says before each expert GEMM (w4a8: one FP8 scale over all tokens' inputs, and one over
// all (token, expert) intermediates; w4a8_token: one per token and one per pair), every product and
// sum in float64, one expert at a time so memory stays at one dequantized expert plus the
// activations.
MoeOutput reference_forward(const MoeLayer& layer, std::span<const float> hidden, int tokens,
                            Scheme scheme, const ReferenceOptions& options = {});

}  // namespace mxmoe
