#include "mxmoe/synth.hpp"

#include <algorithm>
#include <cmath>

#include "mxmoe/format.hpp"
#include "util/parallel.hpp"
#include "util/rng.hpp"

namespace mxmoe {

const std::vector<ModelPreset>& model_presets() {
  static const std::vector<ModelPreset> presets = {
      {"gpt-oss-20b", {2880, 2880, 32, 4}, 24, {}},
      {"gpt-oss-120b", {2880, 2880, 128, 4}, 36, {}},
      {"tiny", {128, 96, 8, 2}, 2, {}},
  };
  return presets;
}

std::optional<ModelPreset> find_preset(std::string_view name) {
  for (const auto& p : model_presets()) {
    if (p.name == name) return p;
  }
  return std::nullopt;
}

std::string preset_names() {
  std::string names;
  for (const auto& p : model_presets()) names += (names.empty() ? "" : ", ") + p.name;
  return names;
}

namespace {

uint64_t stream_seed(uint64_t seed, int layer, uint64_t tensor, uint64_t index) {
  detail::Rng mix(seed ^ (static_cast<uint64_t>(layer) << 48) ^ (tensor << 40) ^ index);
  return mix.next_u64();
}

// 65536 quantiles of N(0, 1): one 16-bit draw picks a sample. Four samples per 64-bit draw keep
// generating gpt-oss-sized layers fast; after 4-bit quantization the discretization is invisible.
const std::vector<float>& normal_quantiles() {
  static const std::vector<float> table = [] {
    std::vector<float> t(65536);
    for (int i = 0; i < 65536; ++i) {
      const double p = (i + 0.5) / 65536.0;
      double z = 0.0;  // Newton on Phi(z) = p
      for (int it = 0; it < 60; ++it) {
        const double phi = 0.5 * std::erfc(-z / std::sqrt(2.0));
        const double density = std::exp(-0.5 * z * z) / std::sqrt(2.0 * M_PI);
        const double step = (phi - p) / density;
        z -= std::clamp(step, -1.0, 1.0);
        if (std::fabs(step) < 1e-13) break;
      }
      t[i] = static_cast<float>(z);
    }
    return t;
  }();
  return table;
}

void fill_normal(std::vector<float>& v, uint64_t seed, double stddev) {
  detail::Rng rng(seed);
  for (auto& x : v) x = static_cast<float>(rng.normal() * stddev);
}

// The spread distribution's row and block exponents, and the factor that keeps the weights' mean
// square that of N(0, std^2): E[4^u] for u uniform in [-a, a] is (4^a - 4^-a) / (2a ln 4), E[4^v] for
// v ~ N(0, s^2) is exp(2 s^2 ln^2 2).
constexpr double kRowSpread = 3.0, kBlockSpread = 1.0;
double spread_normalization() {
  const double ln4 = std::log(4.0);
  const double rows = (std::pow(4.0, kRowSpread) - std::pow(4.0, -kRowSpread)) / (2.0 * kRowSpread * ln4);
  const double blocks = std::exp(2.0 * kBlockSpread * kBlockSpread * std::log(2.0) * std::log(2.0));
  return 1.0 / std::sqrt(rows * blocks);
}

// Row by row from per-row streams, so the result does not depend on the thread count.
void fill_mxfp4(Mxfp4Tensor& t, uint64_t seed, int layer, uint64_t tensor, double stddev, WeightDistribution weights) {
  const double spread_factor = weights == WeightDistribution::spread ? spread_normalization() : 1.0;
  detail::parallel_for(t.groups * t.rows, 0, 64, [&](int64_t begin, int64_t end) {
    std::vector<float> row(static_cast<size_t>(t.cols));
    for (int64_t i = begin; i < end; ++i) {
      detail::Rng rng(stream_seed(seed, layer, tensor, static_cast<uint64_t>(i)));
      const auto& quantiles = normal_quantiles();
      const float scale = static_cast<float>(stddev);
      for (size_t c = 0; c < row.size(); c += 4) {
        uint64_t bits = rng.next_u64();
        for (size_t j = c; j < std::min(c + 4, row.size()); ++j, bits >>= 16) {
          row[j] = quantiles[bits & 0xFFFF] * scale;
        }
      }
      if (weights == WeightDistribution::spread) {
        const double row_gain = std::exp2(rng.uniform(-kRowSpread, kRowSpread)) * spread_factor;
        for (size_t b = 0; b < row.size(); b += kMxBlock) {
          const auto gain = static_cast<float>(row_gain * std::exp2(kBlockSpread * rng.normal()));
          for (size_t j = b; j < std::min(b + kMxBlock, row.size()); ++j) row[j] *= gain;
        }
      }
      t.set_row(i / t.rows, i % t.rows, row);
    }
  });
}

}  // namespace

std::optional<WeightDistribution> parse_weight_distribution(std::string_view name) {
  if (name == "normal") return WeightDistribution::normal;
  if (name == "spread") return WeightDistribution::spread;
  return std::nullopt;
}

MoeLayer random_layer(const MoeShape& shape, uint64_t seed, int layer_index, WeightDistribution weights) {
  MoeLayer layer = MoeLayer::zeros(shape);
  const double h_std = 1.0 / std::sqrt(static_cast<double>(shape.hidden));
  const double i_std = 1.0 / std::sqrt(static_cast<double>(shape.intermediate));
  fill_normal(layer.router_weight, stream_seed(seed, layer_index, 1, 0), h_std);
  fill_normal(layer.router_bias, stream_seed(seed, layer_index, 2, 0), 0.1);
  fill_mxfp4(layer.gate_up, seed, layer_index, 3, h_std, weights);
  fill_normal(layer.gate_up_bias, stream_seed(seed, layer_index, 4, 0), 0.05);
  fill_mxfp4(layer.down, seed, layer_index, 5, i_std, weights);
  fill_normal(layer.down_bias, stream_seed(seed, layer_index, 6, 0), 0.05);
  return layer;
}

std::optional<HiddenDistribution> parse_distribution(std::string_view name) {
  if (name == "normal") return HiddenDistribution::normal;
  if (name == "heavy") return HiddenDistribution::heavy;
  if (name == "token_norms") return HiddenDistribution::token_norms;
  return std::nullopt;
}

std::vector<float> random_hidden(int tokens, int hidden, uint64_t seed, HiddenDistribution distribution) {
  std::vector<float> x(static_cast<size_t>(tokens) * hidden);
  std::vector<float> gain(static_cast<size_t>(hidden), 1.0f);
  if (distribution != HiddenDistribution::normal) {
    detail::Rng pick(seed ^ 0x7711u);
    for (auto& g : gain) g = pick.uniform() < 0.01 ? 20.0f : 1.0f;
  }
  detail::Rng rng(seed);
  for (size_t i = 0; i < x.size(); ++i) x[i] = static_cast<float>(rng.normal()) * gain[i % hidden];
  if (distribution == HiddenDistribution::token_norms) {
    detail::Rng norms(seed ^ 0x5eedu);
    for (int t = 0; t < tokens; ++t) {
      const float scale = static_cast<float>(std::exp2(12.0 * norms.uniform() - 6.0));
      for (int h = 0; h < hidden; ++h) x[static_cast<size_t>(t) * hidden + h] *= scale;
    }
  }
  return x;
}

}  // namespace mxmoe
