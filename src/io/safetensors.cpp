#include "mxmoe/safetensors.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>

#include "io/files.hpp"
#include "io/mapped_file.hpp"
#include "util/checked.hpp"
#include "mxmoe/format.hpp"

namespace mxmoe {

namespace {

struct DTypeInfo {
  DType dtype;
  const char* name;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::F64, "F64", 8},    {DType::F32, "F32", 4},         {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2},  {DType::I64, "I64", 8},         {DType::I32, "I32", 4},
    {DType::I16, "I16", 2},    {DType::I8, "I8", 1},           {DType::U8, "U8", 1},
    {DType::BOOL, "BOOL", 1},  {DType::F8_E4M3, "F8_E4M3", 1}, {DType::F8_E5M2, "F8_E5M2", 1},
};

// Safetensors' own implementation refuses headers above 100 MB; so do we, before allocating.
using limits::kMaxHeaderBytes;

[[noreturn]] void fail(const std::filesystem::path& path, const std::string& what) {
  throw FormatError(path.string() + ": " + what);
}

std::string shape_to_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}


// Parses the header JSON (nesting limited), refusing duplicate tensor names (nlohmann would keep the
// last one).
nlohmann::json parse_header(const std::filesystem::path& path, std::string_view text) {
  std::set<std::string> seen;
  std::string duplicate;
  const nlohmann::json header = io::parse_json(text, path.string() + ": header", [&](const std::string& key) {
    if (!seen.insert(key).second) duplicate = key;
  });
  if (!duplicate.empty()) fail(path, "tensor '" + duplicate + "' appears twice in the header");
  if (!header.is_object()) fail(path, "header is not a JSON object");
  return header;
}

TensorInfo parse_entry(const std::filesystem::path& path, const std::string& name, const nlohmann::json& entry,
                       uint64_t data_size) {
  auto bad = [&](const std::string& what) { fail(path, "tensor '" + name + "': " + what); };
  if (!entry.is_object()) bad("entry is not an object");
  for (const char* key : {"dtype", "shape", "data_offsets"}) {
    if (!entry.contains(key)) bad(std::string("missing '") + key + "'");
  }
  TensorInfo t;
  t.name = name;
  if (!entry["dtype"].is_string()) bad("dtype is not a string");
  const auto dtype = parse_dtype(entry["dtype"].get<std::string>());
  if (!dtype) bad("unknown dtype '" + entry["dtype"].get<std::string>() + "'");
  t.dtype = *dtype;
  if (!entry["shape"].is_array()) bad("shape is not an array");
  for (const auto& d : entry["shape"]) {
    if (!d.is_number_integer() || d.get<int64_t>() < 0) bad("shape has a dim that is not a non-negative integer (" + io::describe_json(d) + ")");
    t.shape.push_back(d.get<int64_t>());
  }
  const auto& offsets = entry["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() || !offsets[1].is_number_unsigned()) {
    bad("data_offsets (" + io::describe_json(offsets) + ") is not a pair of non-negative integers");
  }
  t.begin = offsets[0].get<uint64_t>();
  t.end = offsets[1].get<uint64_t>();
  if (t.begin > t.end) bad("data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) + "] end before they begin");
  if (t.end > data_size) {
    bad("data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) + "] reach past the data section of " +
        std::to_string(data_size) + " bytes (truncated file?)");
  }
  // numel * dtype size == end - begin, in arithmetic that cannot wrap (a zero dim empties the shape
  // whatever the others are).
  uint64_t expected = dtype_size(t.dtype);
  bool overflow = false;
  for (int64_t d : t.shape) overflow |= __builtin_mul_overflow(expected, static_cast<uint64_t>(d), &expected);
  if (std::find(t.shape.begin(), t.shape.end(), 0) != t.shape.end()) {
    expected = 0;
    overflow = false;
  }
  if (overflow || expected != t.bytes()) {
    bad("holds " + std::to_string(t.bytes()) + " bytes, but shape " + shape_to_string(t.shape) + " of " +
        std::string(dtype_name(t.dtype)) + " needs " + (overflow ? std::string("more than 2^64") : std::to_string(expected)));
  }
  return t;
}

}  // namespace

std::string_view dtype_name(DType dtype) {
  for (const auto& d : kDTypes) {
    if (d.dtype == dtype) return d.name;
  }
  return "?";
}

std::optional<DType> parse_dtype(std::string_view name) {
  for (const auto& d : kDTypes) {
    if (name == d.name) return d.dtype;
  }
  return std::nullopt;
}

size_t dtype_size(DType dtype) {
  for (const auto& d : kDTypes) {
    if (d.dtype == dtype) return d.size;
  }
  return 0;
}

int64_t TensorInfo::numel() const {
  // A shape with a zero dim holds nothing, whatever the other dims; otherwise its product was
  // checked against the bytes it covers when the file was read, and fits.
  for (int64_t d : shape) {
    if (d == 0) return 0;
  }
  int64_t n = 1;
  for (int64_t d : shape) n = detail::checked_mul<int64_t>(n, d, "tensor '" + name + "' element count");
  return n;
}

std::string TensorInfo::shape_string() const { return shape_to_string(shape); }

SafetensorsFile::SafetensorsFile(SafetensorsFile&&) noexcept = default;
SafetensorsFile& SafetensorsFile::operator=(SafetensorsFile&&) noexcept = default;
SafetensorsFile::~SafetensorsFile() = default;

SafetensorsFile SafetensorsFile::open(const std::filesystem::path& path) {
  SafetensorsFile f;
  f.path_ = path;
  f.file_ = std::make_unique<MappedFile>(path);
  const uint64_t size = f.file_->size();
  if (size < 8) fail(path, "file of " + std::to_string(size) + " bytes is too short for the 8-byte header length");
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | f.file_->data()[i];
  if (header_len > kMaxHeaderBytes) fail(path, "header length " + std::to_string(header_len) + " exceeds the 100 MB limit");
  if (header_len > size - 8) {
    fail(path, "header length " + std::to_string(header_len) + " runs past the end of the " + std::to_string(size) +
                   "-byte file (truncated file?)");
  }
  const std::string_view text(reinterpret_cast<const char*>(f.file_->data() + 8), header_len);
  const nlohmann::json header = parse_header(path, text);
  f.data_ = f.file_->data() + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;

  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") {
      if (!it.value().is_object()) fail(path, "__metadata__ is not an object");
      for (auto m = it.value().begin(); m != it.value().end(); ++m) {
        if (!m.value().is_string()) fail(path, "__metadata__ value '" + m.key() + "' is not a string");
        f.metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    f.tensors_.push_back(parse_entry(path, it.key(), it.value(), data_size));
  }
  // The tensors must tile the data section exactly.
  std::vector<const TensorInfo*> by_offset;
  for (const auto& t : f.tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(), [](auto a, auto b) { return a->begin != b->begin ? a->begin < b->begin : a->end < b->end; });
  uint64_t cursor = 0;
  const TensorInfo* previous = nullptr;
  for (const TensorInfo* t : by_offset) {
    if (t->begin < cursor) {
      fail(path, "tensor '" + t->name + "' overlaps tensor '" + previous->name + "' (bytes " + std::to_string(t->begin) +
                     " to " + std::to_string(cursor) + ")");
    }
    if (t->begin > cursor) {
      fail(path, "bytes " + std::to_string(cursor) + " to " + std::to_string(t->begin) +
                     " of the data section belong to no tensor (before '" + t->name + "')");
    }
    cursor = t->end;
    previous = t;
  }
  if (cursor != data_size) {
    fail(path, "the data section has " + std::to_string(data_size) + " bytes but the tensors cover " +
                   std::to_string(cursor));
  }
  return f;
}

const TensorInfo* SafetensorsFile::find(std::string_view name) const {
  for (const auto& t : tensors_) {
    if (t.name == name) return &t;
  }
  return nullptr;
}

std::span<const uint8_t> SafetensorsFile::bytes(const TensorInfo& tensor) const {
  return {data_ + tensor.begin, tensor.bytes()};
}

std::vector<float> to_floats(DType dtype, std::span<const uint8_t> bytes) {
  const size_t n = bytes.size() / dtype_size(dtype);
  std::vector<float> out(n);
  switch (dtype) {
    case DType::F32:
      if (n > 0) std::memcpy(out.data(), bytes.data(), n * 4);
      break;
    case DType::BF16:
      for (size_t i = 0; i < n; ++i) out[i] = bf16_to_float(static_cast<uint16_t>(bytes[2 * i] | (bytes[2 * i + 1] << 8)));
      break;
    case DType::F16:
      for (size_t i = 0; i < n; ++i) out[i] = f16_to_float(static_cast<uint16_t>(bytes[2 * i] | (bytes[2 * i + 1] << 8)));
      break;
    default:
      throw std::invalid_argument("to_floats: " + std::string(dtype_name(dtype)) + " is not F32, F16 or BF16");
  }
  return out;
}

std::vector<uint8_t> floats_to_bf16_bytes(std::span<const float> values) {
  std::vector<uint8_t> out(values.size() * 2);
  for (size_t i = 0; i < values.size(); ++i) {
    const uint16_t b = float_to_bf16(values[i]);
    out[2 * i] = static_cast<uint8_t>(b & 0xFF);
    out[2 * i + 1] = static_cast<uint8_t>(b >> 8);
  }
  return out;
}

void write_safetensors(const std::filesystem::path& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::set<std::string> names;
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    if (!names.insert(t.name).second) throw std::invalid_argument("write_safetensors: tensor '" + t.name + "' given twice");
    uint64_t expected = dtype_size(t.dtype);
    for (int64_t d : t.shape) {
      if (d < 0) throw std::invalid_argument("write_safetensors: tensor '" + t.name + "' has a negative dim");
      expected *= static_cast<uint64_t>(d);
    }
    if (expected != t.bytes.size()) {
      throw std::invalid_argument("write_safetensors: tensor '" + t.name + "' has " + std::to_string(t.bytes.size()) +
                                  " bytes, shape " + shape_to_string(t.shape) + " needs " + std::to_string(expected));
    }
    header[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + expected}}};
    offset += expected;
  }
  std::string text = header.dump();
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');  // keep the data section 8-byte aligned

  io::write_file_atomically(path, [&](std::FILE* out) {
    uint8_t length[8];
    for (int i = 0; i < 8; ++i) length[i] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * i));
    bool ok = std::fwrite(length, 1, 8, out) == 8 && std::fwrite(text.data(), 1, text.size(), out) == text.size();
    for (const auto& t : tensors) ok = ok && std::fwrite(t.bytes.data(), 1, t.bytes.size(), out) == t.bytes.size();
    if (!ok) throw std::runtime_error(std::string("disk full? ") + std::strerror(errno));
  });
}

void write_safetensors_index(const std::filesystem::path& dir, const std::map<std::string, std::string>& weight_map) {
  nlohmann::ordered_json index = {{"metadata", nlohmann::ordered_json::object()}, {"weight_map", weight_map}};
  io::write_text_file_atomically(dir / "model.safetensors.index.json", index.dump(2) + "\n");
}

}  // namespace mxmoe
