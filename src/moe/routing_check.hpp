#pragma once

#include "mxmoe/moe.hpp"

namespace mxmoe::detail {

// Throws std::invalid_argument unless `routing` is a valid routing of `tokens` tokens onto
// `experts` experts with `top_k` slots: ids in range, no expert twice for one token, finite weights.
void check_routing(const Routing& routing, int tokens, int top_k, int experts);

// Throws std::domain_error naming the first NaN or Inf of hidden states [T, hidden] by token and
// column ("hidden state of token 3, column 7 is NaN").
void check_finite_hidden(std::span<const float> hidden, int hidden_size);

}  // namespace mxmoe::detail
