#!/usr/bin/env python3
"""Summarizes `mxmoe_bench_cuda --timeline FILE` (a build configured with -DMXMOE_TIMELINE=ON):
per point, per kernel in launch order, each event's earliest, median and latest time over the
kernel's blocks, in us from the run's first stamp. Event names are those the kernels document
where they stamp (src/backends/cuda/timeline.hpp).

    bench/timeline.py FILE [--blocks KERNEL]   # --blocks also lists that kernel's blocks one by one
    bench/timeline.py FILE --occupancy gate_up,down [--step 10]
        # blocks resident (start to end) per time step, and the idle slots of the kernel's last
        # wave as an equivalent time (slots free while its blocks run, over its peak residency)

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
    "decode_gate_up": ["start", "waited", "routed", "first copy", "staged", "items done", "route top-k", "route synced",
                       "loads issued"],
    "decode_down": ["start", "waited", "routed", "first copy", "staged", "items done", "route top-k", "route synced"],
}
# A block's last event, where it is not the last one listed.
LAST = {"decode_gate_up": "items done", "decode_down": "items done"}


def event_time(block, e):
    """Event e of a block in ns, or -1 (not stamped, or past the events of an older file)."""
    return block[2 + e] if 2 + e < len(block) else -1


def point_name(point):
    # Files that gather several builds' recordings label each point with its build.
    build = f" [{point['build']}]" if "build" in point else ""
    return f"{point['shape']} {point['scheme']} {point['backend']} T={point['tokens']}{build}"


def summarize(point, blocks_of):
    print(f"\n{point_name(point)} (us; min / median / max over blocks)")
    for name, blocks in point["kernels"].items():
        names = EVENTS.get(name, [])
        sms = {b[1] for b in blocks}
        print(f"  {name}: {len(blocks)} blocks on {len(sms)} SMs")
        for e, label in enumerate(names):
            times = [event_time(b, e) / 1000.0 for b in blocks if event_time(b, e) >= 0]
            if label == "-" or not times:
                continue
            print(f"    {label:>12}: {min(times):8.2f} {statistics.median(times):8.2f} {max(times):8.2f}  ({len(times)} blocks)")
        if name == blocks_of:
            for b in sorted(blocks, key=lambda b: b[2]):
                cells = " ".join(f"{t / 1000.0:7.2f}" if t >= 0 else "      -" for t in b[2:2 + len(names)])
                print(f"      block {b[0]:5d} sm {b[1]:3d}: {cells}")


def occupancy(point, kernels, step_us):
    """Resident blocks per time step of each kernel in `kernels` (blocks that ended; start to end)."""
    for name in kernels:
        blocks = point["kernels"].get(name)
        if not blocks:
            continue
        names = EVENTS.get(name, [])
        end_event = names.index(LAST[name]) if name in LAST else len(names) - 1
        spans = [(b[2] / 1000.0, event_time(b, end_event) / 1000.0) for b in blocks if event_time(b, end_event) >= 0]
        if not spans:
            continue
        first, last = min(s for s, _ in spans), max(e for _, e in spans)
        fine = 0.1  # us: residency is counted at this grain, printed every step_us
        fine_steps = int((last - first) / fine) + 1
        fine_resident = [0] * fine_steps
        for s, e in spans:
            for i in range(int((s - first) / fine), min(fine_steps, int((e - first) / fine))):
                fine_resident[i] += 1
        resident = fine_resident[::max(1, round(step_us / fine))]
        peak = max(fine_resident)
        idle = sum(peak - r for r in fine_resident) * fine / peak
        print(f"  {name}: {len(spans)} blocks from {first:.1f} to {last:.1f} us, at most {peak} resident; "
              f"idle slots worth {idle:.1f} us")
        print("    " + " ".join(f"{first + i * step_us:.0f}:{r}" for i, r in enumerate(resident)))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("file")
    parser.add_argument("--blocks", help="list this kernel's blocks one by one")
    parser.add_argument("--occupancy", help="comma-separated kernels: resident blocks over time instead of the summary")
    parser.add_argument("--step", type=float, default=10.0, help="time step of --occupancy, us")
    args = parser.parse_args()
    with (lzma.open if args.file.endswith(".xz") else open)(args.file, "rt") as f:
        for point in json.load(f):
            if args.occupancy:
                print(f"\n{point_name(point)}")
                occupancy(point, args.occupancy.split(","), args.step)
            else:
                summarize(point, args.blocks)


if __name__ == "__main__":
    main()
