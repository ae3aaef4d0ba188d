// Backends: what each one declares it can run (data for the oracle) and how it runs a layer.
#pragma once

#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "mxmoe/device.hpp"
#include "mxmoe/moe.hpp"
#include "mxmoe/padding.hpp"
#include "mxmoe/scheme.hpp"

namespace mxmoe {

// The problem the oracle plans for: one MoE layer under one scheme.
struct Problem {
  Scheme scheme = Scheme::w4a16;
  int experts = 0;
  int top_k = 0;
  int hidden = 0;
  int intermediate = 0;
  int tokens = 0;  // a hint for sizing; 0 when unknown
  bool bias = true;
  // Extra alignment the caller asks for (0: none), e.g. to run unaligned shapes through the padding
  // path on purpose. Backends that cannot pad are rejected when it is not already met.
  int pad_hidden_to = 0;
  int pad_intermediate_to = 0;

  static Problem for_layer(const MoeLayer& layer, Scheme scheme, int tokens = 0);
  // Throws std::invalid_argument for non-positive dims or top_k outside [1, experts].
  void validate() const;
  std::string to_string() const;
};

// Everything a backend needs to know to run: the oracle's choice, made concrete.
struct ExecutionPlan {
  std::string backend;
  Scheme scheme = Scheme::w4a16;
  DeviceSpec device;
  PaddingPlan padding;  // the layer handed to the backend has the padded dims
  int threads = 0;      // CPU threads; 0: all
  bool replay_graphs = false;  // RunnerOptions::replay_graphs
};

// A batch whose data already lives where a GPU backend computes (device pointers), for callers that
// keep it there: inference engines, the PyTorch operators, CUDA-graph capture. Nothing is copied to
// or from the host and nothing waits for the GPU. Calls on one layer share its workspace: enqueue
// them on one stream, or order their streams.
enum class ElementType { f32, bf16 };
struct DeviceBatch {
  int tokens = 0;
  ElementType type = ElementType::f32;  // of hidden and output
  const void* hidden = nullptr;         // [tokens, hidden] of the layer's real (unpadded) hidden size
  void* output = nullptr;               // [tokens, hidden], of `type`
  // The caller's routing ([tokens, top_k] expert ids and weights), or null for the layer's router.
  // A device cannot throw: an id out of range makes its token's output row NaN.
  const int32_t* expert_ids = nullptr;
  const float* expert_weights = nullptr;
  // Where the layer's own routing goes, if wanted ([tokens, top_k]).
  int32_t* routing_ids = nullptr;
  float* routing_weights = nullptr;
  void* stream = nullptr;  // the cudaStream_t to enqueue on; as in CUDA, null is the default stream
};

// How a benchmark times forwards: `batches` different batches in turn (so repeated runs do not
// just re-read a cache), after `warmup` untimed forwards.
struct TimingRequest {
  int batches = 1;
  int warmup = 3;
  int reps = 20;
};

struct ForwardTiming {
  std::vector<double> ms;  // one per repetition, in the order run
  std::string method;      // how they were measured, e.g. "CUDA-graph replays timed by CUDA events"
};

// A layer prepared by a backend (weights repacked or uploaded once), ready to run batches.
class PreparedMoe {
 public:
  virtual ~PreparedMoe() = default;
  // hidden: [tokens, padded_hidden]. Returns [tokens, padded_hidden] outputs and the routing: the
  // layer's own router's, or `routing` when the caller routed (as inference engines do; checked by
  // the runner, trusted here).
  virtual MoeOutput forward(std::span<const float> hidden, int tokens, const Routing* routing = nullptr) = 0;
  // The same into the caller's memory: `output` [tokens, padded_hidden]; `routing_out`, when given,
  // receives the routing. Returns the activations' scales. The default runs forward() and copies;
  // a backend that computes on the host writes the output in place.
  virtual ActivationScales forward_into(std::span<const float> hidden, int tokens, const Routing* routing,
                                        std::span<float> output, Routing* routing_out);
  // Enqueues the layer on device data (checked by the runner). Backends that compute on the host
  // throw std::logic_error.
  virtual void forward_on_device(const DeviceBatch& batch);

  // For benchmarks. hidden: [request.batches * tokens, padded_hidden]; repetition i runs batch
  // i % batches with its data already where the backend computes (a GPU backend uploads it once
  // and replays one captured CUDA graph per batch). The default times forward() by the host clock.
  virtual ForwardTiming time_forward(std::span<const float> hidden, int tokens, const TimingRequest& request);
  // The copy bandwidth (bytes read + written per second) of the memory the weights stream from,
  // measured now: the ceiling of a layer that streams its weights. The default copies host memory.
  virtual double copy_bandwidth_gbs();
};

// A backend's declaration. The oracle reads only this: the rules are data, plus at most a small
// predicate for what data cannot say.
struct BackendDeclaration {
  std::string name;
  std::string summary;

  // Devices. The reference runs on the host for every device; others name one kind.
  bool runs_on_any_device = false;
  DeviceKind device_kind = DeviceKind::cpu;
  int min_sm = 0;               // CUDA: the oldest compute capability its code runs on
  std::vector<int> exact_sm;    // CUDA: architecture-specific code ("a" targets) runs only on these
  std::vector<Scheme> schemes;
  // CUDA: the scheme's GEMMs run on tensor cores, so each scheme also needs its
  // scheme_traits().min_tensor_core_sm (FP8 from sm_89).
  bool scheme_tensor_cores = false;

  // Shapes: hidden and intermediate must be multiples of these (the MXFP4 block 32 is implied).
  int hidden_alignment = 32;
  int intermediate_alignment = 32;
  bool can_pad = true;  // whether unaligned dims may be padded up to the alignment

  int rank = 0;  // higher is preferred among eligible backends

  // Whether this binary contains the backend, and why not.
  bool built = true;
  std::string not_built_reason;

  // Optional extra rule: returns a rejection reason, or "" to accept.
  std::function<std::string(const DeviceSpec&, const Problem&)> extra_check;

  // Optional: which of the backend's kernel paths runs this problem (the token count decides for
  // some backends), for the oracle's report.
  std::function<std::string(const Problem&)> kernel_path;

  // Optional: the relative error of the GEMMs' sums where the backend accumulates them in less than
  // fp32 for this problem (0, or absent: fp32 accumulation), which error bounds against the
  // reference must allow for.
  std::function<double(const Problem&)> accumulation_error;

  // Prepares a validated layer with the plan's real dims to run at the plan's padded dims (its
  // forward takes and returns padded hidden rows): backends that repack or upload the weights write
  // the padding as they do (src/moe/padded_view.hpp) and let go of the layer; the reference keeps
  // sharing it.
  std::function<std::unique_ptr<PreparedMoe>(std::shared_ptr<const MoeLayer> layer, const ExecutionPlan& plan)>
      prepare;
};

// The product registry: every backend that exists, in one table (src/backends/registry.cpp).
const std::vector<BackendDeclaration>& backend_registry();

}  // namespace mxmoe
