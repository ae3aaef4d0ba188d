// Checks a backend against the float64 reference on fresh random data; shared by the CPU and
// CUDA backend tests.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <utility>

#include "mxmoe/runner.hpp"
#include "mxmoe/scheme.hpp"
#include "mxmoe/synth.hpp"
#include "support.hpp"

namespace mxmoe::test {

// Error bounds per scheme, relative L2 over the whole output.
//
// A backend sees the same quantized inputs as the reference; its GEMMs multiply exactly (E2M1
// times bf16, FP8 or E2M1 values fit a float) and accumulate in fp32, which alone gives about
// 1e-7 (measured 5e-8 to 1.3e-7). The intermediate activation is then quantized again, from a
// value that differs from the reference's by a relative eps ~ 1e-6. An element within eps of a
// rounding boundary lands on the other side: with p mantissa bits after the leading one that
// happens to a fraction ~ 2 eps 2^p of the elements, each moving by 2^-p of itself, so the
// output moves by about sqrt(2 eps 2^-p) relative: 1.3e-4 for bf16 (p = 7), 5e-4 for FP8 (p = 3),
// 1e-3 for E2M1 (p = 1). The bounds allow three times that. Any real defect (a wrong scale, a
// dropped block, a swapped row) moves the output by 1e-2 or more.
inline double error_bound(Scheme scheme) {
  switch (scheme) {
    case Scheme::w4a16: return 4e-4;
    case Scheme::w4a8:
    case Scheme::w4a8_token: return 1.5e-3;
    case Scheme::w4a4: return 3e-3;
    case Scheme::w4a32: return 1e-5;
  }
  return 0;
}

// The relative error of `backend`'s GEMM sums for a batch of `tokens` where it accumulates in less
// than fp32 (BackendDeclaration::accumulation_error, e.g. Hopper's FP8 tensor cores), else 0.
// tokens = 0: a batch size the declaration does not know, for which it states the larger error.
inline double accumulation_error(Scheme scheme, const std::string& backend, const MoeShape& shape, int tokens) {
  for (const BackendDeclaration& d : backend_registry()) {
    if (d.name != backend || !d.accumulation_error) continue;
    return d.accumulation_error({.scheme = scheme, .experts = shape.experts, .top_k = shape.top_k,
                                 .hidden = shape.hidden, .intermediate = shape.intermediate, .tokens = tokens});
  }
  return 0;
}

// The bound of `scheme` where the GEMM sums are off by `accumulation` (relative) instead of fp32's
// ~1e-6: the intermediate's relative error eps is that, and the argument above gives the bound times
// sqrt(eps / 1e-6): 3e-2 for w4a8 at eps = 4e-4. Still below what a defect does (a wrong fragment,
// scale or row moves the output by 1e-1 or more).
inline double error_bound(Scheme scheme, double accumulation) {
  return accumulation > 1e-6 ? error_bound(scheme) * std::sqrt(accumulation / 1e-6) : error_bound(scheme);
}
inline double error_bound(Scheme scheme, const std::string& backend, const MoeShape& shape, int tokens) {
  return error_bound(scheme, accumulation_error(scheme, backend, shape, tokens));
}

// The tolerance of an intermediate's scale (its largest |value|: one GEMM sum) against the
// reference's: fp32's accumulation order moves it by ~1e-6; accumulating in less than fp32 by up to
// about 12x that accumulation's typical error (measured 4.9e-3 at 4e-4 on Hopper's FP8 cores).
inline double scale_tolerance(double accumulation) { return 1e-5 + 25 * accumulation; }

// Random layers are costly at gpt-oss sizes: one per shape per test binary.
inline const MoeLayer& shared_layer(const MoeShape& shape) {
  static std::map<std::tuple<int, int, int, int>, std::unique_ptr<MoeLayer>> layers;
  static const uint64_t seed = fresh_seed();
  auto& slot = layers[{shape.hidden, shape.intermediate, shape.experts, shape.top_k}];
  if (!slot) slot = std::make_unique<MoeLayer>(random_layer(shape, seed));
  return *slot;
}

// One cell of a backend's test matrix.
struct BackendCase {
  MoeShape shape;
  int tokens;
  Scheme scheme;
};

inline std::vector<BackendCase> backend_cases(std::initializer_list<MoeShape> shapes, std::initializer_list<int> tokens) {
  std::vector<BackendCase> all;
  for (const auto& shape : shapes) {
    for (int t : tokens) {
      for (Scheme scheme : {Scheme::w4a16, Scheme::w4a8, Scheme::w4a4}) all.push_back({shape, t, scheme});
    }
  }
  return all;
}

inline std::string backend_case_name(const ::testing::TestParamInfo<BackendCase>& info) {
  const BackendCase& c = info.param;
  // Appended piece by piece: GCC 12 warns falsely (-Wstringop-overflow) on "literal" + std::string.
  std::string name = "H";
  name += std::to_string(c.shape.hidden);
  name += "_I";
  name += std::to_string(c.shape.intermediate);
  name += "_E";
  name += std::to_string(c.shape.experts);
  name += "_T";
  name += std::to_string(c.tokens);
  name += "_";
  name += scheme_name(c.scheme);
  return name;
}

struct CheckResult {
  double relative_error = 0;
  MoeOutput output;
};

// Runs `backend` on a fresh random batch and compares with the reference on the backend's own
// routing (so a near-tie routed differently by a GPU's float router cannot fail the expert math);
// the routing itself must agree with the reference's except on near-tied tokens.
//
// The bounds count rounding-boundary flips of the intermediate activation over many elements; a
// batch with few of them can meet a single flip whose share of its small output exceeds the bound.
// One flip moves an element by one step of its format, at most 2^-p of it (p mantissa bits: bf16 7,
// FP8 3, E2M1 1, whose step between 0.5 and 1 is a whole 0.5 but whose block scaling keeps most
// elements at 1 or above), and moves the relative L2 of n elements by that step times the element's
// size against their RMS over sqrt(n). So that a flip of an element three times the RMS stays
// within error_bound, a comparison pools independent batches of the same size until they hold
// n >= (3 2^-p / bound)^2 intermediate elements (3.4K for bf16, 62.5K for FP8, 250K for E2M1), in
// powers of two from 4096.
inline int64_t pooled_intermediates(Scheme scheme) {
  const auto mantissa_bits = [](ActivationFormat format) {
    switch (format) {
      case ActivationFormat::bf16: return 7;
      case ActivationFormat::fp8_e4m3: return 3;
      case ActivationFormat::mxfp4: return 1;
      case ActivationFormat::fp32: return 23;  // no requantization: any pool will do
    }
    return 1;
  };
  const double step = std::ldexp(1.0, -mantissa_bits(scheme_traits(scheme).activation));
  const double needed = std::pow(3.0 * step / error_bound(scheme), 2);
  int64_t n = 4096;
  while (static_cast<double>(n) < needed) n *= 2;
  return n;
}

// Independent batches of `tokens` that one comparison under `scheme` pools.
inline int64_t pooled_batches(const MoeShape& shape, int tokens, Scheme scheme) {
  const int64_t per_batch = int64_t{tokens} * shape.top_k * shape.intermediate;
  return per_batch == 0 ? 1 : (pooled_intermediates(scheme) + per_batch - 1) / per_batch;
}
// The outputs of pooled batches and the reference's, compared as one.
struct PooledOutputs {
  std::vector<float> got, want;
  void add(const std::vector<float>& batch_got, const std::vector<float>& batch_want) {
    got.insert(got.end(), batch_got.begin(), batch_got.end());
    want.insert(want.end(), batch_want.begin(), batch_want.end());
  }
  double relative_error() const { return relative_l2(got, want); }
};
// Batch b's input of a pooled comparison from `seed`.
inline std::vector<float> pooled_input(int tokens, int hidden, uint64_t seed, int64_t b,
                                       HiddenDistribution distribution = HiddenDistribution::heavy) {
  return random_hidden(tokens, hidden, seed + static_cast<uint64_t>(b) * 7919, distribution);
}

// Token t's k experts in `r`, whatever their slot order.
inline std::set<int> token_experts(const Routing& r, int t, int k) {
  return std::set<int>(r.expert_ids.begin() + int64_t{t} * k, r.expert_ids.begin() + int64_t{t + 1} * k);
}

// Per-batch checks of a pooled comparison: the input, the backend's output, the reference's.
using BatchCheck = std::function<void(const std::vector<float>& x, const MoeOutput& got, const MoeOutput& want)>;

// The pooled error of batches of `tokens` run by `forward(x)` on inputs from `seed`, each against
// the reference on the routing the backend returned; infinity once a batch's output is not finite.
// `batches`: how many to pool; by default as many as the scheme's bound needs (pooled_batches).
template <class Forward>
double pooled_reference_error(const MoeLayer& layer, Scheme scheme, int tokens, uint64_t seed,
                              HiddenDistribution distribution, Forward&& forward, const BatchCheck& each = {},
                              std::optional<int64_t> batches = std::nullopt) {
  PooledOutputs pooled;
  for (int64_t b = 0; b < batches.value_or(pooled_batches(layer.shape, tokens, scheme)); ++b) {
    const auto x = pooled_input(tokens, layer.shape.hidden, seed, b, distribution);
    const MoeOutput got = forward(x);
    EXPECT_EQ(got.output.size(), x.size());
    const bool finite = got.output.size() == x.size() && all_finite(got.output);
    EXPECT_TRUE(finite);
    if (!finite) return std::numeric_limits<double>::infinity();
    const MoeOutput want = reference_forward(layer, x, tokens, scheme, {.routing = &got.routing});
    if (each) each(x, got, want);
    pooled.add(got.output, want.output);
  }
  return pooled.relative_error();
}

// `batches_given`: how many batches to pool; by default as many as the scheme's bound needs.
inline CheckResult check_against_reference(const MoeLayer& layer, Scheme scheme, int tokens, const std::string& backend,
                                           const DeviceSpec& device, uint64_t input_seed,
                                           std::optional<int64_t> batches_given = std::nullopt) {
  MoeRunner runner(layer, scheme, device, {.backend = backend});
  EXPECT_EQ(runner.decision().chosen, backend);
  CheckResult r;
  bool first = true;
  r.relative_error = pooled_reference_error(
      layer, scheme, tokens, input_seed, HiddenDistribution::heavy,
      [&](const std::vector<float>& x) { return runner.forward(x, tokens); },
      [&](const std::vector<float>&, const MoeOutput& got, const MoeOutput&) {
        if (std::exchange(first, false)) r.output = got;
      },
      batches_given);
  return r;
}

// `pooled_error(seed)`: one pooled comparison's error on inputs from `seed`. The pools are sized for
// a flip of an intermediate up to three times the RMS; the heavy-tailed test inputs put a few
// percent of intermediates above that, so now and then a pool meets a flip of a larger one and
// exceeds the bound by itself (CpuKernelIsa: 2 of about 460 runs, by 1% and 18%). Such a pool
// is answered by a second, independent one, which must meet the bound: two pools over it by chance
// are about 1e-5, while a real defect (1e-2 or more) exceeds it in both. A pool whose error is not
// finite (callers return infinity once a batch failed outright) is a failure with no second pool.
template <class PooledError>
void expect_within_bound(double bound, uint64_t seed, PooledError&& pooled_error) {
  const double first = pooled_error(seed);
  if (first <= bound) return;
  if (!std::isfinite(first)) {
    ADD_FAILURE() << "pooled error " << first << " on input seed " << seed;
    return;
  }
  constexpr uint64_t kSecondPool = 0x5EC0D9001ull;  // far from the first pool's batch seeds
  const double second = pooled_error(seed + kSecondPool);
  EXPECT_LE(second, bound) << "and the first pool, on input seed " << seed << ": " << first;
}

// A routing as an inference engine might give one, unrelated to the layer's router: k distinct
// random experts per token with random positive weights.
inline Routing random_routing(int tokens, int experts, int top_k, uint64_t seed) {
  Routing r{tokens, top_k, {}, {}};
  uint64_t state = seed * 0x9E3779B97F4A7C15ull + 7;
  auto next = [&] {
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
  };
  for (int t = 0; t < tokens; ++t) {
    std::vector<int> order(experts);
    for (int e = 0; e < experts; ++e) order[e] = e;
    for (int j = 0; j < top_k; ++j) {
      std::swap(order[j], order[j + next() % (experts - j)]);
      r.expert_ids.push_back(order[j]);
      r.weights.push_back(0.05f + static_cast<float>(next() % 1000) / 1000.0f);
    }
  }
  return r;
}

// The backend on the caller's routing matches the reference on that routing, returns it as given,
// and refuses routings that are not one.
inline void check_caller_routing(const MoeLayer& layer, Scheme scheme, int tokens, const std::string& backend,
                                 const DeviceSpec& device, uint64_t seed) {
  MoeRunner runner(layer, scheme, device, {.backend = backend});
  ASSERT_EQ(runner.decision().chosen, backend);
  const MoeShape& s = layer.shape;
  const auto input = [&](uint64_t pool_seed, int64_t b) {
    return pooled_input(tokens, s.hidden, pool_seed, b, HiddenDistribution::normal);
  };
  const auto routing_of = [&](uint64_t pool_seed, int64_t b) {
    return random_routing(tokens, s.experts, s.top_k, pool_seed + 1 + static_cast<uint64_t>(b));
  };
  SCOPED_TRACE(backend + " T=" + std::to_string(tokens));
  expect_within_bound(error_bound(scheme, backend, s, tokens), seed, [&](uint64_t pool_seed) {
    PooledOutputs pooled;
    for (int64_t b = 0; b < pooled_batches(s, tokens, scheme); ++b) {
      const auto x = input(pool_seed, b);
      const Routing routing = routing_of(pool_seed, b);
      const MoeOutput got = runner.forward(x, tokens, routing);
      EXPECT_EQ(got.routing.expert_ids, routing.expert_ids);
      EXPECT_EQ(got.routing.weights, routing.weights);
      pooled.add(got.output, reference_forward(layer, x, tokens, scheme, {.routing = &routing}).output);
      // Not the router's answer: the test would prove nothing if the two routings agreed.
      EXPECT_NE(route(layer, x, tokens).expert_ids, routing.expert_ids);
    }
    return pooled.relative_error();
  });

  // Bad input, on batch 0.
  const auto x = input(seed, 0);
  const Routing routing = routing_of(seed, 0);

  Routing out_of_range = routing;
  out_of_range.expert_ids[0] = s.experts;
  EXPECT_THROW(runner.forward(x, tokens, out_of_range), std::invalid_argument);
  Routing twice = routing;
  twice.expert_ids[1] = twice.expert_ids[0];
  EXPECT_THROW(runner.forward(x, tokens, twice), std::invalid_argument);
  Routing not_finite = routing;
  not_finite.weights[0] = std::numeric_limits<float>::quiet_NaN();
  EXPECT_THROW(runner.forward(x, tokens, not_finite), std::invalid_argument);
  auto nan_input = x;
  nan_input[3] = std::numeric_limits<float>::infinity();
  EXPECT_THROW(runner.forward(nan_input, tokens, routing), std::domain_error);
}

}  // namespace mxmoe::test
