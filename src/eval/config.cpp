#include <yaml-cpp/yaml.h>

#include <set>
#include <sstream>

#include "io/files.hpp"
#include "mxmoe/eval.hpp"
#include "mxmoe/limits.hpp"
#include "mxmoe/safetensors.hpp"

namespace mxmoe {

namespace {

// Reads one YAML mapping, naming the file and the dotted key path in every error, and refusing
// keys it was not told about.
class MapReader {
 public:
  MapReader(const std::filesystem::path& file, YAML::Node node, std::string path)
      : file_(file), node_(std::move(node)), path_(std::move(path)) {
    if (!node_.IsMap()) fail(path_.empty() ? "the config must be a mapping" : "'" + path_ + "' must be a mapping");
  }

  [[noreturn]] void fail(const std::string& what) const {
    throw EvalConfigError(file_.string() + ": " + what);
  }

  std::string key(const std::string& k) const { return path_.empty() ? k : path_ + "." + k; }

  void allow(std::initializer_list<const char*> keys) const {
    std::set<std::string> allowed(keys.begin(), keys.end());
    for (const auto& item : node_) {
      const std::string k = item.first.as<std::string>();
      if (!allowed.count(k)) {
        std::string list;
        for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
        fail("unknown key '" + key(k) + "' (allowed here: " + list + ")");
      }
    }
  }

  bool has(const char* k) const { return static_cast<bool>(node_[k]); }
  YAML::Node raw(const char* k) const { return node_[k]; }

  YAML::Node required(const char* k) const {
    if (!has(k)) fail("missing required key '" + key(k) + "'");
    return node_[k];
  }

  template <class T>
  T scalar(const char* k, const char* what) const {
    const YAML::Node n = required(k);
    if (!n.IsScalar()) fail("key '" + key(k) + "' must be " + what);
    try {
      return n.as<T>();
    } catch (const YAML::Exception&) {
      fail("key '" + key(k) + "' must be " + what + ", got '" + n.Scalar() + "'");
    }
  }

  template <class T>
  T scalar_or(const char* k, const char* what, T fallback) const {
    return has(k) ? scalar<T>(k, what) : fallback;
  }

  MapReader map(const char* k) const { return MapReader(file_, required(k), key(k)); }

  // An integer >= `minimum`, or a non-empty list of them.
  std::vector<int> ints(const char* k, int minimum) const {
    const YAML::Node n = required(k);
    std::vector<int> out;
    auto one = [&](const YAML::Node& v) {
      const std::string what = "integers >= " + std::to_string(minimum);
      int i = 0;
      try {
        i = v.as<int>();
      } catch (const YAML::Exception&) {
        fail("key '" + key(k) + "' must hold " + what);
      }
      if (i < minimum) fail("key '" + key(k) + "' must hold " + what + ", got " + std::to_string(i));
      out.push_back(i);
    };
    if (n.IsSequence()) {
      for (const auto& v : n) one(v);
    } else {
      one(n);
    }
    if (out.empty()) fail("key '" + key(k) + "' must not be empty");
    return out;
  }

 private:
  const std::filesystem::path& file_;
  YAML::Node node_;
  std::string path_;
};

std::optional<double> threshold(const MapReader& m, const char* k) {
  if (!m.has(k)) return std::nullopt;
  const double v = m.scalar<double>(k, "a number");
  if (!(v >= 0)) m.fail("key '" + m.key(k) + "' must be a non-negative number");
  return v;
}

void check_device_requirement(const MapReader& m, const std::string& device) {
  if (device == "any" || device == "cpu" || device == "cuda") return;
  std::string sm = device;
  if (!sm.empty() && sm.back() == '+') sm.pop_back();
  if (sm.rfind("sm_", 0) == 0 && sm.size() > 3 && sm.find_first_not_of("0123456789", 3) == std::string::npos) return;
  m.fail("key 'device' must be any, cpu, cuda, sm_XY or sm_XY+ (at least), got '" + device + "'");
}

}  // namespace

namespace {

// A config or list file, read as untrusted input (io::read_text_file), its errors as config errors.
std::string read_config_text(const std::filesystem::path& file) {
  try {
    return io::read_text_file(file);
  } catch (const FormatError& e) {
    throw EvalConfigError(e.what());
  }
}

EvalConfig parse_eval_config(const std::filesystem::path& file, const YAML::Node& root) {
  const MapReader top(file, root, "");
  top.allow({"name", "model", "layers", "scheme", "backend", "device", "env", "input", "padding", "metrics"});

  EvalConfig c;
  c.file = file;
  c.name = top.scalar<std::string>("name", "a string");

  const MapReader model = top.map("model");
  model.allow({"checkpoint", "synth"});
  if (model.has("checkpoint") == model.has("synth")) model.fail("'model' needs exactly one of 'checkpoint' or 'synth'");
  if (model.has("checkpoint")) {
    const std::filesystem::path p = model.scalar<std::string>("checkpoint", "a path");
    c.checkpoint = p.is_absolute() ? p : file.parent_path() / p;
  } else {
    const MapReader synth = model.map("synth");
    synth.allow({"preset", "seed", "layers", "experts", "weights"});
    c.synth_preset = synth.scalar<std::string>("preset", "a preset name");
    if (!find_preset(c.synth_preset)) {
      synth.fail("key 'model.synth.preset' names unknown preset '" + c.synth_preset + "' (known: " + preset_names() + ")");
    }
    c.synth_seed = synth.scalar_or<uint64_t>("seed", "an unsigned integer", 1);
    c.synth_layers = synth.scalar_or<int>("layers", "an integer", 1);
    c.synth_experts = synth.scalar_or<int>("experts", "an integer", 0);
    if (c.synth_layers <= 0 || c.synth_layers > limits::kMaxLayers) {
      synth.fail("key 'model.synth.layers' must be from 1 to " + std::to_string(limits::kMaxLayers));
    }
    if (c.synth_experts < 0) synth.fail("key 'model.synth.experts' must not be negative");
    const std::string weights = synth.scalar_or<std::string>("weights", "normal or spread", "normal");
    const auto w = parse_weight_distribution(weights);
    if (!w) synth.fail("key 'model.synth.weights' must be normal or spread, got '" + weights + "'");
    c.synth_weights = *w;
  }

  if (top.has("layers")) c.layers = top.ints("layers", 0);

  const auto scheme = parse_scheme(top.scalar<std::string>("scheme", "a scheme name"));
  if (!scheme) top.fail("key 'scheme' must be one of " + scheme_names());
  c.scheme = *scheme;
  c.backend = top.scalar_or<std::string>("backend", "a backend name or auto", "auto");
  c.device = top.scalar_or<std::string>("device", "a device requirement", "any");
  check_device_requirement(top, c.device);

  if (top.has("env")) {
    const YAML::Node env = top.raw("env");
    if (!env.IsMap()) top.fail("key 'env' must be a mapping of variable names to values");
    for (const auto& item : env) {
      if (!item.second.IsScalar()) top.fail("key 'env." + item.first.as<std::string>() + "' must be a string");
      c.env[item.first.as<std::string>()] = item.second.as<std::string>();
    }
  }

  const MapReader input = top.map("input");
  input.allow({"tokens", "seed", "distribution"});
  c.tokens = input.ints("tokens", 1);
  for (int t : c.tokens) {
    if (t > limits::kMaxTokens) input.fail("key 'input.tokens' has " + std::to_string(t) + ", above the limit of " + std::to_string(limits::kMaxTokens));
  }
  c.input_seed = input.scalar_or<uint64_t>("seed", "an unsigned integer", 1);
  const std::string distribution =
      input.scalar_or<std::string>("distribution", "normal, heavy or token_norms", "normal");
  const auto d = parse_distribution(distribution);
  if (!d) input.fail("key 'input.distribution' must be normal, heavy or token_norms, got '" + distribution + "'");
  c.distribution = *d;

  if (top.has("padding")) {
    const MapReader padding = top.map("padding");
    padding.allow({"hidden", "intermediate"});
    c.pad_hidden_to = padding.scalar_or<int>("hidden", "an integer", 0);
    c.pad_intermediate_to = padding.scalar_or<int>("intermediate", "an integer", 0);
    if (c.pad_hidden_to < 0 || c.pad_intermediate_to < 0) padding.fail("padding alignments must not be negative");
  }

  const MapReader metrics = top.map("metrics");
  metrics.allow({"relative_l2", "max_abs", "cosine", "routing_agreement", "scheme_relative_l2", "scheme_token_relative_l2"});
  c.thresholds = {threshold(metrics, "relative_l2"),        threshold(metrics, "max_abs"),
                  threshold(metrics, "cosine"),             threshold(metrics, "routing_agreement"),
                  threshold(metrics, "scheme_relative_l2"), threshold(metrics, "scheme_token_relative_l2")};
  if (!c.thresholds.relative_l2 && !c.thresholds.max_abs && !c.thresholds.cosine && !c.thresholds.routing_agreement &&
      !c.thresholds.scheme_relative_l2 && !c.thresholds.scheme_token_relative_l2) {
    metrics.fail("'metrics' needs at least one threshold (relative_l2, max_abs, cosine, routing_agreement, "
                 "scheme_relative_l2, scheme_token_relative_l2)");
  }
  return c;
}

}  // namespace

EvalConfig load_eval_config(const std::filesystem::path& file) {
  const std::string text = read_config_text(file);
  // Every yaml-cpp error, while parsing or while reading odd nodes (a key that is not a scalar),
  // becomes the documented config error naming the file.
  try {
    return parse_eval_config(file, YAML::Load(text));
  } catch (const YAML::Exception& e) {
    throw EvalConfigError(file.string() + ": invalid YAML: " + e.what());
  }
}

std::vector<std::filesystem::path> expand_eval_paths(const std::vector<std::filesystem::path>& paths) {
  std::vector<std::filesystem::path> configs;
  for (const auto& p : paths) {
    std::error_code error;
    const auto status = std::filesystem::status(p, error);
    if (std::filesystem::is_directory(status)) {
      throw EvalConfigError(p.string() + ": is a folder; give config files (.yaml) or lists of them (.txt), such as " +
                            (p / "models-cpu.txt").string());
    }
    if (!std::filesystem::exists(status)) throw EvalConfigError(p.string() + ": no such file");
    if (!std::filesystem::is_regular_file(status)) throw EvalConfigError(p.string() + ": not a regular file");
    const auto ext = p.extension();
    if (ext == ".yaml" || ext == ".yml") {
      configs.push_back(p);
      continue;
    }
    std::istringstream in(read_config_text(p));
    std::string line;
    for (int number = 1; std::getline(in, line); ++number) {
      const auto hash = line.find('#');
      if (hash != std::string::npos) line.erase(hash);
      const auto first = line.find_first_not_of(" \t\r");
      if (first == std::string::npos) continue;
      line = line.substr(first, line.find_last_not_of(" \t\r") - first + 1);
      const std::filesystem::path config = p.parent_path() / line;
      if (!std::filesystem::is_regular_file(config)) {
        throw EvalConfigError(p.string() + ":" + std::to_string(number) + ": no config file '" + line + "'");
      }
      configs.push_back(config);
    }
  }
  return configs;
}

}  // namespace mxmoe
