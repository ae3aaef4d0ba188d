#include <cmath>
#include <stdexcept>

#include "mxmoe/format.hpp"

namespace mxmoe {

float e2m1_to_float(uint8_t code) { return codec::e2m1_value(code); }

uint8_t float_to_e2m1(float value) {
  if (std::isnan(value)) throw std::domain_error("float_to_e2m1: NaN has no E2M1 code");
  return codec::e2m1_code(value);
}

double e8m0_to_double(uint8_t code) {
  if (code == kE8m0Nan) return std::nan("");
  return codec::e8m0_value(code);  // every other code is exact in float
}

float e8m0_to_float(uint8_t code) {
  if (code == kE8m0Nan) return std::nanf("");
  return codec::e8m0_value(code);
}

}  // namespace mxmoe
