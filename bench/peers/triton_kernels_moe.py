#!/usr/bin/env python3
"""mxmoe against OpenAI's triton_kernels (vLLM's default MXFP4 MoE on Hopper), side by side.

Both whole gpt-oss MoE layers (router, top-4 routing, gate_up with SwiGLU, down, the weighted sum
over the k experts) are timed the same way on the same card in the same run: CUDA-graph replays
between CUDA events, the median over many replays, rotating several input batches so that repeated
replays do not just hit L2. mxmoe's numbers come from its own benchmark binary (bench_cuda.cpp,
which times graph replays of the device-pointer entry point the same way); the peer's from this
script. The same run measures the ceilings: device-to-device copy bandwidth and cuBLAS bf16.

The peer's source is never part of mxmoe: pass the folder that holds the `triton_kernels` package
(python/triton_kernels of the triton repository at the version matching the installed triton) with
--triton-kernels or TRITON_KERNELS_SRC. Without it, mxmoe is still timed and the peer column is empty.
With --rounds N both are timed N times, alternating, and the smallest ratio per point is reported:
where the two are within a percent, one round does not say which is faster.
"""
import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile

import torch

MODELS = {"gpt-oss-20b": 32, "gpt-oss-120b": 128}  # experts; H = I = 2880, top-4
HIDDEN = INTERMEDIATE = 2880
TOP_K = 4
BATCHES = 4


def time_graphs(fns, reps):
    """Median ms of CUDA-graph replays of fns[i % len(fns)]."""
    graphs = []
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        for fn in fns:  # warm-up outside capture: compilation, autotuning, allocations
            fn()
            fn()
    torch.cuda.synchronize()
    for fn in fns:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, stream=stream):
            fn()
        graphs.append(g)
    for g in graphs:
        g.replay()
    torch.cuda.synchronize()
    times = []
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for i in range(reps):
        start.record()
        graphs[i % len(graphs)].replay()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


def copy_bandwidth_gbs():
    n = 1 << 31
    a = torch.empty(n, dtype=torch.uint8, device="cuda").fill_(1)
    b = torch.empty_like(a)
    for _ in range(2):
        b.copy_(a)
    torch.cuda.synchronize()
    times = []
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(10):
        start.record()
        b.copy_(a)
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return 2 * n / (statistics.median(times) * 1e-3) / 1e9


def cublas_bf16_tflops():
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    ms = time_graphs([lambda: torch.matmul(a, b)], 20)
    return 2 * n**3 / (ms * 1e-3) / 1e12


class PeerLayer:
    """The gpt-oss MoE layer through triton_kernels, built as its bench_mlp.py builds it."""

    def __init__(self, experts):
        from triton_kernels.matmul_ogs import FnSpecs, FusedActivation, PrecisionConfig, FlexCtx, matmul_ogs
        from triton_kernels.matmul_ogs import GatherIndx, RoutingData, ScatterIndx
        from triton_kernels.numerics import InFlexData
        from triton_kernels.numerics_details.mxfp import downcast_to_mxfp
        from triton_kernels.tensor import FP4, convert_layout, wrap_torch_tensor
        from triton_kernels.tensor_details import layout
        from triton_kernels.tensor_details.ragged_tensor import make_ragged_tensor_metadata
        from triton_kernels.topk import topk
        import triton_kernels.swiglu

        self.matmul_ogs, self.topk = matmul_ogs, topk
        self.GatherIndx, self.ScatterIndx, self.RoutingData = GatherIndx, ScatterIndx, RoutingData
        self.make_ragged_tensor_metadata = make_ragged_tensor_metadata
        self.experts = experts
        dev = "cuda"
        torch.manual_seed(0)
        self.wg = torch.randn(HIDDEN, experts, device=dev).to(torch.bfloat16)
        self.bg = torch.randn(experts, device=dev)
        w1 = torch.randn(experts, HIDDEN, 2 * INTERMEDIATE, device=dev) * 0.02
        w2 = torch.randn(experts, INTERMEDIATE, HIDDEN, device=dev) * 0.02
        self.b1 = torch.randn(experts, 2 * INTERMEDIATE, device=dev)
        self.b2 = torch.randn(experts, HIDDEN, device=dev)

        def quantize(w, num_warps):
            values, scales = downcast_to_mxfp(w.to(torch.bfloat16), torch.uint8, axis=1)
            value_layout, value_opts = layout.make_default_matmul_mxfp4_w_layout(mx_axis=1)
            scale_layout, scale_opts = layout.make_default_matmul_mxfp4_w_scale_layout(mx_axis=1, num_warps=num_warps)
            values = convert_layout(wrap_torch_tensor(values, dtype=FP4), value_layout, **value_opts)
            scales = convert_layout(wrap_torch_tensor(scales), scale_layout, **scale_opts)
            return values, scales

        self.weights = {}
        for num_warps in (4, 8):  # bench_mlp.py: 4 warps up to 512 tokens, else 8
            w1q, w1s = quantize(w1, num_warps)
            w2q, w2s = quantize(w2, num_warps)
            self.weights[num_warps] = (w1q, PrecisionConfig(flex_ctx=FlexCtx(rhs_data=InFlexData()), weight_scale=w1s),
                                       w2q, PrecisionConfig(flex_ctx=FlexCtx(rhs_data=InFlexData()), weight_scale=w2s))
        del w1, w2
        self.pcg = PrecisionConfig(flex_ctx=FlexCtx(rhs_data=InFlexData()))
        self.act = FusedActivation(FnSpecs("swiglu", triton_kernels.swiglu.swiglu_fn, ("alpha", "limit"), reduction_n=2),
                                   (1.702, 7.0))

    def forward(self, x):
        tokens = x.shape[0]
        w1, pc1, w2, pc2 = self.weights[4 if tokens <= 512 else 8]
        logits = self.matmul_ogs(x, self.wg, self.bg, precision_config=self.pcg)
        sparse = self.topk(logits, TOP_K, apply_softmax=True)
        dispatch = sparse.mask_metadata.row_sorted_indx
        combine = sparse.mask_metadata.col_sorted_indx
        ragged = self.make_ragged_tensor_metadata(sparse.mask_metadata.col_sum, dispatch.shape[0])
        rdata = self.RoutingData(sparse.vals.flatten()[combine], ragged.slice_sizes, self.experts, TOP_K, ragged)
        h = self.matmul_ogs(x, w1, self.b1, rdata, gather_indx=self.GatherIndx(combine, dispatch), precision_config=pc1,
                            fused_activation=self.act)
        return self.matmul_ogs(h, w2, self.b2, rdata, scatter_indx=self.ScatterIndx(dispatch, combine),
                               precision_config=pc2)


def time_peer(model, tokens_list, reps):
    layer = PeerLayer(MODELS[model])
    times = {}
    for tokens in tokens_list:
        xs = [torch.randn(tokens, HIDDEN, device="cuda").to(torch.bfloat16) for _ in range(BATCHES)]
        outs = [None] * BATCHES

        def make(i):
            def run():
                outs[i] = layer.forward(xs[i])
            return run

        times[tokens] = time_graphs([make(i) for i in range(BATCHES)], reps)
        assert outs[0].shape == (tokens, HIDDEN), outs[0].shape
        print(f"  peer {model} T={tokens}: {times[tokens] * 1e3:.1f} us", flush=True)
    return times


def time_mxmoe(bench, models, schemes, tokens_list, reps):
    with tempfile.NamedTemporaryFile(suffix=".json") as f:
        cmd = [bench, "--json", f.name, "--shapes", ",".join(models), "--schemes", ",".join(schemes), "--tokens",
               ",".join(map(str, tokens_list)), "--reps", str(reps)]
        print("  " + " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        data = json.load(open(f.name))
    return {(r["shape"], r["scheme"], r["tokens"]): r for r in data["runs"]}, data


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--triton-kernels", default=os.environ.get("TRITON_KERNELS_SRC"),
                   help="folder holding the triton_kernels package (default: $TRITON_KERNELS_SRC)")
    p.add_argument("--mxmoe-bench", default="build-gpu/bench/mxmoe_bench_cuda")
    p.add_argument("--models", default="gpt-oss-20b,gpt-oss-120b")
    p.add_argument("--schemes", default="w4a16")
    p.add_argument("--tokens", default="1,16,128,1024,8192")
    p.add_argument("--reps", type=int, default=100)
    p.add_argument("--results-dir", default="docs/results")
    p.add_argument("--rounds", type=int, default=1, help="time both this many times, alternating (default 1)")
    args = p.parse_args()
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    models = args.models.split(",")
    schemes = args.schemes.split(",")
    tokens_list = [int(t) for t in args.tokens.split(",")]

    gpu = torch.cuda.get_device_name()
    copy_gbs, cublas = copy_bandwidth_gbs(), cublas_bf16_tflops()
    print(f"GPU: {gpu}; copy {copy_gbs:.0f} GB/s (read + write); cuBLAS bf16 8192^3 {cublas:.0f} TFLOP/s", flush=True)

    have_peer = bool(args.triton_kernels and os.path.isdir(os.path.join(args.triton_kernels, "triton_kernels")))
    if have_peer:
        sys.path.insert(0, args.triton_kernels)
        import triton
        peer_note = f"triton_kernels from {args.triton_kernels}, triton {triton.__version__}"
    else:
        peer_note = "peer not timed: no triton_kernels source given (--triton-kernels or TRITON_KERNELS_SRC)"
    print(peer_note, flush=True)

    # Rounds alternate the two in one process, so that a ratio near 1 can be told from the spread.
    rows, raws = [], []
    for rnd in range(1, args.rounds + 1):
        peer = {}
        if have_peer:
            for model in models:
                peer[model] = time_peer(model, tokens_list, args.reps)
                torch.cuda.empty_cache()
        mx, raw = time_mxmoe(args.mxmoe_bench, models, schemes, tokens_list, args.reps)
        raws.append(raw)
        print(f"\n{'model':<13} {'scheme':<6} {'backend':<9} {'T':>5} {'mxmoe us':>9} {'peer us':>9} {'peer/mxmoe':>10} "
              f"{'mxmoe TB/s':>10} {'of copy':>7} {'TFLOP/s':>8}" + (f"   round {rnd} of {args.rounds}" if args.rounds > 1 else ""))
        for model in models:
            for scheme in schemes:
                for tokens in tokens_list:
                    r = mx[(model, scheme, tokens)]
                    mx_us = r["ms"] * 1e3
                    peer_us = peer[model][tokens] * 1e3 if model in peer else None
                    rows.append({"model": model, "scheme": scheme, "tokens": tokens, "mxmoe_us": round(mx_us, 2),
                                 "peer_us": round(peer_us, 2) if peer_us else None, "round": rnd,
                                 "mxmoe_weight_gbs": round(r["weight_gbs"], 1), "mxmoe_tflops": round(r["tflops"], 1),
                                 "backend": r.get("backend"), "small_batch_path": r.get("small_batch_path")})
                    ratio = f"{peer_us / mx_us:10.2f}" if peer_us else f"{'-':>10}"
                    peer_col = f"{peer_us:9.1f}" if peer_us else f"{'-':>9}"
                    print(f"{model:<13} {scheme:<6} {r.get('backend', ''):<9} {tokens:>5} {mx_us:9.1f} {peer_col} {ratio} "
                          f"{r['weight_gbs'] / 1e3:10.2f} {r['weight_gbs'] / copy_gbs:7.2f} {r['tflops']:8.1f}")
    if have_peer and args.rounds > 1:
        print(f"\nover {args.rounds} rounds: the smallest peer/mxmoe per point")
        for model in models:
            for scheme in schemes:
                for tokens in tokens_list:
                    ratios = [r["peer_us"] / r["mxmoe_us"] for r in rows
                              if (r["model"], r["scheme"], r["tokens"]) == (model, scheme, tokens)]
                    print(f"{model:<13} {scheme:<6} {tokens:>5} {min(ratios):8.3f}  "
                          f"{'ahead in every round' if min(ratios) >= 1 else 'behind in a round'}")
    slug = gpu.lower().replace("nvidia ", "").split()[0]
    os.makedirs(args.results_dir, exist_ok=True)
    path = os.path.join(args.results_dir, f"{datetime.date.today()}-{slug}-vs-triton_kernels.json")
    json.dump({"gpu": gpu, "copy_bandwidth_gbs": round(copy_gbs, 1), "cublas_bf16_tflops": round(cublas, 1),
               "peer": peer_note, "method": "CUDA-graph replays, events, median, 4 rotating input batches",
               "rounds": args.rounds, "rows": rows, "mxmoe_raw": raws[0] if len(raws) == 1 else raws},
              open(path, "w"), indent=1)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
