// Small helpers shared by the subcommands.
#pragma once

#include <stdexcept>
#include <string>

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

}  // namespace mxmoe::cli
