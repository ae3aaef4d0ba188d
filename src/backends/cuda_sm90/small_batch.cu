// The Hopper family's small-batch expert kernels (backends/cuda/decode.hpp) on the sm90 weight
// layout (layout.hpp).
//
// A CTA takes a contiguous run of (active expert, 64-row tile) items (for a single token, down
// items also cut K in two parts, so that every CTA streams); K is cut into kSplit slices, each with
// four consumer warps (16 weight rows each) and a shared-memory ring of a few slots, each a run of
// consecutive chunks (a tile's 64-deep chunks are contiguous records of 2 KB of codes and 128 bytes
// of scales: one bulk copy brings a slot). A producer thread keeps every ring filled, running ahead
// across item boundaries, so the weight stream does not stop while the consumers stage tokens or
// run an epilogue. A consumer thread reads its 16 bytes of codes per chunk, decodes them into the A
// fragments of four mma.sync m16n8k16 (the layout's wgmma fragments are, warp by warp, these),
// multiplies them with up to eight staged tokens on the MMA's N, and releases the slot after its
// last chunk. Token rows are staged in bf16 in fragment order: a lane's B fragments for a chunk are
// two 16-byte loads. The K slices are added in slice order, so results do not depend on scheduling.
#include "backends/cuda_sm90/small_batch.hpp"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

#include "backends/cuda/cuda_check.hpp"
#include "backends/cuda/device_utils.cuh"
#include "backends/cuda/decode_device.cuh"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/timeline.cuh"
#include "backends/cuda_sm90/async_copy.cuh"
#include "backends/cuda_sm90/fragments.cuh"
#include "backends/cuda_sm90/layout.hpp"
#include "backends/cuda_sm90/small_batch_tokens.hpp"
#include "mxmoe/codecs.hpp"

namespace mxmoe::cuda::sm90 {

namespace {

constexpr int kSplit = 2;          // K slices per item
constexpr int kTokensPerPass = 8;  // the MMA's N: an expert with more pairs streams its weights again
constexpr int kConsumers = 128 * kSplit;
constexpr int kThreads = kConsumers + 32;  // and the producer warp
constexpr int kMinBlocks = 3;
static_assert(kDecodeDownRows == kTileRows, "the combine counters count 64-row tiles of H");
static_assert(kDecodeGridTokens == kTokensPerPass);

// A slice's ring: Slots slots of up to ChunksPerSlot consecutive chunks (a tile's chunks are
// contiguous: one bulk copy brings a slot).
template <int kSlots, int kChunksPerSlot>
struct Ring {
  static constexpr int slots = kSlots, chunks_per_slot = kChunksPerSlot;
  static constexpr int slot_bytes = kChunksPerSlot * kChunkBytes;
  static constexpr int barriers_offset = kSplit * kSlots * slot_bytes;
  static constexpr int partials_offset = barriers_offset + 2 * kSplit * kSlots * 8;  // [kSplit - 1][4 warps][32] float4
  // A pass's rows, pairs, rows' scales (w4a8_token), then down's flags or gate_up's pairs' largest
  // intermediates (w4a8_token).
  static constexpr int pass_offset = partials_offset + (kSplit - 1) * 4 * 32 * 16;
  static constexpr int staged_offset = pass_offset + 160;
  static_assert(kTokensPerPass * (8 + 4 + 4 + 4) <= 160);
};

// Staged rows are 16 bytes longer than their values, so the eight rows a quarter-warp reads sit in
// distinct banks.
__host__ __device__ constexpr int staged_row_bytes(int k) { return 2 * k + 16; }
// The rings and their barriers, the slices' partial sums, a pass's tables, the staged rows, then the
// block's routing tables.
template <class R>
__host__ __device__ constexpr int smem_bytes(int k, int rows, int tokens, int experts, int top_k) {
  return R::staged_offset + rows * staged_row_bytes(k) + BlockRouting::bytes(tokens, experts, top_k);
}

// Named barrier 1: the consumer warps alone (the producer warp streams on).
__device__ __forceinline__ void consumers_sync() { asm volatile("bar.sync 1, %0;\n" ::"n"(kConsumers) : "memory"); }
// Named barrier 2, once per gate_up or two-part down block with items: its consumers arrive when
// the loads of their first staging are issued, and the producer waits for them before its first
// weight copy (gate_up) or after its first slot of each slice (down, whose first slots stream while
// gate_up finishes), so that the rows enter the memory system ahead of the rest of the block's
// weight stream (issued first, the 20 MB of a single token's first ring fills over the GPU put
// gate_up's rows 5.8 us behind, and the full rings waited for the consumers: docs/PERFORMANCE.md,
// sixteenth session).
__device__ __forceinline__ void first_loads_issued() { asm volatile("bar.arrive 2, %0;\n" ::"n"(kThreads) : "memory"); }
__device__ __forceinline__ void wait_first_loads_issued() { asm volatile("bar.sync 2, %0;\n" ::"n"(kThreads) : "memory"); }

// Where the bf16 pair (k, k + 1), k even, sits in a staged row: in each 64-deep chunk, lane t of a
// quad finds its B fragments of the four k16 steps (k = 16s + 2t and 16s + 2t + 8) in 32 contiguous
// bytes.
__device__ __forceinline__ int staged_pair_offset(int k) {
  const int j = k % 16;
  return (k / 64) * 128 + (j % 8) / 2 * 32 + (k % 64) / 16 * 8 + j / 8 * 4;
}

// The FP8 E4M3 values of lo / scale and hi / scale as a bf16 pair (w4a8's activations; exact in
// bf16, the scale goes after the MMA): an E4M3 value is exact in f32, whose upper half is then
// its bf16.
__device__ __forceinline__ uint32_t fp8_bf16_pair(float lo, float hi, const codec::Fp8Divisor& scale) {
  const float2 values = fp8_e4m3_values_x2(scale.quotient(lo), scale.quotient(hi));
  return __byte_perm(__float_as_uint(values.x), __float_as_uint(values.y), 0x7632);
}

// A lane's quad of a 32-value block held by eight consecutive lanes (four values each), quantized
// by the OCP MX rule (codec): the block's largest magnitude sets its shared exponent. Every lane of
// the warp calls it (its shuffles take the whole warp).
__device__ __forceinline__ float4 mx_quantize_quad(float4 v) {
  float amax = abs_max(v);
#pragma unroll
  for (int offset = 4; offset > 0; offset /= 2) amax = fmaxf(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, offset));
  const int shared = codec::mx_shared_exponent(amax);
  const auto q = [shared](float x) { return codec::mx_round_trip(x, shared); };
  return make_float4(q(v.x), q(v.y), q(v.z), q(v.w));
}

// The values [k_begin, k_end) of `count` rows of `k` fp32 values as the scheme's GEMM input (the
// ends multiples of 64, kChunkK): w4a16 rounds them to bf16; w4a8 takes their FP8 values under the
// tensor's scale (from its largest magnitude's bits, *tensor_max_bits, and writes it to
// row_scales[r] for the epilogue), w4a8_token under each row's own (row_scales[r]); w4a4 quantizes
// each 32-value block by the OCP MX rule first, its values exact in bf16. Each thread has
// kStageLoads 16-byte loads in flight before it converts: the rows come from L2 or memory, and one
// round trip per value would put the whole staging on the critical path (w4a4 took a 32-value
// block per warp and load: 12 us more than w4a16 at T=1 on an H100, docs/PERFORMANCE.md,
// nineteenth session).
constexpr int kStageLoads = 4;

// w4a8's tensor maximum is loaded with the rows, so that the round trips overlap: loaded (and
// divided) before the staging, it held every block's first row loads, and so its first weight
// copy, back by one more trip to L2 (0.4 us at T=1: docs/PERFORMANCE.md, thirty-fifth session).
// `loads_issued` runs once per thread, warp-uniformly: after the warp's first round of loads is
// issued, or at the end for a warp with none.
template <Scheme S, class LoadsIssued>
__device__ void stage_rows(unsigned char* staged, const float* const* rows, int count, int k, int k_begin, int k_end,
                           const uint32_t* tensor_max_bits, float* row_scales, LoadsIssued loads_issued) {
  constexpr bool per_token = S == Scheme::w4a8_token, fp8 = per_token || S == Scheme::w4a8;
  const int row_bytes = staged_row_bytes(k);
  // The rows in rounds, per warp: kStageLoads loads per lane in flight, then each lane converts its
  // quads (lanes past the rows too, r >= count: w4a4's shuffles take the whole warp). A lane's quads
  // are kConsumers apart: one division per round finds the first one's row, steps find the others
  // (a division by the runtime `quads` per quad was about 25 instructions of code each, and the
  // layer's time grows with its kernels' code: docs/PERFORMANCE.md, thirty-first session). A warp's
  // 32 quads of a round are four whole 32-value blocks (the range's ends are multiples of 64: no
  // block straddles two rows).
  const int quad_begin = k_begin / 4, quads = k_end / 4 - quad_begin, total = count * quads;
  bool first_round = true;
  for (int base = threadIdx.x - threadIdx.x % 32; base < total; base += kStageLoads * kConsumers) {
    int r[kStageLoads], c[kStageLoads];
    r[0] = (base + threadIdx.x % 32) / quads;
    c[0] = base + threadIdx.x % 32 - r[0] * quads;
#pragma unroll
    for (int u = 1; u < kStageLoads; ++u) {
      r[u] = r[u - 1];
      for (c[u] = c[u - 1] + kConsumers; c[u] >= quads; c[u] -= quads) ++r[u];
    }
    float4 v[kStageLoads];
#pragma unroll
    for (int u = 0; u < kStageLoads; ++u) {
      v[u] = r[u] < count ? reinterpret_cast<const float4*>(rows[r[u]])[quad_begin + c[u]]
                          : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
    }
    const uint32_t max_bits = fp8 && !per_token ? __ldcg(tensor_max_bits) : 0u;
    __syncwarp();
    if (first_round) loads_issued();
    first_round = false;
#pragma unroll
    for (int u = 0; u < kStageLoads; ++u) {
      if (base + u * kConsumers >= total) break;  // warp-uniform: the warp's quads are all past the rows
      if constexpr (S == Scheme::w4a4) v[u] = mx_quantize_quad(v[u]);
      if (r[u] >= count) continue;
      unsigned char* row = staged + r[u] * row_bytes;
      const int k4 = (quad_begin + c[u]) * 4;
      uint32_t* low = reinterpret_cast<uint32_t*>(row + staged_pair_offset(k4));
      uint32_t* high = reinterpret_cast<uint32_t*>(row + staged_pair_offset(k4 + 2));
      if constexpr (fp8) {
        const float row_scale = per_token ? row_scales[r[u]] : fp8_scale_from_bits(max_bits);
        if (!per_token && c[u] == 0) row_scales[r[u]] = row_scale;
        const codec::Fp8Divisor divisor(row_scale);
        *low = fp8_bf16_pair(v[u].x, v[u].y, divisor);
        *high = fp8_bf16_pair(v[u].z, v[u].w, divisor);
      } else {
        *low = bf16x2_rn(v[u].x, v[u].y);
        *high = bf16x2_rn(v[u].z, v[u].w);
      }
    }
  }
  if (first_round) loads_issued();  // a warp with no rows to load
}

// kParts: the K parts each (expert, tile) item is cut in (down only; 2 when, even with every pair on
// an expert of its own, there are at most half as many items as blocks: in practice a single token.
// The stream then runs on every block; the top-k sum adds the parts). kRoutes: the side of
// kFewPairs the batch's pairs are on, so that the kernel holds one routing's code.
template <Scheme S, bool kGateUp, bool kFolded, class R, int kParts, Routes kRoutes>
__global__ void __launch_bounds__(kThreads, kMinBlocks) small_batch_kernel(DecodeLayerArgs a) {
  static_assert(kParts == 1 || (!kGateUp && kParts <= kDownMaxParts && kRoutes == Routes::few));
  static_assert(kRoutes != Routes::any);
  constexpr int kSlots = R::slots, kPerSlot = R::chunks_per_slot;
  extern __shared__ __align__(128) unsigned char smem[];
  uint64_t* full = reinterpret_cast<uint64_t*>(smem + R::barriers_offset);
  uint64_t* empty = full + kSplit * kSlots;
  unsigned char* staged = smem + R::staged_offset;
  const int n = kGateUp ? 2 * a.intermediate : a.hidden;
  const int k = kGateUp ? a.hidden : a.intermediate;
  const int row_bytes = staged_row_bytes(k);
  const BlockRouting routing =
      BlockRouting::at(staged + min(a.tokens, kTokensPerPass) * row_bytes, a.tokens, a.experts, a.top_k);
  // All of the block's shared memory is dynamic (smem_bytes), so that the host can count it exactly.
  const float** s_rows = reinterpret_cast<const float**>(smem + R::pass_offset);
  int32_t* s_pairs = reinterpret_cast<int32_t*>(smem + R::pass_offset + 8 * kTokensPerPass);
  float* s_row_scale = reinterpret_cast<float*>(smem + R::pass_offset + 12 * kTokensPerPass);
  bool* s_complete = reinterpret_cast<bool*>(smem + R::pass_offset + 16 * kTokensPerPass);        // down
  uint32_t* s_pair_max = reinterpret_cast<uint32_t*>(smem + R::pass_offset + 16 * kTokensPerPass);  // gate_up
  auto s_partial = reinterpret_cast<float4 (*)[4][32]>(smem + R::partials_offset);

  // Timeline events (decode_gate_up, decode_down): 0 start, 1 waited (gate_up: for the route; down:
  // its consumers, for gate_up), 2 routed, 3 first weight copy issued, 4 first tokens staged, 5
  // items done (down: with their top-k sums), 6 the routing's top-k done, 7 the barrier after it
  // passed, 8 the producer past the consumers' first loads (gate_up).
  const auto stamp = [](int event) {
    if constexpr (kGateUp) {
      MXMOE_STAMP(decode_gate_up, event);
    } else {
      MXMOE_STAMP(decode_down, event);
    }
  };
  if (threadIdx.x == 0) stamp(0);
  if (threadIdx.x == 0) {
    for (int i = 0; i < kSplit * kSlots; ++i) {
      barrier_init(&full[i]);
      barrier_init(&empty[i], kConsumers / kSplit);  // every thread of the slice's four consumer warps
    }
    barrier_init_fence();
  }
  // gate_up reads the route's logits; down's routing reads them too (final before gate_up got past
  // its own wait), and its consumers wait for gate_up only before they stage the intermediates:
  // down's weights stream while gate_up finishes.
  if constexpr (kGateUp) wait_for_previous_grid();
  if (kGateUp && threadIdx.x == 0) stamp(1);
  allow_dependent_launch();
  // Its __syncthreads publish the barriers too.
  route_in_block<kThreads, kRoutes>(a, routing, kGateUp && blockIdx.x == 0, [&](int event) {
    if (threadIdx.x == 0) stamp(6 + event);
  });
  if (threadIdx.x == 0) stamp(2);

  const int tiles = n / kTileRows, chunks = k / kChunkK;
  const int items = routing.active() * tiles * kParts;
  // Consecutive items mostly share an expert, whose staged tokens then stay.
  const int per_block = (items + gridDim.x - 1) / gridDim.x;
  const int item_begin = min(items, blockIdx.x * per_block), item_end = min(items, item_begin + per_block);
  const int per_part = (chunks + kParts - 1) / kParts;
  // The chunks [p0, p1) of an item's part, and [c0, c1) of its K slice `slice`.
  auto part_chunks = [&](int part, int& p0, int& p1) {
    p0 = min(chunks, part * per_part);
    p1 = min(chunks, p0 + per_part);
  };
  auto slice_chunks = [&](int part, int slice, int& c0, int& c1) {
    int p0, p1;
    part_chunks(part, p0, p1);
    const int per_slice = (p1 - p0 + kSplit - 1) / kSplit;
    c0 = min(p1, p0 + slice * per_slice);
    c1 = min(p1, c0 + per_slice);
  };
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  constexpr bool per_tensor = S == Scheme::w4a8, per_token = S == Scheme::w4a8_token;
  // The two-part down kernel (a single token: the rings hold a block's whole share of the weights)
  // holds its stream for the intermediate rows' loads (first_loads_issued): 1.7-5.6% off T=1 on an
  // H200; holding every down kernel cost w4a8_token's T=2 1.4-2.2% (docs/PERFORMANCE.md,
  // thirty-second session).
  constexpr bool holds_for_rows = !kGateUp && kParts > 1;
  // The staged rows' scales (s_row_scale): w4a8's tokens enter gate_up under the hidden states'
  // scale (the route kernel's largest |x|), down under the intermediate's (the largest value gate_up
  // wrote, read once gate_up is done), both from their staging; w4a8_token's rows each under its
  // own (a token's from the route kernel, a pair's from gate_up's largest |y| of the pair: looked up
  // with the pass), the tensor scales then 1.
  constexpr bool fp8 = per_tensor || per_token;
  const uint32_t* tensor_max_bits = &a.control->amax_bits[kGateUp ? 0 : 1];
  if (!per_tensor && blockIdx.x == 0 && threadIdx.x == 0) a.tensor_scales[kGateUp ? 0 : 1] = 1.0f;  // for the caller
  float intermediate_max = 0.0f;
  auto passes = [&](int item) {
    const int slot = item / kParts / tiles;
    return (routing.pair_begin()[slot + 1] - routing.pair_begin()[slot] + kTokensPerPass - 1) / kTokensPerPass;
  };

  if (warp == kConsumers / 32) {
    // The producer: lane 0 fills every slice's ring with the chunks its consumers take, in their order.
    if constexpr (per_tensor && !kGateUp) {
      if (blockIdx.x == 0 && lane == kSplit) {  // a lane the rings do not need waits for gate_up
        wait_for_previous_grid();
        a.tensor_scales[1] = fp8_scale_from_bits(__ldcg(&a.control->amax_bits[1]));
        a.control->amax_bits[0] = 0;  // every gate_up block has read it: zero for the next run
      }
    }
    if (kGateUp && item_begin < item_end) {
      wait_first_loads_issued();  // the whole warp
      if (lane == 0) stamp(8);
    }
    // One lane for every ring, the slices' slots in turn: with a lane per ring, compute-sanitizer's
    // racecheck credited the second lane's copies to the first, which never waited on that ring's
    // empty barriers, and reported their refills as races.
    if (lane != 0) return;
    const uint32_t* words = kGateUp ? a.gate_up_words : a.down_words;
    int fills[kSplit] = {}, issued = 0;
    // Two-part down holds its stream once, where its consumers arrive: at a block with items.
    bool hold = holds_for_rows && item_begin < item_end;
    // The weights are read once per pass: evict-first, so that they stream through L2 without
    // pushing out what the next layer call reads again (the router's weights, the kernels' code,
    // the token rows): 2-5% off every decode size on an H200 (docs/PERFORMANCE.md, eighteenth session).
    const uint64_t read_once = evict_first_policy();
    for (int item = item_begin; item < item_end; ++item) {
      const int tile_item = item / kParts;
      const int64_t first_block =
          (static_cast<int64_t>(routing.experts()[tile_item / tiles]) * tiles + tile_item % tiles) * chunks;
      int c0[kSplit], c1[kSplit];
#pragma unroll
      for (int s = 0; s < kSplit; ++s) slice_chunks(item % kParts, s, c0[s], c1[s]);
      for (int pass = passes(item); pass > 0; --pass) {
        // Every slice's chunks of this item are issued before the next item's, so a slot waits only
        // for reads of chunks already issued (a slow slice delays the other's refills, never stops them).
        for (int offset = 0; c0[0] + offset < c1[0]; offset += kPerSlot) {  // slice 0 has the most chunks
#pragma unroll
          for (int s = 0; s < kSplit; ++s) {
            const int c = c0[s] + offset;
            if (c >= c1[s]) continue;
            const int n = min(kPerSlot, c1[s] - c), slot = s * kSlots + fills[s] % kSlots;
            if (fills[s] >= kSlots) barrier_wait(&empty[slot], (fills[s] / kSlots - 1) & 1);  // its last chunks were read
            barrier_expect_bytes(&full[slot], n * kChunkBytes);
            bulk_copy(smem + slot * R::slot_bytes, words + (first_block + c) * (kChunkBytes / 4), n * kChunkBytes,
                      &full[slot], read_once);
            if (issued++ == 0) stamp(3);
            ++fills[s];
          }
          if (hold) {  // after every slice's first slot (slice 0, which has the most chunks, has one)
            wait_first_loads_issued();
            hold = false;
          }
        }
      }
    }
    if (hold) wait_first_loads_issued();  // items without chunks (a K part past a short K)
    return;
  }

  // The consumers: warp w of slice w / 4 owns rows 16 (w % 4) .. + 15 of each tile.
  const int slice = warp / 4, slice_warp = warp % 4, g = lane / 4, t = lane % 4;
  uint64_t* ring_full = full + slice * kSlots;
  uint64_t* ring_empty = empty + slice * kSlots;
  const uint32_t ring = smem_address(smem) + slice * kSlots * R::slot_bytes;
  const uint32_t word_offset = (threadIdx.x % 128) * 16;
  const uint32_t scale_offset = kWordBytesPerChunk + (slice_warp * 8 + g) * 4;
  // A pass stages the rows' values of its part of K only (two-part down: half a row per block).
  int use = 0, staged_key = -1;
  for (int item = item_begin; item < item_end; ++item) {
    const int slot = item / kParts / tiles, tile = item / kParts % tiles, part = item % kParts;
    const int expert = routing.experts()[slot];
    int c0, c1;
    slice_chunks(part, slice, c0, c1);
    const int last = routing.pair_begin()[slot + 1];
    for (int first = routing.pair_begin()[slot]; first < last; first += kTokensPerPass) {
      const int count = min(kTokensPerPass, last - first);
      const int key = first * kParts + part;
      if (key != staged_key) {
        consumers_sync();  // the previous tokens' readers are done
        if constexpr (!kGateUp) {
          wait_for_previous_grid();  // gate_up's intermediates, and their largest value
          if (staged_key < 0 && threadIdx.x == 0) stamp(1);
        }
        look_up_pass<kGateUp>(a, routing, first, count, k, s_pairs, s_rows, per_token ? s_row_scale : nullptr);
        if (kGateUp && per_token && threadIdx.x < kTokensPerPass) s_pair_max[threadIdx.x] = 0;
        consumers_sync();
        const bool block_first = staged_key < 0;
        int p0, p1;
        part_chunks(part, p0, p1);
        const auto loads_issued = [&] {
          if (block_first && (kGateUp || holds_for_rows)) first_loads_issued();
        };
        stage_rows<S>(staged, s_rows, count, k, p0 * kChunkK, p1 * kChunkK, tensor_max_bits, s_row_scale,
                      loads_issued);
        consumers_sync();
        if (kGateUp && per_tensor && block_first && blockIdx.x == 0 && threadIdx.x == 0) {
          a.tensor_scales[0] = s_row_scale[0];  // for the caller
        }
        if (staged_key < 0 && threadIdx.x == 0) stamp(4);
        staged_key = key;
      }
      // Lane group g reads token g's row, or the last staged one (whose products it never stores).
      const uint32_t b_address = smem_address(staged) + min(g, count - 1) * row_bytes + t * 32;
      float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      for (int c = c0; c < c1; c += kPerSlot, ++use) {
        const int n = min(kPerSlot, c1 - c), s = use % kSlots;
        barrier_wait(&ring_full[s], (use / kSlots) & 1);
        const uint32_t at = ring + s * R::slot_bytes;
#pragma unroll
        for (int j = 0; j < kPerSlot; ++j) {
          if (j >= n) break;
          const uint4 words = load_shared_u128(at + j * kChunkBytes + word_offset);
          const uint32_t scales = load_shared_u32(at + j * kChunkBytes + scale_offset);
          uint32_t fragments[4][4];
          decode_fragments<kFolded>(words, scales, fragments);
          const uint32_t b = b_address + (c + j) * 128;
          const uint4 b01 = load_shared_u128(b), b23 = load_shared_u128(b + 16);
          mma_bf16_16816(acc, fragments[0], b01.x, b01.y);
          mma_bf16_16816(acc, fragments[1], b01.z, b01.w);
          mma_bf16_16816(acc, fragments[2], b23.x, b23.y);
          mma_bf16_16816(acc, fragments[3], b23.z, b23.w);
        }
        // Each thread releases its own reads (one lane after __syncwarp is ordered the same, but
        // compute-sanitizer's racecheck does not follow that chain and reports the refill as a race).
        barrier_arrive(&ring_empty[s]);
      }
      if constexpr (kSplit > 1) {  // the slices' sums, added in slice order
        if (slice > 0) s_partial[slice - 1][slice_warp][lane] = make_float4(acc[0], acc[1], acc[2], acc[3]);
        consumers_sync();
        if (slice == 0) {
#pragma unroll
          for (int i = 0; i < kSplit - 1; ++i) {
            const float4 v = s_partial[i][slice_warp][lane];
            acc[0] += v.x;
            acc[1] += v.y;
            acc[2] += v.z;
            acc[3] += v.w;
          }
        }
      }

      // C fragment: acc[i] is row g, acc[2 + i] row g + 8 of the warp's 16, both for token 2t + i.
      if (slice == 0) {
        float pair_max[2] = {0.0f, 0.0f};  // w4a8_token: the largest |y| this lane wrote for token 2t + i
#pragma unroll
        for (int i = 0; i < 2; ++i) {
          const int column = 2 * t + i;
          if (column >= count) continue;
          const int64_t p = s_pairs[column];
          const float scale = fp8 ? s_row_scale[column] : 1.0f;
          if constexpr (kGateUp) {  // rows g and g + 8 are the gate and linear rows of one unit
            const int unit = tile * (kTileRows / 2) + slice_warp * 8 + g;
            const float* bias = a.gate_up_bias + static_cast<int64_t>(expert) * n + 2 * unit;
            const float y = swiglu(acc[i] * scale + bias[0], acc[2 + i] * scale + bias[1], a.alpha, a.limit);
            a.intermediate_out[p * (n / 2) + unit] = y;
            intermediate_max = fmaxf(intermediate_max, fabsf(y));
            pair_max[i] = fabsf(y);
          } else {
            const int h = tile * kTileRows + slice_warp * 16 + g;
            const float* bias = a.down_bias + static_cast<int64_t>(expert) * n + h;
            float* out = a.pair_out + (static_cast<int64_t>(part) * routing.pairs + p) * n + h;
            out[0] = part == 0 ? acc[i] * scale + bias[0] : acc[i] * scale;  // the bias goes with the first part
            out[8] = part == 0 ? acc[2 + i] * scale + bias[8] : acc[2 + i] * scale;
          }
        }
        if constexpr (kGateUp && per_token) {  // the warp's eight units of each token (lanes g), then one shared atomic
#pragma unroll
          for (int i = 0; i < 2; ++i) {
#pragma unroll
            for (int offset = 4; offset < 32; offset *= 2) {
              pair_max[i] = fmaxf(pair_max[i], __shfl_xor_sync(0xFFFFFFFFu, pair_max[i], offset));
            }
            if (g == 0 && pair_max[i] > 0.0f) atomicMax(&s_pair_max[2 * t + i], __float_as_uint(pair_max[i]));
          }
        }
      }
      if (!kGateUp && per_token && tile == 0 && part == 0 && threadIdx.x < count) {  // for the caller
        a.row_scales[a.tokens + s_pairs[threadIdx.x]] = s_row_scale[threadIdx.x];
      }
      if constexpr (kGateUp) {
        consumers_sync();  // s_partial is read before the next item writes it, and s_pair_max is complete
        if (per_token && threadIdx.x < count) {  // the item's share of its pairs' largest |y|: one atomic each
          const uint32_t most = s_pair_max[threadIdx.x];
          if (most != 0) atomicMax(&a.pair_max_bits[s_pairs[threadIdx.x]], most);
          s_pair_max[threadIdx.x] = 0;
        }
      } else {
        sum_completed_tokens<kConsumers>(a, routing, s_pairs, s_complete, count, tile, tiles, tile * kTileRows, kTileRows, n,
                                         kParts, [] { consumers_sync(); });
      }
    }
  }
  if (threadIdx.x == 0) stamp(5);
  if constexpr (kGateUp && per_tensor) {  // the intermediate's largest magnitude, for down's scale
    // s_partial is free: every item ended with a consumers_sync.
    block_max_into<kConsumers>(&a.control->amax_bits[1], intermediate_max, reinterpret_cast<uint32_t*>(s_partial),
                               [] { consumers_sync(); });
  }
}

// Two slots of six chunks per slice (26 KB in flight per slice, one bulk copy per 13 KB), or of
// five where that fits a third block on an SM and six do not (four and five tokens at gpt-oss's
// 2880). Measured on an H200 against 3 x 4 (the previous default), 3 x 5, 4 x 4 and 2 x 7
// (docs/PERFORMANCE.md): fewer, larger copies, and more bytes in flight per SM.
using LargeRing = Ring<2, 6>;
using SmallRing = Ring<2, 5>;

// sm_90's shared memory per SM and what the hardware keeps per block; the registers allow kMinBlocks.
constexpr int kSmemPerSm = 228 * 1024, kSmemReservedPerBlock = 1024;
constexpr int blocks_per_sm(int smem) { return std::min(kMinBlocks, kSmemPerSm / (smem + kSmemReservedPerBlock)); }

// The largest batch of a grid bucket (DecodeGrids: those above kDecodeGridTokens share the last).
constexpr int bucket_tokens(int tokens) { return tokens < kDecodeGridTokens ? tokens : kDecodeMaxTokens; }

// Whether a batch's kernel over depth k takes the small ring: the same answer for the grid and the launch.
bool takes_small_ring(int k, int tokens, int experts, int top_k) {
  const int rows = std::min(tokens, kTokensPerPass), routed = bucket_tokens(tokens);
  return blocks_per_sm(smem_bytes<SmallRing>(k, rows, routed, experts, top_k)) >
         blocks_per_sm(smem_bytes<LargeRing>(k, rows, routed, experts, top_k));
}

// The one-part kernel of a ring and a routing.
template <Scheme S, bool kGateUp, bool kFolded>
auto kernel_for(bool small_ring, Routes routes) {
  if (routes == Routes::few) {
    return small_ring ? small_batch_kernel<S, kGateUp, kFolded, SmallRing, 1, Routes::few>
                      : small_batch_kernel<S, kGateUp, kFolded, LargeRing, 1, Routes::few>;
  }
  return small_ring ? small_batch_kernel<S, kGateUp, kFolded, SmallRing, 1, Routes::many>
                    : small_batch_kernel<S, kGateUp, kFolded, LargeRing, 1, Routes::many>;
}
// Two K parts for down: with the large ring and few pairs only (launch_kernels).
template <Scheme S, bool kFolded>
constexpr auto two_part_down = small_batch_kernel<S, false, kFolded, LargeRing, kDownMaxParts, Routes::few>;
int ring_smem_bytes(bool small_ring, int k, int rows, int tokens, int experts, int top_k) {
  return small_ring ? smem_bytes<SmallRing>(k, rows, tokens, experts, top_k)
                    : smem_bytes<LargeRing>(k, rows, tokens, experts, top_k);
}

// Grids by the staged rows of a batch (its tokens up to kTokensPerPass) and its ring.
template <Scheme S, bool kFolded>
DecodeGrids grids_for(int hidden, int intermediate, int experts, int top_k, int sm_count) {
  const auto allow = [&](auto kernel, bool small, int k) {
    const int most = ring_smem_bytes(small, k, kTokensPerPass, kDecodeMaxTokens, experts, top_k);
    MXMOE_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, most));
  };
  for (const bool small : {false, true}) {
    for (const Routes routes : {Routes::few, Routes::many}) {
      allow(kernel_for<S, true, kFolded>(small, routes), small, hidden);
      allow(kernel_for<S, false, kFolded>(small, routes), small, intermediate);
    }
  }
  allow(two_part_down<S, kFolded>, false, intermediate);
  const auto grid = [&](auto kernel, bool small, int k, int tokens) {
    const int smem = ring_smem_bytes(small, k, std::min(tokens, kTokensPerPass), bucket_tokens(tokens), experts, top_k);
    int per_sm = 0;
    MXMOE_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem));
    return std::max(1, per_sm) * sm_count;
  };
  DecodeGrids grids;
  for (int tokens = 1; tokens <= kDecodeGridTokens; ++tokens) {
    const bool small_up = takes_small_ring(hidden, tokens, experts, top_k);
    const bool small_down = takes_small_ring(intermediate, tokens, experts, top_k);
    // The two-part down kernel uses the same resources as the one-part one, and the bucket's
    // kernels of either routing the same (the launch bound's registers; the same shared memory).
    const Routes routes = routes_for(bucket_tokens(tokens) * top_k);
    grids.gate_up[tokens - 1] = grid(kernel_for<S, true, kFolded>(small_up, routes), small_up, hidden, tokens);
    grids.down[tokens - 1] = grid(kernel_for<S, false, kFolded>(small_down, routes), small_down, intermediate, tokens);
  }
  return grids;
}

template <Scheme S, bool kFolded>
void launch_kernels(const DecodeLayerArgs& a, cudaStream_t stream) {
  const int rows = std::min(a.tokens, kTokensPerPass);  // staged token rows
  const bool small_up = takes_small_ring(a.hidden, a.tokens, a.experts, a.top_k);
  const bool small_down = takes_small_ring(a.intermediate, a.tokens, a.experts, a.top_k);
  const Routes routes = routes_for(a.tokens * a.top_k);
  launch_after_previous(kernel_for<S, true, kFolded>(small_up, routes), dim3(a.gate_up_grid), dim3(kThreads),
                        ring_smem_bytes(small_up, a.hidden, rows, a.tokens, a.experts, a.top_k), a.overlap_launches,
                        stream, a);
  // The most items down can have: every pair on its own expert. Two K parts only with the large
  // ring and few pairs: the small ring serves four or five staged rows, too many items for two
  // parts at gpt-oss shapes, as are more than kFewPairs pairs (so neither two-part kernel is built).
  const int64_t most_items = std::min(a.experts, a.tokens * a.top_k) * static_cast<int64_t>(a.hidden / kTileRows);
  const bool two_parts = !small_down && routes == Routes::few && kDownMaxParts * most_items <= a.down_grid;
  const auto down = two_parts ? two_part_down<S, kFolded> : kernel_for<S, false, kFolded>(small_down, routes);
  launch_after_previous(down, dim3(a.down_grid), dim3(kThreads),
                        ring_smem_bytes(small_down, a.intermediate, rows, a.tokens, a.experts, a.top_k),
                        a.overlap_launches, stream, a);
}

// The backend's schemes (bf16 activations) and the scale fold as template arguments.
template <class F>
auto dispatch(Scheme scheme, bool folded_scales, F&& f) {
  switch (scheme) {
    case Scheme::w4a16:
      return folded_scales ? f.template operator()<Scheme::w4a16, true>() : f.template operator()<Scheme::w4a16, false>();
    case Scheme::w4a8:
      return folded_scales ? f.template operator()<Scheme::w4a8, true>() : f.template operator()<Scheme::w4a8, false>();
    case Scheme::w4a8_token:
      return folded_scales ? f.template operator()<Scheme::w4a8_token, true>()
                           : f.template operator()<Scheme::w4a8_token, false>();
    case Scheme::w4a4:
      return folded_scales ? f.template operator()<Scheme::w4a4, true>() : f.template operator()<Scheme::w4a4, false>();
    default: break;
  }
  throw CudaError("the sm90 small-batch kernels do not run scheme " + std::string(scheme_name(scheme)));
}

DecodeGrids grids(Scheme scheme, bool folded_scales, int hidden, int intermediate, int experts, int top_k,
                  int sm_count) {
  if (hidden % kChunkK != 0 || intermediate % kChunkK != 0) {
    throw CudaError("the sm90 small-batch kernels need H and I multiples of 64");
  }
  return dispatch(scheme, folded_scales, [&]<Scheme S, bool kFolded>() {
    return grids_for<S, kFolded>(hidden, intermediate, experts, top_k, sm_count);
  });
}

void launch(const DecodeLayerArgs& a, cudaStream_t stream) {
  dispatch(a.scheme, a.folded_scales, [&]<Scheme S, bool kFolded>() { launch_kernels<S, kFolded>(a, stream); });
}

}  // namespace

const SmallBatchExperts& small_batch_experts() {
  static const SmallBatchExperts experts{.max_tokens = kSmallBatchTokens, .grids = grids, .launch = launch};
  return experts;
}

}  // namespace mxmoe::cuda::sm90
