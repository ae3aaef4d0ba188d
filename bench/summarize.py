#!/usr/bin/env python3
"""Summarizes a Google Benchmark JSON file of mxmoe_bench_cpu (or the CUDA bench) as a Markdown table.

Usage: bench/summarize.py results.json
"""
import json
import sys


def main(path):
    with open(path) as f:
        data = json.load(f)
    ctx = data.get("context", {})
    print(f"host: {ctx.get('host_name', '?')}, {ctx.get('num_cpus', '?')} CPUs at {ctx.get('mhz_per_cpu', '?')} MHz, "
          f"{ctx.get('date', '')}\n")
    rows = [b for b in data["benchmarks"] if b.get("aggregate_name", "median") == "median" and "tokens" in b]
    peaks = {b["name"].split("/")[0]: b for b in data["benchmarks"] if b["name"].startswith(("BM_ReadBandwidth", "BM_FmaPeak"))}
    for name, b in peaks.items():
        value = b.get("GB/s", b.get("GFLOP/s"))
        print(f"- {name}: {value:.1f} {'GB/s' if 'GB/s' in b else 'GFLOP/s'}")
    print()
    print("| T | scheme | time (ms) | GFLOP/s | weight GB/s | measured BW (GB/s) | bw_ratio | fma_ratio |")
    print("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for b in rows:
        ratio_bw = b["weight_GB/s"] / b["peak_GB/s"]
        ratio_fma = b["GFLOP/s"] / b["peak_GFLOP/s"]
        print(f"| {int(b['tokens'])} | {b.get('label', '')} | {b['real_time']:.2f} | {b['GFLOP/s']:.1f} | "
              f"{b['weight_GB/s']:.1f} | {b['peak_GB/s']:.1f} | {ratio_bw:.2f} | {ratio_fma:.2f} |")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
