// Random gpt-oss-shaped layers and inputs, reproducible from a seed on every platform.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "mxmoe/moe.hpp"

namespace mxmoe {

struct ModelPreset {
  std::string name;
  MoeShape shape;
  int layers = 0;
  SwigluParams swiglu;
};

// gpt-oss-20b (H=I=2880, E=32, k=4, 24 layers), gpt-oss-120b (E=128, 36 layers) and "tiny"
// (H=128, I=96, E=8, k=2, 2 layers) for quick runs.
const std::vector<ModelPreset>& model_presets();
std::optional<ModelPreset> find_preset(std::string_view name);
std::string preset_names();

enum class WeightDistribution {
  normal,  // N(0, std^2): every block of a tensor has about the same scale (codes within ~2 binades)
  // N(0, 1) times 2^u per weight row (u uniform in [-3, 3]) and 2^v per 32-value block (v ~ N(0, 1)
  // within the row), normalized to the same mean square: block scales spread over 14-16 binades of
  // a gpt-oss-sized tensor and up to 8-9 of a row (normal: 2), as trained layers' rows and channels
  // differ in size; what W4A8's scale fold (exact within 14 binades of a row) must cope with
  spread,
};
std::optional<WeightDistribution> parse_weight_distribution(std::string_view name);

// A layer with float weights of the given distribution quantized to MXFP4 (std 1/sqrt(fan_in),
// about what trained gpt-oss experts have) and small biases. Layer `layer_index` of a seed gets its
// own stream, so checkpoints with several layers differ per layer.
MoeLayer random_layer(const MoeShape& shape, uint64_t seed, int layer_index = 0,
                      WeightDistribution weights = WeightDistribution::normal);

enum class HiddenDistribution {
  normal,  // N(0, 1) everywhere
  heavy,   // N(0, 1) with 1% of the channels scaled by 20, like the outlier channels of real models
  // heavy, and each token's row scaled by 2^u, u uniform in [-6, 6]: token norms that differ by up
  // to 4096x, as between ordinary tokens and attention-sink tokens of a residual stream (what a
  // per-token activation scale is for)
  token_norms,
};
std::optional<HiddenDistribution> parse_distribution(std::string_view name);

std::vector<float> random_hidden(int tokens, int hidden, uint64_t seed,
                                 HiddenDistribution distribution = HiddenDistribution::normal);

}  // namespace mxmoe
