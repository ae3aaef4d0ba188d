// The CUDA MoE layer: routing, sorting, quantization, the two grouped GEMMs and the combine all run
// on the device; the host only uploads the batch and reads back outputs and routing.
#include "backends/cuda/cuda_moe.hpp"

#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <mutex>
#include <stdexcept>

#include "backends/cuda/cuda_check.hpp"
#include "backends/cuda/decode.hpp"
#include "backends/cuda/graph_cache.hpp"
#include "backends/cuda/device_buffer.hpp"
#include "backends/cuda/kernels.hpp"
#include "backends/cuda/layout.hpp"
#include "backends/cuda/paths.hpp"
#include "moe/padded_view.hpp"
#include "mxmoe/format.hpp"

namespace mxmoe::cuda {

namespace {

template <class T>
DeviceBuffer upload(const std::vector<T>& host) {
  DeviceBuffer d(std::max<size_t>(host.size() * sizeof(T), 1));
  MXMOE_CUDA_CHECK(cudaMemcpy(d.as<void>(), host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

// Restores the caller's current device when it goes out of scope.
class DeviceScope {
 public:
  explicit DeviceScope(int device) {
    MXMOE_CUDA_CHECK(cudaGetDevice(&previous_));
    MXMOE_CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceScope() { cudaSetDevice(previous_); }

 private:
  int previous_ = 0;
};

// Device copies of a routing the caller gave: [T, k] expert ids and weights.
struct GivenRouting {
  const int32_t* expert_ids = nullptr;
  const float* weights = nullptr;
};

class CudaMoeImpl final : public CudaMoe {
 public:
  CudaMoeImpl(std::shared_ptr<const MoeLayer> layer, const ExecutionPlan& plan, const GemmFamily& gemms)
      : gemms_(gemms),
        shape_(detail::PaddedLayer{*layer, plan.padding}.shape()),
        swiglu_(layer->swiglu),
        scheme_(plan.scheme),
        device_(plan.device.ordinal),
        unpadded_hidden_(plan.padding.hidden),
        replay_graphs_(plan.replay_graphs) {
    plan.padding.check_layer(layer->shape, plan.backend);  // the layer itself was validated where it was made
    const int needed = scheme_traits(scheme_).min_tensor_core_sm;
    if (needed == 0) {
      throw std::invalid_argument("the cuda backend does not run scheme " + std::string(scheme_name(scheme_)) +
                                  " (no tensor cores take its activations)");
    }
    // The GPU's facts come from the plan: the device detected when the runner was made.
    const DeviceSpec& gpu = plan.device;
    if (gpu.kind != DeviceKind::cuda || !gpu.detected || gpu.sm_count <= 0) {
      throw std::logic_error("a CUDA backend needs a detected GPU in its plan, not " + gpu.id());
    }
    DeviceScope scope(device_);
    sm_count_ = gpu.sm_count;
    const int sm = gpu.sm;
    overlap_launches_ = sm >= 90;
    if (sm < needed) {
      throw std::runtime_error("the cuda backend needs " + sm_name(needed) + " or newer for " +
                               std::string(scheme_name(scheme_)) + "; GPU " + std::to_string(device_) + " (" +
                               gpu.name + ") is " + sm_name(sm));
    }
    if (gemms_.exact_sm != 0 && sm != gemms_.exact_sm) {
      throw std::runtime_error(std::string("the ") + gemms_.name + " kernels are built for " + sm_name(gemms_.exact_sm) +
                               "a only; GPU " + std::to_string(device_) + " (" + gpu.name + ") is " + sm_name(sm));
    }
    uint8_t largest_scale = 0;
    for (const Mxfp4Tensor* t : {&layer->gate_up, &layer->down}) {
      if (!t->scales.empty()) largest_scale = std::max(largest_scale, *std::max_element(t->scales.begin(), t->scales.end()));
    }
    folded_scales_ = largest_scale <= 128;  // padded blocks have scale code 127
    // The plan's padding is written as the weights are packed: no padded copy of the layer.
    const detail::PaddedLayer padded{*layer, plan.padding};
    {
      const PackedWeights gate_up = gemms_.pack(padded.gate_up(), scheme_, true);
      gate_up_words_ = upload(gate_up.words);
      gate_up_scales_ = upload(gate_up.scales);
      gate_up_fp8_words_ = upload(gate_up.fp8_words);
      gate_up_row_factors_ = upload(gate_up.fp8_row_factors);
      fp8_layout_ = !gate_up.fp8_words.empty();
    }
    {
      const PackedWeights down = gemms_.pack(padded.down(), scheme_, false);
      down_words_ = upload(down.words);
      down_scales_ = upload(down.scales);
      down_fp8_words_ = upload(down.fp8_words);
      down_row_factors_ = upload(down.fp8_row_factors);
      // Both GEMMs on FP8 tensor cores or neither: one quantization format for their inputs.
      fp8_layout_ = fp8_layout_ && !down.fp8_words.empty();
    }
    if (!fp8_layout_) {
      for (DeviceBuffer* b : {&gate_up_fp8_words_, &gate_up_row_factors_, &down_fp8_words_, &down_row_factors_}) *b = {};
    }
    gate_up_bias_ = upload(padded.gate_up_bias());
    down_bias_ = upload(padded.down_bias());
    router_weight_ = upload(padded.router_weight());
    // Every family routes batches above the small-batch path's with the tiled router.
    const int64_t router_count = static_cast<int64_t>(shape_.experts) * shape_.hidden;
    router_weight_parts_.reserve(2 * router_count * sizeof(uint32_t));
    launch_split_router_weight(router_weight_.as<float>(), router_count, router_weight_parts_.as<uint32_t>(), nullptr);
    MXMOE_CUDA_CHECK(cudaStreamSynchronize(nullptr));  // runs go to other streams
    router_bias_ = upload(layer->router_bias);
    MXMOE_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    if (gemms_.small_batch && small_batch_supports(shape_.hidden, shape_.intermediate, shape_.experts, shape_.top_k)) {
      allocate_small_batch_path();
      small_batch_tokens_ = gemms_.small_batch->max_tokens;
    }
  }

  ~CudaMoeImpl() override {
    if (stream_) cudaStreamDestroy(stream_);
  }

  cudaStream_t stream() const override { return stream_; }

  MoeOutput forward(std::span<const float> hidden, int tokens, const Routing* routing) override {
    const int64_t T = tokens, H = shape_.hidden, k = shape_.top_k;
    if (tokens < 0 || static_cast<int64_t>(hidden.size()) != T * H) {
      throw std::invalid_argument("cuda forward: expected " + std::to_string(T) + " x " + std::to_string(H) + " values");
    }
    std::lock_guard<std::mutex> lock(mutex_);  // hidden states are finite: the runner checked
    DeviceScope scope(device_);
    MoeOutput result;
    result.output.resize(T * H);
    result.routing = {tokens, static_cast<int>(k), std::vector<int32_t>(T * k), std::vector<float>(T * k)};
    if (tokens == 0) return result;

    input_.reserve(T * H * sizeof(float));
    output_.reserve(T * H * sizeof(float));
    MXMOE_CUDA_CHECK(cudaMemcpyAsync(input_.as<void>(), hidden.data(), T * H * sizeof(float), cudaMemcpyHostToDevice, stream_));
    if (routing) {
      given_routing_.reserve(T * k * (sizeof(int32_t) + sizeof(float)));
      int32_t* ids = given_routing_.as<int32_t>();
      float* weights = reinterpret_cast<float*>(ids + T * k);
      MXMOE_CUDA_CHECK(cudaMemcpyAsync(ids, routing->expert_ids.data(), T * k * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
      MXMOE_CUDA_CHECK(cudaMemcpyAsync(weights, routing->weights.data(), T * k * sizeof(float), cudaMemcpyHostToDevice, stream_));
      run(input_.as<float>(), tokens, output_.as<float>(), {ids, weights}, stream_);
    } else {
      run(input_.as<float>(), tokens, output_.as<float>(), {}, stream_);
    }
    MXMOE_CUDA_CHECK(cudaMemcpyAsync(result.output.data(), output_.as<void>(), T * H * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    MXMOE_CUDA_CHECK(cudaMemcpyAsync(result.routing.expert_ids.data(), expert_ids_.as<void>(), T * k * sizeof(int32_t),
                                     cudaMemcpyDeviceToHost, stream_));
    MXMOE_CUDA_CHECK(cudaMemcpyAsync(result.routing.weights.data(), expert_weights_.as<void>(), T * k * sizeof(float),
                                     cudaMemcpyDeviceToHost, stream_));
    float scales[2];
    MXMOE_CUDA_CHECK(cudaMemcpyAsync(scales, tensor_scales_.as<void>(), sizeof scales, cudaMemcpyDeviceToHost, stream_));
    // Per-token schemes: the tokens' scales, and the pairs' in (token, slot) order as the reference
    // gives them (the batched path holds them in sorted pair order: position maps one to the other).
    const bool per_token = scheme_traits(scheme_).scale == ScaleGranularity::per_token;
    const bool small_batch = takes_small_batch(tokens);
    std::vector<float> sorted_pair_scales;
    std::vector<int32_t> position;
    if (per_token) {
      result.scales.hidden_rows.resize(T);
      sorted_pair_scales.resize(T * k);
      position.resize(T * k);
      const float* row_scales = row_scales_.as<float>();
      MXMOE_CUDA_CHECK(cudaMemcpyAsync(result.scales.hidden_rows.data(), row_scales, T * sizeof(float),
                                       cudaMemcpyDeviceToHost, stream_));
      MXMOE_CUDA_CHECK(cudaMemcpyAsync(sorted_pair_scales.data(), row_scales + T, T * k * sizeof(float),
                                       cudaMemcpyDeviceToHost, stream_));
      if (!small_batch) {
        MXMOE_CUDA_CHECK(cudaMemcpyAsync(position.data(), position_.as<void>(), T * k * sizeof(int32_t),
                                         cudaMemcpyDeviceToHost, stream_));
      }
    }
    MXMOE_CUDA_CHECK(cudaStreamSynchronize(stream_));  // also surfaces errors raised while kernels ran
    result.scales.hidden = scales[0];
    result.scales.intermediate = scales[1];
    if (per_token) {
      result.scales.intermediate_rows.resize(T * k);
      for (int64_t p = 0; p < T * k; ++p) {
        result.scales.intermediate_rows[p] = sorted_pair_scales[small_batch ? p : position[p]];
      }
    }
    return result;
  }

  void poison_buffers_for_test(bool on) override {
    std::lock_guard<std::mutex> lock(mutex_);
    poison_ = on;
    graphs_.clear();  // they hold the launches of the other setting
  }

  void set_small_batch_tokens(int tokens) override {
    if (tokens < 0 || tokens > kDecodeMaxTokens) {
      throw std::invalid_argument("small-batch path: up to " + std::to_string(kDecodeMaxTokens) + " tokens");
    }
    if (tokens > 0 && decode_grids_.gate_up[0] == 0) throw std::invalid_argument("small-batch path: not available for this shape");
    std::lock_guard<std::mutex> lock(mutex_);
    small_batch_tokens_ = tokens;
    graphs_.clear();  // they hold the other path's launches
  }
  int small_batch_tokens() const override { return small_batch_tokens_; }

  void forward_on_device(const DeviceBatch& b) override {
    std::lock_guard<std::mutex> lock(mutex_);
    DeviceScope scope(device_);
    const auto stream = static_cast<cudaStream_t>(b.stream);
    if (!replay_graphs_ || !GraphCache::can_capture(stream)) return enqueue_on_device(b, stream);
    const GraphKey key{b.tokens, static_cast<int>(b.type),
                       {b.hidden, b.output, b.expert_ids, b.expert_weights, b.routing_ids, b.routing_weights}, stream};
    if (graphs_.replay(key)) return;
    enqueue_on_device(b, stream);  // runs this batch, and gives every buffer its size for the capture
    graphs_.capture(key, [&] { enqueue_on_device(b, stream); });
  }

  // forward_on_device's launches (under the lock, on the layer's GPU).
  void enqueue_on_device(const DeviceBatch& b, cudaStream_t stream) {
    const int64_t T = b.tokens, H = shape_.hidden, k = shape_.top_k;
    const bool bf16 = b.type == ElementType::bf16;
    const GivenRouting given{b.expert_ids, b.expert_weights};
    // The kernels read hidden rows and write output rows 16 bytes at a time: the caller's buffers
    // are used in place when they allow it (a view at an odd offset does not).
    const auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
    if (!bf16 && H == unpadded_hidden_ && aligned(b.hidden) && aligned(b.output)) {
      run(static_cast<const float*>(b.hidden), b.tokens, static_cast<float*>(b.output), given, stream);
    } else {
      // The caller's rows converted and padded in the layer's own buffers: what the pipeline reads.
      input_.reserve(T * H * sizeof(float));
      output_.reserve(T * H * sizeof(float));
      launch_rows_to_float(b.hidden, bf16, T, unpadded_hidden_, input_.as<float>(), static_cast<int>(H), stream);
      run(input_.as<float>(), b.tokens, output_.as<float>(), given, stream);
      launch_rows_from_float(output_.as<float>(), static_cast<int>(H), T, unpadded_hidden_, b.output, bf16, stream);
    }
    if (b.routing_ids && !b.expert_ids) {
      MXMOE_CUDA_CHECK(cudaMemcpyAsync(b.routing_ids, expert_ids_.as<void>(), T * k * sizeof(int32_t),
                                       cudaMemcpyDeviceToDevice, stream));
      MXMOE_CUDA_CHECK(cudaMemcpyAsync(b.routing_weights, expert_weights_.as<void>(), T * k * sizeof(float),
                                       cudaMemcpyDeviceToDevice, stream));
    }
  }

  // As inference engines run a layer: the batches uploaded once, one CUDA graph captured per batch
  // (after direct runs have sized every buffer), replays timed by events.
  ForwardTiming time_forward(std::span<const float> hidden, int tokens, const TimingRequest& request) override {
    std::lock_guard<std::mutex> lock(mutex_);
    DeviceScope scope(device_);
    const size_t batch_values = hidden.size() / request.batches;
    DeviceBuffer inputs(hidden.size_bytes()), out(batch_values * sizeof(float));
    MXMOE_CUDA_CHECK(cudaMemcpy(inputs.as<void>(), hidden.data(), hidden.size_bytes(), cudaMemcpyHostToDevice));
    auto input = [&](int i) { return inputs.as<float>() + (i % request.batches) * batch_values; };
    for (int b = 0; b < request.batches; ++b) run(input(b), tokens, out.as<float>(), {}, stream_);
    struct Graphs {
      std::vector<cudaGraphExec_t> execs;
      ~Graphs() {
        for (cudaGraphExec_t g : execs) cudaGraphExecDestroy(g);
      }
    } graphs;
    for (int b = 0; b < request.batches; ++b) {
      cudaGraph_t graph;
      MXMOE_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
      run(input(b), tokens, out.as<float>(), {}, stream_);
      MXMOE_CUDA_CHECK(cudaStreamEndCapture(stream_, &graph));
      cudaGraphExec_t exec;
      const cudaError_t instantiated = cudaGraphInstantiate(&exec, graph, 0);
      cudaGraphDestroy(graph);
      MXMOE_CUDA_CHECK(instantiated);
      graphs.execs.push_back(exec);
    }
    for (int i = 0; i < request.warmup; ++i) MXMOE_CUDA_CHECK(cudaGraphLaunch(graphs.execs[i % request.batches], stream_));
    ForwardTiming timing{{}, "CUDA-graph replays timed by CUDA events"};
    timing.ms = time_on_stream(stream_, request.reps,
                               [&](int i) { MXMOE_CUDA_CHECK(cudaGraphLaunch(graphs.execs[i % request.batches], stream_)); });
    return timing;
  }

  double copy_bandwidth_gbs() override {
    DeviceScope scope(device_);
    return device_copy_bandwidth_gbs(stream_);
  }

 private:
  // The small-batch path's buffers, sized once for its largest batch so that a run allocates
  // nothing (and can be captured in a CUDA graph). Counters start at zero and return to it.
  void allocate_small_batch_path() {
    const int64_t T = kDecodeMaxTokens, H = shape_.hidden, I = shape_.intermediate, E = shape_.experts,
                  k = shape_.top_k, P = T * k;
    logits_.reserve(T * E * sizeof(float));
    expert_ids_.reserve(P * sizeof(int32_t));
    expert_weights_.reserve(P * sizeof(float));
    tensor_scales_.reserve(2 * sizeof(float));
    if (scheme_traits(scheme_).scale == ScaleGranularity::per_token) {
      row_scales_.reserve((T + P) * sizeof(float));
      pair_max_bits_.reserve(P * sizeof(uint32_t));
    }
    intermediate_.reserve(P * I * sizeof(float));
    pair_out_.reserve(kDownMaxParts * P * H * sizeof(float));
    decode_control_.reserve(sizeof(DecodeControl));
    decode_counts_.reserve(T * ((H + kDecodeDownRows - 1) / kDecodeDownRows) * sizeof(uint32_t));
    MXMOE_CUDA_CHECK(cudaMemset(decode_control_.as<void>(), 0, decode_control_.bytes()));
    MXMOE_CUDA_CHECK(cudaMemset(decode_counts_.as<void>(), 0, decode_counts_.bytes()));
    decode_grids_ = gemms_.small_batch->grids(scheme_, folded_scales_, shape_.hidden, shape_.intermediate, shape_.experts,
                                              shape_.top_k, sm_count_);
  }

  void run_small_batch(const float* x, int tokens, float* out, GivenRouting given, cudaStream_t stream) {
    const int64_t T = tokens, H = shape_.hidden;
    if (poison_) {
      for (DeviceBuffer* b :
           {&logits_, &expert_ids_, &expert_weights_, &tensor_scales_, &intermediate_, &pair_out_, &row_scales_,
            &pair_max_bits_}) {
        MXMOE_CUDA_CHECK(cudaMemsetAsync(b->as<void>(), 0xFF, b->bytes(), stream));
      }
      MXMOE_CUDA_CHECK(cudaMemsetAsync(out, 0xFF, T * H * sizeof(float), stream));
    }
    DecodeLayerArgs a;
    a.scheme = scheme_;
    a.tokens = tokens;
    a.hidden = shape_.hidden;
    a.intermediate = shape_.intermediate;
    a.experts = shape_.experts;
    a.top_k = shape_.top_k;
    a.alpha = swiglu_.alpha;
    a.limit = swiglu_.limit;
    a.x = x;
    a.router_weight = router_weight_.as<float>();
    a.router_bias = router_bias_.as<float>();
    a.given_ids = given.expert_ids;
    a.given_weights = given.weights;
    a.gate_up_words = gate_up_words_.as<uint32_t>();
    a.gate_up_scales = gate_up_scales_.as<uint8_t>();
    a.gate_up_bias = gate_up_bias_.as<float>();
    a.down_words = down_words_.as<uint32_t>();
    a.down_scales = down_scales_.as<uint8_t>();
    a.down_bias = down_bias_.as<float>();
    a.logits = logits_.as<float>();
    a.expert_ids = expert_ids_.as<int32_t>();
    a.expert_weights = expert_weights_.as<float>();
    a.control = decode_control_.as<DecodeControl>();
    a.intermediate_out = intermediate_.as<float>();
    a.pair_out = pair_out_.as<float>();
    a.combine_counts = decode_counts_.as<uint32_t>();
    a.tensor_scales = tensor_scales_.as<float>();
    a.row_scales = row_scales_.as<float>();
    a.pair_max_bits = pair_max_bits_.as<uint32_t>();
    a.out = out;
    a.gate_up_grid = decode_grids_.gate_up_for(tokens);
    a.down_grid = decode_grids_.down_for(tokens);
    a.folded_scales = folded_scales_;
    a.overlap_launches = overlap_launches_;
    launch_decode_layer(a, *gemms_.small_batch, stream);
  }

  // Enqueues the whole layer on stream.
  void run(const float* x, int tokens, float* out, GivenRouting given, cudaStream_t stream) {
    if (tokens == 0) return;
    if (takes_small_batch(tokens)) return run_small_batch(x, tokens, out, given, stream);
    const int64_t T = tokens, H = shape_.hidden, I = shape_.intermediate, E = shape_.experts, k = shape_.top_k;
    const int64_t P = T * k;
    const SchemeTraits& traits = scheme_traits(scheme_);
    const bool fp8 = traits.activation == ActivationFormat::fp8_e4m3;
    const int64_t active_bound = std::min(E, P);
    const GemmBatchPlan gemm_plan = gemms_.plan(scheme_, P, active_bound, shape_, sm_count_, fp8_layout_);
    const bool fp8_words = fp8_layout_ && gemm_plan.fp8_operands;  // the family's FP8 layout
    const bool fp8_as_bf16 = fp8 && !gemms_.fp8_inputs && !fp8_words;
    const bool per_token = traits.scale == ScaleGranularity::per_token;
    const int64_t activation_bytes = fp8_as_bf16 ? 2 : traits.gemm_input_bytes;
    const int tile_rows = gemm_plan.tile_rows;
    const int max_tiles = static_cast<int>((P + tile_rows - 1) / tile_rows + active_bound);
    const bool fused_intermediate = gemms_.writes_down_input(scheme_);
    // Per-tensor FP8's gate_up on the FP8 layout writes its units in bf16 for the quantization pass,
    // and their largest magnitude (gemm_family.hpp).
    const bool bf16_intermediate = fp8_words && !per_token;

    const bool small_batch_router = !gemms_.tiled_router || tokens <= kSmallRouterTokens;
    const int64_t logit_slices =
        router_logit_slices(tokens, static_cast<int>(E), static_cast<int>(H), small_batch_router);
    logits_.reserve(logit_slices * T * E * sizeof(float));
    expert_ids_.reserve(P * sizeof(int32_t));
    expert_weights_.reserve(P * sizeof(float));
    counts_.reserve(E * sizeof(int32_t));
    pair_offsets_.reserve((E + 1) * sizeof(int32_t));
    tile_offsets_.reserve((E + 1) * sizeof(int32_t));
    source_rows_.reserve(P * sizeof(int32_t));
    position_.reserve(P * sizeof(int32_t));
    amax_.reserve(2 * sizeof(uint32_t));
    tensor_scales_.reserve(2 * sizeof(float));
    x_quantized_.reserve(T * H * activation_bytes);
    if (!fused_intermediate) intermediate_.reserve(P * I * (bf16_intermediate ? sizeof(uint16_t) : sizeof(float)));
    y_quantized_.reserve(P * I * activation_bytes);
    pair_out_.reserve(P * H * sizeof(float));
    if (per_token) row_scales_.reserve((T + P) * sizeof(float));  // the tokens', then the sorted pairs'
    if (gemm_plan.gate_up_splits > 1 || gemm_plan.down_splits > 1) {
      partial_.reserve(static_cast<size_t>(std::max(gemm_plan.gate_up_splits * 2 * I, gemm_plan.down_splits * H) * P) *
                       sizeof(float));
    }

    if (poison_) {
      for (DeviceBuffer* b : {&logits_, &expert_ids_, &expert_weights_, &pair_offsets_, &tile_offsets_, &source_rows_, &position_,
                              &tensor_scales_, &x_quantized_, &intermediate_, &y_quantized_, &pair_out_, &partial_,
                              &row_scales_}) {
        MXMOE_CUDA_CHECK(cudaMemsetAsync(b->as<void>(), 0xFF, b->bytes(), stream));
      }
      MXMOE_CUDA_CHECK(cudaMemsetAsync(out, 0xFF, T * H * sizeof(float), stream));
    }
    // No memset node ahead of the router where none is needed: the router zeroes its own counts, and
    // only the FP8 schemes gather largest magnitudes.
    if (given.expert_ids) MXMOE_CUDA_CHECK(cudaMemsetAsync(counts_.as<void>(), 0, E * sizeof(int32_t), stream));
    if (fp8) MXMOE_CUDA_CHECK(cudaMemsetAsync(amax_.as<void>(), 0, 2 * sizeof(uint32_t), stream));
    uint32_t* amax = amax_.as<uint32_t>();
    float* scales = tensor_scales_.as<float>();
    float* x_row_scales = per_token ? row_scales_.as<float>() : nullptr;
    float* y_row_scales = per_token ? x_row_scales + T : nullptr;
    const bool overlap = overlap_launches_;
    // w4a16's GEMM input is x rounded to bf16: the tiled router writes it as it reads x.
    uint16_t* x_bf16 = traits.activation == ActivationFormat::bf16 ? x_quantized_.as<uint16_t>() : nullptr;
    bool x_quantized = false, x_amax_found = false;
    // Per-tensor FP8: the tiled router finds the largest |x| as it reads x, gate_up the
    // intermediate's as it writes it (where its family can), so no pass reads either again for it.
    const bool per_tensor_fp8 = fp8 && !per_token;
    const bool amax_in_gate_up = per_tensor_fp8 && !fused_intermediate && gemms_.writes_out_amax;
    if (given.expert_ids) {
      MXMOE_CUDA_CHECK(cudaMemcpyAsync(expert_ids_.as<void>(), given.expert_ids, P * sizeof(int32_t),
                                       cudaMemcpyDeviceToDevice, stream));
      MXMOE_CUDA_CHECK(cudaMemcpyAsync(expert_weights_.as<void>(), given.weights, P * sizeof(float),
                                       cudaMemcpyDeviceToDevice, stream));
      launch_count_pairs(expert_ids_.as<int32_t>(), expert_weights_.as<float>(), static_cast<int>(P), static_cast<int>(E),
                         counts_.as<int32_t>(), stream);
    } else {
      const bool router_read_x =
          launch_router(x, router_weight_.as<float>(), router_weight_parts_.as<uint32_t>(), router_bias_.as<float>(),
                        tokens, static_cast<int>(H), static_cast<int>(E), static_cast<int>(k), small_batch_router,
                        logits_.as<float>(),
                        expert_ids_.as<int32_t>(), expert_weights_.as<float>(), counts_.as<int32_t>(), x_bf16, scales,
                        per_tensor_fp8 ? amax : nullptr, overlap, stream);
      x_quantized = router_read_x && x_bf16 != nullptr;
      x_amax_found = router_read_x && per_tensor_fp8;
    }
    launch_sort_pairs(expert_ids_.as<int32_t>(), counts_.as<int32_t>(), static_cast<int>(P), static_cast<int>(E),
                      static_cast<int>(k), tile_rows, pair_offsets_.as<int32_t>(), tile_offsets_.as<int32_t>(),
                      source_rows_.as<int32_t>(), position_.as<int32_t>(), overlap, stream);
    if (per_token) {
      launch_quantize_rows(x, T, H, x_quantized_.as<void>(), x_row_scales, scales, fp8_as_bf16, overlap, stream);
    } else if (!x_quantized) {
      if (fp8 && !x_amax_found) launch_abs_max(x, T * H, amax, stream);
      launch_quantize(scheme_, x, T, H, amax, x_quantized_.as<void>(), scales, fp8_as_bf16, overlap, stream);
    }

    GemmProblem gate_up;
    gate_up.weights = fp8_words ? gate_up_fp8_words_.as<uint32_t>() : gate_up_words_.as<uint32_t>();
    gate_up.scales = gate_up_scales_.as<uint8_t>();
    gate_up.row_factors = fp8_words ? gate_up_row_factors_.as<float>() : nullptr;
    gate_up.a = x_quantized_.as<void>();
    gate_up.a_rows = source_rows_.as<int32_t>();
    gate_up.pair_offsets = pair_offsets_.as<int32_t>();
    gate_up.tile_offsets = tile_offsets_.as<int32_t>();
    gate_up.experts = static_cast<int>(E);
    gate_up.n = static_cast<int>(2 * I);
    gate_up.k = static_cast<int>(H);
    gate_up.max_tiles = max_tiles;
    gate_up.bias = gate_up_bias_.as<float>();
    gate_up.a_scale = scales;
    gate_up.a_row_scales = x_row_scales;  // by token: the pairs' source rows
    gate_up.out = intermediate_.as<float>();
    if (fused_intermediate) {
      gate_up.out_activations = y_quantized_.as<uint16_t>();
      gate_up.out_scale = scales + 1;
    } else if (bf16_intermediate) {
      gate_up.out_activations = intermediate_.as<uint16_t>();
    }
    gate_up.out_amax = amax_in_gate_up ? amax + 1 : nullptr;
    gate_up.folded_scales = folded_scales_;
    gate_up.gate_up = true;
    gate_up.fp8 = fp8 && !fp8_as_bf16;
    gate_up.alpha = swiglu_.alpha;
    gate_up.limit = swiglu_.limit;
    gate_up.splits = gemm_plan.gate_up_splits;
    gate_up.partial = partial_.as<float>();
    gate_up.pairs = static_cast<int>(P);
    gemms_.launch(gate_up, gemm_plan, stream);

    if (bf16_intermediate) {  // its largest magnitude came with it (writes_out_amax)
      launch_quantize(scheme_, intermediate_.as<uint16_t>(), P, I, amax + 1, y_quantized_.as<void>(), scales + 1,
                      fp8_as_bf16, overlap, stream);
    } else if (per_token) {
      launch_quantize_rows(intermediate_.as<float>(), P, I, y_quantized_.as<void>(), y_row_scales, scales + 1, fp8_as_bf16,
                           overlap, stream);
    } else if (!fused_intermediate) {
      if (fp8 && !amax_in_gate_up) launch_abs_max(intermediate_.as<float>(), P * I, amax + 1, stream);
      launch_quantize(scheme_, intermediate_.as<float>(), P, I, amax + 1, y_quantized_.as<void>(), scales + 1, fp8_as_bf16,
                      overlap, stream);
    }

    GemmProblem down = gate_up;
    down.weights = fp8_words ? down_fp8_words_.as<uint32_t>() : down_words_.as<uint32_t>();
    down.scales = down_scales_.as<uint8_t>();
    down.row_factors = fp8_words ? down_row_factors_.as<float>() : nullptr;
    down.a = y_quantized_.as<void>();
    down.a_rows = nullptr;
    down.n = static_cast<int>(H);
    down.k = static_cast<int>(I);
    down.bias = down_bias_.as<float>();
    down.a_scale = scales + 1;
    down.a_row_scales = y_row_scales;  // by sorted pair
    down.out = pair_out_.as<float>();
    down.out_activations = nullptr;
    down.out_scale = nullptr;
    down.out_amax = nullptr;
    down.gate_up = false;
    down.splits = gemm_plan.down_splits;
    gemms_.launch(down, gemm_plan, stream);

    launch_combine(pair_out_.as<float>(), position_.as<int32_t>(), expert_weights_.as<float>(), tokens,
                   static_cast<int>(H), static_cast<int>(k), out, overlap, stream);
  }

  const GemmFamily& gemms_;
  MoeShape shape_;
  SwigluParams swiglu_;
  Scheme scheme_;
  int device_;
  int unpadded_hidden_;  // the caller's hidden size (device batches arrive unpadded)
  bool replay_graphs_;   // forward_on_device replays one CUDA graph per batch (ExecutionPlan)
  GraphCache graphs_;
  int sm_count_ = 1;
  bool overlap_launches_ = false;  // programmatic dependent launch (launch.cuh): sm_90 and newer
  cudaStream_t stream_ = nullptr;
  bool poison_ = false;
  int small_batch_tokens_ = 0;  // batches up to this many tokens take the small-batch path
  bool takes_small_batch(int tokens) const { return tokens <= small_batch_tokens_; }
  bool folded_scales_ = false;  // every weight scale code <= 128 (decode.hpp)
  bool fp8_layout_ = false;     // the batched GEMMs read the family's fp8_words (PackedWeights)
  DecodeGrids decode_grids_;  // all zero: no small-batch path
  std::mutex mutex_;
  DeviceBuffer gate_up_words_, gate_up_scales_, down_words_, down_scales_;
  DeviceBuffer gate_up_fp8_words_, gate_up_row_factors_, down_fp8_words_, down_row_factors_;
  DeviceBuffer gate_up_bias_, down_bias_, router_weight_, router_weight_parts_, router_bias_;
  DeviceBuffer input_, output_, logits_, expert_ids_, expert_weights_, counts_, pair_offsets_, tile_offsets_, source_rows_,
      position_, amax_, tensor_scales_, x_quantized_, intermediate_, y_quantized_, pair_out_, partial_, row_scales_;
  DeviceBuffer decode_control_, decode_counts_, pair_max_bits_;
  DeviceBuffer given_routing_;
};

}  // namespace

std::vector<double> time_on_stream(cudaStream_t stream, int reps, const std::function<void(int rep)>& enqueue) {
  cudaEvent_t start, stop;
  MXMOE_CUDA_CHECK(cudaEventCreate(&start));
  MXMOE_CUDA_CHECK(cudaEventCreate(&stop));
  std::vector<double> ms;
  try {
    for (int i = 0; i < reps; ++i) {
      MXMOE_CUDA_CHECK(cudaEventRecord(start, stream));
      enqueue(i);
      MXMOE_CUDA_CHECK(cudaEventRecord(stop, stream));
      MXMOE_CUDA_CHECK(cudaEventSynchronize(stop));
      float elapsed = 0;
      MXMOE_CUDA_CHECK(cudaEventElapsedTime(&elapsed, start, stop));
      ms.push_back(elapsed);
    }
  } catch (...) {
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    throw;
  }
  cudaEventDestroy(start);
  cudaEventDestroy(stop);
  return ms;
}

double device_copy_bandwidth_gbs(cudaStream_t stream) {
  const size_t bytes = size_t{1} << 30;  // far beyond L2
  DeviceBuffer from(bytes), to(bytes);
  MXMOE_CUDA_CHECK(cudaMemsetAsync(from.as<void>(), 1, bytes, stream));
  auto copy = [&](int) {
    MXMOE_CUDA_CHECK(cudaMemcpyAsync(to.as<void>(), from.as<void>(), bytes, cudaMemcpyDeviceToDevice, stream));
  };
  for (int i = 0; i < 2; ++i) copy(i);
  std::vector<double> ms = time_on_stream(stream, 10, copy);
  std::sort(ms.begin(), ms.end());
  return 2.0 * static_cast<double>(bytes) / (ms[ms.size() / 2] * 1e-3) / 1e9;  // bytes read plus bytes written
}

PreparedCudaLayer prepare_cuda_backend(std::shared_ptr<const MoeLayer> layer, Scheme scheme, const DeviceSpec& gpu,
                                       const std::optional<ForcedBackend>& forced) {
  layer->validate();  // an entry point, as MoeRunner's constructor is
  PreparedCudaLayer p;
  p.decision = select_backend(gpu, Problem::for_layer(*layer, scheme), forced);
  const auto& registry = backend_registry();
  const auto declaration = std::find_if(registry.begin(), registry.end(),
                                        [&](const BackendDeclaration& b) { return b.name == p.decision.chosen; });
  auto prepared = declaration->prepare(std::move(layer), {p.decision.chosen, scheme, gpu, p.decision.padding, 0});
  auto* cuda = dynamic_cast<CudaMoe*>(prepared.get());
  if (!cuda) throw std::invalid_argument("backend " + p.decision.chosen + " is not a CUDA backend");
  prepared.release();
  p.moe.reset(cuda);
  return p;
}

std::unique_ptr<CudaMoe> make_cuda_moe(std::shared_ptr<const MoeLayer> layer, const ExecutionPlan& plan,
                                       const GemmFamily& gemms) {
  return std::make_unique<CudaMoeImpl>(std::move(layer), plan, gemms);
}

}  // namespace mxmoe::cuda
