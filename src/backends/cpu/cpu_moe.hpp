#pragma once

#include <memory>

#include "mxmoe/backend.hpp"

namespace mxmoe::cpu {

// The prepared CPU MoE layer (cpu_backend.cpp); built only with Highway.
std::unique_ptr<PreparedMoe> make_cpu_moe(std::shared_ptr<const MoeLayer> layer, const ExecutionPlan& plan);

}  // namespace mxmoe::cpu
