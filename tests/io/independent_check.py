#!/usr/bin/env python3
"""Independent end-to-end check of `mxmoe run`.

Writes gpt-oss checkpoints (Hugging Face and OpenAI layouts, single file and sharded) and inputs
with its own safetensors writer, computes the MoE layer with its own float64 implementation of
gpt-oss's math (nothing shared with mxmoe but the file format), runs `mxmoe run --scheme w4a32`
and compares. Pure Python: no numpy needed.
"""
import argparse
import json
import math
import os
import random
import struct
import subprocess
import sys
import tempfile

FP4_VALUES = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0]


def bf16_bytes(values):
    """Round-to-nearest-even float32 -> bf16, little-endian."""
    out = bytearray()
    for v in values:
        bits = struct.unpack("<I", struct.pack("<f", v))[0]
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
        out += struct.pack("<H", bits)
    return bytes(out)


def bf16_values(data):
    return [struct.unpack("<f", struct.pack("<I", h << 16))[0] for (h,) in struct.iter_unpack("<H", data)]


def write_safetensors(path, tensors):
    """tensors: list of (name, dtype, shape, bytes)."""
    header, offset = {}, 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for _, _, _, data in tensors:
            f.write(data)


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        fmt = {"F32": "<f", "I32": "<i"}[entry["dtype"]]
        out[name] = [v for (v,) in struct.iter_unpack(fmt, data[begin:end])]
    return out


def tensor_names(layout, layer):
    if layout == "huggingface":
        p = f"model.layers.{layer}.mlp."
        return [p + "router.weight", p + "router.bias", p + "experts.gate_up_proj_blocks",
                p + "experts.gate_up_proj_scales", p + "experts.gate_up_proj_bias", p + "experts.down_proj_blocks",
                p + "experts.down_proj_scales", p + "experts.down_proj_bias"]
    p = f"block.{layer}.mlp."
    return [p + "gate.weight", p + "gate.bias", p + "mlp1_weight.blocks", p + "mlp1_weight.scales", p + "mlp1_bias",
            p + "mlp2_weight.blocks", p + "mlp2_weight.scales", p + "mlp2_bias"]


class Layer:
    """One random MoE layer, kept as the bytes written and as float matrices decoded independently."""

    def __init__(self, rng, H, I, E):
        self.H, self.I, self.E = H, I, E
        self.router_w = bf16_values(bf16_bytes([rng.gauss(0, 0.5) for _ in range(E * H)]))
        self.router_b = bf16_values(bf16_bytes([rng.gauss(0, 0.5) for _ in range(E)]))
        self.gu_blocks = bytes(rng.randrange(256) for _ in range(E * 2 * I * H // 2))
        self.gu_scales = bytes(rng.randrange(121, 125) for _ in range(E * 2 * I * H // 32))
        self.gu_bias = bf16_values(bf16_bytes([rng.gauss(0, 0.3) for _ in range(E * 2 * I)]))
        self.dn_blocks = bytes(rng.randrange(256) for _ in range(E * H * I // 2))
        self.dn_scales = bytes(rng.randrange(121, 125) for _ in range(E * H * I // 32))
        self.dn_bias = bf16_values(bf16_bytes([rng.gauss(0, 0.3) for _ in range(E * H)]))

    @staticmethod
    def decode(blocks, scales, rows, cols, e):
        """Row-major [rows][cols] float matrix of expert e; low nibble first, scale 2^(code-127)."""
        m = []
        for r in range(rows):
            row = []
            for b in range(cols // 32):
                scale = 2.0 ** (scales[(e * rows + r) * (cols // 32) + b] - 127)
                base = ((e * rows + r) * (cols // 32) + b) * 16
                for i in range(16):
                    byte = blocks[base + i]
                    row.append(FP4_VALUES[byte & 0x0F] * scale)
                    row.append(FP4_VALUES[byte >> 4] * scale)
            m.append(row)
        return m

    def tensors(self, layout, layer):
        H, I, E = self.H, self.I, self.E
        n = tensor_names(layout, layer)
        return [(n[0], "BF16", [E, H], bf16_bytes(self.router_w)), (n[1], "BF16", [E], bf16_bytes(self.router_b)),
                (n[2], "U8", [E, 2 * I, H // 32, 16], self.gu_blocks), (n[3], "U8", [E, 2 * I, H // 32], self.gu_scales),
                (n[4], "BF16", [E, 2 * I], bf16_bytes(self.gu_bias)), (n[5], "U8", [E, H, I // 32, 16], self.dn_blocks),
                (n[6], "U8", [E, H, I // 32], self.dn_scales), (n[7], "BF16", [E, H], bf16_bytes(self.dn_bias))]

    def forward(self, x, T, k, limit=7.0, alpha=1.702):
        H, I, E = self.H, self.I, self.E
        gate_up = [self.decode(self.gu_blocks, self.gu_scales, 2 * I, H, e) for e in range(E)]
        down = [self.decode(self.dn_blocks, self.dn_scales, H, I, e) for e in range(E)]
        out, ids = [], []
        for t in range(T):
            xt = x[t * H:(t + 1) * H]
            logits = [sum(xt[h] * self.router_w[e * H + h] for h in range(H)) + self.router_b[e] for e in range(E)]
            top = sorted(range(E), key=lambda e: (-logits[e], e))[:k]
            z = sum(math.exp(logits[e] - logits[top[0]]) for e in top)
            y = [0.0] * H
            for e in top:
                w = math.exp(logits[e] - logits[top[0]]) / z
                h1 = [sum(gate_up[e][r][c] * xt[c] for c in range(H)) + self.gu_bias[e * 2 * I + r] for r in range(2 * I)]
                act = []
                for j in range(I):
                    g, lin = min(h1[2 * j], limit), max(-limit, min(h1[2 * j + 1], limit))
                    act.append(g / (1.0 + math.exp(-alpha * g)) * (lin + 1.0))
                for h in range(H):
                    y[h] += w * (sum(down[e][h][j] * act[j] for j in range(I)) + self.dn_bias[e * H + h])
            out += y
            ids += top
        return out, ids


def check(mxmoe, workdir, layout, sharded, input_dtype, rng):
    H, I, E, k, T, layers = 64, 96, 6, 2, 12, 2
    ckpt = os.path.join(workdir, f"{layout}-{'sharded' if sharded else 'single'}")
    os.makedirs(ckpt, exist_ok=True)
    model = [Layer(rng, H, I, E) for _ in range(layers)]
    if sharded:
        weight_map = {}
        for l, m in enumerate(model):
            shard = f"model-{l + 1:05d}-of-{layers:05d}.safetensors"
            write_safetensors(os.path.join(ckpt, shard), m.tensors(layout, l))
            weight_map.update({t[0]: shard for t in m.tensors(layout, l)})
        with open(os.path.join(ckpt, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {}, "weight_map": weight_map}, f)
    else:
        write_safetensors(os.path.join(ckpt, "model.safetensors"), [t for l, m in enumerate(model) for t in m.tensors(layout, l)])
    if layout == "huggingface":
        config = {"hidden_size": H, "intermediate_size": I, "num_local_experts": E, "num_experts_per_tok": k,
                  "num_hidden_layers": layers, "swiglu_limit": 7.0}
    else:
        config = {"hidden_size": H, "intermediate_size": I, "num_experts": E, "experts_per_token": k,
                  "num_hidden_layers": layers, "swiglu_limit": 7.0}
    with open(os.path.join(ckpt, "config.json"), "w") as f:
        json.dump(config, f)

    x = [rng.gauss(0, 1) for _ in range(T * H)]
    if input_dtype == "BF16":
        data = bf16_bytes(x)
        x = bf16_values(data)
    else:
        data = struct.pack(f"<{len(x)}f", *x)
        x = list(struct.unpack(f"<{len(x)}f", data))
    inp = os.path.join(workdir, "input.safetensors")
    write_safetensors(inp, [("hidden_states", input_dtype, [T, H], data)])

    failures = []
    for layer in range(layers):
        expected, expected_ids = model[layer].forward(x, T, k)
        outp = os.path.join(workdir, "output.safetensors")
        cmd = [mxmoe, "run", "--checkpoint", ckpt, "--layer", str(layer), "--input", inp, "--output", outp,
               "--scheme", "w4a32"]
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            return [f"{' '.join(cmd)} failed ({run.returncode}): {run.stderr.strip()}"]
        got = read_safetensors(outp)
        num = sum((a - b) ** 2 for a, b in zip(got["output"], expected))
        den = sum(b * b for b in expected)
        rel = math.sqrt(num / den)
        label = f"{layout} {'sharded' if sharded else 'single'} {input_dtype} layer {layer}"
        print(f"{label}: relative L2 error {rel:.3e}, routing {'equal' if got['expert_ids'] == expected_ids else 'DIFFERENT'}")
        if not rel < 1e-5:
            failures.append(f"{label}: relative error {rel:.3e} exceeds 1e-5")
        if got["expert_ids"] != expected_ids:
            failures.append(f"{label}: routing differs")
        weight_sums = [sum(got["expert_weights"][t * k:(t + 1) * k]) for t in range(T)]
        if any(abs(s - 1.0) > 1e-6 for s in weight_sums):
            failures.append(f"{label}: routing weights do not sum to 1")
    return failures


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mxmoe", required=True)
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    print(f"seed {seed}")
    rng = random.Random(seed)
    failures = []
    with tempfile.TemporaryDirectory() as workdir:
        for layout, sharded, dtype in [("huggingface", False, "F32"), ("huggingface", True, "BF16"), ("openai", False, "F32"),
                                       ("openai", True, "F32")]:
            failures += check(args.mxmoe, workdir, layout, sharded, dtype, rng)
    for f in failures:
        print("FAIL:", f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
