// Owned device memory that only grows, so repeated batches reuse their allocations.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <utility>

#include "backends/cuda/cuda_check.hpp"

namespace mxmoe::cuda {

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) { reserve(bytes); }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  // At least `bytes` bytes; the old contents are lost when it grows.
  void reserve(size_t bytes) {
    if (bytes <= bytes_) return;
    reallocations_.fetch_add(1, std::memory_order_relaxed);
    if (ptr_) MXMOE_CUDA_CHECK(cudaFree(ptr_));
    ptr_ = nullptr;
    bytes_ = 0;
    MXMOE_CUDA_CHECK(cudaMalloc(&ptr_, bytes));
    bytes_ = bytes;
  }

  template <class T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t bytes() const { return bytes_; }
  // How many times any buffer has grown in this process: a CUDA graph captured before the count
  // changed may hold a freed pointer (GraphCache).
  static uint64_t reallocations() { return reallocations_.load(std::memory_order_relaxed); }

 private:
  static inline std::atomic<uint64_t> reallocations_{0};
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace mxmoe::cuda
