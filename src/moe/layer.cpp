#include <algorithm>
#include <array>
#include <cmath>
#include <stdexcept>
#include <string>

#include "mxmoe/format.hpp"
#include "mxmoe/moe.hpp"

namespace mxmoe {

std::string MoeShape::to_string() const {
  return "H=" + std::to_string(hidden) + " I=" + std::to_string(intermediate) +
         " E=" + std::to_string(experts) + " k=" + std::to_string(top_k);
}

Mxfp4Tensor::Mxfp4Tensor(int64_t groups_, int64_t rows_, int64_t cols_)
    : groups(groups_), rows(rows_), cols(cols_) {
  if (groups < 0 || rows < 0 || cols < 0 || cols % kMxBlock != 0) {
    throw std::invalid_argument("Mxfp4Tensor: cols " + std::to_string(cols) +
                                " must be a non-negative multiple of 32");
  }
  blocks.assign(static_cast<size_t>(groups * rows * cols / 2), 0);
  scales.assign(static_cast<size_t>(groups * rows * cols / kMxBlock), kE8m0One);
}

void Mxfp4Tensor::set_row(int64_t group, int64_t row, std::span<const float> values) {
  if (static_cast<int64_t>(values.size()) != cols) {
    throw std::invalid_argument("Mxfp4Tensor::set_row: expected " + std::to_string(cols) + " values");
  }
  quantize_mxfp4(values, {row_blocks(group, row), static_cast<size_t>(cols / 2)},
                 {row_scales(group, row), static_cast<size_t>(blocks_per_row())});
}

void Mxfp4Tensor::row_to_double(int64_t group, int64_t row, double* out) const {
  // The codec's sixteen values by code: the float64 reference dequantizes every expert it touches
  // through here, and a lookup keeps that from dominating its time.
  static const std::array<double, 16> kE2m1 = [] {
    std::array<double, 16> values{};
    for (int code = 0; code < 16; ++code) values[code] = e2m1_to_float(static_cast<uint8_t>(code));
    return values;
  }();
  const uint8_t* packed = row_blocks(group, row);
  const uint8_t* row_scale = row_scales(group, row);
  for (int64_t b = 0; b < blocks_per_row(); ++b) {
    const double scale = e8m0_to_double(row_scale[b]);
    const uint8_t* block = packed + b * kMxBlockBytes;
    for (int i = 0; i < kMxBlock; ++i) out[b * kMxBlock + i] = kE2m1[mxfp4_code(block, i)] * scale;
  }
}

MoeLayer MoeLayer::zeros(const MoeShape& shape) {
  MoeLayer layer;
  layer.shape = shape;
  const int64_t E = shape.experts, H = shape.hidden, I = shape.intermediate;
  layer.router_weight.assign(static_cast<size_t>(E * H), 0.0f);
  layer.router_bias.assign(static_cast<size_t>(E), 0.0f);
  layer.gate_up = Mxfp4Tensor(E, 2 * I, H);
  layer.gate_up_bias.assign(static_cast<size_t>(E * 2 * I), 0.0f);
  layer.down = Mxfp4Tensor(E, H, I);
  layer.down_bias.assign(static_cast<size_t>(E * H), 0.0f);
  return layer;
}

namespace {

void expect_size(const char* what, size_t actual, int64_t expected) {
  if (static_cast<int64_t>(actual) != expected) {
    throw std::invalid_argument(std::string("MoE layer: ") + what + " has " + std::to_string(actual) +
                                " elements, the shape needs " + std::to_string(expected));
  }
}

void expect_finite(const char* what, const std::vector<float>& values) {
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) {
      throw std::invalid_argument(std::string("MoE layer: ") + what + " element " + std::to_string(i) +
                                  " is " + (std::isnan(values[i]) ? "NaN" : "Inf"));
    }
  }
}

void expect_mxfp4(const char* what, const Mxfp4Tensor& t, int64_t groups, int64_t rows, int64_t cols) {
  if (t.groups != groups || t.rows != rows || t.cols != cols) {
    throw std::invalid_argument(std::string("MoE layer: ") + what + " is [" + std::to_string(t.groups) +
                                ", " + std::to_string(t.rows) + ", " + std::to_string(t.cols) +
                                "], the shape needs [" + std::to_string(groups) + ", " +
                                std::to_string(rows) + ", " + std::to_string(cols) + "]");
  }
  expect_size((std::string(what) + " blocks").c_str(), t.blocks.size(), groups * rows * cols / 2);
  expect_size((std::string(what) + " scales").c_str(), t.scales.size(), groups * rows * cols / kMxBlock);
  for (size_t i = 0; i < t.scales.size(); ++i) {
    if (t.scales[i] == kE8m0Nan) {
      const int64_t per_group = rows * (cols / kMxBlock);
      throw std::invalid_argument(std::string("MoE layer: ") + what + " scale of expert " +
                                  std::to_string(i / per_group) + ", row " +
                                  std::to_string((i % per_group) / (cols / kMxBlock)) +
                                  " is the NaN code 255");
    }
  }
}

}  // namespace

void MoeLayer::validate() const {
  const int64_t E = shape.experts, H = shape.hidden, I = shape.intermediate;
  if (E <= 0 || H <= 0 || I <= 0) throw std::invalid_argument("MoE layer: dims must be positive: " + shape.to_string());
  if (H % kMxBlock || I % kMxBlock) {
    throw std::invalid_argument("MoE layer: hidden and intermediate must be multiples of the MXFP4 block 32: " +
                                shape.to_string());
  }
  if (shape.top_k <= 0 || shape.top_k > E) {
    throw std::invalid_argument("MoE layer: top_k must be in [1, experts]: " + shape.to_string());
  }
  if (!(std::isfinite(swiglu.alpha) && std::isfinite(swiglu.limit) && swiglu.limit > 0)) {
    throw std::invalid_argument("MoE layer: swiglu alpha and limit must be finite, limit positive");
  }
  expect_size("router weight", router_weight.size(), E * H);
  expect_size("router bias", router_bias.size(), E);
  expect_size("gate_up bias", gate_up_bias.size(), E * 2 * I);
  expect_size("down bias", down_bias.size(), E * H);
  expect_mxfp4("gate_up", gate_up, E, 2 * I, H);
  expect_mxfp4("down", down, E, H, I);
  expect_finite("router weight", router_weight);
  expect_finite("router bias", router_bias);
  expect_finite("gate_up bias", gate_up_bias);
  expect_finite("down bias", down_bias);
}

size_t MoeLayer::weight_bytes() const {
  return gate_up.bytes() + down.bytes() +
         sizeof(float) * (router_weight.size() + router_bias.size() + gate_up_bias.size() + down_bias.size());
}

double swiglu(double gate, double linear, const SwigluParams& params) {
  return codec::swiglu<double>(gate, linear, params.alpha, params.limit);
}

uint64_t forward_memory_bytes(const MoeShape& shape, int64_t tokens) {
  const uint64_t T = static_cast<uint64_t>(std::max<int64_t>(tokens, 0)), H = static_cast<uint64_t>(shape.hidden),
                 I = static_cast<uint64_t>(shape.intermediate), E = static_cast<uint64_t>(shape.experts),
                 k = static_cast<uint64_t>(shape.top_k);
  // Input, output and a padded copy of each; per (token, expert) pair the gate_up output, the
  // quantized intermediate and the down output; the router's logits. fp32 throughout. The limits
  // on each dim keep this far from overflowing.
  return 4 * (4 * T * H + T * k * (3 * I + H) + T * E);
}

uint64_t layer_weight_bytes(const MoeShape& shape) {
  const uint64_t H = static_cast<uint64_t>(shape.hidden), I = static_cast<uint64_t>(shape.intermediate),
                 E = static_cast<uint64_t>(shape.experts);
  return E * (3 * H * I * 17 / 32 + 4 * (H + 2 * I + H + 1));
}

}  // namespace mxmoe
