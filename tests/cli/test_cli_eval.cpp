#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "cli/cli_runner.hpp"

#include "support.hpp"

namespace mxmoe {
namespace {

namespace fs = std::filesystem;

class CliEval : public test::TempDirTest {
 protected:

  std::string config(const std::string& name, const std::string& metrics, const std::string& device = "cpu") {
    const fs::path p = dir_ / (name + ".yaml");
    std::ofstream(p) << "name: " << name << "\nmodel: {synth: {preset: tiny, seed: 2, layers: 2}}\nscheme: w4a16\n"
                     << "backend: auto\ndevice: " << device << "\ninput: {tokens: [2, 9]}\nmetrics: " << metrics << "\n";
    return p.string();
  }
  std::string read(const fs::path& p) {
    std::ifstream in(p);
    return {std::istreambuf_iterator<char>(in), {}};
  }

};

TEST_F(CliEval, PassingConfigsExitZeroAndWriteReports) {
  const auto ok = config("ok", "{relative_l2: 4e-4, cosine: 0.99999, routing_agreement: 1.0}");
  const auto r = test::run_cli("eval " + ok + " --junit " + (dir_ / "r.xml").string() + " --output " + (dir_ / "r.json").string());
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("ok "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("pass"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("1 passed, 0 failed"), std::string::npos) << r.out;
  const std::string xml = read(dir_ / "r.xml");
  EXPECT_NE(xml.find("<testsuites name=\"mxmoe eval\" tests=\"1\" failures=\"0\""), std::string::npos) << xml;
  EXPECT_NE(xml.find("<testcase"), std::string::npos);
  EXPECT_NE(read(dir_ / "r.json").find("\"status\": \"pass\""), std::string::npos);
  // --json means what it means in explain: the report on standard output, as JSON.
  const auto json = test::run_cli("eval " + ok + " --json");
  EXPECT_EQ(json.exit_code, 0) << json.err;
  EXPECT_EQ(json.out.rfind("{", 0), 0u) << json.out;
  EXPECT_NE(json.out.find("\"status\": \"pass\""), std::string::npos) << json.out;
  EXPECT_EQ(json.out.find("1 passed"), std::string::npos) << "the table was printed too: " << json.out;
}

// Report paths are checked before the run: never over a config it reads, a folder or a link.
TEST_F(CliEval, ReportPathsThatWouldDestroySomethingAreRefusedBeforeRunning) {
  const auto ok = config("ok", "{relative_l2: 4e-4}");
  const std::string before = read(ok);
  auto r = test::run_cli("eval " + ok + " --junit " + ok);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("--junit"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("is an input of this command"), std::string::npos) << r.err;
  EXPECT_EQ(read(ok), before);
  r = test::run_cli("eval " + ok + " --output " + dir_.string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("not a regular file"), std::string::npos) << r.err;
  EXPECT_EQ(r.out.find("pass"), std::string::npos) << "the evals ran before the refusal: " << r.out;
}

TEST_F(CliEval, ATooTightThresholdFailsTheCommand) {
  const auto tight = config("tight", "{relative_l2: 1e-12}");
  const auto r = test::run_cli("eval " + tight + " --junit " + (dir_ / "r.xml").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("FAIL: relative_l2"), std::string::npos) << r.out;
  EXPECT_NE(read(dir_ / "r.xml").find("<failure message=\"relative_l2"), std::string::npos);
}

// Two questions, two errors: is the kernel right (against the same-scheme reference), and what
// does the scheme cost (that reference against exact activations)? W4A16 costs about 0.3%.
TEST_F(CliEval, TheSchemesOwnCostIsReportedAndChecked) {
  const auto ok = config("cost", "{relative_l2: 4e-4, scheme_relative_l2: 2e-2}");
  auto r = test::run_cli("eval " + ok + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const auto at = r.out.find("\"scheme_relative_l2\": ");
  ASSERT_NE(at, std::string::npos) << r.out;
  const double cost = std::stod(r.out.substr(at + 22));
  EXPECT_GT(cost, 1e-4) << "bf16 activations cost something";
  EXPECT_LT(cost, 2e-2);
  const auto tight = config("tight-cost", "{scheme_relative_l2: 1e-7}");
  r = test::run_cli("eval " + tight);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("FAIL: scheme_relative_l2"), std::string::npos) << r.out;
}

// The scheme's cost for its worst token: a batch's relative L2 is weighted toward its largest
// tokens, so with token norms 4096x apart the worst token's cost is above the batch's. W4A8 on
// spread weights, per tensor and per token: the JSON carries the metric, and a tight threshold fails.
TEST_F(CliEval, TheWorstTokensCostIsReportedAndChecked) {
  auto w4a8 = [&](const std::string& name, const std::string& scheme, const std::string& metrics) {
    const fs::path p = dir_ / (name + ".yaml");
    std::ofstream(p) << "name: " << name << "\nmodel: {synth: {preset: tiny, seed: 2, weights: spread}}\nscheme: " << scheme
                     << "\nbackend: cpu\ndevice: cpu\ninput: {tokens: [16], distribution: token_norms}\nmetrics: " << metrics
                     << "\n";
    return p.string();
  };
  const auto number_after = [](const std::string& out, const std::string& key) {
    const auto at = out.find("\"" + key + "\": ");
    return at == std::string::npos ? -1.0 : std::stod(out.substr(at + key.size() + 4));
  };
  for (const std::string scheme : {"w4a8", "w4a8_token"}) {
    auto r = test::run_cli("eval " + w4a8("cost-" + scheme, scheme, "{scheme_token_relative_l2: 0.5}") + " --json");
    ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
    const double batch = number_after(r.out, "scheme_relative_l2"), token = number_after(r.out, "scheme_token_relative_l2");
    EXPECT_GT(batch, 1e-3) << scheme << ": FP8 activations cost something\n" << r.out;
    EXPECT_GE(token, batch) << scheme << ": the worst token is at least the batch's mean\n" << r.out;
    EXPECT_LT(token, 0.5) << scheme;
    r = test::run_cli("eval " + w4a8("tight-" + scheme, scheme, "{scheme_token_relative_l2: 1e-4}"));
    EXPECT_EQ(r.exit_code, 1) << r.out;
    EXPECT_NE(r.out.find("FAIL: scheme_token_relative_l2"), std::string::npos) << r.out;
  }
}

TEST_F(CliEval, AnUnmetDeviceRequirementIsSkippedNotPassed) {
  const auto gpu = config("needs-gpu", "{cosine: 0.9}", "sm_121");
  const auto r = test::run_cli("eval " + gpu + " --junit " + (dir_ / "r.xml").string());
  EXPECT_EQ(r.exit_code, 3) << "every config skipped: nothing was checked\n" << r.err;
  EXPECT_NE(r.err.find("--allow-skipped"), std::string::npos) << r.err;
  EXPECT_NE(r.out.find("skip: needs sm_121"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("0 passed, 0 failed, 0 errors, 1 skipped"), std::string::npos) << r.out;
  EXPECT_NE(read(dir_ / "r.xml").find("<skipped message=\"needs sm_121"), std::string::npos);
  EXPECT_EQ(test::run_cli("eval " + gpu + " --allow-skipped").exit_code, 0);
  // One config that ran is enough for the usual exit code.
  const auto ok = config("ok", "{relative_l2: 4e-4}");
  EXPECT_EQ(test::run_cli("eval " + gpu + " " + ok).exit_code, 0);
}

TEST_F(CliEval, MalformedConfigsAreClearErrors) {
  const fs::path bad = dir_ / "bad.yaml";
  std::ofstream(bad) << "name: bad\nmodel: {synth: {preset: tiny}}\nscheme: w4a16\ninput: {tokens: 1}\nmetrics: {cosine: 0.9}\n"
                     << "treshold: 3\n";
  auto r = test::run_cli("eval " + bad.string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find(bad.string() + ": unknown key 'treshold'"), std::string::npos) << r.err;
  r = test::run_cli("eval " + (dir_ / "nothing.txt").string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no such file"), std::string::npos) << r.err;
  // An error while running (a layer the model lacks) is reported per config and fails the command.
  const fs::path missing_layer = dir_ / "layer.yaml";
  std::ofstream(missing_layer) << "name: layer\nmodel: {synth: {preset: tiny, layers: 1}}\nlayers: [3]\nscheme: w4a16\n"
                               << "device: cpu\ninput: {tokens: 1}\nmetrics: {cosine: 0.9}\n";
  r = test::run_cli("eval " + missing_layer.string());
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("ERROR: layer 3 is out of range"), std::string::npos) << r.out;
}

// A checkpoint folder on the command line replaces every config's model: the same configs run on a
// real (here: written by synth) checkpoint exactly as on their synthetic ones.
TEST_F(CliEval, CheckpointOverrideRunsEveryConfigOnTheFolder) {
  const fs::path checkpoint = dir_ / "ckpt";
  ASSERT_EQ(test::run_cli("synth --preset tiny --layers 2 --seed 7 --output " + checkpoint.string()).exit_code, 0);
  const auto ok = config("ok", "{relative_l2: 4e-4}");
  const auto r = test::run_cli("eval " + ok + " --checkpoint " + checkpoint.string() + " --json");
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("\"model\": \"checkpoint " + fs::absolute(checkpoint).string()), std::string::npos) << r.out;
  const auto own = test::run_cli("eval " + ok + " --json");
  EXPECT_NE(own.out.find("\"model\": \"synthetic tiny seed 2\""), std::string::npos) << own.out;
  // A folder that is not a checkpoint stops the run before any config.
  const auto bad = test::run_cli("eval " + ok + " --checkpoint " + dir_.string());
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("no model.safetensors"), std::string::npos) << bad.err;
  EXPECT_EQ(bad.out.find("ok "), std::string::npos) << "a config ran: " << bad.out;
}

// Progress stays out of pipes and logs; asked for (as on a terminal), it redraws one line on
// stderr, erases it before each printed line and at the end, and never touches stdout.
TEST_F(CliEval, ProgressRedrawsOnlyWhenAskedAndNeverInStdout) {
  const auto ok = config("ok", "{relative_l2: 4e-4}");
  const auto quiet = test::run_cli("eval " + ok);
  ASSERT_EQ(quiet.exit_code, 0) << quiet.err;
  EXPECT_EQ(quiet.err.find('\r'), std::string::npos) << quiet.err;
  EXPECT_NE(quiet.err.find("[1/1] ok: pass"), std::string::npos) << quiet.err;
  const auto shown = test::run_cli("eval " + ok, "MXMOE_PROGRESS=1");
  ASSERT_EQ(shown.exit_code, 0) << shown.err;
  EXPECT_EQ(shown.out.find('\r'), std::string::npos) << shown.out;
  EXPECT_EQ(shown.out, quiet.out);
  EXPECT_NE(shown.err.find("\r\033[Keval [0/1] ok: layer 0: T=2 float64 reference"), std::string::npos) << shown.err;
  EXPECT_NE(shown.err.find("\r\033[K[1/1] ok: pass"), std::string::npos) << "not erased before a line: " << shown.err;
  const std::string erase = "\r\033[K";
  EXPECT_EQ(shown.err.rfind(erase), shown.err.size() - erase.size()) << "the status line was left behind: " << shown.err;
  const auto silenced = test::run_cli("eval " + ok, "MXMOE_PROGRESS=0");
  EXPECT_EQ(silenced.err.find('\r'), std::string::npos) << silenced.err;
  EXPECT_NE(silenced.err.find("[1/1] ok: pass"), std::string::npos) << silenced.err;
}

}  // namespace
}  // namespace mxmoe
