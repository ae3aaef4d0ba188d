// What a backend can run on: a CPU with its vector ISA, or a CUDA GPU with its compute capability.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace mxmoe {

enum class DeviceKind { cpu, cuda };

struct CpuFeatures {
  bool avx2 = false;  // with FMA
  bool avx512 = false;  // F, BW, DQ, VL
  bool avx512_bf16 = false;
  bool avx512_vnni = false;
  bool neon = false;

  bool operator==(const CpuFeatures&) const = default;
  std::string to_string() const;  // "avx2 avx512 avx512bf16 ..." or "baseline"
};

struct DeviceSpec {
  DeviceKind kind = DeviceKind::cpu;

  // CUDA: compute capability as major * 10 + minor (sm_90 -> 90). Every GPU of a compute capability
  // also runs that capability's architecture-specific "a" code (sm_90a, sm_100a, sm_120a); what
  // differs between backends is which capabilities their code was built for, and that is the
  // backend's declaration, not the device's.
  int sm = 0;
  int sm_count = 0;            // 0 when not known (planning from a string)
  uint64_t memory_bytes = 0;   // 0 when not known
  int ordinal = 0;             // which GPU of the machine

  // CPU
  CpuFeatures cpu;
  int cores = 0;  // 0 when not known

  std::string name;       // "NVIDIA H100 80GB HBM3", "AMD EPYC ..."; empty when planning
  bool detected = false;  // read off this machine (as opposed to given as a string)

  // Accepted forms: "auto" (the first CUDA GPU, else the CPU), "cuda" or "cuda:N" (a GPU of this
  // machine), "cpu:native" (this machine's CPU), "cpu" (a baseline CPU), "cpu:avx2", "cpu:avx512",
  // "cpu:avx512bf16", "cpu:neon", and "sm_XY" or "sm_XYa" (optionally prefixed "cuda:") for the
  // compute capabilities 7.0 to 12.1. Throws std::invalid_argument listing these forms otherwise.
  static DeviceSpec parse(std::string_view text);
  // The device of this machine that `text` names: a compute capability must match one of its GPUs;
  // "cpu" is its CPU, and a named CPU ISA must be the one its kernels use (a narrower one can be
  // planned for, not run). Throws std::invalid_argument naming what the machine has otherwise.
  static DeviceSpec for_running(std::string_view text);
  static DeviceSpec detect();      // "auto"
  static DeviceSpec detect_cpu();  // "cpu:native"

  // Short canonical id: "sm_90", "cpu:avx512bf16", "cpu".
  std::string id() const;
  // One line for people: id, name, SMs or cores, memory.
  std::string describe() const;
};

// This machine's CUDA GPUs; empty when there are none or mxmoe was built without CUDA.
std::vector<DeviceSpec> detect_cuda_devices();

// "sm_90" for 90, "sm_120" for 120.
std::string sm_name(int sm);

}  // namespace mxmoe
