// PreparedMoe's defaults for host backends: benchmark hooks on the host clock, no device entry point.
#include <algorithm>
#include <chrono>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

#include "mxmoe/backend.hpp"
#include "util/parallel.hpp"

namespace mxmoe {

namespace {

double elapsed_ms(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - since).count();
}

}  // namespace

// The request was checked by MoeRunner::time_forward.
ForwardTiming PreparedMoe::time_forward(std::span<const float> hidden, int tokens, const TimingRequest& request) {
  const size_t batch_values = hidden.size() / request.batches;
  auto batch = [&](int i) { return hidden.subspan((i % request.batches) * batch_values, batch_values); };
  for (int i = 0; i < request.warmup; ++i) forward(batch(i), tokens, nullptr);
  ForwardTiming timing{{}, "forward() calls timed by the host clock"};
  for (int i = 0; i < request.reps; ++i) {
    const auto start = std::chrono::steady_clock::now();
    forward(batch(i), tokens, nullptr);
    timing.ms.push_back(elapsed_ms(start));
  }
  return timing;
}

ActivationScales PreparedMoe::forward_into(std::span<const float> hidden, int tokens, const Routing* routing,
                                          std::span<float> output, Routing* routing_out) {
  MoeOutput out = forward(hidden, tokens, routing);
  std::copy(out.output.begin(), out.output.end(), output.begin());
  if (routing_out) *routing_out = std::move(out.routing);
  return out.scales;
}

void PreparedMoe::forward_on_device(const DeviceBatch&) {
  throw std::logic_error("this backend computes on the host: it takes host data (forward), not device pointers");
}

double PreparedMoe::copy_bandwidth_gbs() {
  // Large enough to leave every cache; copied in parallel slices, as the CPU backend streams weights.
  constexpr size_t kBytes = size_t{1} << 30;
  const auto from = std::make_unique_for_overwrite<char[]>(kBytes);
  const auto to = std::make_unique_for_overwrite<char[]>(kBytes);
  constexpr int64_t kSlices = 256;
  const size_t slice = kBytes / kSlices;
  auto copy = [&](int64_t begin, int64_t end) {
    std::memcpy(to.get() + begin * slice, from.get() + begin * slice, (end - begin) * slice);
  };
  detail::parallel_for(kSlices, 0, 1, [&](int64_t b, int64_t e) { std::memset(from.get() + b * slice, 1, (e - b) * slice); });
  detail::parallel_for(kSlices, 0, 1, copy);  // first touch of the destination
  double best_ms = 1e30;
  for (int rep = 0; rep < 3; ++rep) {
    const auto start = std::chrono::steady_clock::now();
    detail::parallel_for(kSlices, 0, 1, copy);
    best_ms = std::min(best_ms, elapsed_ms(start));
  }
  return 2.0 * static_cast<double>(kBytes) / (best_ms * 1e-3) / 1e9;
}

}  // namespace mxmoe
