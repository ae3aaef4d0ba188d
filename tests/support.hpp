// Helpers shared by the test executables.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace mxmoe::test {

// Seeds differ per run unless MXMOE_TEST_SEED is set, so every run checks fresh data; failures
// print the seed for reproduction.
inline uint64_t fresh_seed() {
  if (const char* s = std::getenv("MXMOE_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  static std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) ^ device();
}

// ||a - b|| / ||b|| over the whole tensor, computed in double.
inline double relative_l2(std::span<const float> a, std::span<const float> b) {
  double num = 0.0, den = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    const double d = static_cast<double>(a[i]) - b[i];
    num += d * d;
    den += static_cast<double>(b[i]) * b[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

inline double max_abs_diff(std::span<const float> a, std::span<const float> b) {
  double m = 0.0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::fabs(static_cast<double>(a[i]) - b[i]));
  return m;
}

inline bool all_finite(std::span<const float> a) {
  for (float v : a) {
    if (!std::isfinite(v)) return false;
  }
  return true;
}

}  // namespace mxmoe::test
