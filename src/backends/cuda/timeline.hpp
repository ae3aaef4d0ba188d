// Per-block timestamps of one layer run, to see where its time goes: which kernel's blocks start,
// wait and finish when (Nsight Systems is not on the lent machines, and Nsight Compute serializes
// the kernels that programmatic dependent launch overlaps). A development build only: configure
// with -DMXMOE_TIMELINE=ON; otherwise every MXMOE_STAMP compiles to nothing. `mxmoe_bench_cuda
// --timeline FILE` records a run per point, `bench/timeline.py FILE` summarizes it.
#pragma once

#include <cstdint>

namespace mxmoe::cuda::timeline {

// The stamped kernels; each documents its events where it stamps them (timeline.py names them).
enum class Kernel : int {
  router, topk, rank, gate_up, down, combine, decode_route, decode_gate_up, decode_down, count
};
constexpr int kMaxBlocks = 16384;  // blocks past this are not stamped
constexpr int kSlots = 10;         // per block: its SM id + 1, then up to 9 events (globaltimer, ns)
constexpr int64_t kWords = static_cast<int64_t>(Kernel::count) * kMaxBlocks * kSlots;

// Each translation unit that stamps holds its own device pointer to the stamps (no relocatable
// device code needed) and registers a function that sets it; attach_all sets them all.
bool register_attach(void (*attach)(uint64_t* stamps));
void attach_all(uint64_t* stamps);  // a device buffer of kWords words, or nullptr to stop stamping

}  // namespace mxmoe::cuda::timeline
