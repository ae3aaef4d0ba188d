// Checked arithmetic, thread caps and admission control (util/): sizes from untrusted input never
// wrap, and requests that cannot fit are refused up front (issue 14).
#include <gtest/gtest.h>

#include "mxmoe/moe.hpp"
#include "mxmoe/padding.hpp"
#include "mxmoe/safetensors.hpp"
#include "util/admission.hpp"
#include "util/checked.hpp"
#include "util/parallel.hpp"

namespace mxmoe {
namespace {

TEST(Checked, OverflowIsAnErrorNotAWrap) {
  EXPECT_EQ(detail::checked_mul<int64_t>(1 << 20, 1 << 20, "x"), int64_t{1} << 40);
  EXPECT_THROW(detail::checked_mul<int64_t>(int64_t{1} << 62, 4, "x"), detail::SizeOverflow);
  EXPECT_THROW(detail::checked_add<int>(2147483647, 1, "x"), detail::SizeOverflow);
  EXPECT_EQ(detail::checked_round_up(2880, 256, "x"), 3072);
  EXPECT_THROW(detail::checked_round_up(2147483647, 32, "x"), detail::SizeOverflow);
}

TEST(Checked, PaddingOfHugeDimsThrowsInsteadOfGoingNegative) {
  EXPECT_THROW(PaddingPlan::for_alignment(2147483647, 64, 32, 32), std::overflow_error);
  EXPECT_THROW(PaddingPlan::for_alignment(64, 64, 2147483647, 32), std::overflow_error);
  EXPECT_EQ(PaddingPlan::for_alignment(2880, 2880, 256, 32).padded_hidden, 3072);
}

TEST(Checked, ElementCountOfAnEmptyHugeShapeIsZero) {
  TensorInfo t;
  t.name = "t";
  t.shape = {int64_t{1} << 62, int64_t{1} << 62, 0};
  EXPECT_EQ(t.numel(), 0);
  t.shape = {int64_t{1} << 62, 4};
  EXPECT_THROW(t.numel(), std::overflow_error);
  EXPECT_TRUE(to_floats(DType::F32, {}).empty());  // no memcpy to or from a null pointer
}

TEST(Threads, RequestsAreCappedAtTheUsableCpus) {
  const int cpus = detail::hardware_threads();
  EXPECT_GE(cpus, 1);
  EXPECT_EQ(detail::usable_threads(100000), cpus);
  EXPECT_EQ(detail::usable_threads(0), cpus);
  EXPECT_EQ(detail::usable_threads(1), 1);
}

TEST(Admission, RequestsAboveTheAvailableMemoryAreRefusedWithTheEstimate) {
  const uint64_t available = detail::available_memory_bytes();
  EXPECT_GT(available, uint64_t{1} << 20);
  try {
    detail::admit_memory(available + (uint64_t{1} << 40), "a test request");
    FAIL() << "admitted";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("a test request needs about"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("this process can use"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(detail::admit_memory(1 << 20, "a small request"));
  // A million tokens through a gpt-oss layer: about 100 GB of activations.
  EXPECT_GT(forward_memory_bytes({2880, 2880, 32, 4}, 1000000), uint64_t{50} << 30);
}

}  // namespace
}  // namespace mxmoe
