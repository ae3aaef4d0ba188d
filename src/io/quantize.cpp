// A dense (bf16, f16 or f32) gpt-oss checkpoint in Hugging Face's layout converted to MXFP4.
#include <nlohmann/json.hpp>
#include <regex>

#include "io/config_json.hpp"
#include "io/files.hpp"
#include "mxmoe/format.hpp"
#include "mxmoe/gptoss.hpp"
#include "mxmoe/safetensors.hpp"
#include "util/parallel.hpp"

namespace mxmoe {

namespace {

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
  const size_t expert_bytes = static_cast<size_t>(K * N) * dtype_size(t.dtype);
  for (int64_t e = 0; e < E; ++e) {
    const std::vector<float> w = to_floats(t.dtype, bytes.subspan(static_cast<size_t>(e) * expert_bytes, expert_bytes));
    detail::parallel_for(N, 0, 64, [&](int64_t begin, int64_t end) {
      std::vector<float> row(static_cast<size_t>(K));
      for (int64_t n = begin; n < end; ++n) {
        for (int64_t k = 0; k < K; ++k) row[k] = w[static_cast<size_t>(k * N + n)];
        const int64_t i = e * N + n;
        try {
          quantize_mxfp4(row, {q.blocks.data() + i * K / 2, static_cast<size_t>(K / 2)},
                         {q.scales.data() + i * K / kMxBlock, static_cast<size_t>(K / kMxBlock)});
        } catch (const std::domain_error& err) {
          throw FormatError(file.path().string() + ": tensor '" + t.name + "', expert " + std::to_string(e) + ", output " +
                            std::to_string(n) + ": " + err.what());
        }
      }
    });
  }
  return q;
}

// Writes the quantized checkpoint into `out_dir` (a temporary folder that becomes the output).
QuantizeSummary write_quantized(const TensorStore& store, const nlohmann::json& config, const std::filesystem::path& out_dir,
                                const QuantizeProgress& progress) {
  const std::regex experts(R"(model\.layers\.\d+\.mlp\.experts\.(gate_up_proj|down_proj))");
  std::map<std::string, std::string> weight_map;
  QuantizeSummary summary;
  const auto total = static_cast<int64_t>(store.names().size());
  int64_t done = 0;
  for (const auto& file : store.files()) {
    std::vector<TensorToWrite> tensors;
    std::vector<QuantizedExperts> owned;
    owned.reserve(file.tensors().size());
    for (const auto& t : file.tensors()) {
      if (progress) progress(t.name, done, total);
      if (std::regex_match(t.name, experts)) {
        owned.push_back(quantize_transposed(file, t));
        const auto& q = owned.back();
        tensors.push_back({t.name + "_blocks", DType::U8, q.blocks_shape, q.blocks});
        tensors.push_back({t.name + "_scales", DType::U8, q.scales_shape, q.scales});
        ++summary.expert_tensors;
      } else {
        tensors.push_back({t.name, t.dtype, t.shape, file.bytes(t)});
      }
      ++done;
    }
    const std::string shard = file.path().filename().string();
    if (progress) progress("writing " + shard, done, total);
    write_safetensors(out_dir / shard, tensors, file.metadata());
    for (const auto& t : tensors) weight_map[t.name] = shard;
  }
  if (summary.expert_tensors == 0) {
    throw FormatError(store.root().string() +
                      ": no bf16 expert tensors (model.layers.L.mlp.experts.gate_up_proj / down_proj)");
  }
  if (store.files().size() > 1) write_safetensors_index(out_dir, weight_map);
  io::write_text_file_atomically(out_dir / "config.json", config.dump(2) + "\n");
  summary.tensors = static_cast<int>(weight_map.size());
  return summary;
}

}  // namespace

QuantizeSummary quantize_checkpoint(const std::filesystem::path& input, const std::filesystem::path& output, bool replace,
                                    const QuantizeProgress& progress) {
  const TensorStore store = TensorStore::open(input);
  // An output that does not exist yet is not the input; libstdc++ 13 on reports an error for it
  // (LWG 2937) where 12 returned false: the error_code form returns false on both.
  std::error_code output_not_there;
  if (std::filesystem::equivalent(store.root(), output, output_not_there)) {
    throw std::invalid_argument("the output must differ from the input directory");
  }
  const auto config_path = store.root() / "config.json";
  nlohmann::json config = io::read_config_json(config_path);
  io::gptoss_config_from_json(config, config_path, GptOssLayout::huggingface);  // a gpt-oss config, or refused now
  config["quantization_config"] = {{"quant_method", "mxfp4"},
                                   {"modules_to_not_convert", {"model.layers.*.self_attn", "model.layers.*.mlp.router",
                                                               "model.embed_tokens", "lm_head"}}};
  QuantizeSummary summary;
  io::write_folder_atomically(output, replace, [&](const std::filesystem::path& dir) {
    summary = write_quantized(store, config, dir, progress);
  });
  return summary;
}

}  // namespace mxmoe
