#pragma once

#include "mxmoe/moe.hpp"

namespace mxmoe::detail {

// Throws std::invalid_argument unless `routing` is a valid routing of `tokens` tokens onto
// `experts` experts with `top_k` slots: ids in range, no expert twice for one token, finite weights.
void check_routing(const Routing& routing, int tokens, int top_k, int experts);

}  // namespace mxmoe::detail
