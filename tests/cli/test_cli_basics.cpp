#include <gtest/gtest.h>

#include "cli/cli_runner.hpp"
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
  EXPECT_NE(test::run_cli("").exit_code, 0);
  EXPECT_NE(test::run_cli("no-such-command").exit_code, 0);
}

TEST(Cli, DemoRunsOnASmallPreset) {
  const auto r = test::run_cli("demo --preset tiny --tokens 4");
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("tiny"), std::string::npos) << r.out;
  const auto bad = test::run_cli("demo --preset gpt-oss-9000");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("unknown preset 'gpt-oss-9000'"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace mxmoe
