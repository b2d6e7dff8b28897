#!/usr/bin/env python3
"""The quantizing stage's `finalize()`: hand a BitNet b1.58 model over as a verified bundle.

    python3 examples/python/quantizing_stage_finalize.py [--out DIR] [--backend B] [--seed N]

The stage trains with quantization-aware training (QAT), as BitNet b1.58 does: it keeps latent
full-precision weights, but its forward pass runs them ternary. Per output channel (row) r,
scale_r = max(mean |W[r, :]|, 1e-5) and W[r, c] is replaced by
scale_r * clip(round(W[r, c] / scale_r), -1, 1): the absmean quantizer of spec/FORMAT.md
section 7 (epsilon 1e-5, granularity "channel"). The backward pass treats that rounding as the
identity (straight-through estimator), so the gradients update the latent weights. Biases stay
in full precision.

What it hands over is `ternary_bundle.create(...)` of the latent weights (the `state_dict()` as
it is) and a labelled validation set with a `difficulty` level per sample:
  * ternary.safetensors: the trits and per-row scales of the same absmean quantizer;
  * fp16.safetensors: the dequantized weights, the model the receiving stage trains further;
  * validation.safetensors: the inputs, labels and difficulty, plus the original model's
    predictions and distributions.
`original_forward="ternary"` (spec section 7.2) says which model is "the original": the latent
weights run ternary, as this stage's own forward pass runs them, not densely (a model nobody
trained). Retention, the handoff's criterion (`phase4_to_5/dequantization_accuracy_retention`),
is the share of validation samples on which the FP16 model predicts what that original did. The
stage finalizes only when `ternary_bundle.verify` passes and retention is at least 0.995.

Backends: `torch` (nn.Linear layers whose forward ternarizes the weight, autograd, and
`model.state_dict()` passed directly) or `numpy` (the same model with a manual backward pass).
The default is torch when it can be imported. Deterministic for a given seed.
"""
import argparse
import importlib
import sys

import numpy as np

import ternary_bundle as tb

CLASSES, DIM, HIDDEN = 10, 32, 64
SIZES = [DIM, HIDDEN, HIDDEN, CLASSES]  # fc1, fc2, fc3: a chain `bundle create` infers
CLUSTERS = 3  # Gaussian clusters per class, so that classes are not one blob each
NOISE = 0.3  # the noise's standard deviation is NOISE * difficulty (levels 1 to 6)
LEVELS = 6
EPS = 1e-5  # the absmean epsilon (spec/FORMAT.md section 7; the manifest's `epsilon`)
STEPS, BATCH, LR = 300, 128, 0.01  # Adam on random mini-batches
MIN_RETENTION = 0.995


def make_data(rng, centres, per_level):
    """`per_level` samples of each difficulty level: a point of a random cluster of a random
    class, plus Gaussian noise growing with the level. Returns inputs float32 [N, DIM], labels
    int64 [N], difficulty uint8 [N]."""
    difficulty = np.repeat(np.arange(1, LEVELS + 1, dtype=np.uint8), per_level)
    cluster = rng.integers(0, len(centres), len(difficulty))
    noise = rng.standard_normal((len(difficulty), DIM)) * (NOISE * difficulty[:, None])
    return (centres[cluster] + noise).astype(np.float32), cluster % CLASSES, difficulty


def ternarize(w):
    """Absmean per row: the weights the forward pass runs (numpy)."""
    scale = np.maximum(np.abs(w).mean(axis=1, keepdims=True), EPS)
    return np.clip(np.round(w / scale), -1, 1) * scale


def train_numpy(x, y, batches, seed):
    """QAT in numpy: forward with ternarized weights, backward by hand (straight-through
    estimator), Adam on the mini-batches `batches` (rows of indices). Returns the state dict
    {"fc1.weight": float32 array, ...}."""
    rng = np.random.default_rng([seed, 1])  # a stream apart from the data's
    params = {}
    for i, (fan_in, fan_out) in enumerate(zip(SIZES, SIZES[1:]), start=1):
        bound = 1 / np.sqrt(fan_in)  # torch.nn.Linear's default initialisation
        params[f"fc{i}.weight"] = rng.uniform(-bound, bound, (fan_out, fan_in)).astype(np.float32)
        params[f"fc{i}.bias"] = rng.uniform(-bound, bound, fan_out).astype(np.float32)
    layers = len(SIZES) - 1
    m = {k: np.zeros_like(p) for k, p in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    for step, batch in enumerate(batches, start=1):
        acts, quantized = [x[batch]], []
        for i in range(1, layers + 1):
            q = ternarize(params[f"fc{i}.weight"])
            z = acts[-1] @ q.T + params[f"fc{i}.bias"]
            quantized.append(q)
            acts.append(np.maximum(z, 0) if i < layers else z)
        p = np.exp(acts[-1] - acts[-1].max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(len(batch)), y[batch]] -= 1
        g = p / len(batch)  # d(mean cross-entropy)/d(logits)
        grads = {}
        for i in range(layers, 0, -1):
            if i < layers:
                g = g * (acts[i] > 0)  # through the ReLU
            grads[f"fc{i}.weight"] = g.T @ acts[i - 1]  # STE: d q(W) / dW taken as identity
            grads[f"fc{i}.bias"] = g.sum(axis=0)
            g = g @ quantized[i - 1]
        for k, gr in grads.items():
            m[k] = 0.9 * m[k] + 0.1 * gr
            v[k] = 0.999 * v[k] + 0.001 * gr * gr
            params[k] -= LR * (m[k] / (1 - 0.9**step)) / (np.sqrt(v[k] / (1 - 0.999**step)) + 1e-8)
    return params


def train_torch(x, y, batches, seed):
    """QAT in torch: nn.Linear layers whose forward ternarizes the weight, with the
    straight-through estimator `w + (q - w).detach()`; Adam on the mini-batches `batches`.
    Returns `model.state_dict()`."""
    import torch
    from torch import nn

    class BitLinear(nn.Linear):
        """nn.Linear running absmean-ternarized weights (per output channel)."""

        def forward(self, inputs):
            w = self.weight
            scale = w.abs().mean(dim=1, keepdim=True).clamp(min=EPS)
            q = (w / scale).round().clamp(-1, 1) * scale
            return nn.functional.linear(inputs, w + (q - w).detach(), self.bias)

    class MLP(nn.Module):
        """fc1 -> ReLU -> fc2 -> ReLU -> fc3 (logits)."""

        def __init__(self):
            super().__init__()
            self.fc1 = BitLinear(SIZES[0], SIZES[1])
            self.fc2 = BitLinear(SIZES[1], SIZES[2])
            self.fc3 = BitLinear(SIZES[2], SIZES[3])

        def forward(self, inputs):
            return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(inputs)))))

    torch.manual_seed(seed)
    model = MLP()
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    for batch in torch.from_numpy(batches):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
        opt.step()
    return model.state_dict()


def torch_available():
    """True when torch can be imported."""
    try:
        importlib.import_module("torch")
    except ImportError:
        return False
    return True


def finalize(out, backend, seed):
    """Trains the model, writes the bundle to `out` and verifies it. Returns the verify report."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLASSES * CLUSTERS, DIM)).astype(np.float32)
    x, y, _ = make_data(rng, centres, per_level=800)
    val_x, val_y, val_d = make_data(rng, centres, per_level=200)
    batches = rng.integers(0, len(x), (STEPS, BATCH))
    state_dict = (train_torch if backend == "torch" else train_numpy)(x, y, batches, seed)
    tb.create(out, state_dict, validation={"inputs": val_x, "labels": val_y, "difficulty": val_d},
              original_forward="ternary", force=True)
    return tb.verify(out, min_retention=MIN_RETENTION)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="finalized-bundle", help="the bundle directory to write")
    parser.add_argument("--backend", choices=["numpy", "torch"],
                        help="default: torch if it can be imported, else numpy")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    args.backend = args.backend or ("torch" if torch_available() else "numpy")

    try:
        report = finalize(args.out, args.backend, args.seed)
    except tb.BundleError as e:
        sys.exit(f"{args.out}: {e}")
    metrics = report["metrics"]
    retention = metrics["phase4_to_5/dequantization_accuracy_retention"]
    if not report["ok"]:
        failed = [f"{c['name']}: {c['detail']}" for c in report["checks"] if c["status"] == "fail"]
        sys.exit(f"{args.out}: verify failed:\n  " + "\n  ".join(failed))
    if retention is None or retention < MIN_RETENTION:
        why = report["null_reasons"] if retention is None else f"below {MIN_RETENTION}"
        sys.exit(f"{args.out}: retention {retention} ({why})")
    print(f"{args.out}: the {args.backend} QAT model is handed over; verify ok")
    print(f"  phase4_to_5/dequantization_accuracy_retention: {retention} (gate {MIN_RETENTION})")
    print(f"  label accuracy: original (ternary) model {metrics['accuracy_original']:.4f}, "
          f"FP16 model {metrics['accuracy_fp16']:.4f}")


if __name__ == "__main__":
    main()
