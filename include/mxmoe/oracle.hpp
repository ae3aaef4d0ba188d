// The oracle: for a device and a problem, choose the best backend, plan its padding, and say why
// every other backend was not chosen. A forced choice is honoured or refused, never swapped.
#pragma once

#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "mxmoe/backend.hpp"

namespace mxmoe {

enum class VerdictStatus { chosen, eligible, rejected };
std::string_view verdict_name(VerdictStatus status);

struct Verdict {
  std::string backend;
  VerdictStatus status = VerdictStatus::rejected;
  std::string reason;                 // why it was chosen, not chosen, or rejected
  std::optional<PaddingPlan> padding;  // for chosen and eligible backends
  int rank = 0;
};

// A forced backend and where the request came from ("--backend", "MXMOE_BACKEND").
struct ForcedBackend {
  std::string name;
  std::string source;
};

// The CLI value wins over the environment variable MXMOE_BACKEND; "auto" or empty means none.
std::optional<ForcedBackend> resolve_forced_backend(const std::string& cli_value);

struct Decision {
  DeviceSpec device;
  Problem problem;
  std::optional<ForcedBackend> forced;
  std::string chosen;   // empty only inside an OracleError
  PaddingPlan padding;  // the chosen backend's plan: the single source of truth for packing and kernels
  std::string kernels;  // the chosen backend's kernel path for this problem, when it names one
  std::vector<Verdict> verdicts;  // one per registered backend, in registry order

  const Verdict* verdict(const std::string& backend) const;
  std::string to_table() const;  // readable: backend, verdict, reason, then the padding plan
  std::string to_json() const;   // the same for scripts
};

// Raised when no backend can run, or a forced one cannot; carries every verdict for the report.
class OracleError : public std::runtime_error {
 public:
  OracleError(const std::string& message, Decision decision)
      : std::runtime_error(message), decision_(std::move(decision)) {}
  const Decision& decision() const { return decision_; }

 private:
  Decision decision_;
};

// Chooses among `registry` (the product registry unless given). Throws OracleError when the forced
// backend is unknown or cannot run here, or when no backend can.
Decision select_backend(const DeviceSpec& device, const Problem& problem,
                        const std::optional<ForcedBackend>& forced = std::nullopt,
                        const std::vector<BackendDeclaration>& registry = backend_registry());

// The verdict of one declaration on its own: "" when it can run, else the reason it cannot. Sets
// `plan` to its padding plan when it can.
std::string check_backend(const BackendDeclaration& backend, const DeviceSpec& device, const Problem& problem,
                          PaddingPlan& plan);

}  // namespace mxmoe
