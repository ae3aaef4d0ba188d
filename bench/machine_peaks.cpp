#include "machine_peaks.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>
#include <vector>

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "machine_peaks.cpp"
#ifndef HWY_DISABLED_TARGETS
#define HWY_DISABLED_TARGETS (HWY_SSSE3 | HWY_SSE4 | HWY_AVX3_DL)
#endif
#include <hwy/aligned_allocator.h>
#include <hwy/foreach_target.h>
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace mxmoe::bench {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// Sums a buffer with several independent accumulators, so loads, not adds, set the pace.
float SumBuffer(const float* data, size_t n) {
  const hn::ScalableTag<float> d;
  const size_t lanes = hn::Lanes(d);
  auto a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
  for (size_t i = 0; i + 4 * lanes <= n; i += 4 * lanes) {
    a0 = hn::Add(a0, hn::Load(d, data + i));
    a1 = hn::Add(a1, hn::Load(d, data + i + lanes));
    a2 = hn::Add(a2, hn::Load(d, data + i + 2 * lanes));
    a3 = hn::Add(a3, hn::Load(d, data + i + 3 * lanes));
  }
  return hn::GetLane(hn::SumOfLanes(d, hn::Add(hn::Add(a0, a1), hn::Add(a2, a3))));
}

// 16 independent FMA chains (more than latency x throughput on every x86 core), so the FMA
// units are the only limit. Returns the FLOPs done.
double FmaLoop(int64_t iterations, float* sink) {
  const hn::ScalableTag<float> d;
  const auto m = hn::Set(d, 0.999999f), a = hn::Set(d, 1e-7f);
  hn::Vec<decltype(d)> acc[16];
  for (int i = 0; i < 16; ++i) acc[i] = hn::Set(d, static_cast<float>(i));
  for (int64_t it = 0; it < iterations; ++it) {
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) acc[i] = hn::MulAdd(acc[i], m, a);
  }
  auto total = acc[0];
  for (int i = 1; i < 16; ++i) total = hn::Add(total, acc[i]);
  *sink = hn::GetLane(total);
  return 2.0 * 16 * static_cast<double>(hn::Lanes(d)) * static_cast<double>(iterations);
}

}  // namespace HWY_NAMESPACE
}  // namespace mxmoe::bench
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace mxmoe::bench {

HWY_EXPORT(SumBuffer);
HWY_EXPORT(FmaLoop);

namespace {

template <class F>
double best_seconds(int repetitions, F&& f) {
  double best = 1e30;
  for (int r = 0; r < repetitions; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

template <class F>
void on_threads(int threads, F&& f) {
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back(f, t);
  for (auto& t : pool) t.join();
}

}  // namespace

double measure_read_bandwidth_gbs(int threads) {
  const size_t n = (size_t{1} << 30) / sizeof(float);
  auto buffer = hwy::AllocateAligned<float>(n);
  on_threads(threads, [&](int t) {  // each thread touches its own part first (first-touch placement)
    const size_t chunk = n / threads;
    std::fill(buffer.get() + t * chunk, buffer.get() + (t + 1) * chunk, 1.0f);
  });
  std::atomic<float> sink{0};
  const double seconds = best_seconds(5, [&] {
    on_threads(threads, [&](int t) {
      const size_t chunk = n / threads;
      sink = sink + HWY_DYNAMIC_DISPATCH(SumBuffer)(buffer.get() + t * chunk, chunk);
    });
  });
  return static_cast<double>(n * sizeof(float)) / seconds / 1e9;
}

double measure_fma_gflops(int threads) {
  const int64_t iterations = 20'000'000;
  std::vector<double> flops(threads);
  std::vector<float> sinks(threads);
  const double seconds = best_seconds(3, [&] {
    on_threads(threads, [&](int t) { flops[t] = HWY_DYNAMIC_DISPATCH(FmaLoop)(iterations, &sinks[t]); });
  });
  double total = 0;
  for (double f : flops) total += f;
  return total / seconds / 1e9;
}

const MachinePeaks& machine_peaks() {
  static const MachinePeaks peaks = [] {
    const int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    return MachinePeaks{measure_read_bandwidth_gbs(threads), measure_fma_gflops(threads)};
  }();
  return peaks;
}

}  // namespace mxmoe::bench
#endif
