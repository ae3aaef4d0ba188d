// Small helpers shared by the subcommands.
#pragma once

#include <CLI/CLI.hpp>

#include <charconv>
#include <climits>
#include <stdexcept>
#include <string>

#include "mxmoe/backend.hpp"
#include "mxmoe/device.hpp"
#include "mxmoe/oracle.hpp"
#include "mxmoe/scheme.hpp"
#include "mxmoe/synth.hpp"

namespace mxmoe::cli {

inline Scheme scheme_or_throw(const std::string& name) {
  const auto scheme = parse_scheme(name);
  if (!scheme) throw std::invalid_argument("unknown scheme '" + name + "'; known: " + scheme_names());
  return *scheme;
}

inline ModelPreset preset_or_throw(const std::string& name) {
  const auto preset = find_preset(name);
  if (!preset) throw std::invalid_argument("unknown preset '" + name + "'; known: " + preset_names());
  return *preset;
}

// The device a command runs on: --device as given, except that "auto" with a CPU backend forced (by
// --backend or MXMOE_BACKEND) is this machine's CPU rather than its first GPU.
inline DeviceSpec device_for_run(const std::string& device, const std::string& backend) {
  if (device == "auto") {
    if (const auto forced = resolve_forced_backend(backend)) {
      for (const auto& b : backend_registry()) {
        if (b.name == forced->name && !b.runs_on_any_device && b.device_kind == DeviceKind::cpu) {
          return DeviceSpec::detect_cpu();
        }
      }
    }
  }
  return DeviceSpec::for_running(device);
}

// A whole number in [min, max], refused with a message naming the problem (CLI11's own number
// checks print their range with DBL_MAX written out in full).
inline CLI::Validator whole_number(long long min, long long max = INT_MAX) {
  return CLI::Validator(
      [min, max](std::string& text) -> std::string {
        long long value = 0;
        const char* end = text.data() + text.size();
        const auto [stop, error] = std::from_chars(text.data(), end, value);
        if (error == std::errc::result_out_of_range) return "'" + text + "' is too large";
        if (error != std::errc() || stop != end) return "expected a whole number, got '" + text + "'";
        if (value < min) return "must be at least " + std::to_string(min) + ", got " + text;
        if (value > max) return "must be at most " + std::to_string(max) + ", got " + text;
        return "";
      },
      min > 0 ? "POSITIVE" : "NON-NEGATIVE");
}
inline CLI::Validator positive_number() { return whole_number(1); }
inline CLI::Validator non_negative_number() { return whole_number(0); }

}  // namespace mxmoe::cli
