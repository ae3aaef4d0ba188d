"""A drop-in for transformers' GptOssMLP whose experts run on mxmoe.

    import mxmoe.torch
    mxmoe.torch.replace_moe(model)                     # every GptOssMLP of a loaded gpt-oss model
    model.model.layers[0].mlp = mxmoe.torch.GptOssMLP.from_hf(model.model.layers[0].mlp)   # or one

Routing stays as transformers computes it (its router, in the model's dtype), so the same tokens
reach the same experts; the experts (MXFP4 GEMMs, SwiGLU, the weighted sum) run on the backend the
oracle chose for the module's device.
"""
import torch

import mxmoe


def _from_triton_kernels(experts, proj):
    """One projection's blocks and scales in the checkpoint layout, from experts that transformers
    handed to triton_kernels (on the GPUs it runs them on, it re-lays each projection's codes for the
    GPU, keeps them as a triton_kernels tensor and drops *_blocks and *_scales): recovered through
    each tensor's own layout, and checked by laying them out again."""
    weight, config = getattr(experts, proj), getattr(experts, f"{proj}_precision_config", None)
    if not hasattr(weight, "storage") or not hasattr(config, "weight_scale"):
        raise TypeError(f"mxmoe: the experts' {proj} is neither a torch tensor nor a triton_kernels tensor with its "
                        f"precision config: {type(weight).__name__}")

    def plain(tensor, what):
        layout = tensor.storage.layout
        data = layout.unswizzle_data(tensor.storage.data)
        relaid = layout.swizzle_data(data)
        if relaid.shape != tensor.storage.data.shape or not torch.equal(relaid, tensor.storage.data):
            raise ValueError(f"mxmoe: the {what} of {proj} in triton_kernels' {type(layout).__name__} do not lay out "
                             "again as they were read back; this triton_kernels version is not supported")
        return data

    # transformers wrapped codes [E, N, K / 2] and scales [E, N, K / 32] transposed.
    codes, scales = plain(weight, "codes"), plain(config.weight_scale, "scales")
    experts_count, half_k, rows = codes.shape
    if half_k % 16 or tuple(scales.shape) != (experts_count, half_k // 16, rows):
        raise ValueError(f"mxmoe: {proj} read back from triton_kernels as codes {tuple(codes.shape)} and scales "
                         f"{tuple(scales.shape)}: not the [E, K / 2, N] and [E, K / 32, N] transformers wrapped")
    blocks = codes.transpose(1, 2).contiguous().reshape(experts_count, rows, half_k // 16, 16)
    return blocks, scales.transpose(1, 2).contiguous()


def _expert_tensors(experts):
    """The layer's MXFP4 tensors in the checkpoint layout, from an MXFP4 module (as loaded, or as
    transformers re-laid it for triton_kernels) or a dequantized one."""
    if hasattr(experts, "gate_up_proj_blocks"):
        return (experts.gate_up_proj_blocks, experts.gate_up_proj_scales, experts.down_proj_blocks,
                experts.down_proj_scales)
    if not hasattr(experts, "gate_up_proj"):
        raise TypeError("mxmoe: the experts module has neither MXFP4 blocks (gate_up_proj_blocks) nor dense weights "
                        f"(gate_up_proj): {type(experts).__name__}")
    if not isinstance(experts.gate_up_proj, torch.Tensor):
        return _from_triton_kernels(experts, "gate_up_proj") + _from_triton_kernels(experts, "down_proj")
    # Dense experts hold [E, in, out]; checkpoints quantize along `in`, one row per output.
    with torch.no_grad():
        gate_up_blocks, gate_up_scales = torch.ops.mxmoe.quantize(experts.gate_up_proj.transpose(1, 2).contiguous())
        down_blocks, down_scales = torch.ops.mxmoe.quantize(experts.down_proj.transpose(1, 2).contiguous())
    return gate_up_blocks, gate_up_scales, down_blocks, down_scales


class GptOssMLP(torch.nn.Module):
    """Same inputs and outputs as transformers' GptOssMLP: hidden [..., H] -> (output [..., H],
    router scores [tokens, E])."""

    def __init__(self, layer, router_weight, router_bias, top_k):
        super().__init__()
        self.layer = layer
        self.router_weight = torch.nn.Parameter(router_weight.detach(), requires_grad=False)
        self.router_bias = torch.nn.Parameter(router_bias.detach(), requires_grad=False)
        self.top_k = top_k

    @classmethod
    def from_hf(cls, module, scheme="w4a16", backend="auto"):
        router, experts = module.router, module.experts
        gate_up_blocks, gate_up_scales, down_blocks, down_scales = _expert_tensors(experts)
        with torch.no_grad():
            layer = mxmoe.Layer.from_hf_tensors(
                gate_up_blocks, gate_up_scales, experts.gate_up_proj_bias, down_blocks, down_scales,
                experts.down_proj_bias, router.weight, router.bias, top_k=router.top_k, scheme=scheme,
                backend=backend, swiglu_alpha=getattr(experts, "alpha", mxmoe.SWIGLU_ALPHA),
                swiglu_limit=getattr(experts, "limit", mxmoe.SWIGLU_LIMIT))
        return cls(layer, router.weight, router.bias, router.top_k)

    def forward(self, hidden_states):
        shape = hidden_states.shape
        hidden = hidden_states.reshape(-1, shape[-1])
        # transformers' GptOssTopKRouter, step for step.
        logits = torch.nn.functional.linear(hidden, self.router_weight, self.router_bias)
        top_value, top_index = torch.topk(logits, self.top_k, dim=-1)
        top_value = torch.nn.functional.softmax(top_value, dim=1, dtype=top_value.dtype)
        scores = torch.zeros_like(logits).scatter_(1, top_index, top_value)
        dtype = hidden.dtype if hidden.dtype in (torch.float32, torch.bfloat16) else torch.float32
        out = self.layer.experts(hidden.to(dtype).contiguous(), top_index.to(torch.int32).contiguous(),
                                 top_value.to(torch.float32).contiguous())
        return out.to(hidden_states.dtype).reshape(shape), scores


def replace_moe(model, scheme="w4a16", backend="auto"):
    """Replaces every GptOssMLP of `model` in place; returns how many were replaced."""
    targets = [(name, module) for name, module in model.named_modules() if type(module).__name__ == "GptOssMLP"
               and not isinstance(module, GptOssMLP)]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, GptOssMLP.from_hf(module, scheme=scheme, backend=backend))
    return len(targets)
