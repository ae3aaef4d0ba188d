// Grouped MXFP4 GEMMs for MoE experts on Hopper's warpgroup MMA (sm_90a only).
//
// The problem is computed transposed, Y^T = W X^T: a warpgroup owns one or two tiles of 64 weight
// rows (wgmma's M) and a CTA one tile of BN sorted (token, slot) pairs of one expert (wgmma's N,
// 16..128). So the weights, the narrow operand, go to the tensor cores from registers. One thread
// at a time keeps a shared-memory ring of weight chunks filled by bulk copies (the copy engine,
// completing on an mbarrier per slot; layout.hpp makes each tile's 64-deep chunk one record of 2 KB
// of codes and 128 bytes of scales: one copy per tile); each thread reads its 16 bytes of codes per
// chunk and row tile from the ring, decodes them to bf16 with the block scale, and issues four
// m64nBNk16 wgmmas per row tile. The pairs' activation rows are gathered by cp.async into a ring of
// 128-byte-swizzled shared-memory stages that wgmma reads through a matrix descriptor. A tile
// holding fewer pairs than its width (an expert's last) runs at the narrowest MMA width that holds
// them.
//
// w4a8 batches with tiles of 64 or 128 pairs run on FP8 tensor cores instead (gemm_fp8.cu).
//
// Epilogues (wgmma.cuh, shared with gemm_fp8.cu): gate_up applies SwiGLU to each thread's (gate,
// linear) row pair and writes the down GEMM's bf16 input directly (w4a16) or fp32 for a separate
// quantization pass (w4a4, w4a8); down writes fp32 rows per pair for the ordered combine.
#include <cuda_bf16.h>

#include <algorithm>
#include <stdexcept>
#include <utility>

#include "backends/cuda/cuda_check.hpp"
#include "backends/cuda/device_utils.cuh"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/timeline.cuh"
#include "backends/cuda_sm90/async_copy.cuh"
#include "backends/cuda_sm90/family.hpp"
#include "backends/cuda_sm90/fragments.cuh"
#include "backends/cuda_sm90/gemm_fp8.hpp"
#include "backends/cuda_sm90/small_batch.hpp"
#include "backends/cuda_sm90/tile_widths.hpp"
#include "backends/cuda_sm90/layout.hpp"
#include "backends/cuda_sm90/layout_fp8.hpp"
#include "backends/cuda_sm90/wgmma.cuh"
#include "backends/cuda_sm90/wgmma_bf16.cuh"
#include "mxmoe/codecs.hpp"

namespace mxmoe::cuda::sm90 {

namespace {

// A kernel configuration. BN: pairs per tile (wgmma's N). WarpGroups x MTiles 64-row weight tiles
// per CTA: every activation tile the CTA gathers serves all of them, and one chunk's barrier,
// copies and MMA bookkeeping serve all of their weights. Stages: activation stages. WeightSlots:
// chunks of weights in the shared-memory ring. MinBlocks: resident CTAs per SM the registers must
// allow.
template <int kBN, int kWarpGroups, int kMTiles, int kStages, int kWeightSlots, int kMinBlocks>
struct Shape {
  static constexpr int BN = kBN, warp_groups = kWarpGroups, m_tiles = kMTiles, stages = kStages,
                       weight_slots = kWeightSlots, min_blocks = kMinBlocks;
};

template <class S, bool kFolded>
struct Config : S {
  using S::BN, S::warp_groups, S::m_tiles, S::stages, S::weight_slots, S::min_blocks;
  static constexpr bool folded = kFolded;
  // Activations run this many chunks ahead: the stage a copy overwrites was read by the MMAs of two
  // chunks back, which the wait for at most one pending MMA group has retired.
  static constexpr int ahead = stages - 2;
  static constexpr int rows_per_cta = kTileRows * m_tiles * warp_groups;
  static constexpr int threads = 128 * warp_groups;
  static constexpr int stage_bytes = BN * kChunkK * 2;  // BN rows of 64 bf16: 128 bytes each
  static constexpr int copies = BN * 8 / threads;  // 16-byte activation copies per thread per stage
  // The weight ring: each slot holds one 64-deep chunk of every row tile of the CTA, brought by
  // bulk copies, one per row tile (layout.hpp: a tile's chunk is one record, codes then scales).
  static constexpr int tiles = warp_groups * m_tiles;
  static constexpr int slot_bytes = tiles * kChunkBytes;
  static constexpr int weights_offset = stages * stage_bytes;
  static constexpr int barriers_offset = weights_offset + weight_slots * slot_bytes;
  static constexpr int smem_bytes = barriers_offset + weight_slots * 8 + 1024;  // + alignment of the swizzle atoms
  // Up to width 64 an expert's pairs mostly fit one tile, so each weight chunk is read once: it
  // streams through L2 as evict-first and leaves in L2 the activation rows, which every CTA of the
  // tile (one per 128 weight rows) reads again: 120b T=128 -1.6 to -2.2%, T=32 -2.7% (H200). At
  // width 128 several tiles of one expert re-read its weights: evict-first was 2-4% slower at T=8192.
  static constexpr bool weights_read_once = BN < 128;
  // The thread that refills the weight ring after `chunk`'s barrier. From width 64, lane 0 of each
  // warp in turn (a CTA's warps sit on different schedulers, so none carries every refill's ~70
  // instructions): T=1024 -1.1% (120b, width 64) and -2.0% (20b, width 128) on an H200; at width 16
  // it was 1.3% slower, and narrower tiles keep thread 0.
  static constexpr int fillers = BN >= 64 ? threads / 32 : 1;
  static __device__ __forceinline__ int filler(int chunk) { return chunk % fillers * 32; }
  static_assert(BN % 16 == 0 && BN <= 256 && BN * 8 % threads == 0 && ahead >= 1);
  static_assert((weight_slots & (weight_slots - 1)) == 0 && weight_slots >= 2);
  static_assert(smem_bytes * min_blocks <= 227 * 1024);
};

// One CTA's tile at MMA width kN <= C::BN: the tile's `rows` pairs (at most kN) of `expert` from
// pair row0. The weight ring's barriers are initialized.
template <class C, bool kGateUp, int kN>
__device__ __forceinline__ void run_tile(const GemmProblem& p, unsigned char* smem, int expert, int row0, int rows) {
  unsigned char* weight_slots = smem + C::weights_offset;
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + C::barriers_offset);
  const int warp_group = threadIdx.x / 128, thread = threadIdx.x % 128;
  const int warp = thread / 32, lane = threadIdx.x % 32;
  const int row_tiles = p.n / kTileRows, chunks = p.k / kChunkK;
  int row_tile[C::m_tiles];
  bool stores[C::m_tiles];
  warpgroup_row_tiles((blockIdx.x * C::warp_groups + warp_group) * C::m_tiles, row_tiles, row_tile, stores);

  // One thread at a time (C::filler) keeps the weight ring filled: chunk c of every row tile of the
  // CTA goes to slot c % slots, its arrival counted in bytes on that slot's barrier.
  const uint64_t weights_policy = C::weights_read_once ? evict_first_policy() : evict_normal_policy();
  auto fill_slot = [&](int chunk) {
    const int slot = chunk % C::weight_slots;
    unsigned char* destination = weight_slots + slot * C::slot_bytes;
    barrier_expect_bytes(&full[slot], C::slot_bytes);
    for (int i = 0; i < C::tiles; ++i) {
      const int tile_index = blockIdx.x * C::tiles + i;
      const int64_t block_index =
          (static_cast<int64_t>(expert) * row_tiles + min(tile_index, row_tiles - 1)) * chunks + chunk;
      bulk_copy(destination + i * kChunkBytes, p.weights + block_index * (kChunkBytes / 4), kChunkBytes, &full[slot],
                weights_policy);
    }
  };
  if (threadIdx.x == 0) {
    for (int c = 0; c < min(C::weight_slots, chunks); ++c) fill_slot(c);
    kGateUp ? MXMOE_STAMP(gate_up, 3) : MXMOE_STAMP(down, 3);
  }
  // down's activations are gate_up's output: its weights start streaming before gate_up is done.
  if constexpr (!kGateUp) {
    wait_for_previous_grid();
    if (threadIdx.x == 0) MXMOE_STAMP(down, 4);
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
  // Rows past the tile's pairs are zero-filled (their products are never stored), as are the stages
  // of chunks past K (the loads run `ahead` chunks ahead of the MMAs), which are never read. Rows
  // past kN are not read by the MMAs: nothing is copied there.
  auto load_stage = [&](int stage, int chunk) {
    unsigned char* s = smem + stage * C::stage_bytes;
#pragma unroll
    for (int j = 0; j < C::copies; ++j) {
      const int i = threadIdx.x + j * C::threads;
      const int r = i / 8, c = i % 8;
      if (kN < C::BN && r >= kN) continue;
      const bool valid = source[j] != nullptr && chunk < chunks;
      cp_async_16(s + swizzled_chunk(r, c), valid ? source[j] + chunk * kChunkK * 2 : a_base, valid);
    }
  };
  // This thread's word and scale word in slot 0 (shared-space addresses: plain pointers into the
  // aligned dynamic buffer compile to generic loads).
  const uint32_t first_record = smem_address(weight_slots) + warp_group * C::m_tiles * kChunkBytes;
  const uint32_t words_address = first_record + thread * 16;
  const uint32_t scales_address = first_record + kWordBytesPerChunk + (warp * 8 + lane / 4) * 4;
  // The A fragments of `chunk` from its weight slot, once the slot's copies have landed.
  auto decode_chunk = [&](int chunk, uint32_t (&fragments)[C::m_tiles][4][4]) {
    const int slot = chunk % C::weight_slots;
    barrier_wait(&full[slot], (chunk / C::weight_slots) & 1);
#pragma unroll
    for (int m = 0; m < C::m_tiles; ++m) {
      const uint4 words = load_shared_u128(words_address + slot * C::slot_bytes + m * kChunkBytes);
      const uint32_t scales = load_shared_u32(scales_address + slot * C::slot_bytes + m * kChunkBytes);
      decode_fragments<C::folded>(words, scales, fragments[m]);
    }
  };
#pragma unroll
  for (int s = 0; s < C::ahead; ++s) {
    load_stage(s, s);
    cp_async_commit();
  }

  float acc[C::m_tiles][kN / 2];
  zero(acc);

  // Two fragment sets: chunk c's MMAs read set c % 2 while chunk c + 1 is decoded into the other
  // (the set is a compile-time constant: fragments must stay in registers).
  uint32_t a[2][C::m_tiles][4][4];
  decode_chunk(0, a[0]);
  int read_stage = 0, write_stage = C::ahead;
  auto run_chunk = [&](auto set_constant, int chunk) {
    constexpr int set = decltype(set_constant)::value;
    cp_async_wait<C::ahead - 1>();
    fence_async_proxy();  // the copies are read next by the tensor cores (async proxy)
    __syncthreads();      // stage `chunk` is complete in every thread's part; every thread has decoded `chunk`
    const uint64_t descriptor = tile_descriptor(smem + read_stage * C::stage_bytes);
    wgmma_fence();
    fence_operands(acc);
#pragma unroll
    for (int s = 0; s < 4; ++s) {
#pragma unroll
      for (int m = 0; m < C::m_tiles; ++m) {
        Wgmma<kN>::run(acc[m], a[set][m][s], descriptor + 2 * s);  // +32 bytes per k16
      }
    }
    wgmma_commit();
    fence_operands(acc);
    // Refills while the MMAs run (measured faster than before them for the narrow tiles). The
    // weight slot of `chunk` was decoded by every thread before the barrier; the activation stage
    // overwritten was read by chunk - 2's MMAs, which the last wait retired.
    if (threadIdx.x == C::filler(chunk) && chunk + C::weight_slots < chunks) fill_slot(chunk + C::weight_slots);
    load_stage(write_stage, chunk + C::ahead);
    cp_async_commit();
    read_stage = read_stage + 1 == C::stages ? 0 : read_stage + 1;
    write_stage = write_stage + 1 == C::stages ? 0 : write_stage + 1;
    wgmma_wait<1>();  // chunk - 1 retired: its fragment set is free
    if (chunk + 1 < chunks) decode_chunk(chunk + 1, a[1 - set]);
  };
  alternate_fragment_sets(chunks, run_chunk);
  wgmma_wait<0>();
  fence_operands(acc);
  cp_async_wait<0>();
  if (threadIdx.x == 0) kGateUp ? MXMOE_STAMP(gate_up, 5) : MXMOE_STAMP(down, 5);

  RowOperands operands[C::m_tiles];
#pragma unroll
  for (int m = 0; m < C::m_tiles; ++m) operands[m] = row_operands<kGateUp, false>(p, row_tile[m], expert);
  const float written_max = store_tiles<kGateUp, false, kN>(p, acc, row_tile, stores, operands, row0, rows, [&](int column) {
    return row_activation_scale(p, row0 + column);
  });
  if (kGateUp) publish_written_max(p, written_max);  // uniform: every thread of the CTA gets here
  if (threadIdx.x == 0) kGateUp ? MXMOE_STAMP(gate_up, 6) : MXMOE_STAMP(down, 6);
}

// The MMA widths a tile of C::BN pairs may run at: a tile with fewer pairs (an expert's last) runs
// at the narrowest that holds them, so the tensor cores do not multiply its empty columns.
template <int kBN>
struct NarrowWidths {
  using type = std::integer_sequence<int, kBN>;
};
template <>
struct NarrowWidths<64> {
  using type = std::integer_sequence<int, 16, 32, 64>;
};
template <>
struct NarrowWidths<128> {
  using type = std::integer_sequence<int, 16, 32, 64, 96, 128>;
};

template <class C, bool kGateUp, int... kWidths>
__device__ __forceinline__ void run_narrowest(const GemmProblem& p, unsigned char* smem, int expert, int row0, int rows,
                                              std::integer_sequence<int, kWidths...>) {
  // Once per CTA, uniform: each width is its own straight-line code.
  (void)((rows <= kWidths && (run_tile<C, kGateUp, kWidths>(p, smem, expert, row0, rows), true)) || ...);
}

template <class C, bool kGateUp>
__global__ void __launch_bounds__(C::threads, C::min_blocks) wgmma_moe_kernel(const GemmProblem p) {
  extern __shared__ unsigned char smem_raw[];
  unsigned char* smem = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + C::barriers_offset);
  // Timeline events (gate_up, down): 0 start, 1 waited (gate_up), 2 tile looked up, 3 weight ring
  // filled, 4 waited (down), 5 main loop done, 6 end.
  if (threadIdx.x == 0) kGateUp ? MXMOE_STAMP(gate_up, 0) : MXMOE_STAMP(down, 0);
  if (threadIdx.x == 0) {
    for (int s = 0; s < C::weight_slots; ++s) barrier_init(&full[s]);
    barrier_init_fence();
  }
  // gate_up waits for the sort's tile offsets and its activations. Down's blocks launch only once
  // every block of the kernel before them (gate_up, or the quantization of its output) got past its
  // own wait (allow_dependent_launch), when the routing is long final: they look their tile up at
  // once, fill their weight rings while gate_up's last blocks run (measured on an H200: -0.7 to
  // -1.4% at T=128), and wait in run_tile before they read gate_up's output.
  if constexpr (kGateUp) {
    wait_for_previous_grid();
    if (threadIdx.x == 0) MXMOE_STAMP(gate_up, 1);
  }
  allow_dependent_launch();
  if constexpr (kGateUp) {
    if (p.out_scale != nullptr && blockIdx.x == 0 && blockIdx.y == 0 && threadIdx.x == 0) *p.out_scale = 1.0f;
  }
  const int tile = blockIdx.y;
  if (tile >= p.tile_offsets[p.experts]) return;
  const int expert = owner_of(p.tile_offsets, p.experts, tile);
  const int row0 = p.pair_offsets[expert] + (tile - p.tile_offsets[expert]) * C::BN;
  const int rows = min(C::BN, p.pair_offsets[expert + 1] - row0);
  if (threadIdx.x == 0) kGateUp ? MXMOE_STAMP(gate_up, 2) : MXMOE_STAMP(down, 2);
  __syncthreads();  // the barriers are initialized
  run_narrowest<C, kGateUp>(p, smem, expert, row0, rows, typename NarrowWidths<C::BN>::type{});
}

template <class C, bool kGateUp>
void launch_config(const GemmProblem& p, cudaStream_t stream) {
  auto kernel = wgmma_moe_kernel<C, kGateUp>;
  MXMOE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::smem_bytes));
  const int row_tiles = p.n / kTileRows;
  const dim3 grid((row_tiles * kTileRows + C::rows_per_cta - 1) / C::rows_per_cta, p.max_tiles);
  launch_after_previous(kernel, grid, dim3(C::threads), C::smem_bytes, true, stream, p);
}

template <class S>
void launch_shape(const GemmProblem& p, cudaStream_t stream) {
  if (p.folded_scales) {
    p.gate_up ? launch_config<Config<S, true>, true>(p, stream) : launch_config<Config<S, true>, false>(p, stream);
  } else {
    p.gate_up ? launch_config<Config<S, false>, true>(p, stream) : launch_config<Config<S, false>, false>(p, stream);
  }
}

// Variants: the tile width, or kFewPairs16: width 16 with one row tile per warpgroup, for batches so
// small (a few experts) that the CTAs of two-tile warpgroups would not fill the GPU.
constexpr int kFewPairs16 = -16;
constexpr int kFewPairs = 32;

// Every scheme's weights in the bf16 layout (the small-batch kernels and narrow tiles read it);
// FP8-activation schemes' also in the FP8 layout for the GEMMs on FP8 tensor cores, where it holds
// the layer exactly (else those run on the bf16 layout too). Until the small-batch kernels read the
// FP8 layout, such a layer's weights are on the GPU twice.
PackedWeights pack(const detail::PaddedMxfp4& weights, Scheme scheme, bool gate_up) {
  PackedWeights packed = pack_weights(weights, gate_up);
  if (scheme_traits(scheme).activation == ActivationFormat::fp8_e4m3) {
    Fp8PackedWeights fp8 = pack_fp8_weights(weights, gate_up);
    if (fp8.inexact_blocks == 0) {
      packed.fp8_words = std::move(fp8.words);
      packed.fp8_row_factors = std::move(fp8.row_factors);
    }
  }
  return packed;
}

GemmBatchPlan plan(Scheme scheme, int64_t pairs, int64_t active_experts, const MoeShape&, int, bool fp8_layout) {
  GemmBatchPlan plan;
  // Tiles of 256 pairs exist on FP8 tensor cores only, so only for a layer held in the FP8 layout.
  const bool fp8_scheme = scheme_traits(scheme).activation == ActivationFormat::fp8_e4m3;
  plan.tile_rows = tile_width(pairs, active_experts, fp8_scheme && fp8_layout ? 256 : 128);
  plan.variant = plan.tile_rows == 16 && pairs <= kFewPairs ? kFewPairs16 : plan.tile_rows;
  plan.fp8_operands = runs_on_fp8_cores(scheme, plan.tile_rows);
  return plan;
}

void launch(const GemmProblem& p, const GemmBatchPlan& plan, cudaStream_t stream) {
  if (p.n % kTileRows != 0 || p.k % kChunkK != 0) throw CudaError("the sm90 wgmma kernels need N and K multiples of 64");
  if (p.splits != 1) throw CudaError("the sm90 wgmma kernels do not split K");
  if (p.max_tiles == 0) return;
  if (p.fp8) return launch_fp8(p, plan.variant, stream);
  // Measured on an H200 (docs/PERFORMANCE.md): up to width 64 the kernels are bound by the
  // instructions each chunk costs, so a warpgroup takes two row tiles (one chunk's barrier, copies
  // and MMA bookkeeping serve twice the weights) and as many CTAs share an SM as registers and
  // shared memory allow (a shallower weight ring buys one more: width 32 4 CTAs, 64 3). Width 128
  // is latency-bound: two warpgroups of one row tile, two CTAs per SM, activation stages before
  // weight slots.
  switch (plan.variant) {
    case kFewPairs16: return launch_shape<Shape<16, 1, 1, 8, 4, 6>>(p, stream);
    case 16: return launch_shape<Shape<16, 1, 2, 8, 8, 3>>(p, stream);
    case 32: return launch_shape<Shape<32, 1, 2, 8, 4, 4>>(p, stream);
    case 64: return launch_shape<Shape<64, 1, 2, 5, 4, 3>>(p, stream);
    case 128: return launch_shape<Shape<128, 2, 1, 6, 2, 2>>(p, stream);
    default: throw CudaError("sm90 wgmma kernels: no variant for tile width " + std::to_string(plan.variant));
  }
}

// bf16 activations need no quantization pass: the gate_up epilogue writes the down GEMM's input.
bool writes_down_input(Scheme scheme) { return scheme_traits(scheme).activation == ActivationFormat::bf16; }

}  // namespace

const GemmFamily& gemm_family() {
  static const GemmFamily family{.name = "sm90 wgmma",
                                 .exact_sm = 90,
                                 .pack = pack,
                                 .plan = plan,
                                 .launch = launch,
                                 .fp8_inputs = false,
                                 .writes_down_input = writes_down_input,
                                 .writes_out_amax = true,
                                 .small_batch = &small_batch_experts()};
  return family;
}

}  // namespace mxmoe::cuda::sm90
