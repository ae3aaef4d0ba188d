#include <algorithm>
#include <nlohmann/json.hpp>
#include <set>

#include "io/files.hpp"
#include "mxmoe/safetensors.hpp"

namespace mxmoe {

namespace {

// Without an index, a Hugging Face folder is one model.safetensors: other .safetensors files beside
// it (an earlier output, a stray copy) are not part of the checkpoint and are never read.
std::filesystem::path single_file_in(const std::filesystem::path& dir) {
  const auto file = dir / "model.safetensors";
  if (std::filesystem::exists(file)) return file;
  std::vector<std::string> others;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() == ".safetensors") others.push_back(entry.path().filename().string());
  }
  std::sort(others.begin(), others.end());
  std::string listed;
  for (size_t i = 0; i < others.size() && i < 5; ++i) listed += (i ? ", " : "") + others[i];
  throw FormatError(dir.string() + ": no model.safetensors and no model.safetensors.index.json" +
                    (others.empty() ? std::string() : " (found " + listed + (others.size() > 5 ? ", ..." : "") +
                                                          "; shards need an index naming them)"));
}

}  // namespace

TensorStore TensorStore::open(const std::filesystem::path& path) {
  TensorStore store;
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) throw FormatError(path.string() + ": no such file or directory");
  std::vector<std::filesystem::path> shards;
  std::map<std::string, std::string> index_map;
  const bool is_dir = std::filesystem::is_directory(path);
  store.source_ = path;
  store.root_ = is_dir ? path : (path.has_parent_path() ? path.parent_path() : std::filesystem::path("."));
  const auto index_path = store.root_ / "model.safetensors.index.json";
  if (!is_dir) {
    shards.push_back(path);
  } else if (std::filesystem::exists(index_path)) {
    const nlohmann::json index = io::read_json_file(index_path);
    if (!index.is_object() || !index.contains("weight_map") || !index["weight_map"].is_object()) {
      throw FormatError(index_path.string() + ": has no \"weight_map\" object");
    }
    std::set<std::string> shard_names;
    for (auto it = index["weight_map"].begin(); it != index["weight_map"].end(); ++it) {
      if (!it.value().is_string()) throw FormatError(index_path.string() + ": shard of tensor '" + it.key() + "' is not a string");
      const std::string shard = it.value().get<std::string>();
      if (shard.find('/') != std::string::npos || shard == "..") {
        throw FormatError(index_path.string() + ": shard '" + shard + "' of tensor '" + it.key() + "' is not a file name");
      }
      index_map[it.key()] = shard;
      shard_names.insert(shard);
    }
    for (const auto& s : shard_names) {
      if (!std::filesystem::exists(store.root_ / s)) {
        throw FormatError(index_path.string() + ": names shard '" + s + "', which does not exist");
      }
      shards.push_back(store.root_ / s);
    }
  } else {
    shards.push_back(single_file_in(path));
  }

  for (const auto& shard : shards) {
    store.files_.push_back(SafetensorsFile::open(shard));
    const size_t file_index = store.files_.size() - 1;
    for (const auto& t : store.files_.back().tensors()) {
      const auto [it, inserted] = store.where_.emplace(t.name, file_index);
      if (!inserted) {
        throw FormatError(shard.string() + ": tensor '" + t.name + "' is also in " +
                          store.files_[it->second].path().string());
      }
    }
  }
  for (const auto& [name, shard] : index_map) {
    const auto it = store.where_.find(name);
    if (it == store.where_.end() || store.files_[it->second].path().filename() != shard) {
      throw FormatError(index_path.string() + ": tensor '" + name + "' is indexed in '" + shard + "' but is not there");
    }
  }
  return store;
}

bool TensorStore::has(std::string_view name) const { return where_.find(name) != where_.end(); }

const SafetensorsFile& TensorStore::file_of(std::string_view name) const {
  const auto it = where_.find(name);
  if (it == where_.end()) throw FormatError(source_.string() + ": tensor '" + std::string(name) + "' is missing");
  return files_[it->second];
}

const TensorInfo& TensorStore::info(std::string_view name) const { return *file_of(name).find(name); }

std::span<const uint8_t> TensorStore::bytes(std::string_view name) const {
  const auto& f = file_of(name);
  return f.bytes(*f.find(name));
}

std::vector<std::string> TensorStore::names() const {
  std::vector<std::string> n;
  for (const auto& [name, _] : where_) n.push_back(name);
  return n;
}

namespace {

void check_shape(const SafetensorsFile& file, const TensorInfo& t, const std::vector<int64_t>& shape) {
  if (t.shape != shape) {
    TensorInfo expected;
    expected.shape = shape;
    throw FormatError(file.path().string() + ": tensor '" + t.name + "' has shape " + t.shape_string() + ", expected " +
                      expected.shape_string());
  }
}

}  // namespace

std::vector<float> TensorStore::read_floats(std::string_view name, const std::vector<int64_t>& shape) const {
  const auto& file = file_of(name);
  const TensorInfo& t = *file.find(name);
  if (t.dtype != DType::F32 && t.dtype != DType::BF16 && t.dtype != DType::F16) {
    throw FormatError(file.path().string() + ": tensor '" + t.name + "' has dtype " + std::string(dtype_name(t.dtype)) +
                      ", expected a floating-point dtype (F32, F16 or BF16)");
  }
  check_shape(file, t, shape);
  return to_floats(t.dtype, file.bytes(t));
}

std::span<const uint8_t> TensorStore::read_raw(std::string_view name, DType dtype, const std::vector<int64_t>& shape) const {
  const auto& file = file_of(name);
  const TensorInfo& t = *file.find(name);
  if (t.dtype != dtype) {
    throw FormatError(file.path().string() + ": tensor '" + t.name + "' has dtype " + std::string(dtype_name(t.dtype)) +
                      ", expected " + std::string(dtype_name(dtype)));
  }
  check_shape(file, t, shape);
  return file.bytes(t);
}

}  // namespace mxmoe
