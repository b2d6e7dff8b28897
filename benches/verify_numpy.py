#!/usr/bin/env python3
"""Side-by-side baseline for `bundle verify`: the same checks of a bundle directory written in
plain numpy (plus hashlib, json, struct), from spec/FORMAT.md alone, so that the two can be timed
against each other (benches/verify_compare.sh).

    python3 benches/verify_numpy.py DIR [--samples N] [--seed S] [--min-agreement 0.995]
                                      [--min-retention 0.995]
                                      [--grad-tol 1e-4]

Checks, in order, one line each (`name PASS|FAIL detail [seconds]`; SKIP when an earlier check
that it depends on failed):

  manifest        manifest.json parses (no duplicate keys), format "ternary-bundle", major version
                  1 or 2, and the keys the later checks use (rules 2.3-2.10, the parts used here)
  files           required files present, regular (opened with O_NOFOLLOW), sizes as in the
                  manifest (rules 1.2-1.4, 3.1)
  checksums       SHA-256 of every whole file and of every tensor's data bytes (rules 7.1, 7.2),
                  hashed by a pool of 2 threads (hashlib releases the GIL)
  structure       safetensors headers parsed here (rules 3.2-3.7) and the tensor sets, dtypes and
                  shapes of rules 4.1, 4.2, 5.1 (and 6.1 for the validation file)
  encoding        packed bytes valid and canonically padded, zero-trit counts (rules 4.3, 4.4, 4.6)
  scales          scales finite, > 0, representable in f16 where they govern a non-zero trit, and
                  min/max as in the manifest (rules 4.5, 4.6)
  dequantization  fp16 == f16(f32(t) * scale) bit for bit; passthrough fp16 == f16(f32 value)
                  and finite (rules 5.2, 5.3, 4.7)
  agreement       the model run twice in f32, from trits + scales only and from the FP16 weights
                  only; argmax agreement >= --min-agreement; max |logit difference|
  retention       the FP16 model's argmax against the validation set's original_predictions
                  (format 2.0): share kept >= --min-retention
  gradient_check  FP16 model in f64, mean cross-entropy over 8 samples; manual backprop versus
                  central differences (h = 1e-5) at 3 coordinates per parameter tensor and along
                  2 random directions; relative error < --grad-tol
  gradient_flow   gradients over 32 samples: finite and not all zero for every parameter tensor;
                  per-layer weight-gradient norm and variance

Exit status 0 if every check passed, 1 otherwise (2 for a usage error).
"""
import argparse
import concurrent.futures
import hashlib
import json
import math
import mmap
import os
import re
import resource
import stat
import struct
import sys
import time
from decimal import Decimal

import numpy as np

ROLES = ("ternary", "fp16", "validation")
FILE_NAMES = {"ternary": "ternary.safetensors", "fp16": "fp16.safetensors", "validation": "validation.safetensors"}
DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "U16": 2, "I16": 2, "F16": 2, "BF16": 2, "U32": 4, "I32": 4,
               "F32": 4, "U64": 8, "I64": 8, "F64": 8}
NP_DTYPES = {"BOOL": np.bool_, "U8": np.uint8, "I8": np.int8, "U16": "<u2", "I16": "<i2", "F16": "<f2",
             "U32": "<u4", "I32": "<i4", "F32": "<f4", "U64": "<u8", "I64": "<i8", "F64": "<f8"}
ACTIVATIONS = ("relu", "gelu", "silu", "tanh", "identity")
MAX_ELEMENTS = 1 << 40
SHA_RE = re.compile(r"^[0-9a-f]{64}$")
VERSION_RE = re.compile(r"^(0|[1-9][0-9]{0,8})\.(0|[1-9][0-9]{0,8})$")


class CheckError(Exception):
    """A violation; the message is the check's detail."""


class Skip(Exception):
    """The check cannot run because an earlier one failed."""


# ----------------------------------------------------------------------------------------------
# small helpers


def no_duplicates(pairs):
    out = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def f32_of(v):
    """The f32 nearest (ties to even) to the exact decimal value of a JSON number (section 3.2)."""
    if isinstance(v, bool) or not isinstance(v, (int, Decimal)):
        raise CheckError(f"expected a number, found {v!r}")
    d = Decimal(v)
    with np.errstate(over="ignore"):
        f = np.float32(float(d))
    if not np.isfinite(f):
        return f
    best = None
    for c in (np.nextafter(f, np.float32(-np.inf)), f, np.nextafter(f, np.float32(np.inf))):
        if not np.isfinite(c):
            continue
        dist = abs(Decimal(float(c)) - d)
        key = (dist, int(np.float32(c).view(np.uint32)) & 1)
        if best is None or key < best[0]:
            best = (key, c)
    return np.float32(best[1])


def fmt_s(t):
    return f"{t:.3f} s"


def name_ok(name):
    b = name.encode("utf-8", "surrogatepass")
    return 1 <= len(b) <= 512 and name != "__metadata__" and not any(
        ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in name)


def rows_cols(shape):
    r = shape[0]
    c = 1
    for d in shape[1:]:
        c *= d
    return r, c


def ceil_div(a, b):
    return -(-a // b)


# Trit decoding tables: 256 byte values -> n trits in {-1, 0, +1} (invalid codes give 2, never
# used: rule 4.3 is checked first).
_b = np.arange(256, dtype=np.int16)
TRIT5 = np.stack([(_b // 3 ** i) % 3 - 1 if i < 4 else _b // 81 - 1 for i in range(5)], axis=1).astype(np.int8)
TRIT2 = np.stack([((_b >> (2 * i)) & 3) - 1 for i in range(4)], axis=1).astype(np.int8)
TRIT2_BAD = np.any(TRIT2 == 2, axis=1)
del _b


def erf(x):
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def act_f32(name, z):
    if name == "relu":
        return np.maximum(z, np.float32(0))
    if name == "gelu":
        return (0.5 * z * (1.0 + erf(z / math.sqrt(2.0)))).astype(np.float32)
    if name == "silu":
        return z / (np.float32(1) + np.exp(-z))
    if name == "tanh":
        return np.tanh(z)
    return z


def act64(name, z):
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "gelu":
        return 0.5 * z * (1.0 + erf(z / math.sqrt(2.0)))
    if name == "silu":
        return z / (1.0 + np.exp(-z))
    if name == "tanh":
        return np.tanh(z)
    return z


def act64_grad(name, z):
    if name == "relu":
        return (z > 0).astype(np.float64)
    if name == "gelu":
        return 0.5 * (1.0 + erf(z / math.sqrt(2.0))) + z * np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)
    if name == "silu":
        s = 1.0 / (1.0 + np.exp(-z))
        return s * (1.0 + z * (1.0 - s))
    if name == "tanh":
        return 1.0 - np.tanh(z) ** 2
    return np.ones_like(z)


# ----------------------------------------------------------------------------------------------
# the bundle


class Bundle:
    def __init__(self, path):
        self.dir = path
        self.m = None            # manifest (floats as Decimal)
        self.tensors = {}        # manifest tensor entries by name
        self.q = None            # quantization object
        self.fds = {}            # role -> fd
        self.maps = {}           # role -> mmap
        self.sizes = {}          # role -> size
        self.headers = {}        # role -> (data base offset, {name: (dtype, shape, start, end)})
        self.header_errors = {}  # role -> message
        self.trits = {}          # quantized tensor -> int8 [R, C]
        self.failed = set()

    # --- data access
    def array(self, role, name):
        base, entries = self.headers[role]
        dtype, shape, start, end = entries[name]
        n = (end - start) // DTYPE_SIZES[dtype]
        if n == 0:
            return np.zeros(shape, dtype=NP_DTYPES[dtype])
        return np.frombuffer(self.maps[role], dtype=NP_DTYPES[dtype], count=n, offset=base + start).reshape(shape)

    def tensor_bytes(self, role, name):
        base, entries = self.headers[role]
        _, _, start, end = entries[name]
        return memoryview(self.maps[role])[base + start:base + end]

    def quantized(self):
        return [(n, t) for n, t in self.tensors.items() if t["quantized"]]

    def scale_group(self, cols):
        g = self.q["granularity"]
        if g == "group":
            return self.q["group_size"]
        return cols

    def trits_of(self, name):
        """int8 [R, C] trits of a quantized tensor (decoded once, cached)."""
        t = self.trits.get(name)
        if t is None:
            r, c = rows_cols(self.tensors[name]["shape"])
            packed = self.array("ternary", name)
            if self.q["encoding"] == "trit5":
                t = TRIT5[packed].reshape(r, -1)[:, :c]
            else:
                t = TRIT2[packed].reshape(r, -1)[:, :c]
            t = np.ascontiguousarray(t)
            self.trits[name] = t
        return t

    def scales_of(self, name):
        """Scales as f32 [R, groups per row] (tensor granularity: [1, 1])."""
        s = self.array("ternary", name + ".scale")
        r, c = rows_cols(self.tensors[name]["shape"])
        g = self.q["granularity"]
        if g == "tensor":
            return s.reshape(1, 1)
        if g == "channel":
            return s.reshape(r, 1)
        return s.reshape(r, -1)

    def expanded_scales(self, name):
        """Scale of each element, broadcastable to [R, C]."""
        s = self.scales_of(name)
        if self.q["granularity"] != "group":
            return s
        r, c = rows_cols(self.tensors[name]["shape"])
        return np.repeat(s, self.q["group_size"], axis=1)[:, :c]

    def dequantized_f32(self, name, path):
        """A tensor's values as f32 from one file only (for the two model paths)."""
        t = self.tensors[name]
        if path == "fp16":
            return self.array("fp16", name).astype(np.float32)
        if t["quantized"]:
            return (self.trits_of(name).astype(np.float32) * self.expanded_scales(name)).reshape(t["shape"])
        return np.array(self.array("ternary", name))


# ----------------------------------------------------------------------------------------------
# 1. manifest


def check_manifest(b, args):
    path = os.path.join(b.dir, "manifest.json")
    if not os.path.isdir(b.dir):
        raise CheckError(f"{b.dir}: not a directory (rule 1.1)")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as e:
        raise CheckError(f"manifest.json: cannot open: {e.strerror} (rules 1.2, 1.3)")
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CheckError("manifest.json: not a regular file (rule 1.3)")
        if st.st_size > 16 * 1048576:
            raise CheckError(f"manifest.json: {st.st_size} bytes, more than 16 MiB (rule 2.1)")
        with os.fdopen(fd, "rb", closefd=False) as f:
            raw = f.read()
    finally:
        os.close(fd)
    try:
        text = raw.decode("utf-8")
        if text.startswith("\ufeff"):
            raise ValueError("byte-order mark")
        m = json.loads(text, object_pairs_hook=no_duplicates, parse_float=Decimal, parse_constant=reject_constant)
    except (ValueError, RecursionError) as e:
        raise CheckError(f"manifest.json is not valid JSON: {e} (rule 2.2)")
    if not isinstance(m, dict):
        raise CheckError("manifest.json: top-level value is not an object (rule 2.2)")
    if m.get("format") != "ternary-bundle":
        raise CheckError(f"format is {m.get('format')!r}, expected \"ternary-bundle\" (rule 2.3)")
    v = m.get("format_version")
    mv = VERSION_RE.match(v) if isinstance(v, str) else None
    if not mv:
        raise CheckError(f"format_version {v!r} is not \"MAJOR.MINOR\" (rule 2.4)")
    if int(mv.group(1)) not in (1, 2):
        raise CheckError(f"format version {v} is not supported (this reader supports 1.x and 2.x) (rule 2.4)")
    b.major = int(mv.group(1))
    b.m = m

    # The parts of rules 2.5-2.10 that the later checks rely on.
    for key in ("model", "quantization", "tensors", "files", "provenance"):
        if key not in m:
            raise CheckError(f"missing key {key!r} (rule 2.5)")
    q = m["quantization"]
    if q.get("method") != "absmean":
        raise CheckError(f"quantization.method {q.get('method')!r} (rule 2.8)")
    if q.get("encoding") not in ("trit5", "trit2"):
        raise CheckError(f"quantization.encoding {q.get('encoding')!r} (rule 2.8)")
    if q.get("granularity") not in ("tensor", "channel", "group"):
        raise CheckError(f"quantization.granularity {q.get('granularity')!r} (rule 2.8)")
    gs = q.get("group_size")
    if q["granularity"] == "group":
        if not is_int(gs) or not 1 <= gs <= 4294967295:
            raise CheckError(f"quantization.group_size {gs!r} (rule 2.8)")
    elif gs is not None:
        raise CheckError("quantization.group_size must be null unless granularity is group (rule 2.8)")
    if q.get("zero_point") != 0 or not is_int(q.get("zero_point")):
        raise CheckError(f"quantization.zero_point {q.get('zero_point')!r}, expected 0 (rule 2.8)")
    eps, thr = f32_of(q.get("epsilon")), f32_of(q.get("sparsity_threshold"))
    if not (np.isfinite(eps) and eps > 0 and np.isfinite(thr) and 0 <= thr < 1):
        raise CheckError(f"quantization.epsilon {eps} / sparsity_threshold {thr} out of range (rule 2.8)")
    b.q = q

    tensors = m["tensors"]
    if not isinstance(tensors, list) or not 1 <= len(tensors) <= 32768:
        raise CheckError("tensors must be a list of 1 to 32,768 entries (rule 2.7)")
    for t in tensors:
        name = t.get("name")
        if not isinstance(name, str) or not name_ok(name):
            raise CheckError(f"invalid tensor name {name!r} (rule 2.6)")
        if name in b.tensors:
            raise CheckError(f"duplicate tensor name {name!r} (rule 2.6)")
        shape = t.get("shape")
        if not isinstance(shape, list) or len(shape) > 8 or not all(is_int(d) and d >= 0 for d in shape):
            raise CheckError(f"{name}: invalid shape {shape!r} (rule 2.7)")
        n = 1
        for d in shape:
            n *= d
            if n >= 1 << 64:
                raise CheckError(f"{name}: element count overflows (rule 2.7)")
        if n > MAX_ELEMENTS:
            raise CheckError(f"{name}: {n} elements, more than 2^40 (rule 2.7)")
        if not isinstance(t.get("quantized"), bool):
            raise CheckError(f"{name}: quantized must be a boolean (rule 2.5)")
        if t["quantized"]:
            if len(shape) < 1 or 0 in shape:
                raise CheckError(f"{name}: quantized tensor needs rank >= 1 and no zero dimension (rule 2.7)")
            if not is_int(t.get("zeros")) or not 0 <= t["zeros"] <= n:
                raise CheckError(f"{name}: zeros {t.get('zeros')!r} (rule 2.7)")
            lo, hi = f32_of(t.get("scale_min")), f32_of(t.get("scale_max"))
            if not (np.isfinite(lo) and np.isfinite(hi) and 0 < lo <= hi):
                raise CheckError(f"{name}: scale_min {lo} / scale_max {hi} (rule 2.7)")
            t = dict(t, scale_min_f32=lo, scale_max_f32=hi)
        else:
            for k in ("zeros", "scale_min", "scale_max"):
                if t.get(k) is not None:
                    raise CheckError(f"{name}: non-quantized tensor carries {k} (rule 2.7)")
        t = dict(t, elements=n)
        b.tensors[name] = t
    for name, t in b.tensors.items():
        if name.endswith(".scale") and b.tensors.get(name[:-6], {}).get("quantized"):
            raise CheckError(f"{name}: name taken by the scale tensor of {name[:-6]} (rule 2.7)")

    model = m["model"]
    layers = model.get("layers")
    if not is_int(model.get("input_dim")) or model["input_dim"] < 1:
        raise CheckError("model.input_dim must be an integer >= 1 (rule 2.9)")
    if not isinstance(layers, list) or not 1 <= len(layers) <= 4096:
        raise CheckError("model.layers must have 1 to 4,096 entries (rule 2.9)")
    width = model["input_dim"]
    seen = set()
    for i, l in enumerate(layers):
        ln = l.get("name")
        if not isinstance(ln, str) or not name_ok(ln) or ln in seen:
            raise CheckError(f"layer {i}: invalid or duplicate name {ln!r} (rules 2.6, 2.9)")
        seen.add(ln)
        fi, fo = l.get("in_features"), l.get("out_features")
        if not (is_int(fi) and is_int(fo) and fi >= 1 and fo >= 1):
            raise CheckError(f"layer {ln}: in/out_features must be integers >= 1 (rule 2.9)")
        if fi != width:
            raise CheckError(f"layer {ln}: in_features {fi}, expected {width} (rule 2.9)")
        width = fo

        def ref(name, shape, what):
            t = b.tensors.get(name)
            if t is None:
                raise CheckError(f"layer {ln}: {what} {name!r} is not in tensors (rule 2.9)")
            if t["shape"] != shape:
                raise CheckError(f"layer {ln}: {what} {name} has shape {t['shape']}, expected {shape} (rule 2.9)")

        ref(l.get("weight"), [fo, fi], "weight")
        if l.get("bias") is not None:
            ref(l["bias"], [fo], "bias")
        if l.get("rmsnorm") is not None:
            ref(l["rmsnorm"].get("weight"), [fi], "rmsnorm.weight")
            eps = f32_of(l["rmsnorm"].get("eps"))
            if not (np.isfinite(eps) and eps > 0):
                raise CheckError(f"layer {ln}: rmsnorm.eps {eps} (rule 2.9)")
        if l.get("activation") not in ACTIVATIONS:
            raise CheckError(f"layer {ln}: activation {l.get('activation')!r} (rule 2.9)")

    files = m["files"]
    for role in ROLES:
        e = files.get(role)
        if e is None:
            if role != "validation":
                raise CheckError(f"files.{role} is required (rule 2.10)")
            continue
        if not is_int(e.get("size")) or e["size"] < 0 or not isinstance(e.get("sha256"), str) \
                or not SHA_RE.match(e["sha256"]) or not isinstance(e.get("tensors"), list):
            raise CheckError(f"files.{role}: needs size, sha256 and tensors (rule 2.10)")
        names = set()
        for te in e["tensors"]:
            if not isinstance(te.get("name"), str) or not name_ok(te["name"]) or te["name"] in names:
                raise CheckError(f"files.{role}.tensors: invalid or duplicate name {te.get('name')!r} (rule 2.6)")
            if not isinstance(te.get("sha256"), str) or not SHA_RE.match(te["sha256"]):
                raise CheckError(f"files.{role}.tensors: {te['name']}: invalid sha256 (rule 2.10)")
            names.add(te["name"])
    nq = len(b.quantized())
    return (f"ternary-bundle {v}, {len(layers)} layers, {len(b.tensors)} tensors ({nq} quantized), "
            f"{q['encoding']}, granularity {q['granularity']}")


# ----------------------------------------------------------------------------------------------
# 2. files


def check_files(b, args):
    present = b.m["files"].get("validation") is not None
    exists = os.path.lexists(os.path.join(b.dir, FILE_NAMES["validation"]))
    if present != exists:
        raise CheckError("validation.safetensors " + ("is missing" if present else "exists") +
                         " but files.validation is " + ("set" if present else "null") + " (rule 1.4)")
    roles = ["ternary", "fp16"] + (["validation"] if present else [])
    total = 0
    for role in roles:
        fname = FILE_NAMES[role]
        path = os.path.join(b.dir, fname)
        if not os.path.lexists(path):
            raise CheckError(f"{fname}: missing (rule 1.2)")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError as e:
            raise CheckError(f"{fname}: cannot open without following links: {e.strerror} (rule 1.3)")
        b.fds[role] = fd
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CheckError(f"{fname}: not a regular file (rule 1.3)")
        want = b.m["files"][role]["size"]
        if st.st_size != want:
            raise CheckError(f"{fname}: file size differs from the manifest (rule 3.1): expected {want} bytes, "
                             f"found {st.st_size} bytes")
        b.sizes[role] = st.st_size
        b.maps[role] = mmap.mmap(fd, st.st_size, access=mmap.ACCESS_READ) if st.st_size else b""
        total += st.st_size
    extra = sorted(set(os.listdir(b.dir)) - {"manifest.json"} - {FILE_NAMES[r] for r in roles})
    detail = f"{len(roles) + 1} files, {total / 1e6:.1f} MB"
    if extra:
        detail += f"; extra entries (rule 1.5, reported only): {', '.join(repr(e) for e in extra)}"
    return detail


# ----------------------------------------------------------------------------------------------
# safetensors headers (used by checksums and structure)


def parse_header(b, role):
    fname = FILE_NAMES[role]
    mm, size = b.maps[role], b.sizes[role]
    if size < 8:
        raise CheckError(f"{fname}: {size} bytes, shorter than the 8-byte header length (rule 3.2)")
    (n,) = struct.unpack_from("<Q", mm, 0)
    if n > 100_000_000 or 8 + n > size:
        raise CheckError(f"{fname}: header length {n} exceeds the limit or the file (rule 3.2)")
    try:
        hdr = json.loads(bytes(mm[8:8 + n]).decode("utf-8"), object_pairs_hook=no_duplicates,
                         parse_constant=reject_constant)
    except (ValueError, RecursionError) as e:
        raise CheckError(f"{fname}: header is not valid JSON: {e} (rule 3.3)")
    if not isinstance(hdr, dict):
        raise CheckError(f"{fname}: header is not a JSON object (rule 3.3)")
    entries = {}
    for name, e in hdr.items():
        if name == "__metadata__":
            if not isinstance(e, dict) or not all(isinstance(v, str) for v in e.values()):
                raise CheckError(f"{fname}: __metadata__ must map strings to strings (rule 3.3)")
            continue
        if not name_ok(name):
            raise CheckError(f"{fname}: invalid tensor name {name!r} (rule 3.4)")
        if not isinstance(e, dict):
            raise CheckError(f"{fname}: {name}: entry is not an object (rule 3.3)")
        dtype, shape, offs = e.get("dtype"), e.get("shape"), e.get("data_offsets")
        if not isinstance(shape, list) or not all(is_int(d) and d >= 0 for d in shape) or \
                not isinstance(offs, list) or len(offs) != 2 or not all(is_int(o) and o >= 0 for o in offs):
            raise CheckError(f"{fname}: {name}: invalid shape or data_offsets (rule 3.3)")
        if dtype not in DTYPE_SIZES:
            raise CheckError(f"{fname}: {name}: unknown dtype {dtype!r} (rule 3.4)")
        if len(shape) > 8:
            raise CheckError(f"{fname}: {name}: rank {len(shape)} > 8 (rule 3.4)")
        count = 1
        for d in shape:
            count *= d
        if count > MAX_ELEMENTS:
            raise CheckError(f"{fname}: {name}: {count} elements, more than 2^40 (rule 3.5)")
        start, end = offs
        if start > end or count * DTYPE_SIZES[dtype] != end - start:
            raise CheckError(f"{fname}: {name}: data_offsets [{start}, {end}] do not hold {count} x {dtype} (rule 3.5)")
        entries[name] = (dtype, shape, start, end)
    if len(entries) > 65536:
        raise CheckError(f"{fname}: {len(entries)} tensors, more than 65,536 (rule 3.4)")
    pos = 0
    for name, (_, _, start, end) in sorted(entries.items(), key=lambda kv: (kv[1][2], kv[1][3])):
        if start != pos:
            raise CheckError(f"{fname}: {name}: data starts at {start}, expected {pos} (gap or overlap, rule 3.6)")
        pos = end
    if pos != size - 8 - n:
        raise CheckError(f"{fname}: tensor data ends at {pos}, the data buffer has {size - 8 - n} bytes (rule 3.6)")
    want = {te["name"] for te in b.m["files"][role]["tensors"]}
    if set(entries) != want:
        missing, extra = sorted(want - set(entries)), sorted(set(entries) - want)
        raise CheckError(f"{fname}: header tensors differ from files.{role}.tensors (rule 3.7): "
                         f"missing {missing[:3]}, extra {extra[:3]}")
    b.headers[role] = (8 + n, entries)


def parse_headers(b):
    for role in b.maps:
        if role not in b.headers and role not in b.header_errors:
            try:
                parse_header(b, role)
            except CheckError as e:
                b.header_errors[role] = str(e)


# ----------------------------------------------------------------------------------------------
# 3. checksums


def _sha256(view):
    return hashlib.sha256(view).hexdigest()


def check_checksums(b, args):
    parse_headers(b)
    jobs = []  # (what, memoryview, expected)
    for role, mm in b.maps.items():
        fe = b.m["files"][role]
        jobs.append((f"{FILE_NAMES[role]} (rule 7.1)", memoryview(mm), fe["sha256"]))
        if role in b.headers:
            for te in fe["tensors"]:
                jobs.append((f"{FILE_NAMES[role]}: tensor {te['name']} (rule 7.2)",
                             b.tensor_bytes(role, te["name"]), te["sha256"]))
    jobs.sort(key=lambda j: -len(j[1]))
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        digests = list(pool.map(lambda j: _sha256(j[1]), jobs))
    bad = [(what, want, got) for (what, _, want), got in zip(jobs, digests) if want != got]
    bad.sort(key=lambda x: "rule 7.2" not in x[0])  # the tensor that differs first, then its file
    nbytes = sum(len(j[1]) for j in jobs)
    for j in jobs:
        j[1].release()
    if bad:
        what, want, got = bad[0]
        others = "".join(f"; also {w}" for w, _, _ in bad[1:4]) + ("; ..." if len(bad) > 4 else "")
        raise CheckError(f"{len(bad)} digest(s) differ: {what}: expected {want}, found {got}{others}")
    if b.header_errors:
        raise CheckError("tensor digests not checked: " + "; ".join(b.header_errors.values()))
    return f"{len(jobs)} digests ({len(b.maps)} files + {len(jobs) - len(b.maps)} tensors), {nbytes / 1e6:.1f} MB hashed"


# ----------------------------------------------------------------------------------------------
# 4. structure


def check_structure(b, args):
    parse_headers(b)
    if b.header_errors:
        raise CheckError("; ".join(b.header_errors.values()))
    q = b.q
    expected = {"ternary": {}, "fp16": {}}
    for name, t in b.tensors.items():
        shape = t["shape"]
        expected["fp16"][name] = ("F16", shape)
        if t["quantized"]:
            r, c = rows_cols(shape)
            n = 5 if q["encoding"] == "trit5" else 4
            expected["ternary"][name] = ("U8", [r, ceil_div(c, n)])
            g = q["granularity"]
            sshape = [1] if g == "tensor" else [r] if g == "channel" else [r, ceil_div(c, q["group_size"])]
            expected["ternary"][name + ".scale"] = ("F32", sshape)
        else:
            expected["ternary"][name] = ("F32", shape)
    rule = {"ternary": "rules 4.1, 4.2", "fp16": "rule 5.1"}
    for role, want in expected.items():
        got = b.headers[role][1]
        if set(got) != set(want):
            missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
            raise CheckError(f"{FILE_NAMES[role]}: tensor set differs ({rule[role]}): missing {missing[:3]}, extra {extra[:3]}")
        for name, (dtype, shape) in want.items():
            if got[name][0] != dtype or got[name][1] != shape:
                raise CheckError(f"{FILE_NAMES[role]}: {name}: expected {dtype} {shape}, found {got[name][0]} "
                                 f"{got[name][1]} ({rule[role]})")
    detail = f"{len(expected['ternary'])} + {len(expected['fp16'])} tensors"
    if "validation" in b.headers:
        got = b.headers["validation"][1]
        out = b.m["model"]["layers"][-1]["out_features"]
        allowed = {"inputs", "labels", "difficulty"} | ({"original_predictions"} if b.major >= 2 else set())
        if "inputs" not in got or "labels" not in got or set(got) - allowed:
            raise CheckError(f"validation.safetensors: tensors {sorted(got)} (rule 6.1)")
        n = got["inputs"][1][0] if len(got["inputs"][1]) == 2 else -1
        din = b.m["model"]["input_dim"]
        ok = n >= 1 and got["inputs"][:2] == ("F32", [n, din]) and got["labels"][:2] == ("I64", [n])
        if "difficulty" in got:
            ok = ok and got["difficulty"][:2] == ("U8", [n])
        if "original_predictions" in got:
            ok = ok and got["original_predictions"][:2] == ("I64", [n])
        if not ok:
            raise CheckError(f"validation.safetensors: expected inputs F32 [N, {din}], labels I64 [N] "
                             f"(difficulty U8 [N]) (rule 6.1)")
        detail += f" + {len(got)} validation tensors ({n} samples, {out} classes)"
    return detail


# ----------------------------------------------------------------------------------------------
# 5. encoding


def check_encoding(b, args):
    enc = b.q["encoding"]
    n = 5 if enc == "trit5" else 4
    total_zeros = total = 0
    for name, t in b.quantized():
        packed = b.array("ternary", name)
        r, c = rows_cols(t["shape"])
        if enc == "trit5":
            bad = packed > 242
        else:
            bad = TRIT2_BAD[packed]
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise CheckError(f"{name}: invalid packed byte 0x{int(packed.flat[i]):02X} at row {i // packed.shape[1]}, "
                             f"byte {i % packed.shape[1]} (rule 4.3)")
        k = c % n
        if k:
            limit = 3 ** k if enc == "trit5" else 4 ** k
            last = packed[:, -1]
            over = last >= limit
            if over.any():
                row = int(np.flatnonzero(over)[0])
                raise CheckError(f"{name}: non-canonical padding in packed row {row}: last byte 0x{int(last[row]):02X} "
                                 f">= {limit} (rule 4.4)")
        zeros = int(np.count_nonzero(b.trits_of(name) == 0))
        if zeros != t["zeros"]:
            raise CheckError(f"{name}: {zeros} zero trits, manifest zeros {t['zeros']} (rule 4.6)")
        total_zeros += zeros
        total += r * c
    return f"{total:,} trits in {len(b.quantized())} tensors, sparsity {total_zeros / max(total, 1):.2%}"


# ----------------------------------------------------------------------------------------------
# 6. scales


def check_scales(b, args):
    count = 0
    for name, t in b.quantized():
        s = b.scales_of(name)
        count += s.size
        ok = np.isfinite(s) & (s > 0)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            raise CheckError(f"{name}.scale: element {i} is {s.flat[i]}, not finite and > 0 (rule 4.5)")
        with np.errstate(over="ignore"):
            h = s.astype(np.float16)
        bad = ~np.isfinite(h) | (h == 0)
        if bad.any():
            # Only scales that govern a non-zero trit must be representable in f16.
            tr = b.trits_of(name)
            r, c = tr.shape
            gsz = b.scale_group(c) if b.q["granularity"] != "tensor" else c
            if b.q["granularity"] == "tensor":
                nz = np.array([[np.count_nonzero(tr) > 0]])
            else:
                ng = ceil_div(c, gsz)
                pad = np.zeros((r, ng * gsz), dtype=bool)
                pad[:, :c] = tr != 0
                nz = pad.reshape(r, ng, gsz).any(axis=2)
            hit = bad & nz
            if hit.any():
                i = int(np.flatnonzero(hit)[0])
                raise CheckError(f"{name}.scale: element {i} = {s.flat[i]!r} governs non-zero trits but rounds to "
                                 f"{h.flat[i]} in f16 (rule 4.5)")
        lo, hi = s.min(), s.max()
        if lo != t["scale_min_f32"] or hi != t["scale_max_f32"]:
            raise CheckError(f"{name}.scale: min {lo!r} / max {hi!r}, manifest scale_min {t['scale_min_f32']!r} / "
                             f"scale_max {t['scale_max_f32']!r} (rule 4.6)")
    return f"{count:,} scales"


# ----------------------------------------------------------------------------------------------
# 7. dequantization


def check_dequantization(b, args):
    nq = npass = 0
    for name, t in b.tensors.items():
        got = b.array("fp16", name).view(np.uint16).reshape(-1)
        if t["quantized"]:
            r, c = rows_cols(t["shape"])
            want = (b.trits_of(name).astype(np.float32) * b.expanded_scales(name)).astype(np.float16)
            rule = "rule 5.2"
            nq += r * c
        else:
            v = b.array("ternary", name)
            with np.errstate(over="ignore", invalid="ignore"):
                want = v.astype(np.float16)
            if not np.isfinite(want).all():
                i = int(np.flatnonzero(~np.isfinite(want.reshape(-1)))[0])
                raise CheckError(f"{name}: value {v.reshape(-1)[i]!r} at {i} is not finite in f16 (rule 4.7)")
            rule = "rule 5.3"
            npass += v.size
        want = want.view(np.uint16).reshape(-1)
        diff = got != want
        if diff.any():
            i = int(np.flatnonzero(diff)[0])
            raise CheckError(f"{name}: fp16 element {i} is 0x{int(got[i]):04X}, expected 0x{int(want[i]):04X} "
                             f"({int(np.count_nonzero(diff))} differ) ({rule})")
    return f"{nq:,} quantized + {npass:,} passthrough values bit-exact"


# ----------------------------------------------------------------------------------------------
# model inputs


def model_inputs(b, args):
    """(inputs f32 [N, input_dim], labels int64 [N], source description)."""
    layers = b.m["model"]["layers"]
    out = layers[-1]["out_features"]
    if "validation" in b.headers:
        x = np.array(b.array("validation", "inputs"))
        y = np.array(b.array("validation", "labels"))
        if not np.isfinite(x).all():
            raise CheckError("validation.safetensors: inputs not finite (rule 6.2)")
        if ((y < 0) | (y >= out)).any():
            raise CheckError(f"validation.safetensors: labels outside 0..{out - 1} (rule 6.2)")
        return x, y, f"validation set ({len(x)} samples)"
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((args.samples, b.m["model"]["input_dim"]), dtype=np.float32)
    y = np.random.default_rng(args.seed + 1).integers(0, out, size=args.samples)
    return x, y, f"{args.samples} random inputs (seed {args.seed})"


# ----------------------------------------------------------------------------------------------
# 8. agreement


def rmsnorm_f32(x, w, eps):
    ms = np.einsum("ij,ij->i", x, x, dtype=np.float64) / x.shape[1]
    inv = (1.0 / np.sqrt(ms + float(eps))).astype(np.float32)
    return x * inv[:, None] * w


def ternary_linear(b, x, name):
    """x @ W.T from trits and scales only: trit matmul, then scales per row / column group."""
    tr = b.trits_of(name).astype(np.float32)
    s = b.scales_of(name)
    g = b.q["granularity"]
    if g == "tensor":
        return (x @ tr.T) * s[0, 0]
    if g == "channel":
        return (x @ tr.T) * s[:, 0]
    r, c = tr.shape
    gs = b.q["group_size"]
    y = np.zeros((x.shape[0], r), np.float32)
    for k in range(s.shape[1]):
        lo, hi = k * gs, min((k + 1) * gs, c)
        part = x[:, lo:hi] @ tr[:, lo:hi].T
        part *= s[:, k]
        y += part
    return y


def forward_f32(b, x, path):
    h = x
    for l in b.m["model"]["layers"]:
        if l["rmsnorm"] is not None:
            w = b.dequantized_f32(l["rmsnorm"]["weight"], path)
            h = rmsnorm_f32(h, w, f32_of(l["rmsnorm"]["eps"]))
        if path == "ternary" and b.tensors[l["weight"]]["quantized"]:
            z = ternary_linear(b, h, l["weight"])
        else:
            z = h @ b.dequantized_f32(l["weight"], path).T
        if l["bias"] is not None:
            z += b.dequantized_f32(l["bias"], path)
        h = act_f32(l["activation"], z)
    return h


def check_agreement(b, args):
    x, y, src = model_inputs(b, args)
    lt = forward_f32(b, x, "ternary")
    lf = forward_f32(b, x, "fp16")
    pt, pf = lt.argmax(axis=1), lf.argmax(axis=1)
    agree = float(np.mean(pt == pf))
    maxdiff = float(np.max(np.abs(lt.astype(np.float64) - lf)))
    b.trits = {}  # the decoded trits are not needed any more
    detail = f"{agree:.4f} argmax agreement on {src}, max |logit diff| {maxdiff:.3e}"
    if "validation" in b.headers:
        detail += f", accuracy ternary {np.mean(pt == y):.4f} / fp16 {np.mean(pf == y):.4f}"
    if not np.isfinite(lt).all() or not np.isfinite(lf).all():
        raise CheckError(detail + ": non-finite logits")
    b.fp16_predictions = pf
    if agree < args.min_agreement:
        raise CheckError(detail + f" < {args.min_agreement}")
    return detail


def check_retention(b, args):
    """The FP16 model keeps the original model's decisions: its argmax against the stored
    original_predictions (rules 6.1, 6.3)."""
    if "original_predictions" not in b.headers.get("validation", (None, {}))[1]:
        return "SKIP: no original predictions"
    orig = b.array("validation", "original_predictions")
    classes = b.m["model"]["layers"][-1]["out_features"]
    if orig.min() < 0 or orig.max() >= classes:
        raise CheckError(f"original_predictions outside 0..{classes} (rule 6.3)")
    pf = getattr(b, "fp16_predictions", None)
    if pf is None:
        x, _, _ = model_inputs(b, args)
        pf = forward_f32(b, x, "fp16").argmax(axis=1)
    kept = float(np.mean(pf == orig))
    detail = f"{kept:.4f} of the original model's decisions kept ({int((pf != orig).sum())} changed)"
    if kept < args.min_retention:
        raise CheckError(detail + f" < {args.min_retention}")
    return detail


# ----------------------------------------------------------------------------------------------
# 9, 10. gradients of the FP16 model in f64


class Model64:
    def __init__(self, b):
        self.layers = []
        self.params = {}      # name -> f64 array (weights [out, in], vectors [n])
        self.first_use = {}   # name -> first layer index that uses it
        for i, l in enumerate(b.m["model"]["layers"]):
            names = {"w": l["weight"], "b": l["bias"], "g": l["rmsnorm"]["weight"] if l["rmsnorm"] else None}
            for n in names.values():
                if n is not None and n not in self.params:
                    self.params[n] = b.array("fp16", n).astype(np.float64).reshape(b.tensors[n]["shape"])
                    self.first_use[n] = i
            eps = float(f32_of(l["rmsnorm"]["eps"])) if l["rmsnorm"] else None
            self.layers.append(dict(names, eps=eps, act=l["activation"]))

    def forward(self, x, start=0, caches=None, get=None):
        """Logits and per-layer caches (x, u, inv_rms, z); from layer `start` reusing `caches`."""
        get = get or self.params.__getitem__
        caches = list(caches[:start]) if caches else []
        h = x if start == 0 else act64(self.layers[start - 1]["act"], caches[start - 1][3])
        for l in self.layers[start:]:
            if l["g"] is not None:
                r = 1.0 / np.sqrt(np.mean(h * h, axis=1) + l["eps"])
                u = h * r[:, None] * get(l["g"])
            else:
                r, u = None, h
            z = u @ get(l["w"]).T
            if l["b"] is not None:
                z = z + get(l["b"])
            caches.append((h, u, r, z))
            h = act64(l["act"], z)
        return h, caches

    def relu_signs(self, caches, start):
        return [c[3] > 0 for l, c in zip(self.layers[start:], caches[start:]) if l["act"] == "relu"]

    def backward(self, caches, dlogits):
        grads = {}

        def add(name, g):
            if name in grads:
                grads[name] += g
            else:
                grads[name] = g

        delta = dlogits
        for l, (x, u, r, z) in zip(reversed(self.layers), reversed(caches)):
            dz = delta if l["act"] == "identity" else delta * act64_grad(l["act"], z)
            if l["b"] is not None:
                add(l["b"], dz.sum(axis=0))
            add(l["w"], dz.T @ u)
            du = dz @ self.params[l["w"]]
            if l["g"] is not None:
                g = self.params[l["g"]]
                add(l["g"], np.einsum("ij,ij,i->j", du, x, r))
                dot = np.einsum("ij,j,ij->i", du, g, x)
                delta = r[:, None] * du * g - x * (r ** 3 * dot / x.shape[1])[:, None]
            else:
                delta = du
        return grads


def model64(b):
    """The f64 FP16 model, built once for both gradient checks."""
    if getattr(b, "model64", None) is None:
        b.model64 = Model64(b)
    return b.model64


def cross_entropy(logits, labels):
    m = logits.max(axis=1, keepdims=True)
    e = np.exp(logits - m)
    s = e.sum(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(s[:, 0])
    n = len(labels)
    loss = float(np.mean(lse - logits[np.arange(n), labels]))
    d = e / s
    d[np.arange(n), labels] -= 1.0
    return loss, d / n


def rel_err(a, n, floor):
    return abs(a - n) / max(abs(a), abs(n), floor)


def gradients(b, args, batch):
    """The f64 model, the first `batch` inputs and labels, and the backprop gradients."""
    x, y, _ = model_inputs(b, args)
    x, y = x[:batch].astype(np.float64), y[:batch]
    model = model64(b)
    logits, caches = model.forward(x)
    loss, dlog = cross_entropy(logits, y)
    grads = model.backward(caches, dlog)
    return model, x, y, loss, grads, caches


def check_gradient(b, args):
    model, x, y, loss, grads, caches = gradients(b, args, 8)
    h = 1e-5
    rng = np.random.default_rng(args.seed)
    worst = (0.0, "")
    ncoord = kinks = 0

    def loss_with(start, get=None):
        lg, c = model.forward(x, start, caches, get)
        return cross_entropy(lg, y)[0], model.relu_signs(c, start)

    def consider(err, what):
        nonlocal worst
        if err >= worst[0] or not worst[1]:
            worst = (max(err, worst[0]), what)

    for name, p in model.params.items():
        flat = p.reshape(-1)
        start = model.first_use[name]
        for idx in rng.choice(flat.size, size=min(3, flat.size), replace=False):
            orig = flat[idx]
            flat[idx] = orig + h
            lp, sp = loss_with(start)
            up = flat[idx]
            flat[idx] = orig - h
            lm, sm = loss_with(start)
            dn = flat[idx]
            flat[idx] = orig
            if any((a != c).any() for a, c in zip(sp, sm)):
                kinks += 1
                continue
            num = (lp - lm) / (up - dn)
            ana = float(grads[name].reshape(-1)[idx])
            ncoord += 1
            consider(rel_err(ana, num, args.grad_floor), f"{name}[{idx}]: analytic {ana:.6e}, numeric {num:.6e}")

    # Random directions over all parameters: uniform in [-1, 1) per element, scaled to unit L2
    # norm (unscaled, a step of h moves so many ReLU pre-activations across zero that every
    # direction is at a kink). A direction whose +h / -h runs change a ReLU sign is replaced
    # (up to 8 tries in all).
    ndir = dkinks = 0
    for attempt in range(8):
        if ndir == 2:
            break
        drng = np.random.default_rng([args.seed, 1000 + attempt])
        # f32 entries (exact in f64) halve the memory of a direction.
        d = {n: drng.random(size=p.shape, dtype=np.float32) for n, p in model.params.items()}
        for v in d.values():
            v -= np.float32(0.5)
        norm = np.float32(math.sqrt(sum(float(np.vdot(v, v)) for v in d.values())))
        for v in d.values():
            v /= norm
        ana = float(sum(np.vdot(grads[n], d[n].astype(np.float64)) for n in d))

        def shifted(step):
            def get(n):
                w = np.multiply(d[n], step, dtype=np.float64)
                w += model.params[n]
                return w
            return get

        lp, sp = loss_with(0, shifted(h))
        lm, sm = loss_with(0, shifted(-h))
        del d
        if any((a != c).any() for a, c in zip(sp, sm)):
            dkinks += 1
            continue
        num = (lp - lm) / (2 * h)
        ndir += 1
        consider(rel_err(ana, num, args.grad_floor), f"direction {attempt}: analytic {ana:.6e}, numeric {num:.6e}")
    del grads
    detail = (f"batch {len(y)}, loss {loss:.4f}; {ncoord} coordinates ({kinks} skipped at ReLU kinks), "
              f"{ndir} directions ({dkinks} skipped); max relative error {worst[0]:.2e} at {worst[1]}")
    if ncoord + ndir == 0:
        raise CheckError(detail + ": nothing compared")
    if not worst[0] < args.grad_tol:
        raise CheckError(detail + f" >= {args.grad_tol}")
    return detail


def check_gradient_flow(b, args):
    model, x, y, loss, grads, caches = gradients(b, args, 32)
    del caches, model
    b.model64 = None
    bad = []
    lines = []
    for name, g in grads.items():
        if not np.isfinite(g).all():
            bad.append(f"{name}: {int(np.count_nonzero(~np.isfinite(g)))} non-finite")
        elif not g.any():
            bad.append(f"{name}: all zero")
    for l in b.m["model"]["layers"]:
        g = grads[l["weight"]]
        lines.append(f"    {l['name']:<12} {l['weight']:<20} norm {np.linalg.norm(g):.4e}  variance {np.var(g):.4e}  "
                     f"non-zero {np.count_nonzero(g) / g.size:.1%}")
    detail = f"batch {len(y)}, loss {loss:.4f}, {len(grads)} parameter tensors"
    if bad:
        raise CheckError(detail + ": " + "; ".join(bad) + "\n" + "\n".join(lines))
    return detail + "\n" + "\n".join(lines)


# ----------------------------------------------------------------------------------------------


CHECKS = [
    ("manifest", check_manifest, True),
    ("files", check_files, True),
    ("checksums", check_checksums, False),
    ("structure", check_structure, True),
    ("encoding", check_encoding, False),
    ("scales", check_scales, False),
    ("dequantization", check_dequantization, False),
    ("agreement", check_agreement, False),
    ("retention", check_retention, False),
    ("gradient_check", check_gradient, False),
    ("gradient_flow", check_gradient_flow, False),
]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--samples", type=int, default=256, help="random inputs when there is no validation set")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-agreement", type=float, default=0.995)
    ap.add_argument("--min-retention", type=float, default=0.995)
    ap.add_argument("--grad-tol", type=float, default=1e-4)
    ap.add_argument("--grad-floor", type=float, default=1e-12,
                    help="relative error = |a - n| / max(|a|, |n|, FLOOR); the central-difference round-off is "
                         "about 1e-11 here, so derivatives below ~1e-7 need a larger floor (1e-6) to pass")
    args = ap.parse_args()
    if args.samples < 1:
        ap.error("--samples must be >= 1")
    t_all = time.perf_counter()
    b = Bundle(args.dir)
    failed = []
    fatal = None
    for name, fn, is_fatal in CHECKS:
        if fatal:
            print(f"{name:<15} SKIP  not run: {fatal} failed", flush=True)
            continue
        t0 = time.perf_counter()
        try:
            detail, status = fn(b, args), "PASS"
        except CheckError as e:
            detail, status = str(e), "FAIL"
        except Exception as e:  # noqa: BLE001 - a malformed bundle must give a clean line
            detail, status = f"{type(e).__name__}: {e}", "FAIL"
        dt = time.perf_counter() - t0
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        first, _, rest = detail.partition("\n")
        print(f"{name:<15} {status}  {first} [{fmt_s(dt)}, peak RSS so far {rss / 1024:.0f} MB]" +
              ("\n" + rest if rest else ""), flush=True)
        if status == "FAIL":
            failed.append(name)
            if is_fatal:
                fatal = name
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    total = time.perf_counter() - t_all
    verdict = "FAIL (" + ", ".join(failed) + ")" if failed else "PASS"
    print(f"total {total:.3f} s wall, peak RSS {rss / 1024:.0f} MB: {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
