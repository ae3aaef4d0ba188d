#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "mxmoe/eval.hpp"

#include "support.hpp"

namespace mxmoe {
namespace {

namespace fs = std::filesystem;

class EvalConfigTest : public test::TempDirTest {
 protected:

  fs::path write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
    return dir_ / name;
  }

  // The error loading `text`, which must name the file and contain every part.
  void expect_error(const std::string& text, std::initializer_list<std::string> parts) {
    const fs::path p = write("bad.yaml", text);
    try {
      load_eval_config(p);
      FAIL() << "accepted:\n" << text;
    } catch (const EvalConfigError& e) {
      const std::string m = e.what();
      EXPECT_NE(m.find(p.string()), std::string::npos) << m;
      for (const auto& part : parts) EXPECT_NE(m.find(part), std::string::npos) << "'" << part << "' not in: " << m;
    }
  }

};

const char* kValid = R"(name: ok
model:
  synth: {preset: tiny, seed: 4, layers: 2, experts: 6, weights: spread}
layers: [0, 1]
scheme: w4a8
backend: cpu
device: sm_89+
env: {MXMOE_BACKEND: cpu}
padding: {hidden: 256}
input: {tokens: [1, 9], seed: 3, distribution: heavy}
metrics: {relative_l2: 1e-3, max_abs: 0.1, cosine: 0.999, routing_agreement: 0.98, scheme_relative_l2: 0.01,
          scheme_token_relative_l2: 0.02}
)";

TEST_F(EvalConfigTest, ParsesEveryField) {
  const EvalConfig c = load_eval_config(write("ok.yaml", kValid));
  EXPECT_EQ(c.name, "ok");
  EXPECT_EQ(c.synth_preset, "tiny");
  EXPECT_EQ(c.synth_seed, 4u);
  EXPECT_EQ(c.synth_layers, 2);
  EXPECT_EQ(c.synth_experts, 6);
  EXPECT_EQ(c.synth_weights, WeightDistribution::spread);
  EXPECT_EQ(c.layers, (std::vector<int>{0, 1}));
  EXPECT_EQ(c.scheme, Scheme::w4a8);
  EXPECT_EQ(c.backend, "cpu");
  EXPECT_EQ(c.device, "sm_89+");
  EXPECT_EQ(c.env.at("MXMOE_BACKEND"), "cpu");
  EXPECT_EQ(c.pad_hidden_to, 256);
  EXPECT_EQ(c.pad_intermediate_to, 0);
  EXPECT_EQ(c.tokens, (std::vector<int>{1, 9}));
  EXPECT_EQ(c.distribution, HiddenDistribution::heavy);
  EXPECT_EQ(*c.thresholds.relative_l2, 1e-3);
  EXPECT_EQ(*c.thresholds.routing_agreement, 0.98);
  EXPECT_EQ(*c.thresholds.scheme_relative_l2, 0.01);
  EXPECT_EQ(*c.thresholds.scheme_token_relative_l2, 0.02);
}

TEST_F(EvalConfigTest, CheckpointPathsAreRelativeToTheConfig) {
  const EvalConfig c = load_eval_config(write("ck.yaml", R"(name: ck
model: {checkpoint: models/a}
scheme: w4a16
input: {tokens: 4}
metrics: {cosine: 0.9}
)"));
  EXPECT_EQ(*c.checkpoint, dir_ / "models/a");
  EXPECT_EQ(c.tokens, (std::vector<int>{4}));
}

TEST_F(EvalConfigTest, UnknownKeysAreErrorsNamingTheKey) {
  expect_error(std::string(kValid) + "colour: blue\n", {"unknown key 'colour'"});
  expect_error(R"(name: x
model: {synth: {preset: tiny, sead: 3}}
scheme: w4a16
input: {tokens: 1}
metrics: {cosine: 0.9}
)",
               {"unknown key 'model.synth.sead'", "allowed here"});
  expect_error(R"(name: x
model: {synth: {preset: tiny}}
scheme: w4a16
input: {tokens: 1}
metrics: {cosine: 0.9, accuracy: 1}
)",
               {"unknown key 'metrics.accuracy'"});
}

TEST_F(EvalConfigTest, AnUnknownWeightDistributionIsAnErrorNamingTheKey) {
  expect_error(R"(name: x
model: {synth: {preset: tiny, weights: wide}}
scheme: w4a16
input: {tokens: 1}
metrics: {cosine: 0.9}
)",
               {"key 'model.synth.weights' must be normal or spread", "'wide'"});
}

TEST_F(EvalConfigTest, MissingRequiredKeysAreErrorsNamingTheKey) {
  expect_error("model: {synth: {preset: tiny}}\nscheme: w4a16\ninput: {tokens: 1}\nmetrics: {cosine: 0.9}\n",
               {"missing required key 'name'"});
  expect_error("name: x\nscheme: w4a16\ninput: {tokens: 1}\nmetrics: {cosine: 0.9}\n", {"missing required key 'model'"});
  expect_error("name: x\nmodel: {synth: {seed: 1}}\nscheme: w4a16\ninput: {tokens: 1}\nmetrics: {cosine: 0.9}\n",
               {"missing required key 'model.synth.preset'"});
  expect_error("name: x\nmodel: {synth: {preset: tiny}}\nscheme: w4a16\ninput: {seed: 1}\nmetrics: {cosine: 0.9}\n",
               {"missing required key 'input.tokens'"});
  expect_error("name: x\nmodel: {synth: {preset: tiny}}\nscheme: w4a16\ninput: {tokens: 1}\nmetrics: {}\n",
               {"at least one threshold"});
}

TEST_F(EvalConfigTest, BadValuesAreErrorsNamingTheKey) {
  const std::string base = "name: x\nmodel: {synth: {preset: tiny}}\ninput: {tokens: 1}\nmetrics: {cosine: 0.9}\n";
  expect_error(base + "scheme: w4a2\n", {"key 'scheme' must be one of"});
  expect_error(base + "scheme: w4a16\ndevice: tpu\n", {"key 'device'"});
  expect_error("name: x\nmodel: {synth: {preset: gpt-oss-9000}}\nscheme: w4a16\ninput: {tokens: 1}\nmetrics: {cosine: 0.9}\n",
               {"unknown preset 'gpt-oss-9000'"});
  expect_error("name: x\nmodel: {synth: {preset: tiny}}\nscheme: w4a16\ninput: {tokens: [1, 0]}\nmetrics: {cosine: 0.9}\n",
               {"'input.tokens' must hold integers >= 1"});
  expect_error("name: x\nmodel: {synth: {preset: tiny}}\nscheme: w4a16\ninput: {tokens: 1}\nmetrics: {cosine: high}\n",
               {"'metrics.cosine' must be a number"});
  expect_error("name: x\nmodel: {synth: {preset: tiny}, checkpoint: a}\nscheme: w4a16\ninput: {tokens: 1}\nmetrics: {cosine: 0.9}\n",
               {"exactly one of 'checkpoint' or 'synth'"});
  expect_error("name: [unclosed\n", {"invalid YAML"});
  expect_error("- just\n- a list\n", {"must be a mapping"});
}

TEST_F(EvalConfigTest, ListsExpandRelativeToTheListAndNameBadLines) {
  write("a.yaml", kValid);
  write("b.yml", kValid);
  const fs::path list = write("models-x.txt", "# comment\n\na.yaml   # trailing comment\n  b.yml\n");
  const auto paths = expand_eval_paths({list, dir_ / "a.yaml"});
  ASSERT_EQ(paths.size(), 3u);
  EXPECT_EQ(paths[0], dir_ / "a.yaml");
  EXPECT_EQ(paths[1], dir_ / "b.yml");
  const fs::path broken = write("models-y.txt", "a.yaml\nmissing.yaml\n");
  try {
    expand_eval_paths({broken});
    FAIL();
  } catch (const EvalConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("models-y.txt:2: no config file 'missing.yaml'"), std::string::npos) << e.what();
  }
  try {
    expand_eval_paths({dir_ / "none.txt"});
    FAIL();
  } catch (const EvalConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("none.txt: no such file"), std::string::npos) << e.what();
  }
  // A folder is not "no such file": the error says what to give instead.
  try {
    expand_eval_paths({dir_});
    FAIL();
  } catch (const EvalConfigError& e) {
    EXPECT_NE(std::string(e.what()).find("is a folder; give config files (.yaml) or lists of them (.txt)"),
              std::string::npos) << e.what();
  }
}

TEST_F(EvalConfigTest, TheShippedConfigsAllParse) {
  const fs::path evals = fs::path(MXMOE_SOURCE_DIR) / "configs" / "evals";
  int lists = 0;
  for (const auto& entry : fs::directory_iterator(evals)) {
    if (entry.path().extension() != ".txt") continue;
    ++lists;
    for (const auto& config : expand_eval_paths({entry.path()})) EXPECT_NO_THROW(load_eval_config(config)) << config;
  }
  EXPECT_GE(lists, 2);
}

// yaml-cpp errors raised while reading nodes (a key that is not a scalar) are config errors naming
// the file, like parse errors (issue 14).
TEST_F(EvalConfigTest, MalformedKeysAreConfigErrorsNamingTheFile) {
  expect_error("? :\n", {"invalid YAML"});
  expect_error("name: x\n? [a, b]\n: 1\n", {"invalid YAML"});
}

TEST_F(EvalConfigTest, TokenCountsAboveTheLimitAreRefused) {
  std::string text = kValid;
  text.replace(text.find("tokens: [1, 9]"), 14, "tokens: [1, 40000000]");
  expect_error(text, {"input.tokens", "above the limit"});
}

}  // namespace
}  // namespace mxmoe
