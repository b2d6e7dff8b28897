#!/usr/bin/env python3
"""Side-by-side baseline for `cargo bench --bench codecs`: gguf-py's numpy TQ1_0 / TQ2_0 quantizer
and dequantizer over the same 25.2 M weights (4096 x 6144). Prints M weights/s (best of 3).

    pip install gguf numpy && python3 benches/gguf_tq1_0.py
"""
import time

import numpy as np
from gguf import GGMLQuantizationType, quants

ROWS, COLS = 4096, 6144


def best(f, reps=3):
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


rng = np.random.default_rng(0)
w = (rng.standard_normal((ROWS, COLS), dtype=np.float32) * 0.05).astype(np.float32)
n = w.size
for qtype in (GGMLQuantizationType.TQ1_0, GGMLQuantizationType.TQ2_0):
    q = quants.quantize(w, qtype)
    tq = best(lambda: quants.quantize(w, qtype))
    td = best(lambda: quants.dequantize(q, qtype))
    print(f"gguf-py {qtype.name}: quantize {n / tq / 1e6:.0f} M weights/s, dequantize {n / td / 1e6:.0f} M weights/s")
