// The CPU backend: tokens grouped by expert, so each expert's weights are read once per batch;
// MXFP4 decoded on the fly by SIMD kernels; threads over (expert, strip of 32 output rows).
//
// Every output element is computed by one thread in a fixed order, so results do not depend on
// the thread count. Activations are quantized by the same functions as the reference.
#include <algorithm>
#include <mutex>
#include <numeric>
#include <stdexcept>

#include "backends/cpu/cpu_moe.hpp"
#include "backends/cpu/kernels.hpp"
#include "mxmoe/backend.hpp"
#include "mxmoe/format.hpp"
#include "util/parallel.hpp"

namespace mxmoe {

namespace {

using cpu::kStripRows;

// Adjacent strips are adjacent in memory: handing a thread several in a row gives the hardware
// prefetcher long sequential streams.
constexpr int64_t kStripsPerChunk = 4;

// Quantizes a [rows, cols] tensor with the scheme in parallel, exactly as quantize_activations
// does; writes each row's scale to row_scales and returns the tensor scale.
float quantize_parallel(Scheme scheme, const char* what, const float* input, int64_t rows, int64_t cols, float* output,
                        float* row_scales, int threads) {
  constexpr int64_t kRowsPerChunk = 16;
  const int64_t chunks = (rows + kRowsPerChunk - 1) / kRowsPerChunk;
  std::vector<float> chunk_max(static_cast<size_t>(chunks), 0.0f);
  detail::parallel_for(chunks, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const int64_t r0 = c * kRowsPerChunk, r1 = std::min(rows, r0 + kRowsPerChunk);
      try {
        chunk_max[c] = finite_abs_max({input + r0 * cols, static_cast<size_t>((r1 - r0) * cols)});
      } catch (const std::domain_error& e) {
        throw std::domain_error(std::string(what) + " rows " + std::to_string(r0) + " to " + std::to_string(r1 - 1) +
                                " hold a non-finite value (" + e.what() + " of those rows)");
      }
    }
  });
  if (scheme_traits(scheme).scale == ScaleGranularity::per_token) {
    detail::parallel_for(rows, threads, kRowsPerChunk, [&](int64_t begin, int64_t end) {
      const size_t n = static_cast<size_t>((end - begin) * cols);
      quantize_activations(scheme, {input + begin * cols, n}, end - begin, cols, {output + begin * cols, n},
                           {row_scales + begin, static_cast<size_t>(end - begin)});
    });
    return 1.0f;
  }
  const float scale = activation_tensor_scale(scheme, *std::max_element(chunk_max.begin(), chunk_max.end()));
  std::fill(row_scales, row_scales + rows, scale);
  detail::parallel_for(chunks, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const int64_t r0 = c * kRowsPerChunk, r1 = std::min(rows, r0 + kRowsPerChunk);
      const size_t n = static_cast<size_t>((r1 - r0) * cols);
      quantize_activation_rows(scheme, {input + r0 * cols, n}, r1 - r0, cols, scale, {output + r0 * cols, n});
    }
  });
  return scale;
}

// Exact bf16 copies of quantized activations for the bf16 dot-product kernels; left empty when
// this CPU has none.
void bf16_copy(const std::vector<float>& values, int threads, std::vector<uint16_t>& out) {
  out.clear();
  if (!cpu::bf16_dot_available()) return;
  out.resize(values.size());
  detail::parallel_for(static_cast<int64_t>(values.size()), threads, 1 << 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) out[i] = float_to_bf16(values[i]);
  });
}

const uint16_t* bf16_or_null(const std::vector<uint16_t>& v, int64_t offset) {
  return v.empty() ? nullptr : v.data() + offset;
}

// Scratch owned by each pool thread: a decoded panel and a product tile.
struct ThreadScratch {
  std::vector<float> panel;
  std::vector<float> tile;
};
thread_local ThreadScratch scratch;

float* grow(std::vector<float>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

// Calls body(expert, strip, panel scratch) for every strip of every active expert, spread over
// threads in runs of adjacent strips.
template <class Body>
void for_each_expert_strip(const std::vector<int64_t>& active, int64_t strips, int64_t panel_floats, int threads,
                           Body&& body) {
  detail::parallel_for(static_cast<int64_t>(active.size()) * strips, threads, kStripsPerChunk,
                       [&](int64_t begin, int64_t end) {
                         float* panel = grow(scratch.panel, static_cast<size_t>(panel_floats));
                         for (int64_t item = begin; item < end; ++item) body(active[item / strips], item % strips, panel);
                       });
}

class CpuMoe final : public PreparedMoe {
 public:
  CpuMoe(std::shared_ptr<const MoeLayer> layer, const ExecutionPlan& plan)
      : shape_(detail::PaddedLayer{*layer, plan.padding}.shape()),
        swiglu_(layer->swiglu),
        scheme_(plan.scheme),
        threads_(plan.threads) {
    plan.padding.check_layer(layer->shape, plan.backend);  // the layer itself was validated where it was made
    const detail::PaddedLayer padded{*layer, plan.padding};  // the plan's padding, written while packing
    router_weight_ = padded.router_weight();
    router_bias_ = layer->router_bias;
    // gate_up strips hold 16 gate rows then the 16 matching linear rows, so the SwiGLU epilogue
    // reads two contiguous halves of a tile.
    constexpr int64_t kUnits = kStripRows / 2;
    auto gate_up_row = [](int64_t r) {
      const int64_t strip = r / kStripRows, i = r % kStripRows;
      const int64_t unit = strip * kUnits + i % kUnits;
      return 2 * unit + (i >= kUnits ? 1 : 0);
    };
    gate_up_ = cpu::pack_matrix(padded.gate_up(), gate_up_row);
    down_ = cpu::pack_matrix(padded.down(), [](int64_t r) { return r; });
    const int64_t E = shape_.experts, I = shape_.intermediate;
    const std::vector<float> gate_up_bias = padded.gate_up_bias();
    gate_up_bias_.resize(gate_up_bias.size());
    for (int64_t e = 0; e < E; ++e) {
      for (int64_t r = 0; r < 2 * I; ++r) gate_up_bias_[e * 2 * I + r] = gate_up_bias[e * 2 * I + gate_up_row(r)];
    }
    down_bias_ = padded.down_bias();
  }

  MoeOutput forward(std::span<const float> hidden, int tokens, const Routing* routing) override {
    MoeOutput result;
    result.output.resize(static_cast<size_t>(tokens) * shape_.hidden);
    result.scales = forward_into(hidden, tokens, routing, result.output, &result.routing);
    return result;
  }

  ActivationScales forward_into(std::span<const float> hidden, int tokens, const Routing* given,
                                std::span<float> output, Routing* routing_out) override {
    std::lock_guard<std::mutex> lock(mutex_);  // the workspace is shared by calls
    const int64_t T = tokens, H = shape_.hidden, I = shape_.intermediate, E = shape_.experts;
    const int k = shape_.top_k;
    const int64_t P = T * k;  // (token, slot) pairs
    Workspace& w = workspace_;
    // The router rejects NaN and Inf; with the caller's routing the runner has.
    if (!given) w.routing = route(router_weight_, router_bias_, shape_, hidden, tokens);
    const Routing& routing = given ? *given : w.routing;
    if (routing_out) *routing_out = routing;
    if (T == 0) return {};

    // Pairs sorted by expert (stable: token order within an expert).
    w.offsets.assign(E + 1, 0);
    w.sorted.resize(P);
    w.position.resize(P);
    for (int64_t p = 0; p < P; ++p) ++w.offsets[routing.expert_ids[p] + 1];
    std::partial_sum(w.offsets.begin(), w.offsets.end(), w.offsets.begin());
    w.next.assign(w.offsets.begin(), w.offsets.end() - 1);
    for (int64_t p = 0; p < P; ++p) {
      const int64_t q = w.next[routing.expert_ids[p]]++;
      w.sorted[q] = p;
      w.position[p] = q;
    }
    w.active.clear();
    for (int64_t e = 0; e < E; ++e) {
      if (w.offsets[e + 1] > w.offsets[e]) w.active.push_back(e);
    }
    const auto& offsets = w.offsets;
    const auto& active = w.active;

    // Inputs quantized once, then gathered in expert order.
    w.x_quantized.resize(T * H);
    w.x_scales.resize(T);
    const float x_scale = quantize_parallel(scheme_, "hidden states", hidden.data(), T, H, w.x_quantized.data(),
                                            w.x_scales.data(), threads_);
    w.pair_x_scales.resize(P);  // the gate_up epilogue's scale per sorted pair: its token's
    w.gathered.resize(P * H);
    detail::parallel_for(P, threads_, 64, [&](int64_t begin, int64_t end) {
      for (int64_t q = begin; q < end; ++q) {
        std::copy_n(w.x_quantized.data() + (w.sorted[q] / k) * H, H, w.gathered.data() + q * H);
        w.pair_x_scales[q] = w.x_scales[w.sorted[q] / k];
      }
    });
    bf16_copy(w.gathered, threads_, w.gathered_bf16);

    // gate_up + bias + SwiGLU, one strip of 16 units at a time.
    w.intermediate.resize(P * I);
    for_each_expert_strip(active, gate_up_.strips(), H * kStripRows, threads_, [&](int64_t e, int64_t s, float* panel) {
      const int64_t M = offsets[e + 1] - offsets[e];
      float* tile = grow(scratch.tile, static_cast<size_t>(M * kStripRows));
      const cpu::Activations a{w.gathered.data() + offsets[e] * H, bf16_or_null(w.gathered_bf16, offsets[e] * H), H};
      cpu::strip_matmul(gate_up_.strip_tiles(e, s), gate_up_.strip_scales(e, s), gate_up_.kblocks(), a, M, tile,
                        kStripRows, panel);
      cpu::swiglu_strip(tile, kStripRows, M, w.pair_x_scales.data() + offsets[e],
                        gate_up_bias_.data() + e * 2 * I + s * kStripRows, swiglu_.alpha, swiglu_.limit,
                        w.intermediate.data() + offsets[e] * I + s * (kStripRows / 2), I);
    });

    // The intermediate quantized (w4a8: one scale over every pair's; w4a8_token: one per pair), then
    // the down projection + bias.
    w.y.resize(P * I);
    w.y_scales.resize(P);  // per sorted pair
    const float y_scale = quantize_parallel(scheme_, "intermediate activations", w.intermediate.data(), P, I,
                                            w.y.data(), w.y_scales.data(), threads_);
    bf16_copy(w.y, threads_, w.y_bf16);
    w.pair_out.resize(P * H);
    for_each_expert_strip(active, down_.strips(), I * kStripRows, threads_, [&](int64_t e, int64_t s, float* panel) {
      const int64_t M = offsets[e + 1] - offsets[e];
      float* C = w.pair_out.data() + offsets[e] * H + s * kStripRows;
      const cpu::Activations a{w.y.data() + offsets[e] * I, bf16_or_null(w.y_bf16, offsets[e] * I), I};
      cpu::strip_matmul(down_.strip_tiles(e, s), down_.strip_scales(e, s), down_.kblocks(), a, M, C, H, panel);
      cpu::scale_bias_strip(C, H, M, w.y_scales.data() + offsets[e], down_bias_.data() + e * H + s * kStripRows);
    });

    // Weighted sum over each token's k experts, in slot order (every output row written).
    detail::parallel_for(T, threads_, 16, [&](int64_t begin, int64_t end) {
      cpu::weighted_sum_rows(w.pair_out.data(), H, w.position.data(), routing.weights.data(), k, begin, end,
                             output.data());
    });
    ActivationScales scales{x_scale, y_scale, {}, {}};
    if (scheme_traits(scheme_).scale == ScaleGranularity::per_token) {
      scales.hidden_rows = w.x_scales;
      scales.intermediate_rows.resize(P);
      for (int64_t p = 0; p < P; ++p) scales.intermediate_rows[p] = w.y_scales[w.position[p]];
    }
    return scales;
  }

 private:
  // Buffers reused across calls: a prefill batch needs hundreds of MB, and fresh pages each call
  // cost as much as a tenth of the work.
  struct Workspace {
    Routing routing;  // the layer's router's, when the caller gives none
    std::vector<int64_t> offsets, next, sorted, position, active;
    std::vector<float> x_quantized, gathered, intermediate, y, pair_out;
    std::vector<float> x_scales, pair_x_scales, y_scales;  // per token, per sorted pair, per sorted pair
    std::vector<uint16_t> gathered_bf16, y_bf16;
  };

  MoeShape shape_;
  SwigluParams swiglu_;
  Scheme scheme_;
  int threads_;
  std::vector<float> router_weight_, router_bias_;
  cpu::PackedMatrix gate_up_, down_;
  std::vector<float> gate_up_bias_, down_bias_;
  Workspace workspace_;
  std::mutex mutex_;
};

}  // namespace

namespace cpu {

std::unique_ptr<PreparedMoe> make_cpu_moe(std::shared_ptr<const MoeLayer> layer, const ExecutionPlan& plan) {
  return std::make_unique<CpuMoe>(std::move(layer), plan);
}

}  // namespace cpu
}  // namespace mxmoe
