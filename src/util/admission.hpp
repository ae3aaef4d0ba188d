// Admission control: a request whose memory (or disk) needs are estimated up front is refused with
// the estimate and the limit, instead of growing until the kernel kills the process.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>

namespace mxmoe::detail {

// Bytes this process can still allocate: the machine's available memory, or less where a cgroup
// (a container) limits it.
uint64_t available_memory_bytes();

// Throws std::runtime_error when `bytes` exceed what is available; `what` names the request.
void admit_memory(uint64_t bytes, const std::string& what);

// The same for disk space in the folder that will hold `path`.
void admit_disk(const std::filesystem::path& path, uint64_t bytes, const std::string& what);

std::string format_bytes(uint64_t bytes);

}  // namespace mxmoe::detail
