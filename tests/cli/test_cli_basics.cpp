#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "cli/cli_runner.hpp"
#include "cli/common.hpp"
#include "mxmoe/version.hpp"

namespace mxmoe {
namespace {

TEST(Cli, VersionAndHelp) {
  const auto version = test::run_cli("--version");
  EXPECT_EQ(version.exit_code, 0);
  EXPECT_EQ(version.out, std::string("mxmoe ") + kVersion + "\n");
  const auto help = test::run_cli("--help");
  EXPECT_EQ(help.exit_code, 0);
  for (const char* cmd : {"demo", "explain"}) EXPECT_NE(help.out.find(cmd), std::string::npos) << cmd;
}

// 0 success, 1 failure, 2 usage error: never CLI11's internal codes (104-109).
TEST(Cli, UsageErrorsExitWithTwo) {
  for (const char* args : {"", "no-such-command", "run --bogus", "run --input random:2", "demo --tokens 0",
                           "explain --device sm_90 --scheme w4a16 --hidden abc --intermediate 64 --experts 4 --top-k 2"}) {
    EXPECT_EQ(test::run_cli(args).exit_code, 2) << args;
  }
}

// Number errors say what is wrong with the value, not a range with DBL_MAX written out.
TEST(Cli, NumberErrorsAreReadable) {
  const std::string dims = "explain --device sm_90 --scheme w4a16 --intermediate 64 --experts 4 --top-k 2 --hidden ";
  for (const auto& [value, message] : std::vector<std::pair<std::string, std::string>>{
           {"abc", "expected a whole number, got 'abc'"},
           {"-5", "must be at least 1, got -5"},
           {"2.5", "expected a whole number, got '2.5'"},
           {"99999999999999999999", "'99999999999999999999' is too large"},
           {"3000000000", "must be at most 2147483647, got 3000000000"}}) {
    const auto r = test::run_cli(dims + value);
    EXPECT_EQ(r.exit_code, 2) << value;
    EXPECT_NE(r.err.find(message), std::string::npos) << r.err;
    EXPECT_LT(r.err.size(), 300u) << r.err;
  }
}

// Forcing a CPU backend runs on the CPU even where the default device would be a GPU.
TEST(Cli, ForcingACpuBackendPicksTheCpu) {
  EXPECT_EQ(cli::device_for_run("auto", "cpu").kind, DeviceKind::cpu);
  EXPECT_EQ(cli::device_for_run("auto", "auto").id(), DeviceSpec::detect().id());
  EXPECT_EQ(cli::device_for_run("auto", "reference").id(), DeviceSpec::detect().id()) << "runs anywhere: no change";
  const auto r = test::run_cli("demo --preset tiny --tokens 2 --backend cpu");
  EXPECT_EQ(r.exit_code, 0) << r.err;
}

TEST(Cli, DemoRunsOnASmallPreset) {
  const auto r = test::run_cli("demo --preset tiny --tokens 4");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("tiny"), std::string::npos) << r.out;
  // The reference is not compared with itself.
  const auto ref = test::run_cli("demo --preset tiny --tokens 2 --backend reference");
  EXPECT_EQ(ref.exit_code, 0) << ref.err;
  EXPECT_NE(ref.out.find("no second run to compare with"), std::string::npos) << ref.out;
  EXPECT_EQ(ref.out.find("relative L2 error"), std::string::npos) << ref.out;
  const auto bad = test::run_cli("demo --preset gpt-oss-9000");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("unknown preset 'gpt-oss-9000'"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace mxmoe
