#include <chrono>
#include <cstdio>
#include <string>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "cli/progress.hpp"
#include "mxmoe/metrics.hpp"
#include "mxmoe/runner.hpp"
#include "mxmoe/synth.hpp"

namespace mxmoe::cli {

namespace {

struct DemoOptions {
  std::string preset = "gpt-oss-20b";
  int tokens = 32;
  uint64_t seed = 1;
  std::string scheme = "w4a16";
  std::string backend = "auto";
  std::string device = "auto";
};

double seconds_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

// The main job on a built-in default: a random gpt-oss layer through the oracle's choice of
// backend on this machine, checked against the float64 reference.
int run_demo(const DemoOptions& o) {
  const ModelPreset preset = preset_or_throw(o.preset);
  const Scheme scheme = scheme_or_throw(o.scheme);
  const DeviceSpec device = device_for_run(o.device, o.backend);
  Progress progress("demo");
  auto say = [&](const char* format, auto... args) {
    char line[1024];
    std::snprintf(line, sizeof line, format, args...);
    progress.print(stdout, line);
  };
  say("mxmoe demo: random %s layer (%s), %d tokens, scheme %s, seed %llu\n", preset.name.c_str(),
      preset.shape.to_string().c_str(), o.tokens, o.scheme.c_str(), static_cast<unsigned long long>(o.seed));
  progress.step("building a random layer");
  auto t = std::chrono::steady_clock::now();
  const auto layer = std::make_shared<const MoeLayer>(random_layer(preset.shape, o.seed));
  const auto hidden = random_hidden(o.tokens, preset.shape.hidden, o.seed + 1);
  say("  layer: %.1f MB of MXFP4 weights, built in %.2f s\n\n", layer->weight_bytes() / 1e6, seconds_since(t));

  progress.step("preparing the backend");
  MoeRunner runner(layer, scheme, device, {.backend = o.backend});
  say("%s\n", runner.decision().to_table().c_str());
  const std::string& chosen = runner.decision().chosen;
  const bool is_reference = chosen == "reference";
  if (!is_reference) {
    progress.step(chosen + ": warm-up");
    runner.forward(hidden, o.tokens);  // first-call allocations
  }
  progress.step(chosen + ": forward");
  t = std::chrono::steady_clock::now();
  const MoeOutput out = runner.forward(hidden, o.tokens);
  const double backend_seconds = seconds_since(t);
  const double flops = 2.0 * o.tokens * preset.shape.top_k * 3.0 * preset.shape.hidden * preset.shape.intermediate;
  say("  %-10s %9.3f ms  %8.1f GFLOP/s\n", chosen.c_str(), backend_seconds * 1e3, flops / backend_seconds / 1e9);
  if (is_reference) {
    // The float64 reference is the ground truth itself: comparing it with itself would prove nothing.
    say("  (the chosen backend is the float64 reference: no second run to compare with)\n");
    return 0;
  }

  progress.step("float64 reference");
  t = std::chrono::steady_clock::now();
  const MoeOutput expected = reference_forward(*layer, hidden, o.tokens, scheme, {.routing = &out.routing});
  const double reference_seconds = seconds_since(t);
  say("  %-10s %9.3f ms  %8.1f GFLOP/s  (float64 ground truth, on the same routing)\n", "reference",
      reference_seconds * 1e3, flops / reference_seconds / 1e9);
  std::string experts;
  for (int j = 0; j < preset.shape.top_k; ++j) {
    char item[48];
    std::snprintf(item, sizeof item, " %d (%.3f)", out.routing.expert_ids[j], out.routing.weights[j]);
    experts += item;
  }
  say("  relative L2 error %.2e, max abs error %.2e; token 0 -> experts%s\n", relative_l2(out.output, expected.output),
      max_abs_diff(out.output, expected.output), experts.c_str());
  return 0;
}

}  // namespace

void add_demo_command(CLI::App& app, Action& action) {
  auto options = std::make_shared<DemoOptions>();
  auto* cmd = app.add_subcommand("demo", "Run a random gpt-oss-shaped MoE layer on this machine and check it against the reference");
  cmd->add_option("--preset", options->preset, "Model shape: " + preset_names())->capture_default_str();
  cmd->add_option("--tokens", options->tokens, "Number of tokens")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--seed", options->seed, "Random seed")->capture_default_str();
  cmd->add_option("--scheme", options->scheme, "Quantization scheme: " + scheme_names())->capture_default_str();
  cmd->add_option("--backend", options->backend, "A backend name, or auto (MXMOE_BACKEND also forces one)")
      ->capture_default_str();
  cmd->add_option("--device", options->device, "auto, cpu:native, cuda, or a device of this machine")->capture_default_str();
  cmd->callback([options, &action] { action = [options] { return run_demo(*options); }; });
}

}  // namespace mxmoe::cli
