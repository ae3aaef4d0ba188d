// The one table of backends. Adding a backend: its own folder under src/backends/ defining
// `BackendDeclaration <name>_backend()`, and one line in MXMOE_BACKENDS below.
#include "mxmoe/backend.hpp"

#define MXMOE_BACKENDS(X) \
  X(reference_backend)    \
  X(cpu_backend)          \
  X(cuda_backend)         \
  X(cuda_sm90_backend)

namespace mxmoe {

#define MXMOE_DECLARE_BACKEND(fn) BackendDeclaration fn();
MXMOE_BACKENDS(MXMOE_DECLARE_BACKEND)
#undef MXMOE_DECLARE_BACKEND

const std::vector<BackendDeclaration>& backend_registry() {
#define MXMOE_CALL_BACKEND(fn) fn(),
  static const std::vector<BackendDeclaration> registry = {MXMOE_BACKENDS(MXMOE_CALL_BACKEND)};
#undef MXMOE_CALL_BACKEND
  return registry;
}

}  // namespace mxmoe
