// A checkpoint's config.json, read in one place: the raw JSON (a converter writes it back with every
// key it does not know kept) and the gpt-oss fields validated from it (GptOssConfig::read).
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>

#include "mxmoe/gptoss.hpp"

namespace mxmoe::io {

// The file's JSON object; FormatError naming the file when it is missing or not an object.
nlohmann::json read_config_json(const std::filesystem::path& file);

// The gpt-oss fields of a config in `layout`; FormatError naming `file` and the key otherwise.
GptOssConfig gptoss_config_from_json(const nlohmann::json& config, const std::filesystem::path& file, GptOssLayout layout);

}  // namespace mxmoe::io
