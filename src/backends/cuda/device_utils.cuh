// Small device helpers: tensor-core instructions, async copies, decoders.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "mxmoe/codecs.hpp"

namespace mxmoe::cuda {

__device__ __forceinline__ uint32_t smem_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared at a shared-memory address, the first `bytes` (16 or 0) read and the
// rest zero-filled.
__device__ __forceinline__ void cp_async_16(uint32_t smem, const void* global, uint32_t bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem), "l"(global), "r"(bytes));
}
// The same by pointer, zero-filled when `valid` is false.
__device__ __forceinline__ void cp_async_16(void* smem, const void* global, bool valid) {
  cp_async_16(smem_address(smem), global, valid ? 16u : 0u);
}

__device__ __forceinline__ void cp_async_8(void* smem, const void* global, bool valid) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(smem_address(smem)), "l"(global),
               "r"(valid ? 8 : 0));
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* smem) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_address(smem)));
}

__device__ __forceinline__ void mma_bf16_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void mma_tf32_1688(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// FP8 E4M3 tensor cores exist from sm_89 (Ada) on; the host never launches FP8 kernels on older GPUs.
__device__ __forceinline__ void mma_e4m3_16832(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#else
  __trap();
#endif
}

__device__ __forceinline__ uint32_t bf16x2_bits(__nv_bfloat162 v) { return *reinterpret_cast<uint32_t*>(&v); }
__device__ __forceinline__ __nv_bfloat162 bits_bf16x2(uint32_t v) { return *reinterpret_cast<__nv_bfloat162*>(&v); }
// The largest magnitude of four values (fmaxf: a NaN counts only if all four are NaN).
__device__ __forceinline__ float abs_max(float4 v) {
  return fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
}

// Two floats rounded to bf16 as codec::bf16_bits rounds them (to nearest, ties to even), lo in the
// low half, by one conversion instruction instead of about six integer ones each; a NaN becomes
// the canonical NaN (still a NaN; the codec keeps its sign).
__device__ __forceinline__ uint32_t bf16x2_rn(float lo, float hi) {
  uint32_t pair;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(pair) : "f"(hi), "f"(lo));
  return pair;
}
// Four floats rounded to bf16 (bf16x2_rn), packed in order for one 8-byte store.
__device__ __forceinline__ uint2 bf16x4_bits(float4 v) { return make_uint2(bf16x2_rn(v.x, v.y), bf16x2_rn(v.z, v.w)); }

// Two E2M1 codes (bits 0-3 and 16-19 of v) -> bf16x2 of their values times `scale2`.
// The codes' bits placed in a bf16's exponent and top mantissa bit read as value * 2^-126 (code 1,
// 0.5, lands on the subnormal 2^-127): multiplying by 2^126 gives the value exactly, and by the
// block scale (a power of two) keeps it exact.
__device__ __forceinline__ uint32_t e2m1_pair_bits(uint32_t v) {
  return ((v & 0x00070007u) << 6) | ((v & 0x00080008u) << 12);
}

__device__ __forceinline__ uint32_t decode_bf16x2(uint32_t v, __nv_bfloat162 scale2) {
  const __nv_bfloat162 two126 = bits_bf16x2(0x7E807E80u);
  return bf16x2_bits(__hmul2(__hmul2(bits_bf16x2(e2m1_pair_bits(v)), two126), scale2));
}

// E8M0 code -> bf16x2 of 2^126 * 2^(code - 127) = 2^(code - 1): the decode's offset and the block
// scale in one factor. Exact for codes 0..128; larger codes overflow bf16 and need the two-step
// decode_bf16x2.
__device__ __forceinline__ __nv_bfloat162 e8m0_times_2pow126_bf16x2(uint32_t code) {
  const uint32_t half = (code + 126u) << 7;
  return bits_bf16x2(half | (half << 16));
}

// Four E2M1 codes (bits 0-3 of each byte) -> four FP8 E4M3 bytes of their values times 2^-6 (code
// 1 lands on the E4M3 subnormal 2^-7); the caller folds 2^6 into the block scale.
__device__ __forceinline__ uint32_t decode_e4m3x4(uint32_t v) {
  return ((v & 0x07070707u) << 2) | ((v & 0x08080808u) << 4);
}

// E8M0 code -> 2^(code - 127) as float (codecs.hpp); 0 is the subnormal 2^-127.
__device__ __forceinline__ float e8m0_float(uint32_t code) { return codec::e8m0_value(code); }

// E8M0 code -> bf16x2 of 2^(code - 127) in both halves.
__device__ __forceinline__ __nv_bfloat162 e8m0_bf16x2(uint32_t code) {
  const uint32_t half = codec::e8m0_bf16_bits(code);
  return bits_bf16x2(half | (half << 16));
}

// The last index e < count with offsets[e] <= value: the expert owning a tile or a pair. Never an
// expert without any, whose offset equals the next one's.
__device__ __forceinline__ int owner_of(const int32_t* offsets, int count, int64_t value) {
  int lo = 0;
  for (int hi = count; lo + 1 < hi;) {
    const int mid = (lo + hi) / 2;
    if (offsets[mid] <= value) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

// gpt-oss SwiGLU in fp32, codec::swiglu's formula, for the GEMM epilogues of every CUDA path, with
// the hardware's approximate exp2 and reciprocal (a few ulp, far below the bf16 or FP8 rounding the
// value meets next) and clamps by NaN-propagating min and max: one instruction each where the IEEE
// exp, the division and the clamps' compare-and-select took about 30 per value, in epilogues that
// run while the tensor cores wait (docs/PERFORMANCE.md, twenty-third session).
__device__ __forceinline__ float swiglu(float gate, float linear, float alpha, float limit) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  float e, r;
  asm("min.NaN.f32 %0, %0, %1;" : "+f"(gate) : "f"(limit));
  asm("min.NaN.f32 %0, %0, %1;\n\tmax.NaN.f32 %0, %0, %2;" : "+f"(linear) : "f"(limit), "f"(-limit));
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(e) : "f"(gate * (-alpha * 1.44269504f)));  // exp(-alpha gate)
  asm("rcp.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(1.0f + e));
  return gate * r * (linear + 1.0f);
#else
  return codec::swiglu(gate, linear, alpha, limit);
#endif
}

// The FP8 tensor scale from a largest magnitude gathered as float bits by atomicMax (non-negative
// floats order like their bits): the quantization passes' and the small-batch kernels' amax.
__device__ __forceinline__ float fp8_scale_from_bits(uint32_t amax_bits) {
  return codec::fp8_dynamic_scale(__uint_as_float(amax_bits));
}

// The FP8 E4M3 codes of lo and hi (lo in the low byte), rounded and saturated as
// codec::fp8_e4m3_code does: on sm_89 and newer one conversion instruction for both, without the
// codec's check that keeps a NaN's sign (a NaN still becomes a NaN code).
__device__ __forceinline__ uint32_t fp8_e4m3_codes_x2(float lo, float hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  uint16_t codes;
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(codes) : "f"(hi), "f"(lo));
  return codes;
#else
  return codec::fp8_e4m3_code(lo) | static_cast<uint32_t>(codec::fp8_e4m3_code(hi)) << 8;
#endif
}

// The E4M3 values of lo and hi as fp32 (codec::fp8_e4m3_value of their codes): exact, so that a
// kernel can carry FP8 activations as plain floats. On sm_89 and newer a conversion each way for both.
__device__ __forceinline__ float2 fp8_e4m3_values_x2(float lo, float hi) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 890
  const uint16_t codes = static_cast<uint16_t>(fp8_e4m3_codes_x2(lo, hi));
  uint32_t halves;
  asm("cvt.rn.f16x2.e4m3x2 %0, %1;" : "=r"(halves) : "h"(codes));
  return __half22float2(*reinterpret_cast<const __half2*>(&halves));
#else
  return make_float2(codec::fp8_e4m3_value(codec::fp8_e4m3_code(lo)), codec::fp8_e4m3_value(codec::fp8_e4m3_code(hi)));
#endif
}

// Programmatic dependent launch (sm_90+): a kernel's blocks start while its predecessor finishes,
// and wait here until the predecessor's results are visible. No-ops without it.
__device__ __forceinline__ void wait_for_previous_grid() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
}

__device__ __forceinline__ void allow_dependent_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
}

// A 32-bit load of streamed data (read once): not kept in L1.
__device__ __forceinline__ uint32_t load_stream_u32(const uint32_t* p) {
  uint32_t v;
  asm("ld.global.nc.L1::no_allocate.b32 %0, [%1];\n" : "=r"(v) : "l"(p));
  return v;
}

}  // namespace mxmoe::cuda
