// safetensors files: a memory-mapped, fully validated reader, sharded checkpoints, and a writer.
//
// Layout of a file: 8 bytes little-endian header length N, N bytes of JSON header
// {"name": {"dtype": "...", "shape": [...], "data_offsets": [begin, end]}, "__metadata__": {...}},
// then the data section; offsets are relative to the data section.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace mxmoe {

// A malformed or unexpected file. The message names the file, the tensor when there is one, and
// the problem.
class FormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class DType { F64, F32, F16, BF16, I64, I32, I16, I8, U8, BOOL, F8_E4M3, F8_E5M2 };

std::string_view dtype_name(DType dtype);
std::optional<DType> parse_dtype(std::string_view name);
size_t dtype_size(DType dtype);

struct TensorInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // offsets in the data section
  uint64_t end = 0;

  int64_t numel() const;
  uint64_t bytes() const { return end - begin; }
  std::string shape_string() const;  // "[32, 5760, 90, 16]"
};

class MappedFile;

// One .safetensors file, memory-mapped. Everything is validated when it is opened: header length
// within the file, JSON that parses, known dtypes, shapes of non-negative dims, offsets inside the
// data section that tile it without overlaps or gaps, sizes equal to shape x dtype size, and no
// duplicate names. Every problem throws FormatError.
class SafetensorsFile {
 public:
  static SafetensorsFile open(const std::filesystem::path& path);

  SafetensorsFile(SafetensorsFile&&) noexcept;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept;
  ~SafetensorsFile();

  const std::filesystem::path& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const TensorInfo* find(std::string_view name) const;
  std::span<const uint8_t> bytes(const TensorInfo& tensor) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsFile() = default;
  std::filesystem::path path_;
  std::unique_ptr<MappedFile> file_;
  const uint8_t* data_ = nullptr;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// A set of safetensors files seen as one: a single file, a directory of shards indexed by
// model.safetensors.index.json, or a directory of .safetensors files without an index.
class TensorStore {
 public:
  static TensorStore open(const std::filesystem::path& path);

  const std::filesystem::path& root() const { return root_; }      // the directory
  const std::filesystem::path& source() const { return source_; }  // the path it was opened from
  const std::vector<SafetensorsFile>& files() const { return files_; }
  bool has(std::string_view name) const;
  const TensorInfo& info(std::string_view name) const;  // FormatError naming the tensor when missing
  const SafetensorsFile& file_of(std::string_view name) const;
  std::span<const uint8_t> bytes(std::string_view name) const;
  std::vector<std::string> names() const;  // sorted

  // Reads a floating-point tensor (F32, F16 or BF16) as floats, checking its shape.
  std::vector<float> read_floats(std::string_view name, const std::vector<int64_t>& shape) const;
  // Reads a tensor of exactly `dtype` and shape as raw bytes.
  std::span<const uint8_t> read_raw(std::string_view name, DType dtype, const std::vector<int64_t>& shape) const;

 private:
  std::filesystem::path root_;
  std::filesystem::path source_;
  std::vector<SafetensorsFile> files_;
  std::map<std::string, size_t, std::less<>> where_;  // tensor name -> index in files_
};

// A tensor to write: its bytes are borrowed until write_safetensors returns.
struct TensorToWrite {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::span<const uint8_t> bytes;
};

// Writes one file (atomically: a temporary file renamed into place). Checks names are unique and
// sizes match shape x dtype.
void write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

// Writes model.safetensors.index.json for shards already written in `dir`.
void write_safetensors_index(const std::filesystem::path& dir, const std::map<std::string, std::string>& weight_map);

// Conversions used when reading and writing floating-point tensors.
std::vector<float> to_floats(DType dtype, std::span<const uint8_t> bytes);
std::vector<uint8_t> floats_to_bf16_bytes(std::span<const float> values);

template <class T>
std::span<const uint8_t> as_bytes_of(const std::vector<T>& v) {
  return {reinterpret_cast<const uint8_t*>(v.data()), v.size() * sizeof(T)};
}

}  // namespace mxmoe
