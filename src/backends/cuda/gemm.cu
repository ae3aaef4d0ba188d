// Grouped MXFP4 GEMM for MoE experts on tensor cores (mma.sync), any GPU from sm_80.
//
// Each CTA computes a BM x BN tile of one expert: BM sorted (token, slot) pairs by BN weight rows.
// The k loop walks 32-wide MXFP4 blocks through a cp.async pipeline; weights arrive as packed words
// in B-fragment order (layout.hpp) and are decoded in registers:
// - bf16 path (w4a16, w4a4): codes -> bf16 with the block scale applied (exact), m16n8k16 MMAs;
// - FP8 path (w4a8, sm_89+): codes -> E4M3, one m16n8k32 MMA per block into a partial sum that is
//   scaled in fp32 (E4M3 cannot hold the scale), which also keeps FP8 MMA accumulation to 32 terms.
// The epilogue applies the activation tensor scale and the bias, then either SwiGLU (gate_up: a
// thread's two accumulator columns are exactly a (gate, linear) pair) or a plain store (down).
#include <cuda_bf16.h>

#include <algorithm>

#include "backends/cuda/cuda_check.hpp"
#include "backends/cuda/device_utils.cuh"
#include "backends/cuda/gemm_family.hpp"
#include "backends/cuda/kernels.hpp"

namespace mxmoe::cuda {

namespace {

constexpr int kThreads = 128;  // four warps

template <bool kFp8, int kBM, int kBN, int kWarpsM, int kWarpsN, int kStages>
struct GemmConfig {
  static constexpr bool fp8 = kFp8;
  static constexpr int BM = kBM, BN = kBN, warps_m = kWarpsM, warps_n = kWarpsN, stages = kStages;
  static constexpr int WM = BM / warps_m, WN = BN / warps_n;
  static constexpr int MT = WM / 16, NT = WN / 8;
  static constexpr int a_elem = fp8 ? 1 : 2;                 // bytes per activation
  static constexpr int a_row_bytes = 32 * a_elem;            // one k block
  static constexpr int a_chunks = a_row_bytes / 16;          // 16-byte chunks per row
  static constexpr int a_bytes = BM * a_row_bytes;
  static constexpr int b_bytes = BN * 16;                    // (BN/8) groups x 32 words
  static constexpr int s_bytes = BN;                         // (BN/8) groups x 8 scales
  static constexpr int stage_bytes = a_bytes + b_bytes + s_bytes;
  static constexpr int smem_bytes = stages * stage_bytes;
  static_assert(warps_m * warps_n == kThreads / 32);
  static_assert(WM % 16 == 0 && WN % 8 == 0 && BN % 16 == 0);
};

// Chunk c of row r of an A tile sits at chunk c ^ swizzle(r), so the 8 rows an ldmatrix reads at
// once hit distinct banks.
template <class C>
__device__ __forceinline__ int a_chunk_offset(int row, int chunk) {
  const int swizzle = C::fp8 ? ((row >> 2) & 1) : ((row >> 1) & 3);
  return row * C::a_row_bytes + ((chunk ^ swizzle) << 4);
}

// Columns n and n + 1 of pair q from their sums: the activation scale and the bias, then SwiGLU of
// the (gate, linear) pair for gate_up, or a plain store for down.
__device__ __forceinline__ void store_output(const GemmProblem& p, int expert, int64_t q, int n, float sum0, float sum1) {
  const float a_scale = activation_scale(p, q);
  const float* bias = p.bias + static_cast<int64_t>(expert) * p.n;
  const float v0 = sum0 * a_scale + bias[n], v1 = sum1 * a_scale + bias[n + 1];
  if (p.gate_up) {
    p.out[q * (p.n / 2) + n / 2] = swiglu(v0, v1, p.alpha, p.limit);
  } else {
    *reinterpret_cast<float2*>(p.out + q * p.n + n) = make_float2(v0, v1);
  }
}

template <class C>
__global__ void __launch_bounds__(kThreads) moe_gemm_kernel(GemmProblem p) {
  extern __shared__ __align__(128) unsigned char smem[];

  // Which expert and which rows: tile_offsets maps the launch's tile index to an expert.
  const int tile = blockIdx.y;
  if (tile >= p.tile_offsets[p.experts]) return;
  const int expert = owner_of(p.tile_offsets, p.experts, tile);
  const int row0 = p.pair_offsets[expert] + (tile - p.tile_offsets[expert]) * C::BM;
  const int rows = min(C::BM, p.pair_offsets[expert + 1] - row0);
  const int n0 = blockIdx.x * C::BN;
  const int kblocks_all = p.k / 32;
  const int slice = (kblocks_all + p.splits - 1) / p.splits;
  const int kb_begin = blockIdx.z * slice;
  const int kblocks = min(kblocks_all, kb_begin + slice) - kb_begin;  // this CTA's k blocks
  if (kblocks <= 0 && p.splits == 1) return;
  const int groups = p.n / 8;

  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int warp_m = warp / C::warps_n, warp_n = warp % C::warps_n;

  const unsigned char* a_base = static_cast<const unsigned char*>(p.a);
  const uint32_t* w_base = p.weights + (static_cast<int64_t>(expert) * groups + n0 / 8) * kblocks_all * 32;
  const uint8_t* s_base = p.scales + (static_cast<int64_t>(expert) * groups + n0 / 8) * kblocks_all * 8;

  // The A rows this thread copies, looked up once: a lookup per stage would put a dependent global
  // load in front of every stage's copies.
  constexpr int kAChunksPerThread = (C::BM * C::a_chunks + kThreads - 1) / kThreads;
  const unsigned char* a_src[kAChunksPerThread];
#pragma unroll
  for (int j = 0; j < kAChunksPerThread; ++j) {
    const int i = threadIdx.x + j * kThreads;
    const int r = i / C::a_chunks, c = i % C::a_chunks;
    const bool valid = i < C::BM * C::a_chunks && r < rows;
    const int64_t src_row = valid ? (p.a_rows ? p.a_rows[row0 + r] : row0 + r) : -1;
    a_src[j] = src_row < 0 ? nullptr : a_base + src_row * p.k * C::a_elem + c * 16;
  }

  auto load_stage = [&](int stage, int kb) {
    unsigned char* s = smem + stage * C::stage_bytes;
#pragma unroll
    for (int j = 0; j < kAChunksPerThread; ++j) {
      const int i = threadIdx.x + j * kThreads;
      if (i >= C::BM * C::a_chunks) break;
      const int r = i / C::a_chunks, c = i % C::a_chunks;
      const bool valid = a_src[j] != nullptr;
      cp_async_16(s + a_chunk_offset<C>(r, c), valid ? a_src[j] + (kb_begin + kb) * 32 * C::a_elem : a_base, valid);
    }
    unsigned char* sb = s + C::a_bytes;
    // Weight groups past N (the last tile of an N that is not a multiple of BN) are zero-filled.
    for (int i = threadIdx.x; i < C::BN; i += kThreads) {  // BN/8 groups x 8 chunks of 16 bytes
      const int g = i / 8, c = i % 8;
      const bool valid = n0 + 8 * g < p.n;
      cp_async_16(sb + i * 16, w_base + (valid ? (static_cast<int64_t>(g) * kblocks_all + kb_begin + kb) * 32 + c * 4 : 0),
                  valid);
    }
    unsigned char* ss = sb + C::b_bytes;
    for (int g = threadIdx.x; g < C::BN / 8; g += kThreads) {
      const bool valid = n0 + 8 * g < p.n;
      cp_async_8(ss + g * 8, s_base + (valid ? (static_cast<int64_t>(g) * kblocks_all + kb_begin + kb) * 8 : 0), valid);
    }
  };

  float acc[C::MT][C::NT][4];
#pragma unroll
  for (int mt = 0; mt < C::MT; ++mt) {
#pragma unroll
    for (int nt = 0; nt < C::NT; ++nt) acc[mt][nt][0] = acc[mt][nt][1] = acc[mt][nt][2] = acc[mt][nt][3] = 0.0f;
  }

#pragma unroll
  for (int s = 0; s < C::stages - 1; ++s) {
    if (s < kblocks) load_stage(s, s);
    cp_async_commit();
  }

  for (int kb = 0; kb < kblocks; ++kb) {
    cp_async_wait<C::stages - 2>();
    __syncthreads();
    {
      const int next = kb + C::stages - 1;
      if (next < kblocks) load_stage(next % C::stages, next);
      cp_async_commit();
    }
    const unsigned char* s = smem + (kb % C::stages) * C::stage_bytes;
    const uint32_t* sb = reinterpret_cast<const uint32_t*>(s + C::a_bytes);
    const uint8_t* ss = s + C::a_bytes + C::b_bytes;

    if constexpr (!C::fp8) {
      // Weights: four bf16x2 registers per 8-row group (two k16 steps), block scale applied.
      uint32_t b[C::NT][4];
#pragma unroll
      for (int nt = 0; nt < C::NT; ++nt) {
        const int g = warp_n * C::NT + nt;
        const uint32_t word = sb[g * 32 + lane];
        const __nv_bfloat162 scale2 = e8m0_bf16x2(ss[g * 8 + lane / 4]);
#pragma unroll
        for (int r = 0; r < 4; ++r) b[nt][r] = decode_bf16x2(word >> (4 * r), scale2);
      }
#pragma unroll
      for (int ks = 0; ks < 2; ++ks) {
#pragma unroll
        for (int mt = 0; mt < C::MT; ++mt) {
          uint32_t a[4];
          const int matrix = lane / 8;
          const int row = warp_m * C::WM + mt * 16 + (matrix & 1) * 8 + lane % 8;
          ldmatrix_x4(a, s + a_chunk_offset<C>(row, 2 * ks + (matrix >> 1)));
#pragma unroll
          for (int nt = 0; nt < C::NT; ++nt) mma_bf16_16816(acc[mt][nt], a, b[nt][2 * ks], b[nt][2 * ks + 1]);
        }
      }
    } else {
      uint32_t b[C::NT][2];
      float scale[C::NT][2];  // for the thread's two accumulator columns
#pragma unroll
      for (int nt = 0; nt < C::NT; ++nt) {
        const int g = warp_n * C::NT + nt;
        const uint32_t word = sb[g * 32 + lane];
        b[nt][0] = decode_e4m3x4(word & 0x0F0F0F0Fu);
        b[nt][1] = decode_e4m3x4((word >> 4) & 0x0F0F0F0Fu);
        // The E4M3 weights are the values times 2^-6: fold 2^6 into the scale.
        scale[nt][0] = e8m0_float(ss[g * 8 + 2 * (lane % 4)]) * 64.0f;
        scale[nt][1] = e8m0_float(ss[g * 8 + 2 * (lane % 4) + 1]) * 64.0f;
      }
#pragma unroll
      for (int mt = 0; mt < C::MT; ++mt) {
        uint32_t a[4];
        const int matrix = lane / 8;
        const int row = warp_m * C::WM + mt * 16 + (matrix & 1) * 8 + lane % 8;
        ldmatrix_x4(a, s + a_chunk_offset<C>(row, matrix >> 1));
#pragma unroll
        for (int nt = 0; nt < C::NT; ++nt) {
          float part[4] = {0.0f, 0.0f, 0.0f, 0.0f};
          mma_e4m3_16832(part, a, b[nt][0], b[nt][1]);
          acc[mt][nt][0] += part[0] * scale[nt][0];
          acc[mt][nt][1] += part[1] * scale[nt][1];
          acc[mt][nt][2] += part[2] * scale[nt][0];
          acc[mt][nt][3] += part[3] * scale[nt][1];
        }
      }
    }
  }
  cp_async_wait<0>();

  // Epilogue. Accumulator element (i) of tile (mt, nt): row 16mt + lane/4 (+8 for i >= 2),
  // column 8nt + 2(lane%4) (+1 for odd i). With split-K, the raw partial sums go to the workspace
  // and splitk_epilogue_kernel finishes.
  float* partial = p.partial + static_cast<int64_t>(blockIdx.z) * p.pairs * p.n;
#pragma unroll
  for (int mt = 0; mt < C::MT; ++mt) {
#pragma unroll
    for (int half = 0; half < 2; ++half) {
      const int r = warp_m * C::WM + mt * 16 + lane / 4 + half * 8;
      if (r >= rows) continue;
      const int64_t q = row0 + r;
#pragma unroll
      for (int nt = 0; nt < C::NT; ++nt) {
        const int n = n0 + warp_n * C::WN + nt * 8 + 2 * (lane % 4);
        if (n >= p.n) continue;
        if (p.splits > 1) {
          *reinterpret_cast<float2*>(partial + q * p.n + n) = make_float2(acc[mt][nt][2 * half], acc[mt][nt][2 * half + 1]);
        } else {
          store_output(p, expert, q, n, acc[mt][nt][2 * half], acc[mt][nt][2 * half + 1]);
        }
      }
    }
  }
}

// Adds the split-K slices in order, then the same epilogue as the GEMM's own. One thread per pair
// of adjacent columns.
__global__ void splitk_epilogue_kernel(GemmProblem p) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  const int64_t half_n = p.n / 2;
  if (i >= static_cast<int64_t>(p.pairs) * half_n) return;
  const int64_t q = i / half_n;
  const int n = static_cast<int>(i % half_n) * 2;
  const int expert = owner_of(p.pair_offsets, p.experts, q);
  float s0 = 0.0f, s1 = 0.0f;
  for (int z = 0; z < p.splits; ++z) {
    const float2 v = *reinterpret_cast<const float2*>(p.partial + (static_cast<int64_t>(z) * p.pairs + q) * p.n + n);
    s0 += v.x;
    s1 += v.y;
  }
  store_output(p, expert, q, n, s0, s1);
}

template <class C>
void launch(const GemmProblem& p, cudaStream_t stream) {
  if (p.n % 8 != 0 || p.k % 32 != 0) throw CudaError("gemm: N must be a multiple of 8 and K of 32");
  if (p.max_tiles == 0) return;
  if constexpr (C::smem_bytes > 48 * 1024) {
    MXMOE_CUDA_CHECK(cudaFuncSetAttribute(moe_gemm_kernel<C>, cudaFuncAttributeMaxDynamicSharedMemorySize, C::smem_bytes));
  }
  const dim3 grid((p.n + C::BN - 1) / C::BN, p.max_tiles, p.splits);
  moe_gemm_kernel<C><<<grid, kThreads, C::smem_bytes, stream>>>(p);
  MXMOE_CUDA_CHECK_LAUNCH("moe_gemm_kernel");
  if (p.splits > 1 && p.pairs > 0) {
    const int64_t threads = static_cast<int64_t>(p.pairs) * (p.n / 2);
    splitk_epilogue_kernel<<<static_cast<unsigned>((threads + 255) / 256), 256, 0, stream>>>(p);
    MXMOE_CUDA_CHECK_LAUNCH("splitk_epilogue_kernel");
  }
}

enum class GemmTile { small, medium, large };

using Bf16Small = GemmConfig<false, 16, 64, 1, 4, 8>;
using Bf16Medium = GemmConfig<false, 64, 128, 2, 2, 4>;
using Bf16Large = GemmConfig<false, 128, 128, 2, 2, 3>;
using Fp8Small = GemmConfig<true, 16, 64, 1, 4, 8>;
using Fp8Medium = GemmConfig<true, 64, 128, 2, 2, 4>;
using Fp8Large = GemmConfig<true, 128, 64, 2, 2, 4>;  // narrower: partial sums need registers too

// Split-K slices for a small-tile GEMM so that about `target_ctas` CTAs run.
int choose_splits(GemmTile tile, int n, int k, int64_t active_experts, int target_ctas) {
  if (tile != GemmTile::small) return 1;
  const int64_t ctas = ((n + Bf16Small::BN - 1) / Bf16Small::BN) * std::max<int64_t>(active_experts, 1);
  const int64_t splits = (target_ctas + ctas - 1) / ctas;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>({splits, 8, k / 32})));
}

// small: decode-sized batches (a few pairs per expert); medium and large reuse each decoded weight
// over more pairs.
GemmTile choose_gemm_tile(double rows_per_expert) {
  if (rows_per_expert <= 16) return GemmTile::small;
  if (rows_per_expert <= 64) return GemmTile::medium;
  return GemmTile::large;
}

int gemm_tile_rows(GemmTile tile, bool fp8) {
  switch (tile) {
    case GemmTile::small: return fp8 ? Fp8Small::BM : Bf16Small::BM;
    case GemmTile::medium: return fp8 ? Fp8Medium::BM : Bf16Medium::BM;
    case GemmTile::large: return fp8 ? Fp8Large::BM : Bf16Large::BM;
  }
  return 16;
}

PackedWeights pack(const detail::PaddedMxfp4& weights, Scheme scheme, bool /*gate_up*/) {
  const bool fp8 = scheme_traits(scheme).activation == ActivationFormat::fp8_e4m3;
  return pack_weights(weights, fp8 ? WeightLayout::fp8_mma : WeightLayout::bf16_mma);
}

GemmBatchPlan plan(Scheme scheme, int64_t pairs, int64_t active_experts, const MoeShape& shape, int sm_count, bool) {
  const GemmTile tile = choose_gemm_tile(static_cast<double>(pairs) / static_cast<double>(std::max<int64_t>(active_experts, 1)));
  GemmBatchPlan plan;
  plan.variant = static_cast<int>(tile);
  plan.tile_rows = gemm_tile_rows(tile, scheme_traits(scheme).activation == ActivationFormat::fp8_e4m3);
  // Split-K for decode-sized batches: enough CTAs to keep every SM streaming weights.
  const int target_ctas = 8 * sm_count;
  plan.gate_up_splits = choose_splits(tile, 2 * shape.intermediate, shape.hidden, active_experts, target_ctas);
  plan.down_splits = choose_splits(tile, shape.hidden, shape.intermediate, active_experts, target_ctas);
  return plan;
}

template <class Small, class Medium, class Large>
void launch_tile(const GemmProblem& p, GemmTile tile, cudaStream_t stream) {
  switch (tile) {
    case GemmTile::small: launch<Small>(p, stream); break;
    case GemmTile::medium: launch<Medium>(p, stream); break;
    case GemmTile::large: launch<Large>(p, stream); break;
  }
}

void launch_gemm(const GemmProblem& p, const GemmBatchPlan& plan, cudaStream_t stream) {
  const auto tile = static_cast<GemmTile>(plan.variant);
  if (p.fp8) {
    launch_tile<Fp8Small, Fp8Medium, Fp8Large>(p, tile, stream);
  } else {
    launch_tile<Bf16Small, Bf16Medium, Bf16Large>(p, tile, stream);
  }
}

bool writes_down_input(Scheme) { return false; }

}  // namespace

const GemmFamily& generic_gemm_family() {
  static const GemmFamily family{.name = "mma.sync",
                                 .exact_sm = 0,
                                 .pack = pack,
                                 .plan = plan,
                                 .launch = launch_gemm,
                                 .writes_down_input = writes_down_input,
                                 .small_batch = &generic_small_batch_experts(),
                                 .tiled_router = false};
  return family;
}

}  // namespace mxmoe::cuda
