#include <chrono>
#include <cmath>
#include <cstdlib>
#include <map>
#include <set>
#include <string_view>

#include "mxmoe/eval.hpp"
#include "mxmoe/gptoss.hpp"
#include "mxmoe/metrics.hpp"
#include "mxmoe/runner.hpp"
#include "mxmoe/synth.hpp"
#include "util/admission.hpp"

namespace mxmoe {

struct EvalModelCache::Impl {
  std::map<std::string, std::shared_ptr<const MoeLayer>> layers;
  std::map<std::string, std::shared_ptr<GptOssCheckpoint>> checkpoints;
  std::map<std::string, std::shared_ptr<const std::vector<float>>> exact_outputs;
};

EvalModelCache::EvalModelCache() : impl_(std::make_unique<Impl>()) {}
EvalModelCache::~EvalModelCache() = default;

std::string_view eval_status_name(EvalStatus status) {
  switch (status) {
    case EvalStatus::passed: return "pass";
    case EvalStatus::failed: return "FAIL";
    case EvalStatus::skipped: return "skip";
    case EvalStatus::error: return "ERROR";
  }
  return "?";
}

namespace {

// Environment overrides for the duration of one config.
class ScopedEnv {
 public:
  explicit ScopedEnv(const std::map<std::string, std::string>& env) {
    for (const auto& [name, value] : env) {
      const char* old = std::getenv(name.c_str());
      saved_.push_back({name, old ? std::optional<std::string>(old) : std::nullopt});
      ::setenv(name.c_str(), value.c_str(), 1);
    }
  }
  ~ScopedEnv() {
    for (const auto& [name, old] : saved_) {
      if (old) {
        ::setenv(name.c_str(), old->c_str(), 1);
      } else {
        ::unsetenv(name.c_str());
      }
    }
  }

 private:
  std::vector<std::pair<std::string, std::optional<std::string>>> saved_;
};

// The device a config runs on, or why it cannot run here.
std::optional<DeviceSpec> device_for(const std::string& requirement, std::string& reason) {
  if (requirement == "cpu") return DeviceSpec::detect_cpu();
  const auto gpus = detect_cuda_devices();
  if (requirement == "any") return DeviceSpec::detect();
  if (gpus.empty()) {
    reason = "needs " + requirement + "; this machine has no CUDA GPU";
    return std::nullopt;
  }
  if (requirement == "cuda") return gpus.front();
  const bool at_least = requirement.back() == '+';
  const int sm = std::stoi(requirement.substr(3, requirement.size() - 3 - (at_least ? 1 : 0)));
  for (const auto& g : gpus) {
    if (at_least ? g.sm >= sm : g.sm == sm) return g;
  }
  reason = "needs " + requirement + "; this machine's GPU is " + gpus.front().id() + " (" + gpus.front().name + ")";
  return std::nullopt;
}

std::shared_ptr<const MoeLayer> model_layer(const EvalConfig& c, int layer, EvalModelCache& cache, int& layer_count) {
  auto& impl = cache.impl();
  if (c.checkpoint) {
    const std::string key = std::filesystem::weakly_canonical(*c.checkpoint).string();
    auto& checkpoint = impl.checkpoints[key];
    if (!checkpoint) checkpoint = std::make_shared<GptOssCheckpoint>(GptOssCheckpoint::open(*c.checkpoint));
    layer_count = checkpoint->config().layers;
    if (layer < 0) return nullptr;
    auto& slot = impl.layers[key + "#" + std::to_string(layer)];
    if (!slot) slot = std::make_shared<const MoeLayer>(checkpoint->load_layer(layer));
    return slot;
  }
  layer_count = c.synth_layers;
  if (layer < 0) return nullptr;
  if (layer >= c.synth_layers) {
    throw std::invalid_argument("layer " + std::to_string(layer) + " is out of range: the synthetic model has " +
                                std::to_string(c.synth_layers) + " layers");
  }
  MoeShape shape = find_preset(c.synth_preset)->shape;
  if (c.synth_experts > 0) shape.experts = c.synth_experts;
  const std::string key = c.synth_preset + "/" + std::to_string(c.synth_seed) + "/" + std::to_string(shape.experts) + "/" +
                          std::to_string(static_cast<int>(c.synth_weights)) + "#" + std::to_string(layer);
  auto& slot = impl.layers[key];
  if (!slot) slot = std::make_shared<const MoeLayer>(random_layer(shape, c.synth_seed, layer, c.synth_weights));
  return slot;
}

// The float64 reference with exact activations (w4a32) on a given routing, shared by the configs
// of one run that evaluate the same cached layer on the same inputs and routing: the schemes of one
// model, typically, which then pay for it once.
const std::vector<float>& exact_output(EvalModelCache& cache, const MoeLayer& layer, const std::vector<float>& x,
                                       int tokens, const Routing& routing) {
  auto digest = [](const auto& v) {
    return std::to_string(std::hash<std::string_view>{}(
        {reinterpret_cast<const char*>(v.data()), v.size() * sizeof(v[0])}));
  };
  const std::string key = std::to_string(reinterpret_cast<uintptr_t>(&layer)) + "/" + std::to_string(tokens) + "/" +
                          digest(x) + "/" + digest(routing.expert_ids) + "/" + digest(routing.weights);
  auto& slot = cache.impl().exact_outputs[key];
  if (!slot) {
    slot = std::make_shared<const std::vector<float>>(
        reference_forward(layer, x, tokens, Scheme::w4a32, {.routing = &routing}).output);
  }
  return *slot;
}

std::string format(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

}  // namespace

EvalResult run_eval(const EvalConfig& c, EvalModelCache& cache, const EvalStepObserver& on_step) {
  auto step = [&](const std::string& what) {
    if (on_step) on_step(what);
  };
  const auto start = std::chrono::steady_clock::now();
  EvalResult r;
  r.file = c.file;
  r.name = c.name;
  r.model = c.checkpoint ? "checkpoint " + c.checkpoint->string()
                         : "synthetic " + c.synth_preset + " seed " + std::to_string(c.synth_seed) +
                               (c.synth_weights == WeightDistribution::spread ? ", spread weights" : "");
  r.thresholds = c.thresholds;
  auto finish = [&](EvalStatus status, std::string message) {
    r.status = status;
    r.message = std::move(message);
    r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return r;
  };
  std::string reason;
  const auto device = device_for(c.device, reason);
  if (!device) return finish(EvalStatus::skipped, reason);
  r.device = device->id();
  try {
    const ScopedEnv env(c.env);
    int layer_count = 0;
    model_layer(c, -1, cache, layer_count);
    std::vector<int> layers = c.layers;
    if (layers.empty()) {
      for (int l = 0; l < layer_count; ++l) layers.push_back(l);
    }
    std::set<std::string> backends;
    bool first = true;
    for (int l : layers) {
      const std::string at_layer = "layer " + std::to_string(l) + ": ";
      step(at_layer + (c.checkpoint ? "loading" : "generating"));
      const auto layer = model_layer(c, l, cache, layer_count);
      step(at_layer + "preparing the backend");
      MoeRunner runner(layer, c.scheme, *device,
                       {.backend = c.backend, .pad_hidden_to = c.pad_hidden_to, .pad_intermediate_to = c.pad_intermediate_to});
      backends.insert(runner.decision().chosen);
      for (int tokens : c.tokens) {
        // The backend's forward and up to three reference forwards hold their activations at once.
        detail::admit_memory(4 * forward_memory_bytes(layer->shape, tokens),
                             "eval '" + c.name + "' at " + std::to_string(tokens) + " tokens");
        const auto x = random_hidden(tokens, layer->shape.hidden, c.input_seed * 1000003 + l * 7919 + tokens, c.distribution);
        const std::string at_tokens = at_layer + "T=" + std::to_string(tokens) + " ";
        step(at_tokens + runner.decision().chosen);
        const MoeOutput got = runner.forward(x, tokens);
        step(at_tokens + "float64 reference");
        const MoeOutput expected_own = reference_forward(*layer, x, tokens, c.scheme);
        const double agreement = routing_agreement(got.routing, expected_own.routing);
        // Errors on the backend's own routing: a near-tie routed differently counts once, in
        // routing_agreement, instead of also as a large output error.
        const MoeOutput expected = agreement == 1.0 && got.routing.weights == expected_own.routing.weights
                                       ? expected_own
                                       : reference_forward(*layer, x, tokens, c.scheme, {.routing = &got.routing});
        // The scheme's own cost: its reference against exact activations on the same routing.
        step(at_tokens + "float64 reference, exact activations");
        double scheme_cost = 0.0, scheme_token_cost = 0.0;
        if (c.scheme != Scheme::w4a32) {
          const std::vector<float>& exact = exact_output(cache, *layer, x, tokens, got.routing);
          scheme_cost = relative_l2(expected.output, exact);
          scheme_token_cost = worst_row_relative_l2(expected.output, exact, static_cast<size_t>(layer->shape.hidden));
        }
        const EvalMetrics m{relative_l2(got.output, expected.output),
                            max_abs_diff(got.output, expected.output),
                            cosine_similarity(got.output, expected.output),
                            agreement,
                            scheme_cost,
                            scheme_token_cost};
        if (first) {
          r.metrics = m;
          first = false;
        } else {
          r.metrics.relative_l2 = std::max(r.metrics.relative_l2, m.relative_l2);
          r.metrics.max_abs = std::max(r.metrics.max_abs, m.max_abs);
          r.metrics.cosine = std::min(r.metrics.cosine, m.cosine);
          r.metrics.routing_agreement = std::min(r.metrics.routing_agreement, m.routing_agreement);
          r.metrics.scheme_relative_l2 = std::max(r.metrics.scheme_relative_l2, m.scheme_relative_l2);
          r.metrics.scheme_token_relative_l2 = std::max(r.metrics.scheme_token_relative_l2, m.scheme_token_relative_l2);
        }
      }
    }
    for (const auto& b : backends) r.backend += (r.backend.empty() ? "" : ",") + b;
  } catch (const std::exception& e) {
    return finish(EvalStatus::error, e.what());
  }
  std::vector<std::string> failures;
  const EvalThresholds& t = c.thresholds;
  if (t.relative_l2 && !(r.metrics.relative_l2 <= *t.relative_l2)) {
    failures.push_back("relative_l2 " + format(r.metrics.relative_l2) + " > " + format(*t.relative_l2));
  }
  if (t.max_abs && !(r.metrics.max_abs <= *t.max_abs)) {
    failures.push_back("max_abs " + format(r.metrics.max_abs) + " > " + format(*t.max_abs));
  }
  if (t.cosine && !(r.metrics.cosine >= *t.cosine)) {
    failures.push_back("cosine " + format(r.metrics.cosine) + " < " + format(*t.cosine));
  }
  if (t.routing_agreement && !(r.metrics.routing_agreement >= *t.routing_agreement)) {
    failures.push_back("routing_agreement " + format(r.metrics.routing_agreement) + " < " + format(*t.routing_agreement));
  }
  if (t.scheme_relative_l2 && !(r.metrics.scheme_relative_l2 <= *t.scheme_relative_l2)) {
    failures.push_back("scheme_relative_l2 " + format(r.metrics.scheme_relative_l2) + " > " + format(*t.scheme_relative_l2));
  }
  if (t.scheme_token_relative_l2 && !(r.metrics.scheme_token_relative_l2 <= *t.scheme_token_relative_l2)) {
    failures.push_back("scheme_token_relative_l2 " + format(r.metrics.scheme_token_relative_l2) + " > " +
                       format(*t.scheme_token_relative_l2));
  }
  std::string message;
  for (const auto& f : failures) message += (message.empty() ? "" : "; ") + f;
  return finish(failures.empty() ? EvalStatus::passed : EvalStatus::failed, message);
}

}  // namespace mxmoe
