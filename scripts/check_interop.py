#!/usr/bin/env python3
"""Independent checks of the committed fixtures, written from spec/FORMAT.md alone.

For every fixture bundle this script, without using any code of this project:
  * validates manifest.json against spec/manifest.schema.json (jsonschema);
  * parses each safetensors header itself and checks file sizes, whole-file and per-tensor SHA-256;
  * loads fp16.safetensors with the `safetensors` package (safetensors.numpy.load_file) and checks
    names, shapes and dtype float16;
  * decodes ternary.safetensors in numpy (trit5 / trit2, all granularities) and confirms every F16
    value equals f16(t * scale), bit for bit (rule 5.2), and passthrough values f16(f32) (rule 5.3).
The version fixtures must behave as section 13 says: newer minor valid, other major rejected.

It also recomputes, with its own numpy reading of spec section 16, what `bundle verify` reports
about models:
  * `--retention BUNDLE CHECKPOINT VERIFY_JSON`: the original model (CHECKPOINT, before
    quantization) and the FP16 model (fp16.safetensors) run on the validation inputs; the
    stored original_predictions must be the checkpoint's argmax, and verify's retention and
    label accuracies must equal the ones computed here (up to near-ties);
  * `--assess BUNDLE ASSESS_JSON`: `bundle assess` recomputed: per difficulty level, the FP16
    model's accuracy, mean cross-entropy and gradient variance (per batch the gradient of the mean
    cross-entropy by backpropagation in float64, per tensor numpy.var(ddof=1), summed, averaged
    over batches) must match to 1e-4 relative, the chosen level too, and it must lie in the zone;
  * `--demo BUNDLE VERIFY_JSON`: the demo's FP16 model must be >= 95% accurate at difficulty 1,
    <= 50% at difficulty 10, inside 70-80% at some level, with 10 levels of equal size >= 50,
    its original model the quantization-aware forward (retention >= 0.995 against it), and
    verify's per-level figures must equal the ones computed here.
Exits non-zero if any check failed; prints one line per check and a closing count.
"""
import argparse
import hashlib
import json
import math
import struct
import sys
from pathlib import Path

import jsonschema
import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = json.loads((ROOT / "spec" / "manifest.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
DTYPES = {"F16": np.float16, "F32": np.float32, "U8": np.uint8, "I64": np.int64}


def read_safetensors(path):
    """Returns {name: (dtype, shape, bytes)} parsed per spec section 4."""
    data = path.read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    header.pop("__metadata__", None)
    buf = data[8 + n :]
    out = {}
    for name, e in header.items():
        a, b = e["data_offsets"]
        out[name] = (e["dtype"], tuple(e["shape"]), buf[a:b])
    return out


def decode_trits(packed, cols, encoding):
    """Unpacks [R, bytes_per_row] uint8 rows to int8 trits [R, cols] (spec section 5)."""
    rows = packed.shape[0]
    per = 5 if encoding == "trit5" else 4
    digits = np.zeros((rows, packed.shape[1] * per), dtype=np.int16)
    p = packed.astype(np.int16)
    for i in range(per):
        if encoding == "trit5":
            digits[:, i::per] = p % 3
            p = p // 3
        else:
            digits[:, i::per] = (packed.astype(np.int16) >> (2 * i)) & 3
    assert digits.max(initial=0) <= 2, "invalid code"
    return (digits[:, :cols] - 1).astype(np.int8)


def expand_scales(scales, rows, cols, q):
    g = q["granularity"]
    if g == "tensor":
        return np.full((rows, cols), scales.reshape(-1)[0], dtype=np.float32)
    if g == "channel":
        return np.repeat(scales.reshape(rows, 1), cols, axis=1).astype(np.float32)
    size = q["group_size"]
    return np.repeat(scales.reshape(rows, -1), size, axis=1)[:, :cols].astype(np.float32)


def check_bundle(d):
    raw = (d / "manifest.json").read_bytes()
    m = json.loads(raw)
    VALIDATOR.validate(m)
    digest = m["manifest_sha256"]
    zeroed = raw.replace(digest.encode(), b"0" * 64)
    assert hashlib.sha256(zeroed).hexdigest() == digest, "manifest_sha256 (rule 7.3)"
    for role, entry in m["files"].items():
        if entry is None:
            continue
        if role == "assets":  # format 4.0 (rules 1.6, 7.4): files carried byte for byte
            for a in entry:
                blob = (d / a["name"]).read_bytes()
                assert len(blob) == a["size"], f"{a['name']}: size (rule 1.6)"
                assert hashlib.sha256(blob).hexdigest() == a["sha256"], f"{a['name']}: sha256 (rule 7.4)"
            continue
        path = d / f"{role}.safetensors"
        blob = path.read_bytes()
        assert len(blob) == entry["size"], f"{path}: size"
        assert hashlib.sha256(blob).hexdigest() == entry["sha256"], f"{path}: sha256"
        tensors = read_safetensors(path)
        listed = {t["name"]: t["sha256"] for t in entry["tensors"]}
        assert set(listed) == set(tensors), f"{path}: tensor listing"
        for name, (_, _, raw) in tensors.items():
            assert hashlib.sha256(raw).hexdigest() == listed[name], f"{path}: {name} sha256"

    q = m["quantization"]
    ternary = read_safetensors(d / "ternary.safetensors")
    fp16 = load_file(str(d / "fp16.safetensors"))
    assert set(fp16) == {t["name"] for t in m["tensors"]}, "fp16 tensor names"
    values = 0
    for t in m["tensors"]:
        name, shape = t["name"], tuple(t["shape"])
        got = fp16[name]
        assert got.dtype == np.float16 and got.shape == shape, f"{name}: {got.dtype} {got.shape}"
        if t["quantized"]:
            rows = shape[0]
            cols = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            _, pshape, praw = ternary[name]
            packed = np.frombuffer(praw, dtype=np.uint8).reshape(pshape)
            trits = decode_trits(packed, cols, q["encoding"])
            assert int((trits == 0).sum()) == t["zeros"], f"{name}: zeros"
            _, _, sraw = ternary[name + ".scale"]
            scales = np.frombuffer(sraw, dtype="<f4")
            want = (trits.astype(np.float32) * expand_scales(scales, rows, cols, q)).astype(np.float16)
        else:
            _, _, raw = ternary[name]
            want = np.frombuffer(raw, dtype="<f4").astype(np.float16)
        want_bits = want.reshape(-1).view(np.uint16)
        got_bits = got.reshape(-1).view(np.uint16)
        bad = np.nonzero(want_bits != got_bits)[0]
        assert bad.size == 0, f"{name}: first mismatch at {bad[:1]}"
        values += got.size
    return values


REPORT_VALIDATORS = {
    flag: jsonschema.Draft202012Validator(json.loads((ROOT / "spec" / schema).read_text()))
    for flag, schema in (("inspect", "inspect.schema.json"), ("verify", "verify.schema.json"), ("assess", "assess.schema.json"))
}

# Spec section 16: the activations, in f32.
ACTIVATIONS = {
    "relu": lambda z: np.maximum(z, np.float32(0)),
    "gelu": lambda z: (z * (1 + np.vectorize(math.erf)(z / math.sqrt(2))) / 2).astype(np.float32),
    "silu": lambda z: z / (1 + np.exp(-z)),
    "tanh": np.tanh,
    "identity": lambda z: z,
}


def forward(manifest, weights, x):
    """Logits of the manifest's model (spec section 16) with `weights` {name: float32 array}."""
    h = x.astype(np.float32)
    for layer in manifest["model"]["layers"]:
        norm = layer["rmsnorm"]
        if norm is not None:
            ms = (h.astype(np.float64) ** 2).mean(1, keepdims=True)
            h = (h / np.sqrt(ms + norm["eps"]).astype(np.float32)) * weights[norm["weight"]]
        z = h @ weights[layer["weight"]].astype(np.float32).T
        if layer["bias"] is not None:
            z = z + weights[layer["bias"]]
        h = ACTIVATIONS[layer["activation"]](z.astype(np.float32))
    return h


def predictions(logits):
    """argmax per row, first index on ties (numpy and torch agree), and whether the row is a
    near-tie: runner-up within 1e-4 of the row's largest |logit| (spec section 16.1)."""
    top2 = np.sort(logits, 1)[:, -2:] if logits.shape[1] > 1 else np.repeat(logits, 2, 1)
    scale = np.abs(logits).max(1)
    return logits.argmax(1), (top2[:, 1] - top2[:, 0]) <= 1e-4 * scale


def load_model(path):
    return {k: v.astype(np.float32) for k, v in load_file(str(path)).items()}


def close(a, b, ties, n):
    """Figures computed two ways agree exactly, or within the share of near-tie rows."""
    return abs(a - b) <= ties / n + 1e-12


def check_retention(bundle, checkpoint, report_path):
    """The handoff criterion recomputed: original (checkpoint) vs FP16 model decisions."""
    m = json.loads((bundle / "manifest.json").read_text())
    report = json.loads(Path(report_path).read_text())
    val = load_file(str(bundle / "validation.safetensors"))
    x, labels = val["inputs"], val["labels"]
    n = len(labels)
    orig, orig_ties = predictions(forward(m, load_model(checkpoint), x))
    fp16, fp16_ties = predictions(forward(m, load_model(bundle / "fp16.safetensors"), x))
    ties = int((orig_ties | fp16_ties).sum())
    stored = val["original_predictions"]
    bad = np.nonzero((stored != orig) & ~orig_ties)[0]
    assert bad.size == 0, f"stored original_predictions differ from the checkpoint's argmax at rows {bad[:5]}"
    retention = float((fp16 == orig).mean())
    metrics = report["metrics"]
    got = metrics["phase4_to_5/dequantization_accuracy_retention"]
    assert got is not None and close(got, retention, ties, n), f"verify retention {got}, numpy {retention}"
    for key, preds in (("accuracy_original", orig), ("accuracy_fp16", fp16)):
        want = float((preds == labels).mean())
        assert close(metrics[key], want, ties, n), f"verify {key} {metrics[key]}, numpy {want}"
    gate = next(c for c in report["checks"] if c["name"] == "retention")
    minimum = gate["figures"]["min_retention"]
    assert gate["status"] == ("pass" if retention >= minimum else "fail"), f"retention gate {gate['status']} at {retention} vs {minimum}"
    assert report["ok"] == (retention >= minimum), "ok must follow the retention gate here"
    return f"retention {retention:.4f} (gate {minimum}: {gate['status']}), original accuracy {metrics['accuracy_original']:.4f}, FP16 {metrics['accuracy_fp16']:.4f}, {ties} near-ties"


def check_demo(bundle, report_path):
    """The demo has something to retain: accuracy falls with difficulty through the 70-80% zone."""
    m = json.loads((bundle / "manifest.json").read_text())
    report = json.loads(Path(report_path).read_text())
    val = load_file(str(bundle / "validation.safetensors"))
    x, labels, levels = val["inputs"], val["labels"], val["difficulty"]
    fp16, ties = predictions(forward(m, load_model(bundle / "fp16.safetensors"), x))
    counts = {int(l): int((levels == l).sum()) for l in np.unique(levels)}
    assert sorted(counts) == list(range(1, 11)), f"difficulty levels {sorted(counts)}"
    assert len(set(counts.values())) == 1 and min(counts.values()) >= 50, f"level sizes {counts}"
    acc = {l: float((fp16[levels == l] == labels[levels == l]).mean()) for l in counts}
    assert acc[1] >= 0.95, f"accuracy at level 1 {acc[1]}"
    assert acc[10] <= 0.50, f"accuracy at level 10 {acc[10]}"
    assert any(0.70 <= a <= 0.80 for a in acc.values()), f"no level in the 70-80% zone: {acc}"
    retention = float((fp16 == val["original_predictions"]).mean())
    # The demo's original model is its quantization-aware forward (t x scale of the latent
    # weights, spec section 7.2): the FP16 model differs from it by the F16 rounding of the
    # scales alone, so it keeps (nearly) every decision.
    original = (m["provenance"].get("original") or {}).get("forward")
    assert original == "ternary", f"demo provenance.original.forward {original!r}, expected 'ternary'"
    assert 0.995 <= retention <= 1.0, f"demo retention {retention}"
    assert report["ok"], "the demo must pass verify by default"
    got = report["metrics"]["phase4_to_5/dequantization_accuracy_retention"]
    assert close(got, retention, int(ties.sum()), len(labels)), f"verify retention {got}, numpy {retention}"
    gate = next(c for c in report["checks"] if c["name"] == "retention")
    for row in gate["figures"]["by_difficulty"]:
        l = row["difficulty"]
        assert close(row["accuracy_fp16"], acc[l], int(ties[levels == l].sum()), counts[l]), f"level {l}: verify {row['accuracy_fp16']}, numpy {acc[l]}"
    return "FP16 accuracy by difficulty " + " ".join(f"{l}:{acc[l]:.2f}" for l in sorted(acc)) + f"; retention {retention:.4f}"


def ternary_weights(d, m):
    """The ternary path's weights {name: float32}: trits times their scales for quantized
    tensors (spec sections 5 and 6), the stored F32 values otherwise."""
    q = m["quantization"]
    ternary = read_safetensors(d / "ternary.safetensors")
    out = {}
    for t in m["tensors"]:
        name, shape = t["name"], tuple(t["shape"])
        if t["quantized"]:
            rows, cols = shape[0], int(np.prod(shape[1:]))
            _, pshape, praw = ternary[name]
            trits = decode_trits(np.frombuffer(praw, dtype=np.uint8).reshape(pshape), cols, q["encoding"])
            scales = np.frombuffer(ternary[name + ".scale"][2], dtype="<f4")
            out[name] = (trits.astype(np.float32) * expand_scales(scales, rows, cols, q)).reshape(shape)
        else:
            out[name] = np.frombuffer(ternary[name][2], dtype="<f4").reshape(shape)
    return out


def check_run(bundle, inputs_path, output_path):
    """`bundle run`'s logits equal numpy's forward pass (spec section 16) on the same inputs
    and weights, to 1e-4 of the largest |logit|; its predictions are numpy's argmax (near-ties
    aside)."""
    m = json.loads((bundle / "manifest.json").read_text())
    with safe_open(str(output_path), "np") as f:
        path = f.metadata()["path"]
    out = load_file(str(output_path))
    x = load_file(str(inputs_path))["inputs"]
    weights = load_model(bundle / "fp16.safetensors") if path == "fp16" else ternary_weights(bundle, m)
    logits = forward(m, weights, x)
    assert out["logits"].dtype == np.float32 and out["logits"].shape == logits.shape, f"logits {out['logits'].dtype} {out['logits'].shape}"
    err = float(np.abs(out["logits"] - logits).max()) / float(np.abs(logits).max())
    assert err <= 1e-4, f"logits differ from numpy's by {err:.2e} of the largest |logit|"
    want, ties = predictions(logits)
    assert out["predictions"].dtype == np.int64 and ((out["predictions"] == want) | ties).all(), "predictions differ"
    return f"{path} path: {len(x)} rows, logits within {err:.1e} of numpy's, predictions equal"


ACT = {"relu": (lambda z: np.maximum(z, 0.0), lambda z: (z > 0).astype(np.float64)),
       "identity": (lambda z: z, lambda z: np.ones_like(z)),
       "tanh": (np.tanh, lambda z: 1.0 - np.tanh(z) ** 2)}


def gradient_figures(m, weights, x, y):
    """Mean cross-entropy and, per parameter tensor, the gradient of the mean cross-entropy over
    the batch (float64 backpropagation through the manifest's layers)."""
    hs, zs, h = [], [], x.astype(np.float64)
    for layer in m["model"]["layers"]:
        assert layer["rmsnorm"] is None, "this check covers layers without RMSNorm"
        w = weights[layer["weight"]]
        z = h @ w.T + (weights[layer["bias"]] if layer["bias"] else 0.0)
        hs.append(h); zs.append(z)
        h = ACT[layer["activation"]][0](z)
    logits = h
    shift = logits - logits.max(1, keepdims=True)
    p = np.exp(shift); p /= p.sum(1, keepdims=True)
    n = len(y)
    loss = float(-np.log(p[np.arange(n), y]).mean())
    delta = p.copy(); delta[np.arange(n), y] -= 1.0; delta /= n
    grads = {}
    for layer, h_in, z in reversed(list(zip(m["model"]["layers"], hs, zs))):
        dz = delta * ACT[layer["activation"]][1](z)
        grads[layer["weight"]] = dz.T @ h_in
        if layer["bias"]:
            grads[layer["bias"]] = dz.sum(0)
        delta = dz @ weights[layer["weight"]]
    return loss, grads


def check_assess(bundle, report_path):
    """`bundle assess` recomputed from fp16.safetensors and validation.safetensors."""
    m = json.loads((bundle / "manifest.json").read_text())
    report = json.loads(Path(report_path).read_text())
    weights = {k: v.astype(np.float64) for k, v in load_file(str(bundle / "fp16.safetensors")).items()}
    val = load_file(str(bundle / "validation.safetensors"))
    x, y, levels = val["inputs"], val["labels"], val["difficulty"]
    batch = report["batch_size"]
    rows = {r["difficulty"]: r for r in report["levels"]}
    assert sorted(rows) == sorted(int(l) for l in np.unique(levels)), f"levels {sorted(rows)}"
    close = lambda a, b: abs(a - b) <= 1e-4 * max(abs(a), abs(b))
    worst = 0.0
    for level, r in rows.items():
        idx = np.nonzero(levels == level)[0]
        xl, yl = x[idx], y[idx]
        size = batch or len(idx)
        variances, losses = [], 0.0
        for s in range(0, len(idx), size):
            loss, grads = gradient_figures(m, weights, xl[s:s + size], yl[s:s + size])
            losses += loss * len(yl[s:s + size])
            variances.append(sum(float(np.var(g, ddof=1)) for g in grads.values() if g.size > 1))
        variance, mean_loss = float(np.mean(variances)), losses / len(idx)
        preds, ties = predictions(forward(m, {k: v.astype(np.float32) for k, v in weights.items()}, xl))
        accuracy = float((preds == yl).mean())
        assert abs(accuracy - r["accuracy_fp16"]) <= ties.sum() / len(idx) + 1e-12, f"level {level}: accuracy {r['accuracy_fp16']} vs numpy {accuracy}"
        assert close(variance, r["gradient_variance"]), f"level {level}: gradient variance {r['gradient_variance']} vs numpy {variance}"
        assert close(mean_loss, r["mean_cross_entropy"]), f"level {level}: mean cross-entropy {r['mean_cross_entropy']} vs numpy {mean_loss}"
        worst = max(worst, abs(variance - r["gradient_variance"]) / variance)
    target = report["target_accuracy"]
    chosen = min(sorted(rows), key=lambda l: abs(rows[l]["accuracy_fp16"] - target))
    assert chosen == report["chosen"] == report["metrics"]["phase5/edge_of_chaos_optimal_level"], f"chosen {report['chosen']}, numpy {chosen}"
    lo, hi = report["zone"]
    assert lo <= rows[chosen]["accuracy_fp16"] <= hi and report["ok"], f"level {chosen} is not in the zone"
    return f"{len(rows)} levels match numpy (largest relative gradient-variance difference {worst:.1e}); chosen level {chosen} at {rows[chosen]['accuracy_fp16']:.2f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundles", nargs="*", type=Path, help="extra bundle directories to check")
    ap.add_argument("--inspect-json", action="append", default=[], type=Path)
    ap.add_argument("--verify-json", action="append", default=[], type=Path)
    ap.add_argument("--retention", action="append", default=[], nargs=3, metavar=("BUNDLE", "CHECKPOINT", "VERIFY_JSON"))
    ap.add_argument("--demo", action="append", default=[], nargs=2, metavar=("BUNDLE", "VERIFY_JSON"))
    ap.add_argument("--assess", action="append", default=[], nargs=2, metavar=("BUNDLE", "ASSESS_JSON"))
    ap.add_argument("--assess-json", action="append", default=[], type=Path)
    ap.add_argument("--run", action="append", default=[], nargs=3, metavar=("BUNDLE", "INPUTS", "OUTPUT"),
                    help="check `bundle run BUNDLE --input INPUTS --out OUTPUT` against numpy")
    args = ap.parse_args()
    checked = failed = 0

    def run(label, f, *a):
        nonlocal checked, failed
        try:
            print(f"ok   {label}: {f(*a)}")
            checked += 1
        except Exception as e:  # report and keep going, fail at the end
            print(f"FAIL {label}: {e!r}")
            failed += 1

    def schema(kind, path):
        errors = list(REPORT_VALIDATORS[kind].iter_errors(json.loads(path.read_text())))
        assert not errors, f"{kind} output breaks its schema in spec/: {errors[0].message}"
        return f"{kind} output matches its schema in spec/"

    for f in args.inspect_json:
        run(f, schema, "inspect", f)
    for f in args.verify_json:
        run(f, schema, "verify", f)
    for f in args.assess_json:
        run(f, schema, "assess", f)
    for d in sorted((ROOT / "fixtures" / "bundles").iterdir()) + [ROOT / "fixtures/versions/newer-minor", ROOT / "fixtures/versions/written-by-1.0"] + args.bundles:
        run(d, lambda d: f"{check_bundle(d)} FP16 values equal f16(t * scale) per the spec", d)
    for bundle, checkpoint, report in args.retention:
        run(f"{bundle} vs {checkpoint}", check_retention, Path(bundle), Path(checkpoint), report)
    for bundle, report in args.demo:
        run(f"{bundle} (demo)", check_demo, Path(bundle), report)
    for bundle, report in args.assess:
        run(f"{bundle} (assess)", check_assess, Path(bundle), report)
    for bundle, inputs, output in args.run:
        run(f"{output} (bundle run)", check_run, Path(bundle), Path(inputs), Path(output))

    def refuses_major():
        major = json.loads((ROOT / "fixtures/versions/unknown-major/manifest.json").read_text())
        assert not VALIDATOR.is_valid(major), f"schema accepted format_version {major['format_version']}"
        return f"schema rejects format_version {major['format_version']}"

    run("fixtures/versions/unknown-major", refuses_major)
    print(f"{checked} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
