// A small persistent thread pool. Work is split into index ranges; each index is computed by
// exactly one worker, so results never depend on the number of threads or on scheduling.
#pragma once

#include <cstdint>
#include <functional>

namespace mxmoe::detail {

// The CPUs this process may run on (its affinity), at least 1.
int hardware_threads();
// Worker threads for a request: 0 means all usable CPUs; more than that is capped to them.
int usable_threads(int requested);

// Runs body(begin, end) over [0, n) in chunks of `grain` indices on up to `threads` threads
// (0: all hardware threads), the calling thread included. The first exception thrown by any
// chunk is rethrown after all chunks finish.
void parallel_for(int64_t n, int threads, int64_t grain,
                  const std::function<void(int64_t begin, int64_t end)>& body);

}  // namespace mxmoe::detail
