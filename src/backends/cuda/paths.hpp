// Which of the CUDA backend's two kernel paths runs a batch: plain arithmetic, shared by the
// backend's declaration (built without CUDA too, for the oracle's report) and the backend itself.
#pragma once

#include <string>

namespace mxmoe::cuda {

// Batches of up to this many tokens take the generic family's small-batch path (decode.hpp).
// Measured crossover on an H100 (docs/PERFORMANCE.md): the small-batch path is faster up to 32
// tokens on both gpt-oss shapes, the batched grouped GEMMs from 64 on.
constexpr int kSmallBatchTokens = 32;
constexpr int kDecodeMaxTokens = 64;     // the most tokens the small-batch path is built for
// Batches this small route with the small-batch router code in every GEMM family: for one token the
// tiled router's K slices cost more than they save (measured on an H200: 8 us of a 74 us layer).
constexpr int kSmallRouterTokens = 4;
constexpr int kDecodeMaxExperts = 1024;  // every expert block holds routing tables that grow with E
constexpr int kDecodeMaxTopK = 16;

// Whether the small-batch path can take this shape: its tables, and eight staged bf16 token rows of
// the longer K within a shared-memory budget that leaves room for two blocks per SM.
inline bool small_batch_supports(int hidden, int intermediate, int experts, int top_k) {
  const int k = hidden > intermediate ? hidden : intermediate;
  return experts <= kDecodeMaxExperts && top_k <= kDecodeMaxTopK && hidden % 32 == 0 && intermediate % 32 == 0 &&
         8 * (2 * k + 16) <= 100 * 1024;
}

// What a batch of `tokens` runs (0: the rule for every size), for `mxmoe explain`: the small-batch
// kernels up to `small_batch_tokens` where the shape allows them (every scheme of the backends runs
// there), else the `batched` pipeline.
inline std::string kernel_path(int tokens, int hidden, int intermediate, int experts, int top_k,
                               int small_batch_tokens, const std::string& batched) {
  const std::string small = "small-batch kernels (route; gate_up + SwiGLU; down + top-k sum)";
  if (!small_batch_supports(hidden, intermediate, experts, top_k)) return batched + " (shape too large for small-batch)";
  if (tokens <= 0) {
    return small + " up to " + std::to_string(small_batch_tokens) + " tokens, " + batched + " above";
  }
  return (tokens <= small_batch_tokens ? small : batched) + " at T=" + std::to_string(tokens);
}

}  // namespace mxmoe::cuda
