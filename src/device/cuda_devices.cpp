// CUDA GPUs of this machine, through the runtime API. Built only with CUDA; see cuda_devices_none.cpp.
#include <cuda_runtime_api.h>

#include "mxmoe/device.hpp"

namespace mxmoe {

std::vector<DeviceSpec> detect_cuda_devices() {
  std::vector<DeviceSpec> gpus;
  int count = 0;
  // No driver or no GPU is not an error here: the machine simply has no CUDA device.
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return gpus;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    DeviceSpec d;
    d.kind = DeviceKind::cuda;
    d.sm = prop.major * 10 + prop.minor;
    d.sm_count = prop.multiProcessorCount;
    d.memory_bytes = prop.totalGlobalMem;
    d.ordinal = i;
    d.name = prop.name;
    d.detected = true;
    gpus.push_back(d);
  }
  return gpus;
}

}  // namespace mxmoe
