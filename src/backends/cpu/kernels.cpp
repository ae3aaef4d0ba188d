// MXFP4 x fp32 strip products, compiled once per instruction set and dispatched at run time.
//
// Two ways through a strip of 32 weight rows, chosen by the number of token rows M:
// - few rows (decode): every weight is decoded in registers and used right away; each block's
//   partial sums are scaled once by the block scales, so the inner loop never multiplies scales;
// - many rows (prefill): the strip is decoded once into an fp32 panel with the scales applied
//   (exact: E2M1 times a power of two fits in a float), then a register-blocked FMA kernel streams
//   it for every MR rows of tokens.
#include <algorithm>
#include <bit>
#include <cstddef>
#include <utility>

#include "backends/cpu/kernels.hpp"
#include "mxmoe/codecs.hpp"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "backends/cpu/kernels.cpp"
#ifndef HWY_DISABLED_TARGETS
// SSSE3/SSE4 would add compile time for machines AVX2 has covered since 2013; AVX3_DL adds
// nothing these kernels use.
#define HWY_DISABLED_TARGETS (HWY_SSSE3 | HWY_SSE4 | HWY_AVX3_DL)
#endif
#include <hwy/foreach_target.h>  // must precede highway.h
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace mxmoe::cpu {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using DU = hn::RebindToUnsigned<DF>;
using DI = hn::RebindToSigned<DF>;
using D8 = hn::Rebind<uint8_t, DU>;
using VF = hn::Vec<DF>;
using VU = hn::Vec<DU>;

constexpr int kLanes = static_cast<int>(hn::MaxLanes(DF()));

// Register blocking per instruction set: accumulators MR x NV vectors must fit the register file
// (32 registers on AVX-512, 16 on AVX2) with room for weights and a broadcast.
constexpr int kPanelNV = 2;
constexpr int kPanelMR = kLanes >= 16 ? 8 : (kLanes >= 8 ? 6 : 4);
constexpr int kGemvNV = kLanes >= 16 ? 2 : 1;
constexpr int kGemvMR = kLanes >= 16 ? 4 : 2;
// Below this many rows, decoding in registers beats decoding a panel once.
constexpr int64_t kGemvMaxRows = kLanes >= 16 ? 4 : 2;
static_assert(kStripRows % (kPanelNV * kLanes) == 0 && kStripRows % (kGemvNV * kLanes) == 0);
static_assert(std::endian::native == std::endian::little, "packed code words are little-endian");

HWY_ALIGN constexpr float kE2m1Values[16] = {0.0f,  0.5f,  1.0f,  1.5f,  2.0f,  3.0f,  4.0f,  6.0f,
                                             -0.0f, -0.5f, -1.0f, -1.5f, -2.0f, -3.0f, -4.0f, -6.0f};

// Codes 0..15 in 32-bit lanes -> their E2M1 values.
HWY_INLINE VF DecodeE2m1(VU codes) {
  const DF df;
  const DI di;
  if constexpr (kLanes >= 16) {
    return hn::TableLookupLanes(hn::Load(df, kE2m1Values), hn::IndicesFromVec(df, hn::BitCast(di, codes)));
  } else if constexpr (kLanes >= 8) {
    // Eight lanes hold the magnitudes; the code's sign bit moves to the float's sign bit.
    const DU du;
    const VF magnitude = hn::TableLookupLanes(hn::Load(df, kE2m1Values),
                                              hn::IndicesFromVec(df, hn::BitCast(di, hn::And(codes, hn::Set(du, 7)))));
    return hn::Xor(magnitude, hn::BitCast(df, hn::ShiftLeft<28>(hn::And(codes, hn::Set(du, 8)))));
  } else {
    return hn::GatherIndex(df, kE2m1Values, hn::BitCast(di, codes));
  }
}

// kLanes bytes -> one byte per 32-bit lane.
HWY_INLINE VU LoadBytes(const uint8_t* p) { return hn::PromoteTo(DU(), hn::LoadU(D8(), p)); }

// kLanes rows' 32-bit code words of one 8-step group (see kernels.hpp for the layout).
HWY_INLINE VU LoadWords(const uint8_t* group, int row) {
  return hn::LoadU(DU(), reinterpret_cast<const uint32_t*>(group) + row);
}

// The codes of k-step I (0..7) of a group, one per lane.
template <int I>
HWY_INLINE VU StepCodes(VU words) {
  constexpr int kShift = 4 * nibble_of_step(I);
  if constexpr (kShift == 28) {
    return hn::ShiftRight<28>(words);
  } else {
    return hn::And(hn::ShiftRight<kShift>(words), hn::Set(DU(), 15));
  }
}

// E8M0 codes -> 2^(code - 127) as floats: the code is the float's exponent field, except code 0,
// the subnormal 2^-127.
HWY_INLINE VF DecodeScales(const uint8_t* p) {
  const DU du;
  const VU codes = LoadBytes(p);
  const VU bits = hn::IfThenElse(codes == hn::Zero(du), hn::Set(du, codec::kE8m0ZeroFloatBits), hn::ShiftLeft<23>(codes));
  return hn::BitCast(DF(), bits);
}

template <int V>
struct Const {
  static constexpr int value = V;
};

// f(Const<0>) ... f(Const<7>): the eight k-steps of a group, unrolled.
template <class F, int... I>
HWY_INLINE void ForEachStepImpl(F&& f, std::integer_sequence<int, I...>) {
  (f(Const<I>()), ...);
}
template <class F>
HWY_INLINE void ForEachStep(F&& f) {
  ForEachStepImpl(f, std::make_integer_sequence<int, 8>());
}

// Calls f(Const<rows>) for 1 <= rows <= MaxRows, so each row count gets its own unrolled kernel.
template <int MaxRows, class F>
HWY_INLINE void WithRows(int64_t rows, F&& f) {
  if constexpr (MaxRows >= 1) {
    if (rows == MaxRows) {
      f(Const<MaxRows>());
    } else {
      WithRows<MaxRows - 1>(rows, f);
    }
  }
}

template <int MR, int NV>
HWY_INLINE void ZeroTiles(VF (&acc)[MR][NV]) {
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m) {
#pragma GCC unroll 16
    for (int j = 0; j < NV; ++j) acc[m][j] = hn::Zero(DF());
  }
}

// acc[m][j] -> C[m, n_lo + j * kLanes ...].
template <int MR, int NV>
HWY_INLINE void StoreTiles(const VF (&acc)[MR][NV], float* C, int64_t ldc, int n_lo) {
#pragma GCC unroll 16
  for (int m = 0; m < MR; ++m) {
#pragma GCC unroll 16
    for (int j = 0; j < NV; ++j) hn::StoreU(acc[m][j], DF(), C + m * ldc + n_lo + j * kLanes);
  }
}

// Rows [n_lo, n_lo + NV * kLanes) of the strip for MR token rows, decoding in registers.
template <int MR, int NV>
HWY_INLINE void GemvPass(const uint8_t* tiles, const uint8_t* scales, int64_t kblocks, int n_lo, const float* A,
                         int64_t lda, float* C, int64_t ldc) {
  const DF df;
  VF acc[MR][NV];
  ZeroTiles(acc);
  for (int64_t b = 0; b < kblocks; ++b) {
    // Two accumulators per output vector (even and odd k-steps): independent FMA chains.
    VF even_part[MR][NV], odd_part[MR][NV];
    ZeroTiles(even_part);
    ZeroTiles(odd_part);
#pragma GCC unroll 4
    for (int q = 0; q < 4; ++q) {
      const uint8_t* group = tiles + b * kTileBytes + q * kGroupBytes;
      const float* a = A + b * 32 + q * 8;
#pragma GCC unroll 16
      for (int j = 0; j < NV; ++j) {
        const VU words = LoadWords(group, n_lo + j * kLanes);
        ForEachStep([&](auto step) {
          constexpr int i = decltype(step)::value;
          const VF w = DecodeE2m1(StepCodes<i>(words));
          auto& part = (i & 1) ? odd_part : even_part;
#pragma GCC unroll 16
          for (int m = 0; m < MR; ++m) part[m][j] = hn::MulAdd(w, hn::Set(df, a[m * lda + i]), part[m][j]);
        });
      }
    }
#pragma GCC unroll 16
    for (int j = 0; j < NV; ++j) {
      const VF scale = DecodeScales(scales + b * kStripRows + n_lo + j * kLanes);
#pragma GCC unroll 16
      for (int m = 0; m < MR; ++m) acc[m][j] = hn::MulAdd(hn::Add(even_part[m][j], odd_part[m][j]), scale, acc[m][j]);
    }
  }
  StoreTiles(acc, C, ldc, n_lo);
}

// The whole strip as an fp32 panel [K][32] with the scales applied.
HWY_INLINE void DecodePanel(const uint8_t* tiles, const uint8_t* scales, int64_t kblocks, float* panel) {
  const DF df;
  constexpr int kVectors = kStripRows / kLanes;
  for (int64_t b = 0; b < kblocks; ++b) {
    VF scale[kVectors];
#pragma GCC unroll 32
    for (int j = 0; j < kVectors; ++j) scale[j] = DecodeScales(scales + b * kStripRows + j * kLanes);
#pragma GCC unroll 1
    for (int q = 0; q < 4; ++q) {
      const uint8_t* group = tiles + b * kTileBytes + q * kGroupBytes;
      float* out = panel + (b * 32 + q * 8) * kStripRows;
#pragma GCC unroll 32
      for (int j = 0; j < kVectors; ++j) {
        const VU words = LoadWords(group, j * kLanes);
        ForEachStep([&](auto step) {
          constexpr int i = decltype(step)::value;
          hn::StoreU(hn::Mul(DecodeE2m1(StepCodes<i>(words)), scale[j]), df, out + i * kStripRows + j * kLanes);
        });
      }
    }
  }
}

// Rows [n_lo, n_lo + NV * kLanes) of the strip for MR token rows, from a decoded panel.
template <int MR, int NV>
HWY_INLINE void PanelPass(const float* panel, int64_t K, int n_lo, const float* A, int64_t lda, float* C,
                          int64_t ldc) {
  const DF df;
  VF acc[MR][NV];
  ZeroTiles(acc);
  const float* w_row = panel + n_lo;
  for (int64_t k = 0; k < K; ++k, w_row += kStripRows) {
    VF w[NV];
#pragma GCC unroll 16
    for (int j = 0; j < NV; ++j) w[j] = hn::LoadU(df, w_row + j * kLanes);
#pragma GCC unroll 16
    for (int m = 0; m < MR; ++m) {
      const VF a = hn::Set(df, A[m * lda + k]);
#pragma GCC unroll 16
      for (int j = 0; j < NV; ++j) acc[m][j] = hn::MulAdd(w[j], a, acc[m][j]);
    }
  }
  StoreTiles(acc, C, ldc, n_lo);
}

void StripMatmul(const uint8_t* tiles, const uint8_t* scales, int64_t kblocks, const float* A, int64_t lda, int64_t M,
                 float* C, int64_t ldc, float* panel) {
  if (M <= kGemvMaxRows) {
    for (int64_t m0 = 0; m0 < M; m0 += kGemvMR) {
      WithRows<kGemvMR>(std::min<int64_t>(kGemvMR, M - m0), [&](auto rows) {
        for (int n_lo = 0; n_lo < kStripRows; n_lo += kGemvNV * kLanes) {
          GemvPass<decltype(rows)::value, kGemvNV>(tiles, scales, kblocks, n_lo, A + m0 * lda, lda, C + m0 * ldc, ldc);
        }
      });
    }
    return;
  }
  DecodePanel(tiles, scales, kblocks, panel);
  const int64_t K = kblocks * 32;
  for (int64_t m0 = 0; m0 < M; m0 += kPanelMR) {
    WithRows<kPanelMR>(std::min<int64_t>(kPanelMR, M - m0), [&](auto rows) {
      for (int n_lo = 0; n_lo < kStripRows; n_lo += kPanelNV * kLanes) {
        PanelPass<decltype(rows)::value, kPanelNV>(panel, K, n_lo, A + m0 * lda, lda, C + m0 * ldc, ldc);
      }
    });
  }
}

const char* TargetName() { return hwy::TargetName(HWY_TARGET); }

}  // namespace HWY_NAMESPACE
}  // namespace mxmoe::cpu
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace mxmoe::cpu {

HWY_EXPORT(StripMatmul);
HWY_EXPORT(TargetName);

namespace {
bool bf16_pinned_off = false;
}  // namespace

void strip_matmul(const uint8_t* tiles, const uint8_t* scales, int64_t kblocks, const Activations& A, int64_t M,
                  float* C, int64_t ldc, float* panel) {
  if (A.bf16 && !bf16_pinned_off && bf16_dot_available()) {
    strip_matmul_bf16(tiles, scales, kblocks, A.bf16, A.stride, M, C, ldc);
  } else {
    HWY_DYNAMIC_DISPATCH(StripMatmul)(tiles, scales, kblocks, A.f32, A.stride, M, C, ldc, panel);
  }
}

const char* kernel_target() { return HWY_DYNAMIC_DISPATCH(TargetName)(); }

const char* kernel_isa_name(KernelIsa isa) {
  switch (isa) {
    case KernelIsa::best: return "best";
    case KernelIsa::avx512_bf16: return "avx512bf16";
    case KernelIsa::avx512: return "avx512";
    case KernelIsa::avx2: return "avx2";
    case KernelIsa::portable: return "portable";
  }
  return "?";
}

namespace {

int64_t highway_targets_of(KernelIsa isa) {
  switch (isa) {
    case KernelIsa::avx512_bf16:
    case KernelIsa::avx512: return HWY_AVX3;
    case KernelIsa::avx2: return HWY_AVX2;
    case KernelIsa::portable: return HWY_EMU128 | HWY_SCALAR;
    case KernelIsa::best: return 0;
  }
  return 0;
}

}  // namespace

std::vector<KernelIsa> runnable_kernel_isas() {
  // Read once, before any pinning changes what Highway reports as supported.
  static const std::vector<KernelIsa> isas = [] {
    std::vector<KernelIsa> list;
    if (bf16_dot_available()) list.push_back(KernelIsa::avx512_bf16);
    const int64_t targets = hwy::SupportedTargets() & HWY_TARGETS;
    for (KernelIsa isa : {KernelIsa::avx512, KernelIsa::avx2, KernelIsa::portable}) {
      if ((targets & highway_targets_of(isa)) != 0) list.push_back(isa);
    }
    return list;
  }();
  return isas;
}

bool pin_kernels_for_test(KernelIsa isa) {
  if (isa == KernelIsa::best) {
    hwy::SetSupportedTargetsForTest(0);
    bf16_pinned_off = false;
    (void)runnable_kernel_isas();
    return true;
  }
  const auto runnable = runnable_kernel_isas();
  if (std::find(runnable.begin(), runnable.end(), isa) == runnable.end()) return false;
  hwy::SetSupportedTargetsForTest(highway_targets_of(isa));
  bf16_pinned_off = isa != KernelIsa::avx512_bf16;
  return true;
}

}  // namespace mxmoe::cpu
#endif
