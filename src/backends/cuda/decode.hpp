// The small-batch path of the CUDA backend: for a few tokens the layer is a stream of expert
// weights, so it runs as three kernels and no scratch passes:
//   1. route: router logits in many blocks; the last block to finish takes the top-k, the softmax
//      and the list of active experts with their pairs, stable in token order (and the w4a8 scale);
//   2. gate_up: a persistent grid over (active expert, 128 weight rows): each warp streams 16 rows of
//      MXFP4 weights straight from memory into mma.sync fragments, tokens (gathered and quantized
//      into shared memory) on the MMA's M; SwiGLU in the epilogue;
//   3. down: the same over (active expert, 64 rows of H) with K split over two warps per row group;
//      the block that completes a token's k experts for a row tile sums them in slot order, so the
//      top-k weighted sum needs no separate pass and is deterministic.
// Every launch is capture-safe (no allocation, no host synchronization): a CUDA graph replays it.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "backends/cuda/paths.hpp"
#include "mxmoe/scheme.hpp"

namespace mxmoe::cuda {

// Counters shared by the blocks of one run. Zero between runs: each is reset by its last user.
struct DecodeControl {
  uint32_t ticket;        // route blocks finished
  uint32_t amax_bits[2];  // w4a8: largest |x|, largest |intermediate| (float bits)
  int32_t active;         // experts with at least one pair
};

constexpr int kDecodeDownRows = 64;  // rows of H per down item (and per combine counter)

struct DecodeLayerArgs {
  Scheme scheme = Scheme::w4a16;
  int tokens = 0, hidden = 0, intermediate = 0, experts = 0, top_k = 0;
  float alpha = 1.702f, limit = 7.0f;
  const float* x = nullptr;  // [T][H]
  const float* router_weight = nullptr;
  const float* router_bias = nullptr;
  const uint32_t* gate_up_words = nullptr;  // layout.hpp, the scheme's layout
  const uint8_t* gate_up_scales = nullptr;
  const float* gate_up_bias = nullptr;
  const uint32_t* down_words = nullptr;
  const uint8_t* down_scales = nullptr;
  const float* down_bias = nullptr;
  // Workspace, sized for kDecodeMaxTokens when the backend prepares the layer (cuda_moe.cu).
  float* logits = nullptr;           // [T][E]
  int32_t* expert_ids = nullptr;     // [T][k]
  float* expert_weights = nullptr;   // [T][k]
  DecodeControl* control = nullptr;  // zeroed once when allocated
  int32_t* active_experts = nullptr; // [min(E, T k)]
  int32_t* pair_begin = nullptr;     // [min(E, T k) + 1]
  int32_t* sorted_pairs = nullptr;   // [T k]: pair ids t k + j, grouped by active expert
  float* intermediate_out = nullptr; // [T k][I], SwiGLU outputs
  float* pair_out = nullptr;         // [T k][H]
  uint32_t* combine_counts = nullptr;  // [T][H / kDecodeDownRows], zeroed once when allocated
  float* tensor_scales = nullptr;    // [2]
  float* out = nullptr;              // [T][H]
  int gate_up_grid = 0, down_grid = 0;
  // Every weight scale code is at most 128: the decode's 2^126 and the block scale are one bf16
  // multiply (decode_grids and the launch must agree).
  bool folded_scales = false;
  // Programmatic dependent launch between the three kernels (sm_90 and newer).
  bool overlap_launches = false;
};

// Persistent grid sizes: as many blocks as stay resident on `sm_count` SMs.
void decode_grids(Scheme scheme, bool folded_scales, int hidden, int intermediate, int sm_count, int& gate_up_grid,
                  int& down_grid);

void launch_decode_layer(const DecodeLayerArgs& args, cudaStream_t stream);

}  // namespace mxmoe::cuda
