"""The mxmoe PyTorch package on the CPU: operators against the float64 reference and an independent
PyTorch transcription of transformers' gpt-oss experts, and clear exceptions for bad inputs."""
import unittest

import torch

import mxmoe

E, H, I, K = 8, 128, 96, 2
# Relative L2 bounds per scheme against the float64 reference (tests/backends/backend_check.hpp).
BOUND = {"w4a16": 4e-4, "w4a8": 1.5e-3, "w4a8_token": 1.5e-3, "w4a4": 3e-3}
FP4_VALUES = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def hf_tensors(seed):
    """Random gpt-oss layer tensors in the Hugging Face checkpoint layout, with spread scales."""
    g = torch.Generator().manual_seed(seed)

    def u8(*shape, low=0, high=256):
        return torch.randint(low, high, shape, generator=g, dtype=torch.uint8)

    def bf16(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).bfloat16()

    return dict(gate_up_blocks=u8(E, 2 * I, H // 32, 16), gate_up_scales=u8(E, 2 * I, H // 32, low=118, high=126),
                gate_up_bias=bf16(E, 2 * I, scale=0.1), down_blocks=u8(E, H, I // 32, 16),
                down_scales=u8(E, H, I // 32, low=118, high=126), down_bias=bf16(E, H, scale=0.1),
                router_weight=bf16(E, H), router_bias=bf16(E))


def cpu_backend_built():
    """Whether this build has the CPU backend (it needs Highway); the reference runs either way."""
    return mxmoe.explain(experts=E, hidden=H, intermediate=I, top_k=K, device="cpu")["chosen"] == "cpu"


def layer(tensors, **kwargs):
    return mxmoe.Layer.from_hf_tensors(**tensors, top_k=K, **kwargs)


def dequantize(blocks, scales):
    """MXFP4 as transformers reads it: low nibble first, value x 2^(scale - 127)."""
    lut = torch.tensor(FP4_VALUES, dtype=torch.float64)
    values = torch.stack([lut[(blocks & 0x0F).long()], lut[(blocks >> 4).long()]], dim=-1).flatten(-2)
    return (values * torch.exp2(scales.double() - 127).unsqueeze(-1)).flatten(-2)


def gpt_oss_experts(t, hidden, ids, weights, alpha=1.702, limit=7.0):
    """transformers' GptOssExperts math in float64: interleaved gate/linear rows, clamped SwiGLU."""
    gate_up_w, down_w = dequantize(t["gate_up_blocks"], t["gate_up_scales"]), dequantize(t["down_blocks"], t["down_scales"])
    x = hidden.double()
    out = torch.zeros_like(x)
    for token in range(x.shape[0]):
        for slot in range(ids.shape[1]):
            e = int(ids[token, slot])
            gate_up = gate_up_w[e] @ x[token] + t["gate_up_bias"][e].double()
            gate, up = gate_up[0::2].clamp(max=limit), gate_up[1::2].clamp(-limit, limit)
            glu = gate * torch.sigmoid(gate * alpha)
            y = down_w[e] @ ((up + 1) * glu) + t["down_bias"][e].double()
            out[token] += float(weights[token, slot]) * y
    return out


def random_routing(tokens, seed):
    g = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(tokens)]).int()
    weights = torch.rand(tokens, K, generator=g) + 0.05
    return ids, weights


def relative_l2(a, b):
    return float((a.double() - b.double()).norm() / b.double().norm())


class ExpertsOp(unittest.TestCase):
    def setUp(self):
        if not cpu_backend_built():
            self.skipTest("this mxmoe was built without the CPU backend (Highway)")
        self.tensors = hf_tensors(seed=torch.seed() % 2**31)
        self.hidden = torch.randn(7, H)
        self.ids, self.weights = random_routing(7, seed=3)

    def test_reads_the_hugging_face_layout_as_transformers_does(self):
        exact = layer(self.tensors, scheme="w4a32", backend="reference")
        got = exact.experts(self.hidden, self.ids, self.weights)
        expected = gpt_oss_experts(self.tensors, self.hidden, self.ids, self.weights)
        self.assertLess(relative_l2(got, expected), 1e-6)

    def test_every_scheme_matches_the_float64_reference(self):
        for scheme, bound in BOUND.items():
            with self.subTest(scheme=scheme):
                cpu = layer(self.tensors, scheme=scheme)
                self.assertEqual(cpu.explain()["chosen"], "cpu")
                reference = layer(self.tensors, scheme=scheme, backend="reference")
                out = torch.full_like(self.hidden, float("nan"))
                out.copy_(cpu.experts(self.hidden, self.ids, self.weights))
                self.assertTrue(torch.isfinite(out).all())
                expected = reference.experts(self.hidden, self.ids, self.weights)
                self.assertLess(relative_l2(out, expected), bound)

    def test_bf16_in_bf16_out(self):
        cpu = layer(self.tensors)
        x = self.hidden.bfloat16()
        out = cpu.experts(x, self.ids, self.weights)
        self.assertEqual(out.dtype, torch.bfloat16)
        self.assertEqual(out.shape, x.shape)
        expected = layer(self.tensors, backend="reference").experts(x.float(), self.ids, self.weights)
        self.assertLess(relative_l2(out, expected), 4e-3)  # the output's bf16 rounding: 2^-9

    def test_whole_layer_routes_like_the_reference(self):
        cpu, reference = layer(self.tensors), layer(self.tensors, backend="reference")
        out, ids, weights = cpu(self.hidden)
        ref_out, ref_ids, ref_weights = reference(self.hidden)
        self.assertEqual(ids.dtype, torch.int32)
        self.assertTrue(torch.equal(ids, ref_ids))
        self.assertTrue(torch.allclose(weights, ref_weights, rtol=1e-6, atol=0))
        self.assertLess(relative_l2(out, ref_out), BOUND["w4a16"])
        # The routing it returns is the routing it used.
        self.assertLess(relative_l2(cpu.experts(self.hidden, ids, weights), out), 1e-7)


class BadInputs(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tensors = hf_tensors(seed=11)
        cls.layer = layer(cls.tensors)
        cls.hidden = torch.randn(4, H)
        cls.ids, cls.weights = random_routing(4, seed=5)

    def assert_raises(self, error, fragment, f, *args, **kwargs):
        with self.assertRaises(error) as caught:
            f(*args, **kwargs)
        self.assertIn(fragment, str(caught.exception))

    def test_wrong_dtypes(self):
        self.assert_raises(TypeError, "hidden states must be torch.float32 or torch.bfloat16, got torch.float64",
                           self.layer.experts, self.hidden.double(), self.ids, self.weights)
        self.assert_raises(TypeError, "topk_ids must be torch.int32, got torch.int64", self.layer.experts, self.hidden,
                           self.ids.long(), self.weights)
        self.assert_raises(TypeError, "topk_weights must be torch.float32", self.layer.experts, self.hidden, self.ids,
                           self.weights.bfloat16())

    def test_wrong_shapes(self):
        self.assert_raises(ValueError, "hidden states must have shape [4, 128], got [4, 64]", self.layer.experts,
                           self.hidden[:, :64].contiguous(), self.ids, self.weights)
        self.assert_raises(ValueError, "must be [tokens, 128]", self.layer.experts, self.hidden.flatten(), self.ids,
                           self.weights)
        self.assert_raises(ValueError, "topk_ids must have shape [4, 2]", self.layer.experts, self.hidden, self.ids[:3],
                           self.weights)

    def test_non_contiguous(self):
        wide = torch.randn(4, 2 * H)
        self.assert_raises(ValueError, "must be contiguous", self.layer.experts, wide[:, ::2], self.ids, self.weights)

    def test_wrong_device(self):
        self.assert_raises(ValueError, "topk_ids is on meta, the layer on cpu", self.layer.experts, self.hidden,
                           self.ids.to("meta"), self.weights)

    def test_non_finite_values(self):
        x = self.hidden.clone()
        x[2, 9] = float("nan")
        self.assert_raises(ValueError, "hidden state of token 2, column 9 is NaN", self.layer.experts, x, self.ids,
                           self.weights)
        self.assert_raises(ValueError, "hidden state of token 2, column 9 is NaN", self.layer, x)
        weights = self.weights.clone()
        weights[1, 0] = float("inf")
        self.assert_raises(ValueError, "token 1 has a non-finite weight", self.layer.experts, self.hidden, self.ids, weights)

    def test_routing_that_is_not_one(self):
        ids = self.ids.clone()
        ids[0, 0] = E
        self.assert_raises(ValueError, "names expert 8, the layer has 8", self.layer.experts, self.hidden, ids, self.weights)
        ids = self.ids.clone()
        ids[1, 1] = ids[1, 0]
        self.assert_raises(ValueError, "twice", self.layer.experts, self.hidden, ids, self.weights)

    def test_bad_layer_tensors(self):
        t = dict(self.tensors, gate_up_scales=self.tensors["gate_up_scales"].float())
        self.assert_raises(TypeError, "gate_up_scales must be torch.uint8", layer, t)
        t = dict(self.tensors, down_bias=self.tensors["down_bias"][:, :64])
        self.assert_raises(ValueError, "down_bias must have shape [8, 128]", layer, t)
        t = dict(self.tensors, gate_up_scales=self.tensors["gate_up_scales"].clone())
        t["gate_up_scales"][0, 0, 0] = 255
        self.assert_raises(ValueError, "NaN", layer, t)
        self.assert_raises(ValueError, "unknown scheme", layer, self.tensors, scheme="w4a2")

    def test_forced_backend_that_cannot_run(self):
        self.assert_raises(RuntimeError, "backend 'cuda'", layer, self.tensors, backend="cuda")
        self.assert_raises(RuntimeError, "unknown", layer, self.tensors, backend="no-such-backend")

    def test_released_layer(self):
        doomed = layer(self.tensors)
        handle = doomed.handle
        del doomed
        self.assert_raises(ValueError, f"no prepared layer with handle {handle}", torch.ops.mxmoe.experts, self.hidden,
                           self.ids, self.weights, handle)


class Router(torch.nn.Module):
    def __init__(self, weight, bias):
        super().__init__()
        self.weight, self.bias, self.top_k = torch.nn.Parameter(weight), torch.nn.Parameter(bias), K


class GptOssMLP(torch.nn.Module):
    """transformers' GptOssMLP as far as mxmoe reads it: router (weight, bias, top_k) and experts
    holding either MXFP4 blocks and scales or dense [E, in, out] weights."""

    def __init__(self, t, dense):
        super().__init__()
        self.router = Router(t["router_weight"].float(), t["router_bias"].float())
        self.experts = torch.nn.Module()
        if dense:
            self.experts.gate_up_proj = dequantize(t["gate_up_blocks"], t["gate_up_scales"]).float().transpose(1, 2)
            self.experts.down_proj = dequantize(t["down_blocks"], t["down_scales"]).float().transpose(1, 2)
        else:
            for name in ("gate_up_blocks", "gate_up_scales", "down_blocks", "down_scales"):
                setattr(self.experts, name.replace("_blocks", "_proj_blocks").replace("_scales", "_proj_scales"), t[name])
        self.experts.gate_up_proj_bias, self.experts.down_proj_bias = t["gate_up_bias"], t["down_bias"]
        self.tensors = t

    @torch.no_grad()
    def forward(self, hidden_states):
        h = hidden_states.reshape(-1, H)
        logits = torch.nn.functional.linear(h, self.router.weight, self.router.bias)
        top_value, top_index = torch.topk(logits, K, dim=-1)
        top_value = torch.softmax(top_value, dim=1)
        scores = torch.zeros_like(logits).scatter_(1, top_index, top_value)
        out = gpt_oss_experts(self.tensors, h, top_index, top_value).float()
        return out.reshape(hidden_states.shape), scores


class FakeLayout:
    """A stand-in for a triton_kernels layout with the interface transformers' re-laid experts carry:
    an invertible re-lay of a tensor of a given shape (the last axis reversed, the last two flattened);
    `broken` reads it back without undoing the reversal."""

    def __init__(self, shape, broken=False):
        self.shape, self.broken = shape, broken

    def swizzle_data(self, data):
        return data.flip(-1).reshape(*self.shape[:-2], -1)

    def unswizzle_data(self, data):
        data = data.reshape(self.shape)
        return data if self.broken else data.flip(-1)


def relaid_for_triton_kernels(mlp, broken=False):
    """The experts as transformers leaves them after handing them to triton_kernels: each projection
    a tensor over re-laid codes [E, K / 2, N] with a precision config holding the scales [E, K / 32, N];
    no *_blocks, no *_scales."""
    from types import SimpleNamespace

    def wrapped(data, broken):
        layout = FakeLayout(tuple(data.shape), broken)
        return SimpleNamespace(storage=SimpleNamespace(data=layout.swizzle_data(data), layout=layout))

    experts = torch.nn.Module()
    for proj in ("gate_up_proj", "down_proj"):
        blocks, scales = getattr(mlp.experts, proj + "_blocks"), getattr(mlp.experts, proj + "_scales")
        codes = blocks.reshape(*blocks.shape[:2], -1).transpose(1, 2)
        setattr(experts, proj, wrapped(codes, broken))
        setattr(experts, proj + "_precision_config", SimpleNamespace(weight_scale=wrapped(scales.transpose(1, 2), False)))
        setattr(experts, proj + "_bias", getattr(mlp.experts, proj + "_bias"))
    relaid = torch.nn.Module()
    relaid.router, relaid.experts = mlp.router, experts
    return relaid


class Model(torch.nn.Module):
    def __init__(self, mlps):
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Module() for _ in mlps)
        for block, mlp in zip(self.layers, mlps):
            block.mlp = mlp


class DropIn(unittest.TestCase):
    def test_replaces_every_gpt_oss_mlp_with_the_same_outputs(self):
        import mxmoe.torch as mx
        for dense in (False, True):
            with self.subTest(dense=dense):
                originals = [GptOssMLP(hf_tensors(seed=20 + i), dense) for i in range(2)]
                model = Model(originals)
                x = torch.randn(2, 3, H)
                expected = [m(x) for m in originals]
                self.assertEqual(mx.replace_moe(model, scheme="w4a32", backend="reference"), 2)
                for block, (out, scores) in zip(model.layers, expected):
                    self.assertIsInstance(block.mlp, mx.GptOssMLP)
                    got, got_scores = block.mlp(x)
                    self.assertEqual(got.shape, x.shape)
                    self.assertTrue(torch.equal(got_scores, scores))
                    # Dense weights that came from MXFP4 quantize back to the same codes: exact.
                    self.assertLess(relative_l2(got, out), 1e-6)
                self.assertEqual(mx.replace_moe(model), 0, "already replaced")

    def test_reads_experts_relaid_for_triton_kernels(self):
        import mxmoe.torch as mx
        mlp = GptOssMLP(hf_tensors(seed=24), dense=False)
        x = torch.randn(5, H)
        expected, _ = mx.GptOssMLP.from_hf(mlp, scheme="w4a32", backend="reference")(x)
        got, _ = mx.GptOssMLP.from_hf(relaid_for_triton_kernels(mlp), scheme="w4a32", backend="reference")(x)
        self.assertTrue(torch.equal(got, expected))
        with self.assertRaisesRegex(ValueError, "do not lay out again as they were read back"):
            mx.GptOssMLP.from_hf(relaid_for_triton_kernels(mlp, broken=True))
        unknown = relaid_for_triton_kernels(mlp)
        unknown.experts.down_proj = object()
        with self.assertRaisesRegex(TypeError, "down_proj is neither a torch tensor nor a triton_kernels tensor"):
            mx.GptOssMLP.from_hf(unknown)

    def test_quantize_reproduces_checkpoint_codes(self):
        t = hf_tensors(seed=4)
        dense = dequantize(t["down_blocks"], t["down_scales"]).float()
        blocks, scales = torch.ops.mxmoe.quantize(dense)
        self.assertTrue(torch.equal(dequantize(blocks, scales), dequantize(t["down_blocks"], t["down_scales"])))
        with self.assertRaises(ValueError):
            torch.ops.mxmoe.quantize(torch.randn(3, 31))


class Explain(unittest.TestCase):
    def test_a_prepared_layers_decision(self):
        decision = layer(hf_tensors(seed=2)).explain()
        self.assertEqual(decision["chosen"], "cpu" if cpu_backend_built() else "reference")
        names = {b["name"] for b in decision["backends"]}
        self.assertTrue({"reference", "cpu", "cuda", "cuda_sm90"} <= names, names)

    def test_planning_for_another_device(self):
        hopper = mxmoe.explain(experts=32, hidden=2880, intermediate=2880, top_k=4, device="sm_90a", scheme="w4a16")
        self.assertEqual(hopper["chosen"], "cuda_sm90")
        ampere = mxmoe.explain(experts=32, hidden=2880, intermediate=2880, top_k=4, device="sm_80", scheme="w4a16")
        self.assertEqual(ampere["chosen"], "cuda")
        refused = mxmoe.explain(experts=32, hidden=2880, intermediate=2880, top_k=4, device="sm_80", scheme="w4a8")
        self.assertIn("no backend can run sm_80 for w4a8", refused["error"])


if __name__ == "__main__":
    unittest.main()
