// Shared by the fuzz harnesses: each libFuzzer input becomes files in a private temporary folder,
// since the readers under test take paths, as users' files do.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>

namespace mxmoe::fuzz {

inline const std::filesystem::path& scratch_folder() {
  static const std::filesystem::path folder = [] {
    auto p = std::filesystem::temp_directory_path() / ("mxmoe_fuzz_" + std::to_string(::getpid()));
    std::filesystem::create_directories(p);
    return p;
  }();
  return folder;
}

inline std::filesystem::path write_file(const std::string& name, const uint8_t* data, size_t size) {
  const auto path = scratch_folder() / name;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f) {
    if (size) std::fwrite(data, 1, size, f);
    std::fclose(f);
  }
  return path;
}

}  // namespace mxmoe::fuzz
