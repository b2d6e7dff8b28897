#!/usr/bin/env python3
"""Trains a small MLP classifier in numpy and writes it as a user would hand it to `bundle create`.

    python3 scripts/train_mlp.py OUT_DIR

writes OUT_DIR/model.safetensors (F32: net.0.weight [64, 32], net.0.bias [64], net.2.weight
[10, 64], net.2.bias [10], the names of torch.nn.Sequential(Linear, ReLU, Linear)) and
OUT_DIR/validation.safetensors (inputs F32 [400, 32], labels I64 [400], difficulty U8 [400]).

The task: 10 classes, each a Gaussian cloud around a random centre in R^32; difficulty 1..4 is
the cloud's spread. The model is trained for real (full-batch Adam on softmax cross-entropy,
300 steps from PyTorch's default initialisation), so quantizing it to ternary weights changes
some of its decisions: what `bundle verify`'s retention gate must measure. Deterministic (seeded
numpy), so CI sees the same checkpoint every run.
"""
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

CLASSES, DIM, HIDDEN = 10, 32, 64
SPREADS = [0.6, 0.8, 1.0, 1.2]  # difficulty 1..4


def dataset(rng, centres, per_level):
    xs, ys, ds = [], [], []
    for level, spread in enumerate(SPREADS, start=1):
        y = rng.integers(0, CLASSES, per_level)
        xs.append(centres[y] + spread * rng.standard_normal((per_level, DIM)))
        ys.append(y)
        ds.append(np.full(per_level, level))
    return (np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int64),
            np.concatenate(ds).astype(np.uint8))


def main():
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20241158)
    centres = rng.standard_normal((CLASSES, DIM)) * 0.55
    x, y, _ = dataset(rng, centres, 500)
    vx, vy, vd = dataset(rng, centres, 100)

    # torch.nn.Linear's default initialisation: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    def linear(fan_in, fan_out):
        b = 1 / np.sqrt(fan_in)
        return rng.uniform(-b, b, (fan_out, fan_in)), rng.uniform(-b, b, fan_out)

    params = [*linear(DIM, HIDDEN), *linear(HIDDEN, CLASSES)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    onehot = np.eye(CLASSES)[y]
    for step in range(1, 301):
        w1, b1, w2, b2 = params
        z = x @ w1.T + b1
        h = np.maximum(z, 0)
        logits = h @ w2.T + b2
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = (p - onehot) / len(x)
        gh = (g @ w2) * (z > 0)
        grads = [gh.T @ x, gh.sum(0), g.T @ h, g.sum(0)]
        for i, gr in enumerate(grads):  # Adam, lr 0.01
            m[i] = 0.9 * m[i] + 0.1 * gr
            v[i] = 0.999 * v[i] + 0.001 * gr * gr
            params[i] -= 0.01 * (m[i] / (1 - 0.9**step)) / (np.sqrt(v[i] / (1 - 0.999**step)) + 1e-8)

    w1, b1, w2, b2 = (p.astype(np.float32) for p in params)
    save_file({"net.0.weight": w1, "net.0.bias": b1, "net.2.weight": w2, "net.2.bias": b2},
              str(out / "model.safetensors"))
    save_file({"inputs": vx, "labels": vy, "difficulty": vd}, str(out / "validation.safetensors"))
    acc = float(((np.maximum(vx @ w1.T + b1, 0) @ w2.T + b2).argmax(1) == vy).mean())
    print(f"trained {out / 'model.safetensors'}: validation accuracy {acc:.4f}")


if __name__ == "__main__":
    main()
