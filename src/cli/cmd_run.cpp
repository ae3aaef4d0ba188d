#include <chrono>
#include <cstdio>
#include <cstring>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "cli/progress.hpp"
#include "io/files.hpp"
#include "mxmoe/limits.hpp"
#include "util/admission.hpp"
#include "mxmoe/gptoss.hpp"
#include "mxmoe/runner.hpp"

namespace mxmoe::cli {

namespace {

struct RunOptions {
  std::string checkpoint;
  int layer = 0;
  std::string input;
  std::string output;
  std::string scheme = "w4a16";
  std::string backend = "auto";
  std::string device = "auto";
  int threads = 0;
  uint64_t seed = 1;
};

// "random:T" or a safetensors file with `hidden_states` [T, H] (F32 or BF16).
std::vector<float> read_input(const std::string& input, const MoeShape& shape, uint64_t seed, int& tokens) {
  const int hidden = shape.hidden;
  if (input.starts_with("random:")) {
    const std::string count = input.substr(7);
    char* end = nullptr;
    const long t = std::strtol(count.c_str(), &end, 10);
    if (count.empty() || *end != '\0' || t <= 0 || t > limits::kMaxTokens) {
      throw std::invalid_argument("--input " + input + ": expected random:T with T a token count from 1 to " +
                                  std::to_string(limits::kMaxTokens));
    }
    tokens = static_cast<int>(t);
    detail::admit_memory(forward_memory_bytes(shape, tokens) + 2 * layer_weight_bytes(shape),
                         "--input " + input + " (" + std::to_string(tokens) + " tokens through " + shape.to_string() + ")");
    return random_hidden(tokens, hidden, seed);
  }
  const TensorStore store = TensorStore::open(input);
  if (!store.has("hidden_states")) {
    throw FormatError(input + ": has no tensor 'hidden_states' (expected [tokens, " + std::to_string(hidden) + "])");
  }
  const TensorInfo& t = store.info("hidden_states");
  if (t.shape.size() != 2 || t.shape[1] != hidden) {
    throw FormatError(input + ": tensor 'hidden_states' has shape " + t.shape_string() + ", expected [tokens, " +
                      std::to_string(hidden) + "]");
  }
  tokens = static_cast<int>(t.shape[0]);
  return store.read_floats("hidden_states", t.shape);
}

std::filesystem::path checkpoint_folder(const std::filesystem::path& checkpoint) {
  return std::filesystem::is_directory(checkpoint) ? checkpoint
                                                   : (checkpoint.has_parent_path() ? checkpoint.parent_path() : ".");
}

int run_run(const RunOptions& o) {
  const Scheme scheme = scheme_or_throw(o.scheme);
  const DeviceSpec device = device_for_run(o.device, o.backend);
  const GptOssCheckpoint checkpoint = GptOssCheckpoint::open(o.checkpoint);
  const MoeShape& shape = checkpoint.config().shape;
  int tokens = 0;
  std::vector<std::filesystem::path> inputs;  // what --output must never overwrite
  for (const auto& entry : std::filesystem::directory_iterator(checkpoint_folder(o.checkpoint))) inputs.push_back(entry.path());
  if (!o.input.starts_with("random:")) inputs.push_back(o.input);
  io::check_output_file(o.output, inputs, "--output");
  Progress progress("run");
  progress.step("reading the input");
  const std::vector<float> hidden = read_input(o.input, shape, o.seed, tokens);
  progress.step("loading layer " + std::to_string(o.layer) + " and preparing the backend");
  const auto t0 = std::chrono::steady_clock::now();
  MoeRunner runner(std::make_shared<const MoeLayer>(checkpoint.load_layer(o.layer)), scheme, device,
                   {.backend = o.backend, .threads = o.threads});
  const auto t1 = std::chrono::steady_clock::now();
  progress.step(runner.decision().chosen + ": forward of " + std::to_string(tokens) + " tokens");
  const MoeOutput result = runner.forward(hidden, tokens);
  const auto t2 = std::chrono::steady_clock::now();
  progress.step("writing " + o.output);
  char timing[512];
  std::snprintf(timing, sizeof timing, "\nlayer %d of %s, %d tokens: load+prepare %.3f s, forward %.3f s\n", o.layer,
                o.checkpoint.c_str(), tokens, std::chrono::duration<double>(t1 - t0).count(),
                std::chrono::duration<double>(t2 - t1).count());
  progress.print(stdout, runner.decision().to_table() + timing);

  const int64_t T = tokens, H = shape.hidden, k = shape.top_k;
  write_safetensors(o.output,
                    {{"output", DType::F32, {T, H}, as_bytes_of(result.output)},
                     {"expert_ids", DType::I32, {T, k}, as_bytes_of(result.routing.expert_ids)},
                     {"expert_weights", DType::F32, {T, k}, as_bytes_of(result.routing.weights)}},
                    {{"backend", runner.decision().chosen},
                     {"scheme", std::string(scheme_name(scheme))},
                     {"layer", std::to_string(o.layer)}});
  progress.print(stdout, "wrote " + o.output + ": output [" + std::to_string(T) + ", " + std::to_string(H) +
                             "] F32, expert_ids and expert_weights [" + std::to_string(T) + ", " + std::to_string(k) + "]\n");
  return 0;
}

}  // namespace

void add_run_command(CLI::App& app, Action& action) {
  auto o = std::make_shared<RunOptions>();
  auto* cmd = app.add_subcommand("run", "Run one MoE layer of a gpt-oss checkpoint on a batch of hidden states");
  cmd->add_option("--checkpoint", o->checkpoint, "Checkpoint directory (config.json + safetensors)")->required();
  cmd->add_option("--layer", o->layer, "Layer index")->capture_default_str()->check(non_negative_number());
  cmd->add_option("--input", o->input, "safetensors file with hidden_states [T, H] (F32 or BF16), or random:T")->required();
  cmd->add_option("--output", o->output, "safetensors file to write: output, expert_ids, expert_weights")->required();
  cmd->add_option("--scheme", o->scheme, "w4a16, w4a8, w4a4, or w4a32 (exact fp32 activations)")->capture_default_str();
  cmd->add_option("--backend", o->backend, "A backend name, or auto (MXMOE_BACKEND also forces one)")->capture_default_str();
  cmd->add_option("--device", o->device, "auto, cpu:native, cuda, or a device of this machine")->capture_default_str();
  cmd->add_option("--threads", o->threads, "CPU threads (0: all)")->capture_default_str()->check(non_negative_number());
  cmd->add_option("--seed", o->seed, "Seed for random:T inputs")->capture_default_str();
  cmd->callback([o, &action] { action = [o] { return run_run(*o); }; });
}

}  // namespace mxmoe::cli
