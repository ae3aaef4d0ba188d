#include "mxmoe/device.hpp"

namespace mxmoe {

// This build has no CUDA support, so no GPU can be used.
std::vector<DeviceSpec> detect_cuda_devices() { return {}; }

}  // namespace mxmoe
