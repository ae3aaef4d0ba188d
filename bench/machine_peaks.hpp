// This machine's ceilings, measured in the same run as the benchmarks that are compared to them.
#pragma once

namespace mxmoe::bench {

struct MachinePeaks {
  double read_bandwidth_gbs = 0;  // all threads streaming a 1 GiB buffer
  double fma_gflops = 0;          // all threads issuing independent fp32 vector FMAs
};

// Measured once per process (best of several repetitions), then cached.
const MachinePeaks& machine_peaks();

double measure_read_bandwidth_gbs(int threads);
double measure_fma_gflops(int threads);

}  // namespace mxmoe::bench
