#include <gtest/gtest-spi.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backends/backend_check.hpp"
#include "backends/cpu/kernels.hpp"
#include "moe/padded_view.hpp"
#include "mxmoe/padding.hpp"
#include "mxmoe/oracle.hpp"

namespace mxmoe {
namespace {

// Inference engines route themselves and hand the experts their top-k ids and weights.
TEST(CpuBackend, RunsTheCallersRouting) {
  for (Scheme scheme : {Scheme::w4a16, Scheme::w4a8, Scheme::w4a4}) {
    // 24 tokens: 4608 intermediate elements (24 x 2 x 96).
    test::check_caller_routing(test::shared_layer({128, 96, 8, 2}), scheme, 24, "cpu", DeviceSpec::detect_cpu(),
                               test::fresh_seed());
  }
  test::check_caller_routing(test::shared_layer({128, 96, 8, 2}), Scheme::w4a32, 5, "reference", DeviceSpec::detect_cpu(),
                             test::fresh_seed());
}

// The packer writes the plan's padding while it re-lays the weights: packing the real layer through
// its padded view gives the bytes of packing a padded copy (pad_layer), rows permuted or not.
TEST(CpuPacking, WritesThePaddingOfThePlanWithoutAPaddedCopy) {
  const MoeLayer& layer = test::shared_layer({96, 64, 4, 2});
  const PaddingPlan plan = PaddingPlan::for_alignment(96, 64, 128, 128);
  ASSERT_FALSE(plan.is_identity());
  const MoeLayer copy = pad_layer(layer, plan);
  const detail::PaddedLayer view{layer, plan};
  const auto whole = [](const Mxfp4Tensor& t) { return detail::PaddedMxfp4(t, t.rows, t.cols); };
  const auto reversed = [](int64_t rows) { return [rows](int64_t r) { return rows - 1 - r; }; };
  const auto expect_same = [](const cpu::PackedMatrix& a, const cpu::PackedMatrix& b) {
    EXPECT_EQ(a.rows, b.rows);
    EXPECT_EQ(a.cols, b.cols);
    EXPECT_EQ(a.tiles, b.tiles);
    EXPECT_EQ(a.scales, b.scales);
  };
  expect_same(cpu::pack_matrix(view.gate_up(), reversed(256)), cpu::pack_matrix(whole(copy.gate_up), reversed(256)));
  expect_same(cpu::pack_matrix(view.down(), [](int64_t r) { return r; }),
              cpu::pack_matrix(whole(copy.down), [](int64_t r) { return r; }));
  EXPECT_EQ(view.router_weight(), copy.router_weight);
  EXPECT_EQ(view.gate_up_bias(), copy.gate_up_bias);
  EXPECT_EQ(view.down_bias(), copy.down_bias);
}

// forward_into writes into the caller's buffer what forward returns, bit for bit, with the layer's
// router or the caller's, unpadded (the CPU backend in place) and padded (through the runner's
// padded buffer), and on the reference backend (through PreparedMoe's default); a buffer of the
// wrong size is refused before anything runs.
TEST(CpuBackend, ForwardIntoTheCallersBufferGivesForwardsBits) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const MoeLayer& layer = test::shared_layer({128, 96, 8, 2});
  const int T = 9;
  const auto x = random_hidden(T, 128, seed);
  const Routing given = test::random_routing(T, 8, 2, seed + 1);
  struct Case {
    const char* backend;
    int pad_hidden_to;
    Scheme scheme;
  };
  for (const Case c : {Case{"cpu", 0, Scheme::w4a8}, Case{"cpu", 96, Scheme::w4a16}, Case{"reference", 0, Scheme::w4a4}}) {
    SCOPED_TRACE(std::string(c.backend) + " pad_hidden_to " + std::to_string(c.pad_hidden_to));
    MoeRunner runner(layer, c.scheme, DeviceSpec::detect_cpu(), {.backend = c.backend, .pad_hidden_to = c.pad_hidden_to});
    EXPECT_EQ(runner.decision().padding.is_identity(), c.pad_hidden_to == 0);
    for (const Routing* routing : {static_cast<const Routing*>(nullptr), &given}) {
      const MoeOutput want = routing ? runner.forward(x, T, *routing) : runner.forward(x, T);
      std::vector<float> output(x.size(), std::numeric_limits<float>::quiet_NaN());
      Routing used;
      const ActivationScales scales = runner.forward_into(x, T, output, routing, &used);
      EXPECT_EQ(output, want.output);
      EXPECT_EQ(used.expert_ids, want.routing.expert_ids);
      EXPECT_EQ(used.weights, want.routing.weights);
      EXPECT_EQ(scales.hidden, want.scales.hidden);
      EXPECT_EQ(scales.intermediate, want.scales.intermediate);
    }
    std::vector<float> short_output(x.size() - 1);
    EXPECT_THROW(runner.forward_into(x, T, short_output), std::invalid_argument);
  }
}

TEST(CpuBackend, ResultsDoNotDependOnTheThreadCount) {
  const uint64_t seed = test::fresh_seed();
  const MoeLayer& layer = test::shared_layer({128, 96, 8, 2});
  const auto x = random_hidden(100, 128, seed);
  for (Scheme scheme : {Scheme::w4a16, Scheme::w4a8, Scheme::w4a4}) {
    MoeRunner one(layer, scheme, DeviceSpec::detect_cpu(), {.backend = "cpu", .threads = 1});
    MoeRunner three(layer, scheme, DeviceSpec::detect_cpu(), {.backend = "cpu", .threads = 3});
    const auto a = one.forward(x, 100), b = three.forward(x, 100);
    EXPECT_EQ(a.output, b.output) << scheme_name(scheme);
    EXPECT_EQ(a.output, one.forward(x, 100).output) << "a second run differs";
  }
}

TEST(CpuBackend, IsChosenOnCpusAndPlansGptOssDimsUnpadded) {
  const Decision d = select_backend(DeviceSpec::parse("cpu:avx2"), {Scheme::w4a16, 32, 4, 2880, 2880, 1, true});
  EXPECT_EQ(d.chosen, "cpu");
  EXPECT_TRUE(d.padding.is_identity());
  EXPECT_EQ(select_backend(DeviceSpec::parse("cpu"), {Scheme::w4a4, 8, 2, 96, 64, 1, true}).chosen, "cpu");
}

TEST(CpuBackend, RefusesTheExactModeWithAReason) {
  const MoeLayer& layer = test::shared_layer({128, 96, 8, 2});
  try {
    MoeRunner runner(layer, Scheme::w4a32, DeviceSpec::detect_cpu(), {.backend = "cpu"});
    FAIL() << "w4a32 accepted";
  } catch (const OracleError& e) {
    EXPECT_NE(std::string(e.what()).find("does not support scheme w4a32"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("Backends that would work: reference"), std::string::npos) << e.what();
  }
  // Without forcing, the oracle sends w4a32 to the reference.
  EXPECT_EQ(MoeRunner(layer, Scheme::w4a32, DeviceSpec::detect_cpu()).decision().chosen, "reference");
}

// A block scale of 2^127 (code 254) overflows float in the products: every backend refuses the
// output, naming the token and column, instead of returning Inf/NaN (issue 14).
TEST(CpuBackend, NonFiniteOutputsAreErrorsOnTheCpuAndReferenceBackends) {
  MoeLayer layer = test::shared_layer({128, 96, 8, 2});
  std::fill(layer.down.scales.begin(), layer.down.scales.end(), uint8_t{254});
  std::fill(layer.down.blocks.begin(), layer.down.blocks.end(), uint8_t{0x77});  // every weight 6 * 2^127
  const auto x = random_hidden(3, 128, 7);
  for (const char* backend : {"cpu", "reference"}) {
    MoeRunner runner(layer, Scheme::w4a16, DeviceSpec::detect_cpu(), {.backend = backend});
    try {
      runner.forward(x, 3);
      ADD_FAILURE() << backend << " returned a non-finite output";
    } catch (const std::domain_error& e) {
      EXPECT_NE(std::string(e.what()).find("not finite at token 0, column 0"), std::string::npos) << backend << ": " << e.what();
    }
  }
}

TEST(CpuBackend, RejectsNonFiniteInputs) {
  const MoeLayer& layer = test::shared_layer({128, 96, 8, 2});
  MoeRunner runner(layer, Scheme::w4a16, DeviceSpec::detect_cpu(), {.backend = "cpu"});
  auto x = random_hidden(3, 128, 1);
  x[200] = std::nanf("");
  EXPECT_THROW(runner.forward(x, 3), std::domain_error);
  EXPECT_THROW(runner.forward(std::span<const float>(x).first(10), 3), std::invalid_argument);
  EXPECT_TRUE(runner.forward({}, 0).output.empty());
}

}  // namespace
}  // namespace mxmoe

namespace mxmoe {
namespace {

// Every kernel path this machine can run, not just its best: the bf16 dot-product kernel, the
// Highway fp32 kernels for AVX-512, AVX2 and portable code, each with few token rows (decoded in
// registers) and many (decoded panel).
class CpuKernelIsa : public ::testing::TestWithParam<cpu::KernelIsa> {
 protected:
  void SetUp() override {
    if (!cpu::pin_kernels_for_test(GetParam())) GTEST_SKIP() << "this CPU cannot run " << cpu::kernel_isa_name(GetParam());
  }
  void TearDown() override { cpu::pin_kernels_for_test(cpu::KernelIsa::best); }

  // check(layer, tokens, scheme, input seed) for each scheme at 1 and 3 tokens (a few rows per
  // expert: register decode) and 40 (many: the panel).
  template <class Check>
  void for_each_case(Check&& check) {
    const uint64_t seed = test::fresh_seed();
    SCOPED_TRACE(std::string(cpu::kernel_isa_name(GetParam())) + " (" + cpu::kernel_target() + "), input seed " +
                 std::to_string(seed));
    const MoeLayer& layer = test::shared_layer({256, 192, 8, 2});
    for (int tokens : {1, 3, 40}) {
      for (Scheme scheme : {Scheme::w4a16, Scheme::w4a8, Scheme::w4a4}) {
        SCOPED_TRACE("T=" + std::to_string(tokens) + " " + std::string(scheme_name(scheme)));
        check(layer, tokens, scheme, seed + tokens);
      }
    }
  }
};

TEST_P(CpuKernelIsa, MatchesTheReference) {
  for_each_case([](const MoeLayer& layer, int tokens, Scheme scheme, uint64_t seed) {
    test::expect_within_bound(test::error_bound(scheme), seed, [&](uint64_t pool_seed) {
      const DeviceSpec cpu = DeviceSpec::detect_cpu();
      return test::check_against_reference(layer, scheme, tokens, "cpu", cpu, pool_seed).relative_error;
    });
  });
}

// The same kernel paths for the sanitizer pass (scripts/hardening runs this test and leaves
// MatchesTheReference, which pools up to 683 batches per case, to the regular run): one batch per
// case, every output against the reference within a loose bound. A wrong index or a missed tail
// gives an error of order one. One batch measured at most 1.7e-4 (160 runs per case, every ISA);
// the bound leaves room for the rare requantization flip that pooling exists for (the largest of
// 384 E2M1 intermediates off by half of itself: about 0.08 at T=1).
TEST_P(CpuKernelIsa, RunsEveryPathOnOneBatch) {
  for_each_case([](const MoeLayer& layer, int tokens, Scheme scheme, uint64_t seed) {
    constexpr double kLooseBound = 0.25;
    const auto r = test::check_against_reference(layer, scheme, tokens, "cpu", DeviceSpec::detect_cpu(), seed, 1);
    EXPECT_LE(r.relative_error, kLooseBound);
  });
}

// A first pool over the bound is answered by a second on other inputs, whose error decides.
TEST(BackendCheck, ASecondPoolAnswersAFirstOverTheBound) {
  std::vector<uint64_t> seeds;
  test::expect_within_bound(test::error_bound(Scheme::w4a16), 7, [&](uint64_t seed) {
    seeds.push_back(seed);
    return seeds.size() == 1 ? 1.0 : 0.0;
  });
  ASSERT_EQ(seeds.size(), 2u);
  EXPECT_NE(seeds[0], seeds[1]);
  EXPECT_NONFATAL_FAILURE(test::expect_within_bound(test::error_bound(Scheme::w4a16), 7, [](uint64_t) { return 1.0; }), "first pool");
  seeds.clear();
  test::expect_within_bound(test::error_bound(Scheme::w4a16), 7, [&](uint64_t seed) {
    seeds.push_back(seed);
    return 0.0;
  });
  EXPECT_EQ(seeds.size(), 1u);  // a pool within the bound needs no second
  EXPECT_NONFATAL_FAILURE(test::expect_within_bound(test::error_bound(Scheme::w4a16), 7,
                                                    [](uint64_t) { return std::numeric_limits<double>::infinity(); }),
                          "pooled error inf");
}

INSTANTIATE_TEST_SUITE_P(Isa, CpuKernelIsa,
                         ::testing::Values(cpu::KernelIsa::avx512_bf16, cpu::KernelIsa::avx512, cpu::KernelIsa::avx2,
                                           cpu::KernelIsa::portable),
                         [](const auto& info) { return std::string(cpu::kernel_isa_name(info.param)); });

TEST(CpuKernels, PinningChangesTheDispatchedTarget) {
  const auto isas = cpu::runnable_kernel_isas();
  ASSERT_FALSE(isas.empty());
  EXPECT_EQ(isas.back(), cpu::KernelIsa::portable);
  if (cpu::pin_kernels_for_test(cpu::KernelIsa::avx2)) EXPECT_STREQ(cpu::kernel_target(), "AVX2");
  ASSERT_TRUE(cpu::pin_kernels_for_test(cpu::KernelIsa::portable));
  EXPECT_STRNE(cpu::kernel_target(), "AVX2");
  EXPECT_STRNE(cpu::kernel_target(), "AVX3");
  cpu::pin_kernels_for_test(cpu::KernelIsa::best);
}

}  // namespace
}  // namespace mxmoe
