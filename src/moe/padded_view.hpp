// A layer read at the padded dims of a plan without a padded copy: what pad_layer would hold (zero
// codes at scale 1, as a new Mxfp4Tensor has, past the real rows and columns; zero biases and router
// columns), read in place. A backend's packer walks this view while it re-lays the weights, so the
// padding is written into the packed weights and no padded host copy of the experts is ever made.
#pragma once

#include <cstdint>
#include <vector>

#include "mxmoe/format.hpp"
#include "mxmoe/moe.hpp"
#include "mxmoe/padding.hpp"

namespace mxmoe::detail {

// An MXFP4 tensor seen as [groups, rows, cols] with rows and cols at least its own.
class PaddedMxfp4 {
 public:
  PaddedMxfp4(const Mxfp4Tensor& t, int64_t rows, int64_t cols) : groups(t.groups), rows(rows), cols(cols), t_(t) {}

  int64_t groups, rows, cols;
  int64_t blocks_per_row() const { return cols / kMxBlock; }
  uint8_t code(int64_t group, int64_t row, int64_t k) const {
    return row < t_.rows && k < t_.cols ? mxfp4_code(t_.row_blocks(group, row), k) : 0;
  }
  uint8_t scale(int64_t group, int64_t row, int64_t block) const {
    return row < t_.rows && block < t_.blocks_per_row() ? t_.row_scales(group, row)[block] : kE8m0One;
  }
  // The real tensor's rows (padded rows past them are all zero codes).
  const Mxfp4Tensor& source() const { return t_; }

 private:
  const Mxfp4Tensor& t_;
};

// [rows][cols] -> [new_rows][new_cols], zeros in the new rows and columns.
std::vector<float> pad_matrix(const std::vector<float>& m, int64_t rows, int64_t cols, int64_t new_rows,
                              int64_t new_cols);

// A layer (already validated, with the plan's real dims) at the plan's padded dims.
struct PaddedLayer {
  const MoeLayer& layer;
  const PaddingPlan& plan;

  MoeShape shape() const { return {plan.padded_hidden, plan.padded_intermediate, layer.shape.experts, layer.shape.top_k}; }
  // gate_up keeps (gate, linear) rows interleaved: padded units are appended as pairs of zero rows.
  PaddedMxfp4 gate_up() const { return {layer.gate_up, 2 * int64_t{plan.padded_intermediate}, plan.padded_hidden}; }
  PaddedMxfp4 down() const { return {layer.down, plan.padded_hidden, plan.padded_intermediate}; }
  std::vector<float> router_weight() const {
    return pad_matrix(layer.router_weight, layer.shape.experts, plan.hidden, layer.shape.experts, plan.padded_hidden);
  }
  std::vector<float> gate_up_bias() const {
    return pad_matrix(layer.gate_up_bias, layer.shape.experts, 2 * int64_t{plan.intermediate}, layer.shape.experts,
                      2 * int64_t{plan.padded_intermediate});
  }
  std::vector<float> down_bias() const {
    return pad_matrix(layer.down_bias, layer.shape.experts, plan.hidden, layer.shape.experts, plan.padded_hidden);
  }
};

}  // namespace mxmoe::detail
