// How close an output is to a reference: the measures used by tests, evals and the demo.
#pragma once

#include <span>

#include "mxmoe/moe.hpp"

namespace mxmoe {

// ||a - b|| / ||b|| over the whole tensor, in float64 (||a - b|| when b is all zeros).
double relative_l2(std::span<const float> a, std::span<const float> b);
// The largest relative_l2 of one row of `row_length` values (a token's output) over the rows.
double worst_row_relative_l2(std::span<const float> a, std::span<const float> b, size_t row_length);
// max |a - b|; infinite when a holds a non-finite value.
double max_abs_diff(std::span<const float> a, std::span<const float> b);
// <a, b> / (||a|| ||b||); 1 when both are all zeros.
double cosine_similarity(std::span<const float> a, std::span<const float> b);
// Fraction of tokens whose set of k experts is the same in both routings.
double routing_agreement(const Routing& a, const Routing& b);

}  // namespace mxmoe
