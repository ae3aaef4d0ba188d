// Runs the real `mxmoe` executable, as a user would, and captures what it prints.
#pragma once

#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

namespace mxmoe::test {

struct CliResult {
  int exit_code = -1;
  std::string out;
  std::string err;
};

// `env` is a prefix such as "MXMOE_BACKEND=x"; arguments are passed through the shell as written.
inline CliResult run_cli(const std::string& args, const std::string& env = "") {
  static int counter = 0;
  const std::string err_path = ::testing::TempDir() + "mxmoe_cli_err_" + std::to_string(::getpid()) + "_" +
                               std::to_string(counter++);
  const std::string command = (env.empty() ? "" : "env " + env + " ") + std::string(MXMOE_CLI_PATH) + " " + args +
                              " 2>" + err_path;
  CliResult r;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) r.out.append(buf.data(), n);
  const int status = ::pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream err(err_path);
  std::stringstream ss;
  ss << err.rdbuf();
  r.err = ss.str();
  std::remove(err_path.c_str());
  return r;
}

}  // namespace mxmoe::test
