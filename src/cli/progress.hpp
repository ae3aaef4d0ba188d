// One status line for long operations, redrawn in place on a terminal ("eval [2/5] gpt-oss-20b
// w4a16: reference T=128 12 s"). It is shown only when stderr is a terminal, so pipes, logs and CI
// stay clean; MXMOE_PROGRESS=1 asks for it anyway and MXMOE_PROGRESS=0 silences it.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <mutex>
#include <string>
#include <thread>

namespace mxmoe::cli {

class Progress {
 public:
  // `total` > 0 shows "[done/total]"; 0 shows no count. The line lives on `stream` (stderr).
  explicit Progress(std::string task, int64_t total = 0, FILE* stream = stderr);
  ~Progress();  // erases the line
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // What runs now; its elapsed time is shown (and kept ticking) once it passes a second.
  void step(std::string what);
  void advance(int64_t n = 1);
  // For work that reports its own count (library calls with a progress callback).
  void set_progress(int64_t done, int64_t total);
  // Prints a finished line (with its newline) to `to` without garbling the status line: the line is
  // erased first and redrawn after. Use it for everything a command prints while a Progress lives.
  void print(FILE* to, const std::string& line);
  bool shown() const { return shown_; }

 private:
  void draw_locked();
  void erase_locked();
  void tick();

  std::string task_;
  int64_t total_;
  int64_t done_ = 0;
  std::string step_;
  std::chrono::steady_clock::time_point step_start_;
  FILE* stream_;
  bool shown_;
  bool drawn_ = false;
  std::mutex mutex_;
  std::condition_variable wake_;
  bool stopping_ = false;
  std::thread ticker_;
};

// Whether a status line belongs on `stream`: a terminal, unless MXMOE_PROGRESS says otherwise.
bool progress_wanted(FILE* stream);

}  // namespace mxmoe::cli
