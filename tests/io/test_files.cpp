// Hardening of file input and output (io/files.hpp): every item here once crashed, hung or lost
// data (issue 14).
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <future>

#include "io/files.hpp"
#include "mxmoe/safetensors.hpp"
#include "support.hpp"

namespace mxmoe {
namespace {

namespace fs = std::filesystem;

class FilesTest : public test::TempDirTest {
 protected:
  fs::path write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name, std::ios::binary) << text;
    return dir_ / name;
  }
  std::string read(const fs::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), {}};
  }
};

// Runs f on another thread and fails (instead of hanging the suite) if it takes over 10 s.
template <class F>
void expect_returns_promptly(F&& f) {
  auto done = std::async(std::launch::async, std::forward<F>(f));
  ASSERT_EQ(done.wait_for(std::chrono::seconds(10)), std::future_status::ready) << "blocked (a FIFO opened for reading?)";
  done.get();
}

TEST_F(FilesTest, FifosAreRefusedWithoutBlocking) {
  const fs::path fifo = dir_ / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  expect_returns_promptly([&] {
    EXPECT_THROW(io::read_text_file(fifo), FormatError);
    try {
      SafetensorsFile::open(fifo);
      ADD_FAILURE() << "a FIFO opened as safetensors";
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find("not a regular file"), std::string::npos) << e.what();
    }
  });
}

TEST_F(FilesTest, DeepJsonIsRefusedWithoutRecursion) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  try {
    io::parse_json(deep, "deep.json");
    FAIL() << "accepted";
  } catch (const FormatError& e) {
    EXPECT_NE(std::string(e.what()).find("nested deeper than 64"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(io::parse_json(std::string(64, '[') + std::string(64, ']'), "ok.json"));
  // The same nesting inside a safetensors header, in a shape and in data_offsets.
  for (const char* key : {"shape", "data_offsets"}) {
    std::string header = std::string("{\"t\": {\"dtype\": \"F32\", \"") + key + "\": " + deep + ", \"" +
                         (std::string(key) == "shape" ? "data_offsets\": [0, 4]" : "shape\": [1]") + "}}";
    std::string bytes(8, '\0');
    for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>(header.size() >> (8 * i));
    const fs::path p = write(std::string(key) + ".safetensors", bytes + header + "abcd");
    try {
      SafetensorsFile::open(p);
      ADD_FAILURE() << key << ": accepted";
    } catch (const FormatError& e) {
      EXPECT_NE(std::string(e.what()).find("nested deeper"), std::string::npos) << e.what();
    }
  }
}

TEST_F(FilesTest, ErrorMessagesDescribeValuesWithoutDumpingThem) {
  EXPECT_EQ(io::describe_json(nlohmann::json::parse("[[1], 2]")), "an array of 2 elements");
  EXPECT_EQ(io::describe_json(nlohmann::json::parse("{\"a\": {}}")), "an object of 1 entries");
  EXPECT_EQ(io::describe_json(nlohmann::json(std::string(100, 'x'))), "the string \"" + std::string(40, 'x') + "...\"");
  EXPECT_EQ(io::describe_json(nlohmann::json(-3)), "-3");
}

TEST_F(FilesTest, OversizedTextFilesAreRefusedBeforeReading) {
  const fs::path p = write("big.json", std::string(2000, ' '));
  EXPECT_THROW(io::read_text_file(p, 1000), FormatError);
  EXPECT_EQ(io::read_text_file(p, 2000).size(), 2000u);
}

TEST_F(FilesTest, OutputsThatWouldDestroySomethingAreRefused) {
  const fs::path input = write("in.safetensors", "data");
  EXPECT_THROW(io::check_output_file(input, {input}, "--output"), std::invalid_argument);
  EXPECT_THROW(io::check_output_file(dir_ / "." / "in.safetensors", {input}, "--output"), std::invalid_argument);
  fs::create_symlink(dir_ / "elsewhere", dir_ / "link");
  EXPECT_THROW(io::check_output_file(dir_ / "link", {}, "--output"), std::invalid_argument);
  EXPECT_THROW(io::check_output_file("/dev/null", {}, "--output"), std::invalid_argument);
  EXPECT_THROW(io::check_output_file(dir_, {}, "--output"), std::invalid_argument);
  EXPECT_THROW(io::check_output_file(dir_ / "no" / "such" / "folder.bin", {}, "--output"), std::invalid_argument);
  EXPECT_NO_THROW(io::check_output_file(dir_ / "new.safetensors", {input}, "--output"));
  write("old.safetensors", "x");
  EXPECT_NO_THROW(io::check_output_file(dir_ / "old.safetensors", {input}, "--output"));  // replacing an output is fine
  EXPECT_EQ(read(input), "data");
}

TEST_F(FilesTest, FailedWritesLeaveTheTargetAndNoTemporary) {
  const fs::path target = write("out.bin", "previous");
  EXPECT_THROW(io::write_file_atomically(target, [](std::FILE* f) {
                 std::fputs("half", f);
                 throw std::runtime_error("disk full");
               }),
               std::runtime_error);
  EXPECT_EQ(read(target), "previous");
  int entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir_)) ++entries;
  EXPECT_EQ(entries, 1) << "a temporary was left behind";
  io::write_text_file_atomically(target, "new");
  EXPECT_EQ(read(target), "new");
}

TEST_F(FilesTest, FoldersAreWrittenWholeOrNotAtAll) {
  const fs::path folder = dir_ / "ck";
  EXPECT_THROW(io::write_folder_atomically(folder, false,
                                           [](const fs::path& tmp) {
                                             std::ofstream(tmp / "a") << "1";
                                             throw std::runtime_error("killed");
                                           }),
               std::runtime_error);
  EXPECT_FALSE(fs::exists(folder));
  int entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir_)) ++entries;
  EXPECT_EQ(entries, 0) << "a temporary folder was left behind";

  io::write_folder_atomically(folder, false, [](const fs::path& tmp) { std::ofstream(tmp / "a") << "1"; });
  EXPECT_EQ(read(folder / "a"), "1");
  EXPECT_THROW(io::write_folder_atomically(folder, false, [](const fs::path&) {}), std::invalid_argument);  // not empty
  io::write_folder_atomically(folder, true, [](const fs::path& tmp) { std::ofstream(tmp / "b") << "2"; });
  EXPECT_FALSE(fs::exists(folder / "a"));
  EXPECT_EQ(read(folder / "b"), "2");
  fs::create_directories(dir_ / "empty");
  io::write_folder_atomically(dir_ / "empty", false, [](const fs::path& tmp) { std::ofstream(tmp / "c") << "3"; });
  EXPECT_EQ(read(dir_ / "empty" / "c"), "3");
}

}  // namespace
}  // namespace mxmoe
