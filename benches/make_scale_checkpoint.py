#!/usr/bin/env python3
"""Writes the scale bench's checkpoint by streaming: an F32 safetensors MLP of real model size,
never more than one block of rows in memory.

    python3 benches/make_scale_checkpoint.py OUT.safetensors [--widths 4096,16384,...,1000]
                                             [--seed 0]

Default widths: 4096 -> 16384, nine 16384 x 16384 layers, -> 1000 (2.50 B parameters, 10.0 GB),
the size of BitNet b1.58 2B4T. Layer i is `layers.i.weight` [out, in] and `layers.i.bias` [out];
weights are standard normal / sqrt(in), biases zero, drawn from numpy's PCG64 seeded with
--seed (deterministic).
"""
import argparse
import json
import struct
import sys

import numpy as np

ROWS_PER_BLOCK = 1024


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--widths", default="4096," + ",".join(["16384"] * 10) + ",1000")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    widths = [int(w) for w in args.widths.split(",")]
    if len(widths) < 2 or min(widths) < 1:
        sys.exit("--widths needs at least two positive widths")
    tensors, offset = [], 0
    for i, (fan_in, fan_out) in enumerate(zip(widths, widths[1:])):
        for name, shape in [(f"layers.{i}.weight", [fan_out, fan_in]), (f"layers.{i}.bias", [fan_out])]:
            size = 4 * int(np.prod(shape))
            tensors.append((name, shape, offset, offset + size))
            offset += size
    header = {name: {"dtype": "F32", "shape": shape, "data_offsets": [lo, hi]} for name, shape, lo, hi in tensors}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    rng = np.random.default_rng(args.seed)
    params = sum(int(np.prod(t[1])) for t in tensors)
    with open(args.out, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name, shape, _, _ in tensors:
            if name.endswith(".bias"):
                f.write(np.zeros(shape, dtype="<f4").tobytes())
                continue
            fan_out, fan_in = shape
            scale = np.float32(1.0 / np.sqrt(fan_in))
            for r in range(0, fan_out, ROWS_PER_BLOCK):
                rows = min(ROWS_PER_BLOCK, fan_out - r)
                block = rng.standard_normal((rows, fan_in), dtype=np.float32)
                block *= scale
                f.write(block.astype("<f4", copy=False).tobytes())
    print(f"wrote {args.out}: {len(widths) - 1} layers, {params:,} parameters, {8 + len(raw) + offset:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
