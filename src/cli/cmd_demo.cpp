#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <string>

#include "cli/commands.hpp"
#include "mxmoe/moe.hpp"
#include "mxmoe/synth.hpp"

namespace mxmoe::cli {

namespace {

struct DemoOptions {
  std::string preset = "gpt-oss-20b";
  int tokens = 32;
  uint64_t seed = 1;
  std::string scheme = "w4a16";
};

int run_demo(const DemoOptions& o) {
  const auto preset = find_preset(o.preset);
  if (!preset) throw std::invalid_argument("unknown preset '" + o.preset + "'; known: " + preset_names());
  const auto scheme = parse_scheme(o.scheme);
  if (!scheme) throw std::invalid_argument("unknown scheme '" + o.scheme + "'; known: " + scheme_names());

  std::printf("mxmoe demo: random %s layer (%s), %d tokens, scheme %s, seed %llu\n", preset->name.c_str(),
              preset->shape.to_string().c_str(), o.tokens, o.scheme.c_str(),
              static_cast<unsigned long long>(o.seed));
  const auto t0 = std::chrono::steady_clock::now();
  const MoeLayer layer = random_layer(preset->shape, o.seed);
  const auto hidden = random_hidden(o.tokens, preset->shape.hidden, o.seed + 1);
  const auto t1 = std::chrono::steady_clock::now();
  std::printf("  layer: %.1f MB of weights, built in %.2f s\n", layer.weight_bytes() / 1e6,
              std::chrono::duration<double>(t1 - t0).count());

  const MoeOutput result = reference_forward(layer, hidden, o.tokens, *scheme);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();

  double sum_sq = 0.0, max_abs = 0.0;
  for (float v : result.output) {
    sum_sq += static_cast<double>(v) * v;
    max_abs = std::max(max_abs, static_cast<double>(std::fabs(v)));
  }
  std::vector<int> load(preset->shape.experts, 0);
  for (int id : result.routing.expert_ids) ++load[id];
  const auto [lo, hi] = std::minmax_element(load.begin(), load.end());
  const double flops = 2.0 * o.tokens * preset->shape.top_k *
                       (3.0 * preset->shape.hidden * preset->shape.intermediate);
  std::printf("  backend: reference (float64)  time %.3f s  (%.2f GFLOP/s)\n", seconds, flops / seconds / 1e9);
  std::printf("  output: rms %.6f  max|y| %.6f\n", std::sqrt(sum_sq / result.output.size()), max_abs);
  std::printf("  routing: tokens per expert min %d max %d; token 0 -> experts", *lo, *hi);
  for (int j = 0; j < preset->shape.top_k; ++j) {
    std::printf(" %d (%.3f)", result.routing.expert_ids[j], result.routing.weights[j]);
  }
  std::printf("\n");
  return 0;
}

}  // namespace

void add_demo_command(CLI::App& app, Action& action) {
  auto options = std::make_shared<DemoOptions>();
  auto* cmd = app.add_subcommand("demo", "Run a random gpt-oss-shaped MoE layer and print a short report");
  cmd->add_option("--preset", options->preset, "Model shape: " + preset_names())->capture_default_str();
  cmd->add_option("--tokens", options->tokens, "Number of tokens")->capture_default_str()->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--seed", options->seed, "Random seed")->capture_default_str();
  cmd->add_option("--scheme", options->scheme, "Quantization scheme: " + scheme_names())->capture_default_str();
  cmd->callback([options, &action] { action = [options] { return run_demo(*options); }; });
}

}  // namespace mxmoe::cli
