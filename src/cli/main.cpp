#include <exception>
#include <iostream>
#include <string>

#include "cli/commands.hpp"
#include "mxmoe/version.hpp"

int main(int argc, char** argv) {
  CLI::App app{"mxmoe: Mixture-of-Experts layers with MXFP4 expert weights (the gpt-oss format)"};
  app.set_version_flag("--version", std::string("mxmoe ") + mxmoe::kVersion);
  app.require_subcommand(0, 1);

  mxmoe::cli::Action action;
  mxmoe::cli::add_demo_command(app, action);
  mxmoe::cli::add_explain_command(app, action);
  mxmoe::cli::add_synth_command(app, action);
  mxmoe::cli::add_inspect_command(app, action);
  mxmoe::cli::add_run_command(app, action);
  mxmoe::cli::add_quantize_command(app, action);
  mxmoe::cli::add_eval_command(app, action);
  mxmoe::cli::add_bench_command(app, action);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version exit 0; every usage error exits 2, not CLI11's internal codes.
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (!action) {
    std::cout << app.help();
    return 2;
  }
  try {
    return action();
  } catch (const std::exception& e) {
    std::cerr << "mxmoe: error: " << e.what() << "\n";
    return 1;
  }
}
