#!/usr/bin/env python3
"""What the PyTorch binding costs per call on a GPU: torch.ops.mxmoe.experts called eagerly, back
to back (what a user's loop sees: the binding, the checks and the launches), against replays of
the same call captured in a CUDA graph (the kernels alone), at gpt-oss-20b shape.

    PYTHONPATH=build/python python3 bench/bench_torch_op.py [--tokens 1,128,8192] [--reps 200]
"""
import argparse

import torch

import mxmoe


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", default="1,128,8192")
    parser.add_argument("--reps", type=int, default=200)
    args = parser.parse_args()
    E, H, I, K = 32, 2880, 2880, 4
    dev = torch.device("cuda")
    g = torch.Generator(device="cpu").manual_seed(0)

    def u8(*shape, low=0, high=256):
        return torch.randint(low, high, shape, generator=g, dtype=torch.uint8).to(dev)

    layer = mxmoe.Layer.from_hf_tensors(
        u8(E, 2 * I, H // 32, 16), u8(E, 2 * I, H // 32, low=119, high=125), torch.randn(E, 2 * I).bfloat16().to(dev),
        u8(E, H, I // 32, 16), u8(E, H, I // 32, low=119, high=125), torch.randn(E, H).bfloat16().to(dev),
        torch.randn(E, H).bfloat16().to(dev), torch.randn(E).bfloat16().to(dev), top_k=K)
    print(f"{torch.cuda.get_device_name()}, backend {layer.explain()['chosen']}, torch {torch.__version__}")
    print(f"{'T':>6} {'eager us/call':>14} {'graph us/call':>14} {'binding + launch us':>20}")
    for tokens in (int(t) for t in args.tokens.split(",")):
        x = torch.randn(tokens, H, device=dev, dtype=torch.bfloat16)
        ids = torch.stack([torch.randperm(E, generator=g)[:K] for _ in range(tokens)]).int().to(dev)
        weights = torch.rand(tokens, K, generator=g).to(dev)
        for _ in range(5):
            layer.experts(x, ids, weights)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            layer.experts(x, ids, weights)

        def per_call_us(step):
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            for _ in range(args.reps):
                step()
            stop.record()
            torch.cuda.synchronize()
            return start.elapsed_time(stop) * 1e3 / args.reps

        eager = per_call_us(lambda: layer.experts(x, ids, weights))
        replay = per_call_us(graph.replay)
        print(f"{tokens:>6} {eager:>14.1f} {replay:>14.1f} {eager - replay:>20.1f}")


if __name__ == "__main__":
    main()
