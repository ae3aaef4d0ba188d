// Host-side launchers of the CUDA backend's kernels. All take a stream and check their launch.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "mxmoe/scheme.hpp"

namespace mxmoe::cuda {

// How many K slices the router's logits are computed in for a batch: `logits` must hold
// slices x [T][E] floats. With
// `small_batch_router`, batches the small-batch path could take use that path's router code, so that
// both paths route them bit for bit alike; otherwise every batch takes the tiled router.
int router_logit_slices(int tokens, int experts, int hidden, bool small_batch_router);

// `overlap`: the launch may overlap the tail of the kernel before it on the stream (programmatic
// dependent launch, sm_90+: launch.cuh); the kernel waits for it before touching memory.

// The router weights' tf32 parts and remainders for the tiled router ([2][count]: every part, then
// every remainder), split once when a layer is prepared rather than by every warp that reads them.
void launch_split_router_weight(const float* weight, int64_t count, uint32_t* parts, cudaStream_t stream);

// logits = x W^T + b at fp32 accuracy (into `logits`, scratch sized by router_logit_slices), the k
// largest (equal logits: lower expert first), softmax over them. Also counts the (token, slot) pairs
// per expert into `counts` (the router's first block zeroes them). Given x_bf16, the tiled router
// also writes x rounded to bf16 there and 1 to *x_scale (launch_quantize's w4a16 output, bit for
// bit) while it reads x; given x_amax (zeroed by the caller), the largest |x| as float bits there
// (launch_abs_max's result). Returns whether it did either (the small-batch router does not).
// router_weight_parts: launch_split_router_weight's split of router_weight (the tiled router reads it).
bool launch_router(const float* x, const float* router_weight, const uint32_t* router_weight_parts,
                   const float* router_bias, int tokens, int hidden, int experts, int top_k, bool small_batch_router,
                   float* logits, int32_t* expert_ids, float* expert_weights, int32_t* counts, uint16_t* x_bf16,
                   float* x_scale, uint32_t* x_amax, bool overlap, cudaStream_t stream);

// The (token, slot) pairs per expert of a routing the caller gave, into `counts` (zeroed by the
// caller), as launch_router counts its own. An id outside [0, experts) is replaced by expert 0 with
// a NaN weight, so its token's output is NaN instead of memory out of bounds.
void launch_count_pairs(int32_t* expert_ids, float* expert_weights, int pairs, int experts, int32_t* counts,
                        cudaStream_t stream);

// The caller's rows [rows, cols] (fp32 or bf16) into fp32 rows of `padded_cols`, zeros after `cols`.
void launch_rows_to_float(const void* src, bool bf16, int64_t rows, int cols, float* dst, int padded_cols,
                          cudaStream_t stream);
// fp32 rows of `padded_cols` back to the caller's [rows, cols] (fp32, or bf16 rounded to nearest even).
void launch_rows_from_float(const float* src, int padded_cols, int64_t rows, int cols, void* dst, bool bf16,
                            cudaStream_t stream);

// Pairs sorted by expert, stable in token order: pair_offsets [E+1], tile_offsets [E+1] (tiles of
// `tile_rows` pairs), source_rows[q] = token of sorted pair q, position[p] = sorted index of pair p.
void launch_sort_pairs(const int32_t* expert_ids, const int32_t* counts, int pairs, int experts, int top_k, int tile_rows,
                       int32_t* pair_offsets, int32_t* tile_offsets, int32_t* source_rows, int32_t* position,
                       bool overlap, cudaStream_t stream);

// Largest magnitude of `n` floats, as float bits, max-combined into *amax_bits (zeroed first).
void launch_abs_max(const float* x, int64_t n, uint32_t* amax_bits, cudaStream_t stream);

// The scheme's activation quantization of a [rows, cols] fp32 tensor into the GEMM input format:
// bf16 for w4a16 and w4a4 (MXFP4 values are exact in bf16), FP8 E4M3 codes for w4a8 with the scale
// amax / 448 from *amax_bits, which is also written to *tensor_scale (1 for the other schemes).
// With fp8_as_bf16, w4a8's codes are written as their values in bf16 (exact) for bf16 GEMMs.
void launch_quantize(Scheme scheme, const float* x, int64_t rows, int64_t cols, const uint32_t* amax_bits, void* out,
                     float* tensor_scale, bool fp8_as_bf16, bool overlap, cudaStream_t stream);

// Per-token FP8 (w4a8_token): row r of [rows, cols] under its own scale, its amax / 448, written to
// row_scales[r]; *tensor_scale = 1. fp8_as_bf16 as for launch_quantize. cols a multiple of 4 (a
// layer's dims are of 32).
void launch_quantize_rows(const float* x, int64_t rows, int64_t cols, void* out, float* row_scales, float* tensor_scale,
                          bool fp8_as_bf16, bool overlap, cudaStream_t stream);

// w4a8's quantization of bf16 values (bits), as the sm90 FP8 gate_up writes its intermediate: half
// the bytes of fp32 to read. *amax_bits is the largest of the values before their rounding to bf16.
void launch_quantize(Scheme scheme, const uint16_t* x_bf16, int64_t rows, int64_t cols, const uint32_t* amax_bits,
                     void* out, float* tensor_scale, bool fp8_as_bf16, bool overlap, cudaStream_t stream);

struct GemmProblem {
  const uint32_t* weights = nullptr;  // packed by the GEMM family (gemm_family.hpp)
  const uint8_t* scales = nullptr;
  // Layouts that fold each block's scale into its values relative to a reference per weight row
  // (the sm90 FP8 layout): [E][N] factors multiplying each row's sums, in the layout's row order.
  const float* row_factors = nullptr;
  const void* a = nullptr;            // [rows][K], bf16 or FP8 codes
  const int32_t* a_rows = nullptr;    // source row per sorted pair; null: the pair itself
  const int32_t* pair_offsets = nullptr;
  const int32_t* tile_offsets = nullptr;
  int experts = 0, n = 0, k = 0;
  int max_tiles = 0;                  // launch bound on the tiles of all experts
  const float* bias = nullptr;        // [E][N]
  const float* a_scale = nullptr;     // device scalar multiplying the products
  // Per-token schemes: each source row's own scale (indexed as the rows are: through a_rows when
  // set), in place of *a_scale.
  const float* a_row_scales = nullptr;
  float* out = nullptr;               // gate_up: [pairs][N/2] SwiGLU units; down: [pairs][N]
  // gate_up of a family that writes the down GEMM's input itself (gemm_family.hpp): bf16 SwiGLU
  // units [pairs][N/2] here instead of `out`, and 1 (their tensor scale) stored at *out_scale. Also
  // per-tensor FP8's gate_up on a family's FP8 layout (GemmBatchPlan::fp8_operands): the units in
  // bf16 for the quantization pass (out_scale unused).
  uint16_t* out_activations = nullptr;
  float* out_scale = nullptr;
  // gate_up writing its units for a per-tensor FP8 quantization pass, in a family that fuses it
  // (GemmFamily::writes_out_amax): the largest |value| written, as float bits, atomicMax'ed here.
  uint32_t* out_amax = nullptr;
  bool folded_scales = false;         // every weight scale code <= 128 (device_utils.cuh)
  bool gate_up = false;
  bool fp8 = false;                   // A holds FP8 E4M3 codes (w4a8), else bf16
  float alpha = 1.702f, limit = 7.0f;
  // Split-K: CTAs take `splits` slices of K and store raw partial sums in `partial`
  // ([splits][pairs][N]); an epilogue kernel adds them in slice order, then scales, adds the bias and
  // applies SwiGLU. For few pairs per expert, where the k loop of one CTA is the bottleneck.
  int splits = 1;
  float* partial = nullptr;
  int pairs = 0;
};

#ifdef __CUDACC__
// Pair q's per-token scale: its source row's (p.a_row_scales given).
__device__ __forceinline__ float row_activation_scale(const GemmProblem& p, int64_t q) {
  return p.a_row_scales[p.a_rows ? p.a_rows[q] : q];
}
// The scale multiplying pair q's products: its source row's (per-token schemes) or the tensor's.
__device__ __forceinline__ float activation_scale(const GemmProblem& p, int64_t q) {
  return p.a_row_scales == nullptr ? *p.a_scale : row_activation_scale(p, q);
}
#endif

// out[t] = sum_j weights[t*k + j] * pair_out[position[t*k + j]], j in order.
void launch_combine(const float* pair_out, const int32_t* position, const float* weights, int tokens, int hidden,
                    int top_k, float* out, bool overlap, cudaStream_t stream);

// Test hook: decodes all 256 packed bytes (two codes each) through both GEMM decoders on the
// device; out receives 512 floats per path (bf16 path first), code order low nibble first.
void decode_all_codes_for_test(float* host_out);
// Test hook: all 256 packed bytes through the two-step and the folded bf16 decoders at each of
// `count` scale codes; 1024 floats per scale (two-step first), low nibble first.
void decode_scaled_codes_for_test(const uint8_t* scales, int count, float* host_out);
// Test hook: codec::fp8_e4m3_code of each input and fp8_e4m3_value of code i % 256, on the device,
// and each input's E4M3 value by the kernels' conversion instructions (fp8_e4m3_values_x2).
void fp8_codes_for_test(const float* host_in, int n, uint8_t* host_codes, float* host_values, float* host_rounded);

}  // namespace mxmoe::cuda
