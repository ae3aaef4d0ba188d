#include <cstdio>
#include <nlohmann/json.hpp>

#include "mxmoe/eval.hpp"

namespace mxmoe {

namespace {

std::string fixed(double v, const char* format) {
  char buf[48];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default:
        // XML 1.0 forbids most control characters even escaped.
        if (static_cast<unsigned char>(c) >= 0x20 || c == '\n' || c == '\t') out += c;
    }
  }
  return out;
}

size_t count(const std::vector<EvalResult>& results, EvalStatus status) {
  size_t n = 0;
  for (const auto& r : results) n += r.status == status;
  return n;
}

}  // namespace

std::string eval_table(const std::vector<EvalResult>& results) {
  size_t width = 6;
  for (const auto& r : results) width = std::max(width, r.name.size());
  std::string s;
  auto pad = [](std::string v, size_t w) { return v.size() < w ? v + std::string(w - v.size(), ' ') : v; };
  s += pad("config", width) + "  " + pad("backend", 9) + " " + pad("device", 16) + " " + pad("rel_l2", 9) + " " +
       pad("max_abs", 9) + " " + pad("cosine", 10) + " " + pad("routing", 8) + " " + pad("scheme", 9) + " " +
       pad("token", 9) + " status\n";
  for (const auto& r : results) {
    const bool ran = r.status == EvalStatus::passed || r.status == EvalStatus::failed;
    s += pad(r.name, width) + "  " + pad(r.backend.empty() ? "-" : r.backend, 9) + " " +
         pad(r.device.empty() ? "-" : r.device, 16) + " " +
         pad(ran ? fixed(r.metrics.relative_l2, "%.2e") : "-", 9) + " " + pad(ran ? fixed(r.metrics.max_abs, "%.2e") : "-", 9) +
         " " + pad(ran ? fixed(r.metrics.cosine, "%.8f") : "-", 10) + " " +
         pad(ran ? fixed(r.metrics.routing_agreement, "%.4f") : "-", 8) + " " +
         pad(ran ? fixed(r.metrics.scheme_relative_l2, "%.2e") : "-", 9) + " " +
         pad(ran ? fixed(r.metrics.scheme_token_relative_l2, "%.2e") : "-", 9) + " " + std::string(eval_status_name(r.status)) +
         (r.message.empty() ? "" : ": " + r.message) + "\n";
  }
  s += std::to_string(count(results, EvalStatus::passed)) + " passed, " + std::to_string(count(results, EvalStatus::failed)) +
       " failed, " + std::to_string(count(results, EvalStatus::error)) + " errors, " +
       std::to_string(count(results, EvalStatus::skipped)) + " skipped\n";
  return s;
}

std::string eval_junit_xml(const std::vector<EvalResult>& results) {
  double total = 0;
  for (const auto& r : results) total += r.seconds;
  std::string s = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  s += "<testsuites name=\"mxmoe eval\" tests=\"" + std::to_string(results.size()) + "\" failures=\"" +
       std::to_string(count(results, EvalStatus::failed)) + "\" errors=\"" + std::to_string(count(results, EvalStatus::error)) +
       "\" skipped=\"" + std::to_string(count(results, EvalStatus::skipped)) + "\" time=\"" + fixed(total, "%.3f") + "\">\n";
  s += "  <testsuite name=\"mxmoe eval\" tests=\"" + std::to_string(results.size()) + "\" failures=\"" +
       std::to_string(count(results, EvalStatus::failed)) + "\" errors=\"" + std::to_string(count(results, EvalStatus::error)) +
       "\" skipped=\"" + std::to_string(count(results, EvalStatus::skipped)) + "\" time=\"" + fixed(total, "%.3f") + "\">\n";
  for (const auto& r : results) {
    s += "    <testcase classname=\"" + xml_escape(r.file.parent_path().filename().string()) + "\" name=\"" +
         xml_escape(r.name) + "\" file=\"" + xml_escape(r.file.string()) + "\" time=\"" + fixed(r.seconds, "%.3f") + "\">\n";
    if (r.status == EvalStatus::passed || r.status == EvalStatus::failed) {
      s += "      <properties>\n";
      s += "        <property name=\"backend\" value=\"" + xml_escape(r.backend) + "\"/>\n";
      s += "        <property name=\"device\" value=\"" + xml_escape(r.device) + "\"/>\n";
      s += "        <property name=\"relative_l2\" value=\"" + fixed(r.metrics.relative_l2, "%.6e") + "\"/>\n";
      s += "        <property name=\"max_abs\" value=\"" + fixed(r.metrics.max_abs, "%.6e") + "\"/>\n";
      s += "        <property name=\"cosine\" value=\"" + fixed(r.metrics.cosine, "%.10f") + "\"/>\n";
      s += "        <property name=\"routing_agreement\" value=\"" + fixed(r.metrics.routing_agreement, "%.6f") + "\"/>\n";
      s += "        <property name=\"scheme_relative_l2\" value=\"" + fixed(r.metrics.scheme_relative_l2, "%.6e") + "\"/>\n";
      s += "        <property name=\"scheme_token_relative_l2\" value=\"" + fixed(r.metrics.scheme_token_relative_l2, "%.6e") +
           "\"/>\n";
      s += "      </properties>\n";
    }
    if (r.status == EvalStatus::failed) {
      s += "      <failure message=\"" + xml_escape(r.message) + "\">" + xml_escape(r.message) + "</failure>\n";
    } else if (r.status == EvalStatus::error) {
      s += "      <error message=\"" + xml_escape(r.message) + "\">" + xml_escape(r.message) + "</error>\n";
    } else if (r.status == EvalStatus::skipped) {
      s += "      <skipped message=\"" + xml_escape(r.message) + "\"/>\n";
    }
    s += "    </testcase>\n";
  }
  s += "  </testsuite>\n</testsuites>\n";
  return s;
}

std::string eval_json(const std::vector<EvalResult>& results) {
  nlohmann::ordered_json out = nlohmann::ordered_json::array();
  for (const auto& r : results) {
    auto threshold = [](const std::optional<double>& t) { return t ? nlohmann::ordered_json(*t) : nlohmann::ordered_json(nullptr); };
    out.push_back({{"name", r.name},
                   {"file", r.file.string()},
                   {"model", r.model},
                   {"status", eval_status_name(r.status)},
                   {"message", r.message},
                   {"backend", r.backend},
                   {"device", r.device},
                   {"seconds", r.seconds},
                   {"metrics",
                    {{"relative_l2", r.metrics.relative_l2},
                     {"max_abs", r.metrics.max_abs},
                     {"cosine", r.metrics.cosine},
                     {"routing_agreement", r.metrics.routing_agreement},
                     {"scheme_relative_l2", r.metrics.scheme_relative_l2},
                     {"scheme_token_relative_l2", r.metrics.scheme_token_relative_l2}}},
                   {"thresholds",
                    {{"relative_l2", threshold(r.thresholds.relative_l2)},
                     {"max_abs", threshold(r.thresholds.max_abs)},
                     {"cosine", threshold(r.thresholds.cosine)},
                     {"routing_agreement", threshold(r.thresholds.routing_agreement)},
                     {"scheme_relative_l2", threshold(r.thresholds.scheme_relative_l2)},
                     {"scheme_token_relative_l2", threshold(r.thresholds.scheme_token_relative_l2)}}}});
  }
  return nlohmann::ordered_json{{"results", out}}.dump(2) + "\n";
}

}  // namespace mxmoe
