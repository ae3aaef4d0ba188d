#include <algorithm>
#include <cstdlib>
#include <numeric>
#include <string>

#include "mxmoe/format.hpp"
#include "mxmoe/oracle.hpp"

namespace mxmoe {

namespace {

std::string kind_name(DeviceKind kind) { return kind == DeviceKind::cuda ? "CUDA GPUs" : "CPUs"; }

std::string join(const std::vector<std::string>& items, const char* separator = ", ") {
  std::string s;
  for (const auto& item : items) s += (s.empty() ? "" : separator) + item;
  return s;
}

// Bytes the padded layer and a batch of activations take on the device.
uint64_t device_bytes_needed(const Problem& p, const PaddingPlan& plan) {
  const uint64_t E = p.experts, H = plan.padded_hidden, I = plan.padded_intermediate;
  const uint64_t mxfp4_bytes_per_value_x32 = 17;  // 16 packed bytes + 1 scale per 32 values
  const uint64_t weights = E * (2 * I * H + H * I) * mxfp4_bytes_per_value_x32 / 32 + 4 * E * (2 * I + 2 * H);
  const uint64_t T = std::max(p.tokens, 1);
  const uint64_t activations = 4 * T * (2 * H + static_cast<uint64_t>(p.top_k) * (3 * I + H));
  return weights + activations;
}

std::string gib(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f GiB", bytes / double(1ull << 30));
  return buf;
}

}  // namespace

std::string_view verdict_name(VerdictStatus status) {
  switch (status) {
    case VerdictStatus::chosen: return "chosen";
    case VerdictStatus::eligible: return "eligible";
    case VerdictStatus::rejected: return "rejected";
  }
  return "?";
}

std::optional<ForcedBackend> resolve_forced_backend(const std::string& cli_value) {
  if (!cli_value.empty() && cli_value != "auto") return ForcedBackend{cli_value, "--backend"};
  const char* env = std::getenv("MXMOE_BACKEND");
  if (env && *env && std::string(env) != "auto") return ForcedBackend{env, "MXMOE_BACKEND"};
  return std::nullopt;
}

const Verdict* Decision::verdict(const std::string& backend) const {
  for (const auto& v : verdicts) {
    if (v.backend == backend) return &v;
  }
  return nullptr;
}

std::string check_backend(const BackendDeclaration& b, const DeviceSpec& device, const Problem& problem,
                          PaddingPlan& plan) {
  if (!b.runs_on_any_device) {
    if (b.device_kind != device.kind) {
      return "runs on " + kind_name(b.device_kind) + " only; " + device.id() + " is " +
             (device.kind == DeviceKind::cuda ? "a CUDA GPU" : "a CPU");
    }
    if (device.kind == DeviceKind::cuda) {
      if (!b.exact_sm.empty()) {
        if (std::find(b.exact_sm.begin(), b.exact_sm.end(), device.sm) == b.exact_sm.end()) {
          std::vector<std::string> targets;
          for (int sm : b.exact_sm) targets.push_back(sm_name(sm) + "a");
          return "contains architecture-specific code for " + join(targets) +
                 " only, which runs on exactly that compute capability; device is " + device.id();
        }
      } else if (device.sm < b.min_sm) {
        return "needs " + sm_name(b.min_sm) + " or newer; device is " + device.id();
      }
    }
  }
  if (std::find(b.schemes.begin(), b.schemes.end(), problem.scheme) == b.schemes.end()) {
    std::vector<std::string> names;
    for (Scheme s : b.schemes) names.emplace_back(scheme_name(s));
    return "does not support scheme " + std::string(scheme_name(problem.scheme)) + " (supports " + join(names) + ")";
  }
  if (const int min_sm = scheme_traits(problem.scheme).min_tensor_core_sm;
      b.scheme_tensor_cores && device.kind == DeviceKind::cuda && device.sm < min_sm) {
    return "scheme " + std::string(scheme_name(problem.scheme)) + " needs " + sm_name(min_sm) +
           " or newer here (tensor cores for its activations); device is " + device.id();
  }
  if (!b.built) return "not built into this binary: " + b.not_built_reason;

  const int hidden_alignment =
      std::lcm(std::lcm(kMxBlock, b.hidden_alignment), std::max(problem.pad_hidden_to, 1));
  const int intermediate_alignment =
      std::lcm(std::lcm(kMxBlock, b.intermediate_alignment), std::max(problem.pad_intermediate_to, 1));
  if (!b.can_pad) {
    std::vector<std::string> unaligned;
    if (problem.hidden % hidden_alignment) {
      unaligned.push_back("hidden " + std::to_string(problem.hidden) + " is not a multiple of " +
                          std::to_string(hidden_alignment));
    }
    if (problem.intermediate % intermediate_alignment) {
      unaligned.push_back("intermediate " + std::to_string(problem.intermediate) + " is not a multiple of " +
                          std::to_string(intermediate_alignment));
    }
    if (!unaligned.empty()) return join(unaligned, " and ") + ", and this backend cannot pad";
  }
  plan = PaddingPlan::for_alignment(problem.hidden, problem.intermediate, hidden_alignment, intermediate_alignment);

  if (b.extra_check) {
    std::string reason = b.extra_check(device, problem);
    if (!reason.empty()) return reason;
  }
  if (device.kind == DeviceKind::cuda && device.memory_bytes > 0 && !b.runs_on_any_device) {
    const uint64_t needed = device_bytes_needed(problem, plan);
    if (needed > device.memory_bytes / 10 * 9) {
      return "needs about " + gib(needed) + " of device memory; device has " + gib(device.memory_bytes);
    }
  }
  return "";
}

Decision select_backend(const DeviceSpec& device, const Problem& problem, const std::optional<ForcedBackend>& forced,
                        const std::vector<BackendDeclaration>& registry) {
  problem.validate();
  Decision d;
  d.device = device;
  d.problem = problem;
  d.forced = forced;
  std::vector<std::string> known, eligible;
  for (const auto& b : registry) {
    PaddingPlan plan;
    Verdict v{b.name, VerdictStatus::rejected, check_backend(b, device, problem, plan), std::nullopt, b.rank};
    if (v.reason.empty()) {
      v.status = VerdictStatus::eligible;
      v.reason = "eligible";
      v.padding = plan;
      eligible.push_back(b.name);
    }
    known.push_back(b.name);
    d.verdicts.push_back(std::move(v));
  }
  const std::string where = device.id() + " for " + problem.to_string();
  // A GPU is never served by a host emulation (the float64 reference, a thousand times slower)
  // unless that is what was asked for.
  bool emulation_withheld = false;
  if (!forced && device.kind == DeviceKind::cuda) {
    for (size_t i = 0; i < registry.size(); ++i) {
      Verdict& v = d.verdicts[i];
      if (registry[i].runs_on_any_device && v.status == VerdictStatus::eligible) {
        v.status = VerdictStatus::rejected;
        v.reason = "a host emulation, not chosen for a GPU unless forced (--backend " + v.backend + ")";
        v.padding.reset();
        eligible.erase(std::find(eligible.begin(), eligible.end(), v.backend));
        emulation_withheld = true;
      }
    }
  }

  Verdict* chosen = nullptr;
  if (forced) {
    auto it = std::find_if(d.verdicts.begin(), d.verdicts.end(), [&](const Verdict& v) { return v.backend == forced->name; });
    if (it == d.verdicts.end()) {
      throw OracleError("unknown backend '" + forced->name + "' (forced by " + forced->source + "); known backends: " +
                            join(known),
                        d);
    }
    if (it->status == VerdictStatus::rejected) {
      throw OracleError("backend '" + forced->name + "' (forced by " + forced->source + ") cannot run on " + where +
                            ": " + it->reason + ". " +
                            (eligible.empty() ? "No backend can run this here."
                                              : "Backends that would work: " + join(eligible) + "."),
                        d);
    }
    chosen = &*it;
    chosen->reason = "forced by " + forced->source;
  } else {
    for (auto& v : d.verdicts) {
      if (v.status == VerdictStatus::eligible && (!chosen || v.rank > chosen->rank)) chosen = &v;
    }
    if (!chosen) {
      std::vector<std::string> reasons;
      for (const auto& v : d.verdicts) reasons.push_back("  " + v.backend + ": " + v.reason);
      std::string message = "no backend can run " + where + ":\n" + join(reasons, "\n");
      if (emulation_withheld) {
        message += "\nThe float64 host reference can emulate this GPU's result, about a thousand times slower: ask "
                   "for it with --backend reference (or MXMOE_BACKEND=reference).";
      }
      throw OracleError(message, d);
    }
    chosen->reason = "highest-ranked eligible backend (rank " + std::to_string(chosen->rank) + ")";
  }
  chosen->status = VerdictStatus::chosen;
  if (!chosen->padding->is_identity()) chosen->reason += "; pads " + chosen->padding->to_string();
  for (auto& v : d.verdicts) {
    if (v.status != VerdictStatus::eligible) continue;
    v.reason = forced ? "eligible, but " + chosen->backend + " was forced"
                      : "eligible, rank " + std::to_string(v.rank) + " below " + chosen->backend + "'s " +
                            std::to_string(chosen->rank);
  }
  d.chosen = chosen->backend;
  d.padding = *chosen->padding;
  for (const auto& b : registry) {
    if (b.name == d.chosen && b.kernel_path) {
      Problem padded = problem;
      padded.hidden = d.padding.padded_hidden;
      padded.intermediate = d.padding.padded_intermediate;
      d.kernels = b.kernel_path(padded);
    }
  }
  return d;
}

}  // namespace mxmoe
