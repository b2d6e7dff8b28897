#!/usr/bin/env python3
"""The reference model's f32 forward against numpy (OpenBLAS) on the same shapes.

    python3 benches/gemm_compare.py VERIFY_JSON BUNDLE_DIR

VERIFY_JSON is `bundle verify --json` of BUNDLE_DIR (benches/scale.sh leaves both). Its
agreement check ran the model twice (ternary path, FP16 path) over its inputs in f32, weight
conversion included; this prints the GFLOP/s that implies (2 * rows * in * out per layer and
path), then times numpy's `x @ W.T` in f32 on every layer shape of the model with the same rows
(fresh random matrices, best of 3), and the ratio.
"""
import json
import sys
import time
from pathlib import Path

import numpy as np


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    report = json.loads(Path(sys.argv[1]).read_text())
    manifest = json.loads((Path(sys.argv[2]) / "manifest.json").read_text())
    agreement = next(c for c in report["checks"] if c["name"] == "agreement")
    rows = agreement["figures"]["samples"]
    shapes = [(layer["in_features"], layer["out_features"]) for layer in manifest["model"]["layers"]]
    flops = sum(2 * rows * i * o for i, o in shapes)
    ours = 2 * flops / agreement["seconds"] / 1e9
    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, max(i for i, _ in shapes)), dtype=np.float32)
    numpy_seconds = 0.0
    for i, o in sorted(set(shapes)):
        w = rng.standard_normal((o, i), dtype=np.float32)
        xi = np.ascontiguousarray(x[:, :i])
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            xi @ w.T
            best = min(best, time.perf_counter() - t)
        numpy_seconds += best * shapes.count((i, o))
    theirs = flops / numpy_seconds / 1e9
    print(f"model: {len(shapes)} layers, {rows} rows; {flops / 1e12:.2f} TFLOP per forward pass")
    print(f"bundle verify agreement (2 paths, f32, conversion included): {ours:.1f} GFLOP/s")
    print(f"numpy x @ W.T, f32, same shapes:                            {theirs:.1f} GFLOP/s")
    print(f"numpy / bundle: {theirs / ours:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
