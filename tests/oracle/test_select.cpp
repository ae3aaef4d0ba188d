#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <numeric>

#include "mxmoe/oracle.hpp"
#include "mxmoe/runner.hpp"
#include "mxmoe/synth.hpp"
#include "support.hpp"

namespace mxmoe {
namespace {

// Test-only declarations: they exercise the rules and never enter the product registry.
BackendDeclaration hopper_only_256() {
  BackendDeclaration b;
  b.name = "test-sm90a-align256";
  b.device_kind = DeviceKind::cuda;
  b.exact_sm = {90};
  b.schemes = {Scheme::w4a16, Scheme::w4a8};
  b.hidden_alignment = b.intermediate_alignment = 256;
  b.can_pad = false;
  b.rank = 100;
  return b;
}

BackendDeclaration generic_gpu_padding_128() {
  BackendDeclaration b;
  b.name = "test-gpu-pad128";
  b.device_kind = DeviceKind::cuda;
  b.min_sm = 80;
  b.schemes = {Scheme::w4a16, Scheme::w4a8, Scheme::w4a4};
  b.scheme_tensor_cores = true;
  b.hidden_alignment = 128;
  b.intermediate_alignment = 64;
  b.rank = 50;
  return b;
}

BackendDeclaration cpu_avx512_only() {
  BackendDeclaration b;
  b.name = "test-cpu-avx512";
  b.device_kind = DeviceKind::cpu;
  b.schemes = {Scheme::w4a16, Scheme::w4a8, Scheme::w4a4};
  b.rank = 30;
  b.extra_check = [](const DeviceSpec& d, const Problem&) -> std::string {
    return d.cpu.avx512 ? "" : "needs AVX-512";
  };
  return b;
}

BackendDeclaration unbuilt_gpu() {
  BackendDeclaration b = generic_gpu_padding_128();
  b.name = "test-unbuilt";
  b.rank = 200;
  b.built = false;
  b.not_built_reason = "compiled out";
  return b;
}

std::vector<BackendDeclaration> test_registry() {
  std::vector<BackendDeclaration> r = backend_registry();
  for (auto b : {hopper_only_256(), generic_gpu_padding_128(), cpu_avx512_only(), unbuilt_gpu()}) r.push_back(b);
  return r;
}

Problem problem(Scheme scheme, int hidden, int intermediate, int experts = 32, int top_k = 4) {
  return {scheme, experts, top_k, hidden, intermediate, 0, true};
}

const BackendDeclaration& find(const std::vector<BackendDeclaration>& r, const std::string& name) {
  return *std::find_if(r.begin(), r.end(), [&](const auto& b) { return b.name == name; });
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Whether a declaration admits a problem on a device, read from its data here rather than through
// the oracle's check_backend, so that the verdicts are checked against an independent reading.
// (Parsed devices state no memory size: the memory rule never applies to them.)
bool admits(const BackendDeclaration& b, const DeviceSpec& device, const Problem& p) {
  if (!b.runs_on_any_device) {
    if (b.device_kind != device.kind) return false;
    if (device.kind == DeviceKind::cuda) {
      const bool sm_ok = b.exact_sm.empty()
                             ? device.sm >= b.min_sm
                             : std::find(b.exact_sm.begin(), b.exact_sm.end(), device.sm) != b.exact_sm.end();
      if (!sm_ok) return false;
    }
  }
  if (std::find(b.schemes.begin(), b.schemes.end(), p.scheme) == b.schemes.end()) return false;
  if (b.scheme_tensor_cores && device.kind == DeviceKind::cuda && device.sm < scheme_traits(p.scheme).min_tensor_core_sm) {
    return false;
  }
  if (!b.built) return false;
  if (!b.can_pad && (p.hidden % std::lcm(32, b.hidden_alignment) || p.intermediate % std::lcm(32, b.intermediate_alignment))) {
    return false;
  }
  return !b.extra_check || b.extra_check(device, p).empty();
}

// For every device x scheme x shape: the chosen backend's own declaration accepts the device and
// the scheme, the plan meets its alignment, padded dims are >= the real ones and minimal, and the
// choice is the best-ranked eligible backend. Cells nothing can run must say so for every backend.
TEST(OracleMatrix, EveryChoiceIsValidAndEveryBackendHasAVerdict) {
  const auto registry = test_registry();
  const char* devices[] = {"cpu", "cpu:avx2", "cpu:avx512", "cpu:avx512bf16", "cpu:neon", "sm_80",
                           "sm_86", "sm_89", "sm_90", "sm_100", "sm_120"};
  const std::pair<int, int> shapes[] = {{4096, 2048}, {2880, 2880}, {96, 64}, {3072, 1536}, {100, 50}, {32, 32}};
  int cells = 0;
  for (const char* device_text : devices) {
    const DeviceSpec device = DeviceSpec::parse(device_text);
    for (Scheme scheme : kAllSchemes) {
      for (auto [hidden, intermediate] : shapes) {
        SCOPED_TRACE(std::string(device_text) + " " + std::string(scheme_name(scheme)) + " H=" + std::to_string(hidden) +
                     " I=" + std::to_string(intermediate));
        ++cells;
        const Problem p = problem(scheme, hidden, intermediate);
        Decision d;
        try {
          d = select_backend(device, p, std::nullopt, registry);
        } catch (const OracleError& e) {
          ASSERT_EQ(e.decision().verdicts.size(), registry.size());
          for (const auto& v : e.decision().verdicts) EXPECT_EQ(v.status, VerdictStatus::rejected) << v.backend;
          continue;
        }
        ASSERT_EQ(d.verdicts.size(), registry.size());
        const BackendDeclaration& chosen = find(registry, d.chosen);
        if (device.kind == DeviceKind::cuda) EXPECT_FALSE(chosen.runs_on_any_device) << "a GPU served by a host emulation";
        // Device rules, checked here from the declaration's data rather than through the oracle.
        if (!chosen.runs_on_any_device) {
          EXPECT_EQ(chosen.device_kind, device.kind);
          if (device.kind == DeviceKind::cuda) {
            if (!chosen.exact_sm.empty()) {
              EXPECT_NE(std::find(chosen.exact_sm.begin(), chosen.exact_sm.end(), device.sm), chosen.exact_sm.end());
            } else {
              EXPECT_GE(device.sm, chosen.min_sm);
            }
          }
        }
        EXPECT_NE(std::find(chosen.schemes.begin(), chosen.schemes.end(), scheme), chosen.schemes.end());
        if (chosen.scheme_tensor_cores && device.kind == DeviceKind::cuda) {
          EXPECT_GE(device.sm, scheme_traits(scheme).min_tensor_core_sm);
        }
        EXPECT_TRUE(chosen.built);
        // The plan: the chosen backend's verdict's, aligned, not smaller, minimal.
        const int ha = std::lcm(32, chosen.hidden_alignment), ia = std::lcm(32, chosen.intermediate_alignment);
        const auto verdict = std::find_if(d.verdicts.begin(), d.verdicts.end(),
                                          [&](const Verdict& v) { return v.backend == d.chosen; });
        ASSERT_NE(verdict, d.verdicts.end());
        EXPECT_EQ(verdict->status, VerdictStatus::chosen);
        EXPECT_EQ(verdict->padding, d.padding);
        EXPECT_EQ(d.padding.hidden, hidden);
        EXPECT_EQ(d.padding.intermediate, intermediate);
        EXPECT_EQ(d.padding.padded_hidden % ha, 0);
        EXPECT_EQ(d.padding.padded_intermediate % ia, 0);
        EXPECT_GE(d.padding.padded_hidden, hidden);
        EXPECT_GE(d.padding.padded_intermediate, intermediate);
        EXPECT_LT(d.padding.padded_hidden - ha, hidden);
        EXPECT_LT(d.padding.padded_intermediate - ia, intermediate);
        if (!chosen.can_pad) EXPECT_TRUE(d.padding.is_identity());
        // Best rank among the eligible, and verdicts agree with the declarations read independently.
        for (size_t i = 0; i < registry.size(); ++i) {
          const Verdict& v = d.verdicts[i];
          EXPECT_EQ(v.backend, registry[i].name);
          // A host emulation is withheld from GPUs unless forced.
          const bool withheld = registry[i].runs_on_any_device && device.kind == DeviceKind::cuda;
          const bool can_run = admits(registry[i], device, p) && !withheld;
          EXPECT_EQ(v.status != VerdictStatus::rejected, can_run) << v.backend;
          if (can_run) EXPECT_LE(registry[i].rank, chosen.rank) << v.backend;
          EXPECT_FALSE(v.reason.empty()) << v.backend;
          EXPECT_EQ(v.status == VerdictStatus::chosen, v.backend == d.chosen);
        }
      }
    }
  }
  EXPECT_EQ(cells, 11 * 5 * 6);
}

// vLLM once chose an architecture-specific kernel on a GPU without that architecture and crashed.
TEST(OracleRegression, ArchSpecificBackendIsNeverChosenOnAnotherArchitecture) {
  const auto registry = test_registry();
  const Problem aligned = problem(Scheme::w4a16, 4096, 2048);
  EXPECT_EQ(select_backend(DeviceSpec::parse("sm_90"), aligned, std::nullopt, registry).chosen, "test-sm90a-align256");
  for (const char* other : {"sm_80", "sm_89", "sm_100", "sm_120"}) {
    const Decision d = select_backend(DeviceSpec::parse(other), aligned, std::nullopt, registry);
    EXPECT_NE(d.chosen, "test-sm90a-align256") << other;
    const Verdict* v = d.verdict("test-sm90a-align256");
    ASSERT_NE(v, nullptr);
    EXPECT_EQ(v->status, VerdictStatus::rejected);
    EXPECT_TRUE(contains(v->reason, "sm_90a")) << v->reason;
    EXPECT_TRUE(contains(v->reason, other)) << v->reason;
    EXPECT_THROW(select_backend(DeviceSpec::parse(other), aligned, ForcedBackend{"test-sm90a-align256", "--backend"}, registry),
                 OracleError);
  }
}

// vLLM once dropped the alignment check, so gpt-oss's 2880 reached a kernel needing multiples of 256.
TEST(OracleRegression, UnalignedDimsGoToAFallbackInsteadOfAReshapeError) {
  const auto registry = test_registry();
  const Decision d = select_backend(DeviceSpec::parse("sm_90"), problem(Scheme::w4a16, 2880, 2880), std::nullopt, registry);
  EXPECT_EQ(d.chosen, "test-gpu-pad128");
  const Verdict* v = d.verdict("test-sm90a-align256");
  EXPECT_EQ(v->status, VerdictStatus::rejected);
  EXPECT_TRUE(contains(v->reason, "hidden 2880 is not a multiple of 256")) << v->reason;
  EXPECT_TRUE(contains(v->reason, "cannot pad")) << v->reason;
  // The fallback pads: 2880 is a multiple of 64 but not of 128.
  EXPECT_EQ(d.padding, (PaddingPlan{2880, 2880, 2944, 2880}));
}

// vLLM once lost the hidden/intermediate padding between weight creation and the kernel call. Here
// the decision's plan reaches the backend's prepare with the real layer (no padded copy is made on
// the way: the backend pads as it packs), and the backend checks the layer against the plan.
TEST(OracleRegression, PaddingPlanReachesTheBackendsPrepareWithTheRealLayer) {
  struct Seen {
    MoeShape shape;
    PaddingPlan plan;
  };
  static Seen seen;
  BackendDeclaration probe = find(backend_registry(), "reference");
  probe.name = "test-cpu-pad256";
  probe.runs_on_any_device = false;
  probe.device_kind = DeviceKind::cpu;
  probe.hidden_alignment = probe.intermediate_alignment = 256;
  probe.rank = 1000;
  const auto reference_prepare = probe.prepare;
  probe.prepare = [reference_prepare](std::shared_ptr<const MoeLayer> layer, const ExecutionPlan& plan) {
    seen = {layer->shape, plan.padding};
    return reference_prepare(std::move(layer), plan);
  };
  std::vector<BackendDeclaration> registry = backend_registry();
  registry.push_back(probe);

  const uint64_t seed = test::fresh_seed();
  SCOPED_TRACE("seed " + std::to_string(seed));
  const MoeShape shape{2880, 2880, 4, 2};
  const MoeLayer layer = random_layer(shape, seed);
  MoeRunner runner(layer, Scheme::w4a16, DeviceSpec::detect_cpu(), {.registry = &registry});
  EXPECT_EQ(runner.decision().chosen, "test-cpu-pad256");
  EXPECT_EQ(seen.plan, (PaddingPlan{2880, 2880, 3072, 3072}));
  EXPECT_EQ(seen.shape.hidden, 2880);
  EXPECT_EQ(seen.shape.intermediate, 2880);

  const auto x = random_hidden(2, shape.hidden, seed + 1);
  const MoeOutput padded_run = runner.forward(x, 2);
  const MoeOutput plain = reference_forward(layer, x, 2, Scheme::w4a16);
  ASSERT_EQ(padded_run.output.size(), plain.output.size());
  EXPECT_EQ(padded_run.output, plain.output);

  // A layer the plan is not for (here one padded already) is refused by the backend, not reshaped.
  ExecutionPlan plan{"test-cpu-pad256", Scheme::w4a16, DeviceSpec::detect_cpu(), seen.plan, 0};
  EXPECT_NO_THROW(probe.prepare(std::make_shared<const MoeLayer>(layer), plan));
  EXPECT_THROW(probe.prepare(std::make_shared<const MoeLayer>(pad_layer(layer, seen.plan)), plan), std::logic_error);
}

TEST(OracleForced, AnEligibleForcedBackendIsHonoured) {
  const auto registry = test_registry();
  const Decision d = select_backend(DeviceSpec::parse("sm_90"), problem(Scheme::w4a16, 2880, 2880),
                                    ForcedBackend{"reference", "--backend"}, registry);
  EXPECT_EQ(d.chosen, "reference");
  EXPECT_EQ(d.verdict("reference")->reason, "forced by --backend");
  EXPECT_EQ(d.verdict("test-gpu-pad128")->status, VerdictStatus::eligible);
  EXPECT_TRUE(contains(d.verdict("test-gpu-pad128")->reason, "reference was forced"));
}

TEST(OracleForced, AnIneligibleForcedBackendIsRefusedWithTheDocumentedMessage) {
  const auto registry = test_registry();
  try {
    select_backend(DeviceSpec::parse("sm_80"), problem(Scheme::w4a8, 2880, 2880),
                   ForcedBackend{"test-gpu-pad128", "MXMOE_BACKEND"}, registry);
    FAIL() << "forced backend accepted";
  } catch (const OracleError& e) {
    const std::string m = e.what();
    EXPECT_TRUE(contains(m, "backend 'test-gpu-pad128' (forced by MXMOE_BACKEND) cannot run on sm_80")) << m;
    EXPECT_TRUE(contains(m, "scheme w4a8 needs sm_89 or newer")) << m;
    EXPECT_TRUE(contains(m, "Backends that would work: reference.")) << m;
    EXPECT_TRUE(e.decision().chosen.empty());
  }
}

TEST(OracleForced, AnUnknownNameListsTheKnownBackends) {
  try {
    select_backend(DeviceSpec::parse("cpu"), problem(Scheme::w4a16, 64, 64), ForcedBackend{"nonexistent", "--backend"});
    FAIL();
  } catch (const OracleError& e) {
    std::string known;
    for (const auto& b : backend_registry()) known += (known.empty() ? "" : ", ") + b.name;
    EXPECT_TRUE(contains(e.what(), "unknown backend 'nonexistent'")) << e.what();
    EXPECT_TRUE(contains(e.what(), "known backends: " + known)) << e.what();
  }
}

TEST(OracleForced, TheCommandLineWinsOverTheEnvironment) {
  ::setenv("MXMOE_BACKEND", "from-env", 1);
  EXPECT_EQ(resolve_forced_backend("auto")->name, "from-env");
  EXPECT_EQ(resolve_forced_backend("auto")->source, "MXMOE_BACKEND");
  EXPECT_EQ(resolve_forced_backend("cli")->name, "cli");
  EXPECT_EQ(resolve_forced_backend("cli")->source, "--backend");
  ::setenv("MXMOE_BACKEND", "auto", 1);
  EXPECT_FALSE(resolve_forced_backend("").has_value());
  ::unsetenv("MXMOE_BACKEND");
  EXPECT_FALSE(resolve_forced_backend("auto").has_value());
}

TEST(Oracle, UnbuiltBackendsAreRejectedWithTheirReason) {
  const auto registry = test_registry();
  const Decision d = select_backend(DeviceSpec::parse("sm_90"), problem(Scheme::w4a16, 4096, 4096), std::nullopt, registry);
  EXPECT_EQ(d.verdict("test-unbuilt")->status, VerdictStatus::rejected);
  EXPECT_EQ(d.verdict("test-unbuilt")->reason, "not built into this binary: compiled out");
}

TEST(Oracle, NoFittingBackendIsAClearErrorNotACrash) {
  std::vector<BackendDeclaration> registry = {generic_gpu_padding_128()};
  try {
    select_backend(DeviceSpec::parse("cpu"), problem(Scheme::w4a16, 64, 64), std::nullopt, registry);
    FAIL();
  } catch (const OracleError& e) {
    EXPECT_TRUE(contains(e.what(), "no backend can run")) << e.what();
    EXPECT_TRUE(contains(e.what(), "test-gpu-pad128: runs on CUDA GPUs only")) << e.what();
  }
  EXPECT_THROW(select_backend(DeviceSpec::parse("cpu"), problem(Scheme::w4a16, 64, 64, 4, 5)), std::invalid_argument);
}

TEST(Oracle, DeviceMemoryLimitsAreChecked) {
  DeviceSpec small = DeviceSpec::parse("sm_90");
  small.memory_bytes = 1ull << 30;  // 1 GiB: a gpt-oss-120b layer (about 1.6 GB) does not fit
  const auto registry = test_registry();
  try {
    select_backend(small, problem(Scheme::w4a16, 2880, 2880, 128, 4), std::nullopt, registry);
    FAIL() << "a layer larger than the GPU's memory was planned for it";
  } catch (const OracleError& e) {
    const Verdict* v = e.decision().verdict("test-gpu-pad128");
    EXPECT_TRUE(contains(v->reason, "of device memory")) << v->reason;
    EXPECT_TRUE(contains(e.what(), "--backend reference")) << e.what();
  }
}

TEST(Oracle, ProductRegistryHoldsOnlyRealBackends) {
  for (const auto& b : backend_registry()) {
    EXPECT_FALSE(b.name.starts_with("test-")) << b.name;
    EXPECT_TRUE(b.prepare || !b.built) << b.name << " is built but cannot prepare a layer";
  }
  EXPECT_EQ(backend_registry().front().name, "reference");
}

}  // namespace
}  // namespace mxmoe
