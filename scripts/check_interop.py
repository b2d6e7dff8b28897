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
Exits non-zero on the first failure; prints one line per bundle and a closing count.
"""
import hashlib
import json
import struct
import sys
from pathlib import Path

import jsonschema
import numpy as np
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
    for flag, schema in (("--inspect-json", "inspect.schema.json"), ("--verify-json", "verify.schema.json"))
}


def main():
    """Arguments: extra bundle directories to check, `--inspect-json FILE` outputs of
    `bundle inspect --json` and `--verify-json FILE` outputs of `bundle verify --json` to
    validate against their schemas in spec/."""
    checked = failed = 0
    args = sys.argv[1:]
    reports = [(a, Path(args[i + 1])) for i, a in enumerate(args) if a in REPORT_VALIDATORS]
    extra = [Path(a) for i, a in enumerate(args) if a not in REPORT_VALIDATORS and (i == 0 or args[i - 1] not in REPORT_VALIDATORS)]
    for flag, f in reports:
        errors = list(REPORT_VALIDATORS[flag].iter_errors(json.loads(f.read_text())))
        if errors:
            print(f"FAIL {f}: {flag[2:]} output breaks its schema in spec/: {errors[0].message}")
            failed += 1
        else:
            print(f"ok   {f}: {flag[2:]} output matches its schema in spec/")
            checked += 1
    for d in sorted((ROOT / "fixtures" / "bundles").iterdir()) + [ROOT / "fixtures/versions/newer-minor"] + extra:
        try:
            n = check_bundle(d)
            print(f"ok   {d}: {n} FP16 values equal f16(t * scale) per the spec")
            checked += 1
        except Exception as e:  # report and keep going, fail at the end
            print(f"FAIL {d}: {e!r}")
            failed += 1
    major = json.loads((ROOT / "fixtures/versions/unknown-major/manifest.json").read_text())
    if VALIDATOR.is_valid(major):
        print("FAIL fixtures/versions/unknown-major: schema accepted format_version 2.0")
        failed += 1
    else:
        print("ok   fixtures/versions/unknown-major: schema rejects format_version 2.0")
        checked += 1
    print(f"{checked} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
