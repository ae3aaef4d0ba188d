#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "moe/routing_check.hpp"
#include "moe/valid_layer.hpp"
#include "mxmoe/moe.hpp"
#include "util/parallel.hpp"

namespace mxmoe {

namespace {

// Four independent partial sums: a fixed order, so the result is the same on every run.
double dot(const double* w, const double* x, int64_t n) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += w[i] * x[i];
    s1 += w[i + 1] * x[i + 1];
    s2 += w[i + 2] * x[i + 2];
    s3 += w[i + 3] * x[i + 3];
  }
  for (; i < n; ++i) s0 += w[i] * x[i];
  return (s0 + s1) + (s2 + s3);
}

std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

// Expert e's matrix of `t`, dequantized exactly into [rows, cols] doubles.
void dequantize_expert(const Mxfp4Tensor& t, int64_t e, int threads, std::vector<double>& out) {
  out.resize(static_cast<size_t>(t.rows * t.cols));
  detail::parallel_for(t.rows, threads, 64, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) t.row_to_double(e, r, out.data() + r * t.cols);
  });
}

}  // namespace

MoeOutput reference_forward(const MoeLayer& layer, std::span<const float> hidden, int tokens,
                            Scheme scheme, const ReferenceOptions& options) {
  layer.validate();
  return detail::reference_forward_valid(layer, hidden, tokens, scheme, options);
}

MoeOutput detail::reference_forward_valid(const MoeLayer& layer, std::span<const float> hidden, int tokens,
                                          Scheme scheme, const ReferenceOptions& options) {
  const int64_t H = layer.shape.hidden, I = layer.shape.intermediate, E = layer.shape.experts;
  const int k = layer.shape.top_k;
  const int64_t T = tokens;
  if (tokens < 0 || static_cast<int64_t>(hidden.size()) != T * H) {
    throw std::invalid_argument("reference_forward: hidden states hold " + std::to_string(hidden.size()) +
                                " values, expected " + std::to_string(T) + " x " + std::to_string(H));
  }

  // Quantize first: it also rejects NaN and Inf inputs before any work is done.
  std::vector<float> x_quantized(hidden.size());
  const auto given = [&](float ActivationScales::*which) {
    return options.scales ? std::optional<float>(options.scales->*which) : std::nullopt;
  };
  // One scale per row: the tensor scale repeated, or each token's own (per-token schemes).
  std::vector<float> x_scales(static_cast<size_t>(T));
  const float x_scale =
      quantize_activations(scheme, hidden, T, H, x_quantized, x_scales, given(&ActivationScales::hidden));

  MoeOutput result;
  if (options.routing) {
    detail::check_routing(*options.routing, tokens, k, static_cast<int>(E));
    result.routing = *options.routing;
  } else {
    result.routing = route(layer, hidden, tokens);
  }
  const Routing& routing = result.routing;

  // Pairs (token, slot) grouped by expert, in token order.
  std::vector<std::vector<int64_t>> pairs_of(E);
  for (int64_t p = 0; p < T * k; ++p) pairs_of[routing.expert_ids[p]].push_back(p);

  const std::vector<double> x = to_double(x_quantized);
  x_quantized = {};
  const std::vector<double> gate_up_bias = to_double(layer.gate_up_bias);
  const std::vector<double> down_bias = to_double(layer.down_bias);

  // gate_up GEMM + bias + SwiGLU for every pair; the result is an activation tensor [T*k, I].
  std::vector<float> intermediate(static_cast<size_t>(T * k * I));
  std::vector<double> w;
  for (int64_t e = 0; e < E; ++e) {
    const auto& pairs = pairs_of[e];
    if (pairs.empty()) continue;
    dequantize_expert(layer.gate_up, e, options.threads, w);
    const double* bias = gate_up_bias.data() + e * 2 * I;
    detail::parallel_for(I, options.threads, 32, [&](int64_t begin, int64_t end) {
      for (int64_t p : pairs) {
        const double* xt = x.data() + (p / k) * H;
        for (int64_t r = begin; r < end; ++r) {
          const double scale = x_scales[p / k];
          const double gate = dot(w.data() + (2 * r) * H, xt, H) * scale + bias[2 * r];
          const double linear = dot(w.data() + (2 * r + 1) * H, xt, H) * scale + bias[2 * r + 1];
          intermediate[p * I + r] = static_cast<float>(swiglu(gate, linear, layer.swiglu));
        }
      }
    });
  }

  std::vector<float> y_quantized(intermediate.size());
  std::vector<float> y_scales(static_cast<size_t>(T * k));
  const float y_scale =
      quantize_activations(scheme, intermediate, T * k, I, y_quantized, y_scales, given(&ActivationScales::intermediate));
  result.scales.hidden = x_scale;
  result.scales.intermediate = y_scale;
  if (scheme_traits(scheme).scale == ScaleGranularity::per_token) {
    result.scales.hidden_rows = x_scales;
    result.scales.intermediate_rows = y_scales;
  }
  intermediate = {};
  const std::vector<double> y = to_double(y_quantized);
  y_quantized = {};

  // down GEMM + bias, weighted and summed into the token's output. A token picks an expert at
  // most once, so within one expert every output row is written by one thread; experts are
  // added in index order.
  std::vector<double> out(static_cast<size_t>(T * H), 0.0);
  for (int64_t e = 0; e < E; ++e) {
    const auto& pairs = pairs_of[e];
    if (pairs.empty()) continue;
    dequantize_expert(layer.down, e, options.threads, w);
    const double* bias = down_bias.data() + e * H;
    detail::parallel_for(H, options.threads, 32, [&](int64_t begin, int64_t end) {
      for (int64_t p : pairs) {
        const double* yp = y.data() + p * I;
        const double weight = routing.weights[p];
        double* o = out.data() + (p / k) * H;
        for (int64_t h = begin; h < end; ++h) {
          o[h] += weight * (dot(w.data() + h * I, yp, I) * y_scales[p] + bias[h]);
        }
      }
    });
  }

  result.output.assign(out.begin(), out.end());
  return result;
}

}  // namespace mxmoe
