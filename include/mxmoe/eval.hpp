// Accuracy evals: YAML configs (one model + scheme + backend setting each), lists of them per
// architecture, and one runner that checks every config against the float64 reference.
// docs/EVALS.md describes the format.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "mxmoe/scheme.hpp"
#include "mxmoe/synth.hpp"

namespace mxmoe {

// A malformed config or list; the message names the file and the key.
class EvalConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct EvalThresholds {
  std::optional<double> relative_l2;        // at most
  std::optional<double> max_abs;            // at most
  std::optional<double> cosine;             // at least
  std::optional<double> routing_agreement;  // at least: fraction of tokens with the reference's expert set
  // At most: what the scheme itself costs, the relative L2 of its float64 reference against the
  // float64 reference with exact activations (w4a32), on the same routing.
  std::optional<double> scheme_relative_l2;
  // At most: the same cost for the worst single token (its output row), which a batch's relative L2,
  // weighted toward its largest tokens, hides.
  std::optional<double> scheme_token_relative_l2;
};

struct EvalConfig {
  std::filesystem::path file;
  std::string name;
  // The model: a checkpoint directory (relative to the config file), or a synthetic one.
  std::optional<std::filesystem::path> checkpoint;
  std::string synth_preset;
  uint64_t synth_seed = 1;
  int synth_layers = 1;
  int synth_experts = 0;  // 0: the preset's
  WeightDistribution synth_weights = WeightDistribution::normal;
  std::vector<int> layers;  // empty: every layer of the model
  Scheme scheme = Scheme::w4a16;
  std::string backend = "auto";
  std::string device = "any";  // any, cpu, cuda, sm_XY (exactly), sm_XY+ (at least)
  std::map<std::string, std::string> env;
  std::vector<int> tokens;
  uint64_t input_seed = 1;
  HiddenDistribution distribution = HiddenDistribution::normal;
  int pad_hidden_to = 0;
  int pad_intermediate_to = 0;
  EvalThresholds thresholds;
};

// Parses and validates a config: unknown keys, missing required keys and wrong types throw
// EvalConfigError naming the file and the key.
EvalConfig load_eval_config(const std::filesystem::path& file);

// Config files named by the arguments: a .yaml/.yml file is itself; any other file is a list of
// config paths (relative to the list), one a line, '#' starting a comment.
std::vector<std::filesystem::path> expand_eval_paths(const std::vector<std::filesystem::path>& paths);

enum class EvalStatus { passed, failed, skipped, error };
std::string_view eval_status_name(EvalStatus status);

// The worst over every layer and token count. The first four ask "is the kernel right?" (the
// backend against the float64 reference of the same scheme); scheme_relative_l2 and
// scheme_token_relative_l2 ask "what does the scheme cost?" (that reference against exact
// activations, over the batch and for its worst token).
struct EvalMetrics {
  double relative_l2 = 0;
  double max_abs = 0;
  double cosine = 1;
  double routing_agreement = 1;
  double scheme_relative_l2 = 0;
  double scheme_token_relative_l2 = 0;
};

struct EvalResult {
  std::filesystem::path file;
  std::string name;
  std::string model;  // "checkpoint DIR" or "synthetic PRESET seed N"
  EvalStatus status = EvalStatus::error;
  std::string message;  // why it failed, was skipped or errored
  std::string backend;
  std::string device;
  EvalMetrics metrics;
  EvalThresholds thresholds;
  double seconds = 0;
};

// Layers of models shared by configs in one run, so a list that evaluates a model under several
// schemes builds or loads it once.
class EvalModelCache {
 public:
  EvalModelCache();
  ~EvalModelCache();
  struct Impl;
  Impl& impl() { return *impl_; }

 private:
  std::unique_ptr<Impl> impl_;
};

// Told what a run is doing now ("layer 3: reference T=128"), for a progress display.
using EvalStepObserver = std::function<void(const std::string& step)>;

EvalResult run_eval(const EvalConfig& config, EvalModelCache& cache, const EvalStepObserver& on_step = {});

// Reports: a table for people, JUnit XML and JSON for CI.
std::string eval_table(const std::vector<EvalResult>& results);
std::string eval_junit_xml(const std::vector<EvalResult>& results);
std::string eval_json(const std::vector<EvalResult>& results);

}  // namespace mxmoe
