// Files as untrusted input and as outputs that must never be lost: bounded reads that refuse
// anything but a regular file (a FIFO would block forever), JSON with a nesting limit, and writes
// that replace a file or fill a folder whole or not at all.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "mxmoe/limits.hpp"

namespace mxmoe::io {

using limits::kMaxJsonDepth;
using limits::kMaxTextFileBytes;

// Opens without blocking, checks that it is a regular file, and reads it whole (at most max_bytes).
// Throws FormatError naming the file.
std::string read_text_file(const std::filesystem::path& path, uint64_t max_bytes = kMaxTextFileBytes);

// Parses JSON from an untrusted source, refusing nesting deeper than kMaxJsonDepth; `what` names the
// source in errors (FormatError). `on_top_level_key`, when given, sees each key of the top-level
// object as it is parsed (before nlohmann keeps only the last of duplicates).
nlohmann::json parse_json(std::string_view text, const std::string& what,
                          const std::function<void(const std::string&)>& on_top_level_key = {});
nlohmann::json read_json_file(const std::filesystem::path& path);

// A short description of a JSON value for error messages: its type and, for scalars, the value
// truncated; never a recursive dump of untrusted nesting.
std::string describe_json(const nlohmann::json& value);

// Refuses an output path that would destroy something: an existing path that is not a regular
// file (a folder, a device, a FIFO, a symbolic link), or one that is the same file as any of
// `inputs` of the same command. `flag` names the option in the error.
void check_output_file(const std::filesystem::path& output, const std::vector<std::filesystem::path>& inputs,
                       const std::string& flag);

// Writes a file through a temporary beside it (unique name), flushed to disk, then renamed over the
// target; on any failure the temporary is removed and the target is untouched. `write` fills
// the temporary through the open FILE and throws on failure.
void write_file_atomically(const std::filesystem::path& path, const std::function<void(std::FILE*)>& write);
void write_text_file_atomically(const std::filesystem::path& path, const std::string& text);

// Fills a new folder through a temporary folder beside it, renamed into place when `fill` returns:
// a killed or failed run leaves no half-written folder. The target must not exist, or be an empty
// folder; with `replace` an existing non-empty folder is replaced (it is removed only after the new
// one is complete).
void write_folder_atomically(const std::filesystem::path& folder, bool replace,
                             const std::function<void(const std::filesystem::path& temporary)>& fill);

}  // namespace mxmoe::io
