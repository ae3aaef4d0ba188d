// The CUDA backend against the float64 reference. GPU tests skip (saying so) on machines without a
// GPU; scripts/gpu-check runs them on one.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <set>

#include "backends/backend_check.hpp"
#include "mxmoe/format.hpp"
#include "mxmoe/oracle.hpp"

#ifdef MXMOE_WITH_CUDA
#include <cstring>
#include <limits>

#include <cuda_fp8.h>

#include "backends/cuda/cuda_moe.hpp"
#include "backends/cuda/decode.hpp"
#include "backends/cuda/device_buffer.hpp"
#include "backends/cuda/kernels.hpp"
#endif

namespace mxmoe {
namespace {

bool have_gpu() { return !detect_cuda_devices().empty(); }

#define REQUIRE_GPU() \
  if (!have_gpu()) GTEST_SKIP() << "no CUDA GPU on this machine (scripts/gpu-check runs these on one)"

TEST(CudaBackend, IsRefusedClearlyWhereItCannotRun) {
  const MoeLayer& layer = test::shared_layer({128, 96, 8, 2});
  try {
    MoeRunner runner(layer, Scheme::w4a16, DeviceSpec::detect_cpu(), {.backend = "cuda"});
    FAIL() << "cuda accepted on a CPU device";
  } catch (const OracleError& e) {
    EXPECT_NE(std::string(e.what()).find("backend 'cuda' (forced by --backend) cannot run on cpu"), std::string::npos)
        << e.what();
  }
  // A GPU no GPU backend serves is refused, naming each backend's reason and the way to ask for
  // the float64 emulation; never served by it silently.
  const Problem p{Scheme::w4a8, 32, 4, 2880, 2880, 0, true};
  try {
    select_backend(DeviceSpec::parse("sm_80"), p);
    FAIL() << "w4a8 on sm_80 was given a backend";
  } catch (const OracleError& e) {
    EXPECT_NE(e.decision().verdict("cuda")->reason.find("needs sm_89"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("--backend reference"), std::string::npos) << e.what();
    EXPECT_EQ(e.decision().verdict("reference")->status, VerdictStatus::rejected);
  }
  EXPECT_EQ(select_backend(DeviceSpec::parse("sm_80"), p, ForcedBackend{"reference", "test"}).chosen, "reference");
  EXPECT_THROW(select_backend(DeviceSpec::parse("sm_75"), {Scheme::w4a16, 32, 4, 2880, 2880, 0, true}), OracleError);
}

const BackendDeclaration& declaration(const std::string& name) {
  const auto& registry = backend_registry();
  const auto it = std::find_if(registry.begin(), registry.end(), [&](const auto& b) { return b.name == name; });
  if (it == registry.end()) throw std::logic_error("no backend " + name);
  return *it;
}

// Every GPU from sm_80 gets a CUDA backend; Hopper gets the sm_90a one for every scheme it runs
// (w4a16, w4a8, w4a4), every other GPU the generic one (the vLLM failure: arch-specific code chosen where it
// cannot run).
TEST(CudaBackend, IsPlannedForEveryGpuFromSm80) {
  const bool built = declaration("cuda").built;
  ASSERT_EQ(declaration("cuda_sm90").built, built);
  for (const char* device : {"sm_80", "sm_86", "sm_89", "sm_90", "sm_90a", "sm_100", "sm_120"}) {
    const bool hopper = DeviceSpec::parse(device).sm == 90;
    for (Scheme scheme : {Scheme::w4a16, Scheme::w4a8, Scheme::w4a4}) {
      const bool fp8_too_old = scheme == Scheme::w4a8 && (std::string(device) == "sm_80" || std::string(device) == "sm_86");
      if (!built || fp8_too_old) {
        EXPECT_THROW(select_backend(DeviceSpec::parse(device), {scheme, 32, 4, 2880, 2880, 0, true}), OracleError)
            << device << " " << scheme_name(scheme) << ": no GPU backend, and never the host emulation unasked";
        continue;
      }
      const Decision d = select_backend(DeviceSpec::parse(device), {scheme, 32, 4, 2880, 2880, 0, true});
      EXPECT_EQ(d.chosen, hopper ? "cuda_sm90" : "cuda") << device << " " << scheme_name(scheme);
      EXPECT_TRUE(d.padding.is_identity()) << "2880 runs unpadded";
      if (!hopper) {
        EXPECT_NE(d.verdict("cuda_sm90")->reason.find("architecture-specific code for sm_90a only"), std::string::npos)
            << device << ": " << d.verdict("cuda_sm90")->reason;
      }
    }
  }
}

// The Hopper kernels step K by 64: a shape they cannot take unpadded is padded for them by the
// oracle (and the plan reaches the packer: test_conformance.cpp runs such shapes).
TEST(CudaBackend, Sm90ShapesArePaddedToItsAlignment) {
  if (!declaration("cuda_sm90").built) GTEST_SKIP() << "mxmoe was built without CUDA";
  const Decision d = select_backend(DeviceSpec::parse("sm_90a"), {Scheme::w4a16, 8, 2, 96, 160, 0, true});
  EXPECT_EQ(d.chosen, "cuda_sm90");
  EXPECT_EQ(d.padding.padded_hidden, 128);
  EXPECT_EQ(d.padding.padded_intermediate, 192);
}

// The token count is a real input: the oracle names the kernel path a batch of that size takes.
TEST(CudaBackend, ExplainNamesTheKernelPathByTokenCount) {
  if (!declaration("cuda").built) GTEST_SKIP() << "mxmoe was built without CUDA";
  auto kernels = [](int tokens) {
    return select_backend(DeviceSpec::parse("sm_89"), {Scheme::w4a16, 128, 4, 2880, 2880, tokens, true}).kernels;
  };
  EXPECT_NE(kernels(1).find("small-batch kernels"), std::string::npos) << kernels(1);
  EXPECT_NE(kernels(32).find("small-batch kernels"), std::string::npos) << kernels(32);
  EXPECT_NE(kernels(33).find("batched kernels"), std::string::npos) << kernels(33);
  EXPECT_NE(kernels(8192).find("batched kernels"), std::string::npos) << kernels(8192);
  EXPECT_NE(kernels(0).find("up to 32 tokens"), std::string::npos) << kernels(0);
  const Decision d = select_backend(DeviceSpec::parse("sm_89"), {Scheme::w4a16, 128, 4, 2880, 2880, 4, true});
  EXPECT_NE(d.to_table().find("kernels: small-batch"), std::string::npos) << d.to_table();
  EXPECT_NE(d.to_json().find("\"kernels\": \"small-batch"), std::string::npos) << d.to_json();
}

// The Hopper backend names its own small-batch path up to its measured crossover (16 tokens).
TEST(CudaBackend, ExplainNamesTheSm90KernelPathByTokenCount) {
  if (!declaration("cuda_sm90").built) GTEST_SKIP() << "mxmoe was built without CUDA";
  auto decide = [](int tokens) {
    return select_backend(DeviceSpec::parse("sm_90a"), {Scheme::w4a16, 128, 4, 2880, 2880, tokens, true});
  };
  EXPECT_EQ(decide(1).chosen, "cuda_sm90");
  EXPECT_NE(decide(1).kernels.find("small-batch kernels"), std::string::npos) << decide(1).kernels;
  EXPECT_NE(decide(16).kernels.find("small-batch kernels"), std::string::npos) << decide(16).kernels;
  EXPECT_NE(decide(17).kernels.find("wgmma"), std::string::npos) << decide(17).kernels;
  EXPECT_NE(decide(0).kernels.find("up to 16 tokens"), std::string::npos) << decide(0).kernels;
}

// W4A8's batched GEMMs run on FP8 tensor cores at tiles of 64 to 256 pairs (tile_widths.hpp), and
// exactly there the declaration states their accumulation's error, the oracle names FP8 wgmma, and
// the tests' bound widens (from 1.5e-3 to 3e-2); the small-batch path and narrower tiles keep fp32's.
TEST(CudaBackend, Sm90StatesTheFp8AccumulationWhereItRuns) {
  const BackendDeclaration& hopper = declaration("cuda_sm90");
  ASSERT_TRUE(hopper.accumulation_error);
  struct Case {
    Scheme scheme;
    int experts, tokens;
    bool fp8_cores;
  };
  const Case cases[] = {
      {Scheme::w4a8, 128, 8, false},         // small batch
      {Scheme::w4a8, 128, 128, false},       // 4 pairs per expert: tiles of 16
      {Scheme::w4a8, 128, 1024, true},       // 32: tiles of 64
      {Scheme::w4a8, 32, 256, true},         // 32: tiles of 64
      {Scheme::w4a8, 32, 1024, true},        // tiles of 128
      {Scheme::w4a8, 32, 8192, true},        // tiles of 256
      {Scheme::w4a8, 32, 0, true},           // a size it does not know: the larger error
      {Scheme::w4a8_token, 32, 8, false},    // small batch
      {Scheme::w4a8_token, 32, 1024, true},  //
      {Scheme::w4a16, 32, 8192, false},      // bf16 activations
      {Scheme::w4a4, 32, 8192, false},       // MXFP4 activations on bf16 cores
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(scheme_name(c.scheme)) + " E=" + std::to_string(c.experts) + " T=" + std::to_string(c.tokens));
    const Problem problem{c.scheme, c.experts, 4, 2880, 2880, c.tokens, true};
    const MoeShape shape{2880, 2880, c.experts, 4};
    EXPECT_EQ(hopper.accumulation_error(problem), c.fp8_cores ? 4e-4 : 0.0);
    const bool named = hopper.kernel_path(problem).find("FP8 wgmma") != std::string::npos;
    if (c.tokens > 16 || c.scheme == Scheme::w4a8_token) EXPECT_EQ(named, c.fp8_cores) << hopper.kernel_path(problem);
    EXPECT_NEAR(test::error_bound(c.scheme, "cuda_sm90", shape, c.tokens),
                c.fp8_cores ? 3e-2 : test::error_bound(c.scheme), 1e-12);
  }
  EXPECT_FALSE(declaration("cuda").accumulation_error) << "the generic backend: mma.sync, within fp32's bounds";
}

#ifdef MXMOE_WITH_CUDA

TEST(CudaKernels, WeightDecodersGiveExactE2m1Values) {
  REQUIRE_GPU();
  std::vector<float> decoded(1024);
  cuda::decode_all_codes_for_test(decoded.data());
  for (int byte = 0; byte < 256; ++byte) {
    for (int half = 0; half < 2; ++half) {
      const float expected = e2m1_to_float(static_cast<uint8_t>(half ? byte >> 4 : byte & 0xF));
      EXPECT_EQ(decoded[2 * byte + half], expected) << "bf16 path, byte " << byte;
      EXPECT_EQ(decoded[512 + 2 * byte + half], expected) << "fp8 path, byte " << byte;
    }
  }
}

// The folded decode (one bf16 multiply by 2^(scale - 1)) gives the exact values for every scale code
// the small-batch path uses it for (0..128), as the two-step decode does.
TEST(CudaKernels, FoldedScaleDecodeIsExactUpToCode128) {
  REQUIRE_GPU();
  const std::vector<uint8_t> scales = {0, 1, 2, 60, 119, 126, 127, 128};
  std::vector<float> decoded(scales.size() * 1024);
  cuda::decode_scaled_codes_for_test(scales.data(), static_cast<int>(scales.size()), decoded.data());
  for (size_t s = 0; s < scales.size(); ++s) {
    for (int byte = 0; byte < 256; ++byte) {
      for (int half = 0; half < 2; ++half) {
        const double expected = e2m1_to_float(static_cast<uint8_t>(half ? byte >> 4 : byte & 0xF)) *
                                std::ldexp(1.0, static_cast<int>(scales[s]) - 127);
        EXPECT_EQ(decoded[s * 1024 + 2 * byte + half], expected) << "two-step, scale " << int(scales[s]) << " byte " << byte;
        EXPECT_EQ(decoded[s * 1024 + 512 + 2 * byte + half], expected) << "folded, scale " << int(scales[s]) << " byte " << byte;
      }
    }
  }
}

// FP8 E4M3 rounding on the device is the conversion instruction (codecs.hpp): the same codes as the
// codec's arithmetic at every rounding tie (each pair of neighbouring codes' midpoint and the floats
// either side), the saturation at 448 and for infinities, subnormals, and a sweep of float bits.
std::vector<float> fp8_rounding_cases() {
  std::vector<float> v;
  for (int c = 0; c < 0x7E; ++c) {
    const float lo = codec::fp8_e4m3_value(static_cast<uint8_t>(c)), hi = codec::fp8_e4m3_value(static_cast<uint8_t>(c + 1));
    const float mid = (lo + hi) / 2;  // exact: neighbouring E4M3 values differ in few bits
    for (float x : {lo, mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 1e9f), hi}) {
      v.push_back(x);
      v.push_back(-x);
    }
  }
  for (float x : {448.0f, 463.99f, 464.0f, 479.0f, 480.0f, 1e30f, std::numeric_limits<float>::infinity(),
                  std::numeric_limits<float>::denorm_min(), 0x1p-10f, 0x1p-11f, 0.0f}) {
    v.push_back(x);
    v.push_back(-x);
  }
  for (uint64_t b = 0; b < (uint64_t{1} << 32); b += 4099) {
    float x;
    const uint32_t bits = static_cast<uint32_t>(b);
    std::memcpy(&x, &bits, 4);
    if (!std::isnan(x)) v.push_back(x);
  }
  return v;
}

TEST(CudaFp8, CudasHostEmulationRoundsAsTheCodec) {
  for (float x : fp8_rounding_cases()) {
    ASSERT_EQ(static_cast<int>(__nv_cvt_float_to_fp8(x, __NV_SATFINITE, __NV_E4M3)),
              static_cast<int>(codec::fp8_e4m3_code(x)))
        << x;
  }
}

TEST(CudaFp8, DeviceConversionsMatchTheCodec) {
  REQUIRE_GPU();
  const std::vector<float> cases = fp8_rounding_cases();
  std::vector<uint8_t> codes(cases.size());
  std::vector<float> values(cases.size()), rounded(cases.size());
  cuda::fp8_codes_for_test(cases.data(), static_cast<int>(cases.size()), codes.data(), values.data(), rounded.data());
  for (size_t i = 0; i < cases.size(); ++i) {
    ASSERT_EQ(static_cast<int>(codes[i]), static_cast<int>(codec::fp8_e4m3_code(cases[i]))) << cases[i];
    const float expected = codec::fp8_e4m3_value(codec::fp8_e4m3_code(cases[i]));
    if (std::isnan(expected)) {
      EXPECT_TRUE(std::isnan(rounded[i])) << cases[i];
    } else {
      EXPECT_EQ(rounded[i], expected) << cases[i];
      EXPECT_EQ(std::signbit(rounded[i]), std::signbit(expected)) << cases[i];  // a zero's sign too
    }
  }
  for (int code = 0; code < 256; ++code) {
    const float expected = codec::fp8_e4m3_value(static_cast<uint8_t>(code));
    if (std::isnan(expected)) {
      EXPECT_TRUE(std::isnan(values[code])) << code;
    } else {
      EXPECT_EQ(values[code], expected) << code;
    }
  }
}

// The quantization passes divide by the FP8 scale through its reciprocal (codec::Fp8Divisor): the
// same codes as the codec's IEEE division, value by value, per tensor (fp32 and bf16 inputs) and per
// row, on rows whose values sit just either side of every E4M3 rounding tie under scales that are
// not powers of two, rows of spread magnitudes, subnormal values, signed zeros, and rows whose
// largest value is tiny (a scale below 2^-90) or huge.
TEST(CudaFp8, QuantizationPassesDivideAsTheCodec) {
  REQUIRE_GPU();
  constexpr int kCols = 2880;
  std::mt19937 rng(20261204);
  std::uniform_real_distribution<float> unit(1.0f, 2.0f);
  std::vector<float> x;
  const float row_maxima[] = {3.7f, 1.0f / 3.0f, 0x1.234p-100f, 0x1.fffffep-95f, 0x1.5p-130f, 1.7e37f, 448.0f};
  for (const float row_max : row_maxima) {
    const float scale = codec::fp8_dynamic_scale(row_max);
    std::vector<float> row = {row_max, 0.0f, -0.0f, std::numeric_limits<float>::denorm_min(), -0x1p-140f};
    for (int c = 0; c < 0x7E && row.size() + 6 <= kCols; ++c) {  // around each tie a / scale = midpoint
      const float mid = (codec::fp8_e4m3_value(static_cast<uint8_t>(c)) + codec::fp8_e4m3_value(static_cast<uint8_t>(c + 1))) / 2;
      const float a = mid * scale;
      for (const float v : {a, std::nextafter(a, 0.0f), std::nextafter(a, 1e38f)}) {
        if (!(std::fabs(v) <= row_max)) continue;  // the row's largest stays row_max
        row.push_back(v);
        row.push_back(-v);
      }
    }
    while (row.size() < kCols) {  // magnitudes over 24 binades below the row's largest
      const float v = row_max * std::ldexp(unit(rng) / 2, -static_cast<int>(rng() % 24));
      row.push_back(rng() & 1 ? v : -v);
    }
    x.insert(x.end(), row.begin(), row.begin() + kCols);
  }
  const int rows = static_cast<int>(x.size() / kCols);
  const auto device_copy = [](const void* host, size_t bytes) {
    cuda::DeviceBuffer b(bytes);
    MXMOE_CUDA_CHECK(cudaMemcpy(b.as<void>(), host, bytes, cudaMemcpyHostToDevice));
    return b;
  };
  const auto host_copy = [](const cuda::DeviceBuffer& b, void* host, size_t bytes) {
    MXMOE_CUDA_CHECK(cudaMemcpy(host, b.as<void>(), bytes, cudaMemcpyDeviceToHost));
  };
  const size_t n = x.size();
  cuda::DeviceBuffer d_x = device_copy(x.data(), n * sizeof(float)), codes(n), row_scales(rows * sizeof(float)),
                     tensor_scale(sizeof(float));
  std::vector<uint8_t> got(n);

  // Per row: each row's scale, then its codes.
  cuda::launch_quantize_rows(d_x.as<float>(), rows, kCols, codes.as<void>(), row_scales.as<float>(),
                             tensor_scale.as<float>(), false, false, nullptr);
  std::vector<float> got_scales(rows);
  host_copy(codes, got.data(), n);
  host_copy(row_scales, got_scales.data(), rows * sizeof(float));
  for (int r = 0; r < rows; ++r) {
    const float scale = codec::fp8_dynamic_scale(row_maxima[r]);
    ASSERT_EQ(got_scales[r], scale) << "row " << r;
    for (int c = 0; c < kCols; ++c) {
      const float v = x[static_cast<size_t>(r) * kCols + c];
      ASSERT_EQ(int(got[static_cast<size_t>(r) * kCols + c]), int(float_to_fp8_e4m3(v / scale))) << "row " << r << ": " << v;
    }
  }

  // Per tensor, fp32 and bf16 inputs, each row taken as a tensor of its own.
  for (int r = 0; r < rows; ++r) {
    const float* row = x.data() + static_cast<size_t>(r) * kCols;
    std::vector<uint16_t> row_bf16(kCols);
    for (int c = 0; c < kCols; ++c) row_bf16[c] = codec::bf16_bits(row[c]);
    const uint32_t amax_bits = codec::float_bits(row_maxima[r]);
    cuda::DeviceBuffer d_amax = device_copy(&amax_bits, 4), d_bf16 = device_copy(row_bf16.data(), kCols * 2);
    const float scale = codec::fp8_dynamic_scale(row_maxima[r]);
    for (const bool bf16_in : {false, true}) {
      if (bf16_in) {
        cuda::launch_quantize(Scheme::w4a8, d_bf16.as<uint16_t>(), 1, kCols, d_amax.as<uint32_t>(), codes.as<void>(),
                              tensor_scale.as<float>(), false, false, nullptr);
      } else {
        cuda::launch_quantize(Scheme::w4a8, d_x.as<float>() + static_cast<size_t>(r) * kCols, 1, kCols,
                              d_amax.as<uint32_t>(), codes.as<void>(), tensor_scale.as<float>(), false, false, nullptr);
      }
      host_copy(codes, got.data(), kCols);
      for (int c = 0; c < kCols; ++c) {
        const float v = bf16_in ? codec::bf16_value(row_bf16[c]) : row[c];
        ASSERT_EQ(int(got[c]), int(float_to_fp8_e4m3(v / scale))) << "tensor " << r << (bf16_in ? " (bf16): " : ": ") << v;
      }
    }
  }
}

// Why this GPU cannot run the backend's code, or "".
std::string cannot_run_here(const std::string& backend, Scheme scheme) {
  const DeviceSpec gpu = DeviceSpec::detect();
  const int needed = scheme_traits(scheme).min_tensor_core_sm;
  if (gpu.sm < needed) return std::string(scheme_name(scheme)) + " needs sm_" + std::to_string(needed) + "; this GPU is " + gpu.id();
  if (backend == "cuda_sm90" && gpu.sm != 90) return "cuda_sm90 is sm_90a code; this GPU is " + gpu.id();
  return "";
}

// Every output element and every intermediate is written: with all buffers filled with NaN before
// the run, none survives into the output.
cuda::PreparedCudaLayer prepare_cuda(const std::string& backend, const MoeLayer& layer, Scheme scheme) {
  return cuda::prepare_cuda_backend(std::make_shared<const MoeLayer>(layer), scheme, DeviceSpec::detect(),
                                    ForcedBackend{backend, "test"});
}

TEST(CudaBackend, WritesEveryOutputWithPoisonedBuffers) {
  REQUIRE_GPU();
  const MoeLayer& layer = test::shared_layer({96, 64, 4, 2});
  for (const std::string backend : {"cuda", "cuda_sm90"}) {
    for (Scheme scheme : declaration(backend).schemes) {
      if (!cannot_run_here(backend, scheme).empty()) continue;
      cuda::PreparedCudaLayer p = prepare_cuda(backend, layer, scheme);
      p.moe->poison_buffers_for_test(true);
      const MoeLayer padded = pad_layer(layer, p.decision.padding);  // the rows the CUDA layer takes
      for (int tokens : {1, 5, 37, 300}) {
        SCOPED_TRACE(backend + " " + std::string(scheme_name(scheme)) + " T=" + std::to_string(tokens));
        test::expect_within_bound(test::error_bound(scheme, backend, layer.shape, tokens), tokens, [&](uint64_t seed) {
          return test::pooled_reference_error(padded, scheme, tokens, seed, HiddenDistribution::normal,
                                              [&](const std::vector<float>& x) { return p.moe->forward(x, tokens); });
        });
      }
    }
  }
}

// Small enough for compute-sanitizer's memcheck and racecheck (scripts/gpu-check).
TEST(CudaSanitizer, SmallShapeEveryBackendAndScheme) {
  REQUIRE_GPU();
  const DeviceSpec gpu = DeviceSpec::detect();
  const MoeLayer& layer = test::shared_layer({128, 96, 8, 2});
  for (const std::string backend : {"cuda", "cuda_sm90"}) {
    for (Scheme scheme : declaration(backend).schemes) {
      if (!cannot_run_here(backend, scheme).empty()) continue;
      MoeRunner runner(layer, scheme, gpu, {.backend = backend});
      for (int tokens : {2, 40, 130, 600}) {  // every tile width of both GEMM families
        SCOPED_TRACE(backend + " " + std::string(scheme_name(scheme)) + " T=" + std::to_string(tokens));
        test::expect_within_bound(test::error_bound(scheme, backend, layer.shape, tokens), 11, [&](uint64_t seed) {
          return test::pooled_reference_error(layer, scheme, tokens, seed, HiddenDistribution::normal,
                                              [&](const std::vector<float>& x) { return runner.forward(x, tokens); });
        });
      }
    }
  }
}

// The small-batch path (decode.hpp) of each GEMM family at every size it serves, poisoned buffers,
// against the reference on its own routing; and with routing skewed so that every token picks the
// same experts (an expert with more tokens than one pass of the kernels takes).
struct SmallBatchCase {
  std::string backend;
  test::BackendCase c;
};

std::vector<SmallBatchCase> small_batch_cases() {
  const auto tokens = {1, 2, 3, 4, 7, 16, 33, 64};
  std::vector<SmallBatchCase> all;
  // The Hopper kernels' shapes are multiples of 64 (others reach them padded: test_conformance.cpp).
  const std::pair<std::string, MoeShape> tiny[] = {{"cuda", {128, 96, 8, 2}}, {"cuda_sm90", {128, 192, 8, 2}}};
  for (const auto& [backend, tiny_shape] : tiny) {
    for (test::BackendCase c : test::backend_cases({tiny_shape, {2880, 2880, 32, 4}, {2880, 2880, 128, 4}}, tokens)) {
      all.push_back({backend, c});
      if (c.scheme != Scheme::w4a8) continue;
      c.scheme = Scheme::w4a8_token;  // each row under its own scale
      all.push_back({backend, c});
    }
  }
  return all;
}

class CudaSmallBatch : public ::testing::TestWithParam<SmallBatchCase> {};

std::unique_ptr<cuda::CudaMoe> prepare_small_batch(const std::string& backend, const MoeLayer& layer, Scheme scheme) {
  std::unique_ptr<cuda::CudaMoe> moe = prepare_cuda(backend, layer, scheme).moe;
  moe->set_small_batch_tokens(cuda::kDecodeMaxTokens);  // every size the path is built for
  return moe;
}

// Batches of `tokens` (inputs from `seed`) through `moe`, each against the reference on its own
// routing: the routing and the scales per batch, the outputs' error pooled over
// test::pooled_batches (backend_check.hpp says why; a pool over the bound is answered by a second,
// test::expect_within_bound). `each` sees every batch's output too.
// `accumulation`: the GEMM sums' relative error where the path that runs accumulates in less than
// fp32 (test::accumulation_error), which the bound and the intermediate's scale allow for.
void expect_matches_reference(cuda::CudaMoe& moe, const MoeLayer& layer, Scheme scheme, int tokens, uint64_t seed,
                              HiddenDistribution distribution, double accumulation = 0,
                              const std::function<void(const MoeOutput&)>& each = {}) {
  const int k = layer.shape.top_k;
  SCOPED_TRACE(layer.shape.to_string() + " T=" + std::to_string(tokens) + " " + std::string(scheme_name(scheme)));
  const auto checks = [&](const std::vector<float>& x, const MoeOutput& got, const MoeOutput& want) {
    if (each) each(got);
    const Routing expected_routing = route(layer, x, tokens);
    int same_sets = 0;
    for (int t = 0; t < tokens; ++t) {
      same_sets += test::token_experts(got.routing, t, k) == test::token_experts(expected_routing, t, k);
    }
    EXPECT_GE(same_sets, tokens - std::max(1, tokens / 200)) << "routing agrees on " << same_sets << " of " << tokens;
    const double scale_tolerance = test::scale_tolerance(accumulation);
    EXPECT_FLOAT_EQ(got.scales.hidden, want.scales.hidden);
    EXPECT_NEAR(got.scales.intermediate, want.scales.intermediate, scale_tolerance * want.scales.intermediate);
    // Per-token schemes: every token's and every pair's scale, in (token, slot) order.
    EXPECT_EQ(got.scales.hidden_rows, want.scales.hidden_rows);
    ASSERT_EQ(got.scales.intermediate_rows.size(), want.scales.intermediate_rows.size());
    for (size_t p = 0; p < want.scales.intermediate_rows.size(); ++p) {
      const float w = want.scales.intermediate_rows[p];
      EXPECT_NEAR(got.scales.intermediate_rows[p], w, scale_tolerance * w) << "pair " << p;
    }
  };
  test::expect_within_bound(test::error_bound(scheme, accumulation), seed, [&](uint64_t pool_seed) {
    return test::pooled_reference_error(
        layer, scheme, tokens, pool_seed, distribution, [&](const std::vector<float>& x) { return moe.forward(x, tokens); },
        checks);
  });
}

TEST_P(CudaSmallBatch, MatchesReferenceWithPoisonedBuffers) {
  REQUIRE_GPU();
  const auto& [backend, c] = GetParam();
  if (const std::string why = cannot_run_here(backend, c.scheme); !why.empty()) GTEST_SKIP() << why;
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("input seed " + std::to_string(seed));
  const MoeLayer& layer = test::shared_layer(c.shape);
  auto moe = prepare_small_batch(backend, layer, c.scheme);
  moe->poison_buffers_for_test(true);
  expect_matches_reference(*moe, layer, c.scheme, c.tokens, seed, HiddenDistribution::heavy);
}

INSTANTIATE_TEST_SUITE_P(Sizes, CudaSmallBatch, ::testing::ValuesIn(small_batch_cases()),
                         [](const ::testing::TestParamInfo<SmallBatchCase>& info) {
                           return info.param.backend + "_" + test::backend_case_name({info.param.c, info.index});
                         });

const char* const kSmallBatchBackends[] = {"cuda", "cuda_sm90"};

// Random layers have block scale codes near 120, so every kernel takes the folded decode (scale and
// 2^126 in one bf16 multiply, codes <= 128). Down weights 2^12 larger (codes near 132) switch the
// whole layer to the unfolded decode: both GEMMs of both kernel paths of every CUDA backend.
TEST(CudaBackend, LargeBlockScalesTakeTheUnfoldedDecode) {
  REQUIRE_GPU();
  MoeLayer layer = test::shared_layer({256, 192, 16, 4});
  for (uint8_t& s : layer.down.scales) s = static_cast<uint8_t>(std::min(254, s + 12));
  ASSERT_GT(*std::max_element(layer.down.scales.begin(), layer.down.scales.end()), 128);
  for (const std::string backend : kSmallBatchBackends) {
    for (Scheme scheme : declaration(backend).schemes) {
      if (!cannot_run_here(backend, scheme).empty()) continue;
      SCOPED_TRACE(backend + " " + std::string(scheme_name(scheme)));
      auto moe = prepare_cuda(backend, layer, scheme).moe;
      moe->poison_buffers_for_test(true);
      for (int tokens : {1, 5, 200}) {  // the small-batch path, then the batched one
        expect_matches_reference(*moe, layer, scheme, tokens, test::fresh_seed(), HiddenDistribution::heavy,
                                 test::accumulation_error(scheme, backend, layer.shape, tokens));
      }
    }
  }
}

// `check` on the small-batch path of every CUDA backend for each scheme it runs here, its buffers poisoned.
void for_each_small_batch_path(const MoeLayer& layer, const std::function<void(cuda::CudaMoe&, Scheme)>& check) {
  for (const std::string backend : kSmallBatchBackends) {
    for (Scheme scheme : declaration(backend).schemes) {
      if (!cannot_run_here(backend, scheme).empty()) continue;
      SCOPED_TRACE(backend + " " + std::string(scheme_name(scheme)));
      auto moe = prepare_small_batch(backend, layer, scheme);
      moe->poison_buffers_for_test(true);
      check(*moe, scheme);
    }
  }
}

TEST(CudaSmallBatchEdges, EveryTokenOnTheSameExperts) {
  REQUIRE_GPU();
  MoeLayer layer = test::shared_layer({256, 192, 16, 4});
  for (int e = 0; e < 4; ++e) layer.router_bias[e] = 1000.0f;  // experts 0-3 win for every token
  for_each_small_batch_path(layer, [&](cuda::CudaMoe& moe, Scheme scheme) {
    for (int tokens : {9, 64}) {
      expect_matches_reference(moe, layer, scheme, tokens, test::fresh_seed(), HiddenDistribution::normal, 0,
                               [&](const MoeOutput& got) {
                                 for (int t = 0; t < tokens; ++t) {
                                   EXPECT_EQ(test::token_experts(got.routing, t, 4), (std::set<int>{0, 1, 2, 3}));
                                 }
                               });
    }
  });
}

// Both paths on one batch: the same router code gives the same routing bits, and the outputs
// agree within the scheme's bound. (The Hopper family's batched path routes batches above
// kSmallRouterTokens with the tiled router, whose sums run in another order.)
TEST(CudaSmallBatchEdges, AgreesWithTheBatchedPath) {
  REQUIRE_GPU();
  const MoeLayer& layer = test::shared_layer({2880, 2880, 32, 4});
  for (const std::string backend : kSmallBatchBackends) {
    const int tokens = backend == "cuda" ? 16 : cuda::kSmallRouterTokens;
    for (Scheme scheme : declaration(backend).schemes) {
      if (!cannot_run_here(backend, scheme).empty()) continue;
      SCOPED_TRACE(backend + " " + std::string(scheme_name(scheme)));
      auto moe = prepare_small_batch(backend, layer, scheme);
      const double bound = test::error_bound(scheme, backend, layer.shape, 0);  // the batched path's, at any size
      test::expect_within_bound(bound, test::fresh_seed(), [&](uint64_t seed) {
        test::PooledOutputs pooled;  // the small-batch path's outputs against the batched path's
        for (int64_t b = 0; b < test::pooled_batches(layer.shape, tokens, scheme); ++b) {
          const auto x = test::pooled_input(tokens, 2880, seed, b, HiddenDistribution::heavy);
          moe->set_small_batch_tokens(cuda::kDecodeMaxTokens);
          const MoeOutput small = moe->forward(x, tokens);
          moe->set_small_batch_tokens(0);
          const MoeOutput batched = moe->forward(x, tokens);
          EXPECT_EQ(small.routing.expert_ids, batched.routing.expert_ids);
          EXPECT_EQ(small.routing.weights, batched.routing.weights);
          EXPECT_EQ(small.scales.hidden, batched.scales.hidden);
          pooled.add(small.output, batched.output);
        }
        return pooled.relative_error();
      });
    }
  }
}

// The device-pointer entry point captured in a CUDA graph: replays give the bits of an uncaptured
// call, again and again (counters return to zero), between runs of other sizes.
void expect_graph_replays_match(cuda::CudaMoe& moe, int hidden, std::initializer_list<int> token_counts) {
  for (int tokens : token_counts) {
    const auto x = random_hidden(tokens, hidden, test::fresh_seed());
    const size_t bytes = x.size() * sizeof(float);
    cuda::DeviceBuffer input(bytes), output(bytes);
    // On the layer's stream, and complete before the first run: a plain cudaMemcpy from pageable
    // memory may return before its DMA lands, and the layer's non-blocking stream does not wait for
    // it (the first run then read part of the input unwritten: seen at T=64 on an H200).
    ASSERT_EQ(cudaMemcpyAsync(input.as<void>(), x.data(), bytes, cudaMemcpyHostToDevice, moe.stream()), cudaSuccess);
    ASSERT_EQ(cudaStreamSynchronize(moe.stream()), cudaSuccess);
    auto read_output = [&] {
      std::vector<float> host(x.size());
      EXPECT_EQ(cudaStreamSynchronize(moe.stream()), cudaSuccess);
      EXPECT_EQ(cudaMemcpy(host.data(), output.as<void>(), bytes, cudaMemcpyDeviceToHost), cudaSuccess);
      return host;
    };
    moe.forward_on_device({.tokens = tokens, .hidden = input.as<void>(), .output = output.as<void>(), .stream = moe.stream()});
    const std::vector<float> direct = read_output();
    ASSERT_TRUE(test::all_finite(direct));
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    ASSERT_EQ(cudaStreamBeginCapture(moe.stream(), cudaStreamCaptureModeThreadLocal), cudaSuccess);
    moe.forward_on_device({.tokens = tokens, .hidden = input.as<void>(), .output = output.as<void>(), .stream = moe.stream()});
    ASSERT_EQ(cudaStreamEndCapture(moe.stream(), &graph), cudaSuccess);
    ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    for (int replay = 0; replay < 3; ++replay) {
      // On the layer's stream: a plain cudaMemset runs on the legacy stream, unordered with the
      // layer's non-blocking one, and could land after the replay wrote (seen once on an H200).
      ASSERT_EQ(cudaMemsetAsync(output.as<void>(), 0xFF, bytes, moe.stream()), cudaSuccess);
      ASSERT_EQ(cudaGraphLaunch(exec, moe.stream()), cudaSuccess);
      const std::vector<float> replayed = read_output();
      EXPECT_EQ(0, std::memcmp(replayed.data(), direct.data(), bytes)) << "T=" << tokens << " replay " << replay;
    }
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
  }
}

TEST(CudaSmallBatchEdges, GraphReplayGivesTheSameBits) {
  REQUIRE_GPU();
  const MoeLayer& layer = test::shared_layer({2880, 2880, 32, 4});
  for (const std::string backend : kSmallBatchBackends) {
    if (!cannot_run_here(backend, Scheme::w4a16).empty()) continue;
    SCOPED_TRACE(backend);
    expect_graph_replays_match(*prepare_small_batch(backend, layer, Scheme::w4a16), 2880, {1, 5, 64});
  }
}

// The caller's routing (no router logits: the route kernel runs only where an FP8 scheme needs the
// hidden states' magnitudes) gives the bits of the layer's own routing, scales included, for every
// scheme, run after run (the per-token pairs' maxima start from zero each time).
TEST(CudaSmallBatchEdges, CallersRoutingGivesTheOwnRoutingsBits) {
  REQUIRE_GPU();
  for_each_small_batch_path(test::shared_layer({256, 192, 16, 4}), [](cuda::CudaMoe& moe, Scheme) {
    for (int tokens : {1, 3, 9}) {
      const auto x = random_hidden(tokens, 256, test::fresh_seed());
      const MoeOutput own = moe.forward(x, tokens, nullptr);
      ASSERT_TRUE(test::all_finite(own.output));
      for (int run = 0; run < 2; ++run) {
        const MoeOutput given = moe.forward(x, tokens, &own.routing);
        EXPECT_EQ(given.output, own.output) << "T=" << tokens << " run " << run;
        EXPECT_EQ(given.scales.hidden_rows, own.scales.hidden_rows) << "T=" << tokens;
        EXPECT_EQ(given.scales.intermediate_rows, own.scales.intermediate_rows) << "T=" << tokens;
        EXPECT_EQ(given.scales.hidden, own.scales.hidden) << "T=" << tokens;
      }
    }
  });
}

TEST(CudaBackend, Sm90GraphReplayGivesTheSameBits) {
  REQUIRE_GPU();
  if (const std::string why = cannot_run_here("cuda_sm90", Scheme::w4a16); !why.empty()) GTEST_SKIP() << why;
  cuda::PreparedCudaLayer p = prepare_cuda("cuda_sm90", test::shared_layer({2880, 2880, 32, 4}), Scheme::w4a16);
  expect_graph_replays_match(*p.moe, 2880, {1, 5, 300, 2000});
}

// Batched sm90 layers of one to nine experts per token (the combine adds up to top_k rows per
// token) at an H that is not a multiple of 128, each layer twice, with poisoned buffers.
TEST(CudaBackend, Sm90BatchesOfEveryTopKMatchTheReference) {
  REQUIRE_GPU();
  if (const std::string why = cannot_run_here("cuda_sm90", Scheme::w4a16); !why.empty()) GTEST_SKIP() << why;
  for (const int top_k : {1, 4, 9}) {
    SCOPED_TRACE("top_k " + std::to_string(top_k));
    const MoeLayer& layer = test::shared_layer({192, 128, 16, top_k});
    cuda::PreparedCudaLayer p = prepare_cuda("cuda_sm90", layer, Scheme::w4a16);
    p.moe->poison_buffers_for_test(true);
    for (int run = 0; run < 2; ++run) {
      expect_matches_reference(*p.moe, layer, Scheme::w4a16, 300, test::fresh_seed(), HiddenDistribution::normal);
    }
  }
}

// A layer the FP8 layout cannot hold exactly (a nonzero block at least 12 binades under its row's
// largest) keeps W4A8's batched GEMMs on bf16 tensor cores: within fp32 accumulation's bound at a
// size whose tiles would otherwise run on FP8 cores.
TEST(CudaBackend, Sm90W4a8StaysOnBf16CoresWhereTheFp8LayoutCannotHoldTheLayer) {
  REQUIRE_GPU();
  if (const std::string why = cannot_run_here("cuda_sm90", Scheme::w4a8); !why.empty()) GTEST_SKIP() << why;
  MoeLayer layer = test::shared_layer({256, 192, 16, 4});
  uint8_t* scales = layer.gate_up.row_scales(0, 0);
  ASSERT_GE(scales[0], 12);
  scales[1] = static_cast<uint8_t>(scales[0] - 12);
  const int tokens = 300;  // 75 pairs per expert: tiles of 128
  ASSERT_GT(test::accumulation_error(Scheme::w4a8, "cuda_sm90", layer.shape, tokens), 0) << "a size for FP8 cores";
  cuda::PreparedCudaLayer p = prepare_cuda("cuda_sm90", layer, Scheme::w4a8);
  p.moe->poison_buffers_for_test(true);
  expect_matches_reference(*p.moe, layer, Scheme::w4a8, tokens, test::fresh_seed(), HiddenDistribution::normal);
}

// An expert's last tile runs at the narrowest MMA width that holds its pairs (gemm.cu): the caller's
// routing gives one expert of each last-tile width (5, 20, 40, 70, 100 and 128 pairs past a full
// tile of 128; 5, 20, 40, 10, 30, 30 past tiles of 64: the plan's widths for these means), every
// scheme, poisoned buffers, each batch twice (the same bits both times).
TEST(CudaBackend, Sm90LastTilesOfEveryWidthMatchTheReference) {
  REQUIRE_GPU();
  const MoeLayer& layer = test::shared_layer({192, 128, 6, 1});
  const std::vector<std::vector<int>> pairs_per_expert = {{133, 148, 168, 198, 228, 256}, {5, 20, 40, 74, 30, 30}};
  for (Scheme scheme : declaration("cuda_sm90").schemes) {
    if (!cannot_run_here("cuda_sm90", scheme).empty()) continue;
    cuda::PreparedCudaLayer p = prepare_cuda("cuda_sm90", layer, scheme);
    p.moe->poison_buffers_for_test(true);
    for (const auto& counts : pairs_per_expert) {
      Routing routing{0, 1, {}, {}};
      for (int e = 0; e < 6; ++e) routing.expert_ids.insert(routing.expert_ids.end(), counts[e], e);
      routing.tokens = static_cast<int>(routing.expert_ids.size());
      routing.weights.assign(routing.tokens, 0.75f);
      SCOPED_TRACE(std::string(scheme_name(scheme)) + " T=" + std::to_string(routing.tokens));
      const double bound = test::error_bound(scheme, "cuda_sm90", layer.shape, routing.tokens);
      test::expect_within_bound(bound, test::fresh_seed(), [&](uint64_t seed) {
        test::PooledOutputs pooled;
        for (int64_t b = 0; b < test::pooled_batches(layer.shape, routing.tokens, scheme); ++b) {
          std::shuffle(routing.expert_ids.begin(), routing.expert_ids.end(), std::mt19937_64(seed + b));
          const auto x = test::pooled_input(routing.tokens, 192, seed, b, HiddenDistribution::normal);
          const MoeOutput got = p.moe->forward(x, routing.tokens, &routing);
          EXPECT_TRUE(test::all_finite(got.output));
          EXPECT_EQ(p.moe->forward(x, routing.tokens, &routing).output, got.output);
          pooled.add(got.output, reference_forward(layer, x, routing.tokens, scheme, {.routing = &routing}).output);
        }
        return pooled.relative_error();
      });
    }
  }
}

TEST(CudaBackend, RejectsNonFiniteInputs) {
  REQUIRE_GPU();
  const MoeLayer& layer = test::shared_layer({128, 96, 8, 2});
  MoeRunner runner(layer, Scheme::w4a16, DeviceSpec::detect(), {.backend = "cuda"});
  auto x = random_hidden(3, 128, 1);
  x[77] = std::numeric_limits<float>::infinity();
  EXPECT_THROW(runner.forward(x, 3), std::domain_error);
  EXPECT_TRUE(runner.forward({}, 0).output.empty());
}

// The caller's routing on every CUDA backend, at a small batch (the small-batch kernels, which then
// compute no router logits) and a batched one.
TEST(CudaBackend, RunsTheCallersRouting) {
  REQUIRE_GPU();
  for (const char* backend : {"cuda", "cuda_sm90"}) {
    for (Scheme scheme : declaration(backend).schemes) {
      if (scheme == Scheme::w4a32 || !cannot_run_here(backend, scheme).empty()) continue;
      for (int tokens : {6, 200}) {  // 6 x 4 x 192 intermediate elements: enough for the bound
        test::check_caller_routing(test::shared_layer({256, 192, 16, 4}), scheme, tokens, backend, DeviceSpec::detect(),
                                   test::fresh_seed());
      }
    }
  }
}

// The public device entry point (what the PyTorch operators and engines call): fp32 and bf16 rows of
// the real hidden size, padded layers, the caller's routing on the device or the layer's own copied
// out, on a stream of the caller's, captured in a CUDA graph, on both kernel paths. It computes what
// the host path does.
// fp32 rows at an offset that is not a multiple of 16 bytes (a view into a larger tensor): the
// kernels' 16-byte accesses must not see them; the result is the host path's, to the bit.
TEST(CudaBackend, DeviceBatchesAtAnOddOffsetGiveTheHostPathsBits) {
  REQUIRE_GPU();
  for (const char* backend : {"cuda", "cuda_sm90"}) {
    if (!cannot_run_here(backend, Scheme::w4a16).empty()) continue;
    const MoeLayer& layer = test::shared_layer({256, 128, 8, 2});
    MoeRunner runner(layer, Scheme::w4a16, DeviceSpec::detect(), {.backend = backend});
    for (int T : {5, 37}) {
      const int H = 256;
      const auto x = random_hidden(T, H, test::fresh_seed());
      const MoeOutput expected = runner.forward(x, T);
      const size_t bytes = x.size() * 4;
      cuda::DeviceBuffer d_x(bytes + 16), d_out(bytes + 16);
      float* hidden = d_x.as<float>() + 1;  // 4 bytes past an aligned start
      float* output = d_out.as<float>() + 3;
      ASSERT_EQ(cudaMemcpy(hidden, x.data(), bytes, cudaMemcpyHostToDevice), cudaSuccess);
      ASSERT_EQ(cudaMemset(d_out.as<void>(), 0xFF, bytes + 16), cudaSuccess);
      runner.forward_on_device({.tokens = T, .hidden = hidden, .output = output, .stream = nullptr});
      ASSERT_EQ(cudaStreamSynchronize(nullptr), cudaSuccess);
      std::vector<float> got(x.size());
      ASSERT_EQ(cudaMemcpy(got.data(), output, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
      EXPECT_EQ(got, expected.output) << backend << " T=" << T;
    }
  }
}

// RunnerOptions::replay_graphs: the first call of a batch runs and captures it, later calls replay
// the graph, on fresh data each time (poisoned outputs), with the bits of a runner that launches;
// a larger batch that grows the workspace drops the graphs (they hold its old pointers), and a
// call inside the caller's own capture goes into the caller's graph.
TEST(CudaBackend, ReplayedGraphsGiveTheBitsOfLaunchedRuns) {
  REQUIRE_GPU();
  for (const char* backend : {"cuda", "cuda_sm90"}) {
    if (!cannot_run_here(backend, Scheme::w4a16).empty()) continue;
    SCOPED_TRACE(backend);
    const MoeLayer& layer = test::shared_layer({256, 192, 16, 4});
    MoeRunner launched(layer, Scheme::w4a16, DeviceSpec::detect(), {.backend = backend});
    MoeRunner replayed(layer, Scheme::w4a16, DeviceSpec::detect(), {.backend = backend, .replay_graphs = true});
    cudaStream_t stream;
    ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
    const int H = 256, kMaxTokens = 2000;
    cuda::DeviceBuffer d_x(kMaxTokens * H * 4), d_expected(kMaxTokens * H * 4), d_got(kMaxTokens * H * 4);
    // Once the stream is done: both outputs of T tokens, finite and bit-equal.
    auto expect_same_outputs = [&](int T, const std::string& what) {
      ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
      const size_t count = static_cast<size_t>(T) * H;
      std::vector<float> expected(count), got(count);
      ASSERT_EQ(cudaMemcpy(expected.data(), d_expected.as<void>(), count * 4, cudaMemcpyDeviceToHost), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(got.data(), d_got.as<void>(), count * 4, cudaMemcpyDeviceToHost), cudaSuccess);
      ASSERT_TRUE(test::all_finite(expected));
      EXPECT_EQ(0, std::memcmp(got.data(), expected.data(), count * 4)) << "T=" << T << ", " << what;
    };
    auto run_both = [&](int T, const char* what) {
      const auto x = random_hidden(T, H, test::fresh_seed());
      const size_t bytes = x.size() * 4;
      ASSERT_EQ(cudaMemcpyAsync(d_x.as<void>(), x.data(), bytes, cudaMemcpyHostToDevice, stream), cudaSuccess);
      ASSERT_EQ(cudaMemsetAsync(d_got.as<void>(), 0xFF, bytes, stream), cudaSuccess);
      launched.forward_on_device({.tokens = T, .hidden = d_x.as<void>(), .output = d_expected.as<void>(), .stream = stream});
      replayed.forward_on_device({.tokens = T, .hidden = d_x.as<void>(), .output = d_got.as<void>(), .stream = stream});
      expect_same_outputs(T, what);
    };
    for (int T : {1, 5, 64, 300}) {
      run_both(T, "captured");
      run_both(T, "replayed");
      run_both(T, "replayed again");
    }
    run_both(kMaxTokens, "a batch that grows the workspace");
    run_both(300, "captured again after the growth");
    run_both(300, "replayed after the growth");

    // Inside the caller's capture the launches go into the caller's graph.
    const int T = 5;
    const auto x = random_hidden(T, H, test::fresh_seed());
    const size_t bytes = x.size() * 4;
    ASSERT_EQ(cudaMemcpyAsync(d_x.as<void>(), x.data(), bytes, cudaMemcpyHostToDevice, stream), cudaSuccess);
    launched.forward_on_device({.tokens = T, .hidden = d_x.as<void>(), .output = d_expected.as<void>(), .stream = stream});
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
    replayed.forward_on_device({.tokens = T, .hidden = d_x.as<void>(), .output = d_got.as<void>(), .stream = stream});
    ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
    ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
    ASSERT_EQ(cudaMemsetAsync(d_got.as<void>(), 0xFF, bytes, stream), cudaSuccess);
    ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
    expect_same_outputs(T, "inside the caller's capture");
    cudaGraphExecDestroy(exec);
    cudaGraphDestroy(graph);
    cudaStreamDestroy(stream);
  }
}

TEST(CudaBackend, DeviceBatchesMatchTheHostPath) {
  REQUIRE_GPU();
  for (const char* backend : {"cuda", "cuda_sm90"}) {
    if (!cannot_run_here(backend, Scheme::w4a16).empty()) continue;
    for (int pad : {0, 128}) {
      const MoeLayer& layer = test::shared_layer({160, 96, 8, 2});
      MoeRunner runner(layer, Scheme::w4a16, DeviceSpec::detect(), {.backend = backend, .pad_hidden_to = pad});
      ASSERT_EQ(runner.decision().padding.is_identity(), pad == 0 && std::string(backend) == "cuda") << backend;
      for (int T : {5, 37}) {  // the small-batch kernels and the batched pipeline
        const int H = 160, k = 2, bad_token = T / 2;
        auto x = random_hidden(T, H, test::fresh_seed());
        for (float& v : x) v = bf16_to_float(float_to_bf16(v));  // exact in both types
        const Routing routing = test::random_routing(T, 8, k, test::fresh_seed());
        const MoeOutput own = runner.forward(x, T), given = runner.forward(x, T, routing);
        std::vector<uint16_t> x_bf16(x.size());
        for (size_t i = 0; i < x.size(); ++i) x_bf16[i] = float_to_bf16(x[i]);
        cuda::DeviceBuffer d_x(x.size() * 4), d_x_bf16(x.size() * 2), d_out(x.size() * 4), d_ids(T * k * 4), d_weights(T * k * 4),
            d_routing_ids(T * k * 4), d_routing_weights(T * k * 4);
        ASSERT_EQ(cudaMemcpy(d_x.as<void>(), x.data(), x.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
        ASSERT_EQ(cudaMemcpy(d_x_bf16.as<void>(), x_bf16.data(), x.size() * 2, cudaMemcpyHostToDevice), cudaSuccess);
        ASSERT_EQ(cudaMemcpy(d_ids.as<void>(), routing.expert_ids.data(), T * k * 4, cudaMemcpyHostToDevice), cudaSuccess);
        ASSERT_EQ(cudaMemcpy(d_weights.as<void>(), routing.weights.data(), T * k * 4, cudaMemcpyHostToDevice), cudaSuccess);
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);  // the uploads have landed before a non-blocking stream reads them
        cudaStream_t stream;
        ASSERT_EQ(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking), cudaSuccess);
        auto run = [&](bool bf16, bool caller_routing) {
          ASSERT_EQ(cudaMemsetAsync(d_out.as<void>(), 0xFF, x.size() * 4, stream), cudaSuccess);  // poisoned
          runner.forward_on_device({.tokens = T,
                                    .type = bf16 ? ElementType::bf16 : ElementType::f32,
                                    .hidden = bf16 ? d_x_bf16.as<void>() : d_x.as<void>(),
                                    .output = d_out.as<void>(),
                                    .expert_ids = caller_routing ? d_ids.as<int32_t>() : nullptr,
                                    .expert_weights = caller_routing ? d_weights.as<float>() : nullptr,
                                    .routing_ids = d_routing_ids.as<int32_t>(),
                                    .routing_weights = d_routing_weights.as<float>(),
                                    .stream = stream});
        };
        auto expect_output = [&](bool bf16, const MoeOutput& expected, const std::string& what) {
          ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
          if (bf16) {
            std::vector<uint16_t> got(x.size());
            ASSERT_EQ(cudaMemcpy(got.data(), d_out.as<void>(), got.size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
            for (size_t i = 0; i < got.size(); ++i) {
              ASSERT_EQ(got[i], float_to_bf16(expected.output[i])) << what << " element " << i;
            }
          } else {
            std::vector<float> got(x.size());
            ASSERT_EQ(cudaMemcpy(got.data(), d_out.as<void>(), got.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
            EXPECT_EQ(got, expected.output) << what;
          }
        };
        for (bool bf16 : {false, true}) {
          const std::string what =
              std::string(backend) + (bf16 ? " bf16" : " f32") + " pad " + std::to_string(pad) + " T=" + std::to_string(T);
          run(bf16, false);
          expect_output(bf16, own, what + " own routing");
          std::vector<int32_t> ids(T * k);
          ASSERT_EQ(cudaMemcpy(ids.data(), d_routing_ids.as<void>(), ids.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
          EXPECT_EQ(ids, own.routing.expert_ids) << what;
          run(bf16, true);
          expect_output(bf16, given, what + " caller's routing");
        }
        // Captured on the caller's stream, replayed: the same bits.
        cudaGraph_t graph;
        cudaGraphExec_t exec;
        ASSERT_EQ(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal), cudaSuccess);
        run(true, true);
        ASSERT_EQ(cudaStreamEndCapture(stream, &graph), cudaSuccess);
        ASSERT_EQ(cudaGraphInstantiate(&exec, graph, 0), cudaSuccess);
        ASSERT_EQ(cudaGraphLaunch(exec, stream), cudaSuccess);
        expect_output(true, given, std::string(backend) + " graph replay");
        cudaGraphExecDestroy(exec);
        cudaGraphDestroy(graph);
        // An id out of range cannot throw on the device: its token's row is NaN, the others are right.
        std::vector<int32_t> bad = routing.expert_ids;
        bad[bad_token * k] = 8;
        ASSERT_EQ(cudaMemcpy(d_ids.as<void>(), bad.data(), bad.size() * 4, cudaMemcpyHostToDevice), cudaSuccess);
        run(false, true);
        ASSERT_EQ(cudaStreamSynchronize(stream), cudaSuccess);
        std::vector<float> got(x.size());
        ASSERT_EQ(cudaMemcpy(got.data(), d_out.as<void>(), got.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
        for (int t = 0; t < T; ++t) {
          for (int h = 0; h < H; ++h) {
            if (t == bad_token) {
              EXPECT_TRUE(std::isnan(got[t * H + h])) << t << "," << h;
            } else {
              EXPECT_EQ(got[t * H + h], given.output[t * H + h]) << t << "," << h;
            }
          }
        }
        cudaStreamDestroy(stream);
        EXPECT_THROW(runner.forward_on_device({.tokens = T, .hidden = d_x.as<void>(), .output = nullptr}), std::invalid_argument);
        EXPECT_THROW(runner.forward_on_device({.tokens = T, .hidden = d_x.as<void>(), .output = d_out.as<void>(),
                                               .expert_ids = d_ids.as<int32_t>()}),
                     std::invalid_argument);
      }
    }
  }
}

// The benchmark hook (mxmoe bench) times graph replays of a padded layer and leaves the layer as it
// was: the next forward gives the same bits as before.
TEST(CudaBackend, TimedGraphReplaysLeaveTheLayerUnchanged) {
  REQUIRE_GPU();
  const MoeLayer& layer = test::shared_layer({96, 64, 8, 2});
  MoeRunner runner(layer, Scheme::w4a16, DeviceSpec::detect(), {.pad_hidden_to = 128});
  ASSERT_FALSE(runner.decision().padding.is_identity());
  const auto x = random_hidden(6, 96, 3);  // two batches of 3 tokens
  const std::span<const float> first(x.data(), 3 * 96);
  const MoeOutput before = runner.forward(first, 3);
  const ForwardTiming timing = runner.time_forward(x, 3, {.batches = 2, .warmup = 1, .reps = 5});
  ASSERT_EQ(timing.ms.size(), 5u);
  for (double ms : timing.ms) EXPECT_GT(ms, 0);
  EXPECT_NE(timing.method.find("CUDA-graph"), std::string::npos) << timing.method;
  EXPECT_EQ(runner.forward(first, 3).output, before.output);
  EXPECT_GT(runner.copy_bandwidth_gbs(), 100);
  EXPECT_THROW(runner.time_forward(x, 4, {.batches = 2}), std::invalid_argument);
}

#endif  // MXMOE_WITH_CUDA

}  // namespace
}  // namespace mxmoe
