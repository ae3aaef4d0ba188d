// CUDA graphs of a layer's launches, one per batch (its token count, buffers and stream), replayed
// instead of launching again: for callers that enqueue the same batches over and over (a decode
// loop) without capturing graphs of their own. A graph holds the workspace's pointers, so any
// buffer growth (DeviceBuffer::reallocations) drops every graph.
#pragma once

#include <cuda_runtime.h>

#include <array>
#include <compare>
#include <cstdint>
#include <map>

#include "backends/cuda/cuda_check.hpp"
#include "backends/cuda/device_buffer.hpp"

namespace mxmoe::cuda {

struct GraphKey {
  int tokens = 0, element_type = 0;
  std::array<const void*, 6> buffers{};  // hidden, output, the caller's routing, the routing out
  cudaStream_t stream = nullptr;
  auto operator<=>(const GraphKey&) const = default;
};

class GraphCache {
 public:
  static constexpr size_t kMaxGraphs = 64;  // the least recently replayed goes first

  GraphCache() = default;
  GraphCache(const GraphCache&) = delete;
  GraphCache& operator=(const GraphCache&) = delete;
  ~GraphCache() { clear(); }

  // Whether a graph can be captured on `stream` at all: not the legacy default stream, and not
  // while the caller is capturing it (the launches then go into the caller's graph).
  static bool can_capture(cudaStream_t stream) {
    if (stream == nullptr || stream == cudaStreamLegacy || stream == cudaStreamPerThread) return false;
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    MXMOE_CUDA_CHECK(cudaStreamIsCapturing(stream, &status));
    return status == cudaStreamCaptureStatusNone;
  }

  // Replays the graph of `key` on its stream; false when there is none (or buffers grew since).
  bool replay(const GraphKey& key) {
    if (reallocations_ != DeviceBuffer::reallocations()) clear();
    const auto it = graphs_.find(key);
    if (it == graphs_.end()) return false;
    it->second.last_use = ++clock_;
    MXMOE_CUDA_CHECK(cudaGraphLaunch(it->second.exec, key.stream));
    return true;
  }

  // Captures what `enqueue` launches on key.stream as the graph of `key`; nothing runs. Call it
  // after a direct run of the same batch, so that every buffer already has its size.
  template <class Enqueue>
  void capture(const GraphKey& key, Enqueue&& enqueue) {
    if (reallocations_ != DeviceBuffer::reallocations()) clear();
    cudaGraph_t graph = nullptr;
    MXMOE_CUDA_CHECK(cudaStreamBeginCapture(key.stream, cudaStreamCaptureModeThreadLocal));
    try {
      enqueue();
    } catch (...) {
      cudaStreamEndCapture(key.stream, &graph);  // leave the stream as it was
      if (graph) cudaGraphDestroy(graph);
      throw;
    }
    MXMOE_CUDA_CHECK(cudaStreamEndCapture(key.stream, &graph));
    cudaGraphExec_t exec = nullptr;
    const cudaError_t instantiated = cudaGraphInstantiate(&exec, graph, 0);
    cudaGraphDestroy(graph);
    MXMOE_CUDA_CHECK(instantiated);
    if (reallocations_ != DeviceBuffer::reallocations()) {  // a buffer grew while capturing: not kept
      cudaGraphExecDestroy(exec);
      return;
    }
    if (graphs_.size() >= kMaxGraphs) {
      auto oldest = graphs_.begin();
      for (auto it = graphs_.begin(); it != graphs_.end(); ++it) {
        if (it->second.last_use < oldest->second.last_use) oldest = it;
      }
      cudaGraphExecDestroy(oldest->second.exec);
      graphs_.erase(oldest);
    }
    graphs_[key] = {exec, ++clock_};
  }

  void clear() {
    for (auto& [key, entry] : graphs_) cudaGraphExecDestroy(entry.exec);
    graphs_.clear();
    reallocations_ = DeviceBuffer::reallocations();
  }

  size_t size() const { return graphs_.size(); }

 private:
  struct Entry {
    cudaGraphExec_t exec = nullptr;
    uint64_t last_use = 0;
  };
  std::map<GraphKey, Entry> graphs_;
  uint64_t reallocations_ = DeviceBuffer::reallocations();
  uint64_t clock_ = 0;
};

}  // namespace mxmoe::cuda
