// Kernel launches that may overlap the previous kernel on the stream (programmatic dependent
// launch, sm_90+): the launch and the blocks' set-up run while the predecessor finishes, and the
// kernel calls wait_for_previous_grid() (device_utils.cuh) before it reads what the predecessor wrote.
#pragma once

#include <cuda_runtime.h>

#include <utility>

#include "backends/cuda/cuda_check.hpp"

namespace mxmoe::cuda {

template <class... Params, class... Args>
void launch_after_previous(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem_bytes, bool overlap,
                           cudaStream_t stream, Args&&... args) {
  cudaLaunchAttribute attribute{};
  attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attribute.val.programmaticStreamSerializationAllowed = 1;
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem_bytes;
  config.stream = stream;
  config.attrs = &attribute;
  config.numAttrs = overlap ? 1 : 0;
  MXMOE_CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

}  // namespace mxmoe::cuda
