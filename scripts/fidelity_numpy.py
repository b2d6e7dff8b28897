#!/usr/bin/env python3
"""An independent numpy oracle of `bundle verify`'s fidelity check (format 5.0, spec/FORMAT.md
section 9.1, rules 6.1 and 6.4, section 16.3), written from the spec, to check in CI the KL
divergences, cross-entropies and perplexities the Rust code reports.

    python3 scripts/fidelity_numpy.py check BUNDLE VERIFY.json
        BUNDLE: a bundle whose validation.safetensors stores the original model's distributions
        (full form or top K); VERIFY.json: the output of `bundle verify BUNDLE --json` (with or
        without --reference). Reads manifest.json, ternary.safetensors, fp16.safetensors and
        validation.safetensors with numpy and the `safetensors` package only (none of this
        project's code), and:
        1. checks rule 6.4 on the stored tensors (finite, <= 0; a full row's log-sum-exp within
           1e-3 of 0 and its largest value at original_predictions; top-K ids distinct classes,
           the first equal to original_predictions, log-probabilities non-increasing, the sum of
           their exponentials at most 1 + 1e-3);
        2. runs both weight paths in numpy on the validation inputs (section 16; a decoder by
           scripts/decoder_numpy.py's forward, section 16.2, scored at positions 0 .. T - 2): the
           FP16 path from fp16.safetensors upcast to f32, the ternary path from
           ternary.safetensors (sections 5, 6): a quantized matrix as the product with its trit
           matrix, the scales applied after it (section 16.1's order);
        3. computes, in f64 at every scored sample, section 16.3's KL(original || path) (full,
           or top-K with its error bound), -log q(label), the statistics (mean, median, p99,
           p999, max, numpy's linear percentiles), the histogram by decade, same_top, the
           cross-entropies and perplexities, overall and per difficulty level;
        4. requires every figure of the report's `fidelity` check to agree (tolerance below),
           the histograms to be equal (up to values at a bin edge, below), the figures to be
           measured against the stored distributions, and the check's status to be "pass"
           exactly when the FP16 mean KL <= max_kl (or max_kl == 0).
        Prints one `ok   ...` line with the figures, or `FAIL ...` naming the first mismatch
        (exit 1).

Tolerance. A figure a (Rust) and b (numpy) agree when |a - b| <= TOL * max(1, |b|), TOL = 1e-6
(absolute below 1, relative above; counts and strings exactly). Both sides compute the logits in
f32 and everything after them in f64. For CI's trained MLP (small layers, channel scales)
numpy's logits equal Rust's bit for bit; elsewhere (larger matrices, group scales, a decoder's
attention, RoPE and norms) they differ by summation order, up to 1.3e-6 of the largest |logit|
on CI's bundles. A logit error e moves KL(p || q) by at most
sum_i |p_i - q_i| * max|e| and -log q(label) by at most 2 max|e|, and averaging shrinks it
further: on CI's bundles every figure agrees within 4e-7 (relative above 1, the largest being
per-level perplexities of ~10^3 .. 10^5 of the decoder task models), a margin of 2.5x or more.

Histograms. A per-sample KL within that rounding of a bin edge can fall on either side of it: a
bin's count may differ from numpy's only by samples whose distance to an edge is at most
sum_i |p_i - q_i| * LOGIT_TOL * max_i |y_i| (that bound for a logit error of LOGIT_TOL = 1e-5 of
the row's largest |logit|, about 10x the measured one; for the top-K form the sum runs over the
K classes and the rest). CI's bundles move at most 3 of 19656 samples across 1e-6.
"""
import json
import math
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decoder_numpy import forward as decoder_forward  # noqa: E402

TOL = 1e-6
EDGES = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0]
LOGIT_TOL = 1e-5  # relative logit agreement assumed for the histogram (histogram_agrees)
TINY = 2.2250738585072014e-308  # the smallest positive normal f64 (q_r's floor)
TRITS_PER_BYTE = {"trit5": 5, "trit2": 4}
CHUNK = 64  # sequences (or 64 x 64 rows of a chain) per forward call, to bound memory


class Mismatch(Exception):
    pass


def need(ok, msg):
    if not ok:
        raise Mismatch(msg)


def every_row(ok, msg):
    """Rule 6.4 on every scored sample: `ok` a boolean per row (or per value, [rows, k])."""
    bad = np.nonzero(~ok.reshape(len(ok), -1).all(1))[0]
    need(bad.size == 0, f"{msg} at scored sample {bad[:1].tolist()[0] if bad.size else ''} "
                        f"({bad.size} sample(s)) (rule 6.4)")


# ---------------------------------------------------------------- weights (sections 5, 6, 8)

def unpack(name, packed, rows, cols, encoding):
    """Trits int8 [rows, cols] of a packed U8 [rows, ceil(cols / n)] array (section 5)."""
    n = TRITS_PER_BYTE[encoding]
    need(packed.dtype == np.uint8 and packed.shape == (rows, -(-cols // n)),
         f"{name}: packed {packed.dtype} {list(packed.shape)}, expected uint8 {[rows, -(-cols // n)]}")
    b = packed.astype(np.int64)[:, :, None]
    digits = (b // 3 ** np.arange(5)) % 3 if encoding == "trit5" else (b >> (2 * np.arange(4))) & 3
    need(bool((packed <= 242).all()) if encoding == "trit5" else bool((digits != 3).all()),
         f"{name}: an invalid {encoding} byte (rule 4.3)")
    return (digits.reshape(rows, -1)[:, :cols] - 1).astype(np.int8)


def expand_scales(name, s, rows, cols, q):
    """scale(r, c) as f32 [rows, cols] for the granularity of section 6."""
    gran, g = q["granularity"], q.get("group_size")
    want = {"tensor": (1,), "channel": (rows,), "group": (rows, -(-cols // g) if g else 0)}[gran]
    need(s.dtype == np.float32 and s.shape == want, f"{name}.scale: {s.dtype} {list(s.shape)}, expected {list(want)}")
    if gran == "tensor":
        return np.full((rows, cols), s[0], np.float32)
    if gran == "channel":
        return np.repeat(s[:, None], cols, axis=1)
    return np.repeat(s, g, axis=1)[:, :cols]


class Matrix:
    """A weight matrix [out, in] in a forward pass: `x @ M.T` is the product of the rows of x
    (any leading dimensions, computed as one 2-D product: numpy's stacked matmul of a transposed
    matrix is many times slower) and `M[ids]` its rows (an embedding's lookup)."""
    __array_ufunc__ = None  # numpy defers `x @ M.T` to __rmatmul__

    def __init__(self, dense):
        self.dense = dense

    @property
    def T(self):
        return self

    def __getitem__(self, idx):
        return self.dense[idx]

    def product(self, x):
        return x @ self.dense.T

    def __rmatmul__(self, x):
        return self.product(x.reshape(-1, x.shape[-1])).reshape(x.shape[:-1] + (-1,))


class TernaryMatrix(Matrix):
    """A quantized matrix of the ternary path as section 16 computes with it: the product with
    the trit matrix, the scales applied after it (per row for `channel`, once for `tensor`, per
    column group for `group`, the groups' products summed in order); its rows (`M[ids]`, an
    embedding) are f32(t) x scale."""

    def __init__(self, t, s, q, shape):
        self.t, self.s, self.gran, self.g = t.astype(np.float32), s, q["granularity"], q.get("group_size")
        super().__init__((self.t * expand_scales("", s, t.shape[0], t.shape[1], q)).reshape(shape))

    def product(self, x):
        if self.gran == "tensor":
            return (x @ self.t.T) * self.s[0]
        if self.gran == "channel":
            return (x @ self.t.T) * self.s
        acc = None
        for j in range(self.s.shape[1]):
            cols = slice(j * self.g, (j + 1) * self.g)
            part = (x[:, cols] @ self.t[:, cols].T) * self.s[:, j]
            acc = part if acc is None else acc + part
        return acc


def path_weights(d, m):
    """{"fp16": {...}, "ternary": {...}}, each {name: f32 array, or Matrix for a matrix}:
    fp16.safetensors upcast to f32, and the ternary path's tensors (a quantized matrix as its
    trits and scales, a quantized vector as f32(t) x scale, exact in f32; other tensors as their
    F32 values)."""
    q = m["quantization"]
    ter = load_file(str(d / "ternary.safetensors"))
    f16 = load_file(str(d / "fp16.safetensors"))
    fp16, ternary = {}, {}
    for e in m["tensors"]:
        name, shape = e["name"], tuple(e["shape"])
        need(f16[name].dtype == np.float16 and f16[name].shape == shape, f"fp16.safetensors: {name}")
        fp16[name] = f16[name].astype(np.float32)
        if len(shape) == 2:
            fp16[name] = Matrix(fp16[name])
        if e["quantized"]:
            rows, cols = shape[0], int(np.prod(shape[1:], dtype=np.int64))
            t = unpack(name, ter[name], rows, cols, q["encoding"])
            s = ter[name + ".scale"]
            expand_scales(name, s, rows, cols, q)  # checks the scales' shape
            if len(shape) == 2:
                ternary[name] = TernaryMatrix(t, s, q, shape)
            else:
                ternary[name] = (t.astype(np.float32) * expand_scales(name, s, rows, cols, q)).reshape(shape)
        else:
            need(ter[name].dtype == np.float32 and ter[name].shape == shape, f"ternary.safetensors: {name}")
            ternary[name] = Matrix(ter[name]) if len(shape) == 2 else ter[name]
    return {"fp16": fp16, "ternary": ternary}


# ---------------------------------------------------------------- forward passes (section 16)

# The activations of a chain of layers, in f32 (as scripts/check_interop.py).
ACTIVATIONS = {
    "relu": lambda z: np.maximum(z, np.float32(0)),
    "gelu": lambda z: (z * (1 + np.vectorize(math.erf)(z / math.sqrt(2))) / 2).astype(np.float32),
    "silu": lambda z: z / (1 + np.exp(-z)),
    "tanh": np.tanh,
    "identity": lambda z: z,
}


def chain_forward(model, weights, x):
    """Logits [rows, classes] (f32) of a chain of layers (section 16): optional RMSNorm (mean
    of squares and the inverse square root in f64, the factor rounded to f32), x W^T, bias,
    activation."""
    h = x.astype(np.float32)
    for layer in model["layers"]:
        norm = layer["rmsnorm"]
        if norm is not None:
            ms = (h.astype(np.float64) ** 2).mean(1, keepdims=True)
            eps = float(np.float32(norm["eps"]))
            h = (h * (1.0 / np.sqrt(ms + eps)).astype(np.float32)) * weights[norm["weight"]]
        z = h @ weights[layer["weight"]].T
        if layer["bias"] is not None:
            z = z + weights[layer["bias"]]
        h = ACTIVATIONS[layer["activation"]](z.astype(np.float32))
    return h


def scored_logits(m, weights, val):
    """The path's logits at every scored sample, [samples, classes] f32, row-major by
    (sequence, position) for a decoder (positions 0 .. T - 2)."""
    dec = m["model"].get("decoder")
    if dec is None:
        x = val["inputs"]
        return np.concatenate([chain_forward(m["model"], weights, x[s:s + CHUNK * 64])
                               for s in range(0, len(x), CHUNK * 64)])
    c = dict(dec, rope_parameters={"rope_theta": dec["rope_theta"]})
    c["rms_norm_eps"] = float(np.float32(dec["rms_norm_eps"]))  # an f32 value (section 3.2)
    ids = val["input_ids"]
    out = []
    for s in range(0, len(ids), CHUNK):
        logits = decoder_forward(c, dec["family"], weights, ids[s:s + CHUNK])
        out.append(logits[:, :-1, :].reshape(-1, logits.shape[-1]))
    return np.concatenate(out).astype(np.float32)


# ---------------------------------------------------------------- stored distributions

def load_distributions(m, val):
    """The stored original distributions, flattened to a row per scored sample, after checking
    rule 6.1's shapes and rule 6.4's values."""
    dec = m["model"].get("decoder")
    classes = dec["vocab_size"] if dec else m["model"]["layers"][-1]["out_features"]
    need("original_predictions" in val, "validation.safetensors has no original_predictions")
    labels, pred = val["labels"], val["original_predictions"]
    s = labels.shape
    need(pred.shape == s, f"original_predictions {list(pred.shape)}, labels {list(s)}")
    n = int(np.prod(s))
    full = "original_log_probs" in val
    top = [k for k in ("original_top_ids", "original_top_log_probs", "original_log_sum_exp",
                       "original_label_log_probs") if k in val]
    need(full != bool(top), f"validation.safetensors: distributions in {'both forms' if full else 'no form'} (rule 6.1)")
    difficulty = val.get("difficulty")
    if difficulty is not None and dec is not None:  # one per sequence: every scored position
        difficulty = np.repeat(difficulty, s[1])
    out = dict(classes=classes, rows=n, labels=labels.reshape(-1), pred=pred.reshape(-1),
               difficulty=difficulty, decoder=dec is not None)
    rows = np.arange(n)
    if full:
        lp = val["original_log_probs"]
        need(lp.dtype == np.float32 and lp.shape == s + (classes,),
             f"original_log_probs {lp.dtype} {list(lp.shape)}, expected float32 {list(s + (classes,))} (rule 6.1)")
        lp = lp.reshape(n, classes).astype(np.float64)
        every_row(np.isfinite(lp) & (lp <= 0), "original_log_probs: a value not finite or > 0")
        mx = lp.max(1)
        lse = mx + np.log(np.exp(lp - mx[:, None]).sum(1))
        every_row(np.abs(lse) <= 1e-3, "original_log_probs: a log-sum-exp not within 1e-3 of 0")
        every_row(lp[rows, out["pred"]] == mx, "original_log_probs: the largest value not at original_predictions")
        out.update(form="full", k=None, log_probs=lp, label_lp=lp[rows, out["labels"]])
        return out
    need(len(top) == 4, f"validation.safetensors: top-K form with only {top} (rule 6.1)")
    ids, tlp = val["original_top_ids"], val["original_top_log_probs"]
    lse, llp = val["original_log_sum_exp"], val["original_label_log_probs"]
    k = ids.shape[-1] if ids.ndim == len(s) + 1 else 0
    need(1 <= k <= min(classes, 1024) and ids.dtype == np.int64 and ids.shape == s + (k,)
         and tlp.dtype == np.float32 and tlp.shape == s + (k,) and lse.dtype == np.float32 and lse.shape == s
         and llp.dtype == np.float32 and llp.shape == s, "top-K tensors' dtypes or shapes (rule 6.1)")
    ids, tlp = ids.reshape(n, k), tlp.reshape(n, k).astype(np.float64)
    lse, llp = lse.reshape(n).astype(np.float64), llp.reshape(n).astype(np.float64)
    for name, v in (("original_top_log_probs", tlp), ("original_label_log_probs", llp)):
        every_row(np.isfinite(v) & (v <= 0), f"{name}: a value not finite or > 0")
    every_row(np.isfinite(lse), "original_log_sum_exp: a value not finite")
    every_row((ids >= 0) & (ids < classes), f"original_top_ids: an id outside 0 .. {classes - 1}")
    srt = np.sort(ids, 1)
    every_row(srt[:, 1:] != srt[:, :-1], "original_top_ids: an id repeated")
    every_row(ids[:, 0] == out["pred"], "original_top_ids: the first id is not original_predictions")
    every_row(tlp[:, 1:] <= tlp[:, :-1], "original_top_log_probs: increasing")
    every_row(np.exp(tlp).sum(1) <= 1 + 1e-3, "original_top_log_probs: probabilities summing above 1 + 1e-3")
    out.update(form="top-k", k=k, ids=ids, top_lp=tlp, label_lp=llp)
    return out


# ---------------------------------------------------------------- section 16.3, per sample

def log_softmax(y):
    """log q = y - LSE(y) in f64, LSE = m + ln sum exp(y - m)."""
    y = y.astype(np.float64)
    mx = y.max(1, keepdims=True)
    return y - (mx + np.log(np.exp(y - mx).sum(1, keepdims=True)))


def plogp(p, lq):
    """p (ln p - log q), 0 where p == 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(p > 0, p * (np.log(np.where(p > 0, p, 1.0)) - lq), 0.0)


def measure(dist, logits):
    """Per scored sample: KL(original || path), its error bound (top-K), -log q(label), and how
    far the KL can move when the logits move by LOGIT_TOL of the row's largest |logit| (see
    `histogram_agrees`)."""
    lq = log_softmax(logits)
    n = dist["rows"]
    rows = np.arange(n)
    nll = -lq[rows, dist["labels"]]
    shift = LOGIT_TOL * np.abs(logits.astype(np.float64)).max(1)
    if dist["form"] == "full":
        l = dist["log_probs"]
        p = np.exp(l)
        return (p * (l - lq)).sum(1), np.zeros(n), nll, np.abs(p - np.exp(lq)).sum(1) * shift
    ids, tl, k, classes = dist["ids"], dist["top_lp"], dist["k"], dist["classes"]
    p = np.exp(tl)
    head = (p * (tl - lq[rows[:, None], ids])).sum(1)
    moved = np.abs(p - np.exp(lq[rows[:, None], ids])).sum(1) * shift
    if k == classes:
        return head, np.zeros(n), nll, moved
    p_r = np.maximum(0.0, 1.0 - p.sum(1))
    outside = lq.copy()
    outside[rows[:, None], ids] = np.inf  # taken: sorted to the end
    outside = np.sort(outside, 1)[:, :classes - k]  # the classes outside T, smallest q first
    q_r = np.maximum(np.exp(outside).sum(1), TINY)
    moved = moved + np.abs(p_r - q_r) * shift
    with np.errstate(divide="ignore"):
        tail = np.where(p_r > 0, p_r * (np.log(np.where(p_r > 0, p_r, 1.0)) - np.log(q_r)), 0.0)
    # U: c = exp(l_K) on the m = floor(p_r / c) classes of smallest q, the rest on the next.
    c = p[:, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        m = np.floor(p_r / c)
    j = np.arange(classes - k)[None, :]
    mass = np.where(j < m[:, None], c[:, None], np.where(j == m[:, None], (p_r - m * c)[:, None], 0.0))
    upper = plogp(mass, outside).sum(1)
    upper = np.where((p_r > 0) & (c > 0), upper, 0.0)
    return head + tail, np.maximum(upper - tail, 0.0), nll, moved


# ---------------------------------------------------------------- figures

def summary(v):
    return {"mean": float(v.mean()), "median": float(np.percentile(v, 50)), "p99": float(np.percentile(v, 99)),
            "p999": float(np.percentile(v, 99.9)), "max": float(v.max())}


def histogram(v):
    return np.bincount(np.searchsorted(EDGES, v, side="right"), minlength=len(EDGES) + 1).tolist()


def figures(dist, paths, max_kl):
    decoder, bounded = dist["decoder"], dist["form"] == "top-k" and dist["k"] < dist["classes"]
    ppl = (lambda ce: math.exp(ce)) if decoder else (lambda ce: None)
    original_nll = -dist["label_lp"]
    # Measured against the stored distributions and predictions (not recomputed by --reference).
    out = {"samples": dist["rows"], "inputs": "validation", "original": "stored", "predictions": "original_predictions",
           "form": dist["form"], "top_k": dist["k"],
           "max_kl": max_kl, "histogram_edges": EDGES,
           "original_model": {"cross_entropy": float(original_nll.mean()), "perplexity": ppl(float(original_nll.mean()))}}
    for name, (kl, bound, nll, _, top) in paths.items():
        ce = float(nll.mean())
        out[name] = {"kl": summary(kl),
                     "kl_error_bound": {"mean": float(bound.mean()), "max": float(max(0.0, bound.max()))} if bounded else None,
                     "cross_entropy": ce, "perplexity": ppl(ce),
                     "same_top": float((top == dist["pred"]).mean()), "histogram": histogram(kl)}
    lv = dist["difficulty"]
    if lv is None:
        out["by_difficulty"] = None
    else:
        rows = []
        for level in np.unique(lv):
            idx = lv == level
            ce = {k: float(v.mean()) for k, v in (("original", original_nll[idx]), ("fp16", paths["fp16"][2][idx]),
                                                  ("ternary", paths["ternary"][2][idx]))}
            rows.append({"difficulty": int(level), "samples": int(idx.sum()),
                         "mean_kl_fp16": float(paths["fp16"][0][idx].mean()),
                         "mean_kl_ternary": float(paths["ternary"][0][idx].mean()),
                         **{f"cross_entropy_{k}": v for k, v in ce.items()},
                         **{f"perplexity_{k}": ppl(v) for k, v in ce.items()}})
        out["by_difficulty"] = rows
    return out


def histogram_agrees(counts, theirs, kl, moved):
    """Whether the report's histogram can be `counts` (numpy's, of the values `kl`) with some
    values moved to the neighbouring bin: a value can be, when an edge lies within `moved` of it."""
    if len(theirs) != len(counts) or sum(theirs) != sum(counts):
        return False
    bins = np.searchsorted(EDGES, kl, side="right")
    for b in range(len(counts)):
        # Values of bin b that may lie in b - 1 / b + 1 instead, and of b - 1 / b + 1 that may lie in b.
        down = int(((bins == b) & (kl - moved < EDGES[b - 1])).sum()) if b > 0 else 0
        up = int(((bins == b) & (kl + moved >= EDGES[b])).sum()) if b < len(EDGES) else 0
        come = (int(((bins == b - 1) & (kl + moved >= EDGES[b - 1])).sum()) if b > 0 else 0) + \
               (int(((bins == b + 1) & (kl - moved < EDGES[b])).sum()) if b < len(EDGES) else 0)
        if not counts[b] - down - up <= theirs[b] <= counts[b] + come:
            return False
    return True


def compare(ours, theirs, where, kl_values, worst):
    """Every figure of `ours` equals the report's (`theirs`) within TOL; histograms exactly,
    except for values that rounding of the logits can move across an edge (histogram_agrees)."""
    if isinstance(ours, dict):
        need(isinstance(theirs, dict), f"{where}: report has {theirs!r}, expected an object")
        for k, v in ours.items():
            need(k in theirs, f"{where}.{k}: missing from the report")
            compare(v, theirs[k], f"{where}.{k}", kl_values, worst)
    elif isinstance(ours, list) and where.endswith(".histogram"):
        need(isinstance(theirs, list) and len(theirs) == len(ours), f"{where}: report {theirs}, numpy {ours}")
        if ours != theirs:
            kl, moved = kl_values[where.split(".")[-2]]
            need(histogram_agrees(ours, theirs, kl, moved),
                 f"{where}: report {theirs}, numpy {ours} (differs by more than the values within "
                 f"rounding of a bin edge: {int(sum(((np.abs(kl - e) <= moved).sum() for e in EDGES)))})")
            worst["moved"].append(f"{where.split('.')[-2]} {theirs} (numpy {ours})")
    elif isinstance(ours, list):
        need(isinstance(theirs, list) and len(theirs) == len(ours), f"{where}: report has {theirs!r}, numpy {ours!r}")
        for i, (a, b) in enumerate(zip(ours, theirs)):
            compare(a, b, f"{where}[{i}]", kl_values, worst)
    elif isinstance(ours, str) or ours is None or isinstance(ours, bool):
        need(theirs == ours, f"{where}: report {theirs!r}, numpy {ours!r}")
    elif isinstance(ours, int) and not isinstance(ours, bool) and not where.endswith("max_kl"):
        need(theirs == ours, f"{where}: report {theirs!r}, numpy {ours!r}")
    else:
        need(isinstance(theirs, (int, float)) and not isinstance(theirs, bool),
             f"{where}: report {theirs!r}, numpy {ours!r}")
        diff = abs(theirs - ours)
        rel = diff / max(1.0, abs(ours))
        if rel >= worst["rel"]:
            worst.update(rel=rel, at=where)
        need(rel <= TOL, f"{where}: report {theirs!r}, numpy {ours!r}: |diff| {diff:.3g} "
                         f"> {TOL:g} x max(1, |numpy|)")


def check(bundle, report_path):
    d = Path(bundle)
    m = json.loads((d / "manifest.json").read_text(encoding="utf-8"))
    need(str(m.get("format_version", "")).split(".")[0] == "5",
         f"manifest: format_version {m.get('format_version')!r}; stored distributions need 5.x")
    need(m["files"].get("validation") is not None, "the bundle has no validation set")
    val = load_file(str(d / "validation.safetensors"))
    dist = load_distributions(m, val)
    report = json.loads(Path(report_path).read_text(encoding="utf-8"))
    fid = [c for c in report["checks"] if c["name"] == "fidelity"]
    need(len(fid) == 1, f"{report_path}: {len(fid)} checks named fidelity")
    fid = fid[0]
    theirs = fid.get("figures") or {}
    max_kl = theirs.get("max_kl")
    need(isinstance(max_kl, (int, float)), f"{report_path}: fidelity figures without max_kl (status {fid['status']})")

    weights = path_weights(d, m)
    paths = {}
    for name in ("fp16", "ternary"):
        logits = scored_logits(m, weights[name], val)
        need(logits.shape == (dist["rows"], dist["classes"]),
             f"{name} path: logits {list(logits.shape)}, expected {[dist['rows'], dist['classes']]}")
        paths[name] = (*measure(dist, logits), logits.argmax(1))
    ours = figures(dist, paths, max_kl)
    worst = {"rel": 0.0, "at": None, "moved": []}
    compare(ours, theirs, "fidelity", {k: (v[0], v[3]) for k, v in paths.items()}, worst)
    # The gate on the report's own mean (which agrees with numpy's, above), so that a mean
    # within rounding of max_kl cannot make the two disagree.
    mean = theirs["fp16"]["kl"]["mean"]
    want = "pass" if max_kl == 0 or mean <= max_kl else "fail"
    need(fid["status"] == want, f"fidelity status {fid['status']!r}, expected {want!r} (FP16 mean KL {mean!r}, max_kl {max_kl})")
    ppl = (lambda k: f"perplexity {ours[k]['perplexity']:.6g}") if dist["decoder"] else \
          (lambda k: f"cross-entropy {ours[k]['cross_entropy']:.6g}")
    bound = f" (+ bound {ours['fp16']['kl_error_bound']['mean']:.4g})" if ours["fp16"]["kl_error_bound"] else ""
    print(f"ok   {d.name}: fidelity ({ours['form']}{'' if ours['top_k'] is None else ' K=' + str(ours['top_k'])}, "
          f"{dist['rows']} samples, {fid['status']}) recomputed in numpy: FP16 mean KL {ours['fp16']['kl']['mean']:.6g}{bound}, "
          f"ternary {ours['ternary']['kl']['mean']:.6g}; original {ppl('original_model')}, FP16 {ppl('fp16')}, "
          f"ternary {ppl('ternary')}; every figure within {TOL:g} (largest |diff| / max(1, |numpy|) "
          f"{worst['rel']:.2g} at {worst['at']}); histograms "
          + (f"equal but for values within rounding of an edge: {'; '.join(worst['moved'])}" if worst["moved"] else "equal")
          + "; rule 6.4 holds")


def main():
    if len(sys.argv) != 4 or sys.argv[1] != "check":
        print(__doc__, file=sys.stderr)
        return 2
    try:
        check(sys.argv[2], sys.argv[3])
    except Mismatch as e:
        print(f"FAIL {sys.argv[2]}: {e}")
        return 1
    except KeyError as e:
        print(f"FAIL {sys.argv[2]}: missing key or tensor {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
