"""The mxmoe PyTorch package on a GPU: against transformers' own gpt-oss MoE, under CUDA graphs and
torch.compile, and a small gpt-oss model generating with mxmoe's experts. Skips (saying why) without
a CUDA GPU in this PyTorch or without transformers."""
import unittest

import torch

import mxmoe

try:
    import mxmoe.torch as mx
    from transformers import GptOssConfig
    from transformers.models.gpt_oss import modeling_gpt_oss as hf
except ImportError as error:  # transformers is not a dependency of the package
    hf = None
    missing = str(error)

from test_cpu import BOUND, dequantize, hf_tensors, random_routing, relative_l2

NEEDS = None
if not torch.cuda.is_available():
    NEEDS = "no CUDA GPU in this PyTorch"
elif hf is None:
    NEEDS = f"transformers is not installed ({missing})"
# What each scheme costs against exact activations on these layers (docs/EVALS.md's thresholds).
SCHEME_COST = {"w4a16": 1e-2, "w4a8": 0.1, "w4a4": 0.5}
CUDA = torch.device("cuda")
LOGITS_BOUND = 5e-2  # w4a16 through the two MoE layers of the small model below


def config(hidden=256, intermediate=256, experts=8, top_k=2, layers=2):
    return GptOssConfig(vocab_size=512, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=64, num_local_experts=experts,
                        num_experts_per_tok=top_k, sliding_window=64, max_position_embeddings=256,
                        layer_types=["sliding_attention", "full_attention"][:layers] * (layers // 2 or 1))


def set_mxfp4_experts(mlp, seed):
    """Gives a transformers GptOssMLP random MXFP4 experts (dense values exactly representable)."""
    e, h, two_i = mlp.experts.gate_up_proj.shape
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, rows, cols in (("gate_up_proj", two_i, h), ("down_proj", h, two_i // 2)):
            blocks = torch.randint(0, 256, (e, rows, cols // 32, 16), generator=g, dtype=torch.uint8)
            scales = torch.randint(119, 125, (e, rows, cols // 32), generator=g, dtype=torch.uint8)
            getattr(mlp.experts, name).copy_(dequantize(blocks, scales).transpose(1, 2))
            getattr(mlp.experts, name + "_bias").copy_(torch.randn(e, rows, generator=g) * 0.1)
        mlp.router.weight.copy_(torch.randn(mlp.router.weight.shape, generator=g))
        mlp.router.bias.copy_(torch.randn(mlp.router.bias.shape, generator=g))


def first(output):
    return output[0] if isinstance(output, tuple) else output


@unittest.skipIf(NEEDS, NEEDS)
class AgainstTransformers(unittest.TestCase):
    def test_every_scheme_against_transformers_gpt_oss_mlp(self):
        cfg = config()
        mlp = hf.GptOssMLP(cfg).float().eval()
        set_mxfp4_experts(mlp, seed=1)
        x = torch.randn(1, 33, cfg.hidden_size)  # transformers' MLP takes [batch, sequence, hidden]
        with torch.no_grad():
            expected = first(mlp.to(CUDA)(x.to(CUDA))).double().cpu()
        for scheme in ("w4a16", "w4a8", "w4a4"):
            with self.subTest(scheme=scheme):
                ours = mx.GptOssMLP.from_hf(mlp, scheme=scheme)
                self.assertIn("cuda", ours.layer.explain()["chosen"])
                out = first(ours(x.to(CUDA)))
                self.assertEqual(out.device.type, "cuda")
                # The scheme's cost against transformers' exact float32 activations...
                self.assertLess(relative_l2(out.cpu(), expected), SCHEME_COST[scheme])
                # ...and the kernel's error against mxmoe's float64 reference of the same scheme.
                reference = mx.GptOssMLP.from_hf(mlp.cpu(), scheme=scheme, backend="reference")
                mlp.to(CUDA)
                self.assertLess(relative_l2(out.cpu(), first(reference(x))), BOUND[scheme])


@unittest.skipIf(NEEDS, NEEDS)
class Capture(unittest.TestCase):
    def setUp(self):
        t = {name: value.to(CUDA) for name, value in hf_tensors(seed=3).items()}
        self.layer = mxmoe.Layer.from_hf_tensors(**t, top_k=2)
        self.x = torch.randn(48, 128, device=CUDA, dtype=torch.bfloat16)
        ids, weights = random_routing(48, seed=4)
        self.ids, self.weights = ids.to(CUDA), weights.to(CUDA)

    def test_cuda_graph_replays_give_the_same_bits(self):
        eager = self.layer.experts(self.x, self.ids, self.weights)
        torch.cuda.synchronize()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self.layer.experts(self.x, self.ids, self.weights)  # warm-up on the capture stream
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = self.layer.experts(self.x, self.ids, self.weights)
        for _ in range(3):
            captured.fill_(float("nan"))
            graph.replay()
            torch.cuda.synchronize()
            self.assertTrue(torch.equal(captured, eager))

    def test_eager_calls_run_in_order_on_torchs_current_stream(self):
        batches = [torch.randn(4096, 128, device=CUDA) for _ in range(3)]
        ids, weights = random_routing(4096, seed=6)
        ids, weights = ids.to(CUDA), weights.to(CUDA)
        expected = []
        for x in batches:
            expected.append(self.layer.experts(x, ids, weights))
            torch.cuda.synchronize()
        # No waits: each result is read by the next operation on torch's stream.
        got = [self.layer.experts(x, ids, weights).clone() for x in batches]
        for a, b in zip(got, expected):
            self.assertTrue(torch.equal(a, b))

    def test_whole_layer_graph_replay(self):
        out, ids, weights = self.layer(self.x)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = self.layer(self.x)
        graph.replay()
        torch.cuda.synchronize()
        for got, want in zip(captured, (out, ids, weights)):
            self.assertTrue(torch.equal(got, want))

    def test_torch_compile(self):
        def block(x, ids, weights):
            return self.layer.experts(torch.nn.functional.silu(x), ids, weights) * 2

        compiled = torch.compile(block, fullgraph=True)
        self.assertTrue(torch.equal(compiled(self.x, self.ids, self.weights), block(self.x, self.ids, self.weights)))

    def test_bad_inputs_on_the_gpu(self):
        with self.assertRaisesRegex(ValueError, "hidden states is on cpu, the layer on cuda"):
            self.layer.experts(self.x.cpu(), self.ids, self.weights)
        with self.assertRaisesRegex(TypeError, "topk_ids must be torch.int32"):
            self.layer.experts(self.x, self.ids.long(), self.weights)


def triton_kernels_or_why():
    """triton_kernels from TRITON_KERNELS_SRC (the folder holding the package, as scripts/peer-bench
    takes it), or why it cannot be imported."""
    import os
    import sys
    source = os.environ.get("TRITON_KERNELS_SRC")
    if not source:
        return None, "TRITON_KERNELS_SRC is not set (the folder holding the triton_kernels package)"
    sys.path.insert(0, source)
    try:
        import triton_kernels
        import triton_kernels.tensor
        import triton_kernels.tensor_details.layout
        return triton_kernels, None
    except ImportError as error:
        return None, f"triton_kernels does not import from {source}: {error}"


@unittest.skipIf(NEEDS, NEEDS)
class RelaidForTritonKernels(unittest.TestCase):
    def test_reads_experts_transformers_relaid(self):
        """transformers' own re-lay (swizzle_mxfp4, as its MXFP4 loader calls it on GPUs that run
        triton_kernels) read back by from_hf: the same layer, bit for bit, as from the blocks."""
        from types import SimpleNamespace
        from transformers.integrations import mxfp4 as hf_mxfp4
        from test_cpu import GptOssMLP as CheckpointMLP
        triton_kernels, why = triton_kernels_or_why()
        if triton_kernels is None:
            self.skipTest(why)
        mlp = CheckpointMLP({name: value.to(CUDA) for name, value in hf_tensors(seed=5).items()}, dense=False)
        relaid = torch.nn.Module()
        relaid.router, relaid.experts = mlp.router, torch.nn.Module()
        for proj in ("gate_up_proj", "down_proj"):
            blocks, scales = getattr(mlp.experts, proj + "_blocks"), getattr(mlp.experts, proj + "_scales")
            codes = blocks.reshape(*blocks.shape[:2], -1).contiguous()
            weight, weight_scale = hf_mxfp4.swizzle_mxfp4(codes.transpose(-2, -1), scales.transpose(-2, -1),
                                                          triton_kernels)
            setattr(relaid.experts, proj, weight)
            setattr(relaid.experts, proj + "_precision_config", SimpleNamespace(weight_scale=weight_scale))
            setattr(relaid.experts, proj + "_bias", getattr(mlp.experts, proj + "_bias"))
        print(f"\n  codes re-laid as {type(relaid.experts.gate_up_proj.storage.layout).__name__}")
        x = torch.randn(7, 128, device=CUDA)
        expected, _ = mx.GptOssMLP.from_hf(mlp)(x)
        got, _ = mx.GptOssMLP.from_hf(relaid)(x)
        self.assertTrue(torch.equal(got, expected))


def assert_generates_like_transformers(test, model, prompt):
    """Generates 32 greedy tokens with the model's own MoE, replaces its MoE layers with mxmoe's
    (w4a16) and generates again: logits within LOGITS_BOUND at every position of transformers'
    sequence, and the same tokens up to a near tie of transformers' own top two logits."""
    kwargs = dict(max_new_tokens=32, do_sample=False, output_logits=True, return_dict_in_generate=True)
    with torch.no_grad():
        theirs = model.generate(prompt, **kwargs)
        their_logits = model(theirs.sequences).logits[0].double().cpu()
        test.assertEqual(mx.replace_moe(model, scheme="w4a16"), len(model.model.layers))
        ours = model.generate(prompt, **kwargs)
        # Both MoEs on the same tokens (transformers' sequence): every position's logits.
        our_logits = model(theirs.sequences).logits[0].double().cpu()
    errors = [relative_l2(our_logits[p], their_logits[p]) for p in range(their_logits.shape[0])]
    print(f"\n  logits against transformers' float32 MoE: relative L2 at most {max(errors):.3g} over "
          f"{len(errors)} positions")
    # Two layers of bf16-rounded activations compound what one layer's 1e-2 allows.
    test.assertLess(max(errors), LOGITS_BOUND)
    generated = theirs.sequences.shape[1] - prompt.shape[1]
    differing = [step for step in range(generated)
                 if theirs.sequences[0, prompt.shape[1] + step] != ours.sequences[0, prompt.shape[1] + step]]
    if differing:
        # Greedy decoding may part at a near tie: allowed only where transformers' own top two
        # logits are closer than the two MoEs' logits differ there.
        step = differing[0]
        position = prompt.shape[1] + step - 1
        top2 = their_logits[position].topk(2).values
        margin = float(top2[0] - top2[1])
        gap = float((our_logits[position] - their_logits[position]).abs().max())
        print(f"\n  generation parts at step {step} of {generated}: transformers' top-two margin {margin:.3g}, "
              f"largest logit difference there {gap:.3g}")
        test.assertLess(margin, 2 * gap, f"tokens differ from step {step} without a near tie")


@unittest.skipIf(NEEDS, NEEDS)
class Generate(unittest.TestCase):
    def test_a_small_gpt_oss_generates_the_same_tokens(self):
        torch.manual_seed(0)
        cfg = config(layers=2)
        model = hf.GptOssForCausalLM(cfg).float().eval()
        for i, layer in enumerate(model.model.layers):
            set_mxfp4_experts(layer.mlp, seed=10 + i)
        model.to(CUDA)
        assert_generates_like_transformers(self, model, torch.randint(0, cfg.vocab_size, (1, 8), device=CUDA))

    def test_an_mxfp4_checkpoint_from_mxmoe_quantize_loads_and_generates(self):
        """A small gpt-oss saved by transformers, converted to the Hugging Face MXFP4 layout by
        `mxmoe quantize`, loaded back by transformers (dequantized) and handed to mxmoe: transformers
        reads back the experts that were written, and mxmoe's MoE generates what transformers' does."""
        import os
        import subprocess
        import tempfile
        from transformers import Mxfp4Config
        cli = os.environ.get("MXMOE_CLI") or os.path.join(os.path.dirname(mxmoe.__file__), os.pardir, os.pardir, "mxmoe")
        if not os.path.isfile(cli):
            self.skipTest(f"no mxmoe command at {cli} (MXMOE_CLI names it)")
        torch.manual_seed(1)
        cfg = config(layers=2)
        model = hf.GptOssForCausalLM(cfg).float().eval()
        for i, layer in enumerate(model.model.layers):
            set_mxfp4_experts(layer.mlp, seed=30 + i)
        with tempfile.TemporaryDirectory() as root:
            dense, quantized = os.path.join(root, "dense"), os.path.join(root, "mxfp4")
            model.save_pretrained(dense)
            subprocess.run([cli, "quantize", "--checkpoint", dense, "--output", quantized], check=True)
            loaded = hf.GptOssForCausalLM.from_pretrained(quantized, quantization_config=Mxfp4Config(dequantize=True),
                                                          dtype=torch.float32).eval()
        for written, read in zip(model.model.layers, loaded.model.layers):
            for proj in ("gate_up_proj", "down_proj"):
                self.assertTrue(torch.equal(getattr(read.mlp.experts, proj).float().cpu(),
                                            getattr(written.mlp.experts, proj).float()), proj)
        # Mxfp4Config(dequantize=True) leaves the experts in bf16 beside float32 layers, which
        # transformers' own MoE refuses to multiply: float32 throughout, as the other model runs.
        loaded.float().to(CUDA)
        assert_generates_like_transformers(self, loaded, torch.randint(0, cfg.vocab_size, (1, 8), device=CUDA))


if __name__ == "__main__":
    unittest.main()
