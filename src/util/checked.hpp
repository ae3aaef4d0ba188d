// Checked integer arithmetic for sizes that come from files, flags or configs: an overflow is an
// error naming what was being computed, never a wrapped or negative size.
#pragma once

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

namespace mxmoe::detail {

class SizeOverflow : public std::overflow_error {
 public:
  using std::overflow_error::overflow_error;
};

template <class T>
T checked_mul(T a, T b, const std::string& what) {
  T r;
  if (__builtin_mul_overflow(a, b, &r)) throw SizeOverflow(what + " overflows (" + std::to_string(a) + " x " + std::to_string(b) + ")");
  return r;
}

template <class T>
T checked_add(T a, T b, const std::string& what) {
  T r;
  if (__builtin_add_overflow(a, b, &r)) throw SizeOverflow(what + " overflows (" + std::to_string(a) + " + " + std::to_string(b) + ")");
  return r;
}

// The smallest multiple of `multiple` (> 0) that is >= value (>= 0).
template <class T>
T checked_round_up(T value, T multiple, const std::string& what) {
  if (value < 0 || multiple <= 0) throw std::invalid_argument(what + ": cannot round " + std::to_string(value) + " up to a multiple of " + std::to_string(multiple));
  const T remainder = value % multiple;
  return remainder == 0 ? value : checked_add<T>(value, multiple - remainder, what);
}

}  // namespace mxmoe::detail
