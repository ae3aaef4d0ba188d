#include <algorithm>
#include <cctype>
#include <charconv>
#include <stdexcept>
#include <string>
#include <thread>

#include "mxmoe/device.hpp"

namespace mxmoe {

namespace {

constexpr int kKnownSms[] = {70, 72, 75, 80, 86, 87, 89, 90, 100, 101, 103, 110, 120, 121};

const char* kAcceptedForms =
    "auto, cuda, cuda:N, cpu, cpu:native, cpu:avx2, cpu:avx512, cpu:avx512bf16, cpu:neon, "
    "sm_70 ... sm_121 (optionally with the 'a' suffix, e.g. sm_90a)";

[[noreturn]] void bad_device(std::string_view text, const std::string& why) {
  throw std::invalid_argument("device '" + std::string(text) + "': " + why + "; accepted forms: " + kAcceptedForms);
}

DeviceSpec cpu_with(CpuFeatures features) {
  DeviceSpec d;
  d.kind = DeviceKind::cpu;
  d.cpu = features;
  return d;
}

DeviceSpec parse_sm(std::string_view full, std::string_view text) {
  // text is "sm_XY" or "sm_XYa"
  std::string_view digits = text.substr(3);
  if (!digits.empty() && (digits.back() == 'a' || digits.back() == 'f')) digits.remove_suffix(1);
  int sm = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), sm);
  if (ec != std::errc() || end != digits.data() + digits.size()) bad_device(full, "not a compute capability");
  if (std::find(std::begin(kKnownSms), std::end(kKnownSms), sm) == std::end(kKnownSms)) {
    bad_device(full, "unknown compute capability " + sm_name(sm));
  }
  DeviceSpec d;
  d.kind = DeviceKind::cuda;
  d.sm = sm;
  return d;
}

}  // namespace

std::string sm_name(int sm) { return "sm_" + std::to_string(sm); }

std::string CpuFeatures::to_string() const {
  std::string s;
  auto add = [&](bool on, const char* name) {
    if (!on) return;
    if (!s.empty()) s += ' ';
    s += name;
  };
  add(avx2, "avx2");
  add(avx512, "avx512");
  add(avx512_bf16, "avx512bf16");
  add(avx512_vnni, "avx512vnni");
  add(neon, "neon");
  return s.empty() ? "baseline" : s;
}

DeviceSpec DeviceSpec::detect_cpu() {
  CpuFeatures f;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  f.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  f.avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
             __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  f.avx512_bf16 = f.avx512 && __builtin_cpu_supports("avx512bf16");
  f.avx512_vnni = f.avx512 && __builtin_cpu_supports("avx512vnni");
#elif defined(__aarch64__)
  f.neon = true;
#endif
  DeviceSpec d = cpu_with(f);
  d.cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  d.name = "host CPU";
  d.detected = true;
  return d;
}

DeviceSpec DeviceSpec::detect() {
  const auto gpus = detect_cuda_devices();
  return gpus.empty() ? detect_cpu() : gpus.front();
}

DeviceSpec DeviceSpec::parse(std::string_view text) {
  if (text == "auto") return detect();
  if (text == "cpu") return cpu_with({});
  if (text == "cpu:native") return detect_cpu();
  if (text == "cpu:avx2") return cpu_with({.avx2 = true});
  if (text == "cpu:avx512") return cpu_with({.avx2 = true, .avx512 = true});
  if (text == "cpu:avx512bf16") {
    return cpu_with({.avx2 = true, .avx512 = true, .avx512_bf16 = true, .avx512_vnni = true});
  }
  if (text == "cpu:neon") return cpu_with({.neon = true});
  if (text == "cuda" || (text.starts_with("cuda:") && text.size() > 5 && std::isdigit(static_cast<unsigned char>(text[5])))) {
    int ordinal = 0;
    if (text != "cuda") {
      const auto digits = text.substr(5);
      const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), ordinal);
      if (ec != std::errc() || end != digits.data() + digits.size()) bad_device(text, "not a GPU number");
    }
    const auto gpus = detect_cuda_devices();
    if (gpus.empty()) bad_device(text, "this machine has no CUDA GPU (or mxmoe was built without CUDA)");
    if (ordinal < 0 || ordinal >= static_cast<int>(gpus.size())) {
      bad_device(text, "this machine has " + std::to_string(gpus.size()) + " CUDA GPU(s)");
    }
    return gpus[ordinal];
  }
  std::string_view sm = text;
  if (sm.starts_with("cuda:")) sm.remove_prefix(5);
  if (sm.starts_with("sm_")) return parse_sm(text, sm);
  bad_device(text, "not a device");
}

DeviceSpec DeviceSpec::for_running(std::string_view text) {
  const DeviceSpec wanted = parse(text);
  if (wanted.detected) return wanted;
  const auto gpus = detect_cuda_devices();
  const DeviceSpec cpu = detect_cpu();
  std::string present = cpu.id();
  for (const auto& g : gpus) present += ", " + g.id() + " (" + g.name + ")";
  if (wanted.kind == DeviceKind::cuda) {
    for (const auto& g : gpus) {
      if (g.sm == wanted.sm) return g;
    }
  } else {
    // "cpu" is this machine's CPU. A named vector ISA must be the one its kernels will use: the CPU
    // backend runs the best kernels the CPU has, so a narrower name would be silently ignored.
    if (wanted.cpu == CpuFeatures{} || wanted.id() == cpu.id()) return cpu;
    const CpuFeatures& w = wanted.cpu;
    const CpuFeatures& h = cpu.cpu;
    if ((!w.avx2 || h.avx2) && (!w.avx512 || h.avx512) && (!w.avx512_bf16 || h.avx512_bf16) &&
        (!w.avx512_vnni || h.avx512_vnni) && (!w.neon || h.neon)) {
      throw std::invalid_argument("device '" + std::string(text) + "': this CPU runs mxmoe's " + cpu.id() +
                                  " kernels, which it picks itself; a narrower ISA can be planned for (mxmoe explain "
                                  "--device " + std::string(text) + ") but not run. Use --device cpu");
    }
  }
  throw std::invalid_argument("device '" + std::string(text) + "' is not on this machine, which has: " + present);
}

std::string DeviceSpec::id() const {
  if (kind == DeviceKind::cuda) return sm_name(sm);
  if (cpu == CpuFeatures{}) return "cpu";
  if (cpu.neon) return "cpu:neon";
  if (cpu.avx512_bf16) return "cpu:avx512bf16";
  if (cpu.avx512) return "cpu:avx512";
  if (cpu.avx2) return "cpu:avx2";
  return "cpu";
}

std::string DeviceSpec::describe() const {
  std::string s = id();
  if (kind == DeviceKind::cuda) {
    if (!name.empty()) s += " (" + name + ")";
    if (sm_count) s += ", " + std::to_string(sm_count) + " SMs";
    if (memory_bytes) s += ", " + std::to_string(memory_bytes >> 30) + " GiB";
  } else {
    s += " [" + cpu.to_string() + "]";
    if (cores) s += ", " + std::to_string(cores) + " threads";
  }
  if (!detected) s += " (planning target, not this machine)";
  return s;
}

}  // namespace mxmoe
