// The README's library example, built against the installed mxmoe in CI (tests/downstream).
//   library [checkpoint folder]   runs layer 0 of a gpt-oss checkpoint, or a small random layer.
#include <cstdio>
#include <exception>
#include <utility>
#include <vector>

#include <mxmoe/gptoss.hpp>
#include <mxmoe/runner.hpp>
#include <mxmoe/synth.hpp>

int main(int argc, char** argv) try {
  mxmoe::MoeLayer layer = argc > 1 ? mxmoe::GptOssCheckpoint::open(argv[1]).load_layer(0)
                                   : mxmoe::random_layer({.hidden = 256, .intermediate = 256, .experts = 8, .top_k = 2}, 1);
  // The oracle picks the backend for this machine and pads the layer if the backend needs it.
  mxmoe::MoeRunner runner(std::move(layer), mxmoe::Scheme::w4a16, mxmoe::DeviceSpec::detect());
  std::printf("%s", runner.decision().to_table().c_str());

  const int tokens = 4, hidden = runner.decision().padding.hidden;
  const std::vector<float> x = mxmoe::random_hidden(tokens, hidden, 7);
  const mxmoe::MoeOutput out = runner.forward(x, tokens);  // out.output [T, H], out.routing
  std::printf("token 0: experts %d and %d, output[0] = %.6f\n", out.routing.expert_ids[0], out.routing.expert_ids[1],
              out.output[0]);
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "library example: %s\n", e.what());
  return 1;
}
