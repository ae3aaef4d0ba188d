#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "cli/cli_runner.hpp"
#include "mxmoe/backend.hpp"

namespace mxmoe {
namespace {

const std::string kGptOss20b = "--scheme w4a16 --hidden 2880 --intermediate 2880 --experts 32 --top-k 4";

TEST(CliExplain, JsonNamesTheChoiceThePlanAndEveryBackend) {
  const auto r = test::run_cli("explain --device cpu:avx2 " + kGptOss20b + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  ASSERT_TRUE(j["chosen"].is_string());
  EXPECT_EQ(j["padding"]["hidden"], 2880);
  EXPECT_GE(j["padding"]["padded_hidden"].get<int>(), 2880);
  EXPECT_GE(j["padding"]["padded_intermediate"].get<int>(), 2880);
  EXPECT_EQ(j["device"]["id"], "cpu:avx2");
  ASSERT_EQ(j["backends"].size(), backend_registry().size());
  int chosen = 0;
  for (size_t i = 0; i < backend_registry().size(); ++i) {
    EXPECT_EQ(j["backends"][i]["name"], backend_registry()[i].name);
    const std::string verdict = j["backends"][i]["verdict"];
    EXPECT_TRUE(verdict == "chosen" || verdict == "eligible" || verdict == "rejected") << verdict;
    EXPECT_FALSE(j["backends"][i]["reason"].get<std::string>().empty());
    chosen += verdict == "chosen";
  }
  EXPECT_EQ(chosen, 1);
}

// A GPU that no GPU backend serves (here FP8 activations on an A100) is refused, with the way to
// ask for the float64 emulation, which then runs.
TEST(CliExplain, AGpuWithoutAGpuBackendIsRefusedUnlessEmulationIsAsked) {
  const std::string w4a8 = "--scheme w4a8 --hidden 2880 --intermediate 2880 --experts 32 --top-k 4";
  const auto r = test::run_cli("explain --device sm_80 " + w4a8);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no backend can run sm_80"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--backend reference"), std::string::npos) << r.err;
  const auto forced = test::run_cli("explain --device sm_80 --backend reference " + w4a8);
  EXPECT_EQ(forced.exit_code, 0) << forced.err;
  EXPECT_NE(forced.out.find("forced by --backend"), std::string::npos) << forced.out;
}

TEST(CliExplain, TableShowsVerdictsAndPadding) {
  const auto r = test::run_cli("explain --device cpu:avx2 " + kGptOss20b);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("backend"), std::string::npos);
  EXPECT_NE(r.out.find("verdict"), std::string::npos);
  EXPECT_NE(r.out.find("chosen"), std::string::npos);
  EXPECT_NE(r.out.find("padding: hidden 2880 -> "), std::string::npos) << r.out;
  for (const auto& b : backend_registry()) EXPECT_NE(r.out.find(b.name), std::string::npos) << b.name;
}

TEST(CliExplain, UnknownForcedBackendFailsAndListsTheKnownOnes) {
  for (const std::string& how : {std::string("MXMOE_BACKEND=nonexistent"), std::string()}) {
    const auto r = test::run_cli("explain --device sm_90 " + kGptOss20b + (how.empty() ? " --backend nonexistent" : ""), how);
    EXPECT_NE(r.exit_code, 0);
    EXPECT_NE(r.err.find("unknown backend 'nonexistent'"), std::string::npos) << r.err;
    for (const auto& b : backend_registry()) EXPECT_NE(r.err.find(b.name), std::string::npos) << b.name;
  }
  const auto j = test::run_cli("explain --device sm_90 " + kGptOss20b + " --json", "MXMOE_BACKEND=nonexistent");
  EXPECT_NE(j.exit_code, 0);
  const auto parsed = nlohmann::json::parse(j.out);
  EXPECT_TRUE(parsed["chosen"].is_null());
  EXPECT_NE(parsed["error"].get<std::string>().find("known backends"), std::string::npos);
}

TEST(CliExplain, BadArgumentsAreErrors) {
  EXPECT_NE(test::run_cli("explain --device sm_91 " + kGptOss20b).exit_code, 0);
  EXPECT_NE(test::run_cli("explain --device sm_90 --scheme w4a2 --hidden 64 --intermediate 64 --experts 4 --top-k 2").exit_code, 0);
  const auto r = test::run_cli("explain --device sm_90 --scheme w4a16 --hidden 64 --intermediate 64 --experts 4 --top-k 5");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("top_k"), std::string::npos) << r.err;
  EXPECT_NE(test::run_cli("explain --device sm_90 --scheme w4a16").exit_code, 0);  // missing dims
}

// Dims past the limits are refused; none wraps into a negative padded size (issue 14).
TEST(CliExplain, HugeDimsAreRefusedNotPlannedNegative) {
  const auto r = test::run_cli("explain --device sm_90 --scheme w4a16 --hidden 2147483647 --intermediate 2880 --experts 32 --top-k 4");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.err.find("above mxmoe's limits"), std::string::npos) << r.err;
  EXPECT_EQ(r.out.find("-"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace mxmoe
