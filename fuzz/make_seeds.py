#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz harnesses (fuzz/corpus/<harness>/): small valid inputs from
which libFuzzer mutates. Run once; the seeds are checked in, and so is every crash input found."""
import json
import os
import random
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def safetensors(tensors):
    """tensors: list of (name, dtype, shape, bytes)."""
    header, offset, data = {}, 0, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        data += raw
    text = json.dumps(header).encode()
    text += b" " * ((8 - (8 + len(text)) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + data


def floats(n, rng):
    return struct.pack(f"<{n}f", *[rng.uniform(-1, 1) for _ in range(n)])


def layer_tensors(H, I, E, rng):
    p = "model.layers.0.mlp."
    u8 = lambda n, lo, hi: bytes(rng.randrange(lo, hi) for _ in range(n))
    return [(p + "router.weight", "F32", [E, H], floats(E * H, rng)),
            (p + "router.bias", "F32", [E], floats(E, rng)),
            (p + "experts.gate_up_proj_blocks", "U8", [E, 2 * I, H // 32, 16], u8(E * 2 * I * H // 2, 0, 256)),
            (p + "experts.gate_up_proj_scales", "U8", [E, 2 * I, H // 32], u8(E * 2 * I * H // 32, 118, 128)),
            (p + "experts.gate_up_proj_bias", "F32", [E, 2 * I], floats(E * 2 * I, rng)),
            (p + "experts.down_proj_blocks", "U8", [E, H, I // 32, 16], u8(E * H * I // 2, 0, 256)),
            (p + "experts.down_proj_scales", "U8", [E, H, I // 32], u8(E * H * I // 32, 118, 128)),
            (p + "experts.down_proj_bias", "F32", [E, H], floats(E * H, rng))]


def write(folder, name, data):
    with open(os.path.join(HERE, "corpus", folder, name), "wb") as f:
        f.write(data)


def main():
    rng = random.Random(1)
    write("safetensors", "empty", safetensors([]))
    write("safetensors", "f32_bf16", safetensors([("a", "F32", [2, 3], floats(6, rng)),
                                                  ("b", "BF16", [4], bytes(8)), ("c", "U8", [0, 5], b"")]))
    write("safetensors", "layer", safetensors(layer_tensors(32, 32, 2, rng)))
    write("safetensors", "i32", safetensors([("x", "I32", [2], struct.pack("<2i", 1, 2))]))
    # Checkpoint harness input: 4-byte little-endian length of config.json, the config, then
    # model.safetensors.
    config = json.dumps({"hidden_size": 32, "intermediate_size": 32, "num_local_experts": 2,
                         "num_experts_per_tok": 1, "num_hidden_layers": 1, "swiglu_limit": 7.0}).encode()
    write("checkpoint", "tiny", struct.pack("<I", len(config)) + config + safetensors(layer_tensors(32, 32, 2, rng)))
    config2 = json.dumps({"hidden_size": 64, "intermediate_size": 32, "num_local_experts": 4,
                          "num_experts_per_tok": 2, "num_hidden_layers": 1, "swiglu_limit": 7.0}).encode()
    write("checkpoint", "two_of_four", struct.pack("<I", len(config2)) + config2 +
          safetensors(layer_tensors(64, 32, 4, rng)))
    configs = os.path.join(HERE, "..", "configs", "evals")
    for name in sorted(os.listdir(configs)):
        if name.endswith(".yaml"):
            with open(os.path.join(configs, name), "rb") as f:
                write("eval_config", name, f.read())


if __name__ == "__main__":
    main()
