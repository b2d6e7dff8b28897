#!/usr/bin/env bash
# Writes the seed corpora of the fuzz targets from the committed fixtures:
#   manifest/        every fixture's manifest.json
#   bundle/          every fixture bundle as one input (length-prefixed parts, see
#                    ternary_bundle::fuzzing::split_parts)
#   codecs/          a few packed rows of the fixtures
#   verify_numeric/  a few small models (layout: ternary_bundle::fuzzing::verify_numeric), with
#                    and without edits
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus/manifest corpus/bundle corpus/codecs corpus/verify_numeric
python3 - <<'PY'
import os, struct, glob, hashlib
def join(parts):
    out = b""
    for i, p in enumerate(parts):
        if i + 1 < len(parts):
            out += struct.pack("<I", len(p))
        out += p
    return out
for d in sorted(glob.glob("../fixtures/*/*/")):
    name = d.rstrip("/").replace("../fixtures/", "").replace("/", "-")
    files = {f: open(os.path.join(d, f), "rb").read() for f in os.listdir(d)}
    if "manifest.json" in files:
        open(f"corpus/manifest/{name}", "wb").write(files["manifest.json"])
    parts = [files.get(f, b"") for f in ("manifest.json", "ternary.safetensors", "fp16.safetensors", "validation.safetensors")]
    open(f"corpus/bundle/{name}", "wb").write(join(parts))
# codecs: header byte (encoding bit, cols - 1) then rows
open("corpus/codecs/trit5-7cols", "wb").write(bytes([6 << 1]) + bytes([0xF2, 0x06, 0x79, 0x04]))
open("corpus/codecs/trit2-6cols", "wb").write(bytes([(5 << 1) | 1]) + bytes([0x55, 0x02, 0xAA, 0x0A]))
# verify_numeric: flags (bit 0 trit2, bits 1-2 granularity tensor/channel/group, bit 3 validation
# set, bit 4 fixed scales, bits 5-7 activation), group size - 1, epsilon and threshold codes,
# input_dim - 1, layers - 1, then (out_features - 1, flags: 1 bias, 2 rmsnorm, 4 not quantized)
# per layer, then the values (byte codes below 244 are (code - 122) / 32), then edits.
import random
rng = random.Random(7)
def vals(n):
    return bytes(rng.randrange(60, 184) for _ in range(n))
# 7 -> 12 (relu, bias) -> 5 (rmsnorm): 84 + 12 + 60 + 12 values.
two = bytes([0x02, 0, 0, 0, 6, 1, 11, 1, 4, 2]) + vals(84 + 12 + 60 + 12)
open("corpus/verify_numeric/trit5-channel-two-layers", "wb").write(two)
# The same with edits: a scale's top byte, a packed byte, an F16 value.
edits = bytes([0, 0xFF, 0xFF, 0x7F, 0, 3, 0, 0xF3, 1, 9, 0, 0x7C])
open("corpus/verify_numeric/trit5-channel-two-layers-edited", "wb").write(two + edits)
# trit2, groups of 5, gelu, 9 -> 6 (gelu) -> 3 with a validation set of 2 samples.
three = bytes([0x01 | (2 << 1) | 8 | (1 << 5), 4, 1, 2, 8, 1, 5, 1, 2, 0]) + vals(54 + 6 + 18)
three += bytes([1]) + vals(18) + bytes([0, 2])
open("corpus/verify_numeric/trit2-group-validation", "wb").write(three)
# Fixed scales (one per tensor), one layer 4 -> 2, tanh unused (last layer is identity).
fixed = bytes([0x10 | (3 << 5), 0, 0, 0, 3, 0, 1, 0]) + vals(8) + bytes([160])
open("corpus/verify_numeric/tensor-fixed-scale", "wb").write(fixed)
PY
echo "seeds written under fuzz/corpus"
