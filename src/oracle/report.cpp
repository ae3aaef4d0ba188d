#include <algorithm>
#include <nlohmann/json.hpp>
#include <string>

#include "mxmoe/oracle.hpp"

namespace mxmoe {

namespace {

nlohmann::ordered_json padding_json(const PaddingPlan& p) {
  return {{"hidden", p.hidden},
          {"intermediate", p.intermediate},
          {"padded_hidden", p.padded_hidden},
          {"padded_intermediate", p.padded_intermediate}};
}

std::string pad_right(std::string s, size_t width) {
  if (s.size() < width) s.append(width - s.size(), ' ');
  return s;
}

}  // namespace

std::string Decision::to_json() const {
  nlohmann::ordered_json device_json = {{"id", device.id()},
                                {"kind", device.kind == DeviceKind::cuda ? "cuda" : "cpu"},
                                {"detected", device.detected},
                                {"name", device.name}};
  if (device.kind == DeviceKind::cuda) {
    device_json["sm"] = device.sm;
    device_json["sm_count"] = device.sm_count;
    device_json["memory_bytes"] = device.memory_bytes;
  } else {
    device_json["features"] = device.cpu.to_string();
    device_json["cores"] = device.cores;
  }
  nlohmann::ordered_json j = {
      {"device", device_json},
      {"problem",
       {{"scheme", scheme_name(problem.scheme)},
        {"experts", problem.experts},
        {"top_k", problem.top_k},
        {"hidden", problem.hidden},
        {"intermediate", problem.intermediate},
        {"tokens", problem.tokens},
        {"bias", problem.bias}}},
      {"forced", forced ? nlohmann::ordered_json{{"name", forced->name}, {"source", forced->source}} : nlohmann::ordered_json(nullptr)},
      {"chosen", chosen.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(chosen)},
      {"padding", chosen.empty() ? nlohmann::ordered_json(nullptr) : padding_json(padding)},
      {"kernels", kernels.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(kernels)},
  };
  nlohmann::ordered_json backends = nlohmann::ordered_json::array();
  for (const auto& v : verdicts) {
    backends.push_back({{"name", v.backend},
                        {"verdict", verdict_name(v.status)},
                        {"reason", v.reason},
                        {"rank", v.rank},
                        {"padding", v.padding ? padding_json(*v.padding) : nlohmann::ordered_json(nullptr)}});
  }
  j["backends"] = backends;
  return j.dump(2);
}

std::string Decision::to_table() const {
  std::string s = "device:  " + device.describe() + "\n";
  s += "problem: " + problem.to_string() + "\n";
  if (forced) s += "forced:  " + forced->name + " (by " + forced->source + ")\n";
  size_t width = 7;
  for (const auto& v : verdicts) width = std::max(width, v.backend.size());
  s += "\n  " + pad_right("backend", width) + "  verdict   reason\n";
  for (const auto& v : verdicts) {
    s += "  " + pad_right(v.backend, width) + "  " + pad_right(std::string(verdict_name(v.status)), 8) + "  " +
         v.reason + "\n";
  }
  if (!chosen.empty()) {
    s += "\npadding: " + padding.to_string() + (padding.is_identity() ? " (none needed)" : "") + "\n";
    if (!kernels.empty()) s += "kernels: " + kernels + "\n";
  }
  return s;
}

}  // namespace mxmoe
