#!/usr/bin/env python3
"""The receiving stage's `initialize()`: take a bundle over and make its FP16 model trainable.

    python3 examples/python/receiving_stage_initialize.py [BUNDLE] [--backend numpy|torch]

BUNDLE (default `finalized-bundle`) is what quantizing_stage_finalize.py writes. The stage:
  1. checks the handoff with `ternary_bundle.verify` (checksums, exact dequantization,
     retention >= 0.995, gradient checks...) and refuses a bundle that fails it;
  2. opens it (`ternary_bundle.open`) and builds its model from the manifest: a chain of
     linear layers (`manifest["model"]["layers"]`: names, sizes, activations). With torch an
     nn.Module of nn.Linear layers loads `bundle.state_dict("pt")` with `strict=True`; with
     numpy the arrays of `bundle.state_dict("np")` are copied to float32. The FP16 weights are
     the dequantized trits: the stage trains them in full precision, without a quantizer;
  3. runs a forward and a backward pass (mean cross-entropy) on the validation set the bundle
     carries (`bundle.validation()`: read-only views of `validation.safetensors`) and checks
     that every parameter gets a finite gradient that is not all zeros;
  4. runs `ternary_bundle.assess`: accuracy and gradient variance per difficulty level, and the
     level nearest the target accuracy (the edge of chaos, where its curriculum starts).

It prints, as JSON on stdout, the metrics the stage logs (`wandb.log(metrics)`): the
`phase4_to_5/*` figures of the verify report and the `phase5/*` figures of the assess report,
exactly as reported (a figure that could not be computed is null). Progress goes to stderr.
Exit status 0 when the bundle is taken over, non-zero with the reason otherwise.
"""
import argparse
import importlib
import json
import sys

import numpy as np

import ternary_bundle as tb

ACTIVATIONS = ("relu", "identity")  # what this example's models implement


def layers_of(bundle):
    """The manifest's chain of layers, checked to be what this example builds: linear layers
    named `<layer>.weight` / `<layer>.bias`, ReLU or identity, no RMSNorm."""
    model = bundle.manifest["model"]
    layers = model.get("layers") or []
    plain = all(layer["activation"] in ACTIVATIONS and not layer.get("rmsnorm")
                and layer["weight"] == f"{layer['name']}.weight"
                and layer["bias"] in (None, f"{layer['name']}.bias") for layer in layers)
    if model.get("decoder") or not layers or not plain:
        sys.exit(f"{bundle.path}: not a chain of plain linear layers (ReLU or identity, no "
                 "RMSNorm): this example does not build its model")
    return layers


def gradients_torch(bundle, x, y):
    """Builds the torch model, loads the bundle's FP16 weights and backpropagates the mean
    cross-entropy of (x, y). Returns {parameter name: gradient as a numpy array}."""
    import torch
    from torch import nn

    layers = layers_of(bundle)

    class MLP(nn.Module):
        """The bundle's chain: one nn.Linear per layer, ReLU between them."""

        def __init__(self):
            super().__init__()
            for layer in layers:
                linear = nn.Linear(layer["in_features"], layer["out_features"],
                                   bias=layer["bias"] is not None)
                self.add_module(layer["name"], linear)

        def forward(self, inputs):
            for layer in layers:
                inputs = getattr(self, layer["name"])(inputs)
                if layer["activation"] == "relu":
                    inputs = torch.relu(inputs)
            return inputs

    model = MLP()
    model.load_state_dict(bundle.state_dict("pt"), strict=True)  # FP16 -> float32 parameters
    loss = nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
    loss.backward()
    return {name: p.grad.numpy() for name, p in model.named_parameters()}


def gradients_numpy(bundle, x, y):
    """The same in numpy: forward, then the backward pass by hand."""
    layers = layers_of(bundle)
    params = {name: np.array(a, dtype=np.float32) for name, a in bundle.state_dict("np").items()}
    acts = [x]
    for layer in layers:
        z = acts[-1] @ params[layer["weight"]].T
        if layer["bias"]:
            z += params[layer["bias"]]
        acts.append(np.maximum(z, 0) if layer["activation"] == "relu" else z)
    p = np.exp(acts[-1] - acts[-1].max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    p[np.arange(len(y)), y] -= 1
    g = p / len(y)  # d(mean cross-entropy)/d(logits)
    grads = {}
    for i in range(len(layers) - 1, -1, -1):
        layer = layers[i]
        if layer["activation"] == "relu":
            g = g * (acts[i + 1] > 0)
        grads[layer["weight"]] = g.T @ acts[i]
        if layer["bias"]:
            grads[layer["bias"]] = g.sum(axis=0)
        g = g @ params[layer["weight"]]
    return grads


def torch_available():
    """True when torch can be imported."""
    try:
        importlib.import_module("torch")
    except ImportError:
        return False
    return True


def initialize(path, backend):
    """Takes the bundle at `path` over; returns the metrics the stage logs."""
    report = tb.verify(path)
    if not report["ok"]:
        failed = [f"{c['name']}: {c['detail']}" for c in report["checks"] if c["status"] == "fail"]
        sys.exit(f"{path}: the handoff does not verify:\n  " + "\n  ".join(failed))

    bundle = tb.open(path)
    if bundle.manifest["files"].get("validation") is None:
        sys.exit(f"{path}: the bundle carries no validation set")
    validation = bundle.validation()
    x, y = validation["inputs"], validation["labels"]
    grads = (gradients_torch if backend == "torch" else gradients_numpy)(bundle, x, y)
    for name in bundle.names():
        g = grads.get(name)
        if g is None or not np.isfinite(g).all() or not g.any():
            sys.exit(f"{path}: parameter {name} gets no finite, non-zero gradient")
    print(f"{path}: {backend}: {len(grads)} parameters loaded from the FP16 weights, every "
          f"gradient finite and non-zero on {len(y)} validation samples", file=sys.stderr)

    assessment = tb.assess(path)
    print(f"{path}: assess: {assessment['detail']}", file=sys.stderr)
    logged = {**report["metrics"], **assessment["metrics"]}
    return {k: v for k, v in logged.items() if k.startswith(("phase4_to_5/", "phase5/"))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", nargs="?", default="finalized-bundle", metavar="BUNDLE")
    parser.add_argument("--backend", choices=["numpy", "torch"],
                        help="default: torch if it can be imported, else numpy")
    args = parser.parse_args()
    args.backend = args.backend or ("torch" if torch_available() else "numpy")
    try:
        metrics = initialize(args.bundle, args.backend)
    except tb.BundleError as e:
        sys.exit(f"{args.bundle}: {e}")
    print(json.dumps(metrics, indent=2))  # wandb.log(metrics)


if __name__ == "__main__":
    main()
