// The limits mxmoe enforces on untrusted input (docs/SECURITY.md): every size read from a file, a
// config or a flag is checked against these before anything is allocated.
#pragma once

#include <cstdint>

namespace mxmoe::limits {

constexpr int64_t kMaxDim = 1 << 16;        // hidden_size, intermediate_size
constexpr int64_t kMaxExperts = 4096;       // experts per layer (and top-k)
constexpr int64_t kMaxLayers = 1024;        // num_hidden_layers, synth --layers
constexpr int64_t kMaxTokens = 1 << 24;     // tokens in one batch
constexpr int kMaxJsonDepth = 64;           // nesting of any JSON mxmoe reads
constexpr uint64_t kMaxTextFileBytes = 64ull << 20;  // config.json, index files, eval configs
constexpr uint64_t kMaxHeaderBytes = 100'000'000;    // a safetensors header (as safetensors itself)

}  // namespace mxmoe::limits
