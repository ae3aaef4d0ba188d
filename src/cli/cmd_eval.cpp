#include <algorithm>
#include <cstdio>
#include <iostream>

#include "cli/commands.hpp"
#include "io/files.hpp"
#include "cli/progress.hpp"
#include "mxmoe/eval.hpp"
#include "mxmoe/gptoss.hpp"

namespace mxmoe::cli {

namespace {

struct EvalOptions {
  std::vector<std::string> paths;
  std::string checkpoint;  // replaces every config's model
  std::string junit;
  std::string output;  // the JSON report
  bool json = false;   // print the JSON report instead of the table
  bool allow_skipped = false;
};

// Exit code of a run in which every config was skipped: nothing was checked, which a CI job
// should not mistake for success (0) or for a failing config (1).
constexpr int kAllSkipped = 3;

int run_eval_command(const EvalOptions& o) {
  std::vector<std::filesystem::path> inputs(o.paths.begin(), o.paths.end());
  const auto files = expand_eval_paths(inputs);
  // Report paths are checked before the (long) run, against every config it reads.
  std::vector<std::filesystem::path> read(files.begin(), files.end());
  read.insert(read.end(), inputs.begin(), inputs.end());
  if (!o.junit.empty()) io::check_output_file(o.junit, read, "--junit");
  if (!o.output.empty()) io::check_output_file(o.output, read, "--output");
  // Every config is parsed before any runs: a malformed one stops the run at once.
  std::vector<EvalConfig> configs;
  for (const auto& f : files) configs.push_back(load_eval_config(f));
  if (!o.checkpoint.empty()) {
    GptOssCheckpoint::open(o.checkpoint);  // a wrong folder stops the run here, not in every config
    for (auto& c : configs) c.checkpoint = std::filesystem::absolute(o.checkpoint);
  }
  EvalModelCache cache;
  std::vector<EvalResult> results;
  {
    Progress progress("eval", static_cast<int64_t>(configs.size()));
    for (const auto& c : configs) {
      progress.step(c.name);
      results.push_back(run_eval(c, cache, [&](const std::string& step) { progress.step(c.name + ": " + step); }));
      const EvalResult& r = results.back();
      char line[512];
      std::snprintf(line, sizeof line, "[%zu/%zu] %s: %s (%.1f s)\n", results.size(), configs.size(), c.name.c_str(),
                    std::string(eval_status_name(r.status)).c_str(), r.seconds);
      progress.print(stderr, line);
      progress.advance();
    }
  }
  std::cout << (o.json ? eval_json(results) : eval_table(results));
  if (!o.junit.empty()) io::write_text_file_atomically(o.junit, eval_junit_xml(results));
  if (!o.output.empty()) io::write_text_file_atomically(o.output, eval_json(results));
  for (const auto& r : results) {
    if (r.status == EvalStatus::failed || r.status == EvalStatus::error) return 1;
  }
  const bool all_skipped = std::all_of(results.begin(), results.end(),
                                       [](const EvalResult& r) { return r.status == EvalStatus::skipped; });
  if (!results.empty() && all_skipped && !o.allow_skipped) {
    std::fprintf(stderr, "mxmoe eval: every config was skipped, so nothing was checked (exit %d); --allow-skipped "
                 "accepts that\n", kAllSkipped);
    return kAllSkipped;
  }
  return 0;
}

}  // namespace

void add_eval_command(CLI::App& app, Action& action) {
  auto o = std::make_shared<EvalOptions>();
  auto* cmd = app.add_subcommand("eval", "Run accuracy evals: YAML configs or lists of them (configs/evals/models-*.txt)");
  cmd->add_option("paths", o->paths, "Config files (.yaml) and lists of configs")->required();
  cmd->add_option("--checkpoint", o->checkpoint,
                  "Evaluate this gpt-oss checkpoint folder in every config, instead of the config's own model");
  cmd->add_option("--junit", o->junit, "Write JUnit XML here");
  cmd->add_option("--output", o->output, "Write the JSON report to this file");
  cmd->add_flag("--json", o->json, "Print the JSON report instead of the table");
  cmd->add_flag("--allow-skipped", o->allow_skipped,
                "Exit 0 when every config is skipped (by default such a run exits 3: nothing was checked)");
  cmd->callback([o, &action] { action = [o] { return run_eval_command(*o); }; });
}

}  // namespace mxmoe::cli
