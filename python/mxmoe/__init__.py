"""mxmoe from PyTorch: gpt-oss MoE layers with MXFP4 expert weights.

    layer = mxmoe.Layer.from_hf_tensors(gate_up_blocks, gate_up_scales, gate_up_bias,
                                        down_blocks, down_scales, down_bias,
                                        router_weight, router_bias, top_k=4)
    out = layer.experts(hidden, topk_ids, topk_weights)   # the caller's routing, as engines do
    out, topk_ids, topk_weights = layer(hidden)           # the layer's own router

The same operators are registered as torch.ops.mxmoe.* (experts, moe, prepare, release, explain,
plan), with shape-only implementations for torch.compile.
"""
import json
import os

# Not plain `torch`: importing the submodule mxmoe.torch rebinds that name in this package.
import torch as _torch

_torch.ops.load_library(os.path.join(os.path.dirname(os.path.abspath(__file__)), "_ops.so"))

__all__ = ["Layer", "explain", "SCHEMES"]

SCHEMES = ("w4a16", "w4a8", "w4a4", "w4a32", "w4a8_token")

# gpt-oss's SwiGLU constants (transformers' GptOssExperts: alpha 1.702, limit 7.0).
SWIGLU_ALPHA = 1.702
SWIGLU_LIMIT = 7.0


# top_k of each live prepared layer, by handle: what the shape-only implementations need.
_top_k_of = {}


def _register_fake_implementations():
    """Output shapes for _torch.compile and meta tensors (torch >= 2.4 has _torch.library.register_fake)."""
    register_fake = getattr(_torch.library, "register_fake", None)
    if register_fake is None:
        return

    @register_fake("mxmoe::experts")
    def _experts_fake(hidden, topk_ids, topk_weights, layer):
        return _torch.empty_like(hidden)

    @register_fake("mxmoe::moe")
    def _moe_fake(hidden, layer):
        shape = (hidden.shape[0], _top_k_of[layer])
        return (_torch.empty_like(hidden), hidden.new_empty(shape, dtype=_torch.int32),
                hidden.new_empty(shape, dtype=_torch.float32))


_register_fake_implementations()


class Layer:
    """A gpt-oss MoE layer prepared by mxmoe: the oracle chose the backend for the tensors' device,
    padded what the backend needs, and re-laid the weights once, on that device."""

    def __init__(self, handle, device, top_k, hidden_size):
        self._handle = handle
        self.device = device
        self.top_k = top_k
        self.hidden_size = hidden_size

    @classmethod
    def from_hf_tensors(cls, gate_up_blocks, gate_up_scales, gate_up_bias, down_blocks, down_scales,
                        down_bias, router_weight, router_bias, *, top_k, scheme="w4a16", backend="auto",
                        swiglu_alpha=SWIGLU_ALPHA, swiglu_limit=SWIGLU_LIMIT):
        """From the tensors as a Hugging Face gpt-oss checkpoint holds them: uint8 blocks
        [E, N, K/32, 16] and scales [E, N, K/32] (gate_up rows interleave gate and linear units),
        biases [E, N] and the router's weight [E, H] and bias [E] in bf16, fp16 or fp32.

        `backend` forces one of mxmoe's backends (mxmoe.explain lists them); a forced backend that
        cannot run raises RuntimeError with the reason."""
        if scheme not in SCHEMES:
            raise ValueError(f"mxmoe: unknown scheme {scheme!r}; known: {', '.join(SCHEMES)}")
        handle = _torch.ops.mxmoe.prepare(gate_up_blocks, gate_up_scales, gate_up_bias, down_blocks, down_scales,
                                         down_bias, router_weight, router_bias, int(top_k), float(swiglu_alpha),
                                         float(swiglu_limit), scheme, backend)
        _top_k_of[handle] = int(top_k)
        return cls(handle, gate_up_blocks.device, int(top_k), router_weight.shape[1])

    def __del__(self):
        handle, self._handle = getattr(self, "_handle", None), None
        if handle is not None and _torch is not None and _torch.ops is not None:
            _top_k_of.pop(handle, None)
            _torch.ops.mxmoe.release(handle)

    @property
    def handle(self):
        return self._handle

    def _check_devices(self, *named_tensors):
        # Before dispatch: torch would otherwise look for a kernel of the odd tensor's device and
        # report that none is registered instead of what is wrong.
        for name, t in named_tensors:
            if t.device != self.device:
                raise ValueError(f"mxmoe: {name} is on {t.device}, the layer on {self.device}")

    def experts(self, hidden, topk_ids, topk_weights):
        """hidden [T, H] (bf16 or fp32), topk_ids [T, k] int32, topk_weights [T, k] fp32 -> [T, H]
        in hidden's dtype: the sum over each token's k experts of weight x expert(hidden)."""
        self._check_devices(("hidden states", hidden), ("topk_ids", topk_ids), ("topk_weights", topk_weights))
        return _torch.ops.mxmoe.experts(hidden, topk_ids, topk_weights, self._handle)

    def __call__(self, hidden):
        """The whole layer with its own router: (output [T, H], topk_ids [T, k], topk_weights [T, k])."""
        self._check_devices(("hidden states", hidden))
        return _torch.ops.mxmoe.moe(hidden, self._handle)

    def explain(self):
        """The oracle's decision for this layer: the chosen backend, every backend's verdict and
        reason, and the padding plan."""
        return json.loads(_torch.ops.mxmoe.explain(self._handle))


def explain(*, experts, hidden, intermediate, top_k, scheme="w4a16", device="auto", backend="auto", tokens=0):
    """The oracle's decision for a layer shape on a device ("auto", "cpu", "sm_90", ...), without
    weights. When nothing (or not the forced backend) can run, the dict has an "error" entry."""
    return json.loads(_torch.ops.mxmoe.plan(experts, hidden, intermediate, top_k, tokens, scheme, device, backend))
