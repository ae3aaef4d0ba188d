// `mxmoe bench`: a latency sweep over models, schemes and token counts on this machine, like
// llama-bench or `vllm bench latency`, with the ceiling it is compared with measured in the same run.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "cli/progress.hpp"
#include "io/files.hpp"
#include "mxmoe/gptoss.hpp"
#include "mxmoe/runner.hpp"
#include "mxmoe/version.hpp"

namespace mxmoe::cli {

namespace {

struct BenchOptions {
  std::vector<std::string> presets{"gpt-oss-20b"};
  std::string checkpoint;  // instead of the presets: one layer of this checkpoint
  int layer = 0;
  std::vector<std::string> schemes{"w4a16", "w4a8", "w4a4"};
  std::vector<int> tokens;  // empty: the device's default sweep
  int warmup = 3;
  int reps = 10;
  int batches = 4;
  uint64_t seed = 1;
  std::string backend = "auto";
  std::string device = "auto";
  int threads = 0;
  std::string output;  // .json or .csv
  bool json = false;
};

struct Model {
  std::string name;
  std::shared_ptr<const MoeLayer> layer;
};

struct Row {
  std::string model, scheme, backend, kernels;
  std::string timing;  // how the samples were taken
  int tokens = 0;
  double median_ms = 0, p90_ms = 0, min_ms = 0, mean_ms = 0;
  double experts_touched = 0;  // distinct experts per batch, averaged over the batches
  double tflops = 0, weight_gbs = 0, fraction_of_copy = 0;
  std::vector<double> samples_ms;
};

struct Skip {
  std::string model, scheme, reason;
};

// Nearest-rank percentile of sorted samples.
double percentile(const std::vector<double>& sorted, double p) {
  const size_t rank = static_cast<size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  return sorted[std::clamp<size_t>(rank, 1, sorted.size()) - 1];
}

Row measure(MoeRunner& runner, const Model& model, Scheme scheme, int tokens, const BenchOptions& o, double copy_gbs) {
  const MoeLayer& layer = *model.layer;
  const MoeShape& shape = layer.shape;
  Row row;
  row.model = model.name;
  row.scheme = scheme_name(scheme);
  row.backend = runner.decision().chosen;
  row.tokens = tokens;
  row.kernels = select_backend(runner.decision().device, Problem::for_layer(layer, scheme, tokens), runner.decision().forced)
                    .kernels;
  std::vector<float> hidden;
  for (int b = 0; b < o.batches; ++b) {
    const auto x = random_hidden(tokens, shape.hidden, o.seed * 1000003 + b);
    const Routing r = route(layer, x, tokens);
    row.experts_touched += static_cast<double>(std::set<int>(r.expert_ids.begin(), r.expert_ids.end()).size()) / o.batches;
    hidden.insert(hidden.end(), x.begin(), x.end());
  }
  const ForwardTiming timing = runner.time_forward(hidden, tokens, {.batches = o.batches, .warmup = o.warmup, .reps = o.reps});
  row.samples_ms = timing.ms;
  row.timing = timing.method;
  std::vector<double> sorted = timing.ms;
  std::sort(sorted.begin(), sorted.end());
  row.median_ms = percentile(sorted, 0.5);
  row.p90_ms = percentile(sorted, 0.9);
  row.min_ms = sorted.front();
  for (double ms : sorted) row.mean_ms += ms / static_cast<double>(sorted.size());
  const double seconds = row.median_ms * 1e-3;
  row.tflops = 2.0 * tokens * shape.top_k * 3.0 * shape.hidden * shape.intermediate / seconds / 1e12;
  const double expert_bytes =
      static_cast<double>(layer.gate_up.bytes() + layer.down.bytes() +
                          sizeof(float) * (layer.gate_up_bias.size() + layer.down_bias.size())) / shape.experts;
  row.weight_gbs = row.experts_touched * expert_bytes / seconds / 1e9;
  row.fraction_of_copy = row.weight_gbs / copy_gbs;
  return row;
}

std::string table(const std::vector<Row>& rows, const std::vector<Skip>& skips) {
  std::ostringstream out;
  char line[512];
  std::snprintf(line, sizeof line, "%-16s %-6s %-10s %6s %10s %10s %10s %9s %10s %8s  %s\n", "model", "scheme", "backend", "T",
                "median ms", "p90 ms", "tokens/s", "TFLOP/s", "weight GB/s", "of copy", "kernels");
  out << line;
  for (const Row& r : rows) {
    std::snprintf(line, sizeof line, "%-16s %-6s %-10s %6d %10.4f %10.4f %10.0f %9.2f %10.1f %7.0f%%  %s\n", r.model.c_str(),
                  r.scheme.c_str(), r.backend.c_str(), r.tokens, r.median_ms, r.p90_ms, r.tokens / (r.median_ms * 1e-3),
                  r.tflops, r.weight_gbs, 100 * r.fraction_of_copy, r.kernels.c_str());
    out << line;
  }
  for (const Skip& s : skips) out << s.model << " " << s.scheme << ": skipped: " << s.reason << "\n";
  return out.str();
}

nlohmann::ordered_json row_json(const Row& r) {
  return {{"model", r.model},
          {"scheme", r.scheme},
          {"backend", r.backend},
          {"kernels", r.kernels},
          {"tokens", r.tokens},
          {"median_ms", r.median_ms},
          {"p90_ms", r.p90_ms},
          {"min_ms", r.min_ms},
          {"mean_ms", r.mean_ms},
          {"tokens_per_s", r.tokens / (r.median_ms * 1e-3)},
          {"tflops", r.tflops},
          {"experts_touched", r.experts_touched},
          {"weight_gbs", r.weight_gbs},
          {"fraction_of_copy", r.fraction_of_copy},
          {"samples_ms", r.samples_ms}};
}

std::string csv(const std::vector<Row>& rows) {
  std::ostringstream out;
  out << "model,scheme,backend,kernels,tokens,median_ms,p90_ms,min_ms,mean_ms,tokens_per_s,tflops,experts_touched,"
         "weight_gbs,fraction_of_copy\n";
  for (const Row& r : rows) {
    const auto j = row_json(r);
    bool first = true;
    for (const auto& [key, value] : j.items()) {
      if (key == "samples_ms") continue;
      out << (first ? "" : ",") << (value.is_string() ? value.get<std::string>() : value.dump());
      first = false;
    }
    out << "\n";
  }
  return out.str();
}

std::vector<Model> models(const BenchOptions& o, Progress& progress) {
  std::vector<Model> out;
  if (!o.checkpoint.empty()) {
    progress.step("loading layer " + std::to_string(o.layer) + " of " + o.checkpoint);
    const GptOssCheckpoint checkpoint = GptOssCheckpoint::open(o.checkpoint);
    out.push_back({o.checkpoint + "#" + std::to_string(o.layer), std::make_shared<const MoeLayer>(checkpoint.load_layer(o.layer))});
    return out;
  }
  for (const auto& name : o.presets) {
    const ModelPreset preset = preset_or_throw(name);
    progress.step("building a random " + name + " layer");
    out.push_back({name, std::make_shared<const MoeLayer>(random_layer(preset.shape, o.seed))});
  }
  return out;
}

int run_bench(const BenchOptions& o) {
  if (!o.checkpoint.empty() && o.presets != BenchOptions{}.presets) {
    throw std::invalid_argument("--preset and --checkpoint name the model twice: give one of them");
  }
  std::vector<Scheme> schemes;
  for (const auto& s : o.schemes) schemes.push_back(scheme_or_throw(s));
  for (const auto& p : o.presets) preset_or_throw(p);
  if (!o.output.empty()) {
    if (!o.output.ends_with(".json") && !o.output.ends_with(".csv")) {
      throw std::invalid_argument("--output " + o.output + ": the name must end in .json or .csv (the format written)");
    }
    io::check_output_file(o.output, o.checkpoint.empty() ? std::vector<std::filesystem::path>{}
                                                         : std::vector<std::filesystem::path>{o.checkpoint},
                          "--output");
  }
  const DeviceSpec device = device_for_run(o.device, o.backend);
  // Decode sizes up to a prefill batch on a GPU; the CPU's default stops where a sweep stays short.
  const std::vector<int> tokens =
      !o.tokens.empty() ? o.tokens : device.kind == DeviceKind::cuda ? std::vector<int>{1, 4, 16, 64, 128, 1024, 8192}
                                                                       : std::vector<int>{1, 4, 16, 64, 128};
  std::vector<Row> rows;
  std::vector<Skip> skips;
  double copy_gbs = 0;
  {
    Progress progress("bench");
    const std::vector<Model> all = models(o, progress);
    for (const Model& model : all) {
      for (Scheme scheme : schemes) {
        const std::string label = model.name + " " + std::string(scheme_name(scheme));
        progress.step(label + ": preparing the backend");
        std::optional<MoeRunner> runner;
        try {
          runner.emplace(model.layer, scheme, device, RunnerOptions{.backend = o.backend, .threads = o.threads});
        } catch (const OracleError& e) {
          skips.push_back({model.name, std::string(scheme_name(scheme)), e.what()});
          continue;
        }
        if (copy_gbs == 0) {
          progress.step("measuring the copy bandwidth");
          copy_gbs = runner->copy_bandwidth_gbs();
        }
        for (int T : tokens) {
          progress.step(label + " T=" + std::to_string(T));
          rows.push_back(measure(*runner, model, scheme, T, o, copy_gbs));
        }
      }
    }
  }
  if (rows.empty()) throw std::runtime_error("nothing could run on " + device.id() + ": every scheme was skipped");
  const std::string& method = rows.front().timing;  // one device, one way of timing
  nlohmann::ordered_json report = {{"mxmoe_version", kVersion},
                                   {"device", device.id()},
                                   {"device_name", device.name},
                                   {"timing", method},
                                   {"warmup", o.warmup},
                                   {"reps", o.reps},
                                   {"batches", o.batches},
                                   {"copy_bandwidth_gbs", copy_gbs},
                                   {"runs", nlohmann::ordered_json::array()},
                                   {"skipped", nlohmann::ordered_json::array()}};
  for (const Row& r : rows) report["runs"].push_back(row_json(r));
  for (const Skip& s : skips) report["skipped"].push_back({{"model", s.model}, {"scheme", s.scheme}, {"reason", s.reason}});
  if (o.json) {
    std::cout << report.dump(2) << "\n";
  } else {
    std::printf("mxmoe bench on %s (%s): %s; median and p90 of %d repetitions after %d warm-up, %d batches in turn\n",
                device.id().c_str(), device.name.c_str(), method.c_str(), o.reps, o.warmup, o.batches);
    std::printf("copy bandwidth %.0f GB/s (read + write, same run): the ceiling of a weight-streaming layer\n\n", copy_gbs);
    std::cout << table(rows, skips);
  }
  if (!o.output.empty()) io::write_text_file_atomically(o.output, o.output.ends_with(".csv") ? csv(rows) : report.dump(2) + "\n");
  return 0;
}

}  // namespace

void add_bench_command(CLI::App& app, Action& action) {
  auto o = std::make_shared<BenchOptions>();
  auto* cmd = app.add_subcommand("bench", "Time MoE layers over token counts and schemes on this machine (median, p90, "
                                          "TFLOP/s, weight bandwidth against the same-run copy bandwidth)");
  cmd->add_option("--preset", o->presets, "Model shapes (comma-separated): " + preset_names())
      ->delimiter(',')
      ->capture_default_str();
  cmd->add_option("--checkpoint", o->checkpoint, "Benchmark a layer of this checkpoint instead of a random preset layer");
  cmd->add_option("--layer", o->layer, "The checkpoint's layer")->capture_default_str()->check(non_negative_number());
  cmd->add_option("--schemes", o->schemes, "Schemes (comma-separated): " + scheme_names())->delimiter(',')->capture_default_str();
  cmd->add_option("--tokens", o->tokens,
                  "Token counts (comma-separated); default 1,4,16,64,128,1024,8192 on a GPU, 1,4,16,64,128 on a CPU")
      ->delimiter(',')
      ->check(whole_number(1, 1 << 20));
  cmd->add_option("--warmup", o->warmup, "Untimed forwards before timing")->capture_default_str()->check(non_negative_number());
  cmd->add_option("--reps", o->reps, "Timed forwards per point")->capture_default_str()->check(positive_number());
  cmd->add_option("--batches", o->batches, "Different batches run in turn (so repeated runs do not just hit the cache)")
      ->capture_default_str()
      ->check(whole_number(1, 64));
  cmd->add_option("--seed", o->seed, "Seed of the random layer and batches")->capture_default_str();
  cmd->add_option("--backend", o->backend, "A backend name, or auto (MXMOE_BACKEND also forces one)")->capture_default_str();
  cmd->add_option("--device", o->device, "auto, cpu:native, cuda, or a device of this machine")->capture_default_str();
  cmd->add_option("--threads", o->threads, "CPU threads (0: all)")->capture_default_str()->check(non_negative_number());
  cmd->add_option("--output", o->output, "Also write the results here: FILE.json (every sample) or FILE.csv");
  cmd->add_flag("--json", o->json, "Print the JSON report instead of the table");
  cmd->callback([o, &action] { action = [o] { return run_bench(*o); }; });
}

}  // namespace mxmoe::cli
