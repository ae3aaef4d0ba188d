// The Hopper family's small-batch expert kernels (the path of backends/cuda/decode.hpp), reading
// the sm90 weight layout, so the weights live on the GPU once for both paths.
#pragma once

#include "backends/cuda/decode.hpp"

namespace mxmoe::cuda::sm90 {

const SmallBatchExperts& small_batch_experts();

}  // namespace mxmoe::cuda::sm90
