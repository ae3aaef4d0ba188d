// One conformance suite over every registered backend (as ggml's test-backend-ops): each backend
// of the registry that computes on this build's device kind, for every scheme it declares, on fresh
// random layers and batches, against the float64 reference. Built twice from this file:
// test_conformance_host (the CPU's backends, label cpu) and test_conformance_gpu (the CUDA
// backends, label gpu: skipped, saying why, where no GPU can run them). The reference backend is
// not among them: it is the ground truth the others are checked against.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "backends/backend_check.hpp"
#include "mxmoe/oracle.hpp"
#include "util/parallel.hpp"

#ifndef MXMOE_CONFORMANCE_GPU
#error "build with MXMOE_CONFORMANCE_GPU=0 (host backends) or 1 (CUDA backends)"
#endif

namespace mxmoe {
namespace {

constexpr bool kGpu = MXMOE_CONFORMANCE_GPU;
constexpr DeviceKind kKind = kGpu ? DeviceKind::cuda : DeviceKind::cpu;

// The matrix per device kind: shapes and the batch sizes each runs. The GPU's reaches
// gpt-oss-120b's 128 experts and prefill batches; the host's keeps CI's two cores within budget
// (its gpt-oss-20b-shape cases share one process and one random layer: tests/CMakeLists.txt). The tiny
// shapes are not multiples of 64: backends that need that (cuda_sm90) run them padded by the oracle.
struct ShapeRow {
  MoeShape shape;
  std::vector<int> tokens;
};
const std::vector<ShapeRow>& matrix() {
  static const std::vector<ShapeRow> gpu = {{{128, 96, 8, 2}, {1, 3, 64, 1000, 8192}},
                                            {{96, 64, 4, 2}, {1, 3, 64, 1000, 8192}},
                                            {{2880, 2880, 32, 4}, {1, 3, 64, 1000, 8192}},
                                            {{2880, 2880, 128, 4}, {1, 3, 64, 1000, 8192}}};
  static const std::vector<ShapeRow> host = {{{128, 96, 8, 2}, {1, 7, 64, 512}},
                                             {{96, 64, 4, 2}, {1, 7, 64, 512}},
                                             {{2880, 2880, 32, 4}, {1, 64, 256}}};
  return kGpu ? gpu : host;
}

// Reference cost grows with tokens; beyond this many, a sample of tokens is checked (with the
// batch's own w4a8 scales, which depend on every token).
constexpr int kFullReferenceTokens = 1000;
constexpr int kSampledTokens = 192;

struct ConformanceCase {
  std::string backend;
  test::BackendCase c;
};

std::vector<ConformanceCase> registry_cases() {
  std::vector<ConformanceCase> all;
  for (const BackendDeclaration& b : backend_registry()) {
    if (b.runs_on_any_device || b.device_kind != kKind) continue;
    for (const ShapeRow& row : matrix()) {
      for (int tokens : row.tokens) {
        for (Scheme scheme : b.schemes) all.push_back({b.name, {row.shape, tokens, scheme}});
      }
    }
  }
  return all;
}

std::string case_name(const ::testing::TestParamInfo<ConformanceCase>& info) {
  return info.param.backend + "_" + test::backend_case_name({info.param.c, info.index});
}

// The device this binary's backends run on, or why there is none.
std::optional<DeviceSpec> local_device(std::string& why) {
  if (!kGpu) return DeviceSpec::detect_cpu();
  const auto gpus = detect_cuda_devices();
  if (gpus.empty()) {
    why = "no CUDA GPU on this machine (scripts/gpu-check runs these on one)";
    return std::nullopt;
  }
  return gpus.front();
}

// The routing of a router written here from the definition: long double logits, the softmax over
// all experts renormalized over the k largest; and per token whether its k-th and (k+1)-th logits
// tie to 1e-9 relative, where routers that round differently may rightly choose either.
struct DefinedRouting {
  Routing routing;
  std::vector<bool> near_tie;
};

DefinedRouting route_by_definition(const MoeLayer& layer, std::span<const float> x, int tokens) {
  const int E = layer.shape.experts, H = layer.shape.hidden, k = layer.shape.top_k;
  DefinedRouting d{{tokens, k, std::vector<int>(static_cast<size_t>(tokens) * k), std::vector<float>(static_cast<size_t>(tokens) * k)},
                   std::vector<bool>(tokens)};
  std::vector<char> near_tie(tokens);  // written by several threads: not vector<bool>
  detail::parallel_for(tokens, 0, 8, [&](int64_t begin, int64_t end) {
    std::vector<long double> logits(E);
    std::vector<int> order(E);
    for (int64_t t = begin; t < end; ++t) {
      for (int e = 0; e < E; ++e) {
        long double sum = layer.router_bias[e];
        for (int h = 0; h < H; ++h) {
          sum += static_cast<long double>(x[t * H + h]) * layer.router_weight[static_cast<size_t>(e) * H + h];
        }
        logits[e] = sum;
      }
      for (int e = 0; e < E; ++e) order[e] = e;
      std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return logits[a] > logits[b]; });
      near_tie[t] = k < E && logits[order[k - 1]] - logits[order[k]] < 1e-9L * std::fabs(logits[order[k - 1]]);
      long double all = 0, chosen = 0;
      for (int e = 0; e < E; ++e) all += std::exp(logits[e] - logits[order[0]]);
      for (int j = 0; j < k; ++j) chosen += std::exp(logits[order[j]] - logits[order[0]]) / all;
      for (int j = 0; j < k; ++j) {
        d.routing.expert_ids[t * k + j] = order[j];
        d.routing.weights[t * k + j] = static_cast<float>(std::exp(logits[order[j]] - logits[order[0]]) / all / chosen);
      }
    }
  });
  for (int t = 0; t < tokens; ++t) d.near_tie[t] = near_tie[t] != 0;
  return d;
}

class BackendConformance : public ::testing::TestWithParam<ConformanceCase> {};

TEST_P(BackendConformance, MatchesTheReferenceWithinTheSchemeBound) {
  const std::string backend = GetParam().backend;
  const test::BackendCase c = GetParam().c;
  std::string why;
  const std::optional<DeviceSpec> device = local_device(why);
  if (!device) GTEST_SKIP() << why;
  const MoeLayer& layer = test::shared_layer(c.shape);
  // Whether this backend runs here is the oracle's call (its own tests check it): a GPU of another
  // architecture, or a scheme its tensor cores lack, skips with the verdict's reason.
  try {
    select_backend(*device, Problem::for_layer(layer, c.scheme, c.tokens), ForcedBackend{backend, "the conformance suite"});
  } catch (const OracleError& e) {
    GTEST_SKIP() << backend << " cannot run on " << device->id() << ": " << e.decision().verdict(backend)->reason;
  }
  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("input seed " + std::to_string(seed));
  MoeRunner runner(layer, c.scheme, *device, {.backend = backend});
  ASSERT_EQ(runner.decision().chosen, backend);
  const int k = c.shape.top_k, H = c.shape.hidden;

  // Small batches are measured together with further independent batches of the same size until
  // they hold test::pooled_intermediates elements (backend_check.hpp says why); a pool over the
  // bound is answered by a second one (test::expect_within_bound).
  const int64_t batches = test::pooled_batches(c.shape, c.tokens, c.scheme);
  const double accumulation = test::accumulation_error(c.scheme, backend, c.shape, c.tokens);
  constexpr double kUnusable = std::numeric_limits<double>::infinity();
  const auto pooled_error = [&](uint64_t pool_seed) -> double {
    std::vector<float> got_rows, want_rows;
    int same_sets = 0, compared = 0;
    for (int64_t b = 0; b < batches; ++b) {
      const auto x = test::pooled_input(c.tokens, H, pool_seed, b);
      const MoeOutput got = runner.forward(x, c.tokens);
      const bool usable = got.output.size() == x.size() && test::all_finite(got.output);
      EXPECT_TRUE(usable) << got.output.size() << " outputs for " << x.size() << " inputs, or some not finite";
      if (!usable) return kUnusable;

      // Routing against the definition: the same experts except on near ties (a GPU's fp32 router
      // may also differ on one token in 200 whose gap is below its rounding), weights to the
      // router's precision (float64 on the host, fp32 on the GPU).
      const DefinedRouting defined = route_by_definition(layer, x, c.tokens);
      for (int t = 0; t < c.tokens; ++t) {
        if (defined.near_tie[t]) continue;
        ++compared;
        if (test::token_experts(got.routing, t, k) != test::token_experts(defined.routing, t, k)) continue;
        ++same_sets;
        for (int j = 0; j < k; ++j) {  // slots in descending logit order: a swap shows as wrong weights
          const float want = defined.routing.weights[t * k + j];
          EXPECT_NEAR(got.routing.weights[t * k + j], want, kGpu ? 2e-5 : 1e-6 * want)
              << "token " << t << " slot " << j;
        }
      }

      // Expert math on the backend's own routing, for every token or a sample of a large batch.
      std::vector<int> sample;
      if (c.tokens <= kFullReferenceTokens) {
        for (int t = 0; t < c.tokens; ++t) sample.push_back(t);
      } else {
        for (int i = 0; i < kSampledTokens; ++i) sample.push_back(static_cast<int>((int64_t{i} * 7919) % c.tokens));
      }
      std::vector<float> xs;
      Routing rs{static_cast<int>(sample.size()), k, {}, {}};
      for (int t : sample) {
        xs.insert(xs.end(), x.begin() + int64_t{t} * H, x.begin() + int64_t{t + 1} * H);
        got_rows.insert(got_rows.end(), got.output.begin() + int64_t{t} * H, got.output.begin() + int64_t{t + 1} * H);
        rs.expert_ids.insert(rs.expert_ids.end(), got.routing.expert_ids.begin() + t * k,
                             got.routing.expert_ids.begin() + (t + 1) * k);
        rs.weights.insert(rs.weights.end(), got.routing.weights.begin() + t * k,
                          got.routing.weights.begin() + (t + 1) * k);
      }
      const bool sampled = sample.size() < static_cast<size_t>(c.tokens);
      const MoeOutput want = reference_forward(layer, xs, rs.tokens, c.scheme,
                                               {.routing = &rs, .scales = sampled ? &got.scales : nullptr});
      if (!sampled) {
        // The intermediate's scales come from sums that differ by the accumulation: its order, and
        // where the backend accumulates in less than fp32, its precision.
        const double scale_tolerance = test::scale_tolerance(accumulation);
        EXPECT_FLOAT_EQ(got.scales.hidden, want.scales.hidden);
        EXPECT_NEAR(got.scales.intermediate, want.scales.intermediate, scale_tolerance * want.scales.intermediate);
        // Per-token schemes: each token's scale from the same inputs.
        EXPECT_EQ(got.scales.hidden_rows.size(), want.scales.hidden_rows.size());
        EXPECT_EQ(got.scales.intermediate_rows.size(), want.scales.intermediate_rows.size());
        if (got.scales.intermediate_rows.size() != want.scales.intermediate_rows.size()) return kUnusable;
        EXPECT_EQ(got.scales.hidden_rows, want.scales.hidden_rows);
        for (size_t p = 0; p < want.scales.intermediate_rows.size(); ++p) {
          const float w = want.scales.intermediate_rows[p];
          EXPECT_NEAR(got.scales.intermediate_rows[p], w, scale_tolerance * w) << "pair " << p;
        }
      }
      want_rows.insert(want_rows.end(), want.output.begin(), want.output.end());
    }
    const int allowed_differences = kGpu ? std::max(1, compared / 200) : 0;
    EXPECT_GE(same_sets, compared - allowed_differences) << "routing agrees on " << same_sets << " of " << compared
                                                         << " tokens without a near tie";
    EXPECT_GE(compared, static_cast<int>(batches) * c.tokens / 2) << "most tokens have no near tie";
    return test::relative_l2(got_rows, want_rows);
  };
  SCOPED_TRACE(c.shape.to_string() + " T=" + std::to_string(c.tokens) +
               (c.tokens > kFullReferenceTokens ? " (sampled)" : ""));
  test::expect_within_bound(test::error_bound(c.scheme, backend, c.shape, c.tokens), seed, pooled_error);
}

INSTANTIATE_TEST_SUITE_P(Registry, BackendConformance, ::testing::ValuesIn(registry_cases()), case_name);
GTEST_ALLOW_UNINSTANTIATED_PARAMETERIZED_TEST(BackendConformance);  // a registry without such backends

}  // namespace
}  // namespace mxmoe
