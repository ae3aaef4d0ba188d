#include "moe/routing_check.hpp"

#include <cmath>
#include <stdexcept>
#include <string>

namespace mxmoe::detail {

void check_routing(const Routing& routing, int tokens, int top_k, int experts) {
  const size_t n = static_cast<size_t>(tokens) * top_k;
  if (routing.tokens != tokens || routing.top_k != top_k || routing.expert_ids.size() != n ||
      routing.weights.size() != n) {
    throw std::invalid_argument("routing: expected " + std::to_string(tokens) + " tokens x top_k " +
                                std::to_string(top_k) + ", got " + std::to_string(routing.tokens) +
                                " x " + std::to_string(routing.top_k));
  }
  for (int t = 0; t < tokens; ++t) {
    for (int j = 0; j < top_k; ++j) {
      const int id = routing.expert_ids[static_cast<size_t>(t) * top_k + j];
      if (id < 0 || id >= experts) {
        throw std::invalid_argument("routing: token " + std::to_string(t) + " names expert " +
                                    std::to_string(id) + ", the layer has " + std::to_string(experts));
      }
      for (int i = 0; i < j; ++i) {
        if (routing.expert_ids[static_cast<size_t>(t) * top_k + i] == id) {
          throw std::invalid_argument("routing: token " + std::to_string(t) + " names expert " +
                                      std::to_string(id) + " twice");
        }
      }
      if (!std::isfinite(routing.weights[static_cast<size_t>(t) * top_k + j])) {
        throw std::invalid_argument("routing: token " + std::to_string(t) + " has a non-finite weight");
      }
    }
  }
}

void check_finite_hidden(std::span<const float> hidden, int hidden_size) {
  for (size_t i = 0; i < hidden.size(); ++i) {
    if (!std::isfinite(hidden[i])) {
      throw std::domain_error("hidden state of token " + std::to_string(i / hidden_size) + ", column " +
                              std::to_string(i % hidden_size) + " is " + (std::isnan(hidden[i]) ? "NaN" : "Inf"));
    }
  }
}

}  // namespace mxmoe::detail
