#!/usr/bin/env python3
"""Side-by-side baseline for `bundle create`: the same work written in numpy, from an F32
safetensors checkpoint of an MLP (`layers.i.weight` [out, in], `layers.i.bias` [out]).

    python3 benches/create_numpy.py CHECKPOINT.safetensors OUT_DIR [--compare BUNDLE_DIR]

It reads the checkpoint, hashes it (SHA-256), quantizes every weight by spec section 7 (absmean,
per-channel scales, epsilon 1e-5, threshold 0.5; gamma summed sequentially in f64), packs the
trits five per byte (section 5, trit5), dequantizes them to F16 (section 8), carries biases
(F32 in the ternary file, F16 in the FP16 file), and writes OUT_DIR/ternary.safetensors and
OUT_DIR/fp16.safetensors with the SHA-256 of each file and tensor (section 10). With --compare
it then checks that every tensor it wrote equals the one of that name in the bundle `bundle
create` wrote from the same checkpoint, bit for bit: the timing compares equal work.
"""
import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

EPSILON = np.float32(1e-5)
THRESHOLD = np.float32(0.5)
POWERS = np.array([1, 3, 9, 27, 81], dtype=np.uint8)


def quantize(w: np.ndarray):
    """Trits (int8) and per-row scales (f32) of `w` by spec section 7."""
    sums = np.cumsum(np.abs(w).astype(np.float64), axis=1)[:, -1]
    gamma = (sums / np.float64(w.shape[1])).astype(np.float32)
    scale = np.maximum(gamma, EPSILON)
    inv = (np.float32(1) / scale).astype(np.float32)
    x = w * inv[:, None]
    t = np.zeros(w.shape, dtype=np.int8)
    t[x > THRESHOLD] = 1
    t[x < -THRESHOLD] = -1
    return t, scale


def pack_trit5(t: np.ndarray) -> np.ndarray:
    """Rows of trits five per byte, unused positions of the last byte digit 0 (section 5)."""
    rows, cols = t.shape
    per_row = -(-cols // 5)
    digits = np.zeros((rows, per_row * 5), dtype=np.uint8)
    digits[:, :cols] = (t + 1).astype(np.uint8)
    return (digits.reshape(rows, per_row, 5) * POWERS).sum(axis=2, dtype=np.uint8)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("out")
    p.add_argument("--compare", metavar="BUNDLE_DIR")
    args = p.parse_args()
    start = time.perf_counter()
    source = Path(args.checkpoint).read_bytes()
    source_sha = hashlib.sha256(source).hexdigest()
    del source
    tensors = load_file(args.checkpoint)
    ternary, fp16 = {}, {}
    for name, v in tensors.items():
        if v.dtype != np.float32:
            print(f"{name}: {v.dtype}; this baseline reads F32 checkpoints", file=sys.stderr)
            return 2
        if v.ndim == 2:
            t, scale = quantize(v)
            ternary[name] = pack_trit5(t)
            ternary[name + ".scale"] = scale
            fp16[name] = (t.astype(np.float32) * scale[:, None]).astype(np.float16)
            fp16[name][t == 0] = np.float16(0)  # +0.0, never -0.0 (rule 5.2)
        else:
            ternary[name] = v
            fp16[name] = v.astype(np.float16)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(ternary, str(out / "ternary.safetensors"), metadata={"format": "pt"})
    save_file(fp16, str(out / "fp16.safetensors"), metadata={"format": "pt"})
    digests = {"source": source_sha}
    for role, values in (("ternary", ternary), ("fp16", fp16)):
        digests[role] = hashlib.sha256((out / f"{role}.safetensors").read_bytes()).hexdigest()
        for name, v in values.items():
            digests[f"{role}:{name}"] = hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest()
    (out / "digests.json").write_text(json.dumps(digests, indent=1))
    seconds = time.perf_counter() - start
    print(f"create_numpy.py: {len(tensors)} tensors in {seconds:.2f} s")
    if args.compare:
        theirs = {role: load_file(os.path.join(args.compare, f"{role}.safetensors")) for role in ("ternary", "fp16")}
        for role, ours in (("ternary", ternary), ("fp16", fp16)):
            for name, v in ours.items():
                other = theirs[role].get(name)
                if other is None or other.dtype != v.dtype or other.shape != v.shape or other.tobytes() != v.tobytes():
                    print(f"{role}.safetensors {name}: differs from {args.compare}", file=sys.stderr)
                    return 1
            if set(theirs[role]) != set(ours):
                print(f"{role}.safetensors: tensor names differ from {args.compare}", file=sys.stderr)
                return 1
        print(f"every tensor equals {args.compare}'s, bit for bit")
    return 0


if __name__ == "__main__":
    sys.exit(main())
