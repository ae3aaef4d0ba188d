#include <cstdio>

#include "cli/commands.hpp"
#include "cli/progress.hpp"
#include "mxmoe/gptoss.hpp"

namespace mxmoe::cli {

namespace {

struct QuantizeOptions {
  std::string input;
  std::string output;
  bool force = false;
};

int run_quantize(const QuantizeOptions& o) {
  Progress progress("quantize: tensor");
  const QuantizeSummary summary =
      quantize_checkpoint(o.input, o.output, o.force, [&](const std::string& step, int64_t done, int64_t total) {
        progress.set_progress(done, total);
        progress.step(step);
      });
  progress.print(stdout, "quantized " + std::to_string(summary.expert_tensors) + " expert tensors to MXFP4, " +
                             std::to_string(summary.tensors) + " tensors in all\n");
  std::printf("wrote %s\n", o.output.c_str());
  return 0;
}

}  // namespace

void add_quantize_command(CLI::App& app, Action& action) {
  auto o = std::make_shared<QuantizeOptions>();
  auto* cmd = app.add_subcommand("quantize", "Convert a bf16 gpt-oss checkpoint's expert weights to MXFP4 blocks and scales");
  cmd->add_option("--checkpoint", o->input, "bf16 checkpoint directory (HF layout: experts.gate_up_proj [E,H,2I], down_proj [E,I,H])")
      ->required();
  cmd->add_option("--output", o->output, "Output directory (new or empty; written whole or not at all)")->required();
  cmd->add_flag("--force", o->force, "Replace a non-empty output directory (only once the new one is complete)");
  cmd->callback([o, &action] { action = [o] { return run_quantize(*o); }; });
}

}  // namespace mxmoe::cli
