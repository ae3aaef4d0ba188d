// Grouped MXFP4 GEMMs for MoE experts on Hopper's warpgroup MMA (sm_90a only).
//
// The problem is computed transposed, Y^T = W X^T: a warpgroup owns one or two tiles of 64 weight
// rows (wgmma's M) and a CTA one tile of BN sorted (token, slot) pairs of one expert (wgmma's N,
// 16..128). So the weights, the narrow operand, go to the tensor cores from registers: each thread
// loads 16 bytes of packed codes per 64-deep k step and row tile (layout.hpp), decodes them to bf16
// with the block scale, and issues four m64nBNk16 wgmmas per row tile. The pairs' activation rows are gathered by cp.async into a ring of
// 128-byte-swizzled shared-memory stages that wgmma reads through a matrix descriptor.
//
// Epilogues: gate_up applies SwiGLU to each thread's (gate, linear) row pair and writes the down
// GEMM's bf16 input directly (w4a16) or fp32 for a separate quantization pass (w4a4); down writes
// fp32 rows per pair for the ordered combine.
#include <cuda_bf16.h>

#include <algorithm>
#include <stdexcept>

#include "backends/cuda/cuda_check.hpp"
#include "backends/cuda/device_utils.cuh"
#include "backends/cuda_sm90/family.hpp"
#include "backends/cuda_sm90/layout.hpp"
#include "backends/cuda_sm90/wgmma_bf16.cuh"
#include "mxmoe/codecs.hpp"

namespace mxmoe::cuda::sm90 {

namespace {

template <int kBN, int kWarpGroups, int kMTiles, int kStages, int kPrefetch, int kMinBlocks, bool kFolded>
struct Config {
  static constexpr int BN = kBN, warp_groups = kWarpGroups, stages = kStages, prefetch = kPrefetch;
  // 64-row weight tiles per warpgroup: a CTA covers 64 * m_tiles * warp_groups rows, and every
  // activation tile it gathers serves all of them (the gathers are L2 traffic in wide batches).
  static constexpr int m_tiles = kMTiles;
  static constexpr int rows_per_cta = kTileRows * m_tiles * warp_groups;
  static constexpr int min_blocks = kMinBlocks;  // resident CTAs per SM the registers must allow
  static constexpr bool folded = kFolded;
  static constexpr int threads = 128 * warp_groups;
  static constexpr int stage_bytes = BN * kChunkK * 2;  // BN rows of 64 bf16: 128 bytes each
  static constexpr int smem_bytes = stages * stage_bytes + 1024;  // + alignment of the swizzle atoms
  static constexpr int copies = BN * 8 / threads;  // 16-byte copies per thread per stage
  static_assert(BN % 16 == 0 && BN <= 256 && BN * 8 % threads == 0 && stages >= 3 && prefetch % 2 == 0);
};

__device__ __forceinline__ void fence_async_proxy() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

// Keeps the compiler from moving accumulator accesses across the asynchronous MMAs.
template <int N>
__device__ __forceinline__ void fence_operands(float (&d)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// Descriptor of a K-major bf16 tile in shared memory with rows of 128 bytes, 128-byte swizzle
// (chunk c of row r at c ^ (r % 8)), 8-row atoms 1024 bytes apart. The tile starts 1024-aligned.
__device__ __forceinline__ uint64_t tile_descriptor(const void* tile) {
  const uint64_t address = smem_address(tile);
  return ((address & 0x3FFFFu) >> 4) | (uint64_t{1} << 16) | (uint64_t{1024 >> 4} << 32) | (uint64_t{1} << 62);
}

__device__ __forceinline__ uint4 load_stream_u128(const uint4* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

// Register r's two codes placed as bf16 bits (layout.hpp): value * 2^-126 in each half.
__device__ __forceinline__ uint32_t placed_pair(uint32_t word, int r) {
  constexpr uint32_t kBf16Bits = 0x81C081C0u;  // sign, low exponent bits and top mantissa bit of each half
  switch (r) {
    case 0: return word & kBf16Bits;
    case 1: return __funnelshift_r(word, word, 3) & kBf16Bits;
    case 2: return __funnelshift_r(word, word, 6) & kBf16Bits;
    default: return ((word << 6) & 0x00C000C0u) | ((word << 5) & 0x01000100u) | ((word << 11) & 0x80008000u);
  }
}

// The A registers of a 64-deep chunk, block scales applied: register r of k16 step s takes the
// scale of its row (r odd: row g + 8) and block (s >= 2: the chunk's second block).
template <bool kFolded>
__device__ __forceinline__ void decode_fragments(const uint4& words, uint32_t scale_bytes, uint32_t (&a)[4][4]) {
  const __nv_bfloat162 two126 = bits_bf16x2(0x7E807E80u);
  __nv_bfloat162 scale[2][2];  // [row half][block]
#pragma unroll
  for (int half = 0; half < 2; ++half) {
#pragma unroll
    for (int block = 0; block < 2; ++block) {
      const uint32_t code = (scale_bytes >> (8 * (2 * half + block))) & 0xFFu;
      scale[half][block] = kFolded ? e8m0_times_2pow126_bf16x2(code) : e8m0_bf16x2(code);
    }
  }
  const uint32_t word[4] = {words.x, words.y, words.z, words.w};
#pragma unroll
  for (int s = 0; s < 4; ++s) {
#pragma unroll
    for (int r = 0; r < 4; ++r) {
      const __nv_bfloat162 placed = bits_bf16x2(placed_pair(word[s], r));
      const __nv_bfloat162 sc = scale[r & 1][s / 2];
      a[s][r] = bf16x2_bits(kFolded ? __hmul2(placed, sc) : __hmul2(__hmul2(placed, two126), sc));
    }
  }
}

template <class C, bool kGateUp>
__global__ void __launch_bounds__(C::threads, C::min_blocks) wgmma_moe_kernel(const GemmProblem p) {
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});

  if constexpr (kGateUp) {
    if (p.out_scale != nullptr && blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0) *p.out_scale = 1.0f;
  }
  const int tile = blockIdx.y;
  if (tile >= p.tile_offsets[p.experts]) return;
  const int expert = owner_of(p.tile_offsets, p.experts, tile);
  const int row0 = p.pair_offsets[expert] + (tile - p.tile_offsets[expert]) * C::BN;
  const int rows = min(C::BN, p.pair_offsets[expert + 1] - row0);

  const int warp_group = threadIdx.x / 128, thread = threadIdx.x % 128;
  const int warp = thread / 32, lane = threadIdx.x % 32;
  const int row_tiles = p.n / kTileRows, chunks = p.k / kChunkK;
  // Tiles past N (the last CTA of a tile count that does not divide) repeat the last tile and store
  // nothing: every warpgroup runs the same straight-line MMA code (a branch around wgmma serializes it).
  int row_tile[C::m_tiles];
  bool stores[C::m_tiles];
  const uint4* words[C::m_tiles];
  const uint32_t* scales[C::m_tiles];
#pragma unroll
  for (int m = 0; m < C::m_tiles; ++m) {
    const int tile_index = (blockIdx.x * C::warp_groups + warp_group) * C::m_tiles + m;
    row_tile[m] = min(tile_index, row_tiles - 1);
    stores[m] = tile_index < row_tiles;
    // This thread's packed weights and scales (layout.hpp), one chunk apart per step.
    const int64_t block_index = (static_cast<int64_t>(expert) * row_tiles + row_tile[m]) * chunks;
    words[m] = reinterpret_cast<const uint4*>(p.weights) + block_index * 128 + thread;
    scales[m] = reinterpret_cast<const uint32_t*>(p.scales) + block_index * 32 + warp * 8 + lane / 4;
  }

  // The activation rows this thread copies, looked up once.
  const unsigned char* a_base = static_cast<const unsigned char*>(p.a);
  const unsigned char* source[C::copies];
#pragma unroll
  for (int j = 0; j < C::copies; ++j) {
    const int i = threadIdx.x + j * C::threads;
    const int r = i / 8, c = i % 8;
    const bool valid = r < rows;
    const int64_t source_row = valid ? (p.a_rows ? p.a_rows[row0 + r] : row0 + r) : -1;
    source[j] = valid ? a_base + source_row * p.k * 2 + c * 16 : nullptr;
  }
  // Rows past the tile's pairs, and chunks past K (the loop runs whole prefetch rounds), are
  // zero-filled: their products are zero or never stored.
  auto load_stage = [&](int stage, int chunk) {
    unsigned char* s = smem + stage * C::stage_bytes;
#pragma unroll
    for (int j = 0; j < C::copies; ++j) {
      const int i = threadIdx.x + j * C::threads;
      const int r = i / 8, c = i % 8;
      const bool valid = source[j] != nullptr && chunk < chunks;
      cp_async_16(s + r * 128 + ((c ^ (r & 7)) << 4), valid ? source[j] + chunk * kChunkK * 2 : a_base, valid);
    }
  };

  // The weight ring. Chunks past K load the last chunk again (in bounds) and decode as zero codes:
  // the select happens when the words are used, so no load is waited for early.
  uint4 word_ring[C::prefetch][C::m_tiles];
  uint32_t scale_ring[C::prefetch][C::m_tiles];
  bool valid_ring[C::prefetch];
  auto load_weights = [&](int slot, int chunk) {
    valid_ring[slot] = chunk < chunks;
    const int in_bounds = min(chunk, chunks - 1);
#pragma unroll
    for (int m = 0; m < C::m_tiles; ++m) {
      word_ring[slot][m] = load_stream_u128(words[m] + in_bounds * 128);
      scale_ring[slot][m] = __ldg(scales[m] + in_bounds * 32);
    }
  };
  auto decode_slot = [&](int slot, uint32_t (&fragments)[C::m_tiles][4][4]) {
#pragma unroll
    for (int m = 0; m < C::m_tiles; ++m) {
      const uint4 w = valid_ring[slot] ? word_ring[slot][m] : make_uint4(0, 0, 0, 0);
      decode_fragments<C::folded>(w, scale_ring[slot][m], fragments[m]);
    }
  };
#pragma unroll
  for (int j = 0; j < C::prefetch; ++j) load_weights(j, j);
  // Activations run kStages - 2 chunks ahead: the stage a copy overwrites was read by the MMAs of
  // two chunks back, which the wait for at most one pending MMA group has retired.
  constexpr int kAhead = C::stages - 2;
#pragma unroll
  for (int s = 0; s < kAhead; ++s) {
    load_stage(s, s);
    cp_async_commit();
  }

  float acc[C::m_tiles][C::BN / 2];
#pragma unroll
  for (int m = 0; m < C::m_tiles; ++m) {
#pragma unroll
    for (int i = 0; i < C::BN / 2; ++i) acc[m][i] = 0.0f;
  }

  // Two fragment sets: chunk c's MMAs read set c % 2 while chunk c + 1 is decoded into the other.
  uint32_t a[2][C::m_tiles][4][4];
  decode_slot(0, a[0]);

  const int rounds = (chunks + C::prefetch - 1) / C::prefetch;
  for (int round = 0; round < rounds; ++round) {
#pragma unroll
    for (int j = 0; j < C::prefetch; ++j) {
      const int chunk = round * C::prefetch + j;
      cp_async_wait<kAhead - 1>();
      fence_async_proxy();  // the copies are read next by the tensor cores (async proxy)
      __syncthreads();      // stage `chunk` is complete in every thread's part
      load_stage((chunk + kAhead) % C::stages, chunk + kAhead);
      cp_async_commit();
      const uint64_t descriptor = tile_descriptor(smem + (chunk % C::stages) * C::stage_bytes);
      wgmma_fence();
#pragma unroll
      for (int m = 0; m < C::m_tiles; ++m) fence_operands(acc[m]);
#pragma unroll
      for (int s = 0; s < 4; ++s) {
#pragma unroll
        for (int m = 0; m < C::m_tiles; ++m) {
          Wgmma<C::BN>::run(acc[m], a[j % 2][m][s], descriptor + 2 * s);  // +32 bytes per k16
        }
      }
      wgmma_commit();
#pragma unroll
      for (int m = 0; m < C::m_tiles; ++m) fence_operands(acc[m]);
      wgmma_wait<1>();  // chunk - 1 retired: its fragment set and activation stage are free
      load_weights(j, chunk + C::prefetch);
      decode_slot((j + 1) % C::prefetch, a[(j + 1) % 2]);
    }
  }
  wgmma_wait<0>();
#pragma unroll
  for (int m = 0; m < C::m_tiles; ++m) fence_operands(acc[m]);
  cp_async_wait<0>();

  // Accumulator 4j + i: row g (i < 2) or g + 8 of the warp's 16, pair column 8j + 2t + (i & 1).
  const int g = lane / 4, t = lane % 4;
  const float a_scale = *p.a_scale;
#pragma unroll
  for (int m = 0; m < C::m_tiles; ++m) {
    if (!stores[m]) continue;
    if constexpr (kGateUp) {
      const int half_n = p.n / 2;
      const int unit = row_tile[m] * (kTileRows / 2) + warp * 8 + g;
      const float* bias = p.bias + static_cast<int64_t>(expert) * p.n + 2 * unit;
      const float gate_bias = bias[0], linear_bias = bias[1];
#pragma unroll
      for (int j = 0; j < C::BN / 8; ++j) {
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          const int column = 8 * j + 2 * t + i;
          if (column >= rows) continue;
          const int64_t q = row0 + column;
          const float v = swiglu(acc[m][4 * j + i] * a_scale + gate_bias, acc[m][4 * j + 2 + i] * a_scale + linear_bias,
                                 p.alpha, p.limit);
          if (p.out_activations != nullptr) {
            p.out_activations[q * half_n + unit] = codec::bf16_bits(v);
          } else {
            p.out[q * half_n + unit] = v;
          }
        }
      }
    } else {
      const int n = row_tile[m] * kTileRows + warp * 16 + g;
      const float* bias = p.bias + static_cast<int64_t>(expert) * p.n + n;
      const float bias0 = bias[0], bias8 = bias[8];
#pragma unroll
      for (int j = 0; j < C::BN / 8; ++j) {
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          const int column = 8 * j + 2 * t + i;
          if (column >= rows) continue;
          float* out = p.out + static_cast<int64_t>(row0 + column) * p.n + n;
          out[0] = acc[m][4 * j + i] * a_scale + bias0;
          out[8] = acc[m][4 * j + 2 + i] * a_scale + bias8;
        }
      }
    }
  }
}

template <class C, bool kGateUp>
void launch_config(const GemmProblem& p, cudaStream_t stream) {
  auto kernel = wgmma_moe_kernel<C, kGateUp>;
  MXMOE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::smem_bytes));
  const int row_tiles = p.n / kTileRows;
  const dim3 grid((row_tiles * kTileRows + C::rows_per_cta - 1) / C::rows_per_cta, p.max_tiles);
  kernel<<<grid, C::threads, C::smem_bytes, stream>>>(p);
  MXMOE_CUDA_CHECK_LAUNCH("wgmma_moe_kernel");
}

template <int kBN, int kWarpGroups, int kMTiles, int kStages, int kPrefetch, int kMinBlocks>
void launch_width(const GemmProblem& p, cudaStream_t stream) {
  if (p.folded_scales) {
    using C = Config<kBN, kWarpGroups, kMTiles, kStages, kPrefetch, kMinBlocks, true>;
    p.gate_up ? launch_config<C, true>(p, stream) : launch_config<C, false>(p, stream);
  } else {
    using C = Config<kBN, kWarpGroups, kMTiles, kStages, kPrefetch, kMinBlocks, false>;
    p.gate_up ? launch_config<C, true>(p, stream) : launch_config<C, false>(p, stream);
  }
}

// Variants: the tile width, or kStacked128: width 128 with two 64-row tiles per warpgroup, for
// batches with many token tiles per expert, where gathering activation tiles dominates the L2
// traffic (measured: 3% faster at gpt-oss-20b T=8192, 7% slower at T=1024 than one tile with two
// CTAs per SM).
constexpr int kStacked128 = -128;

// Token widths by pairs per active expert: one tile should hold an expert's pairs where it can.
constexpr int kWidths[] = {16, 32, 64, 128};

int width_for(double pairs_per_expert) {
  for (int w : kWidths) {
    if (pairs_per_expert <= w) return w;
  }
  return 128;
}

PackedWeights pack(const Mxfp4Tensor& weights, Scheme, bool gate_up) { return pack_weights(weights, gate_up); }

GemmBatchPlan plan(Scheme, int64_t pairs, int64_t active_experts, const MoeShape&, int) {
  GemmBatchPlan plan;
  // Routing spreads pairs unevenly: sized for the mean, about half the experts would need a second
  // tile, which reads their weights again. 1.5 x the mean covers most of them.
  const double mean = static_cast<double>(pairs) / static_cast<double>(std::max<int64_t>(active_experts, 1));
  plan.tile_rows = width_for(1.5 * mean);
  plan.variant = plan.tile_rows == 128 && mean >= 256 ? kStacked128 : plan.tile_rows;
  return plan;
}

void launch(const GemmProblem& p, const GemmBatchPlan& plan, cudaStream_t stream) {
  if (p.fp8) throw CudaError("the sm90 wgmma kernels take bf16 activations only");
  if (p.n % kTileRows != 0 || p.k % kChunkK != 0) throw CudaError("the sm90 wgmma kernels need N and K multiples of 64");
  if (p.splits != 1) throw CudaError("the sm90 wgmma kernels do not split K");
  if (p.max_tiles == 0) return;
  switch (plan.variant) {
    // Narrow tiles stream weights: several CTAs per SM keep enough loads in flight. Wide tiles are
    // MMA-bound: two warpgroups share one activation tile.
    case 16: launch_width<16, 1, 1, 6, 8, 3>(p, stream); break;
    case 32: launch_width<32, 2, 1, 6, 8, 2>(p, stream); break;
    case 64: launch_width<64, 2, 1, 6, 4, 2>(p, stream); break;
    case 128: launch_width<128, 2, 1, 5, 4, 2>(p, stream); break;
    case kStacked128: launch_width<128, 2, 2, 5, 2, 1>(p, stream); break;
    default: throw CudaError("sm90 wgmma kernels: no variant for tile width " + std::to_string(plan.variant));
  }
}

bool writes_down_input(Scheme scheme) { return scheme == Scheme::w4a16; }

}  // namespace

const GemmFamily& gemm_family() {
  static const GemmFamily family{.name = "sm90 wgmma",
                                 .exact_sm = 90,
                                 .pack = pack,
                                 .plan = plan,
                                 .launch = launch,
                                 .writes_down_input = writes_down_input,
                                 .serves_small_batch_path = false};
  return family;
}

}  // namespace mxmoe::cuda::sm90
