#include <stdexcept>
#include <string>

#include "mxmoe/backend.hpp"
#include "mxmoe/limits.hpp"

namespace mxmoe {

Problem Problem::for_layer(const MoeLayer& layer, Scheme scheme, int tokens) {
  return {scheme, layer.shape.experts, layer.shape.top_k, layer.shape.hidden, layer.shape.intermediate, tokens, true};
}

void Problem::validate() const {
  if (experts <= 0 || hidden <= 0 || intermediate <= 0) {
    throw std::invalid_argument("problem: experts, hidden and intermediate must be positive: " + to_string());
  }
  if (hidden > limits::kMaxDim || intermediate > limits::kMaxDim || experts > limits::kMaxExperts ||
      tokens > limits::kMaxTokens || pad_hidden_to > limits::kMaxDim || pad_intermediate_to > limits::kMaxDim) {
    throw std::invalid_argument("problem: above mxmoe's limits (hidden, intermediate and alignments <= " +
                                std::to_string(limits::kMaxDim) + ", experts <= " + std::to_string(limits::kMaxExperts) +
                                ", tokens <= " + std::to_string(limits::kMaxTokens) + "): " + to_string());
  }
  if (top_k < 1 || top_k > experts) throw std::invalid_argument("problem: top_k must be in [1, experts]: " + to_string());
  if (tokens < 0) throw std::invalid_argument("problem: tokens must not be negative: " + to_string());
  if (pad_hidden_to < 0 || pad_intermediate_to < 0) {
    throw std::invalid_argument("problem: requested alignments must not be negative: " + to_string());
  }
}

std::string Problem::to_string() const {
  std::string s = std::string(scheme_name(scheme)) + ", E=" + std::to_string(experts) + " k=" + std::to_string(top_k) +
                  " H=" + std::to_string(hidden) + " I=" + std::to_string(intermediate);
  if (tokens > 0) s += " T=" + std::to_string(tokens);
  if (!bias) s += ", no bias";
  if (pad_hidden_to > 0 || pad_intermediate_to > 0) {
    s += ", padded to multiples of " + std::to_string(pad_hidden_to) + "/" + std::to_string(pad_intermediate_to);
  }
  return s;
}

}  // namespace mxmoe
