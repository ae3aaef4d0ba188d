#include <cmath>
#include <stdexcept>

#include "mxmoe/format.hpp"

namespace mxmoe {

namespace {
constexpr float kE2m1Magnitudes[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
}  // namespace

float e2m1_to_float(uint8_t code) {
  const float magnitude = kE2m1Magnitudes[code & 0x7];
  return (code & 0x8) ? -magnitude : magnitude;
}

uint8_t float_to_e2m1(float value) {
  if (std::isnan(value)) throw std::domain_error("float_to_e2m1: NaN has no E2M1 code");
  const float a = std::fabs(value);
  // Each comparison passes one midpoint of the grid. A tie goes to the even code (mantissa bit 0),
  // hence '>' on midpoints whose lower neighbour is even and '>=' where the upper one is.
  const uint8_t magnitude = static_cast<uint8_t>((a > 0.25f) + (a >= 0.75f) + (a > 1.25f) +
                                                 (a >= 1.75f) + (a > 2.5f) + (a >= 3.5f) + (a > 5.0f));
  return static_cast<uint8_t>(magnitude | (std::signbit(value) ? 0x8 : 0x0));
}

double e8m0_to_double(uint8_t code) {
  if (code == kE8m0Nan) return std::nan("");
  return std::ldexp(1.0, static_cast<int>(code) - 127);
}

float e8m0_to_float(uint8_t code) {
  if (code == kE8m0Nan) return std::nanf("");
  return std::ldexp(1.0f, static_cast<int>(code) - 127);
}

}  // namespace mxmoe
