#include "backends/cuda/paths.hpp"
#include "backends/cuda_sm90/small_batch_tokens.hpp"
#include "backends/cuda_sm90/tile_widths.hpp"
#include "mxmoe/backend.hpp"

#ifdef MXMOE_WITH_CUDA
#include "backends/cuda/cuda_moe.hpp"
#include "backends/cuda_sm90/family.hpp"
#endif

namespace mxmoe {
namespace {

// Whether the batched GEMMs of a problem run on FP8 tensor cores (tokens unknown: they may).
bool batched_on_fp8_cores(const Problem& p) {
  const int64_t pairs = int64_t{p.tokens} * p.top_k;
  const int width = p.tokens == 0 ? 128 : cuda::sm90::tile_width(pairs, std::min<int64_t>(p.experts, pairs));
  return cuda::sm90::runs_on_fp8_cores(p.scheme, width);
}

}  // namespace

BackendDeclaration cuda_sm90_backend() {
  BackendDeclaration b;
  b.name = "cuda_sm90";
  b.summary = "Hopper wgmma MoE (sm_90a code): MXFP4 weights decoded into wgmma register operands, tokens on N";
  b.device_kind = DeviceKind::cuda;
  b.min_sm = 90;
  b.exact_sm = {90};  // wgmma is sm_90a code: it runs on compute capability 9.0 and nothing else
  // w4a16 and w4a4 on bf16 tensor cores (MXFP4 activations are exact in bf16); w4a8's batched GEMMs
  // on FP8 tensor cores (gemm_fp8.cu), its small-batch kernels on bf16 ones (FP8 values are exact
  // in bf16; the scale applies after the MMA).
  b.schemes = {Scheme::w4a16, Scheme::w4a8, Scheme::w4a8_token, Scheme::w4a4};
  b.scheme_tensor_cores = true;
  // 64-row warpgroup tiles over N and 64-deep k steps: H, I (and so 2I) multiples of 64.
  b.hidden_alignment = 64;
  b.intermediate_alignment = 64;
  b.rank = 30;  // preferred over the generic cuda backend where both can run
  b.kernel_path = [](const Problem& p) {
    const std::string gemms = batched_on_fp8_cores(p) ? "FP8 wgmma" : "wgmma";
    return cuda::kernel_path(p.tokens, p.hidden, p.intermediate, p.experts, p.top_k, cuda::sm90::kSmallBatchTokens,
                             "batched kernels (router, sort, quantize, " + gemms + " gate_up + SwiGLU, " + gemms +
                                 " down, combine)");
  };
  // Hopper's FP8 MMA keeps about 14 bits of its sums while it accumulates (DeepSeek-V3's report
  // for the H800), aligned to the largest term: over K = 2880 a GEMM sum moves by about 1e-4 to
  // 4e-4 relative (the output's error to the reference, 0.7-1.2e-2 at w4a8, is what requantizing
  // an intermediate that far off gives), and the largest of a row by up to 5e-3 (twenty-first
  // session, H200), against fp32's 1e-7. Where the FP8 layout cannot hold a layer exactly, its w4a8
  // GEMMs run on bf16 tensor cores and stay well within that.
  b.accumulation_error = [](const Problem& p) {
    const bool small_batch = cuda::small_batch_supports(p.hidden, p.intermediate, p.experts, p.top_k) && p.tokens > 0 &&
                             p.tokens <= cuda::sm90::kSmallBatchTokens;
    return !small_batch && batched_on_fp8_cores(p) ? 4e-4 : 0.0;
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
