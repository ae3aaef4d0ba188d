#include <cstdio>
#include <nlohmann/json.hpp>
#include <regex>

#include "cli/commands.hpp"
#include "io/files.hpp"
#include "mxmoe/format.hpp"
#include "mxmoe/safetensors.hpp"
#include "util/parallel.hpp"
#include "cli/progress.hpp"

namespace mxmoe::cli {

namespace {

struct QuantizeOptions {
  std::string input;
  std::string output;
  bool force = false;
};

// HF's dequantized experts multiply from the left: gate_up_proj is [E, H, 2I] and down_proj is
// [E, I, H]. MXFP4 rows run along the reduction dim, so each is transposed while it is quantized:
// gate_up_proj -> [E, 2I, H/32] blocks, down_proj -> [E, H, I/32] blocks.
struct QuantizedExperts {
  std::vector<uint8_t> blocks, scales;
  std::vector<int64_t> blocks_shape, scales_shape;
};

QuantizedExperts quantize_transposed(const SafetensorsFile& file, const TensorInfo& t) {
  if (t.shape.size() != 3) {
    throw FormatError(file.path().string() + ": tensor '" + t.name + "' has shape " + t.shape_string() +
                      ", expected [experts, in, out]");
  }
  if (t.dtype != DType::BF16 && t.dtype != DType::F32 && t.dtype != DType::F16) {
    throw FormatError(file.path().string() + ": tensor '" + t.name + "' has dtype " + std::string(dtype_name(t.dtype)) +
                      ", expected BF16, F16 or F32");
  }
  const int64_t E = t.shape[0], K = t.shape[1], N = t.shape[2];  // y = x[K] @ W[K, N]
  if (K % kMxBlock) {
    throw FormatError(file.path().string() + ": tensor '" + t.name + "': reduction dim " + std::to_string(K) +
                      " is not a multiple of the MXFP4 block 32");
  }
  QuantizedExperts q;
  q.blocks.resize(static_cast<size_t>(E * N * K / 2));
  q.scales.resize(static_cast<size_t>(E * N * K / kMxBlock));
  q.blocks_shape = {E, N, K / kMxBlock, kMxBlockBytes};
  q.scales_shape = {E, N, K / kMxBlock};
  const auto bytes = file.bytes(t);
  const size_t elem = dtype_size(t.dtype);
  detail::parallel_for(E * N, 0, 64, [&](int64_t begin, int64_t end) {
    std::vector<float> row(static_cast<size_t>(K));
    for (int64_t i = begin; i < end; ++i) {
      const int64_t e = i / N, n = i % N;
      for (int64_t k = 0; k < K; ++k) {
        const size_t at = static_cast<size_t>(((e * K + k) * N + n)) * elem;
        row[k] = to_floats(t.dtype, bytes.subspan(at, elem))[0];
      }
      try {
        quantize_mxfp4(row, {q.blocks.data() + i * K / 2, static_cast<size_t>(K / 2)},
                       {q.scales.data() + i * K / kMxBlock, static_cast<size_t>(K / kMxBlock)});
      } catch (const std::domain_error& err) {
        throw FormatError(file.path().string() + ": tensor '" + t.name + "', expert " + std::to_string(e) + ", output " +
                          std::to_string(n) + ": " + err.what());
      }
    }
  });
  return q;
}

// Writes the quantized checkpoint into `out_dir` (a temporary folder that becomes the output).
void write_quantized(const TensorStore& store, const nlohmann::json& config, const std::filesystem::path& out_dir) {
  const std::regex experts(R"(model\.layers\.\d+\.mlp\.experts\.(gate_up_proj|down_proj))");
  std::map<std::string, std::string> weight_map;
  size_t converted = 0;
  Progress progress("quantize: tensor", static_cast<int64_t>(store.names().size()));
  for (const auto& file : store.files()) {
    std::vector<TensorToWrite> tensors;
    std::vector<QuantizedExperts> owned;
    owned.reserve(file.tensors().size());
    for (const auto& t : file.tensors()) {
      if (std::regex_match(t.name, experts)) {
        owned.push_back(quantize_transposed(file, t));
        const auto& q = owned.back();
        tensors.push_back({t.name + "_blocks", DType::U8, q.blocks_shape, q.blocks});
        tensors.push_back({t.name + "_scales", DType::U8, q.scales_shape, q.scales});
        ++converted;
      } else {
        tensors.push_back({t.name, t.dtype, t.shape, file.bytes(t)});
      }
      progress.advance();
    }
    const std::string shard = file.path().filename().string();
    progress.step("writing " + shard);
    write_safetensors(out_dir / shard, tensors, file.metadata());
    for (const auto& t : tensors) weight_map[t.name] = shard;
  }
  if (converted == 0) {
    throw FormatError(store.root().string() + ": no bf16 expert tensors (model.layers.L.mlp.experts.gate_up_proj / down_proj)");
  }
  if (store.files().size() > 1) write_safetensors_index(out_dir, weight_map);
  io::write_text_file_atomically(out_dir / "config.json", config.dump(2) + "\n");
  progress.print(stdout, "quantized " + std::to_string(converted) + " expert tensors to MXFP4, " +
                             std::to_string(weight_map.size()) + " tensors in all\n");
}

int run_quantize(const QuantizeOptions& o) {
  const TensorStore store = TensorStore::open(o.input);
  const std::filesystem::path out_dir(o.output);
  if (std::filesystem::equivalent(store.root(), std::filesystem::absolute(out_dir).lexically_normal()) ||
      (std::filesystem::exists(out_dir) && std::filesystem::equivalent(store.root(), out_dir))) {
    throw std::invalid_argument("--output must differ from the input directory");
  }
  const auto config_path = store.root() / "config.json";
  if (!std::filesystem::exists(config_path)) throw FormatError(config_path.string() + ": missing (the quantized checkpoint needs it)");
  nlohmann::json config = io::read_json_file(config_path);
  if (!config.is_object()) throw FormatError(config_path.string() + ": not a JSON object");
  config["quantization_config"] = {{"quant_method", "mxfp4"},
                                   {"modules_to_not_convert", {"model.layers.*.self_attn", "model.layers.*.mlp.router",
                                                               "model.embed_tokens", "lm_head"}}};
  io::write_folder_atomically(out_dir, o.force, [&](const std::filesystem::path& dir) { write_quantized(store, config, dir); });
  std::printf("wrote %s\n", out_dir.string().c_str());
  return 0;
}

}  // namespace

void add_quantize_command(CLI::App& app, Action& action) {
  auto o = std::make_shared<QuantizeOptions>();
  auto* cmd = app.add_subcommand("quantize", "Convert a bf16 gpt-oss checkpoint's expert weights to MXFP4 blocks and scales");
  cmd->add_option("--checkpoint", o->input, "bf16 checkpoint directory (HF layout: experts.gate_up_proj [E,H,2I], down_proj [E,I,H])")
      ->required();
  cmd->add_option("--output", o->output, "Output directory (new or empty; written whole or not at all)")->required();
  cmd->add_flag("--force", o->force, "Replace a non-empty output directory (only once the new one is complete)");
  cmd->callback([o, &action] { action = [o] { return run_quantize(*o); }; });
}

}  // namespace mxmoe::cli
