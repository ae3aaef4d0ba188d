#pragma once

#include <cuda_runtime_api.h>

#include <functional>
#include <memory>
#include <optional>
#include <vector>

#include "backends/cuda/gemm_family.hpp"
#include "mxmoe/backend.hpp"
#include "mxmoe/oracle.hpp"

namespace mxmoe::cuda {

// The CUDA backend's prepared layer (cuda_moe.cu): weights uploaded once, buffers reused.
class CudaMoe : public PreparedMoe {
 public:
  virtual cudaStream_t stream() const = 0;  // where batches without a stream of their own run
  // For tests: fill every scratch buffer and the output with NaN before each run, so a kernel that
  // leaves part of its output unwritten, or reads what nothing wrote, shows up as NaN.
  virtual void poison_buffers_for_test(bool on) = 0;
  // Batches of up to this many tokens take the small-batch path (decode.hpp); 0: never. The
  // default is the path's measured crossover; tests set it to run both paths on one batch.
  virtual void set_small_batch_tokens(int tokens) = 0;
  virtual int small_batch_tokens() const = 0;
};

// A CUDA backend of the registry (the oracle's choice for `gpu`, or the forced one) prepared as
// the runner prepares it, padding included, with the device-level controls exposed: for benchmarks
// and tests. Throws OracleError when it cannot run, std::invalid_argument when it is not CUDA.
// The CUDA layer runs at the decision's padded dims (its forward takes and returns padded rows).
struct PreparedCudaLayer {
  Decision decision;
  std::unique_ptr<CudaMoe> moe;
};
PreparedCudaLayer prepare_cuda_backend(std::shared_ptr<const MoeLayer> layer, Scheme scheme, const DeviceSpec& gpu,
                                       const std::optional<ForcedBackend>& forced = std::nullopt);

// Milliseconds of each of `reps` runs of enqueue(rep) on `stream`, timed by CUDA events.
std::vector<double> time_on_stream(cudaStream_t stream, int reps, const std::function<void(int rep)>& enqueue);
// This GPU's device-to-device copy bandwidth (bytes read + written per second), the median of 10
// copies of 1 GiB.
double device_copy_bandwidth_gbs(cudaStream_t stream);

// The shared CUDA pipeline around one family of GEMM kernels.
std::unique_ptr<CudaMoe> make_cuda_moe(std::shared_ptr<const MoeLayer> layer, const ExecutionPlan& plan,
                                       const GemmFamily& gemms = generic_gemm_family());

}  // namespace mxmoe::cuda
