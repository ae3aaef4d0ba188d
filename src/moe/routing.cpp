#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>

#include "mxmoe/moe.hpp"
#include "moe/routing_check.hpp"
#include "util/parallel.hpp"

namespace mxmoe {

Routing route(const MoeLayer& layer, std::span<const float> hidden, int tokens) {
  return route(layer.router_weight, layer.router_bias, layer.shape, hidden, tokens);
}

Routing route(std::span<const float> router_weight, std::span<const float> router_bias, const MoeShape& shape,
              std::span<const float> hidden, int tokens) {
  const int H = shape.hidden, E = shape.experts, k = shape.top_k;
  if (tokens < 0 || hidden.size() != static_cast<size_t>(tokens) * H) {
    throw std::invalid_argument("route: hidden states hold " + std::to_string(hidden.size()) +
                                " values, expected tokens x hidden = " + std::to_string(tokens) + " x " +
                                std::to_string(H));
  }
  detail::check_finite_hidden(hidden, H);
  Routing routing;
  routing.tokens = tokens;
  routing.top_k = k;
  routing.expert_ids.resize(static_cast<size_t>(tokens) * k);
  routing.weights.resize(static_cast<size_t>(tokens) * k);
  detail::parallel_for(tokens, 0, 16, [&](int64_t begin, int64_t end) {
    std::vector<double> logits(E);
    std::vector<int> order(E);
    for (int64_t t = begin; t < end; ++t) {
      const float* x = hidden.data() + t * H;
      for (int e = 0; e < E; ++e) {
        const float* w = router_weight.data() + static_cast<int64_t>(e) * H;
        double sum = 0.0;
        for (int h = 0; h < H; ++h) sum += static_cast<double>(x[h]) * w[h];
        logits[e] = sum + router_bias[e];
      }
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int a, int b) {
        return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
      });
      // Softmax over the k selected logits only; the largest comes first, so subtracting it
      // keeps every exp() <= 1.
      double denominator = 0.0;
      for (int j = 0; j < k; ++j) denominator += std::exp(logits[order[j]] - logits[order[0]]);
      for (int j = 0; j < k; ++j) {
        routing.expert_ids[t * k + j] = order[j];
        routing.weights[t * k + j] =
            static_cast<float>(std::exp(logits[order[j]] - logits[order[0]]) / denominator);
      }
    }
  });
  return routing;
}

}  // namespace mxmoe
