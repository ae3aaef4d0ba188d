// libFuzzer harness: a gpt-oss checkpoint folder (config.json + model.safetensors) through the
// loader and, when it loads, a tiny forward on the float64 reference. Input: 4-byte little-endian
// length of config.json, config.json, then model.safetensors (fuzz/make_seeds.py). The documented
// errors (FormatError, invalid arguments, refused non-finite outputs, oracle refusals) are answers;
// anything else is a finding.
#include "fuzz_input.hpp"
#include "mxmoe/gptoss.hpp"
#include "mxmoe/runner.hpp"
#include "mxmoe/synth.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace mxmoe;
  if (size < 4) return 0;
  const uint32_t config_size = data[0] | (data[1] << 8) | (data[2] << 16) | (static_cast<uint32_t>(data[3]) << 24);
  if (config_size > size - 4) return 0;
  fuzz::write_file("config.json", data + 4, config_size);
  fuzz::write_file("model.safetensors", data + 4 + config_size, size - 4 - config_size);
  try {
    const GptOssCheckpoint checkpoint = GptOssCheckpoint::open(fuzz::scratch_folder());
    const MoeShape& shape = checkpoint.config().shape;
    // Keep the forward tiny (the reference is float64 and single-purpose, not fast).
    if (int64_t{shape.hidden} * shape.intermediate * shape.experts > (1 << 16)) return 0;
    auto layer = std::make_shared<const MoeLayer>(checkpoint.load_layer(0));
    MoeRunner runner(layer, Scheme::w4a16, DeviceSpec::detect_cpu(), {.backend = "reference", .threads = 1});
    const auto x = random_hidden(2, shape.hidden, 1);
    (void)runner.forward(x, 2);
  } catch (const FormatError&) {
  } catch (const std::invalid_argument&) {
  } catch (const std::domain_error&) {
  } catch (const OracleError&) {
  }
  return 0;
}
