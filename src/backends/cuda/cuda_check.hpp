// Every CUDA call is checked; a failure throws with the call, the place and CUDA's own words.
#pragma once

#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

namespace mxmoe::cuda {

class CudaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline void check(cudaError_t status, const char* what, const char* file, int line) {
  if (status != cudaSuccess) {
    throw CudaError(std::string("CUDA error in ") + what + " (" + file + ":" + std::to_string(line) +
                    "): " + cudaGetErrorName(status) + ": " + cudaGetErrorString(status));
  }
}

}  // namespace mxmoe::cuda

#define MXMOE_CUDA_CHECK(call) ::mxmoe::cuda::check((call), #call, __FILE__, __LINE__)
// After a kernel launch: launch errors now, and (with MXMOE_CUDA_SYNC_CHECK) execution errors too.
#define MXMOE_CUDA_CHECK_LAUNCH(name) ::mxmoe::cuda::check(cudaGetLastError(), "launch of " name, __FILE__, __LINE__)
