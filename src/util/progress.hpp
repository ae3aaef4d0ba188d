// Progress of long operations on a terminal; silent when stderr is not one (logs, pipes, CI).
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <string>

namespace mxmoe::detail {

class Progress {
 public:
  Progress(std::string label, int64_t total) : label_(std::move(label)), total_(total), tty_(::isatty(2) == 1) { draw(); }
  ~Progress() {
    if (tty_) std::fprintf(stderr, "\r\033[K");
  }
  void advance(int64_t n = 1) {
    done_ += n;
    draw();
  }

 private:
  void draw() {
    if (!tty_) return;
    std::fprintf(stderr, "\r\033[K%s: %lld/%lld", label_.c_str(), static_cast<long long>(done_), static_cast<long long>(total_));
    std::fflush(stderr);
  }
  std::string label_;
  int64_t total_;
  int64_t done_ = 0;
  bool tty_;
};

}  // namespace mxmoe::detail
