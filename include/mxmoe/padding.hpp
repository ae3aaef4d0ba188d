// Padding of hidden and intermediate dims: the one place where a layer, its inputs and its outputs
// change size. The plan made by the oracle is the single source of truth: backends are given the
// real layer and the plan, check one against the other, and write the padding while they pack the
// weights (src/moe/padded_view.hpp); no padded copy of the layer is made on the way.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "mxmoe/moe.hpp"

namespace mxmoe {

struct PaddingPlan {
  int hidden = 0;
  int intermediate = 0;
  int padded_hidden = 0;
  int padded_intermediate = 0;

  // The smallest dims >= the real ones that are multiples of both the MXFP4 block (32) and the
  // given alignments.
  static PaddingPlan for_alignment(int hidden, int intermediate, int hidden_alignment,
                                   int intermediate_alignment);

  bool is_identity() const { return hidden == padded_hidden && intermediate == padded_intermediate; }
  bool operator==(const PaddingPlan&) const = default;
  std::string to_string() const;

  // Throws std::logic_error unless the layer has exactly the plan's real (unpadded) dims: a backend
  // calls this before it packs the weights at the padded dims, so a lost or mismatched plan is an
  // error and never a wrong reshape.
  void check_layer(const MoeShape& shape, const std::string& backend) const;
};

// The padded layer, for callers who want one: zero weights (scale code 127) and zero biases in the
// new rows and columns.
// Padded intermediate units compute SwiGLU(0, 0) = 0, and padded hidden columns meet zero inputs,
// so the real outputs do not change. Router weights get zero columns.
MoeLayer pad_layer(const MoeLayer& layer, const PaddingPlan& plan);

// [T, hidden] -> [T, padded_hidden] with zero columns, and back.
std::vector<float> pad_hidden(std::span<const float> x, int tokens, const PaddingPlan& plan);
std::vector<float> unpad_hidden(std::span<const float> x, int tokens, const PaddingPlan& plan);
// The same into `out` [tokens, plan.hidden].
void unpad_hidden_into(std::span<const float> x, int tokens, const PaddingPlan& plan, std::span<float> out);

}  // namespace mxmoe
