#include <iostream>
#include <nlohmann/json.hpp>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "mxmoe/oracle.hpp"

namespace mxmoe::cli {

namespace {

struct ExplainOptions {
  std::string device = "auto";
  std::string scheme;
  Problem problem;
  bool no_bias = false;
  std::string backend = "auto";
  bool json = false;
};

int run_explain(ExplainOptions o) {
  o.problem.scheme = scheme_or_throw(o.scheme);
  o.problem.bias = !o.no_bias;
  const DeviceSpec device = DeviceSpec::parse(o.device);
  try {
    const Decision d = select_backend(device, o.problem, resolve_forced_backend(o.backend));
    std::cout << (o.json ? d.to_json() + "\n" : d.to_table());
    return 0;
  } catch (const OracleError& e) {
    if (o.json) {
      auto j = nlohmann::ordered_json::parse(e.decision().to_json());
      j["error"] = e.what();
      std::cout << j.dump(2) << "\n";
    } else {
      std::cout << e.decision().to_table();
    }
    std::cerr << "mxmoe: error: " << e.what() << "\n";
    return 1;
  }
}

}  // namespace

void add_explain_command(CLI::App& app, Action& action) {
  auto o = std::make_shared<ExplainOptions>();
  auto* cmd = app.add_subcommand("explain", "Show which backend the oracle chooses, the padding plan, and why");
  cmd->add_option("--device", o->device, "auto, cpu, cpu:native, cpu:avx2, cpu:avx512, cpu:avx512bf16, sm_80 ... sm_120")
      ->capture_default_str();
  cmd->add_option("--scheme", o->scheme, "Quantization scheme: " + scheme_names())->required();
  cmd->add_option("--hidden", o->problem.hidden, "Hidden size H")->required()->check(positive_number());
  cmd->add_option("--intermediate", o->problem.intermediate, "Intermediate size I")->required()->check(positive_number());
  cmd->add_option("--experts", o->problem.experts, "Number of experts E")->required()->check(positive_number());
  cmd->add_option("--top-k", o->problem.top_k, "Experts per token k")->required()->check(positive_number());
  cmd->add_option("--tokens", o->problem.tokens, "Tokens per batch (a sizing hint)")->check(non_negative_number());
  cmd->add_flag("--no-bias", o->no_bias, "The layer has no biases");
  cmd->add_option("--backend", o->backend, "Force a backend by name (also MXMOE_BACKEND); auto lets the oracle choose")
      ->capture_default_str();
  cmd->add_flag("--json", o->json, "Print the decision as JSON");
  cmd->callback([o, &action] { action = [o] { return run_explain(*o); }; });
}

}  // namespace mxmoe::cli
