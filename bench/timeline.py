#!/usr/bin/env python3
"""Summarizes `mxmoe_bench_cuda --timeline FILE` (a build configured with -DMXMOE_TIMELINE=ON):
per point, per kernel in launch order, each event's earliest, median and latest time over the
kernel's blocks, in us from the run's first stamp. Event names are those the kernels document
where they stamp (src/backends/cuda/timeline.hpp).

    bench/timeline.py FILE [--blocks KERNEL]   # --blocks also lists that kernel's blocks one by one

FILE may be xz-compressed (FILE.xz), as the timelines kept in docs/results/ are.
"""
import argparse
import json
import lzma
import statistics

EVENTS = {
    "router": ["start", "end"],
    "topk": ["start", "waited", "end"],
    "rank": ["start", "waited", "end"],
    "gate_up": ["start", "waited", "tile", "ring filled", "-", "loop done", "end"],
    "down": ["start", "-", "tile", "ring filled", "waited", "loop done", "end"],
    "combine": ["start", "waited", "end"],
    "decode_route": ["start", "logits"],
    "decode_gate_up": ["start", "waited", "routed", "first copy", "staged", "items done"],
    "decode_down": ["start", "-", "routed", "first copy", "staged", "items done"],
}


def summarize(point, blocks_of):
    print(f"\n{point['shape']} {point['scheme']} {point['backend']} T={point['tokens']} (us; min / median / max over blocks)")
    for name, blocks in point["kernels"].items():
        names = EVENTS.get(name, [])
        sms = {b[1] for b in blocks}
        print(f"  {name}: {len(blocks)} blocks on {len(sms)} SMs")
        for e, label in enumerate(names):
            times = [b[2 + e] / 1000.0 for b in blocks if b[2 + e] >= 0]
            if label == "-" or not times:
                continue
            print(f"    {label:>12}: {min(times):8.2f} {statistics.median(times):8.2f} {max(times):8.2f}  ({len(times)} blocks)")
        if name == blocks_of:
            for b in sorted(blocks, key=lambda b: b[2]):
                cells = " ".join(f"{t / 1000.0:7.2f}" if t >= 0 else "      -" for t in b[2:2 + len(names)])
                print(f"      block {b[0]:5d} sm {b[1]:3d}: {cells}")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file")
    parser.add_argument("--blocks", help="list this kernel's blocks one by one")
    args = parser.parse_args()
    with (lzma.open if args.file.endswith(".xz") else open)(args.file, "rt") as f:
        for point in json.load(f):
            summarize(point, args.blocks)


if __name__ == "__main__":
    main()
