// mxmoe's PyTorch operators (TORCH_LIBRARY(mxmoe, ...)): prepare a gpt-oss MoE layer from its Hugging
// Face tensors, run its experts on the caller's routing or the whole layer, explain the oracle's
// choice. A prepared layer lives here, in a table keyed by an integer handle that the Python class
// `mxmoe.Layer` owns; the operators take the handle, so torch.compile sees plain tensors and an int.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <nlohmann/json.hpp>

#ifdef MXMOE_TORCH_CUDA
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include <cstring>
#include <memory>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <unordered_map>

#include "mxmoe/format.hpp"
#include "mxmoe/oracle.hpp"
#include "mxmoe/runner.hpp"

namespace mxmoe::torch_ops {

namespace {

struct PreparedLayer {
  std::unique_ptr<MoeRunner> runner;
  c10::Device device{c10::kCPU};
  MoeShape shape;
};

std::mutex table_mutex;
std::unordered_map<int64_t, std::shared_ptr<PreparedLayer>> table;
int64_t next_handle = 1;

std::shared_ptr<PreparedLayer> layer_of(int64_t handle) {
  std::lock_guard lock(table_mutex);
  const auto it = table.find(handle);
  TORCH_CHECK_VALUE(it != table.end(), "mxmoe: no prepared layer with handle ", handle, " (released?)");
  return it->second;
}

// C++ errors become the Python exceptions a caller expects: bad values ValueError, the rest
// RuntimeError, each with mxmoe's message.
template <class F>
auto translating_errors(F&& f) {
  try {
    return f();
  } catch (const c10::Error&) {
    throw;
  } catch (const OracleError& e) {
    TORCH_CHECK(false, "mxmoe: ", e.what(), "\n", e.decision().to_table());
  } catch (const std::invalid_argument& e) {
    TORCH_CHECK_VALUE(false, "mxmoe: ", e.what());
  } catch (const std::domain_error& e) {
    TORCH_CHECK_VALUE(false, "mxmoe: ", e.what());
  } catch (const std::exception& e) {
    TORCH_CHECK(false, "mxmoe: ", e.what());
  }
}

// As Python spells them: "torch.int32", not c10's "Int".
std::string torch_name(at::ScalarType type) {
  switch (type) {
    case at::kFloat: return "torch.float32";
    case at::kDouble: return "torch.float64";
    case at::kHalf: return "torch.float16";
    case at::kBFloat16: return "torch.bfloat16";
    case at::kInt: return "torch.int32";
    case at::kLong: return "torch.int64";
    case at::kByte: return "torch.uint8";
    default: return "torch." + std::string(c10::toString(type));
  }
}

void check_tensor(const at::Tensor& t, const char* name, at::IntArrayRef shape, std::initializer_list<at::ScalarType> dtypes,
                  c10::Device device) {
  bool dtype_ok = false;
  for (auto d : dtypes) dtype_ok |= t.scalar_type() == d;
  std::string allowed;
  for (auto d : dtypes) allowed += (allowed.empty() ? "" : " or ") + torch_name(d);
  TORCH_CHECK_TYPE(dtype_ok, "mxmoe: ", name, " must be ", allowed, ", got ", torch_name(t.scalar_type()));
  TORCH_CHECK_VALUE(t.sizes() == shape, "mxmoe: ", name, " must have shape ", shape, ", got ", t.sizes());
  TORCH_CHECK_VALUE(t.device() == device, "mxmoe: ", name, " is on ", t.device(), ", the layer on ", device);
  TORCH_CHECK_VALUE(t.is_contiguous(), "mxmoe: ", name, " must be contiguous (call .contiguous())");
}

std::vector<float> host_floats(const at::Tensor& t) {
  const at::Tensor f = t.to(at::kCPU, at::kFloat).contiguous();
  return {f.data_ptr<float>(), f.data_ptr<float>() + f.numel()};
}

template <class T>
std::vector<T> host_bytes(const at::Tensor& t) {
  const at::Tensor c = t.to(at::kCPU).contiguous();
  std::vector<T> out(c.numel());
  std::memcpy(out.data(), c.data_ptr(), out.size() * sizeof(T));
  return out;
}

DeviceSpec device_spec(const c10::Device& device) {
  if (device.is_cpu()) return DeviceSpec::detect_cpu();
  TORCH_CHECK_VALUE(device.is_cuda(), "mxmoe: tensors on ", device, " are not supported (CPU or CUDA)");
  const auto gpus = detect_cuda_devices();
  const int index = device.has_index() ? device.index() : 0;
  TORCH_CHECK(index < static_cast<int>(gpus.size()), "mxmoe: ", device, " is not a GPU this build of mxmoe can see",
              gpus.empty() ? " (built without CUDA, or no GPU)" : "");
  return gpus[index];
}

// The layer from the tensors exactly as a Hugging Face gpt-oss checkpoint holds them.
int64_t prepare(const at::Tensor& gate_up_blocks, const at::Tensor& gate_up_scales, const at::Tensor& gate_up_bias,
                const at::Tensor& down_blocks, const at::Tensor& down_scales, const at::Tensor& down_bias,
                const at::Tensor& router_weight, const at::Tensor& router_bias, int64_t top_k, double swiglu_alpha,
                double swiglu_limit, const std::string& scheme, const std::string& backend) {
  const c10::Device device = gate_up_blocks.device();
  TORCH_CHECK_VALUE(gate_up_blocks.dim() == 4 && gate_up_blocks.size(3) == 16, "mxmoe: gate_up_blocks must be [E, 2I, H/32, 16], got ",
                    gate_up_blocks.sizes());
  const int64_t E = gate_up_blocks.size(0), I = gate_up_blocks.size(1) / 2, H = gate_up_blocks.size(2) * 32;
  TORCH_CHECK_VALUE(gate_up_blocks.size(1) % 2 == 0, "mxmoe: gate_up_blocks rows (2I) must be even, got ", gate_up_blocks.size(1));
  TORCH_CHECK_VALUE(I % 32 == 0, "mxmoe: the intermediate size ", I, " must be a multiple of 32 (the MXFP4 block)");
  const auto u8 = {at::kByte};
  const auto real = {at::kFloat, at::kBFloat16, at::kHalf};
  check_tensor(gate_up_blocks, "gate_up_blocks", {E, 2 * I, H / 32, 16}, u8, device);
  check_tensor(gate_up_scales, "gate_up_scales", {E, 2 * I, H / 32}, u8, device);
  check_tensor(gate_up_bias, "gate_up_bias", {E, 2 * I}, real, device);
  check_tensor(down_blocks, "down_blocks", {E, H, I / 32, 16}, u8, device);
  check_tensor(down_scales, "down_scales", {E, H, I / 32}, u8, device);
  check_tensor(down_bias, "down_bias", {E, H}, real, device);
  check_tensor(router_weight, "router_weight", {E, H}, real, device);
  check_tensor(router_bias, "router_bias", {E}, real, device);
  return translating_errors([&] {
    const auto parsed = parse_scheme(scheme);
    if (!parsed) throw std::invalid_argument("unknown scheme '" + scheme + "'; known: " + scheme_names());
    MoeLayer layer;
    layer.shape = {static_cast<int>(H), static_cast<int>(I), static_cast<int>(E), static_cast<int>(top_k)};
    layer.swiglu = {static_cast<float>(swiglu_alpha), static_cast<float>(swiglu_limit)};
    layer.router_weight = host_floats(router_weight);
    layer.router_bias = host_floats(router_bias);
    auto mxfp4 = [](int64_t groups, int64_t rows, int64_t cols, const at::Tensor& blocks, const at::Tensor& scales) {
      Mxfp4Tensor t;
      t.groups = groups;
      t.rows = rows;
      t.cols = cols;
      t.blocks = host_bytes<uint8_t>(blocks);
      t.scales = host_bytes<uint8_t>(scales);
      return t;
    };
    layer.gate_up = mxfp4(E, 2 * I, H, gate_up_blocks, gate_up_scales);
    layer.gate_up_bias = host_floats(gate_up_bias);
    layer.down = mxfp4(E, H, I, down_blocks, down_scales);
    layer.down_bias = host_floats(down_bias);
    layer.validate();
    auto prepared = std::make_shared<PreparedLayer>();
    prepared->device = device;
    prepared->shape = layer.shape;
    prepared->runner = std::make_unique<MoeRunner>(std::move(layer), *parsed, device_spec(device), RunnerOptions{.backend = backend});
    std::lock_guard lock(table_mutex);
    table[next_handle] = std::move(prepared);
    return next_handle++;
  });
}

void release(int64_t handle) {
  std::lock_guard lock(table_mutex);
  table.erase(handle);
}

std::string explain(int64_t handle) { return layer_of(handle)->runner->decision().to_json(); }

// The oracle's decision for a layer shape on a device, without weights: JSON, with "error" set when
// nothing (or not the forced backend) can run.
std::string plan(int64_t experts, int64_t hidden, int64_t intermediate, int64_t top_k, int64_t tokens,
                 const std::string& scheme, const std::string& device, const std::string& backend) {
  return translating_errors([&] {
    const auto parsed = parse_scheme(scheme);
    if (!parsed) throw std::invalid_argument("unknown scheme '" + scheme + "'; known: " + scheme_names());
    Problem problem;
    problem.scheme = *parsed;
    problem.experts = static_cast<int>(experts);
    problem.hidden = static_cast<int>(hidden);
    problem.intermediate = static_cast<int>(intermediate);
    problem.top_k = static_cast<int>(top_k);
    problem.tokens = static_cast<int>(tokens);
    problem.validate();
    try {
      return select_backend(DeviceSpec::parse(device), problem, resolve_forced_backend(backend)).to_json();
    } catch (const OracleError& e) {
      auto json = nlohmann::ordered_json::parse(e.decision().to_json());
      json["error"] = e.what();
      return json.dump(2);
    }
  });
}

// A tensor owning a copy of `values` (a view of them would outlive the vector), on `like`'s device.
template <class T>
at::Tensor copied(const std::vector<T>& values, at::IntArrayRef shape, at::ScalarType type, const at::Tensor& like) {
  return at::from_blob(const_cast<T*>(values.data()), shape, c10::CppTypeToScalarType<T>::value)
      .to(like.device(), type, /*non_blocking=*/false, /*copy=*/true);
}

void check_hidden(const at::Tensor& hidden, const PreparedLayer& layer) {
  TORCH_CHECK_VALUE(hidden.dim() == 2, "mxmoe: hidden states must be [tokens, ", layer.shape.hidden, "], got ", hidden.sizes());
  check_tensor(hidden, "hidden states", {hidden.size(0), layer.shape.hidden}, {at::kFloat, at::kBFloat16}, layer.device);
}

// Dense weights [..., K] (K a multiple of 32) to MXFP4 as checkpoints hold it: blocks [..., K/32, 16]
// and scales [..., K/32], by the library's rounding (the one `mxmoe quantize` uses).
std::tuple<at::Tensor, at::Tensor> quantize(const at::Tensor& values) {
  TORCH_CHECK_VALUE(values.dim() >= 1 && values.size(-1) % 32 == 0 && values.size(-1) > 0,
                    "mxmoe: quantize needs a last dimension that is a positive multiple of 32, got ", values.sizes());
  TORCH_CHECK_TYPE(values.is_floating_point(), "mxmoe: quantize needs floating-point values, got ",
                   torch_name(values.scalar_type()));
  const int64_t K = values.size(-1), rows = values.numel() / K;
  const std::vector<float> host = host_floats(values);
  std::vector<uint8_t> blocks(rows * K / 2), scales(rows * K / 32);
  translating_errors([&] {
    for (int64_t r = 0; r < rows; ++r) {
      quantize_mxfp4({host.data() + r * K, static_cast<size_t>(K)}, {blocks.data() + r * K / 2, static_cast<size_t>(K / 2)},
                     {scales.data() + r * K / 32, static_cast<size_t>(K / 32)});
    }
    return 0;
  });
  std::vector<int64_t> shape(values.sizes().begin(), values.sizes().end() - 1);
  shape.push_back(K / 32);
  auto scale_tensor = copied(scales, shape, at::kByte, values);
  shape.push_back(16);
  return {copied(blocks, shape, at::kByte, values), scale_tensor};
}

// The experts operator's inputs: hidden [T, H] bf16 or fp32, ids [T, k] int32, weights [T, k] fp32.
void check_experts_inputs(const at::Tensor& hidden, const at::Tensor& topk_ids, const at::Tensor& topk_weights,
                          const PreparedLayer& layer) {
  check_hidden(hidden, layer);
  const int64_t T = hidden.size(0), k = layer.shape.top_k;
  check_tensor(topk_ids, "topk_ids", {T, k}, {at::kInt}, layer.device);
  check_tensor(topk_weights, "topk_weights", {T, k}, {at::kFloat}, layer.device);
}

// CPU tensors: the layer reads fp32 hidden states in place and writes its fp32 output straight into
// the returned tensor; bf16 is converted once each way (the CPU backend computes in fp32).
at::Tensor forward_cpu(const PreparedLayer& layer, const at::Tensor& hidden, const Routing* routing,
                       Routing* routing_out) {
  const at::Tensor x = hidden.to(at::kFloat);  // the same tensor when it is fp32 already
  at::Tensor out = at::empty(hidden.sizes(), hidden.options().dtype(at::kFloat));
  const auto span = [](const at::Tensor& t) { return std::span<float>(t.data_ptr<float>(), t.numel()); };
  layer.runner->forward_into(span(x), static_cast<int>(hidden.size(0)), span(out), routing, routing_out);
  return hidden.scalar_type() == at::kFloat ? out : out.to(hidden.scalar_type());
}

at::Tensor experts(const at::Tensor& hidden, const at::Tensor& topk_ids, const at::Tensor& topk_weights, int64_t handle) {
  const auto layer = layer_of(handle);
  check_experts_inputs(hidden, topk_ids, topk_weights, *layer);
  const int64_t T = hidden.size(0), k = layer->shape.top_k;
  return translating_errors([&] {
    const Routing routing{static_cast<int>(T), static_cast<int>(k), host_bytes<int32_t>(topk_ids), host_floats(topk_weights)};
    return forward_cpu(*layer, hidden, &routing, nullptr);
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> moe(const at::Tensor& hidden, int64_t handle) {
  const auto layer = layer_of(handle);
  check_hidden(hidden, *layer);
  const int64_t T = hidden.size(0), k = layer->shape.top_k;
  return translating_errors([&] {
    Routing routing;
    at::Tensor out = forward_cpu(*layer, hidden, nullptr, &routing);
    return std::make_tuple(out, copied(routing.expert_ids, {T, k}, at::kInt, hidden),
                           copied(routing.weights, {T, k}, at::kFloat, hidden));
  });
}

#ifdef MXMOE_TORCH_CUDA
// CUDA tensors stay on the GPU: the layer runs on them on torch's current stream, allocating only
// the outputs, without waiting for the GPU (so it can be captured in a CUDA graph).
DeviceBatch device_batch(const at::Tensor& hidden, at::Tensor& out) {
  DeviceBatch b;
  b.tokens = static_cast<int>(hidden.size(0));
  b.type = hidden.scalar_type() == at::kBFloat16 ? ElementType::bf16 : ElementType::f32;
  b.hidden = hidden.data_ptr();
  b.output = out.data_ptr();
  b.stream = c10::cuda::getCurrentCUDAStream(hidden.device().index()).stream();
  return b;
}

at::Tensor experts_cuda(const at::Tensor& hidden, const at::Tensor& topk_ids, const at::Tensor& topk_weights,
                        int64_t handle) {
  const auto layer = layer_of(handle);
  check_experts_inputs(hidden, topk_ids, topk_weights, *layer);
  const c10::cuda::CUDAGuard guard(hidden.device());
  at::Tensor out = at::empty_like(hidden);
  DeviceBatch b = device_batch(hidden, out);
  b.expert_ids = topk_ids.data_ptr<int32_t>();
  b.expert_weights = topk_weights.data_ptr<float>();
  translating_errors([&] {
    layer->runner->forward_on_device(b);
    return 0;
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> moe_cuda(const at::Tensor& hidden, int64_t handle) {
  const auto layer = layer_of(handle);
  check_hidden(hidden, *layer);
  const int64_t T = hidden.size(0), k = layer->shape.top_k;
  const c10::cuda::CUDAGuard guard(hidden.device());
  at::Tensor out = at::empty_like(hidden);
  at::Tensor ids = at::empty({T, k}, hidden.options().dtype(at::kInt));
  at::Tensor weights = at::empty({T, k}, hidden.options().dtype(at::kFloat));
  DeviceBatch b = device_batch(hidden, out);
  b.routing_ids = ids.data_ptr<int32_t>();
  b.routing_weights = weights.data_ptr<float>();
  translating_errors([&] {
    layer->runner->forward_on_device(b);
    return 0;
  });
  return {out, ids, weights};
}
#endif

}  // namespace
}  // namespace mxmoe::torch_ops

using namespace mxmoe::torch_ops;

TORCH_LIBRARY(mxmoe, m) {
  m.def("prepare(Tensor gate_up_blocks, Tensor gate_up_scales, Tensor gate_up_bias, Tensor down_blocks, "
        "Tensor down_scales, Tensor down_bias, Tensor router_weight, Tensor router_bias, int top_k, float swiglu_alpha, "
        "float swiglu_limit, str scheme, str backend) -> int",
        &prepare);
  m.def("release(int layer) -> ()", &release);
  m.def("explain(int layer) -> str", &explain);
  m.def("plan(int experts, int hidden, int intermediate, int top_k, int tokens, str scheme, str device, str backend) -> str",
        &plan);
  m.def("quantize(Tensor values) -> (Tensor, Tensor)", &quantize);
  m.def("experts(Tensor hidden, Tensor topk_ids, Tensor topk_weights, int layer) -> Tensor");
  m.def("moe(Tensor hidden, int layer) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(mxmoe, CPU, m) {
  m.impl("experts", &experts);
  m.impl("moe", &moe);
}

#ifdef MXMOE_TORCH_CUDA
TORCH_LIBRARY_IMPL(mxmoe, CUDA, m) {
  m.impl("experts", &experts_cuda);
  m.impl("moe", &moe_cuda);
}
#endif
