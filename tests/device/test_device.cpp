#include <gtest/gtest.h>

#include "mxmoe/device.hpp"

namespace mxmoe {
namespace {

TEST(DeviceSpec, ParsesComputeCapabilities) {
  for (const char* text : {"sm_80", "sm_86", "sm_89", "sm_90", "sm_90a", "cuda:sm_100", "sm_100a", "sm_120", "sm_70"}) {
    const DeviceSpec d = DeviceSpec::parse(text);
    EXPECT_EQ(d.kind, DeviceKind::cuda) << text;
    EXPECT_FALSE(d.detected) << text;
  }
  EXPECT_EQ(DeviceSpec::parse("sm_90a").sm, 90);
  EXPECT_EQ(DeviceSpec::parse("sm_120").sm, 120);
  EXPECT_EQ(DeviceSpec::parse("sm_90a").id(), "sm_90");
}

TEST(DeviceSpec, ParsesCpuVariants) {
  EXPECT_EQ(DeviceSpec::parse("cpu").id(), "cpu");
  EXPECT_EQ(DeviceSpec::parse("cpu").cpu, CpuFeatures{});
  EXPECT_TRUE(DeviceSpec::parse("cpu:avx2").cpu.avx2);
  EXPECT_FALSE(DeviceSpec::parse("cpu:avx2").cpu.avx512);
  EXPECT_TRUE(DeviceSpec::parse("cpu:avx512").cpu.avx512);
  EXPECT_TRUE(DeviceSpec::parse("cpu:avx512bf16").cpu.avx512_bf16);
  EXPECT_TRUE(DeviceSpec::parse("cpu:neon").cpu.neon);
  for (const char* text : {"cpu", "cpu:avx2", "cpu:avx512", "cpu:avx512bf16", "cpu:neon"}) {
    EXPECT_EQ(DeviceSpec::parse(text).id(), text);
  }
}

TEST(DeviceSpec, DetectsThisMachine) {
  const DeviceSpec cpu = DeviceSpec::parse("cpu:native");
  EXPECT_TRUE(cpu.detected);
  EXPECT_EQ(cpu.kind, DeviceKind::cpu);
  EXPECT_GE(cpu.cores, 1);
  const DeviceSpec any = DeviceSpec::parse("auto");
  EXPECT_TRUE(any.detected);
  EXPECT_EQ(any.kind == DeviceKind::cuda, !detect_cuda_devices().empty());
}

// Running on a narrower ISA than the CPU's kernels use is refused, not silently widened.
TEST(DeviceSpec, RunningOnANarrowerCpuIsaIsRefused) {
  const DeviceSpec cpu = DeviceSpec::detect_cpu();
  EXPECT_EQ(DeviceSpec::for_running("cpu").id(), cpu.id());
  EXPECT_EQ(DeviceSpec::for_running(cpu.id()).id(), cpu.id());
  if (!cpu.cpu.avx512) GTEST_SKIP() << "this CPU (" << cpu.id() << ") has no ISA narrower than its best but avx2";
  try {
    DeviceSpec::for_running("cpu:avx2");
    FAIL() << "cpu:avx2 accepted for a run on " << cpu.id();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("can be planned for"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(cpu.id()), std::string::npos) << e.what();
  }
}

TEST(DeviceSpec, RejectsUnknownFormsAndListsTheAcceptedOnes) {
  for (const char* text : {"gpu", "sm_91", "sm_", "sm_9x", "cpu:avx1024", "", "cuda:x"}) {
    try {
      DeviceSpec::parse(text);
      FAIL() << "accepted '" << text << "'";
    } catch (const std::invalid_argument& e) {
      EXPECT_NE(std::string(e.what()).find("accepted forms"), std::string::npos) << e.what();
    }
  }
}

TEST(DeviceSpec, CudaOnAMachineWithoutGpuIsAClearError) {
  if (!detect_cuda_devices().empty()) GTEST_SKIP() << "this machine has a GPU";
  try {
    DeviceSpec::parse("cuda");
    FAIL();
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("no CUDA GPU"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace mxmoe
