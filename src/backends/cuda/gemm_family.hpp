// The seam between the shared CUDA pipeline (routing, sort, activation quantization, combine and
// buffers: cuda_moe.cu) and a family of grouped-GEMM kernels. A family brings its weight layout and
// its two launches; a CUDA backend folder is a family plus a declaration.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "backends/cuda/decode.hpp"
#include "backends/cuda/kernels.hpp"
#include "backends/cuda/layout.hpp"
#include "mxmoe/moe.hpp"

namespace mxmoe::cuda {

// How one batch's GEMMs run: the pairs per tile (the sort's unit), a family-defined kernel
// variant, and split-K slices (1: none).
struct GemmBatchPlan {
  int tile_rows = 16;
  int variant = 0;
  int gate_up_splits = 1;
  int down_splits = 1;
  // FP8-activation schemes: whether this batch's GEMMs take FP8 codes from the family's fp8_words
  // (PackedWeights), where it packed them; else their values in bf16 from `words`. Then per-tensor
  // FP8's gate_up writes its SwiGLU units in bf16 (GemmProblem::out_activations) for the
  // quantization pass.
  bool fp8_operands = false;
};

struct GemmFamily {
  const char* name = "";
  // 0: any GPU the backend's declaration admits; else the one compute capability its code is for.
  int exact_sm = 0;
  // Re-lays one MXFP4 tensor for the kernels at its padded dims. gate_up tensors hold (gate,
  // linear) rows in pairs.
  PackedWeights (*pack)(const detail::PaddedMxfp4& weights, Scheme scheme, bool gate_up) = nullptr;
  // fp8_layout: the layer holds the weights `pack` gave in fp8_words.
  GemmBatchPlan (*plan)(Scheme scheme, int64_t pairs, int64_t active_experts, const MoeShape& shape, int sm_count,
                        bool fp8_layout) = nullptr;
  // Runs the gate_up (problem.gate_up) or the down GEMM of a batch.
  void (*launch)(const GemmProblem& problem, const GemmBatchPlan& plan, cudaStream_t stream) = nullptr;
  // Whether the GEMMs of FP8-activation schemes read FP8 codes (FP8 tensor cores) from `words`; if
  // not, they do from fp8_words where `pack` gave them and the plan says so (fp8_operands), else
  // the pipeline hands them the codes' values in bf16 (exact) and they run on bf16 tensor cores.
  bool fp8_inputs = true;
  // Whether gate_up writes the down GEMM's input (bf16) itself under this scheme, so the batch needs
  // no fp32 intermediate and no quantization pass.
  bool (*writes_down_input)(Scheme scheme) = nullptr;
  // Whether gate_up honours GemmProblem::out_amax, so the pipeline needs no pass over the
  // intermediate for its per-tensor FP8 scale.
  bool writes_out_amax = false;
  // The small-batch path's expert kernels for this layout (decode.hpp); null: the family has none.
  const SmallBatchExperts* small_batch = nullptr;
  // Whether batches above kSmallRouterTokens route with the tiled router (routing.cu), which also
  // writes w4a16's GEMM input; otherwise with the small-batch path's router code, bit for bit as
  // that path routes.
  bool tiled_router = true;
};

// The mma.sync kernels of gemm.cu: sm_80 and newer.
const GemmFamily& generic_gemm_family();

}  // namespace mxmoe::cuda
