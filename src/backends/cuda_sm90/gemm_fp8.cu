// Grouped MXFP4 x FP8 GEMMs for MoE experts on Hopper's FP8 tensor cores (w4a8, sm_90a only).
//
// The problem is computed transposed as in gemm.cu (weights on wgmma's M from registers, a tile of
// BN sorted pairs of one expert on N from shared memory), on m64nNk32 E4M3 wgmma, with the weights
// in the FP8 layout (layout_fp8.hpp: each thread's 16 bytes of a record are the A fragments of two
// k32 steps, each block's scale folded in; one factor per weight row scales the sums after the MMA).
//
// Warp-specialized: a producer warpgroup fills a ring of stages, each 128 deep (two weight records
// per row tile: one bulk copy per tile; BN activation rows of 128 FP8 bytes gathered by cp.async
// into 128-byte-swizzled rows), signalling a stage's "full" mbarrier by the bulk copies' bytes and
// the cp.asyncs' completion; consumer warpgroups, one per row tile, wait on it, decode their
// tile's weights into registers, issue the stage's MMAs while decoding the next stage's, and
// release the stage on its "empty" mbarrier once its MMAs retired. No CTA-wide barrier in the
// main loop: consumers run as far ahead as the ring allows. The producer gives its spare registers
// to the consumers (setmaxnreg): the wide tiles' sums need them, and the others' decode runs faster
// with them.
#include "backends/cuda_sm90/gemm_fp8.hpp"

#include <algorithm>
#include <cstdint>
#include <string>
#include <utility>

#include "backends/cuda/cuda_check.hpp"
#include "backends/cuda/device_utils.cuh"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/timeline.cuh"
#include "backends/cuda_sm90/async_copy.cuh"
#include "backends/cuda_sm90/layout_fp8.hpp"
#include "backends/cuda_sm90/wgmma.cuh"
#include "backends/cuda_sm90/wgmma_fp8.cuh"

namespace mxmoe::cuda::sm90 {

namespace {

// A kernel configuration. BN: pairs per tile (wgmma's N). Consumers: 64-row weight tiles per CTA,
// one consumer warpgroup each. Stages: the ring's depth. MinBlocks: resident CTAs per SM the
// registers must allow. ProducerRegisters: the producer warpgroup gives all but that many of its
// registers to the consumers (setmaxnreg).
template <int kBN, int kConsumers, int kStages, int kMinBlocks, int kProducerRegisters>
struct Fp8Config {
  static constexpr int BN = kBN, consumers = kConsumers, stages = kStages, min_blocks = kMinBlocks;
  static constexpr int threads = 128 * (consumers + 1);
  // ptxas allocates every thread the launch bound's share (a multiple of 8); setmaxnreg moves
  // registers between warpgroups within the CTA's allocation, never beyond it.
  static constexpr int entry_registers = 65536 / (threads * min_blocks) / 8 * 8;
  static constexpr int producer_registers = kProducerRegisters;
  static constexpr int consumer_registers =
      (entry_registers * (consumers + 1) - kProducerRegisters) / consumers / 8 * 8;
  static_assert(kProducerRegisters > 0 && kProducerRegisters % 8 == 0 && consumer_registers <= 256);
  static constexpr int tiles = consumers;  // row tiles per CTA, one per consumer warpgroup
  static constexpr int step_k = 128;  // one 128-byte swizzled activation row of FP8
  static constexpr int records = step_k / kChunkK;
  static constexpr int activation_bytes = BN * step_k;
  static constexpr int weight_bytes = tiles * records * kChunkBytes;
  static constexpr int stage_bytes = (activation_bytes + weight_bytes + 1023) / 1024 * 1024;  // swizzle atoms 1024-aligned
  static constexpr int barriers_offset = stages * stage_bytes;
  // Per-token schemes: each consumer warpgroup's pairs' scales of its last two items (consume).
  static constexpr int scales_offset = barriers_offset + 2 * stages * 8;
  static constexpr int smem_bytes = scales_offset + consumers * 2 * BN * 4 + 1024;  // + alignment
  // As in gemm.cu: up to width 64 an expert's pairs mostly fit one tile, so its weights stream
  // through L2 once, evict-first, and leave it to the activation rows that other CTAs read again.
  static constexpr bool weights_read_once = BN < 128;
  static_assert(BN % 32 == 0 && BN <= 256);  // the producer's rows: 32 per round of its 128 threads
  static_assert(smem_bytes * min_blocks <= 227 * 1024);
};

// Completes one of the full barrier's expected arrivals once this thread's earlier cp.asyncs landed.
__device__ __forceinline__ void cp_async_arrive(uint64_t* barrier) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(smem_address(barrier)) : "memory");
}

// The E4M3 A registers of one record of a row tile, k32 steps `first` and `second`: word 2s + h of
// block s, row half h (layout_fp8.hpp), under the table of that block's scale byte.
__device__ __forceinline__ void decode_record(uint32_t words_address, uint32_t scales_address, uint32_t (&first)[4],
                                              uint32_t (&second)[4]) {
  const uint4 words = load_shared_u128(words_address);
  const uint32_t scale_bytes = load_shared_u32(scales_address);
  const uint32_t word[4] = {words.x, words.y, words.z, words.w};
#pragma unroll
  for (int s = 0; s < 2; ++s) {
    uint32_t(&a)[4] = s == 0 ? first : second;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      uint32_t low, high;
      fp8_table(byte_permute(scale_bytes, 0, 0x4440u | (2 * h + s)), low, high);  // the byte: one prmt, not a shift and a mask
      decode_fp8_word(word[2 * s + h], low, high, a[h], a[2 + h]);
    }
  }
}

// One work item: `rows` pairs (at most C::BN) of `expert` from pair row0, times the CTA's row
// tiles of row block `row_block`.
struct Item {
  int expert, row0, rows, row_block;
};

// The ring's position: steps are numbered across a CTA's items, so stage and phase carry on.
template <class C>
struct Ring {
  uint64_t* full;
  uint64_t* empty;
  unsigned char* smem;
  int step = 0;  // the item's first step, counted over the CTA's items
  int items = 0;  // the consumers' items so far
  // Unsigned: with a power-of-two ring the stage is a mask and the phase a shift (signed, each took
  // four instructions, three times a step).
  __device__ int stage(int s) const { return static_cast<int>(static_cast<uint32_t>(step + s) % C::stages); }
  __device__ uint32_t parity(int s) const { return (static_cast<uint32_t>(step + s) / C::stages) & 1; }
};

// K in steps of C::step_k; K an odd number of chunks: the last step holds one record (its second
// half of the activation rows and its second record's words zero-filled by the producer).
struct Steps {
  int count, chunks;
  bool half_last;
  __device__ explicit Steps(int k) : chunks(k / kChunkK) {
    count = (chunks + 1) / 2;
    half_last = chunks % 2 != 0;
  }
  __device__ bool half(int s) const { return half_last && s == count - 1; }
};

// The producer's part of an item at MMA width kN: the weight records of the CTA's row tiles (one
// bulk copy each) and the kN activation rows of each step into the ring. `first`: the CTA's first
// item, whose weights down brings before it waits for gate_up.
template <class C, bool kGateUp, int kN>
__device__ __forceinline__ void produce(const GemmProblem& p, Ring<C>& ring, const Item& item, bool first) {
  const int thread = threadIdx.x % 128;
  const int row_tiles = p.n / kTileRows;
  const Steps steps(p.k);
  const uint64_t weights_policy = C::weights_read_once ? evict_first_policy() : evict_normal_policy();
  auto issue_weights = [&](int s) {
    if (thread != 0) return;
    const int stage = ring.stage(s);
    const int records = steps.half(s) ? 1 : C::records;
    unsigned char* destination = ring.smem + stage * C::stage_bytes + C::activation_bytes;
    barrier_expect_bytes(&ring.full[stage], C::tiles * records * kChunkBytes);
    for (int i = 0; i < C::tiles; ++i) {
      const int tile_index = item.row_block * C::tiles + i;  // past N: the last tile again, never stored
      const int64_t record =
          (static_cast<int64_t>(item.expert) * row_tiles + min(tile_index, row_tiles - 1)) * steps.chunks + s * C::records;
      bulk_copy(destination + i * C::records * kChunkBytes, p.weights + record * (kChunkBytes / 4), records * kChunkBytes,
                &ring.full[stage], weights_policy);
    }
  };
  // down reads gate_up's output: its first weights start streaming before it waits.
  const int prefetched = !kGateUp && first ? min(C::stages, steps.count) : 0;
  for (int s = 0; s < prefetched; ++s) issue_weights(s);
  if (!kGateUp && first) wait_for_previous_grid();

  // A thread brings 16-byte chunks c and c + 4 of rows r0 + j * kRowStep: one address for two
  // copies, each row's held as 32 bits (in 16-byte units: launch_fp8 checks that they fit; 64-bit
  // pointers made the producer spill), and every row with r0's swizzle, so the shared addresses
  // are two registers plus constants.
  const unsigned char* a_base = static_cast<const unsigned char*>(p.a);
  const int c = thread % 4, r0 = thread / 4;
  constexpr int kRowStep = 128 / 4;
  static_assert(kRowStep % 8 == 0 && kN % kRowStep == 0);
  constexpr int kRows = kN / kRowStep;  // the rows the MMAs read
  const uint32_t low_offset = swizzled_chunk(r0, c), high_offset = low_offset ^ 64;  // chunk c + 4: bit 2 flipped
  // Rows past the item's pairs are zero-filled (0 bytes read) from row 0, an address that exists.
  uint32_t source[kRows];  // 16-byte units from p.a
  uint32_t real_rows = 0;  // bit j: row j is one of the item's pairs
#pragma unroll
  for (int j = 0; j < kRows; ++j) {
    const int r = r0 + j * kRowStep;
    const bool real = r < item.rows;
    const int64_t source_row = real ? (p.a_rows ? p.a_rows[item.row0 + r] : item.row0 + r) : 0;
    source[j] = static_cast<uint32_t>((source_row * p.k + c * 16) / 16);
    real_rows |= uint32_t{real} << j;
  }
  const bool full_tile = item.rows >= kN;
  for (int s = 0; s < steps.count; ++s) {
    const int stage = ring.stage(s);
    // The stage's previous round, released by every consumer thread (a fresh barrier passes
    // parity 1).
    barrier_wait(&ring.empty[stage], ring.parity(s) ^ 1);
    if (s >= prefetched) issue_weights(s);
    const uint32_t rows = smem_address(ring.smem + stage * C::stage_bytes);
    const uint32_t k_units = s * (C::step_k / 16);
    auto copy_row = [&](int j, uint32_t low_bytes, uint32_t high_bytes) {
      const unsigned char* row = a_base + static_cast<uint64_t>(source[j] + k_units) * 16;
      cp_async_16(rows + low_offset + j * kRowStep * 128, row, low_bytes);
      cp_async_16(rows + high_offset + j * kRowStep * 128, row + 64, high_bytes);
    };
    if (full_tile && !steps.half(s)) {  // every step of a full tile but an odd chunk count's last
#pragma unroll
      for (int j = 0; j < kRows; ++j) copy_row(j, 16u, 16u);
    } else {
      // Rows past the pairs and K past its end (the half step's second 64 bytes) are zero-filled.
      const uint32_t high_bytes = steps.half(s) ? 0u : 16u;
#pragma unroll
      for (int j = 0; j < kRows; ++j) {
        const bool real = real_rows >> j & 1;
        copy_row(j, real ? 16u : 0u, real ? high_bytes : 0u);
      }
    }
    if (steps.half(s)) {
      // The step's second record is not brought: zeros in its words decode to zero fragments under
      // any scale, so the consumers need no select in every group.
      unsigned char* second = ring.smem + stage * C::stage_bytes + C::activation_bytes + kChunkBytes + thread * 16;
#pragma unroll
      for (int i = 0; i < C::tiles; ++i) cp_async_16(second + i * C::records * kChunkBytes, a_base, false);
    }
    cp_async_arrive(&ring.full[stage]);
  }
  ring.step += steps.count;
}

// A consumer warpgroup's part of an item at MMA width kN: its row tile.
// Returns gate_up's largest |value| written.
template <class C, bool kGateUp, int kN>
__device__ __forceinline__ float consume(const GemmProblem& p, Ring<C>& ring, const Item& item) {
  const int warp_group = threadIdx.x / 128, thread = threadIdx.x % 128;
  const int warp = thread / 32, lane = threadIdx.x % 32;
  const int row_tiles = p.n / kTileRows;
  const Steps steps(p.k);
  int row_tile[1];
  bool stores[1];
  warpgroup_row_tiles(item.row_block * C::consumers + warp_group, row_tiles, row_tile, stores);
  // This thread's word and scale word of its tile's first record in stage 0.
  const uint32_t first_record = smem_address(ring.smem) + C::activation_bytes + warp_group * C::records * kChunkBytes;
  const uint32_t words_address = first_record + thread * 16;
  const uint32_t scales_address = first_record + kWordBytesPerChunk + (warp * 8 + lane / 4) * 4;
  // Two fragment sets: step s's MMAs read set s % 2 while step s + 1 is decoded into the other, so
  // one step's MMAs stay in flight (the set is a compile-time constant: fragments must stay in
  // registers). A third set, two steps in flight, measured the same.
  // The A fragments of step s ([k32 step][register]), once its stage is full.
  auto decode_step = [&](int s, uint32_t (&fragments)[2 * C::records][4]) {
    const int stage = ring.stage(s);
    barrier_wait(&ring.full[stage], ring.parity(s));
    fence_async_proxy();  // the cp.async rows are read next by the tensor cores (async proxy)
    const uint32_t offset = stage * C::stage_bytes;
#pragma unroll
    for (int r = 0; r < C::records; ++r) {
      const uint32_t record = offset + r * kChunkBytes;
      decode_record(words_address + record, scales_address + record, fragments[2 * r], fragments[2 * r + 1]);
    }
  };
  // Each thread releases its own reads (racecheck does not follow __syncwarp and lane 0's arrival).
  auto release = [&](int s) { barrier_arrive(&ring.empty[ring.stage(s)]); };

  // Per-token schemes: the item's pairs' activation scales, loaded now (their round trips under the
  // MMAs) and staged in shared memory for the epilogue, which reads each 16 times. Looked up there,
  // through a_rows per value, they stalled the epilogue while the tensor cores waited.
  constexpr int kScalesPerThread = (kN + 127) / 128;
  const bool row_scales = p.a_row_scales != nullptr;
  float scales[kScalesPerThread];
#pragma unroll
  for (int u = 0; u < kScalesPerThread; ++u) {
    const int column = thread + 128 * u;
    scales[u] = row_scales && column < item.rows ? row_activation_scale(p, item.row0 + column) : 0.0f;
  }

  // The epilogue's row operands, as the scales, loaded before the MMAs.
  const RowOperands operands[1] = {row_operands<kGateUp, true>(p, row_tile[0], item.expert)};

  float acc[1][kN / 2];
  zero(acc);
  uint32_t a[2][2 * C::records][4];
  decode_step(0, a[0]);
  auto run_step = [&](auto set_constant, int s) {
    constexpr int set = decltype(set_constant)::value;
    const uint64_t descriptor = tile_descriptor(ring.smem + ring.stage(s) * C::stage_bytes);
    wgmma_fence();
    fence_operands(acc[0]);
#pragma unroll
    for (int k = 0; k < 2 * C::records; ++k) WgmmaFp8<kN>::run(acc[0], a[set][k], descriptor + 2 * k);  // +32 bytes per k32
    wgmma_commit();
    fence_operands(acc[0]);
    wgmma_wait<1>();  // step s - 1 retired: its fragment set and its stage are free
    if (s > 0) release(s - 1);
    if (s + 1 < steps.count) decode_step(s + 1, a[1 - set]);
  };
  alternate_fragment_sets(steps.count, run_step);
  wgmma_wait<0>();
  fence_operands(acc);
  release(steps.count - 1);
  ring.step += steps.count;
  // Two buffers by item: a thread writes the next item's only after every thread of the warpgroup
  // passed this barrier of this one, that is, was done reading the last item's.
  float* staged = reinterpret_cast<float*>(ring.smem + C::scales_offset) + (warp_group * 2 + ring.items++ % 2) * C::BN;
  if (row_scales) {
#pragma unroll
    for (int u = 0; u < kScalesPerThread; ++u) {
      if (thread + 128 * u < kN) staged[thread + 128 * u] = scales[u];
    }
    asm volatile("bar.sync %0, 128;\n" ::"r"(1 + warp_group) : "memory");  // the warpgroup's own barrier
  }
  return store_tiles<kGateUp, true, kN>(p, acc, row_tile, stores, operands, item.row0, item.rows,
                                        [&](int column) { return staged[column]; });
}

// An item with at most half of C::BN pairs (an expert's last tile) runs at half the MMA width.
// Only two widths: with gemm.cu's four or five in one persistent loop, ptxas serialized the wgmmas
// ("insufficient register resources"), and with them out of line ("pipeline crossing function
// boundary").
template <int kBN>
struct NarrowWidths {
  using type = std::integer_sequence<int, kBN>;
};
template <>
struct NarrowWidths<64> {
  using type = std::integer_sequence<int, 32, 64>;
};
template <>
struct NarrowWidths<128> {
  using type = std::integer_sequence<int, 64, 128>;
};
template <>
struct NarrowWidths<256> {
  using type = std::integer_sequence<int, 128, 256>;
};

template <class C, bool kGateUp, int... kWidths>
__device__ __forceinline__ void produce_narrowest(const GemmProblem& p, Ring<C>& ring, const Item& item, bool first,
                                                  std::integer_sequence<int, kWidths...>) {
  (void)((item.rows <= kWidths && (produce<C, kGateUp, kWidths>(p, ring, item, first), true)) || ...);
}
template <class C, bool kGateUp, int... kWidths>
__device__ __forceinline__ float consume_narrowest(const GemmProblem& p, Ring<C>& ring, const Item& item,
                                                   std::integer_sequence<int, kWidths...>) {
  float written_max = 0.0f;
  (void)((item.rows <= kWidths && (written_max = consume<C, kGateUp, kWidths>(p, ring, item), true)) || ...);
  return written_max;
}

// Persistent: CTA b takes items b, b + gridDim.x, ... of (the sort's tiles) x (row blocks of the
// CTA's C::tiles row tiles), row blocks innermost, so that CTAs running together share activation
// rows in L2. The producer runs on into the next item while the consumers store the last one.
template <class C, bool kGateUp>
__global__ void __launch_bounds__(C::threads, C::min_blocks) fp8_moe_kernel(const GemmProblem p) {
  extern __shared__ unsigned char smem_raw[];
  Ring<C> ring;
  ring.smem = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(smem_raw) + 1023) & ~uintptr_t{1023});
  ring.full = reinterpret_cast<uint64_t*>(ring.smem + C::barriers_offset);
  ring.empty = ring.full + C::stages;
  // Timeline events as gemm.cu's (0 start, 1 waited (gate_up), 2 items looked up, 6 end).
  if (threadIdx.x == 0) kGateUp ? MXMOE_STAMP(gate_up, 0) : MXMOE_STAMP(down, 0);
  if (threadIdx.x == 0) {
    for (int s = 0; s < C::stages; ++s) {
      barrier_init(&ring.full[s], 128 + 1);             // the producer threads' cp.asyncs, the weights' bytes
      barrier_init(&ring.empty[s], C::consumers * 128);  // every consumer thread
    }
    barrier_init_fence();
  }
  // As gemm.cu: gate_up waits for the sort's tile offsets and its activations; down's blocks launch
  // once every block before them got past its own wait (the routing is final), and wait before they
  // read gate_up's output or the scales of its quantization.
  if constexpr (kGateUp) {
    wait_for_previous_grid();
    if (threadIdx.x == 0) MXMOE_STAMP(gate_up, 1);
  }
  allow_dependent_launch();
  const int row_blocks = (p.n / kTileRows + C::tiles - 1) / C::tiles;
  const int items = p.tile_offsets[p.experts] * row_blocks;
  auto item_of = [&](int index) {
    const int tile = index / row_blocks;
    const int expert = owner_of(p.tile_offsets, p.experts, tile);
    const int row0 = p.pair_offsets[expert] + (tile - p.tile_offsets[expert]) * C::BN;
    return Item{expert, row0, min(C::BN, p.pair_offsets[expert + 1] - row0), index % row_blocks};
  };
  if (threadIdx.x == 0) kGateUp ? MXMOE_STAMP(gate_up, 2) : MXMOE_STAMP(down, 2);
  __syncthreads();  // the barriers are initialized
  using Widths = typename NarrowWidths<C::BN>::type;
  if (threadIdx.x / 128 == C::consumers) {
    release_registers<C::producer_registers>();
    for (int index = blockIdx.x; index < items; index += gridDim.x) {
      produce_narrowest<C, kGateUp>(p, ring, item_of(index), index == blockIdx.x, Widths{});
    }
    cp_async_wait<0>();
  } else {
    claim_registers<C::consumer_registers>();
    if constexpr (!kGateUp) wait_for_previous_grid();  // the epilogue reads the quantization's scales
    float written_max = 0.0f;
    for (int index = blockIdx.x; index < items; index += gridDim.x) {
      written_max = fmaxf(written_max, consume_narrowest<C, kGateUp>(p, ring, item_of(index), Widths{}));
    }
    if (kGateUp) publish_written_max(p, written_max);  // uniform over the consumers' warps
  }
  if (threadIdx.x == 0) kGateUp ? MXMOE_STAMP(gate_up, 6) : MXMOE_STAMP(down, 6);
}

template <class C, bool kGateUp>
void launch_config(const GemmProblem& p, cudaStream_t stream) {
  auto kernel = fp8_moe_kernel<C, kGateUp>;
  // Persistent: as many CTAs as stay resident (queries, not stream operations: capture-safe).
  static const int per_sm = [&] {
    MXMOE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, C::smem_bytes));
    int blocks = 0;
    MXMOE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, kernel, C::threads, C::smem_bytes));
    return std::max(blocks, 1);
  }();
  int device = 0, sms = 0;
  MXMOE_CUDA_CHECK(cudaGetDevice(&device));
  MXMOE_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int row_blocks = (p.n / kTileRows + C::tiles - 1) / C::tiles;
  const int grid = static_cast<int>(std::min<int64_t>(int64_t{sms} * per_sm, static_cast<int64_t>(p.max_tiles) * row_blocks));
  launch_after_previous(kernel, dim3(grid), dim3(C::threads), C::smem_bytes, true, stream, p);
}

template <class C>
void launch_both(const GemmProblem& p, cudaStream_t stream) {
  p.gate_up ? launch_config<C, true>(p, stream) : launch_config<C, false>(p, stream);
}

}  // namespace

void launch_fp8(const GemmProblem& p, int variant, cudaStream_t stream) {
  if (p.row_factors == nullptr) throw CudaError("the sm90 FP8 kernels need the FP8 layout's row factors");
  if (p.gate_up && (p.a_row_scales == nullptr) != (p.out_activations != nullptr)) {
    throw CudaError("the sm90 FP8 gate_up writes per-tensor FP8's units in bf16 (out_activations), per-token's in fp32");
  }
  // The sort's tile width (gemm.cu's variants), 64 to 256 (tile_widths.hpp: narrower tiles run on
  // bf16 tensor cores). One CTA per SM, a row tile per consumer warpgroup, and the producer's spare
  // registers with the consumers (below 56 the producer spills). Measured on an H200
  // (docs/PERFORMANCE.md): at widths 64 and 128 the consumers are bound by the latency of what they
  // issue, so three consumer warpgroups, more warps to issue from, beat two (twenty-sixth session:
  // 120b T=1024 9% faster than two warpgroups of two row tiles, 20b T=1024 and 120b T=2048 and 4096
  // 10-12% faster than two of one; four, at width 64, 2% slower than three; four at width 128 and
  // six at 64 spill), six stages (seven 1.5-2% slower at width 128). At width 256 two warpgroups,
  // each m64n256k32 (128 sums a thread, with the producer's registers: three would not hold them),
  // four stages (five the same).
  if (static_cast<int64_t>(p.pairs) * p.k / 16 > UINT32_MAX) {
    throw CudaError("the sm90 FP8 kernels address their activations in 32-bit 16-byte units: " + std::to_string(p.pairs) +
                    " rows of " + std::to_string(p.k) + " bytes are too many; run the batch in parts");
  }
  switch (variant) {
    case 64: return launch_both<Fp8Config<64, 3, 6, 1, 56>>(p, stream);
    case 128: return launch_both<Fp8Config<128, 3, 6, 1, 56>>(p, stream);
    case 256: return launch_both<Fp8Config<256, 2, 4, 1, 64>>(p, stream);
    default: throw CudaError("sm90 FP8 kernels: no variant for tile width " + std::to_string(variant));
  }
}

}  // namespace mxmoe::cuda::sm90
