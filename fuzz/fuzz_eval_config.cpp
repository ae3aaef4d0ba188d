// libFuzzer harness: the eval-config parser on arbitrary text. EvalConfigError is the documented
// answer to bad input; anything else escaping is a finding.
#include "fuzz_input.hpp"
#include "mxmoe/eval.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mxmoe;
  const auto path = fuzz::write_file("config.yaml", data, size);
  try {
    (void)load_eval_config(path);
  } catch (const EvalConfigError&) {
  }
  return 0;
}
