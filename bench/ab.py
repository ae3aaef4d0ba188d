#!/usr/bin/env python3
"""Two or more mxmoe builds timed against each other on one machine, in one run.

Each build's benchmark binary (mxmoe_bench_cuda, or anything that writes its --json format) runs
the same points in turn, round after round: the builds alternate, so drift in clocks, temperature
or neighbours on a shared machine falls on all of them alike. One table gives each point's time per
round and build, and each build's change against the first build (mean over the rounds). Where
the change is within the rounds' own spread, it is no change.

    bench/ab.py [--rounds N] [--json FILE] NAME=BINARY NAME=BINARY ... -- [benchmark options]

For example, on a GPU machine with two builds of the same tree:

    bench/ab.py main=build-main/bench/mxmoe_bench_cuda new=build/bench/mxmoe_bench_cuda -- \\
        --backend cuda_sm90 --shapes gpt-oss-20b,gpt-oss-120b --schemes w4a16 --tokens 1,128,8192 --reps 30
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile


def parse_builds(specs):
    builds = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"ab: a build is NAME=BINARY, got {spec!r}")
        if name in builds:
            raise SystemExit(f"ab: build {name!r} named twice")
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            raise SystemExit(f"ab: build {name!r}: {path} is not an executable file")
        builds[name] = path
    if len(builds) < 2:
        raise SystemExit("ab: name at least two builds to compare")
    return builds


def run_once(binary, bench_args):
    """The binary's runs as {(shape, scheme, tokens): microseconds} (CUDA-graph medians)."""
    with tempfile.TemporaryDirectory() as folder:
        out = os.path.join(folder, "runs.json")
        subprocess.run([binary, "--json", out, *bench_args], check=True, stdout=subprocess.DEVNULL)
        with open(out) as f:
            data = json.load(f)
    return {(r["shape"], r["scheme"], r["tokens"]): r["ms"] * 1e3 for r in data["runs"]}


def table(builds, rows):
    """One line per point: each build's times per round, then its change of the mean against the first build."""
    names = list(builds)
    times = {}
    for r in rows:
        times.setdefault((r["shape"], r["scheme"], r["tokens"]), {}).setdefault(r["build"], []).append(r["us"])
    lines = [f"{'shape':<14}{'scheme':<11}{'T':>6}   " + " | ".join(f"{name} us" for name in names)]
    for (shape, scheme, tokens), by_build in times.items():
        first = by_build.get(names[0])
        cells = []
        for name in names:
            values = by_build.get(name)
            if not values:
                cells.append("missing")
                continue
            cell = " / ".join(f"{v:.1f}" for v in values)
            if name != names[0] and first:
                cell += f" ({(statistics.mean(values) / statistics.mean(first) - 1) * 100:+.1f}%)"
            cells.append(cell)
        lines.append(f"{shape:<14}{scheme:<11}{tokens:>6}   " + " | ".join(cells))
    return "\n".join(lines)


def main():
    argv = sys.argv[1:]
    bench_args = []
    if "--" in argv:
        split = argv.index("--")
        argv, bench_args = argv[:split], argv[split + 1:]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("builds", nargs="+", metavar="NAME=BINARY")
    p.add_argument("--rounds", type=int, default=2, help="times each build runs, alternating (default 2)")
    p.add_argument("--json", help="write every round's times here")
    args = p.parse_args(argv)
    if args.rounds < 1:
        raise SystemExit("ab: --rounds must be at least 1")
    if "--json" in bench_args:
        raise SystemExit("ab: --json goes before '--' (the benchmark's own --json is the script's)")
    builds = parse_builds(args.builds)

    rows = []
    for round_ in range(1, args.rounds + 1):
        for name, binary in builds.items():
            print(f"round {round_}: {name}", file=sys.stderr, flush=True)
            for (shape, scheme, tokens), us in run_once(binary, bench_args).items():
                rows.append({"build": name, "round": round_, "shape": shape, "scheme": scheme, "tokens": tokens,
                             "us": round(us, 2)})
    print(table(builds, rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"builds": builds, "bench_args": bench_args, "rounds": args.rounds, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
