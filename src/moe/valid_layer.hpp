// Behind the validation boundary. A MoeLayer is validated where it enters the library (checkpoint
// load, the MoeRunner constructor, the Python prepare, pad_layer, reference_forward, the CUDA
// benchmark's prepare); code that receives one from there trusts it and calls these, which skip
// MoeLayer::validate().
#pragma once

#include "mxmoe/moe.hpp"

namespace mxmoe::detail {

MoeOutput reference_forward_valid(const MoeLayer& layer, std::span<const float> hidden, int tokens, Scheme scheme,
                                  const ReferenceOptions& options);

}  // namespace mxmoe::detail
