#include <cstdio>
#include <filesystem>

#include "cli/commands.hpp"
#include "cli/common.hpp"
#include "io/files.hpp"
#include "mxmoe/limits.hpp"
#include "util/admission.hpp"
#include "mxmoe/gptoss.hpp"
#include "cli/progress.hpp"

namespace mxmoe::cli {

namespace {

struct SynthOptions {
  std::string preset;
  int layers = 1;
  int experts = 0;
  uint64_t seed = 1;
  std::string layout = "huggingface";
  std::string weights = "normal";
  std::string out;
  bool force = false;
};

std::string shard_name(int index, int count) {
  if (count == 1) return "model.safetensors";
  char buf[64];
  std::snprintf(buf, sizeof buf, "model-%05d-of-%05d.safetensors", index + 1, count);
  return buf;
}

int run_synth(const SynthOptions& o) {
  const ModelPreset preset = preset_or_throw(o.preset);
  GptOssConfig config;
  config.layout = o.layout == "openai" ? GptOssLayout::openai : GptOssLayout::huggingface;
  config.shape = preset.shape;
  if (o.experts > 0) config.shape.experts = o.experts;
  if (config.shape.top_k > config.shape.experts) {
    throw std::invalid_argument("--experts " + std::to_string(config.shape.experts) + " is fewer than top-k " +
                                std::to_string(config.shape.top_k));
  }
  config.layers = o.layers;
  config.swiglu = preset.swiglu;

  const std::filesystem::path out(o.out);
  detail::admit_disk(out, static_cast<uint64_t>(config.layers) * layer_weight_bytes(config.shape),
                     "synth of " + std::to_string(config.layers) + " layer(s) of " + config.shape.to_string());
  uint64_t bytes = 0;
  io::write_folder_atomically(out, o.force, [&](const std::filesystem::path& dir) {
    std::map<std::string, std::string> weight_map;
    Progress progress("synth " + preset.name + ": layer", config.layers);
    for (int layer = 0; layer < config.layers; ++layer) {
      progress.step("generating");
      const MoeLayer m = random_layer(config.shape, o.seed, layer, *parse_weight_distribution(o.weights));
      const LayerTensors tensors = gptoss_layer_tensors(m, layer, config.layout);
      const std::string shard = shard_name(layer, config.layers);
      progress.step("writing " + shard);
      write_safetensors(dir / shard, tensors.tensors, {{"format", "pt"}, {"generator", "mxmoe synth"}});
      for (const auto& t : tensors.tensors) {
        weight_map[t.name] = shard;
        bytes += t.bytes.size();
      }
      progress.advance();
    }
    if (config.layers > 1) write_safetensors_index(dir, weight_map);
    io::write_text_file_atomically(dir / "config.json", config.to_json());
  });
  std::printf("wrote %s: %s layout, %d layer(s) of %s, %.1f MB, seed %llu\n", out.string().c_str(),
              std::string(layout_name(config.layout)).c_str(), config.layers, config.shape.to_string().c_str(), bytes / 1e6,
              static_cast<unsigned long long>(o.seed));
  return 0;
}

}  // namespace

void add_synth_command(CLI::App& app, Action& action) {
  auto o = std::make_shared<SynthOptions>();
  auto* cmd = app.add_subcommand("synth", "Write a random gpt-oss checkpoint (config.json + safetensors)");
  cmd->add_option("--preset", o->preset, "Model shape: " + preset_names())->required();
  cmd->add_option("--layers", o->layers, "MoE layers to write (one shard each)")->capture_default_str()->check(CLI::Range(1, static_cast<int>(limits::kMaxLayers)));
  cmd->add_option("--experts", o->experts, "Override the preset's number of experts")->check(CLI::Range(1, 4096));
  cmd->add_option("--seed", o->seed, "Random seed")->capture_default_str();
  cmd->add_option("--layout", o->layout, "huggingface or openai")->capture_default_str()->check(CLI::IsMember({"huggingface", "openai"}));
  cmd->add_option("--weights", o->weights,
                  "normal, or spread: block scales over 14-16 binades of a tensor (rows and blocks of different sizes)")
      ->capture_default_str()
      ->check(CLI::IsMember({"normal", "spread"}));
  cmd->add_option("--output", o->out, "Output directory (new or empty; written whole or not at all)")->required();
  cmd->add_flag("--force", o->force, "Replace a non-empty output directory (only once the new one is complete)");
  cmd->callback([o, &action] { action = [o] { return run_synth(*o); }; });
}

}  // namespace mxmoe::cli
