#include "mxmoe/padding.hpp"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <stdexcept>

#include "moe/padded_view.hpp"
#include "mxmoe/format.hpp"
#include "util/checked.hpp"

namespace mxmoe {

namespace {

int effective_alignment(int alignment) {
  if (alignment <= 0) throw std::invalid_argument("padding: alignment must be positive");
  return detail::checked_mul(kMxBlock / std::gcd(kMxBlock, alignment), alignment, "padding: alignment");
}

// The padded tensor written out: the rows of `view` the tensor has, copied; the rest keep a new
// tensor's zero codes at scale 1 (the view's values).
Mxfp4Tensor pad_mxfp4(const detail::PaddedMxfp4& view) {
  const Mxfp4Tensor& src = view.source();
  Mxfp4Tensor dst(view.groups, view.rows, view.cols);
  for (int64_t g = 0; g < src.groups; ++g) {
    for (int64_t r = 0; r < src.rows; ++r) {
      std::memcpy(dst.row_blocks(g, r), src.row_blocks(g, r), static_cast<size_t>(src.cols / 2));
      std::memcpy(dst.row_scales(g, r), src.row_scales(g, r), static_cast<size_t>(src.blocks_per_row()));
    }
  }
  return dst;
}

}  // namespace

std::vector<float> detail::pad_matrix(const std::vector<float>& m, int64_t rows, int64_t cols, int64_t new_rows,
                                      int64_t new_cols) {
  std::vector<float> out(static_cast<size_t>(new_rows * new_cols), 0.0f);
  for (int64_t r = 0; r < rows; ++r) std::copy_n(m.begin() + r * cols, cols, out.begin() + r * new_cols);
  return out;
}

PaddingPlan PaddingPlan::for_alignment(int hidden, int intermediate, int hidden_alignment,
                                       int intermediate_alignment) {
  if (hidden <= 0 || intermediate <= 0) throw std::invalid_argument("padding: dims must be positive");
  return {hidden, intermediate, detail::checked_round_up(hidden, effective_alignment(hidden_alignment), "padded hidden size"),
          detail::checked_round_up(intermediate, effective_alignment(intermediate_alignment), "padded intermediate size")};
}

std::string PaddingPlan::to_string() const {
  return "hidden " + std::to_string(hidden) + " -> " + std::to_string(padded_hidden) + ", intermediate " +
         std::to_string(intermediate) + " -> " + std::to_string(padded_intermediate);
}

void PaddingPlan::check_layer(const MoeShape& shape, const std::string& backend) const {
  if (shape.hidden != hidden || shape.intermediate != intermediate) {
    throw std::logic_error("backend '" + backend + "' was given a layer with hidden " + std::to_string(shape.hidden) +
                           " and intermediate " + std::to_string(shape.intermediate) +
                           ", but the padding plan is for " + to_string());
  }
}

MoeLayer pad_layer(const MoeLayer& layer, const PaddingPlan& plan) {
  layer.validate();
  const MoeShape& s = layer.shape;
  if (s.hidden != plan.hidden || s.intermediate != plan.intermediate) {
    throw std::invalid_argument("pad_layer: layer has " + s.to_string() + ", the plan is for " + plan.to_string());
  }
  if (plan.padded_hidden < plan.hidden || plan.padded_intermediate < plan.intermediate ||
      plan.padded_hidden % kMxBlock || plan.padded_intermediate % kMxBlock) {
    throw std::invalid_argument("pad_layer: invalid plan " + plan.to_string());
  }
  if (plan.is_identity()) return layer;
  const detail::PaddedLayer view{layer, plan};
  MoeLayer padded;
  padded.shape = view.shape();
  padded.swiglu = layer.swiglu;
  padded.router_weight = view.router_weight();
  padded.router_bias = layer.router_bias;
  padded.gate_up = pad_mxfp4(view.gate_up());
  padded.gate_up_bias = view.gate_up_bias();
  padded.down = pad_mxfp4(view.down());
  padded.down_bias = view.down_bias();
  return padded;
}

std::vector<float> pad_hidden(std::span<const float> x, int tokens, const PaddingPlan& plan) {
  if (x.size() != static_cast<size_t>(tokens) * plan.hidden) {
    throw std::invalid_argument("pad_hidden: expected " + std::to_string(tokens) + " x " +
                                std::to_string(plan.hidden) + " values, got " + std::to_string(x.size()));
  }
  std::vector<float> out(static_cast<size_t>(tokens) * plan.padded_hidden, 0.0f);
  for (int64_t t = 0; t < tokens; ++t) {
    std::copy_n(x.begin() + t * plan.hidden, plan.hidden, out.begin() + t * plan.padded_hidden);
  }
  return out;
}

std::vector<float> unpad_hidden(std::span<const float> x, int tokens, const PaddingPlan& plan) {
  std::vector<float> out(static_cast<size_t>(std::max(tokens, 0)) * plan.hidden);
  unpad_hidden_into(x, tokens, plan, out);
  return out;
}

void unpad_hidden_into(std::span<const float> x, int tokens, const PaddingPlan& plan, std::span<float> out) {
  if (tokens < 0 || x.size() != static_cast<size_t>(tokens) * plan.padded_hidden ||
      out.size() != static_cast<size_t>(tokens) * plan.hidden) {
    throw std::invalid_argument("unpad_hidden: expected " + std::to_string(tokens) + " x " +
                                std::to_string(plan.padded_hidden) + " values into " + std::to_string(tokens) + " x " +
                                std::to_string(plan.hidden) + ", got " + std::to_string(x.size()) + " into " +
                                std::to_string(out.size()));
  }
  for (int64_t t = 0; t < tokens; ++t) {
    std::copy_n(x.begin() + t * plan.padded_hidden, plan.hidden, out.begin() + t * plan.hidden);
  }
}

}  // namespace mxmoe
