// The Hopper wgmma GEMM family (gemm.cu), plugged into the shared CUDA pipeline.
#pragma once

#include "backends/cuda/gemm_family.hpp"

namespace mxmoe::cuda::sm90 {

const GemmFamily& gemm_family();

}  // namespace mxmoe::cuda::sm90
