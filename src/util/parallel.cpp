#include "util/parallel.hpp"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

namespace mxmoe::detail {

int hardware_threads() {
  // The CPUs this process may run on (its affinity mask, as set by taskset or a container), not
  // every CPU of the machine.
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof set, &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

int usable_threads(int requested) {
  const int available = hardware_threads();
  return requested > 0 ? std::min(requested, available) : available;
}

namespace {

// One job at a time; workers sleep between jobs so an idle pool costs nothing.
class ThreadPool {
 public:
  static ThreadPool& instance() {
    static ThreadPool pool;
    return pool;
  }

  void run(int64_t chunks, int workers, const std::function<void(int64_t)>& task) {
    std::lock_guard<std::mutex> job_lock(job_mutex_);  // parallel_for callers take turns
    ensure_threads(workers - 1);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      task_ = &task;
      chunks_ = chunks;
      next_.store(0);
      error_ = nullptr;
      helpers_wanted_ = workers - 1;
      helpers_done_ = 0;
      ++generation_;
    }
    wake_.notify_all();
    work();
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [&] { return helpers_done_ == helpers_wanted_; });
    task_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }

 private:
  void ensure_threads(int wanted) {
    while (static_cast<int>(threads_.size()) < wanted) {
      const int index = static_cast<int>(threads_.size());
      threads_.emplace_back([this, index] { loop(index); });
    }
  }

  void loop(int index) {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || (generation_ != seen && index < helpers_wanted_); });
        if (stopping_) return;
        seen = generation_;
      }
      work();
      {
        std::lock_guard<std::mutex> lock(mutex_);
        ++helpers_done_;
      }
      done_.notify_all();
    }
  }

  void work() {
    for (;;) {
      const int64_t chunk = next_.fetch_add(1);
      if (chunk >= chunks_) return;
      try {
        (*task_)(chunk);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!error_) error_ = std::current_exception();
      }
    }
  }

  std::mutex job_mutex_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  std::vector<std::thread> threads_;
  const std::function<void(int64_t)>* task_ = nullptr;
  int64_t chunks_ = 0;
  std::atomic<int64_t> next_{0};
  std::exception_ptr error_;
  int helpers_wanted_ = 0;
  int helpers_done_ = 0;
  uint64_t generation_ = 0;
  bool stopping_ = false;
};

thread_local bool inside_parallel_for = false;

}  // namespace

void parallel_for(int64_t n, int threads, int64_t grain,
                  const std::function<void(int64_t, int64_t)>& body) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int64_t chunks = (n + grain - 1) / grain;
  int workers = usable_threads(threads);
  workers = static_cast<int>(std::min<int64_t>(workers, chunks));
  auto chunk_body = [&](int64_t c) { body(c * grain, std::min(n, (c + 1) * grain)); };
  // Nested calls run inline: the pool runs one job at a time.
  if (workers <= 1 || inside_parallel_for) {
    for (int64_t c = 0; c < chunks; ++c) chunk_body(c);
    return;
  }
  const std::function<void(int64_t)> task = [&](int64_t c) {
    const bool outer = inside_parallel_for;
    inside_parallel_for = true;
    try {
      chunk_body(c);
    } catch (...) {
      inside_parallel_for = outer;
      throw;
    }
    inside_parallel_for = outer;
  };
  ThreadPool::instance().run(chunks, workers, task);
}

}  // namespace mxmoe::detail
