#include "backends/cuda/paths.hpp"
#include "mxmoe/backend.hpp"

#ifdef MXMOE_WITH_CUDA
#include "backends/cuda/cuda_moe.hpp"
#endif

namespace mxmoe {

BackendDeclaration cuda_backend() {
  BackendDeclaration b;
  b.name = "cuda";
  b.summary = "CUDA tensor-core MoE for any GPU from sm_80: GPU routing, grouped MXFP4 GEMMs decoded in registers";
  b.device_kind = DeviceKind::cuda;
  b.min_sm = 80;  // mma.sync with bf16 operands, cp.async
  b.schemes = {Scheme::w4a16, Scheme::w4a8, Scheme::w4a8_token, Scheme::w4a4};
  b.scheme_tensor_cores = true;  // w4a8: FP8 E4M3 tensor cores
  // Tiles guard the last rows of N and step K by MXFP4 blocks: every MXFP4 shape runs unpadded.
  b.hidden_alignment = 32;
  b.intermediate_alignment = 32;
  b.rank = 20;
  b.kernel_path = [](const Problem& p) {
    return cuda::kernel_path(p.tokens, p.hidden, p.intermediate, p.experts, p.top_k, cuda::kSmallBatchTokens,
                             "batched kernels (router, sort, quantize, grouped GEMMs, combine)");
  };
#ifdef MXMOE_WITH_CUDA
  b.prepare = [](std::shared_ptr<const MoeLayer> layer, const ExecutionPlan& plan) -> std::unique_ptr<PreparedMoe> {
    return cuda::make_cuda_moe(std::move(layer), plan);
  };
#else
  b.built = false;
  b.not_built_reason = "mxmoe was built without CUDA (no nvcc found at configure time)";
#endif
  return b;
}

}  // namespace mxmoe
