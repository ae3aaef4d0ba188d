// Helpers shared by the test executables.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <filesystem>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "mxmoe/metrics.hpp"

namespace mxmoe::test {

// Seeds differ per run unless MXMOE_TEST_SEED is set, so every run checks fresh data; failures
// print the seed for reproduction.
inline uint64_t fresh_seed() {
  if (const char* s = std::getenv("MXMOE_TEST_SEED")) return std::strtoull(s, nullptr, 10);
  static std::random_device device;
  return (static_cast<uint64_t>(device()) << 32) ^ device();
}

using mxmoe::max_abs_diff;
using mxmoe::relative_l2;

inline bool all_finite(std::span<const float> a) {
  for (float v : a) {
    if (!std::isfinite(v)) return false;
  }
  return true;
}

// A fresh directory per test, removed afterwards.
class TempDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("mxmoe_" + std::to_string(::getpid()) + "_" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::filesystem::path dir_;
};

}  // namespace mxmoe::test
