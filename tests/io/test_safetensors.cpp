#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "mxmoe/format.hpp"
#include "mxmoe/safetensors.hpp"

#include "support.hpp"

namespace mxmoe {
namespace {

namespace fs = std::filesystem;

class SafetensorsTest : public test::TempDirTest {
 protected:

  // A file with exactly this header text, this declared header length and these data bytes.
  fs::path raw(const std::string& name, const std::string& header, size_t data_bytes, int64_t declared_length = -1) {
    const fs::path p = dir_ / name;
    std::ofstream out(p, std::ios::binary);
    const uint64_t n = declared_length < 0 ? header.size() : static_cast<uint64_t>(declared_length);
    for (int i = 0; i < 8; ++i) out.put(static_cast<char>(n >> (8 * i)));
    out << header;
    for (size_t i = 0; i < data_bytes; ++i) out.put(static_cast<char>(i));
    return p;
  }

  // The error message of opening `path`, or "" if it opened.
  static std::string open_error(const fs::path& path) {
    try {
      SafetensorsFile::open(path);
      return "";
    } catch (const FormatError& e) {
      return e.what();
    }
  }

  static void expect_error(const fs::path& path, std::initializer_list<std::string> parts) {
    const std::string message = open_error(path);
    ASSERT_FALSE(message.empty()) << path << " opened";
    EXPECT_NE(message.find(path.string()), std::string::npos) << message;
    for (const auto& part : parts) EXPECT_NE(message.find(part), std::string::npos) << "'" << part << "' not in: " << message;
  }

};

TEST_F(SafetensorsTest, WriterAndReaderRoundTrip) {
  const std::vector<float> a = {1.0f, -2.5f, 3.25f, 0.0f, 7.0f, -0.125f};
  const std::vector<uint8_t> b = {1, 2, 3};
  const std::vector<uint8_t> bf = floats_to_bf16_bytes(a);
  write_safetensors(dir_ / "x.safetensors",
                    {{"a", DType::F32, {2, 3}, as_bytes_of(a)}, {"b", DType::U8, {3}, b}, {"c", DType::BF16, {6}, bf},
                     {"empty", DType::F32, {0, 4}, {}}},
                    {{"k", "v"}});
  const auto f = SafetensorsFile::open(dir_ / "x.safetensors");
  ASSERT_EQ(f.tensors().size(), 4u);
  EXPECT_EQ(f.metadata().at("k"), "v");
  EXPECT_EQ(f.find("a")->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(to_floats(DType::F32, f.bytes(*f.find("a"))), a);
  EXPECT_EQ(to_floats(DType::BF16, f.bytes(*f.find("c"))), a);  // all exactly representable in bf16
  const auto bytes = f.bytes(*f.find("b"));
  EXPECT_EQ(std::vector<uint8_t>(bytes.begin(), bytes.end()), b);
  EXPECT_EQ(f.find("empty")->numel(), 0);
  // The data section starts 8-byte aligned.
  uint64_t header_length = 0;
  std::ifstream in(dir_ / "x.safetensors", std::ios::binary);
  in.read(reinterpret_cast<char*>(&header_length), 8);
  EXPECT_EQ((8 + header_length) % 8, 0u);
}

TEST_F(SafetensorsTest, WriterRejectsInconsistentTensors) {
  const std::vector<uint8_t> b(5);
  EXPECT_THROW(write_safetensors(dir_ / "bad.safetensors", {{"a", DType::F32, {2}, b}}), std::invalid_argument);
  EXPECT_THROW(write_safetensors(dir_ / "bad.safetensors", {{"a", DType::U8, {5}, b}, {"a", DType::U8, {5}, b}}),
               std::invalid_argument);
  EXPECT_FALSE(fs::exists(dir_ / "bad.safetensors"));
}

TEST_F(SafetensorsTest, TruncatedFiles) {
  expect_error(raw("short.safetensors", "", 0, 0), {"not valid JSON"});
  {
    std::ofstream out(dir_ / "tiny.safetensors", std::ios::binary);
    out << "abc";
  }
  expect_error(dir_ / "tiny.safetensors", {"too short"});
  // A valid header whose data section was cut off.
  expect_error(raw("cut.safetensors", R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 10),
               {"tensor 'w'", "reach past the data section", "truncated"});
}

TEST_F(SafetensorsTest, LyingHeaderLength) {
  expect_error(raw("long.safetensors", R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", 1, 5000),
               {"header length 5000 runs past the end"});
  expect_error(raw("huge.safetensors", "{}", 0, int64_t{1} << 40), {"exceeds the 100 MB limit"});
  // Too short a length cuts the JSON.
  expect_error(raw("cutjson.safetensors", R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}})", 1, 20),
               {"not valid JSON"});
}

TEST_F(SafetensorsTest, BadJson) {
  expect_error(raw("json.safetensors", "{not json", 0), {"not valid JSON"});
  expect_error(raw("array.safetensors", "[1,2]", 0), {"not a JSON object"});
  expect_error(raw("entry.safetensors", R"({"w": 3})", 0), {"tensor 'w'", "not an object"});
  expect_error(raw("missing.safetensors", R"({"w":{"dtype":"U8","shape":[1]}})", 1), {"tensor 'w'", "missing 'data_offsets'"});
  expect_error(raw("meta.safetensors", R"({"__metadata__":{"a":1}})", 0), {"__metadata__"});
  expect_error(raw("shape.safetensors", R"({"w":{"dtype":"U8","shape":[-1],"data_offsets":[0,0]}})", 0), {"tensor 'w'", "shape"});
  expect_error(raw("offs.safetensors", R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0]}})", 1), {"data_offsets"});
}

TEST_F(SafetensorsTest, OffsetsOutOfRangeOverlappingOrLeavingGaps) {
  expect_error(raw("range.safetensors", R"({"w":{"dtype":"U8","shape":[4],"data_offsets":[10,14]}})", 4),
               {"tensor 'w'", "reach past the data section of 4 bytes"});
  expect_error(raw("reverse.safetensors", R"({"w":{"dtype":"U8","shape":[0],"data_offsets":[4,0]}})", 4),
               {"tensor 'w'", "end before they begin"});
  expect_error(raw("overlap.safetensors",
                   R"({"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"U8","shape":[4],"data_offsets":[2,6]}})", 6),
               {"overlaps"});
  expect_error(raw("gap.safetensors",
                   R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[2],"data_offsets":[4,6]}})", 6),
               {"belong to no tensor"});
  expect_error(raw("tail.safetensors", R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})", 6), {"cover 2"});
}

TEST_F(SafetensorsTest, SizesMustMatchShapeTimesDtype) {
  expect_error(raw("size.safetensors", R"({"w":{"dtype":"F32","shape":[2,2],"data_offsets":[0,8]}})", 8),
               {"tensor 'w'", "holds 8 bytes", "[2, 2]", "needs 16"});
  expect_error(raw("overflow.safetensors",
                   R"({"w":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}})", 0),
               {"tensor 'w'", "needs more than 2^64"});
  // An empty tensor with huge other dims is valid, and counts zero elements (issue 14).
  const auto empty = raw("empty.safetensors",
                         R"({"w":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904,0],"data_offsets":[0,0]}})", 0);
  const SafetensorsFile f = SafetensorsFile::open(empty);
  EXPECT_EQ(f.tensors().at(0).numel(), 0);
  EXPECT_TRUE(to_floats(DType::F32, f.bytes(f.tensors().at(0))).empty());
}

TEST_F(SafetensorsTest, UnknownDtypesAndDuplicateNames) {
  expect_error(raw("dtype.safetensors", R"({"w":{"dtype":"F4","shape":[1],"data_offsets":[0,1]}})", 1),
               {"tensor 'w'", "unknown dtype 'F4'"});
  expect_error(raw("dup.safetensors",
                   R"({"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})", 2),
               {"tensor 'w' appears twice"});
}

TEST_F(SafetensorsTest, KnownDtypesAreAccepted) {
  for (const char* dtype : {"F32", "F16", "BF16", "U8", "I8", "F8_E4M3", "I32", "I64", "F64", "BOOL"}) {
    const size_t size = dtype_size(*parse_dtype(dtype));
    const std::string header = std::string(R"({"w":{"dtype":")") + dtype + R"(","shape":[3],"data_offsets":[0,)" +
                               std::to_string(3 * size) + "]}}";
    EXPECT_EQ(open_error(raw(std::string(dtype) + ".safetensors", header, 3 * size)), "") << dtype;
  }
}

TEST_F(SafetensorsTest, F16ValuesConvert) {
  const std::vector<uint16_t> h = {0x3C00, 0xC000, 0x0001, 0x7C00, 0x3555};  // 1, -2, 2^-24, inf, ~0.3333
  const auto f = to_floats(DType::F16, as_bytes_of(h));
  EXPECT_EQ(f[0], 1.0f);
  EXPECT_EQ(f[1], -2.0f);
  EXPECT_EQ(f[2], std::ldexp(1.0f, -24));
  EXPECT_TRUE(std::isinf(f[3]));
  EXPECT_NEAR(f[4], 1.0 / 3, 1e-3);
}

TEST_F(SafetensorsTest, ShardedStoreFollowsItsIndex) {
  const std::vector<uint8_t> one = {1}, two = {2, 2};
  write_safetensors(dir_ / "s1.safetensors", {{"a", DType::U8, {1}, one}});
  write_safetensors(dir_ / "s2.safetensors", {{"b", DType::U8, {2}, two}});
  write_safetensors_index(dir_, {{"a", "s1.safetensors"}, {"b", "s2.safetensors"}});
  const TensorStore store = TensorStore::open(dir_);
  EXPECT_EQ(store.names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(store.bytes("b")[1], 2);
  EXPECT_THROW(store.info("c"), FormatError);
  EXPECT_THROW(store.read_floats("a", {1}), FormatError);  // U8 is not floating point
  EXPECT_THROW(store.read_raw("b", DType::U8, {3}), FormatError);

  // An index naming a tensor that is not in its shard.
  write_safetensors_index(dir_, {{"a", "s1.safetensors"}, {"b", "s1.safetensors"}});
  try {
    TensorStore::open(dir_);
    FAIL();
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("tensor 'b' is indexed in 's1.safetensors' but is not there"), std::string::npos) << e.what();
  }
  // An index naming a missing shard.
  write_safetensors_index(dir_, {{"a", "s9.safetensors"}});
  EXPECT_THROW(TensorStore::open(dir_), FormatError);
  // The same tensor in two shards.
  write_safetensors(dir_ / "s2.safetensors", {{"a", DType::U8, {1}, one}});
  write_safetensors_index(dir_, {{"a", "s1.safetensors"}});
  fs::remove(dir_ / "model.safetensors.index.json");
  EXPECT_THROW(TensorStore::open(dir_), FormatError);
  // A broken index.
  std::ofstream(dir_ / "model.safetensors.index.json") << "{\"weight_map\": 3}";
  EXPECT_THROW(TensorStore::open(dir_), FormatError);
  EXPECT_THROW(TensorStore::open(dir_ / "nowhere"), FormatError);
}

}  // namespace
}  // namespace mxmoe
