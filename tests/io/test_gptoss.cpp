#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "mxmoe/format.hpp"
#include "mxmoe/gptoss.hpp"
#include "mxmoe/synth.hpp"
#include "support.hpp"

namespace mxmoe {
namespace {

namespace fs = std::filesystem;

// config.json of the released openai/gpt-oss-20b and gpt-oss-120b (Hugging Face layout), trimmed
// to the keys that describe the MoE layers plus a few others that must be ignored.
const char* kGptOss20bConfig = R"({
  "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "hidden_size": 2880,
  "intermediate_size": 2880, "num_local_experts": 32, "num_experts_per_tok": 4, "experts_per_token": 4,
  "num_hidden_layers": 24, "swiglu_limit": 7.0, "head_dim": 64, "num_attention_heads": 64,
  "num_key_value_heads": 8, "sliding_window": 128, "vocab_size": 201088, "rope_theta": 150000,
  "quantization_config": {"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.self_attn",
    "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]}})";
const char* kGptOss120bConfig = R"({
  "architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "hidden_size": 2880,
  "intermediate_size": 2880, "num_local_experts": 128, "num_experts_per_tok": 4, "experts_per_token": 4,
  "num_hidden_layers": 36, "swiglu_limit": 7.0, "head_dim": 64, "num_attention_heads": 64,
  "num_key_value_heads": 8, "sliding_window": 128, "vocab_size": 201088})";
// original/config.json of gpt-oss-20b (OpenAI layout).
const char* kGptOss20bOriginalConfig = R"({"num_hidden_layers": 24, "num_experts": 32, "experts_per_token": 4,
  "vocab_size": 201088, "hidden_size": 2880, "intermediate_size": 2880, "swiglu_limit": 7.0, "head_dim": 64,
  "num_attention_heads": 64, "num_key_value_heads": 8, "sliding_window": 128, "initial_context_length": 4096,
  "rope_theta": 150000, "rope_scaling_factor": 32.0, "rope_ntk_alpha": 1, "rope_ntk_beta": 32})";

class GptOssTest : public test::TempDirTest {
 protected:

  fs::path write_json(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
    return dir_ / name;
  }

  // Writes `layers` random layers as one file, with a config that matches them.
  std::vector<MoeLayer> write_checkpoint(GptOssLayout layout, const MoeShape& shape, int layers, uint64_t seed) {
    std::vector<MoeLayer> written;
    std::vector<LayerTensors> all;
    std::vector<TensorToWrite> tensors;
    for (int l = 0; l < layers; ++l) {
      written.push_back(random_layer(shape, seed, l));
      all.push_back(gptoss_layer_tensors(written.back(), l, layout));
    }
    for (const auto& lt : all) tensors.insert(tensors.end(), lt.tensors.begin(), lt.tensors.end());
    write_safetensors(dir_ / "model.safetensors", tensors);
    GptOssConfig config;
    config.layout = layout;
    config.shape = shape;
    config.layers = layers;
    write_json("config.json", config.to_json());
    return written;
  }

  static std::string load_error(const fs::path& dir, int layer) {
    try {
      GptOssCheckpoint::open(dir).load_layer(layer);
      return "";
    } catch (const std::exception& e) {
      return e.what();
    }
  }

};

std::vector<float> bf16_rounded(std::vector<float> v) {
  for (auto& x : v) x = round_to_bf16(x);
  return v;
}

TEST_F(GptOssTest, PublicConfigsGiveTheReleasedTensorShapes) {
  const auto c20 = GptOssConfig::read(write_json("20b.json", kGptOss20bConfig), GptOssLayout::huggingface);
  EXPECT_EQ(c20.shape, (MoeShape{2880, 2880, 32, 4}));
  EXPECT_EQ(c20.layers, 24);
  EXPECT_EQ(c20.swiglu.limit, 7.0f);
  const auto t = expected_layer_tensors(c20, 23);
  EXPECT_EQ(t[0].name, "model.layers.23.mlp.router.weight");
  EXPECT_EQ(t[0].shape, (std::vector<int64_t>{32, 2880}));
  EXPECT_EQ(t[2].name, "model.layers.23.mlp.experts.gate_up_proj_blocks");
  EXPECT_EQ(t[2].shape, (std::vector<int64_t>{32, 5760, 90, 16}));
  EXPECT_FALSE(t[2].floating);
  EXPECT_EQ(t[3].shape, (std::vector<int64_t>{32, 5760, 90}));
  EXPECT_EQ(t[4].shape, (std::vector<int64_t>{32, 5760}));
  EXPECT_EQ(t[5].shape, (std::vector<int64_t>{32, 2880, 90, 16}));
  EXPECT_EQ(t[6].shape, (std::vector<int64_t>{32, 2880, 90}));
  EXPECT_EQ(t[7].shape, (std::vector<int64_t>{32, 2880}));

  const auto c120 = GptOssConfig::read(write_json("120b.json", kGptOss120bConfig), GptOssLayout::huggingface);
  EXPECT_EQ(c120.shape, (MoeShape{2880, 2880, 128, 4}));
  EXPECT_EQ(c120.layers, 36);
  EXPECT_EQ(expected_layer_tensors(c120, 0)[2].shape, (std::vector<int64_t>{128, 5760, 90, 16}));

  const auto original = GptOssConfig::read(write_json("orig.json", kGptOss20bOriginalConfig), GptOssLayout::openai);
  EXPECT_EQ(original.shape, c20.shape);
  EXPECT_EQ(original.layers, 24);
  const auto o = expected_layer_tensors(original, 5);
  EXPECT_EQ(o[0].name, "block.5.mlp.gate.weight");
  EXPECT_EQ(o[2].name, "block.5.mlp.mlp1_weight.blocks");
  EXPECT_EQ(o[2].shape, t[2].shape);
  EXPECT_EQ(o[4].name, "block.5.mlp.mlp1_bias");
  EXPECT_EQ(o[6].name, "block.5.mlp.mlp2_weight.scales");
}

TEST_F(GptOssTest, BothLayoutsLoadBackWhatWasWritten) {
  const uint64_t seed = test::fresh_seed();
  for (GptOssLayout layout : {GptOssLayout::huggingface, GptOssLayout::openai}) {
    SCOPED_TRACE(std::string(layout_name(layout)) + " seed " + std::to_string(seed));
    const MoeShape shape{128, 96, 8, 2};
    const auto written = write_checkpoint(layout, shape, 2, seed);
    const auto checkpoint = GptOssCheckpoint::open(dir_);
    EXPECT_EQ(checkpoint.config().layout, layout);
    EXPECT_TRUE(checkpoint.inconsistencies().empty());
    for (int l = 0; l < 2; ++l) {
      const MoeLayer m = checkpoint.load_layer(l);
      EXPECT_EQ(m.shape, shape);
      EXPECT_EQ(m.gate_up.blocks, written[l].gate_up.blocks);
      EXPECT_EQ(m.gate_up.scales, written[l].gate_up.scales);
      EXPECT_EQ(m.down.blocks, written[l].down.blocks);
      EXPECT_EQ(m.down.scales, written[l].down.scales);
      EXPECT_EQ(m.router_weight, bf16_rounded(written[l].router_weight));
      EXPECT_EQ(m.gate_up_bias, bf16_rounded(written[l].gate_up_bias));
      EXPECT_EQ(m.down_bias, bf16_rounded(written[l].down_bias));
    }
    EXPECT_THROW(checkpoint.load_layer(2), std::invalid_argument);
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
}

TEST_F(GptOssTest, WrongDtypeForATensorNamesFileAndTensor) {
  const MoeShape shape{64, 64, 4, 2};
  const MoeLayer layer = random_layer(shape, 3);
  LayerTensors lt = gptoss_layer_tensors(layer, 0, GptOssLayout::huggingface);
  lt.tensors[2].dtype = DType::I8;  // gate_up_proj_blocks
  write_safetensors(dir_ / "model.safetensors", lt.tensors);
  GptOssConfig config;
  config.shape = shape;
  config.layers = 1;
  write_json("config.json", config.to_json());
  const std::string e = load_error(dir_, 0);
  EXPECT_NE(e.find("model.safetensors"), std::string::npos) << e;
  EXPECT_NE(e.find("tensor 'model.layers.0.mlp.experts.gate_up_proj_blocks' has dtype I8, expected U8"), std::string::npos) << e;
  const auto problems = GptOssCheckpoint::open(dir_).inconsistencies();
  ASSERT_EQ(problems.size(), 1u);
  EXPECT_NE(problems[0].find("has dtype I8"), std::string::npos);
}

TEST_F(GptOssTest, ShapesThatDisagreeWithTheConfigAreErrors) {
  write_checkpoint(GptOssLayout::huggingface, {64, 64, 4, 2}, 1, 5);
  GptOssConfig config;
  config.shape = {64, 64, 8, 2};  // the config claims 8 experts
  config.layers = 1;
  write_json("config.json", config.to_json());
  const std::string e = load_error(dir_, 0);
  EXPECT_NE(e.find("has shape [4, 64], expected [8, 64]"), std::string::npos) << e;
  EXPECT_EQ(GptOssCheckpoint::open(dir_).inconsistencies().size(), 8u);
}

TEST_F(GptOssTest, NanScalesAndNonFiniteBiasesAreRejected) {
  const MoeShape shape{64, 64, 4, 2};
  MoeLayer layer = random_layer(shape, 9);
  layer.down.scales[2 * 64 * 2 + 5 * 2] = kE8m0Nan;  // expert 2, row 5
  LayerTensors lt = gptoss_layer_tensors(MoeLayer::zeros(shape), 0, GptOssLayout::huggingface);
  lt.tensors[6].bytes = layer.down.scales;
  write_safetensors(dir_ / "model.safetensors", lt.tensors);
  GptOssConfig config;
  config.shape = shape;
  config.layers = 1;
  write_json("config.json", config.to_json());
  std::string e = load_error(dir_, 0);
  EXPECT_NE(e.find("down_proj_scales': scale of expert 2, row 5 is the E8M0 NaN code 255"), std::string::npos) << e;

  LayerTensors lt2 = gptoss_layer_tensors(MoeLayer::zeros(shape), 0, GptOssLayout::huggingface);
  std::vector<uint8_t> bias = lt2.storage[7];  // down bias, bf16
  bias[7] = 0x7F;
  bias[6] = 0xC0;  // element 3 is NaN
  lt2.tensors[7].bytes = bias;
  write_safetensors(dir_ / "model.safetensors", lt2.tensors);
  e = load_error(dir_, 0);
  EXPECT_NE(e.find("down_proj_bias': element 3 is not finite"), std::string::npos) << e;
}

TEST_F(GptOssTest, ConfigProblemsNameTheKey) {
  write_checkpoint(GptOssLayout::huggingface, {64, 64, 4, 2}, 1, 5);
  fs::remove(dir_ / "config.json");
  EXPECT_NE(load_error(dir_, 0).find("config.json: no such file"), std::string::npos) << load_error(dir_, 0);
  write_json("config.json", R"({"hidden_size": 64, "intermediate_size": 64, "num_local_experts": 4, "num_hidden_layers": 1, "swiglu_limit": 7})");
  EXPECT_NE(load_error(dir_, 0).find("missing key 'num_experts_per_tok' or 'experts_per_token'"), std::string::npos)
      << load_error(dir_, 0);
  write_json("config.json", R"({"hidden_size": "64", "intermediate_size": 64, "num_local_experts": 4, "num_experts_per_tok": 2, "num_hidden_layers": 1, "swiglu_limit": 7})");
  EXPECT_NE(load_error(dir_, 0).find("'hidden_size' must be an integer from 1 to 65536"), std::string::npos)
      << load_error(dir_, 0);
  // transformers' save_pretrained may leave swiglu_limit out at its default; its loader takes 7.0, and so does this one.
  write_json("config.json", R"({"hidden_size": 64, "intermediate_size": 64, "num_local_experts": 4, "num_experts_per_tok": 2, "num_hidden_layers": 1})");
  EXPECT_EQ(GptOssCheckpoint::open(dir_).config().swiglu.limit, 7.0f);
  write_json("config.json", R"({"hidden_size": 64, "intermediate_size": 64, "num_local_experts": 4, "num_experts_per_tok": 2, "num_hidden_layers": 1, "swiglu_limit": -1})");
  EXPECT_NE(load_error(dir_, 0).find("'swiglu_limit' must be a positive number"), std::string::npos) << load_error(dir_, 0);
  write_json("config.json", R"({"hidden_size": 64, "intermediate_size": 64, "num_local_experts": 4, "num_experts_per_tok": 2, "num_hidden_layers": 1, "swiglu_limit": "7"})");
  EXPECT_NE(load_error(dir_, 0).find("'swiglu_limit' must be a positive number"), std::string::npos) << load_error(dir_, 0);
  write_json("config.json", "{oops");
  EXPECT_NE(load_error(dir_, 0).find("not valid JSON"), std::string::npos);
}

TEST_F(GptOssTest, InconsistenciesListMissingAndExtraTensors) {
  write_checkpoint(GptOssLayout::openai, {64, 64, 4, 2}, 2, 5);
  GptOssConfig config;
  config.layout = GptOssLayout::openai;
  config.shape = {64, 64, 4, 2};
  config.layers = 3;  // claims a third layer that is not there
  write_json("config.json", config.to_json());
  auto problems = GptOssCheckpoint::open(dir_).inconsistencies();
  EXPECT_EQ(problems.size(), 8u);
  EXPECT_NE(problems[0].find("missing tensor 'block.2.mlp.gate.weight'"), std::string::npos) << problems[0];
  config.layers = 1;  // now layer 1 is extra
  write_json("config.json", config.to_json());
  problems = GptOssCheckpoint::open(dir_).inconsistencies();
  EXPECT_EQ(problems.size(), 8u);
  EXPECT_NE(problems[0].find("is not part of the 1 layers"), std::string::npos) << problems[0];
}

// Without an index, a folder is its model.safetensors: a stray or corrupt .safetensors beside it
// (an earlier output, say) is not read (issue 14).
TEST_F(GptOssTest, UnindexedFoldersReadOnlyModelSafetensors) {
  const auto written = write_checkpoint(GptOssLayout::huggingface, {64, 64, 4, 2}, 1, 9);
  write_json("output.safetensors", "corrupt");
  EXPECT_EQ(load_error(dir_, 0), "");
  fs::rename(dir_ / "model.safetensors", dir_ / "weights.safetensors");
  const std::string e = load_error(dir_, 0);
  EXPECT_NE(e.find("no model.safetensors and no model.safetensors.index.json"), std::string::npos) << e;
  EXPECT_NE(e.find("output.safetensors, weights.safetensors"), std::string::npos) << e;
}

TEST_F(GptOssTest, ConfigValuesAboveTheLimitsAreRefused) {
  write_checkpoint(GptOssLayout::huggingface, {64, 64, 4, 2}, 1, 5);
  write_json("config.json", R"({"hidden_size": 64, "intermediate_size": 64, "num_local_experts": 4, "num_experts_per_tok": 2, "num_hidden_layers": 1073741824, "swiglu_limit": 7})");
  EXPECT_NE(load_error(dir_, 0).find("'num_hidden_layers' must be an integer from 1 to 1024"), std::string::npos)
      << load_error(dir_, 0);
  write_json("config.json", "{\"hidden_size\": " + std::string(1000, '[') + std::string(1000, ']') + "}");
  EXPECT_NE(load_error(dir_, 0).find("nested deeper than 64"), std::string::npos) << load_error(dir_, 0);
}

}  // namespace
}  // namespace mxmoe
