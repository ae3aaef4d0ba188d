// The small-batch path of the CUDA backends: for a few tokens the layer is a stream of expert
// weights, so it runs as three kernels and no scratch passes:
//   1. route (shared by every GEMM family): the router logits, a block per (expert, 8 tokens), and
//      for the FP8 schemes a column of blocks beside them for the hidden states' largest magnitudes
//      (w4a8's of the tensor, w4a8_token's of each token); without logits for the caller's routing,
//      and none at all unless an FP8 scheme needs the magnitudes;
//   2. gate_up: a persistent grid over (active expert, row tile) items streaming the expert's MXFP4
//      weights into tensor-core fragments, tokens gathered and quantized into shared memory; SwiGLU
//      in the epilogue. Each block first takes the top-k from the logits and lists the active
//      experts and their pairs in its own shared memory (decode_device.cuh: every block builds the
//      same tables, so none waits on a serial step). Per-token FP8 (w4a8_token): a token's scale
//      comes from the route kernel (its largest |x|), and the epilogue gathers each pair's largest
//      |intermediate| for down's scale, so a block reads each row it stages once;
//   3. down: the same over (active expert, 64 rows of H); its blocks build the routing and start
//      streaming weights while gate_up finishes (they wait for it only to read the intermediates);
//      the block that completes a token's k experts for a row tile sums them in slot order, so the
//      top-k weighted sum needs no separate pass and is deterministic.
// Kernels 2 and 3 read their family's weight layout: each GEMM family brings its own
// (SmallBatchExperts; the generic family's here in decode.cu, the Hopper one's in cuda_sm90/).
// Every launch is capture-safe (no allocation, no host synchronization): a CUDA graph replays it.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "backends/cuda/paths.hpp"
#include "mxmoe/scheme.hpp"

namespace mxmoe::cuda {

// Counters shared by the blocks of one run. Zero between runs: each is reset by its last user.
struct DecodeControl {
  uint32_t amax_bits[2];  // w4a8: largest |x|, largest |intermediate| (float bits)
};

constexpr int kDecodeDownRows = 64;  // rows of H per down item (and per combine counter)
constexpr int kDownMaxParts = 2;     // K parts a down item may be cut in (pair_out holds each)

struct DecodeLayerArgs {
  Scheme scheme = Scheme::w4a16;
  int tokens = 0, hidden = 0, intermediate = 0, experts = 0, top_k = 0;
  float alpha = 1.702f, limit = 7.0f;
  const float* x = nullptr;  // [T][H]
  const float* router_weight = nullptr;
  const float* router_bias = nullptr;
  // The caller's routing [T][k], when it routes itself (as inference engines do): the blocks take it
  // instead of the router's (no router logits are computed). An id outside [0, E) becomes expert 0
  // with a NaN weight, as on the batched path: its token's output is NaN.
  const int32_t* given_ids = nullptr;
  const float* given_weights = nullptr;
  const uint32_t* gate_up_words = nullptr;  // layout.hpp, the scheme's layout
  const uint8_t* gate_up_scales = nullptr;
  const float* gate_up_bias = nullptr;
  const uint32_t* down_words = nullptr;
  const uint8_t* down_scales = nullptr;
  const float* down_bias = nullptr;
  // Workspace, sized for kDecodeMaxTokens when the backend prepares the layer (cuda_moe.cu).
  float* logits = nullptr;           // [T][E]
  int32_t* expert_ids = nullptr;     // [T][k], the routing (output)
  float* expert_weights = nullptr;   // [T][k]
  DecodeControl* control = nullptr;  // zeroed once when allocated
  float* intermediate_out = nullptr; // [T k][I], SwiGLU outputs
  float* pair_out = nullptr;         // [kDownMaxParts][T k][H]: each pair's down rows, by K part
  uint32_t* combine_counts = nullptr;  // [T][H / kDecodeDownRows], zeroed once when allocated
  float* tensor_scales = nullptr;    // [2]
  float* row_scales = nullptr;       // per-token schemes: [T] the tokens', then [T k] the pairs' (pair order)
  // Per-token schemes: [T k] each pair's largest |intermediate| (float bits), zeroed by the route
  // kernel and gathered by gate_up (atomicMax: non-negative floats order as their bits do).
  uint32_t* pair_max_bits = nullptr;
  float* out = nullptr;              // [T][H]
  int gate_up_grid = 0, down_grid = 0;  // the family's grids for this batch (DecodeGrids)
  // Every weight scale code is at most 128: the decode's 2^126 and the block scale are one bf16
  // multiply (the grids and the launch must agree).
  bool folded_scales = false;
  // Programmatic dependent launch between the three kernels (sm_90 and newer).
  bool overlap_launches = false;
};

// Persistent grid sizes (as many blocks as stay resident on the SMs) by the tokens of a batch, up
// to kDecodeGridTokens (the grids of larger batches are the last entry's): a kernel's shared
// memory may grow with the tokens it stages.
constexpr int kDecodeGridTokens = 8;
struct DecodeGrids {
  int gate_up[kDecodeGridTokens] = {};
  int down[kDecodeGridTokens] = {};
  int gate_up_for(int tokens) const { return gate_up[(tokens < kDecodeGridTokens ? tokens : kDecodeGridTokens) - 1]; }
  int down_for(int tokens) const { return down[(tokens < kDecodeGridTokens ? tokens : kDecodeGridTokens) - 1]; }
};

// A GEMM family's small-batch expert kernels (2 and 3 above) for its weight layout.
struct SmallBatchExperts {
  // Batches of up to this many tokens take the small-batch path (measured crossover, paths.hpp).
  int max_tokens = 0;
  DecodeGrids (*grids)(Scheme scheme, bool folded_scales, int hidden, int intermediate, int experts, int top_k,
                       int sm_count) = nullptr;
  // Enqueues gate_up and down after what precedes them on the stream: the route kernel, or the
  // caller's last kernel when the caller routes (programmatic dependent launch when set).
  void (*launch)(const DecodeLayerArgs& args, cudaStream_t stream) = nullptr;
};

// The generic family's: mma.sync fragments loaded straight from the generic layout (layout.hpp).
const SmallBatchExperts& generic_small_batch_experts();

// The whole small-batch layer: the route kernel (not for the caller's routing, unless an FP8
// scheme needs the hidden states' largest magnitudes), then the family's expert kernels.
void launch_decode_layer(const DecodeLayerArgs& args, const SmallBatchExperts& experts, cudaStream_t stream);

}  // namespace mxmoe::cuda
