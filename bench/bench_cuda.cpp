// CUDA-event benchmark of the CUDA backend at gpt-oss-20b and gpt-oss-120b shapes, compared with
// two ceilings measured in the same run: this GPU's device-to-device copy bandwidth, and cuBLAS
// bf16 dense GEMMs doing the same FLOPs.
//
// The layer is timed as CUDA-graph replays of the device-pointer entry point (as inference engines
// run it, and as the peer benchmark times triton_kernels), and also launched directly.
//
//   build/bench/mxmoe_bench_cuda [--json FILE] [--schemes w4a16,w4a8,w4a4] [--tokens 1,16,128,1024,8192]
//                                [--shapes gpt-oss-20b,gpt-oss-120b] [--reps 20] [--small-batch-tokens N]
//                                [--profile] [--timeline FILE]
//
// --profile runs each point twice on device data and times nothing: a short, known launch sequence
// for Nsight Compute (ncu -k regex:mxmoe build/bench/mxmoe_bench_cuda --profile ...).
// --timeline FILE (a build configured with -DMXMOE_TIMELINE=ON) times nothing either: it records
// the kernels' per-block stamps of one steady-state run per point (src/backends/cuda/timeline.hpp)
// into FILE, for bench/timeline.py.
#include <cublas_v2.h>
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "backends/cuda/cuda_check.hpp"
#include "backends/cuda/cuda_moe.hpp"
#include "backends/cuda/device_buffer.hpp"
#include "backends/cuda/timeline.hpp"
#include "mxmoe/format.hpp"
#include "mxmoe/oracle.hpp"
#include "mxmoe/synth.hpp"

namespace {

using mxmoe::cuda::DeviceBuffer;


std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');) out.push_back(item);
  return out;
}

void check_cublas(cublasStatus_t status, const char* what) {
  if (status != CUBLAS_STATUS_SUCCESS) throw std::runtime_error(std::string("cuBLAS error in ") + what);
}

double median(std::vector<double> ms) {
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

// Median of `reps` timings (ms) of f() on `stream`, after `warmup` untimed runs.
template <class F>
double median_ms(cudaStream_t stream, int warmup, int reps, F&& f) {
  for (int i = 0; i < warmup; ++i) f(i);
  return median(mxmoe::cuda::time_on_stream(stream, reps, f));
}

// Random bf16 values (never zeros: they run faster than real data).
DeviceBuffer random_bf16(size_t count, uint64_t seed) {
  std::vector<uint16_t> host(count);
  uint64_t state = seed * 0x9E3779B97F4A7C15ull + 1;
  for (auto& v : host) {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    v = mxmoe::float_to_bf16(static_cast<float>(static_cast<int64_t>(state % 2001) - 1000) / 1000.0f);
  }
  DeviceBuffer d(count * 2);
  MXMOE_CUDA_CHECK(cudaMemcpy(d.as<void>(), host.data(), count * 2, cudaMemcpyHostToDevice));
  return d;
}

// cuBLAS bf16 GEMMs with the FLOPs of one MoE layer: [T*k, H] x [H, 2I] and [T*k, I] x [I, H].
double dense_equivalent_ms(cublasHandle_t handle, cudaStream_t stream, int64_t rows, int H, int I) {
  DeviceBuffer a = random_bf16(static_cast<size_t>(rows) * std::max(H, I), 1);
  DeviceBuffer w1 = random_bf16(static_cast<size_t>(H) * 2 * I, 2), w2 = random_bf16(static_cast<size_t>(I) * H, 3);
  DeviceBuffer c(static_cast<size_t>(rows) * 2 * I * 2);
  const float one = 1.0f, zero = 0.0f;
  check_cublas(cublasSetStream(handle, stream), "cublasSetStream");
  auto gemm = [&](const DeviceBuffer& w, int n, int k) {
    // Column-major: C[n, rows] = W[n, k] * A[k, rows].
    check_cublas(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, n, static_cast<int>(rows), k, &one, w.as<void>(), CUDA_R_16BF,
                              k, a.as<void>(), CUDA_R_16BF, k, &zero, c.as<void>(), CUDA_R_16BF, n, CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT),
                 "cublasGemmEx");
  };
  return median_ms(stream, 3, 20, [&](int) {
    gemm(w1, 2 * I, H);
    gemm(w2, H, I);
  });
}

// The stamps of one run of `forward` (after unstamped runs of each batch, so that it replays a
// captured graph as the timed runs do; a first run of a batch launches from the host, with the
// host's gaps between kernels) as {kernel: [[block, sm, event times in ns from the run's first
// stamp or -1]...]}. The stamped run is the last of kSteadyRuns replays queued back to back, as the
// timed runs are: a replay started on an idle GPU runs its first kernel while the driver still
// submits the others (the next kernel's blocks started 2.4-9 us after the first's, against 0.7 us
// in the queue on an H200; docs/PERFORMANCE.md, twentieth session). Each replay writes the same
// stamps (same batch, same blocks), so the last one's remain.
template <class F>
nlohmann::ordered_json record_timeline(cudaStream_t stream, F&& forward) {
  namespace tl = mxmoe::cuda::timeline;
  static const char* const kNames[] = {"router", "topk", "rank", "gate_up", "down", "combine",
                                       "decode_route", "decode_gate_up", "decode_down"};
  static_assert(std::size(kNames) == static_cast<size_t>(tl::Kernel::count));
  for (int i = 0; i < 8; ++i) forward(i);
  DeviceBuffer stamps(tl::kWords * sizeof(uint64_t));
  MXMOE_CUDA_CHECK(cudaMemsetAsync(stamps.as<void>(), 0, stamps.bytes(), stream));
  MXMOE_CUDA_CHECK(cudaStreamSynchronize(stream));
  tl::attach_all(stamps.as<uint64_t>());
  constexpr int kSteadyRuns = 4;
  for (int i = 0; i < kSteadyRuns; ++i) forward(0);
  MXMOE_CUDA_CHECK(cudaStreamSynchronize(stream));
  tl::attach_all(nullptr);
  std::vector<uint64_t> host(tl::kWords);
  MXMOE_CUDA_CHECK(cudaMemcpy(host.data(), stamps.as<void>(), stamps.bytes(), cudaMemcpyDeviceToHost));
  uint64_t first = UINT64_MAX;
  for (size_t i = 0; i < host.size(); ++i) {
    if (i % tl::kSlots != 0 && host[i] != 0) first = std::min(first, host[i]);
  }
  nlohmann::ordered_json kernels = nlohmann::ordered_json::object();
  for (int k = 0; k < static_cast<int>(tl::Kernel::count); ++k) {
    nlohmann::ordered_json blocks = nlohmann::ordered_json::array();
    for (int b = 0; b < tl::kMaxBlocks; ++b) {
      const uint64_t* row = host.data() + (static_cast<int64_t>(k) * tl::kMaxBlocks + b) * tl::kSlots;
      if (row[0] == 0) continue;
      nlohmann::ordered_json entry = {b, static_cast<int64_t>(row[0]) - 1};
      for (int e = 1; e < tl::kSlots; ++e) entry.push_back(row[e] == 0 ? int64_t{-1} : static_cast<int64_t>(row[e] - first));
      blocks.push_back(std::move(entry));
    }
    if (!blocks.empty()) kernels[kNames[k]] = std::move(blocks);
  }
  return kernels;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace mxmoe;
  std::string json_path, schemes_arg = "w4a16,w4a8,w4a4", tokens_arg = "1,16,128,1024,8192",
                         shapes_arg = "gpt-oss-20b,gpt-oss-120b";
  int reps = 20;
  int small_batch_tokens = -1;  // the backend's default
  std::string backend_arg = "auto";  // the oracle's choice for this GPU and scheme
  bool profile = false;
  std::string timeline_path;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&] {
      if (i + 1 >= argc) throw std::invalid_argument(a + " needs a value");
      return std::string(argv[++i]);
    };
    if (a == "--json") json_path = next();
    else if (a == "--schemes") schemes_arg = next();
    else if (a == "--tokens") tokens_arg = next();
    else if (a == "--shapes") shapes_arg = next();
    else if (a == "--reps") reps = std::stoi(next());
    else if (a == "--small-batch-tokens") small_batch_tokens = std::stoi(next());
    else if (a == "--backend") backend_arg = next();
    else if (a == "--profile") profile = true;
    else if (a == "--timeline") timeline_path = next();
    else {
      std::fprintf(stderr, "usage: %s [--json FILE] [--schemes LIST] [--tokens LIST] [--shapes LIST] [--reps N] "
                   "[--small-batch-tokens N] [--backend auto|cuda|cuda_sm90] [--profile] [--timeline FILE]\n", argv[0]);
      return 2;
    }
  }
#ifndef MXMOE_TIMELINE
  if (!timeline_path.empty()) {
    std::fprintf(stderr, "mxmoe_bench_cuda: --timeline needs a build configured with -DMXMOE_TIMELINE=ON\n");
    return 2;
  }
#endif
  nlohmann::ordered_json timelines = nlohmann::ordered_json::array();
  try {
    const auto gpus = detect_cuda_devices();
    if (gpus.empty()) {
      std::fprintf(stderr, "mxmoe_bench_cuda: no CUDA GPU on this machine\n");
      return 1;
    }
    const DeviceSpec gpu = gpus.front();
    cudaStream_t stream;
    MXMOE_CUDA_CHECK(cudaStreamCreate(&stream));
    cublasHandle_t handle;
    check_cublas(cublasCreate(&handle), "cublasCreate");
    const double copy_gbs = cuda::device_copy_bandwidth_gbs(stream);
    std::printf("GPU: %s (%s, %d SMs); device-to-device copy %.0f GB/s (read + write)\n", gpu.name.c_str(),
                gpu.id().c_str(), gpu.sm_count, copy_gbs);
    std::printf("%-13s %-6s %-9s %6s %10s %10s %9s %11s %10s %12s %9s\n", "shape", "scheme", "backend", "T", "graph ms", "direct ms",
                "TFLOP/s", "weight GB/s", "vs copy", "cuBLAS ms", "vs cuBLAS");
    nlohmann::ordered_json results = {{"gpu", gpu.name},
                                      {"device", gpu.id()},
                                      {"copy_bandwidth_gbs", copy_gbs},
                                      {"runs", nlohmann::ordered_json::array()}};
    for (const std::string& shape_name : split(shapes_arg)) {
      const auto preset = find_preset(shape_name);
      if (!preset) throw std::invalid_argument("unknown shape " + shape_name + "; known: " + preset_names());
      const MoeShape shape = preset->shape;
      const auto layer = std::make_shared<const MoeLayer>(random_layer(shape, 2024));
      const double expert_bytes = (3.0 * shape.hidden * shape.intermediate) * 17.0 / 32.0 +
                                  4.0 * (2.0 * shape.intermediate + shape.hidden);
      std::vector<double> dense_ms;  // per token count, shared by the schemes
      const auto token_counts = split(tokens_arg);
      for (const std::string& scheme_name_arg : split(schemes_arg)) {
        const auto scheme = parse_scheme(scheme_name_arg);
        if (!scheme) throw std::invalid_argument("unknown scheme " + scheme_name_arg);
        if (gpu.sm < scheme_traits(*scheme).min_tensor_core_sm) {
          std::printf("%-13s %-6s skipped: its tensor cores need %s\n", shape_name.c_str(), scheme_name_arg.c_str(),
                      sm_name(scheme_traits(*scheme).min_tensor_core_sm).c_str());
          continue;
        }
        const auto prepared = cuda::prepare_cuda_backend(layer, *scheme, gpu, resolve_forced_backend(backend_arg));
        if (!prepared.decision.padding.is_identity()) throw std::invalid_argument("the benchmark shapes run unpadded");
        cuda::CudaMoe* moe = prepared.moe.get();
        const std::string backend = prepared.decision.chosen;
        if (small_batch_tokens >= 0) moe->set_small_batch_tokens(small_batch_tokens);
        for (size_t ti = 0; ti < token_counts.size(); ++ti) {
          const int T = std::stoi(token_counts[ti]);
          // Several batches in turn, with different experts, so repeated runs do not just hit L2.
          constexpr int kBatches = 4;
          std::vector<float> batches;
          double bytes = 0;
          for (int b = 0; b < kBatches; ++b) {
            const auto x = random_hidden(T, shape.hidden, 100 + b);
            const Routing r = route(*layer, x, T);
            bytes += expert_bytes * static_cast<double>(std::set<int>(r.expert_ids.begin(), r.expert_ids.end()).size());
            batches.insert(batches.end(), x.begin(), x.end());
          }
          bytes /= kBatches;
          DeviceBuffer inputs(batches.size() * sizeof(float)), out(static_cast<size_t>(T) * shape.hidden * sizeof(float));
          MXMOE_CUDA_CHECK(cudaMemcpy(inputs.as<void>(), batches.data(), batches.size() * sizeof(float), cudaMemcpyHostToDevice));
          auto forward = [&](int i) {
            moe->forward_on_device({.tokens = T,
                                    .hidden = inputs.as<float>() + static_cast<size_t>(i % kBatches) * T * shape.hidden,
                                    .output = out.as<void>(),
                                    .stream = moe->stream()});
          };
          if (profile) {
            for (int i = 0; i < 2; ++i) forward(i);
            MXMOE_CUDA_CHECK(cudaStreamSynchronize(moe->stream()));
            std::printf("%-13s %-6s %-9s %6d profiled\n", shape_name.c_str(), scheme_name_arg.c_str(), backend.c_str(), T);
            continue;
          }
          if (!timeline_path.empty()) {
            timelines.push_back({{"shape", shape_name}, {"scheme", scheme_name_arg}, {"backend", backend}, {"tokens", T},
                                 {"kernels", record_timeline(moe->stream(), forward)}});
            std::printf("%-13s %-6s %-9s %6d stamped\n", shape_name.c_str(), scheme_name_arg.c_str(), backend.c_str(), T);
            continue;
          }
          const double direct_ms = median_ms(moe->stream(), 3, reps, forward);
          const double ms = median(moe->time_forward(batches, T, {.batches = kBatches, .warmup = 3, .reps = std::max(reps, 50)}).ms);
          if (dense_ms.size() <= ti) dense_ms.push_back(dense_equivalent_ms(handle, stream, static_cast<int64_t>(T) * shape.top_k,
                                                                           shape.hidden, shape.intermediate));
          const double flops = 2.0 * T * shape.top_k * 3.0 * shape.hidden * shape.intermediate;
          const double tflops = flops / (ms * 1e-3) / 1e12, gbs = bytes / (ms * 1e-3) / 1e9;
          std::printf("%-13s %-6s %-9s %6d %10.4f %10.4f %9.1f %11.0f %10.2f %12.3f %9.2f\n", shape_name.c_str(),
                      scheme_name_arg.c_str(), backend.c_str(), T, ms, direct_ms, tflops, gbs, gbs / copy_gbs, dense_ms[ti],
                      dense_ms[ti] / ms);
          std::fflush(stdout);
          results["runs"].push_back({{"shape", shape_name}, {"scheme", scheme_name_arg}, {"backend", backend}, {"tokens", T}, {"ms", ms}, {"direct_ms", direct_ms},
                                     {"small_batch_path", T <= moe->small_batch_tokens()},
                                     {"tflops", tflops}, {"weight_gbs", gbs}, {"ratio_copy", gbs / copy_gbs},
                                     {"cublas_dense_ms", dense_ms[ti]}, {"ratio_cublas", dense_ms[ti] / ms}});
        }
      }
    }
    if (!json_path.empty()) std::ofstream(json_path) << results.dump(2) << "\n";
    if (!timeline_path.empty()) std::ofstream(timeline_path) << timelines.dump() << "\n";
    cublasDestroy(handle);
    cudaStreamDestroy(stream);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "mxmoe_bench_cuda: %s\n", e.what());
    return 1;
  }
  return 0;
}
