// libFuzzer harness: the safetensors reader on arbitrary bytes. A FormatError is the documented
// answer to bad input; anything else escaping, a crash, a hang or a sanitizer report is a finding.
#include "fuzz_input.hpp"
#include "mxmoe/safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mxmoe;
  const auto path = fuzz::write_file("input.safetensors", data, size);
  try {
    const SafetensorsFile file = SafetensorsFile::open(path);
    for (const TensorInfo& t : file.tensors()) {
      (void)t.numel();
      (void)t.shape_string();
      const auto bytes = file.bytes(t);
      if ((t.dtype == DType::F32 || t.dtype == DType::BF16 || t.dtype == DType::F16) && bytes.size() <= (1u << 20)) {
        (void)to_floats(t.dtype, bytes);
      }
    }
  } catch (const FormatError&) {
  }
  return 0;
}
