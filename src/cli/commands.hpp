// Each subcommand of the `mxmoe` executable lives in its own file and registers itself here.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>

namespace mxmoe::cli {

// A subcommand's action, run after parsing; it returns the process exit code.
using Action = std::function<int()>;

void add_demo_command(CLI::App& app, Action& action);
void add_explain_command(CLI::App& app, Action& action);
void add_synth_command(CLI::App& app, Action& action);
void add_inspect_command(CLI::App& app, Action& action);
void add_run_command(CLI::App& app, Action& action);
void add_quantize_command(CLI::App& app, Action& action);
void add_eval_command(CLI::App& app, Action& action);
void add_bench_command(CLI::App& app, Action& action);

}  // namespace mxmoe::cli
