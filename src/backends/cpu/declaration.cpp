#include "mxmoe/backend.hpp"

#ifdef MXMOE_WITH_HWY
#include "backends/cpu/cpu_moe.hpp"
#include "backends/cpu/kernels.hpp"
#endif

namespace mxmoe {

BackendDeclaration cpu_backend() {
  BackendDeclaration b;
  b.name = "cpu";
  b.summary = "multi-threaded SIMD CPU backend: experts grouped, MXFP4 decoded in registers";
  b.device_kind = DeviceKind::cpu;
  b.schemes = {Scheme::w4a16, Scheme::w4a8, Scheme::w4a8_token, Scheme::w4a4};
  // Strips of 32 rows and 32-wide blocks: every MXFP4 shape runs unpadded.
  b.hidden_alignment = 32;
  b.intermediate_alignment = 32;
  b.rank = 10;
#ifdef MXMOE_WITH_HWY
  b.summary += std::string(" (kernels for ") + cpu::kernel_target() + " on this machine)";
  b.prepare = cpu::make_cpu_moe;
#else
  b.built = false;
  b.not_built_reason = "Highway (Debian package libhwy-dev) was not found when mxmoe was built";
#endif
  return b;
}

}  // namespace mxmoe
