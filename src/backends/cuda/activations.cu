// Activation quantization per scheme, the weighted combine of expert outputs, and a decode check.
// Quantization uses the same scalar codecs as the CPU reference (mxmoe/codecs.hpp): the GEMMs see
// bit-identical inputs.
#include <cuda_bf16.h>

#include <type_traits>

#include "backends/cuda/cuda_check.hpp"
#include "backends/cuda/device_buffer.hpp"
#include "backends/cuda/device_utils.cuh"
#include "backends/cuda/kernels.hpp"
#include "backends/cuda/launch.cuh"
#include "backends/cuda/timeline.cuh"
#include "mxmoe/codecs.hpp"

namespace mxmoe::cuda {

namespace {

int blocks_for(int64_t n, int threads, int cap = 4096) {
  return static_cast<int>(std::min<int64_t>(cap, std::max<int64_t>(1, (n + threads - 1) / threads)));
}

__global__ void abs_max_kernel(const float* x, int64_t n, uint32_t* amax_bits) {
  float m = 0.0f;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    m = fmaxf(m, fabsf(x[i]));
  }
#pragma unroll
  for (int offset = 16; offset > 0; offset /= 2) m = fmaxf(m, __shfl_xor_sync(0xFFFFFFFFu, m, offset));
  // Non-negative floats order like their bits, so an integer max combines blocks exactly.
  if (threadIdx.x % 32 == 0) atomicMax(amax_bits, __float_as_uint(m));
}

// Four values per step (16-byte loads, 8-byte stores), the last n % 4 one at a time.
__global__ void quantize_bf16_kernel(const float* x, int64_t n, uint16_t* out, float* tensor_scale) {
  wait_for_previous_grid();  // launched to overlap the previous kernel's tail (launch.cuh)
  allow_dependent_launch();  // the GEMM's blocks start and wait (down's fill their weight rings)
  if (blockIdx.x == 0 && threadIdx.x == 0) *tensor_scale = 1.0f;
  const int64_t quads = n / 4, stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  for (int64_t i = first; i < quads; i += stride) {
    reinterpret_cast<uint2*>(out)[i] = bf16x4_bits(reinterpret_cast<const float4*>(x)[i]);
  }
  for (int64_t i = 4 * quads + first; i < n; i += stride) out[i] = codec::bf16_bits(x[i]);
}

// The FP8 E4M3 code of v under `scale`, or (kValuesAsBf16) the code's value as bf16, exact (an E4M3
// value fits bf16's exponent and mantissa), for GEMMs that run FP8 schemes on bf16 tensor cores; the
// scale goes after the MMA either way.
template <bool kValuesAsBf16>
__device__ __forceinline__ uint32_t fp8_unit(float v, const codec::Fp8Divisor& scale) {
  const uint8_t code = codec::fp8_e4m3_code(scale.quotient(v));
  if constexpr (kValuesAsBf16) return codec::bf16_bits(codec::fp8_e4m3_value(code));
  return code;
}

template <bool kValuesAsBf16>
__device__ __forceinline__ void store_fp8(void* out, int64_t i, float v, const codec::Fp8Divisor& scale) {
  if constexpr (kValuesAsBf16) {
    static_cast<uint16_t*>(out)[i] = static_cast<uint16_t>(fp8_unit<true>(v, scale));
  } else {
    static_cast<uint8_t*>(out)[i] = static_cast<uint8_t>(fp8_unit<false>(v, scale));
  }
}

// Activations as a pass reads them: fp32, or bf16 bits (exact in fp32).
__device__ __forceinline__ float activation_value(const float* x, int64_t i) { return x[i]; }
__device__ __forceinline__ float activation_value(const uint16_t* x, int64_t i) { return codec::bf16_value(x[i]); }
// The values of one 16-byte load: four fp32 or eight bf16.
__device__ __forceinline__ void activation_values(uint4 raw, float (&v)[4]) {
  v[0] = __uint_as_float(raw.x), v[1] = __uint_as_float(raw.y), v[2] = __uint_as_float(raw.z), v[3] = __uint_as_float(raw.w);
}
__device__ __forceinline__ void activation_values(uint4 raw, float (&v)[8]) {
  const uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
#pragma unroll
  for (int w = 0; w < 4; ++w) {
    v[2 * w] = __uint_as_float(words[w] << 16);
    v[2 * w + 1] = __uint_as_float(words[w] & 0xFFFF0000u);
  }
}

// x (fp32 or bf16) under the tensor's dynamic scale (fp8_unit), a 16-byte load of values per step
// (the stream's bytes in flight: with 8-byte loads of bf16 the pass ran at three quarters of fp32's
// bandwidth), the last n % kStep one at a time.
template <class In, bool kValuesAsBf16>
__global__ void quantize_fp8_kernel(const In* x, int64_t n, const uint32_t* amax_bits, void* out,
                                    float* tensor_scale) {
  constexpr int kStep = 16 / sizeof(In), kUnitBytes = kValuesAsBf16 ? 2 : 1, kWords = kStep * kUnitBytes / 4;
  using Units = std::conditional_t<kWords == 1, uint32_t, std::conditional_t<kWords == 2, uint2, uint4>>;
  wait_for_previous_grid();
  allow_dependent_launch();
  const float tensor = fp8_scale_from_bits(*amax_bits);
  if (blockIdx.x == 0 && threadIdx.x == 0) *tensor_scale = tensor;
  const codec::Fp8Divisor scale(tensor);
  const int64_t steps = n / kStep, stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  for (int64_t i = first; i < steps; i += stride) {
    float v[kStep];
    activation_values(reinterpret_cast<const uint4*>(x)[i], v);
    uint32_t words[kWords] = {};
#pragma unroll
    for (int u = 0; u < kStep; ++u) {
      words[u * kUnitBytes / 4] |= fp8_unit<kValuesAsBf16>(v[u], scale) << (8 * (u * kUnitBytes % 4));
    }
    reinterpret_cast<Units*>(out)[i] = *reinterpret_cast<const Units*>(words);
  }
  for (int64_t i = kStep * steps + first; i < n; i += stride) {
    store_fp8<kValuesAsBf16>(out, i, activation_value(x, i), scale);
  }
}

// Per-token FP8 (w4a8_token): each row under its own dynamic scale, its amax / 448 (written to
// row_scales), as quantize_fp8_kernel does for the whole tensor. One block per row at a time, in
// 16-byte loads (cols a multiple of 4), each thread's first kHeld quads kept in registers for the
// conversion: the rows are read once up to kHeld x 4 x blockDim values (one scalar load per value
// and a second read of the row made the per-token passes 2-2.5x the per-tensor ones).
template <bool kValuesAsBf16>
__global__ void quantize_fp8_rows_kernel(const float* x, int64_t rows, int cols, void* out, float* row_scales,
                                         float* tensor_scale) {
  constexpr int kHeld = 4;
  using Units = std::conditional_t<kValuesAsBf16, uint2, uint32_t>;  // a quad's codes
  __shared__ float warp_max[32];
  wait_for_previous_grid();
  allow_dependent_launch();
  if (blockIdx.x == 0 && threadIdx.x == 0) *tensor_scale = 1.0f;
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = blockDim.x / 32, quads = cols / 4;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float4* row = reinterpret_cast<const float4*>(x + r * cols);
    float4 held[kHeld];
    float m = 0.0f;
#pragma unroll
    for (int u = 0; u < kHeld; ++u) {
      const int q = threadIdx.x + u * blockDim.x;
      held[u] = q < quads ? row[q] : make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      m = fmaxf(m, abs_max(held[u]));
    }
    for (int q = threadIdx.x + kHeld * blockDim.x; q < quads; q += blockDim.x) m = fmaxf(m, abs_max(row[q]));
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) m = fmaxf(m, __shfl_xor_sync(0xFFFFFFFFu, m, offset));
    if (lane == 0) warp_max[warp] = m;
    __syncthreads();
    m = 0.0f;
    for (int w = 0; w < warps; ++w) m = fmaxf(m, warp_max[w]);
    const float row_scale = codec::fp8_dynamic_scale(m);
    if (threadIdx.x == 0) row_scales[r] = row_scale;
    const codec::Fp8Divisor scale(row_scale);
    Units* codes = reinterpret_cast<Units*>(static_cast<unsigned char*>(out) + r * cols * (kValuesAsBf16 ? 2 : 1));
    const auto convert = [&](int q, float4 v) {
      const uint32_t c0 = fp8_unit<kValuesAsBf16>(v.x, scale), c1 = fp8_unit<kValuesAsBf16>(v.y, scale),
                     c2 = fp8_unit<kValuesAsBf16>(v.z, scale), c3 = fp8_unit<kValuesAsBf16>(v.w, scale);
      if constexpr (kValuesAsBf16) {
        codes[q] = make_uint2(c0 | c1 << 16, c2 | c3 << 16);
      } else {
        codes[q] = c0 | c1 << 8 | c2 << 16 | c3 << 24;
      }
    };
#pragma unroll
    for (int u = 0; u < kHeld; ++u) {
      const int q = threadIdx.x + u * blockDim.x;
      if (q < quads) convert(q, held[u]);
    }
    for (int q = threadIdx.x + kHeld * blockDim.x; q < quads; q += blockDim.x) convert(q, row[q]);
    __syncthreads();  // warp_max is read by every thread before the next row writes it
  }
}

// One warp per 32-value block along rows: the OCP MX rule, then the dequantized values as bf16
// (exact: an E2M1 value times a power of two).
__global__ void quantize_mxfp4_kernel(const float* x, int64_t blocks, uint16_t* out, float* tensor_scale) {
  wait_for_previous_grid();
  allow_dependent_launch();
  if (blockIdx.x == 0 && threadIdx.x == 0) *tensor_scale = 1.0f;
  const int lane = threadIdx.x % 32;
  const int64_t warps = static_cast<int64_t>(gridDim.x) * (blockDim.x / 32);
  for (int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x / 32) + threadIdx.x / 32; b < blocks; b += warps) {
    const float v = x[b * 32 + lane];
    float amax = fabsf(v);
#pragma unroll
    for (int offset = 16; offset > 0; offset /= 2) amax = fmaxf(amax, __shfl_xor_sync(0xFFFFFFFFu, amax, offset));
    out[b * 32 + lane] = codec::bf16_bits(codec::mx_round_trip(v, codec::mx_shared_exponent(amax)));
  }
}

// One token per blockIdx.y; V consecutive columns per thread (V = 4 when the rows allow 16-byte
// accesses). The k pairs are added in slot order.
template <int V>
__global__ void combine_kernel(const float* pair_out, const int32_t* position, const float* weights, int hidden,
                               int top_k, float* out) {
  using Vec = std::conditional_t<V == 4, float4, float>;
  if (threadIdx.x == 0) MXMOE_STAMP(combine, 0);  // events: 0 start, 1 waited, 2 end
  wait_for_previous_grid();  // the down GEMM's rows
  if (threadIdx.x == 0) MXMOE_STAMP(combine, 1);
  const int t = blockIdx.y;
  const int h = (blockIdx.x * blockDim.x + threadIdx.x) * V;
  if (h >= hidden) return;
  float sum[V] = {};
  for (int j = 0; j < top_k; ++j) {
    const int64_t q = position[static_cast<int64_t>(t) * top_k + j];
    const float w = weights[static_cast<int64_t>(t) * top_k + j];
    const Vec v = *reinterpret_cast<const Vec*>(pair_out + q * hidden + h);
    const float* values = reinterpret_cast<const float*>(&v);
#pragma unroll
    for (int i = 0; i < V; ++i) sum[i] += w * values[i];
  }
  float* row = out + static_cast<int64_t>(t) * hidden + h;
  if constexpr (V == 4) {
    *reinterpret_cast<float4*>(row) = make_float4(sum[0], sum[1], sum[2], sum[3]);
  } else {
    row[0] = sum[0];
  }
  if (threadIdx.x == 0) MXMOE_STAMP(combine, 2);
}

__global__ void rows_to_float_kernel(const void* src, bool bf16, int64_t rows, int cols, float* dst, int padded_cols) {
  const int64_t n = rows * padded_cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t r = i / padded_cols;
    const int c = static_cast<int>(i % padded_cols);
    float v = 0.0f;
    if (c < cols) {
      const int64_t at = r * cols + c;
      v = bf16 ? codec::bf16_value(static_cast<const uint16_t*>(src)[at]) : static_cast<const float*>(src)[at];
    }
    dst[i] = v;
  }
}

__global__ void rows_from_float_kernel(const float* src, int padded_cols, int64_t rows, int cols, void* dst, bool bf16) {
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) {
    const float v = src[(i / cols) * padded_cols + i % cols];
    if (bf16) {
      static_cast<uint16_t*>(dst)[i] = codec::bf16_bits(v);
    } else {
      static_cast<float*>(dst)[i] = v;
    }
  }
}

// Every code pair through both bf16 decoders (two-step and folded) at each of `count` scale codes.
__global__ void decode_scaled_codes_kernel(const uint8_t* scales, float* out) {
  const uint32_t byte = threadIdx.x, lo = byte & 0xF, hi = byte >> 4;
  const uint32_t scale = scales[blockIdx.x];
  float* o = out + blockIdx.x * 1024;
  const uint32_t two_step = decode_bf16x2(lo | (hi << 16), e8m0_bf16x2(scale));
  const uint32_t folded = bf16x2_bits(__hmul2(bits_bf16x2(e2m1_pair_bits(lo | (hi << 16))), e8m0_times_2pow126_bf16x2(scale)));
  o[2 * byte] = __uint_as_float(two_step << 16);
  o[2 * byte + 1] = __uint_as_float(two_step & 0xFFFF0000u);
  o[512 + 2 * byte] = __uint_as_float(folded << 16);
  o[512 + 2 * byte + 1] = __uint_as_float(folded & 0xFFFF0000u);
}

__global__ void decode_codes_kernel(float* out) {
  const uint32_t byte = threadIdx.x;  // 256 threads: every pair of codes
  const uint32_t lo = byte & 0xF, hi = byte >> 4;
  const uint32_t bf = decode_bf16x2(lo | (hi << 16), e8m0_bf16x2(127));
  out[2 * byte] = __bfloat162float(__ushort_as_bfloat16(static_cast<unsigned short>(bf & 0xFFFF)));
  out[2 * byte + 1] = __bfloat162float(__ushort_as_bfloat16(static_cast<unsigned short>(bf >> 16)));
  const uint32_t f8 = decode_e4m3x4(lo | (hi << 8));
  out[512 + 2 * byte] = codec::fp8_e4m3_value(static_cast<uint8_t>(f8 & 0xFF)) * 64.0f;
  out[512 + 2 * byte + 1] = codec::fp8_e4m3_value(static_cast<uint8_t>((f8 >> 8) & 0xFF)) * 64.0f;
}

__global__ void fp8_codes_kernel(const float* in, int n, uint8_t* codes, float* values, float* rounded) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    codes[i] = codec::fp8_e4m3_code(in[i]);
    values[i] = codec::fp8_e4m3_value(static_cast<uint8_t>(i & 0xFF));
  }
  for (int i = 2 * (blockIdx.x * blockDim.x + threadIdx.x); i < n; i += 2 * gridDim.x * blockDim.x) {
    const float2 v = fp8_e4m3_values_x2(in[i], i + 1 < n ? in[i + 1] : 0.0f);
    rounded[i] = v.x;
    if (i + 1 < n) rounded[i + 1] = v.y;
  }
}

template <class In>
void launch_quantize_fp8(const In* x, int64_t n, const uint32_t* amax_bits, void* out, float* tensor_scale,
                         bool fp8_as_bf16, bool overlap, cudaStream_t stream) {
  launch_after_previous(fp8_as_bf16 ? quantize_fp8_kernel<In, true> : quantize_fp8_kernel<In, false>,
                        dim3(blocks_for(n, 256)), dim3(256), 0, overlap, stream, x, n, amax_bits, out, tensor_scale);
  MXMOE_CUDA_CHECK_LAUNCH("quantize_fp8_kernel");
}

}  // namespace

void launch_abs_max(const float* x, int64_t n, uint32_t* amax_bits, cudaStream_t stream) {
  if (n == 0) return;
  abs_max_kernel<<<blocks_for(n, 256, 1024), 256, 0, stream>>>(x, n, amax_bits);
  MXMOE_CUDA_CHECK_LAUNCH("abs_max_kernel");
}

void launch_quantize(Scheme scheme, const float* x, int64_t rows, int64_t cols, const uint32_t* amax_bits, void* out,
                     float* tensor_scale, bool fp8_as_bf16, bool overlap, cudaStream_t stream) {
  const int64_t n = rows * cols;
  switch (scheme) {
    case Scheme::w4a16:
      launch_after_previous(quantize_bf16_kernel, dim3(blocks_for(n, 256)), dim3(256), 0, overlap, stream, x, n,
                            static_cast<uint16_t*>(out), tensor_scale);
      MXMOE_CUDA_CHECK_LAUNCH("quantize_bf16_kernel");
      return;
    case Scheme::w4a8: return launch_quantize_fp8(x, n, amax_bits, out, tensor_scale, fp8_as_bf16, overlap, stream);
    case Scheme::w4a4:
      if (cols % 32) throw CudaError("w4a4 quantization needs a multiple of 32 columns");
      launch_after_previous(quantize_mxfp4_kernel, dim3(blocks_for(n, 256)), dim3(256), 0, overlap, stream, x, n / 32,
                            static_cast<uint16_t*>(out), tensor_scale);
      MXMOE_CUDA_CHECK_LAUNCH("quantize_mxfp4_kernel");
      return;
    case Scheme::w4a32:
    case Scheme::w4a8_token:  // a scale per row: launch_quantize_rows
      break;
  }
  throw CudaError("the CUDA backend does not run scheme " + std::string(scheme_name(scheme)));
}

void launch_quantize_rows(const float* x, int64_t rows, int64_t cols, void* out, float* row_scales, float* tensor_scale,
                          bool fp8_as_bf16, bool overlap, cudaStream_t stream) {
  if (rows == 0) return;
  if (cols % 4 != 0) throw CudaError("per-token FP8 quantization needs a multiple of 4 columns");
  launch_after_previous(fp8_as_bf16 ? quantize_fp8_rows_kernel<true> : quantize_fp8_rows_kernel<false>,
                        dim3(blocks_for(rows, 1, 8192)), dim3(256), 0, overlap, stream, x, rows, static_cast<int>(cols),
                        out, row_scales, tensor_scale);
  MXMOE_CUDA_CHECK_LAUNCH("quantize_fp8_rows_kernel");
}

void launch_quantize(Scheme scheme, const uint16_t* x_bf16, int64_t rows, int64_t cols, const uint32_t* amax_bits,
                     void* out, float* tensor_scale, bool fp8_as_bf16, bool overlap, cudaStream_t stream) {
  if (scheme != Scheme::w4a8) {
    throw CudaError("bf16 activations are quantized for w4a8 only, not " + std::string(scheme_name(scheme)));
  }
  launch_quantize_fp8(x_bf16, rows * cols, amax_bits, out, tensor_scale, fp8_as_bf16, overlap, stream);
}

void launch_combine(const float* pair_out, const int32_t* position, const float* weights, int tokens, int hidden,
                    int top_k, float* out, bool overlap, cudaStream_t stream) {
  if (tokens == 0) return;
  if (hidden % 4 == 0) {
    const dim3 grid((hidden / 4 + 255) / 256, tokens);
    launch_after_previous(combine_kernel<4>, grid, dim3(256), 0, overlap, stream, pair_out, position, weights, hidden,
                          top_k, out);
  } else {
    const dim3 grid((hidden + 255) / 256, tokens);
    launch_after_previous(combine_kernel<1>, grid, dim3(256), 0, overlap, stream, pair_out, position, weights, hidden,
                          top_k, out);
  }
  MXMOE_CUDA_CHECK_LAUNCH("combine_kernel");
}

void launch_rows_to_float(const void* src, bool bf16, int64_t rows, int cols, float* dst, int padded_cols,
                          cudaStream_t stream) {
  if (rows == 0) return;
  rows_to_float_kernel<<<blocks_for(rows * padded_cols, 256), 256, 0, stream>>>(src, bf16, rows, cols, dst, padded_cols);
  MXMOE_CUDA_CHECK_LAUNCH("rows_to_float_kernel");
}

void launch_rows_from_float(const float* src, int padded_cols, int64_t rows, int cols, void* dst, bool bf16,
                            cudaStream_t stream) {
  if (rows == 0) return;
  rows_from_float_kernel<<<blocks_for(rows * cols, 256), 256, 0, stream>>>(src, padded_cols, rows, cols, dst, bf16);
  MXMOE_CUDA_CHECK_LAUNCH("rows_from_float_kernel");
}

// The test hooks' device buffers are DeviceBuffers, freed however the hook leaves.
void decode_all_codes_for_test(float* host_out) {
  DeviceBuffer out(1024 * sizeof(float));
  decode_codes_kernel<<<1, 256>>>(out.as<float>());
  MXMOE_CUDA_CHECK_LAUNCH("decode_codes_kernel");
  MXMOE_CUDA_CHECK(cudaMemcpy(host_out, out.as<void>(), out.bytes(), cudaMemcpyDeviceToHost));
}

void decode_scaled_codes_for_test(const uint8_t* host_scales, int count, float* host_out) {
  DeviceBuffer scales(count), out(count * 1024 * sizeof(float));
  MXMOE_CUDA_CHECK(cudaMemcpy(scales.as<void>(), host_scales, count, cudaMemcpyHostToDevice));
  decode_scaled_codes_kernel<<<count, 256>>>(scales.as<uint8_t>(), out.as<float>());
  MXMOE_CUDA_CHECK_LAUNCH("decode_scaled_codes_kernel");
  MXMOE_CUDA_CHECK(cudaMemcpy(host_out, out.as<void>(), out.bytes(), cudaMemcpyDeviceToHost));
}

void fp8_codes_for_test(const float* host_in, int n, uint8_t* host_codes, float* host_values, float* host_rounded) {
  DeviceBuffer in(n * sizeof(float)), values(n * sizeof(float)), codes(n), rounded(n * sizeof(float));
  MXMOE_CUDA_CHECK(cudaMemcpy(in.as<void>(), host_in, in.bytes(), cudaMemcpyHostToDevice));
  fp8_codes_kernel<<<blocks_for(n, 256, 4096), 256>>>(in.as<float>(), n, codes.as<uint8_t>(), values.as<float>(),
                                                     rounded.as<float>());
  MXMOE_CUDA_CHECK_LAUNCH("fp8_codes_kernel");
  MXMOE_CUDA_CHECK(cudaMemcpy(host_codes, codes.as<void>(), n, cudaMemcpyDeviceToHost));
  MXMOE_CUDA_CHECK(cudaMemcpy(host_values, values.as<void>(), values.bytes(), cudaMemcpyDeviceToHost));
  MXMOE_CUDA_CHECK(cudaMemcpy(host_rounded, rounded.as<void>(), rounded.bytes(), cudaMemcpyDeviceToHost));
}

}  // namespace mxmoe::cuda
