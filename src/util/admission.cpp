#include "util/admission.hpp"

#include <sys/statvfs.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <stdexcept>

namespace mxmoe::detail {

namespace {

uint64_t read_number(const std::filesystem::path& file) {
  std::ifstream in(file);
  std::string word;
  if (!(in >> word) || word == "max") return UINT64_MAX;
  try {
    return std::stoull(word);
  } catch (...) {
    return UINT64_MAX;
  }
}

}  // namespace

uint64_t available_memory_bytes() {
  uint64_t available = UINT64_MAX;
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  uint64_t kb = 0;
  std::string unit;
  while (meminfo >> key >> kb >> unit) {
    if (key == "MemAvailable:") {
      available = kb * 1024;
      break;
    }
  }
  // cgroup v2: this process's group limit less what it already uses.
  const uint64_t limit = read_number("/sys/fs/cgroup/memory.max");
  const uint64_t used = read_number("/sys/fs/cgroup/memory.current");
  if (limit != UINT64_MAX && used != UINT64_MAX) available = std::min(available, limit > used ? limit - used : 0);
  return available;
}

std::string format_bytes(uint64_t bytes) {
  char buf[32];
  if (bytes >= (1ull << 30)) std::snprintf(buf, sizeof buf, "%.1f GiB", static_cast<double>(bytes) / (1ull << 30));
  else std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1ull << 20));
  return buf;
}

void admit_memory(uint64_t bytes, const std::string& what) {
  const uint64_t available = available_memory_bytes();
  if (bytes > available) {
    throw std::runtime_error(what + " needs about " + format_bytes(bytes) + " of memory, more than the " +
                             format_bytes(available) + " this process can use; refused before allocating");
  }
}

void admit_disk(const std::filesystem::path& path, uint64_t bytes, const std::string& what) {
  std::filesystem::path folder = std::filesystem::absolute(path);
  while (!folder.empty() && !std::filesystem::exists(folder)) folder = folder.parent_path();
  struct statvfs st {};
  if (folder.empty() || ::statvfs(folder.c_str(), &st) != 0) return;  // unknown: nothing to compare with
  const uint64_t free_bytes = static_cast<uint64_t>(st.f_bavail) * st.f_frsize;
  if (bytes > free_bytes) {
    throw std::runtime_error(what + " needs about " + format_bytes(bytes) + " of disk, more than the " +
                             format_bytes(free_bytes) + " free in " + folder.string() + "; refused before writing");
  }
}

}  // namespace mxmoe::detail
