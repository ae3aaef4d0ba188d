#include "mxmoe/runner.hpp"

#include <algorithm>
#include <cmath>
#include <stdexcept>

#include "moe/routing_check.hpp"
#include "util/admission.hpp"

namespace mxmoe {

MoeRunner::MoeRunner(const MoeLayer& layer, Scheme scheme, const DeviceSpec& device, const RunnerOptions& options)
    : MoeRunner(std::make_shared<const MoeLayer>(layer), scheme, device, options) {}

MoeRunner::MoeRunner(MoeLayer&& layer, Scheme scheme, const DeviceSpec& device, const RunnerOptions& options)
    : MoeRunner(std::make_shared<const MoeLayer>(std::move(layer)), scheme, device, options) {}

MoeRunner::MoeRunner(std::shared_ptr<const MoeLayer> layer, Scheme scheme, const DeviceSpec& device,
                     const RunnerOptions& options) {
  if (!device.detected) {
    throw std::invalid_argument("cannot run on " + device.id() +
                                ": it is a planning target, not a device of this machine (use --device auto, cpu:native "
                                "or cuda)");
  }
  layer->validate();
  const auto& registry = options.registry ? *options.registry : backend_registry();
  Problem problem = Problem::for_layer(*layer, scheme);
  problem.pad_hidden_to = options.pad_hidden_to;
  problem.pad_intermediate_to = options.pad_intermediate_to;
  decision_ = select_backend(device, problem, resolve_forced_backend(options.backend), registry);
  const auto& declaration = *std::find_if(registry.begin(), registry.end(),
                                          [&](const BackendDeclaration& b) { return b.name == decision_.chosen; });
  // The backend writes the plan's padding while it packs the weights: no padded copy is made here.
  ExecutionPlan plan{decision_.chosen, scheme, device, decision_.padding, options.threads, options.replay_graphs};
  prepared_ = declaration.prepare(std::move(layer), plan);
}

MoeRunner::~MoeRunner() = default;
MoeRunner::MoeRunner(MoeRunner&&) noexcept = default;
MoeRunner& MoeRunner::operator=(MoeRunner&&) noexcept = default;

void MoeRunner::admit_forward(int tokens) const {
  const PaddingPlan& plan = decision_.padding;
  detail::admit_memory(forward_memory_bytes({plan.padded_hidden, plan.padded_intermediate, decision_.problem.experts,
                                              decision_.problem.top_k},
                                             tokens),
                       "a forward of " + std::to_string(tokens) + " tokens");
}

MoeOutput MoeRunner::forward(std::span<const float> hidden, int tokens) { return run(hidden, tokens, nullptr); }

MoeOutput MoeRunner::forward(std::span<const float> hidden, int tokens, const Routing& routing) {
  return run(hidden, tokens, &routing);
}

MoeOutput MoeRunner::run(std::span<const float> hidden, int tokens, const Routing* routing) {
  MoeOutput out;
  out.output.resize(static_cast<size_t>(std::max(tokens, 0)) * decision_.padding.hidden);
  out.scales = forward_into(hidden, tokens, out.output, routing, &out.routing);
  return out;
}

ActivationScales MoeRunner::forward_into(std::span<const float> hidden, int tokens, std::span<float> output,
                                         const Routing* routing, Routing* routing_out) {
  const PaddingPlan& plan = decision_.padding;
  if (tokens < 0 || hidden.size() != static_cast<size_t>(tokens) * plan.hidden) {
    throw std::invalid_argument("forward: hidden states hold " + std::to_string(hidden.size()) + " values, expected " +
                                std::to_string(tokens) + " tokens x " + std::to_string(plan.hidden));
  }
  if (output.size() != hidden.size()) {
    throw std::invalid_argument("forward: the output holds " + std::to_string(output.size()) + " values, expected " +
                                std::to_string(tokens) + " tokens x " + std::to_string(plan.hidden));
  }
  if (routing) detail::check_routing(*routing, tokens, decision_.problem.top_k, decision_.problem.experts);
  admit_forward(tokens);
  detail::check_finite_hidden(hidden, plan.hidden);  // once per forward, for every backend
  ActivationScales scales;
  if (plan.is_identity()) {
    scales = prepared_->forward_into(hidden, tokens, routing, output, routing_out);
  } else {
    std::vector<float> padded_output(static_cast<size_t>(tokens) * plan.padded_hidden);
    scales = prepared_->forward_into(pad_hidden(hidden, tokens, plan), tokens, routing, padded_output, routing_out);
    unpad_hidden_into(padded_output, tokens, plan, output);
  }
  check_finite_output(output, plan.hidden);
  return scales;
}

void MoeRunner::forward_on_device(const DeviceBatch& batch) {
  if (batch.tokens < 0) throw std::invalid_argument("forward_on_device: negative token count");
  if (batch.tokens == 0) return;
  if (!batch.hidden || !batch.output) throw std::invalid_argument("forward_on_device: hidden and output must be device pointers");
  if (!batch.expert_ids != !batch.expert_weights) {
    throw std::invalid_argument("forward_on_device: the caller's routing needs both expert ids and weights");
  }
  if (!batch.routing_ids != !batch.routing_weights) {
    throw std::invalid_argument("forward_on_device: the routing output needs both ids and weights");
  }
  prepared_->forward_on_device(batch);
}

ForwardTiming MoeRunner::time_forward(std::span<const float> hidden, int tokens, const TimingRequest& request) {
  const PaddingPlan& plan = decision_.padding;
  if (tokens <= 0 || request.batches <= 0 || request.warmup < 0 || request.reps <= 0) {
    throw std::invalid_argument("time_forward: needs tokens, batches and repetitions >= 1 and warm-up >= 0");
  }
  const int64_t rows = int64_t{request.batches} * tokens;
  if (hidden.size() != static_cast<size_t>(rows) * plan.hidden) {
    throw std::invalid_argument("time_forward: hidden states hold " + std::to_string(hidden.size()) + " values, expected " +
                                std::to_string(request.batches) + " batches x " + std::to_string(tokens) + " tokens x " +
                                std::to_string(plan.hidden));
  }
  admit_forward(tokens);
  if (plan.is_identity()) return prepared_->time_forward(hidden, tokens, request);
  return prepared_->time_forward(pad_hidden(hidden, static_cast<int>(rows), plan), tokens, request);
}

void check_finite_output(std::span<const float> output, int hidden) {
  // Finite inputs and finite weights can still overflow (a block scale of 2^127 times 6); such an
  // output is refused, never returned as if it were a result.
  for (size_t i = 0; i < output.size(); ++i) {
    if (!std::isfinite(output[i])) {
      throw std::domain_error("the layer's output is not finite at token " + std::to_string(i / hidden) + ", column " +
                              std::to_string(i % hidden) + " (" + std::to_string(output[i]) +
                              "): the weights' scales or the inputs overflow float");
    }
  }
}

}  // namespace mxmoe
