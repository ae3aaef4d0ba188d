#include "mxmoe/gptoss.hpp"

#include <cmath>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>

#include "io/config_json.hpp"
#include "io/files.hpp"
#include "mxmoe/format.hpp"
#include "mxmoe/limits.hpp"

namespace mxmoe {

std::string_view layout_name(GptOssLayout layout) {
  return layout == GptOssLayout::huggingface ? "huggingface" : "openai";
}

GptOssTensorNames GptOssTensorNames::of(GptOssLayout layout, int layer, bool bf16_experts) {
  const std::string L = std::to_string(layer);
  if (layout == GptOssLayout::huggingface) {
    const std::string p = "model.layers." + L + ".mlp.";
    if (bf16_experts) {
      return {p + "router.weight", p + "router.bias", p + "experts.gate_up_proj", "", p + "experts.gate_up_proj_bias",
              p + "experts.down_proj", "", p + "experts.down_proj_bias"};
    }
    return {p + "router.weight",
            p + "router.bias",
            p + "experts.gate_up_proj_blocks",
            p + "experts.gate_up_proj_scales",
            p + "experts.gate_up_proj_bias",
            p + "experts.down_proj_blocks",
            p + "experts.down_proj_scales",
            p + "experts.down_proj_bias"};
  }
  const std::string p = "block." + L + ".mlp.";
  return {p + "gate.weight",         p + "gate.bias",           p + "mlp1_weight.blocks", p + "mlp1_weight.scales",
          p + "mlp1_bias",           p + "mlp2_weight.blocks",  p + "mlp2_weight.scales", p + "mlp2_bias"};
}

std::vector<std::string> GptOssTensorNames::all() const {
  std::vector<std::string> names;
  for (const std::string* n : {&router_weight, &router_bias, &gate_up_blocks, &gate_up_scales, &gate_up_bias, &down_blocks,
                               &down_scales, &down_bias}) {
    if (!n->empty()) names.push_back(*n);
  }
  return names;
}

std::vector<ExpectedTensor> expected_layer_tensors(const GptOssConfig& c, int layer) {
  const auto n = GptOssTensorNames::of(c.layout, layer, c.bf16_experts);
  const int64_t E = c.shape.experts, H = c.shape.hidden, I = c.shape.intermediate;
  if (c.bf16_experts) {
    return {{n.router_weight, true, {E, H}},          {n.router_bias, true, {E}},
            {n.gate_up_blocks, true, {E, H, 2 * I}},  {n.gate_up_bias, true, {E, 2 * I}},
            {n.down_blocks, true, {E, I, H}},         {n.down_bias, true, {E, H}}};
  }
  return {{n.router_weight, true, {E, H}},
          {n.router_bias, true, {E}},
          {n.gate_up_blocks, false, {E, 2 * I, H / 32, 16}},
          {n.gate_up_scales, false, {E, 2 * I, H / 32}},
          {n.gate_up_bias, true, {E, 2 * I}},
          {n.down_blocks, false, {E, H, I / 32, 16}},
          {n.down_scales, false, {E, H, I / 32}},
          {n.down_bias, true, {E, H}}};
}

namespace {

// Positive and at most `limit` (docs/SECURITY.md): a config is untrusted input, and every size
// derived from it must stay plannable.
int read_int(const nlohmann::json& j, const std::filesystem::path& file, std::initializer_list<const char*> keys,
             int64_t limit) {
  for (const char* key : keys) {
    if (!j.contains(key)) continue;
    if (!j[key].is_number_integer() || j[key].get<int64_t>() <= 0 || j[key].get<int64_t>() > limit) {
      throw FormatError(file.string() + ": key '" + key + "' must be an integer from 1 to " + std::to_string(limit) +
                        ", got " + io::describe_json(j[key]));
    }
    return j[key].get<int>();
  }
  std::string names;
  for (const char* key : keys) names += (names.empty() ? "'" : " or '") + std::string(key) + "'";
  throw FormatError(file.string() + ": missing key " + names);
}

}  // namespace

std::optional<GptOssLayout> GptOssCheckpoint::detect_layout(const TensorStore& store) {
  bool hf = false, openai = false;
  for (const auto& name : store.names()) {
    hf |= name.starts_with("model.layers.") && name.find(".mlp.experts.") != std::string::npos;
    openai |= name.starts_with("block.") && name.find(".mlp.mlp1_weight.") != std::string::npos;
  }
  if (hf && openai) throw FormatError(store.source().string() + ": holds tensors of both the Hugging Face and the OpenAI layout");
  if (!hf && !openai) return std::nullopt;
  return hf ? GptOssLayout::huggingface : GptOssLayout::openai;
}

nlohmann::json io::read_config_json(const std::filesystem::path& file) {
  if (!std::filesystem::exists(file)) {
    throw FormatError(file.string() + ": no such file (a gpt-oss checkpoint needs its config.json)");
  }
  nlohmann::json j = io::read_json_file(file);
  if (!j.is_object()) throw FormatError(file.string() + ": not a JSON object");
  return j;
}

GptOssConfig GptOssConfig::read(const std::filesystem::path& file, GptOssLayout layout) {
  return io::gptoss_config_from_json(io::read_config_json(file), file, layout);
}

GptOssConfig io::gptoss_config_from_json(const nlohmann::json& j, const std::filesystem::path& file, GptOssLayout layout) {
  GptOssConfig c;
  c.layout = layout;
  c.shape.hidden = read_int(j, file, {"hidden_size"}, limits::kMaxDim);
  c.shape.intermediate = read_int(j, file, {"intermediate_size"}, limits::kMaxDim);
  if (layout == GptOssLayout::huggingface) {
    c.shape.experts = read_int(j, file, {"num_local_experts"}, limits::kMaxExperts);
    c.shape.top_k = read_int(j, file, {"num_experts_per_tok", "experts_per_token"}, limits::kMaxExperts);
  } else {
    c.shape.experts = read_int(j, file, {"num_experts"}, limits::kMaxExperts);
    c.shape.top_k = read_int(j, file, {"experts_per_token"}, limits::kMaxExperts);
  }
  c.layers = read_int(j, file, {"num_hidden_layers"}, limits::kMaxLayers);
  // transformers' save_pretrained may leave out a key at its GptOssConfig default, and its loader
  // then takes the default (7.0 for swiglu_limit); OpenAI's original config always names it.
  if (layout == GptOssLayout::huggingface && !j.contains("swiglu_limit")) {
    c.swiglu.limit = SwigluParams{}.limit;
  } else if (!j.contains("swiglu_limit") || !j["swiglu_limit"].is_number() || !(j["swiglu_limit"].get<double>() > 0)) {
    throw FormatError(file.string() + ": key 'swiglu_limit' must be a positive number");
  } else {
    c.swiglu.limit = j["swiglu_limit"].get<float>();
  }
  if (c.shape.hidden % 32 || c.shape.intermediate % 32) {
    throw FormatError(file.string() + ": hidden_size and intermediate_size must be multiples of the MXFP4 block 32 (" +
                      c.shape.to_string() + ")");
  }
  if (c.shape.top_k > c.shape.experts) throw FormatError(file.string() + ": more experts per token than experts");
  return c;
}

std::string GptOssConfig::to_json() const {
  nlohmann::ordered_json j;
  if (layout == GptOssLayout::huggingface) {
    j["architectures"] = {"GptOssForCausalLM"};
    j["model_type"] = "gpt_oss";
    j["hidden_size"] = shape.hidden;
    j["intermediate_size"] = shape.intermediate;
    j["num_local_experts"] = shape.experts;
    j["num_experts_per_tok"] = shape.top_k;
    j["experts_per_token"] = shape.top_k;
    j["num_hidden_layers"] = layers;
    j["swiglu_limit"] = swiglu.limit;
    j["quantization_config"] = {{"quant_method", "mxfp4"},
                                {"modules_to_not_convert", {"model.layers.*.self_attn", "model.layers.*.mlp.router",
                                                            "model.embed_tokens", "lm_head"}}};
  } else {
    j["num_hidden_layers"] = layers;
    j["num_experts"] = shape.experts;
    j["experts_per_token"] = shape.top_k;
    j["hidden_size"] = shape.hidden;
    j["intermediate_size"] = shape.intermediate;
    j["swiglu_limit"] = swiglu.limit;
  }
  return j.dump(2) + "\n";
}

GptOssCheckpoint GptOssCheckpoint::open(const std::filesystem::path& dir) { return from_store(TensorStore::open(dir)); }

GptOssCheckpoint GptOssCheckpoint::from_store(TensorStore store) {
  const auto layout = detect_layout(store);
  if (!layout) {
    throw FormatError(store.source().string() +
                      ": no gpt-oss MoE tensors (expected model.layers.L.mlp.experts.* or block.L.mlp.mlp1_weight.*)");
  }
  GptOssCheckpoint c;
  c.config_ = GptOssConfig::read(store.root() / "config.json", *layout);
  // Dense expert weights (a Hugging Face bf16 checkpoint) instead of MXFP4 blocks.
  if (*layout == GptOssLayout::huggingface) {
    bool dense = false, blocks = false;
    for (const auto& name : store.names()) {
      dense |= name.ends_with(".mlp.experts.gate_up_proj") || name.ends_with(".mlp.experts.down_proj");
      blocks |= name.ends_with("_proj_blocks");
    }
    c.config_.bf16_experts = dense && !blocks;
  }
  c.store_ = std::move(store);
  return c;
}

MoeLayer GptOssCheckpoint::load_layer(int layer) const {
  if (layer < 0 || layer >= config_.layers) {
    throw std::invalid_argument("layer " + std::to_string(layer) + " is out of range: the checkpoint has " +
                                std::to_string(config_.layers) + " layers (0 to " + std::to_string(config_.layers - 1) + ")");
  }
  if (config_.bf16_experts) {
    throw FormatError(store_.root().string() + ": a bf16 checkpoint (dense expert weights); convert it to MXFP4 with "
                      "mxmoe quantize --checkpoint " + store_.root().string() + " --output DIR");
  }
  const auto n = GptOssTensorNames::of(config_.layout, layer);
  const auto expected = expected_layer_tensors(config_, layer);
  MoeLayer m;
  m.shape = config_.shape;
  m.swiglu = config_.swiglu;
  m.router_weight = store_.read_floats(n.router_weight, expected[0].shape);
  m.router_bias = store_.read_floats(n.router_bias, expected[1].shape);
  auto load_mxfp4 = [&](Mxfp4Tensor& t, const ExpectedTensor& blocks, const ExpectedTensor& scales) {
    const auto b = store_.read_raw(blocks.name, DType::U8, blocks.shape);
    const auto s = store_.read_raw(scales.name, DType::U8, scales.shape);
    t.groups = blocks.shape[0];
    t.rows = blocks.shape[1];
    t.cols = blocks.shape[2] * 32;
    t.blocks.assign(b.begin(), b.end());
    t.scales.assign(s.begin(), s.end());
    for (size_t i = 0; i < t.scales.size(); ++i) {
      if (t.scales[i] == kE8m0Nan) {
        const int64_t per_expert = t.rows * (t.cols / 32);
        throw FormatError(store_.file_of(scales.name).path().string() + ": tensor '" + scales.name + "': scale of expert " +
                          std::to_string(i / per_expert) + ", row " + std::to_string(i % per_expert / (t.cols / 32)) +
                          " is the E8M0 NaN code 255");
      }
    }
  };
  load_mxfp4(m.gate_up, expected[2], expected[3]);
  m.gate_up_bias = store_.read_floats(n.gate_up_bias, expected[4].shape);
  load_mxfp4(m.down, expected[5], expected[6]);
  m.down_bias = store_.read_floats(n.down_bias, expected[7].shape);
  auto check_finite = [&](const std::string& name, const std::vector<float>& v) {
    for (size_t i = 0; i < v.size(); ++i) {
      if (!std::isfinite(v[i])) {
        throw FormatError(store_.file_of(name).path().string() + ": tensor '" + name + "': element " + std::to_string(i) +
                          " is not finite");
      }
    }
  };
  check_finite(n.router_weight, m.router_weight);
  check_finite(n.router_bias, m.router_bias);
  check_finite(n.gate_up_bias, m.gate_up_bias);
  check_finite(n.down_bias, m.down_bias);
  m.validate();
  return m;
}

std::vector<std::string> GptOssCheckpoint::inconsistencies() const {
  std::vector<std::string> problems;
  std::set<std::string> known;
  for (int layer = 0; layer < config_.layers; ++layer) {
    for (const auto& e : expected_layer_tensors(config_, layer)) {
      known.insert(e.name);
      if (!store_.has(e.name)) {
        problems.push_back("missing tensor '" + e.name + "'");
        continue;
      }
      const TensorInfo& t = store_.info(e.name);
      const bool dtype_ok = e.floating ? (t.dtype == DType::BF16 || t.dtype == DType::F32 || t.dtype == DType::F16)
                                       : t.dtype == DType::U8;
      if (!dtype_ok) {
        problems.push_back("tensor '" + e.name + "' has dtype " + std::string(dtype_name(t.dtype)) + ", expected " +
                           (e.floating ? "BF16, F16 or F32" : "U8"));
      }
      TensorInfo want;
      want.shape = e.shape;
      if (t.shape != e.shape) {
        problems.push_back("tensor '" + e.name + "' has shape " + t.shape_string() + ", the config implies " + want.shape_string());
      }
    }
  }
  // MoE tensors of layers the config does not have.
  const std::regex moe_name(config_.layout == GptOssLayout::huggingface ? R"(model\.layers\.(\d+)\.mlp\.(router|experts)\..*)"
                                                                        : R"(block\.(\d+)\.mlp\.(gate|mlp1|mlp2)[._].*)");
  for (const auto& name : store_.names()) {
    std::smatch m;
    if (std::regex_match(name, m, moe_name) && !known.count(name)) {
      problems.push_back("tensor '" + name + "' is not part of the " + std::to_string(config_.layers) +
                         " layers the config declares");
    }
  }
  return problems;
}

LayerTensors gptoss_layer_tensors(const MoeLayer& layer, int layer_index, GptOssLayout layout) {
  layer.validate();
  LayerTensors out;
  const auto n = GptOssTensorNames::of(layout, layer_index);
  const int64_t E = layer.shape.experts, H = layer.shape.hidden, I = layer.shape.intermediate;
  out.storage.reserve(8);  // moving the outer vector keeps every inner buffer where it is
  auto add = [&](const std::string& name, DType dtype, std::vector<int64_t> shape, std::vector<uint8_t> bytes) {
    out.storage.push_back(std::move(bytes));
    out.tensors.push_back({name, dtype, std::move(shape), out.storage.back()});
  };
  add(n.router_weight, DType::BF16, {E, H}, floats_to_bf16_bytes(layer.router_weight));
  add(n.router_bias, DType::BF16, {E}, floats_to_bf16_bytes(layer.router_bias));
  add(n.gate_up_blocks, DType::U8, {E, 2 * I, H / 32, 16}, layer.gate_up.blocks);
  add(n.gate_up_scales, DType::U8, {E, 2 * I, H / 32}, layer.gate_up.scales);
  add(n.gate_up_bias, DType::BF16, {E, 2 * I}, floats_to_bf16_bytes(layer.gate_up_bias));
  add(n.down_blocks, DType::U8, {E, H, I / 32, 16}, layer.down.blocks);
  add(n.down_scales, DType::U8, {E, H, I / 32}, layer.down.scales);
  add(n.down_bias, DType::BF16, {E, H}, floats_to_bf16_bytes(layer.down_bias));
  return out;
}

}  // namespace mxmoe
