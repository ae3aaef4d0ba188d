#include <gtest/gtest.h>

#include <filesystem>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "cli/cli_runner.hpp"
#include "mxmoe/device.hpp"
#include "mxmoe/format.hpp"
#include "mxmoe/gptoss.hpp"
#include "mxmoe/synth.hpp"
#include "support.hpp"

namespace mxmoe {
namespace {

namespace fs = std::filesystem;

class CliCheckpoints : public test::TempDirTest {
 protected:
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
};

TEST_F(CliCheckpoints, SynthThenRunMatchesTheReferenceOnTheSameLayer) {
  auto r = test::run_cli("synth --preset tiny --layers 2 --seed 11 --output " + path("ck"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(dir_ / "ck" / "model.safetensors.index.json"));
  r = test::run_cli("run --checkpoint " + path("ck") + " --layer 1 --input random:16 --seed 5 --output " + path("o.safetensors"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("chosen"), std::string::npos) << r.out;

  const TensorStore out = TensorStore::open(path("o.safetensors"));
  const MoeShape shape = find_preset("tiny")->shape;
  const auto output = out.read_floats("output", {16, shape.hidden});
  const auto ids = out.read_raw("expert_ids", DType::I32, {16, shape.top_k});
  const auto weights = out.read_floats("expert_weights", {16, shape.top_k});

  const MoeLayer layer = GptOssCheckpoint::open(dir_ / "ck").load_layer(1);
  const auto x = random_hidden(16, shape.hidden, 5);
  const MoeOutput expected = reference_forward(layer, x, 16, Scheme::w4a16);
  EXPECT_LT(test::relative_l2(output, expected.output), 1e-6);
  EXPECT_EQ(std::memcmp(ids.data(), expected.routing.expert_ids.data(), ids.size()), 0);
  EXPECT_EQ(weights, expected.routing.weights);
}

// --weights spread writes the generator's spread layer, scales and all, and refuses other names.
TEST_F(CliCheckpoints, SynthWritesSpreadWeightsWhenAsked) {
  ASSERT_EQ(test::run_cli("synth --preset tiny --weights spread --seed 11 --output " + path("ck")).exit_code, 0);
  const MoeLayer written = GptOssCheckpoint::open(dir_ / "ck").load_layer(0);
  const MoeLayer spread = random_layer(find_preset("tiny")->shape, 11, 0, WeightDistribution::spread);
  EXPECT_EQ(written.down.scales, spread.down.scales);
  EXPECT_EQ(written.gate_up.blocks, spread.gate_up.blocks);
  EXPECT_NE(written.down.scales, random_layer(find_preset("tiny")->shape, 11, 0).down.scales);
  const auto r = test::run_cli("synth --preset tiny --weights wide --output " + path("ck2"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("--weights"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir_ / "ck2" / "model.safetensors"));
}

TEST_F(CliCheckpoints, RunReadsBf16AndF32InputsAndChecksThem) {
  ASSERT_EQ(test::run_cli("synth --preset tiny --layout openai --output " + path("ck")).exit_code, 0);
  const std::vector<float> x = random_hidden(3, 128, 2);
  const auto bf16 = floats_to_bf16_bytes(x);
  write_safetensors(path("bf16.safetensors"), {{"hidden_states", DType::BF16, {3, 128}, bf16}});
  write_safetensors(path("f32.safetensors"), {{"hidden_states", DType::F32, {3, 128}, as_bytes_of(x)}});
  write_safetensors(path("wrong.safetensors"), {{"hidden_states", DType::F32, {2, 192}, as_bytes_of(x)}});
  write_safetensors(path("other.safetensors"), {{"x", DType::F32, {3, 128}, as_bytes_of(x)}});
  for (const char* input : {"bf16.safetensors", "f32.safetensors"}) {
    const auto r = test::run_cli("run --checkpoint " + path("ck") + " --input " + path(input) + " --output " + path("o.safetensors"));
    EXPECT_EQ(r.exit_code, 0) << r.err;
  }
  auto r = test::run_cli("run --checkpoint " + path("ck") + " --input " + path("wrong.safetensors") + " --output " + path("o.safetensors"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("'hidden_states' has shape [2, 192], expected [tokens, 128]"), std::string::npos) << r.err;
  r = test::run_cli("run --checkpoint " + path("ck") + " --input " + path("other.safetensors") + " --output " + path("o.safetensors"));
  EXPECT_NE(r.err.find("has no tensor 'hidden_states'"), std::string::npos) << r.err;
  r = test::run_cli("run --checkpoint " + path("ck") + " --input random:0 --output " + path("o.safetensors"));
  EXPECT_NE(r.err.find("random:T"), std::string::npos) << r.err;
  r = test::run_cli("run --checkpoint " + path("ck") + " --layer 7 --input random:2 --output " + path("o.safetensors"));
  EXPECT_NE(r.err.find("layer 7 is out of range"), std::string::npos) << r.err;
  r = test::run_cli("run --checkpoint " + path("nowhere") + " --input random:2 --output " + path("o.safetensors"));
  EXPECT_NE(r.err.find("no such file or directory"), std::string::npos) << r.err;
  r = test::run_cli("run --checkpoint " + path("ck") + " --input random:2 --backend nope --output " + path("o.safetensors"));
  EXPECT_NE(r.err.find("unknown backend 'nope'"), std::string::npos) << r.err;
  r = test::run_cli("run --checkpoint " + path("ck") + " --input random:2 --device sm_90 --output " + path("o.safetensors"));
  if (detect_cuda_devices().empty()) EXPECT_NE(r.err.find("is not on this machine"), std::string::npos) << r.err;
}

TEST_F(CliCheckpoints, InspectReportsConsistencyAndCorruption) {
  ASSERT_EQ(test::run_cli("synth --preset tiny --layers 2 --output " + path("ck")).exit_code, 0);
  auto r = test::run_cli("inspect --checkpoint " + path("ck"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("huggingface layout"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("model.layers.1.mlp.experts.down_proj_scales"), std::string::npos);
  EXPECT_NE(r.out.find("consistent"), std::string::npos);

  // The config claims a third layer.
  std::string config;
  {
    std::ifstream in(dir_ / "ck" / "config.json");
    config.assign(std::istreambuf_iterator<char>(in), {});
  }
  std::ofstream(dir_ / "ck" / "config.json") << std::regex_replace(config, std::regex("\"num_hidden_layers\": 2"), "\"num_hidden_layers\": 3");
  r = test::run_cli("inspect --checkpoint " + path("ck"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("missing tensor 'model.layers.2.mlp.router.weight'"), std::string::npos) << r.out;

  // A truncated shard.
  const fs::path shard = dir_ / "ck" / "model-00002-of-00002.safetensors";
  fs::resize_file(shard, fs::file_size(shard) - 100);
  r = test::run_cli("inspect --checkpoint " + path("ck"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("model-00002-of-00002.safetensors"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("truncated"), std::string::npos) << r.err;
}

// A bf16 checkpoint in Hugging Face's dequantized layout, made from an MXFP4 layer: quantizing it
// must give back exactly the blocks and scales it came from.
TEST_F(CliCheckpoints, QuantizeConvertsBf16ExpertsToMxfp4) {
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const MoeShape shape{128, 96, 4, 2};
  const MoeLayer layer = random_layer(shape, seed);
  const int64_t E = shape.experts, H = shape.hidden, I = shape.intermediate;
  std::vector<float> gate_up(E * H * 2 * I), down(E * I * H);  // [E, H, 2I] and [E, I, H]
  std::vector<double> row(std::max(H, I));
  for (int64_t e = 0; e < E; ++e) {
    for (int64_t r = 0; r < 2 * I; ++r) {
      layer.gate_up.row_to_double(e, r, row.data());
      for (int64_t h = 0; h < H; ++h) gate_up[(e * H + h) * 2 * I + r] = static_cast<float>(row[h]);
    }
    for (int64_t h = 0; h < H; ++h) {
      layer.down.row_to_double(e, h, row.data());
      for (int64_t i = 0; i < I; ++i) down[(e * I + i) * H + h] = static_cast<float>(row[i]);
    }
  }
  const auto gate_up_bf16 = floats_to_bf16_bytes(gate_up), down_bf16 = floats_to_bf16_bytes(down);
  LayerTensors rest = gptoss_layer_tensors(layer, 0, GptOssLayout::huggingface);
  std::vector<TensorToWrite> tensors = {rest.tensors[0], rest.tensors[1], rest.tensors[4], rest.tensors[7]};
  tensors.push_back({"model.layers.0.mlp.experts.gate_up_proj", DType::BF16, {E, H, 2 * I}, gate_up_bf16});
  tensors.push_back({"model.layers.0.mlp.experts.down_proj", DType::BF16, {E, I, H}, down_bf16});
  const std::vector<uint8_t> other(64, 7);
  tensors.push_back({"model.embed_tokens.weight", DType::BF16, {4, 8}, other});
  fs::create_directories(dir_ / "bf16");
  write_safetensors(dir_ / "bf16" / "model.safetensors", tensors);
  GptOssConfig config;
  config.shape = shape;
  config.layers = 1;
  nlohmann::json config_json = nlohmann::json::parse(config.to_json());
  config_json["rope_theta"] = 150000;  // a key the converter does not know: kept
  std::ofstream(dir_ / "bf16" / "config.json") << config_json.dump();

  // The input of quantize is a consistent checkpoint of its own kind, which cannot run as it is.
  auto r = test::run_cli("inspect --checkpoint " + path("bf16"));
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("bf16 (dense"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("consistent: every MoE tensor matches the config"), std::string::npos) << r.out;
  try {
    GptOssCheckpoint::open(dir_ / "bf16").load_layer(0);
    FAIL() << "a bf16 checkpoint loaded as MXFP4";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("mxmoe quantize --checkpoint"), std::string::npos) << e.what();
  }
  r = test::run_cli("quantize --checkpoint " + path("bf16") + " --output " + path("mx"));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto checkpoint = GptOssCheckpoint::open(dir_ / "mx");
  EXPECT_TRUE(checkpoint.inconsistencies().empty());
  const MoeLayer back = checkpoint.load_layer(0);
  EXPECT_EQ(back.gate_up.blocks, layer.gate_up.blocks);
  EXPECT_EQ(back.gate_up.scales, layer.gate_up.scales);
  EXPECT_EQ(back.down.blocks, layer.down.blocks);
  EXPECT_EQ(back.down.scales, layer.down.scales);
  const auto copied = checkpoint.store().bytes("model.embed_tokens.weight");
  EXPECT_EQ(std::vector<uint8_t>(copied.begin(), copied.end()), other);
  r = test::run_cli("run --checkpoint " + path("mx") + " --input random:4 --output " + path("o.safetensors"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  const nlohmann::json written = nlohmann::json::parse(std::ifstream(dir_ / "mx" / "config.json"));
  EXPECT_EQ(written.value("rope_theta", 0), 150000);
  EXPECT_EQ(written["quantization_config"]["quant_method"], "mxfp4");

  // The library call behind the command, with its progress: every tensor reported, then the write.
  std::vector<std::string> steps;
  int64_t last_done = -1, last_total = -1;
  const QuantizeSummary summary =
      quantize_checkpoint(dir_ / "bf16", dir_ / "mx-lib", false, [&](const std::string& step, int64_t done, int64_t total) {
        EXPECT_GE(done, last_done);
        steps.push_back(step);
        last_done = done;
        last_total = total;
      });
  EXPECT_EQ(summary.expert_tensors, 2);
  EXPECT_EQ(summary.tensors, 9);  // router weight and bias, 2 expert biases, the embedding, 2 x (blocks, scales)
  EXPECT_EQ(last_done, last_total);
  EXPECT_EQ(steps.back(), "writing model.safetensors");
  EXPECT_EQ(GptOssCheckpoint::open(dir_ / "mx-lib").load_layer(0).down.blocks, layer.down.blocks);

  // The output is never the input, named alike or not (an output that does not exist yet is fine:
  // every call above wrote a new folder).
  r = test::run_cli("quantize --checkpoint " + path("bf16") + " --output " + path("bf16"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("the output must differ from the input directory"), std::string::npos) << r.err;
  r = test::run_cli("quantize --checkpoint " + path("bf16") + " --output " + path("bf16") + "/../bf16/.");
  EXPECT_NE(r.err.find("the output must differ from the input directory"), std::string::npos) << r.err;
  fs::create_directory_symlink(dir_ / "bf16", dir_ / "bf16-link");
  r = test::run_cli("quantize --checkpoint " + path("bf16") + " --output " + path("bf16-link"));
  EXPECT_NE(r.err.find("the output must differ from the input directory"), std::string::npos) << r.err;
  EXPECT_TRUE(fs::exists(dir_ / "bf16" / "config.json"));

  // Not a bf16 checkpoint: a clear error.
  r = test::run_cli("quantize --checkpoint " + path("mx") + " --output " + path("mx2"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("no bf16 expert tensors"), std::string::npos) << r.err;
}

// Outputs never overwrite an input of the same command, nor a link or a device (issue 14).
TEST_F(CliCheckpoints, RunNeverOverwritesItsInputs) {
  ASSERT_EQ(test::run_cli("synth --preset tiny --output " + path("ck")).exit_code, 0);
  ASSERT_EQ(test::run_cli("run --checkpoint " + path("ck") + " --input random:2 --output " + path("x.safetensors")).exit_code, 0);
  const auto size_of = [&](const std::string& name) { return fs::file_size(dir_ / name); };
  const auto model_size = size_of("ck/model.safetensors"), input_size = size_of("x.safetensors");
  auto r = test::run_cli("run --checkpoint " + path("ck") + " --input " + path("x.safetensors") + " --output " + path("x.safetensors"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("is an input of this command"), std::string::npos) << r.err;
  r = test::run_cli("run --checkpoint " + path("ck") + " --input random:2 --output " + path("ck/model.safetensors"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("is an input of this command"), std::string::npos) << r.err;
  fs::create_symlink(dir_ / "target", dir_ / "link.safetensors");
  r = test::run_cli("run --checkpoint " + path("ck") + " --input random:2 --output " + path("link.safetensors"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("symbolic link"), std::string::npos) << r.err;
  r = test::run_cli("run --checkpoint " + path("ck") + " --input random:2 --output /dev/null");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("not a regular file"), std::string::npos) << r.err;
  EXPECT_EQ(size_of("ck/model.safetensors"), model_size);
  EXPECT_EQ(size_of("x.safetensors"), input_size);
  EXPECT_FALSE(fs::exists(dir_ / "target"));
}

TEST_F(CliCheckpoints, RequestsThatCannotFitAreRefusedUpFront) {
  ASSERT_EQ(test::run_cli("synth --preset gpt-oss-20b --experts 4 --output " + path("ck")).exit_code, 0);
  auto r = test::run_cli("run --checkpoint " + path("ck") + " --input random:16000000 --output " + path("o.safetensors"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("needs about"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("refused before allocating"), std::string::npos) << r.err;
  r = test::run_cli("run --checkpoint " + path("ck") + " --input random:100000000 --output " + path("o.safetensors"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("token count from 1 to"), std::string::npos) << r.err;
  r = test::run_cli("run --checkpoint " + path("ck") + " --input random:2 --threads 100000 --output " + path("o.safetensors"));
  EXPECT_EQ(r.exit_code, 0) << r.err;  // capped at the usable CPUs
}

// Folders are written whole or not at all, and never into an existing checkpoint (issue 14).
TEST_F(CliCheckpoints, SynthRefusesANonEmptyFolderAndLeavesNoHalfWrittenOne) {
  ASSERT_EQ(test::run_cli("synth --preset tiny --layers 2 --output " + path("ck")).exit_code, 0);
  auto r = test::run_cli("synth --preset tiny --layers 3 --output " + path("ck"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("is not empty"), std::string::npos) << r.err;
  EXPECT_EQ(test::run_cli("inspect --checkpoint " + path("ck")).exit_code, 0) << "the first checkpoint must still load";
  r = test::run_cli("synth --preset tiny --layers 3 --force --output " + path("ck"));
  EXPECT_EQ(r.exit_code, 0) << r.err;
  EXPECT_TRUE(fs::exists(dir_ / "ck" / "model-00003-of-00003.safetensors"));
  EXPECT_FALSE(fs::exists(dir_ / "ck" / "model-00002-of-00002.safetensors"));
  for (const auto& e : fs::directory_iterator(dir_)) {
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << "left behind: " << e.path();
  }
  for (const auto& e : fs::directory_iterator(dir_ / "ck")) {
    EXPECT_EQ(e.path().filename().string().find(".tmp-"), std::string::npos) << "left behind: " << e.path();
    EXPECT_NE(e.path().extension(), ".partial") << "left behind: " << e.path();
  }
}

TEST_F(CliCheckpoints, HugeLayerCountsInAConfigAreRefusedQuickly) {
  ASSERT_EQ(test::run_cli("synth --preset tiny --output " + path("ck")).exit_code, 0);
  std::string config;
  {
    std::ifstream in(dir_ / "ck" / "config.json");
    config.assign(std::istreambuf_iterator<char>(in), {});
  }
  std::ofstream(dir_ / "ck" / "config.json") << std::regex_replace(config, std::regex("\"num_hidden_layers\": 1"),
                                                                    "\"num_hidden_layers\": 1073741824");
  const auto r = test::run_cli("inspect --checkpoint " + path("ck"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("num_hidden_layers"), std::string::npos) << r.err;
  EXPECT_LT(r.out.size(), 10000u);
}

}  // namespace
}  // namespace mxmoe
