#include "io/files.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <random>

#include "mxmoe/safetensors.hpp"

namespace mxmoe::io {

namespace {

[[noreturn]] void fail(const std::filesystem::path& path, const std::string& what) {
  throw FormatError(path.string() + ": " + what);
}

std::string unique_suffix() {
  static thread_local std::mt19937_64 rng{std::random_device{}() ^ static_cast<uint64_t>(::getpid())};
  char buf[32];
  std::snprintf(buf, sizeof buf, ".tmp-%d-%08llx", static_cast<int>(::getpid()),
                static_cast<unsigned long long>(rng() & 0xFFFFFFFFull));
  return buf;
}

void sync_folder_of(const std::filesystem::path& path) {
  const auto folder = path.has_parent_path() ? path.parent_path() : std::filesystem::path(".");
  const int fd = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

}  // namespace

std::string read_text_file(const std::filesystem::path& path, uint64_t max_bytes) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, "not a regular file");
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    ::close(fd);
    fail(path, std::to_string(st.st_size) + " bytes, more than the " + std::to_string(max_bytes) + "-byte limit for this file");
  }
  std::string text(static_cast<size_t>(st.st_size), '\0');
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::read(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      const int err = errno;
      ::close(fd);
      fail(path, n == 0 ? "shorter than its size (changed while read?)" : std::string("read failed: ") + std::strerror(err));
    }
    done += static_cast<size_t>(n);
  }
  ::close(fd);
  return text;
}

nlohmann::json parse_json(std::string_view text, const std::string& what,
                          const std::function<void(const std::string&)>& on_top_level_key) {
  int depth = 0;
  bool too_deep = false;
  auto callback = [&](int, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    if (event == nlohmann::json::parse_event_t::object_start || event == nlohmann::json::parse_event_t::array_start) {
      if (++depth > kMaxJsonDepth) too_deep = true;
    }
    if (event == nlohmann::json::parse_event_t::object_end || event == nlohmann::json::parse_event_t::array_end) --depth;
    if (event == nlohmann::json::parse_event_t::key && depth == 1 && on_top_level_key) {
      on_top_level_key(parsed.get<std::string>());
    }
    return !too_deep;  // false discards the value: no deep tree is built
  };
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text.begin(), text.end(), callback);
  } catch (const nlohmann::json::exception& e) {
    if (!too_deep) throw FormatError(what + ": not valid JSON: " + e.what());
  }
  if (too_deep) throw FormatError(what + ": JSON nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
  return j;
}

nlohmann::json read_json_file(const std::filesystem::path& path) { return parse_json(read_text_file(path), path.string()); }

std::string describe_json(const nlohmann::json& value) {
  switch (value.type()) {
    case nlohmann::json::value_t::object: return "an object of " + std::to_string(value.size()) + " entries";
    case nlohmann::json::value_t::array: return "an array of " + std::to_string(value.size()) + " elements";
    case nlohmann::json::value_t::string: {
      const std::string s = value.get<std::string>();
      return "the string \"" + (s.size() > 40 ? s.substr(0, 40) + "...\"" : s + "\"");
    }
    default: return value.dump();  // a scalar: a number, a boolean or null
  }
}

void check_output_file(const std::filesystem::path& output, const std::vector<std::filesystem::path>& inputs,
                       const std::string& flag) {
  std::error_code ec;
  const auto status = std::filesystem::symlink_status(output, ec);
  if (!ec && std::filesystem::exists(status)) {
    if (std::filesystem::is_symlink(status)) {
      throw std::invalid_argument(flag + " " + output.string() + " is a symbolic link; give the real path");
    }
    if (!std::filesystem::is_regular_file(status)) {
      throw std::invalid_argument(flag + " " + output.string() + " exists and is not a regular file");
    }
    for (const auto& input : inputs) {
      std::error_code same_ec;
      if (std::filesystem::equivalent(output, input, same_ec)) {
        throw std::invalid_argument(flag + " " + output.string() + " is an input of this command (" + input.string() +
                                    "); it would be overwritten");
      }
    }
  }
  const auto folder = output.has_parent_path() ? output.parent_path() : std::filesystem::path(".");
  if (!std::filesystem::is_directory(folder, ec)) {
    throw std::invalid_argument(flag + " " + output.string() + ": folder " + folder.string() + " does not exist");
  }
  if (::access(folder.c_str(), W_OK) != 0) {
    throw std::invalid_argument(flag + " " + output.string() + ": folder " + folder.string() + " is not writable");
  }
}

void write_file_atomically(const std::filesystem::path& path, const std::function<void(std::FILE*)>& write) {
  const std::filesystem::path temporary = path.string() + unique_suffix();
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error(temporary.string() + ": cannot create: " + std::strerror(errno));
  std::FILE* f = ::fdopen(fd, "wb");
  if (!f) {
    ::close(fd);
    std::filesystem::remove(temporary);
    throw std::runtime_error(temporary.string() + ": cannot open for writing");
  }
  try {
    write(f);
    if (std::fflush(f) != 0 || std::ferror(f)) throw std::runtime_error(std::strerror(errno));
    if (::fsync(::fileno(f)) != 0) throw std::runtime_error(std::string("fsync: ") + std::strerror(errno));
    if (std::fclose(f) != 0) {
      f = nullptr;
      throw std::runtime_error(std::strerror(errno));
    }
    f = nullptr;
    std::filesystem::rename(temporary, path);
  } catch (const std::exception& e) {
    if (f) std::fclose(f);
    std::error_code ec;
    std::filesystem::remove(temporary, ec);
    throw std::runtime_error(path.string() + ": write failed (" + e.what() + "); nothing was replaced");
  }
  sync_folder_of(path);
}

void write_text_file_atomically(const std::filesystem::path& path, const std::string& text) {
  write_file_atomically(path, [&](std::FILE* f) {
    if (std::fwrite(text.data(), 1, text.size(), f) != text.size()) throw std::runtime_error(std::strerror(errno));
  });
}

void write_folder_atomically(const std::filesystem::path& folder, bool replace,
                             const std::function<void(const std::filesystem::path& temporary)>& fill) {
  std::error_code ec;
  const auto status = std::filesystem::symlink_status(folder, ec);
  const bool exists = !ec && std::filesystem::exists(status);
  if (exists && !std::filesystem::is_directory(status)) {
    throw std::invalid_argument(folder.string() + " exists and is not a folder");
  }
  const bool non_empty = exists && !std::filesystem::is_empty(folder);
  if (non_empty && !replace) {
    throw std::invalid_argument(folder.string() + " is not empty; choose a new folder (or pass --force to replace it)");
  }
  const std::filesystem::path base = folder.has_filename() ? folder : folder.parent_path();
  const std::filesystem::path temporary = base.string() + unique_suffix();
  std::filesystem::create_directories(temporary);
  try {
    fill(temporary);
    if (exists) {
      const std::filesystem::path old = base.string() + unique_suffix();
      std::filesystem::rename(folder, old);
      std::filesystem::rename(temporary, folder);
      std::filesystem::remove_all(old, ec);
    } else {
      std::filesystem::rename(temporary, folder);
    }
  } catch (...) {
    std::filesystem::remove_all(temporary, ec);
    throw;
  }
  sync_folder_of(folder);
}

}  // namespace mxmoe::io
