// The engine's front door: give it a layer, a scheme and a device; it asks the oracle for a
// backend, pads the layer by the oracle's plan, prepares the backend once, and runs batches.
#pragma once

#include <memory>
#include <span>
#include <string>

#include "mxmoe/backend.hpp"
#include "mxmoe/oracle.hpp"

namespace mxmoe {

struct RunnerOptions {
  // A backend name, or "auto" to let the oracle choose (then MXMOE_BACKEND, if set, forces one).
  std::string backend = "auto";
  int threads = 0;  // CPU threads; 0: all
  // Pad hidden and intermediate to multiples of these (0: only what the backend needs).
  int pad_hidden_to = 0;
  int pad_intermediate_to = 0;
  // On a GPU backend, forward_on_device captures each batch (its token count, buffers and stream)
  // in a CUDA graph the first time and replays the graph after: one launch instead of the layer's
  // several, for callers that run the same batches again and again without graphs of their own.
  // Not on the legacy default stream (CUDA cannot capture it), nor while the caller captures.
  bool replay_graphs = false;
  const std::vector<BackendDeclaration>* registry = nullptr;  // the product registry unless set
};

class MoeRunner {
 public:
  // `device` must be this machine's (detected): planning for other devices is select_backend's job.
  // Throws OracleError when no backend (or not the forced one) can run here.
  // The layer is copied from an lvalue, moved from an rvalue (MoeRunner(checkpoint.load_layer(0), ...)
  // copies nothing), shared from a shared_ptr. Backends that repack the weights let go of it.
  MoeRunner(const MoeLayer& layer, Scheme scheme, const DeviceSpec& device, const RunnerOptions& options = {});
  MoeRunner(MoeLayer&& layer, Scheme scheme, const DeviceSpec& device, const RunnerOptions& options = {});
  MoeRunner(std::shared_ptr<const MoeLayer> layer, Scheme scheme, const DeviceSpec& device,
            const RunnerOptions& options = {});
  ~MoeRunner();
  MoeRunner(MoeRunner&&) noexcept;
  MoeRunner& operator=(MoeRunner&&) noexcept;

  const Decision& decision() const { return decision_; }

  // hidden: [tokens, hidden] with the layer's real (unpadded) hidden size; returns the same shape.
  // Throws std::domain_error when an output is not finite (check_finite_output), whatever backend.
  MoeOutput forward(std::span<const float> hidden, int tokens);
  // The same on the caller's routing ([tokens, top_k] expert ids and weights) instead of the layer's
  // router; throws std::invalid_argument for ids out of range, an expert twice for one token, or
  // weights that are not finite.
  MoeOutput forward(std::span<const float> hidden, int tokens, const Routing& routing);
  // Either of the above into the caller's memory: `output` [tokens, hidden] (the real hidden size),
  // the caller's `routing` or null for the layer's router, and the routing used into *routing_out
  // when given. Returns the activations' scales. On a host backend with an unpadded layer nothing
  // is allocated per call beyond the routing (the PyTorch CPU operators run on this).
  ActivationScales forward_into(std::span<const float> hidden, int tokens, std::span<float> output,
                                const Routing* routing = nullptr, Routing* routing_out = nullptr);

  // The layer on device data (DeviceBatch), on a GPU backend; refuses batches whose pointers are
  // missing or whose routing is half given (std::invalid_argument) and host backends
  // (std::logic_error). Capture-safe once a batch of this size has run.
  void forward_on_device(const DeviceBatch& batch);

  // For benchmarks: hidden holds request.batches batches of `tokens` rows ([batches * tokens, hidden]),
  // timed where the backend computes (PreparedMoe::time_forward: CUDA-graph replays on a GPU).
  ForwardTiming time_forward(std::span<const float> hidden, int tokens, const TimingRequest& request);
  // The copy bandwidth of the memory the chosen backend streams weights from, measured now.
  double copy_bandwidth_gbs() { return prepared_->copy_bandwidth_gbs(); }

 private:
  MoeOutput run(std::span<const float> hidden, int tokens, const Routing* routing);
  // Refuses a batch whose activations would not fit this machine's memory.
  void admit_forward(int tokens) const;

  Decision decision_;
  std::unique_ptr<PreparedMoe> prepared_;
};

// Throws std::domain_error naming the first non-finite element of `output` [T, hidden] by token and
// column.
void check_finite_output(std::span<const float> output, int hidden);

}  // namespace mxmoe
