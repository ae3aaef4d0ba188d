#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <string>

#include "cli/cli_runner.hpp"
#include "support.hpp"

namespace mxmoe {
namespace {

namespace fs = std::filesystem;

class CliBench : public test::TempDirTest {
 protected:
  std::string read(const fs::path& p) {
    std::ifstream in(p);
    return {std::istreambuf_iterator<char>(in), {}};
  }
};

// A sweep over schemes and token counts: one row each, with every repetition's time, consistent
// statistics and the same-run ceiling.
TEST_F(CliBench, SweepsSchemesAndTokenCountsIntoTableAndJson) {
  const fs::path json_path = dir_ / "bench.json";
  const auto r = test::run_cli("bench --preset tiny --schemes w4a16,w4a4 --tokens 1,5 --warmup 1 --reps 4 --device cpu:native "
                               "--output " + json_path.string());
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("median ms"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("copy bandwidth"), std::string::npos) << r.out;
  const auto report = nlohmann::json::parse(read(json_path));
  EXPECT_GT(report["copy_bandwidth_gbs"].get<double>(), 0);
  EXPECT_EQ(report["reps"], 4);
  ASSERT_EQ(report["runs"].size(), 4u);
  std::set<std::pair<std::string, int>> points;
  for (const auto& run : report["runs"]) {
    points.insert({run["scheme"].get<std::string>(), run["tokens"].get<int>()});
    EXPECT_EQ(run["backend"], "cpu") << run;
    ASSERT_EQ(run["samples_ms"].size(), 4u);
    const double median = run["median_ms"], p90 = run["p90_ms"], min = run["min_ms"];
    EXPECT_GT(min, 0);
    EXPECT_LE(min, median);
    EXPECT_LE(median, p90);
    // tiny has 8 experts, top-2: one token touches 2, five tokens 2 to 8.
    const double touched = run["experts_touched"];
    EXPECT_GE(touched, 2);
    EXPECT_LE(touched, run["tokens"] == 1 ? 2 : 8);
    EXPECT_GT(run["fraction_of_copy"].get<double>(), 0);
  }
  EXPECT_EQ(points, (std::set<std::pair<std::string, int>>{{"w4a16", 1}, {"w4a16", 5}, {"w4a4", 1}, {"w4a4", 5}}));
}

TEST_F(CliBench, CsvAndJsonOnStdout) {
  const fs::path csv_path = dir_ / "bench.csv";
  const auto r = test::run_cli("bench --preset tiny --schemes w4a8 --tokens 3 --reps 2 --json --output " + csv_path.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["runs"].size(), 1u);
  const std::string csv = read(csv_path);
  EXPECT_EQ(csv.rfind("model,scheme,backend,", 0), 0u) << csv;
  EXPECT_NE(csv.find("\ntiny,w4a8,"), std::string::npos) << csv;
}

// A scheme no backend runs here is a skipped row with the oracle's reason; nothing runnable at all
// is an error, and bad options are refused before any work.
TEST_F(CliBench, SkipsAndRefusals) {
  const auto forced = test::run_cli("bench --preset tiny --schemes w4a16,w4a32 --tokens 2 --reps 2 --backend cpu");
  ASSERT_EQ(forced.exit_code, 0) << forced.err;
  EXPECT_NE(forced.out.find("tiny w4a32: skipped:"), std::string::npos) << forced.out;
  const auto none = test::run_cli("bench --preset tiny --schemes w4a32 --tokens 2 --reps 2 --backend cpu");
  EXPECT_EQ(none.exit_code, 1);
  EXPECT_NE(none.err.find("every scheme was skipped"), std::string::npos) << none.err;
  EXPECT_EQ(test::run_cli("bench --reps 0").exit_code, 2);
  EXPECT_EQ(test::run_cli("bench --tokens 1,x").exit_code, 2);
  const auto format = test::run_cli("bench --preset tiny --output " + (dir_ / "b.txt").string());
  EXPECT_EQ(format.exit_code, 1);
  EXPECT_NE(format.err.find("must end in .json or .csv"), std::string::npos) << format.err;
  const auto twice = test::run_cli("bench --preset tiny --checkpoint " + dir_.string());
  EXPECT_EQ(twice.exit_code, 1);
  EXPECT_NE(twice.err.find("give one of them"), std::string::npos) << twice.err;
  const auto help = test::run_cli("bench --help");
  EXPECT_EQ(help.exit_code, 0);
  for (const char* option : {"--tokens", "--schemes", "--reps", "--warmup", "--output", "--json"}) {
    EXPECT_NE(help.out.find(option), std::string::npos) << option;
  }
}

}  // namespace
}  // namespace mxmoe
