// Scalar conversions shared by host code and CUDA kernels, so every backend rounds exactly as the
// reference does. The checked, documented API is format.hpp; these are its building blocks and
// take finite inputs unless noted.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define MXMOE_HD __host__ __device__ __forceinline__
#else
#define MXMOE_HD inline
#endif

namespace mxmoe::codec {

MXMOE_HD uint32_t float_bits(float v) {
  uint32_t b;
  std::memcpy(&b, &v, sizeof b);
  return b;
}

MXMOE_HD float bits_float(uint32_t b) {
  float v;
  std::memcpy(&v, &b, sizeof v);
  return v;
}

// floor(log2|v|) for finite non-zero v, subnormals included.
MXMOE_HD int floor_log2(float v) {
  const uint32_t b = float_bits(v) & 0x7FFFFFFFu;
  const int exponent = static_cast<int>(b >> 23);
  if (exponent != 0) return exponent - 127;
  int top = 22;  // subnormal: position of the highest mantissa bit
  while (top > 0 && !((b >> top) & 1u)) --top;
  return top - 149;
}

// 2^e as a float for e in [-126, 127].
MXMOE_HD float pow2(int e) { return bits_float(static_cast<uint32_t>(e + 127) << 23); }

// Round-to-nearest-even onto the E2M1 grid with saturation at 6; the sign is kept (also for -0).
MXMOE_HD uint8_t e2m1_code(float v) {
  const float a = bits_float(float_bits(v) & 0x7FFFFFFFu);
  // Each comparison passes one midpoint; a tie goes to the even code (mantissa bit 0).
  const int magnitude = (a > 0.25f) + (a >= 0.75f) + (a > 1.25f) + (a >= 1.75f) + (a > 2.5f) + (a >= 3.5f) + (a > 5.0f);
  return static_cast<uint8_t>(magnitude | ((float_bits(v) >> 28) & 0x8u));
}

MXMOE_HD float e2m1_value(uint8_t code) {
  const int m = code & 7;
  const float magnitude = m < 2 ? 0.5f * m : static_cast<float>((2 + (m & 1)) << ((m >> 1) - 1)) * 0.5f;
  return (code & 8) ? -magnitude : magnitude;
}

// E8M0 scale code -> 2^(code - 127) as float bits: the code is the float's exponent field, except
// code 0, the subnormal 2^-127. Exact for codes 0..254 (code 255, NaN, is the caller's concern).
inline constexpr uint32_t kE8m0ZeroFloatBits = 0x00400000u;
MXMOE_HD uint32_t e8m0_float_bits(uint32_t code) { return code == 0 ? kE8m0ZeroFloatBits : code << 23; }
MXMOE_HD float e8m0_value(uint32_t code) { return bits_float(e8m0_float_bits(code)); }
// The same as bf16 bits (bf16 has float's exponent field): exact for codes 0..254.
MXMOE_HD uint16_t e8m0_bf16_bits(uint32_t code) { return static_cast<uint16_t>(e8m0_float_bits(code) >> 16); }

// The OCP MX shared exponent of a block with largest magnitude `amax` (clamped at -127); an
// all-zero block gets 0 (scale 1).
MXMOE_HD int mx_shared_exponent(float amax) {
  if (!(amax > 0.0f)) return 0;
  const int e = floor_log2(amax) - 2;
  return e < -127 ? -127 : e;
}

// 2^shared as a float: exact for every shared exponent in [-127, 125] (its E8M0 code is shared + 127).
MXMOE_HD float mx_scale_value(int shared) { return e8m0_value(static_cast<uint32_t>(shared + 127)); }

// A value of a block with shared exponent `shared` through MXFP4 and back: its E2M1 code times the
// block's scale (exact in bf16 and float). The device kernels that quantize activations to W4A4 use it.
MXMOE_HD float mx_round_trip(float v, int shared) {
  return e2m1_value(e2m1_code(v * pow2(-shared))) * mx_scale_value(shared);
}

// RNE to bf16.
MXMOE_HD uint16_t bf16_bits(float v) {
  const uint32_t b = float_bits(v);
  if ((b & 0x7FFFFFFFu) > 0x7F800000u) return static_cast<uint16_t>((b >> 16) | 0x0040u);
  return static_cast<uint16_t>((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16);
}

MXMOE_HD float bf16_value(uint16_t bits) { return bits_float(static_cast<uint32_t>(bits) << 16); }

// IEEE half (F16, as safetensors stores it) -> float, exactly: subnormals, infinities and NaN too.
MXMOE_HD float f16_value(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1Fu, mantissa = h & 0x3FFu;
  if (exponent == 0) return bits_float(float_bits(static_cast<float>(mantissa) * 0x1p-24f) | sign);  // exact
  if (exponent == 31) return bits_float(sign | 0x7F800000u | (mantissa << 13));
  return bits_float(sign | ((exponent + 112) << 23) | (mantissa << 13));
}

// The dynamic FP8 scale of a tensor whose largest magnitude is `amax`: amax / 448 (E4M3's largest
// value, by IEEE float division on host and device alike), or 1 for an all-zero tensor.
MXMOE_HD float fp8_dynamic_scale(float amax) { return amax > 0.0f ? amax / 448.0f : 1.0f; }

// Many values divided by one FP8 scale (finite, positive) without a division each, for |a| up to
// 448 x scale (the values whose largest set it): quotient(a) is a / scale as IEEE division rounds
// it wherever that is 2^-11 or more in magnitude, and below that it rounds, as a / scale does, to
// a's signed zero E4M3 code (fp8_e4m3_code). Markstein's correction: with y = 1 / b correctly
// rounded and q = a y, the residual q b - a is exact by one FMA while it does not underflow, and
// q - (q b - a) y is the correctly rounded a / b. For quotients of 2^-11 and more the residual is
// exact when b >= 2^-90, so a smaller scale is taken 2^64 times larger, and a with it (exact). Four
// multiply-adds per value where an IEEE division is about ten instructions and a branch to its slow
// path, in the GPU stagings and passes that quantize activations (tests/format: against a / scale
// over scales from the smallest subnormal up; docs/PERFORMANCE.md, thirty-sixth session).
struct Fp8Divisor {
  float factor, scale, reciprocal;
  MXMOE_HD explicit Fp8Divisor(float s)
      : factor(s < 0x1p-90f ? 0x1p64f : 1.0f), scale(s * factor), reciprocal(1.0f / scale) {}
  MXMOE_HD float quotient(float a) const {
    a *= factor;
    const float q = a * reciprocal;
    const float residual = fmaf(q, scale, -a);  // q b - a, not a - q b: a zero a keeps its sign below
    return fmaf(-residual, reciprocal, q);
  }
};

// RNE to FP8 E4M3 with saturation at +-448 (and for +-Inf); NaN -> the NaN code.
MXMOE_HD uint8_t fp8_e4m3_code(float v) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  // One conversion instruction rounds and saturates as the code below does (CudaFp8 tests: every
  // binade, the rounding ties, the saturation, on the device and against CUDA's host emulation);
  // only a NaN's sign would differ, kept here.
  if (v != v) return static_cast<uint8_t>(((float_bits(v) >> 24) & 0x80u) | 0x7Fu);
  uint16_t pair;
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(pair) : "f"(0.0f), "f"(v));
  return static_cast<uint8_t>(pair & 0xFFu);
#else
  const uint32_t b = float_bits(v);
  const uint8_t sign = static_cast<uint8_t>((b >> 24) & 0x80u);
  const uint32_t mag = b & 0x7FFFFFFFu;
  if (mag > 0x7F800000u) return sign | 0x7F;
  if (mag >= 0x43E00000u) return sign | 0x7E;  // >= 448
  if (mag < 0x3C800000u) {                    // below 2^-6: multiples of 2^-9
    // q = mag / 2^-9 rounded to nearest-even: the float's bits give it exactly.
    const float scaled = bits_float(mag) * 512.0f;  // exact: a power-of-two scaling
    const uint32_t whole = static_cast<uint32_t>(scaled);
    const float rest = scaled - static_cast<float>(whole);
    const uint32_t q = whole + ((rest > 0.5f || (rest == 0.5f && (whole & 1u))) ? 1u : 0u);
    return static_cast<uint8_t>(sign | q);
  }
  const uint32_t exponent = (mag >> 23) - 127 + 7;
  const uint32_t mantissa = mag & 0x7FFFFFu;
  uint32_t code = (exponent << 3) | (mantissa >> 20);
  const uint32_t rest = mantissa & 0xFFFFFu;
  if (rest > 0x80000u || (rest == 0x80000u && (code & 1u))) ++code;
  if (code > 0x7Eu) code = 0x7Eu;
  return static_cast<uint8_t>(sign | code);
#endif
}

MXMOE_HD float fp8_e4m3_value(uint8_t code) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  if ((code & 0x7Fu) == 0x7Fu) return bits_float((code & 0x80u) ? 0xFFC00000u : 0x7FC00000u);
  uint32_t halves;  // E4M3 -> F16 is exact, F16 -> F32 too
  asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(halves) : "h"(static_cast<uint16_t>(code)));
  float value;
  asm("cvt.f32.f16 %0, %1;" : "=f"(value) : "h"(static_cast<uint16_t>(halves & 0xFFFFu)));
  return value;
#else
  const int exponent = (code >> 3) & 0xF;
  const int mantissa = code & 0x7;
  float magnitude = exponent == 0 ? static_cast<float>(mantissa) * (1.0f / 512.0f)
                                  : (1.0f + static_cast<float>(mantissa) * 0.125f) * pow2(exponent - 7);
  if (exponent == 0xF && mantissa == 0x7) magnitude = bits_float(0x7FC00000u);
  return (code & 0x80) ? -magnitude : magnitude;
#endif
}

// The W4A8 scale fold: an MXFP4 weight e2m1 x 2^(s - 127) enters the FP8 MMA as the E4M3 value
// e2m1 x 2^(s - r), with r a reference code per weight row whose factor 2^(r - 127) scales the row's
// sums in fp32 after the MMA (src/format/fp8_fold.hpp). With shift d = s - r the folded value is
// exact (every E2M1 value x 2^d is an E4M3 value) for d in [kFoldMinExactShift, kFoldMaxShift]:
// at 6, 6 x 2^6 = 384 is below E4M3's 448; at -8, 0.5 x 2^-8 = 2^-9 is its smallest subnormal and
// every other E2M1 value lands on the 2^-9 grid or above. Below -8 values round (to nearest even on
// that grid, the smallest to zero).
inline constexpr int kFoldMaxShift = 6;
inline constexpr int kFoldMinExactShift = -8;

// E4M3 code of e2m1_value(code) x 2^shift, rounded as fp8_e4m3_code rounds; shift in [-126, 6].
MXMOE_HD uint8_t fp8_fold_code(uint8_t e2m1_code, int shift) {
  return fp8_e4m3_code(e2m1_value(e2m1_code) * pow2(shift));
}

// gpt-oss SwiGLU: the gate clamped above at `limit` and the linear part to [-limit, limit], then
// gate * sigmoid(alpha * gate) * (linear + 1). One formula for the float64 reference and the CPU
// and CUDA kernels (float; the GEMM epilogues on the GPU compute it with the hardware's approximate
// exp2 and reciprocal: cuda::swiglu in device_utils.cuh); NaN propagates (a clamp must not turn it
// into a finite value).
template <class T>
MXMOE_HD T swiglu(T gate, T linear, T alpha, T limit) {
  gate = gate > limit ? limit : gate;
  linear = linear > limit ? limit : (linear < -limit ? -limit : linear);
#if defined(__CUDA_ARCH__)
  const T e = exp(-alpha * gate);
#else
  const T e = std::exp(-alpha * gate);
#endif
  return gate / (T(1) + e) * (linear + T(1));
}

}  // namespace mxmoe::codec
