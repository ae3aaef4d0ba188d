// CPU backend at gpt-oss-20b shape (H = I = 2880, E = 32, k = 4), compared with this machine's
// memory bandwidth and FMA peak measured in the same run:
//   build/bench/mxmoe_bench_cpu
// bw_ratio = weight bytes touched per second / measured read bandwidth (the decode target);
// fma_ratio = GFLOP/s / measured fp32 FMA peak (the prefill target).
#include <benchmark/benchmark.h>

#include <set>

#include "machine_peaks.hpp"
#include "mxmoe/runner.hpp"
#include "mxmoe/synth.hpp"

namespace mxmoe::bench {
namespace {

const MoeShape kGptOss20b{2880, 2880, 32, 4};

const MoeLayer& layer() {
  static const MoeLayer l = random_layer(kGptOss20b, 2024);
  return l;
}

void BM_ReadBandwidth(benchmark::State& state) {
  double gbs = 0;
  for (auto _ : state) gbs = machine_peaks().read_bandwidth_gbs;
  state.counters["GB/s"] = gbs;
}

void BM_FmaPeak(benchmark::State& state) {
  double gflops = 0;
  for (auto _ : state) gflops = machine_peaks().fma_gflops;
  state.counters["GFLOP/s"] = gflops;
}

// Bytes of MXFP4 weights (blocks and scales) and biases of the experts a batch touches.
double weight_bytes_touched(const Routing& routing) {
  const std::set<int32_t> experts(routing.expert_ids.begin(), routing.expert_ids.end());
  const double H = kGptOss20b.hidden, I = kGptOss20b.intermediate;
  const double per_expert = (2 * I * H + H * I) * 17.0 / 32.0 + 4.0 * (2 * I + H);
  return per_expert * static_cast<double>(experts.size());
}

void BM_CpuMoe(benchmark::State& state) {
  const int tokens = static_cast<int>(state.range(0));
  const Scheme scheme = static_cast<Scheme>(state.range(1));
  const MachinePeaks& peaks = machine_peaks();
  // This host's bandwidth drifts by half over minutes, so memory-bound sizes are compared with a
  // measurement taken right before them.
  const double bandwidth = tokens <= 16 ? measure_read_bandwidth_gbs(DeviceSpec::detect_cpu().cores)
                                        : peaks.read_bandwidth_gbs;
  MoeRunner runner(layer(), scheme, DeviceSpec::detect_cpu(), {.backend = "cpu"});
  const auto x = random_hidden(tokens, kGptOss20b.hidden, 7);
  MoeOutput out;
  for (auto _ : state) {
    out = runner.forward(x, tokens);
    benchmark::DoNotOptimize(out.output.data());
  }
  const double flops = 2.0 * tokens * kGptOss20b.top_k * 3.0 * kGptOss20b.hidden * kGptOss20b.intermediate;
  const double bytes = weight_bytes_touched(out.routing);
  state.counters["GFLOP/s"] = benchmark::Counter(flops / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["weight_GB/s"] = benchmark::Counter(bytes / 1e9, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["peak_GFLOP/s"] = peaks.fma_gflops;
  state.counters["peak_GB/s"] = bandwidth;
  state.counters["tokens"] = tokens;
  state.SetLabel(std::string(scheme_name(scheme)));
}

// Ratios: derived after the run from the counters above (see docs/PERFORMANCE.md), and printed by
// the custom reporter below so one run shows them.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (auto run : runs) {
      auto find = [&](const char* name) {
        auto it = run.counters.find(name);
        return it == run.counters.end() ? 0.0 : static_cast<double>(it->second);
      };
      // Rate counters already hold per-second values here.
      if (find("peak_GB/s") > 0) {
        run.counters["bw_ratio"] = find("weight_GB/s") / find("peak_GB/s");
        run.counters["fma_ratio"] = find("GFLOP/s") / find("peak_GFLOP/s");
      }
      ConsoleReporter::ReportRuns({run});
    }
  }
};

BENCHMARK(BM_ReadBandwidth)->Iterations(1)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_FmaPeak)->Iterations(1)->Unit(benchmark::kMillisecond);
const std::vector<int64_t> kSchemes = {static_cast<int>(Scheme::w4a16), static_cast<int>(Scheme::w4a8),
                                       static_cast<int>(Scheme::w4a4)};
// Decode-sized batches; medians of 5 repetitions because a shared machine is noisy.
BENCHMARK(BM_CpuMoe)
    ->ArgsProduct({{1, 16}, kSchemes})
    ->ArgNames({"T", "scheme"})
    ->Unit(benchmark::kMillisecond)
    ->MinWarmUpTime(0.5)
    ->MinTime(1.0)
    ->Repetitions(5)
    ->ReportAggregatesOnly(true)
    ->UseRealTime();
// Prefill-sized batches: the first calls after allocating their buffers run slower (the kernel
// promotes the pages to huge pages over time), so these warm up longer.
BENCHMARK(BM_CpuMoe)
    ->ArgsProduct({{256, 2048}, kSchemes})
    ->ArgNames({"T", "scheme"})
    ->Unit(benchmark::kMillisecond)
    ->MinWarmUpTime(4.0)
    ->MinTime(4.0)
    ->Repetitions(3)
    ->ReportAggregatesOnly(true)
    ->UseRealTime();

}  // namespace
}  // namespace mxmoe::bench

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  mxmoe::bench::RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
