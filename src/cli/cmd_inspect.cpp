#include <cstdio>
#include <map>

#include "cli/commands.hpp"
#include "mxmoe/gptoss.hpp"

namespace mxmoe::cli {

namespace {

void inspect_plain(const TensorStore& store) {
  uint64_t total = 0;
  for (const auto& name : store.names()) {
    const TensorInfo& t = store.info(name);
    std::printf("  %-60s %-8s %-22s %12llu B\n", name.c_str(), std::string(dtype_name(t.dtype)).c_str(),
                t.shape_string().c_str(), static_cast<unsigned long long>(t.bytes()));
    total += t.bytes();
  }
  std::printf("%zu tensors, %.1f MB in %zu file(s)\n", store.names().size(), total / 1e6, store.files().size());
}

int run_inspect(const std::string& path) {
  TensorStore store = TensorStore::open(path);
  if (!GptOssCheckpoint::detect_layout(store)) {
    std::printf("%s: safetensors without gpt-oss MoE tensors\n", path.c_str());
    inspect_plain(store);
    return 0;
  }
  const GptOssCheckpoint checkpoint = GptOssCheckpoint::from_store(std::move(store));
  const GptOssConfig& c = checkpoint.config();
  std::printf("%s: gpt-oss checkpoint, %s layout, %s experts, %zu file(s)\n", path.c_str(),
              std::string(layout_name(c.layout)).c_str(),
              c.bf16_experts ? "bf16 (dense: mxmoe quantize converts them to MXFP4)" : "MXFP4",
              checkpoint.store().files().size());
  std::printf("config: %s, %d layers, swiglu limit %g alpha %g\n", c.shape.to_string().c_str(), c.layers, c.swiglu.limit,
              c.swiglu.alpha);
  // Group tensors by MoE layer: "layer L: 8 tensors, N bytes".
  uint64_t total = 0;
  for (int layer = 0; layer < c.layers; ++layer) {
    uint64_t bytes = 0;
    std::printf("layer %d:\n", layer);
    for (const auto& name : GptOssTensorNames::of(c.layout, layer, c.bf16_experts).all()) {
      if (!checkpoint.store().has(name)) {
        std::printf("  %-52s missing\n", name.c_str());
        continue;
      }
      const TensorInfo& t = checkpoint.store().info(name);
      std::printf("  %-52s %-5s %-22s %12llu B\n", name.c_str(), std::string(dtype_name(t.dtype)).c_str(),
                  t.shape_string().c_str(), static_cast<unsigned long long>(t.bytes()));
      bytes += t.bytes();
    }
    total += bytes;
  }
  size_t others = 0;
  for (const auto& name : checkpoint.store().names()) {
    others += name.find(".mlp.") == std::string::npos;
  }
  std::printf("MoE tensors: %.1f MB; other tensors: %zu\n", total / 1e6, others);
  const auto problems = checkpoint.inconsistencies();
  if (problems.empty()) {
    std::printf("consistent: every MoE tensor matches the config\n");
    return 0;
  }
  std::printf("%zu inconsistenc%s:\n", problems.size(), problems.size() == 1 ? "y" : "ies");
  for (const auto& p : problems) std::printf("  %s\n", p.c_str());
  return 1;
}

}  // namespace

void add_inspect_command(CLI::App& app, Action& action) {
  auto path = std::make_shared<std::string>();
  auto* cmd = app.add_subcommand("inspect", "Show a checkpoint's layout, config, tensors per layer and inconsistencies");
  cmd->add_option("--checkpoint", *path, "Checkpoint directory or .safetensors file")->required();
  cmd->callback([path, &action] { action = [path] { return run_inspect(*path); }; });
}

}  // namespace mxmoe::cli
