#include "backends/cuda/paths.hpp"
#include "backends/cuda_sm90/small_batch_tokens.hpp"
#include "mxmoe/backend.hpp"

#ifdef MXMOE_WITH_CUDA
#include "backends/cuda/cuda_moe.hpp"
#include "backends/cuda_sm90/family.hpp"
#endif

namespace mxmoe {

BackendDeclaration cuda_sm90_backend() {
  BackendDeclaration b;
  b.name = "cuda_sm90";
  b.summary = "Hopper wgmma MoE (sm_90a code): MXFP4 weights decoded into wgmma register operands, tokens on N";
  b.device_kind = DeviceKind::cuda;
  b.min_sm = 90;
  b.exact_sm = {90};  // wgmma is sm_90a code: it runs on compute capability 9.0 and nothing else
  // All on bf16 tensor cores: w4a4's MXFP4 activations and w4a8's FP8 ones are exact in bf16 (w4a8
  // scales after the MMA). FP8 tensor cores for w4a8 are issue 12's next step.
  b.schemes = {Scheme::w4a16, Scheme::w4a8, Scheme::w4a8_token, Scheme::w4a4};
  b.scheme_tensor_cores = true;
  // 64-row warpgroup tiles over N and 64-deep k steps: H, I (and so 2I) multiples of 64.
  b.hidden_alignment = 64;
  b.intermediate_alignment = 64;
  b.rank = 30;  // preferred over the generic cuda backend where both can run
  b.kernel_path = [](const Problem& p) {
    return cuda::kernel_path(p.scheme, p.tokens, p.hidden, p.intermediate, p.experts, p.top_k, cuda::sm90::kSmallBatchTokens,
                             "batched kernels (router, sort, quantize, wgmma gate_up + SwiGLU, wgmma down, combine)");
  };
#ifdef MXMOE_WITH_CUDA
  b.prepare = [](std::shared_ptr<const MoeLayer> layer, const ExecutionPlan& plan) -> std::unique_ptr<PreparedMoe> {
    return cuda::make_cuda_moe(std::move(layer), plan, cuda::sm90::gemm_family());
  };
#else
  b.built = false;
  b.not_built_reason = "mxmoe was built without CUDA (no nvcc found at configure time)";
#endif
  return b;
}

}  // namespace mxmoe
