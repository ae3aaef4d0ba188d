#include "cli/progress.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

#include <cstdlib>
#include <string_view>

namespace mxmoe::cli {

namespace {

// A line longer than the terminal wraps, and "\r" then redraws only its last row: cut it to fit.
size_t terminal_columns(FILE* stream) {
  winsize size{};
  if (::ioctl(::fileno(stream), TIOCGWINSZ, &size) == 0 && size.ws_col > 0) return size.ws_col;
  return 80;
}

}  // namespace

bool progress_wanted(FILE* stream) {
  if (const char* env = std::getenv("MXMOE_PROGRESS")) {
    const std::string_view v(env);
    if (v == "1" || v == "always") return true;
    if (v == "0" || v == "never") return false;
  }
  return ::isatty(::fileno(stream)) == 1;
}

Progress::Progress(std::string task, int64_t total, FILE* stream)
    : task_(std::move(task)),
      total_(total),
      step_start_(std::chrono::steady_clock::now()),
      stream_(stream),
      shown_(progress_wanted(stream)) {
  if (!shown_) return;
  {
    std::lock_guard lock(mutex_);
    draw_locked();
  }
  ticker_ = std::thread([this] { tick(); });
}

Progress::~Progress() {
  if (!shown_) return;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    erase_locked();
  }
  wake_.notify_all();
  ticker_.join();
}

void Progress::step(std::string what) {
  if (!shown_) return;
  std::lock_guard lock(mutex_);
  step_ = std::move(what);
  step_start_ = std::chrono::steady_clock::now();
  draw_locked();
}

void Progress::set_progress(int64_t done, int64_t total) {
  if (!shown_) return;
  std::lock_guard lock(mutex_);
  done_ = done;
  total_ = total;
  draw_locked();
}

void Progress::advance(int64_t n) {
  if (!shown_) return;
  std::lock_guard lock(mutex_);
  done_ += n;
  draw_locked();
}

void Progress::print(FILE* to, const std::string& line) {
  std::unique_lock lock(mutex_, std::defer_lock);
  if (shown_) {
    lock.lock();
    erase_locked();
  }
  std::fputs(line.c_str(), to);
  std::fflush(to);
  if (shown_) draw_locked();
}

void Progress::draw_locked() {
  std::string text = task_;
  char count[64] = "";
  if (total_ > 0) std::snprintf(count, sizeof count, " [%lld/%lld]", static_cast<long long>(done_), static_cast<long long>(total_));
  text.append(count);
  if (!step_.empty()) text.append(" ").append(step_);
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - step_start_).count();
  char elapsed[32] = "";
  if (seconds >= 1) std::snprintf(elapsed, sizeof elapsed, " %lld s", static_cast<long long>(seconds));
  text.append(elapsed);
  const size_t width = terminal_columns(stream_) - 1;
  if (text.size() > width) text.resize(width);
  std::fprintf(stream_, "\r\033[K%s", text.c_str());
  std::fflush(stream_);
  drawn_ = true;
}

void Progress::erase_locked() {
  if (!drawn_) return;
  std::fputs("\r\033[K", stream_);
  std::fflush(stream_);
  drawn_ = false;
}

void Progress::tick() {
  std::unique_lock lock(mutex_);
  while (!stopping_) {
    wake_.wait_for(lock, std::chrono::milliseconds(500));
    if (!stopping_) draw_locked();
  }
}

}  // namespace mxmoe::cli
