#include <cmath>
#include <stdexcept>
#include <string>

#include "mxmoe/format.hpp"

namespace mxmoe {

uint8_t quantize_mxfp4_block(const float* values, uint8_t* packed) {
  float amax = 0.0f;
  for (int i = 0; i < kMxBlock; ++i) {
    if (!std::isfinite(values[i])) {
      throw std::domain_error("quantize_mxfp4: element " + std::to_string(i) + " of the block is " +
                              (std::isnan(values[i]) ? "NaN" : "Inf") +
                              "; MXFP4 holds finite values only");
    }
    amax = std::fmax(amax, std::fabs(values[i]));
  }
  const int shared = codec::mx_shared_exponent(amax);
  // floor(log2(amax)) <= 127 for a float, so shared <= 125 and 2^-shared is a normal float: the
  // scaling below is exact.
  const float inverse_scale = codec::pow2(-shared);
  for (int i = 0; i < kMxBlockBytes; ++i) {
    const uint8_t lo = codec::e2m1_code(values[2 * i] * inverse_scale);
    const uint8_t hi = codec::e2m1_code(values[2 * i + 1] * inverse_scale);
    packed[i] = static_cast<uint8_t>(lo | (hi << 4));
  }
  return static_cast<uint8_t>(shared + 127);
}

void quantize_mxfp4(std::span<const float> values, std::span<uint8_t> packed,
                    std::span<uint8_t> scales) {
  if (values.size() % kMxBlock != 0) {
    throw std::invalid_argument("quantize_mxfp4: " + std::to_string(values.size()) +
                                " values is not a multiple of the block size 32");
  }
  const size_t blocks = values.size() / kMxBlock;
  if (packed.size() != blocks * kMxBlockBytes || scales.size() != blocks) {
    throw std::invalid_argument("quantize_mxfp4: output spans do not match " +
                                std::to_string(blocks) + " blocks");
  }
  for (size_t b = 0; b < blocks; ++b) {
    try {
      scales[b] = quantize_mxfp4_block(values.data() + b * kMxBlock, packed.data() + b * kMxBlockBytes);
    } catch (const std::domain_error& e) {
      throw std::domain_error(std::string(e.what()) + " (block " + std::to_string(b) + ")");
    }
  }
}

void dequantize_mxfp4(std::span<const uint8_t> packed, std::span<const uint8_t> scales,
                      std::span<float> values) {
  const size_t blocks = scales.size();
  if (packed.size() != blocks * kMxBlockBytes || values.size() != blocks * kMxBlock) {
    throw std::invalid_argument("dequantize_mxfp4: " + std::to_string(blocks) + " scales need " +
                                std::to_string(blocks * kMxBlockBytes) + " packed bytes and " +
                                std::to_string(blocks * kMxBlock) + " outputs");
  }
  for (size_t b = 0; b < blocks; ++b) {
    if (scales[b] == kE8m0Nan) {
      throw std::domain_error("dequantize_mxfp4: block " + std::to_string(b) + " has the NaN scale code 255");
    }
    const float scale = e8m0_to_float(scales[b]);
    const uint8_t* block = packed.data() + b * kMxBlockBytes;
    for (int i = 0; i < kMxBlock; ++i) {
      values[b * kMxBlock + i] = e2m1_to_float(mxfp4_code(block, i)) * scale;
    }
  }
}

}  // namespace mxmoe
