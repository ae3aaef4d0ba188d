#include "mxmoe/metrics.hpp"

#include <algorithm>
#include <cmath>
#include <set>
#include <stdexcept>

namespace mxmoe {

namespace {
void expect_same_size(size_t a, size_t b) {
  if (a != b) throw std::invalid_argument("metrics: tensors of " + std::to_string(a) + " and " + std::to_string(b) + " values");
}
}  // namespace

double relative_l2(std::span<const float> a, std::span<const float> b) {
  expect_same_size(a.size(), b.size());
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    num += d * d;
    den += static_cast<double>(b[i]) * b[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

double worst_row_relative_l2(std::span<const float> a, std::span<const float> b, size_t row_length) {
  expect_same_size(a.size(), b.size());
  if (row_length == 0 || a.size() % row_length != 0) {
    throw std::invalid_argument("metrics: " + std::to_string(a.size()) + " values are not rows of " + std::to_string(row_length));
  }
  double worst = 0.0;
  for (size_t i = 0; i < a.size(); i += row_length) {
    worst = std::max(worst, relative_l2(a.subspan(i, row_length), b.subspan(i, row_length)));
  }
  return worst;
}

double max_abs_diff(std::span<const float> a, std::span<const float> b) {
  expect_same_size(a.size(), b.size());
  double m = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
  }
  return m;
}

double cosine_similarity(std::span<const float> a, std::span<const float> b) {
  expect_same_size(a.size(), b.size());
  double ab = 0, aa = 0, bb = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    ab += static_cast<double>(a[i]) * b[i];
    aa += static_cast<double>(a[i]) * a[i];
    bb += static_cast<double>(b[i]) * b[i];
  }
  if (aa == 0 || bb == 0) return aa == bb ? 1.0 : 0.0;
  return ab / std::sqrt(aa * bb);
}

double routing_agreement(const Routing& a, const Routing& b) {
  if (a.tokens != b.tokens || a.top_k != b.top_k) throw std::invalid_argument("metrics: routings of different shapes");
  int same = 0;
  for (int t = 0; t < a.tokens; ++t) {
    const auto first = static_cast<size_t>(t) * a.top_k;
    const std::set<int> x(a.expert_ids.begin() + first, a.expert_ids.begin() + first + a.top_k);
    const std::set<int> y(b.expert_ids.begin() + first, b.expert_ids.begin() + first + b.top_k);
    same += x == y;
  }
  return a.tokens ? static_cast<double>(same) / a.tokens : 1.0;
}

}  // namespace mxmoe
