// gpt-oss checkpoints: the Hugging Face layout and OpenAI's original layout, their config.json,
// and loading one MoE layer. docs/CHECKPOINTS.md maps every tensor name to the layer's fields.
#pragma once

#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mxmoe/moe.hpp"
#include "mxmoe/safetensors.hpp"

namespace mxmoe {

enum class GptOssLayout {
  huggingface,  // model.layers.L.mlp.router.*, model.layers.L.mlp.experts.*_proj_{blocks,scales,bias}
  openai,       // block.L.mlp.gate.*, block.L.mlp.mlp{1,2}_weight.{blocks,scales}, mlp{1,2}_bias
};
std::string_view layout_name(GptOssLayout layout);

// Names of layer L's MoE tensors in a layout.
struct GptOssTensorNames {
  std::string router_weight, router_bias;
  std::string gate_up_blocks, gate_up_scales, gate_up_bias;
  std::string down_blocks, down_scales, down_bias;
  // bf16_experts: the dense expert weights of an unquantized checkpoint (Hugging Face layout:
  // experts.gate_up_proj [E, H, 2I] and down_proj [E, I, H], named in the *_blocks fields, no scales).
  static GptOssTensorNames of(GptOssLayout layout, int layer, bool bf16_experts = false);
  std::vector<std::string> all() const;  // the names that exist in this form
};

struct GptOssConfig {
  GptOssLayout layout = GptOssLayout::huggingface;
  // Expert weights are dense BF16 (the input of `mxmoe quantize`), not MXFP4 blocks and scales.
  bool bf16_experts = false;
  MoeShape shape;
  int layers = 0;
  SwigluParams swiglu;

  // Reads config.json of either layout (HF: num_local_experts, num_experts_per_tok; OpenAI:
  // num_experts, experts_per_token). Missing or invalid keys throw FormatError naming file and key.
  static GptOssConfig read(const std::filesystem::path& config_json, GptOssLayout layout);
  // A config.json for this layout: the keys above plus what identifies a gpt-oss MXFP4 checkpoint.
  std::string to_json() const;
};

// What layer L of a checkpoint must hold: names, shapes implied by the config, and dtypes
// (U8 for blocks and scales; BF16, F16 or F32 for router weights and biases).
struct ExpectedTensor {
  std::string name;
  bool floating = false;
  std::vector<int64_t> shape;
};
std::vector<ExpectedTensor> expected_layer_tensors(const GptOssConfig& config, int layer);

class GptOssCheckpoint {
 public:
  // A directory with config.json and safetensors (single file or sharded). The layout is detected
  // from the tensor names.
  static GptOssCheckpoint open(const std::filesystem::path& dir);
  static GptOssCheckpoint from_store(TensorStore store);

  // The layout of the MoE tensors in `store`; nullopt when it has none. Throws FormatError when it
  // mixes both layouts.
  static std::optional<GptOssLayout> detect_layout(const TensorStore& store);

  const GptOssConfig& config() const { return config_; }
  const TensorStore& store() const { return store_; }

  // Loads layer L: dtypes and shapes checked against the config, FormatError naming the file and
  // tensor otherwise; NaN scale codes are rejected with the expert and row. A bf16 checkpoint is
  // refused with the way to convert it.
  MoeLayer load_layer(int layer) const;

  // Every problem found in the checkpoint without throwing: missing tensors, wrong dtypes or
  // shapes, tensors of layers beyond the config. Empty when consistent.
  std::vector<std::string> inconsistencies() const;

 private:
  GptOssConfig config_;
  TensorStore store_;
};

// A layer's tensors in a layout, ready for write_safetensors. Biases and router weights are
// written as BF16, as in the released checkpoints. `storage` owns copies of every tensor's bytes,
// so the result does not depend on `layer` living on.
struct LayerTensors {
  std::vector<TensorToWrite> tensors;
  std::vector<std::vector<uint8_t>> storage;
};
LayerTensors gptoss_layer_tensors(const MoeLayer& layer, int layer_index, GptOssLayout layout);

// Converts a dense gpt-oss checkpoint in Hugging Face's layout (experts.gate_up_proj [E, H, 2I] and
// down_proj [E, I, H], in BF16, F16 or F32) to MXFP4: each expert matrix transposed into rows along
// its reduction dim and quantized (`quantize_mxfp4`) into *_blocks and *_scales, every other tensor
// copied as it is, config.json kept with a quantization_config added. `output` is written whole or
// not at all, and an existing non-empty one is replaced only with `replace`. FormatError names the
// file and tensor of a bad input (a non-finite weight: the expert and output row too).
struct QuantizeSummary {
  int expert_tensors = 0;  // converted
  int tensors = 0;         // in the output
};
// Called before each tensor and each shard's write: what runs, tensors done, tensors in all.
using QuantizeProgress = std::function<void(const std::string& step, int64_t done, int64_t total)>;
QuantizeSummary quantize_checkpoint(const std::filesystem::path& input, const std::filesystem::path& output, bool replace,
                                    const QuantizeProgress& progress = {});

}  // namespace mxmoe
