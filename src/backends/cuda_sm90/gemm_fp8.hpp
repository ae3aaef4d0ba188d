// The sm90 family's GEMMs on FP8 tensor cores (gemm_fp8.cu): w4a8's batched path, weights in the
// FP8 layout (layout_fp8.hpp), activations as E4M3 codes.
#pragma once

#include <cuda_runtime_api.h>

#include "backends/cuda/kernels.hpp"

namespace mxmoe::cuda::sm90 {

// Runs gate_up or down (p.gate_up) at the sort's tile width `variant` (gemm.cu's variants).
void launch_fp8(const GemmProblem& p, int variant, cudaStream_t stream);

}  // namespace mxmoe::cuda::sm90
