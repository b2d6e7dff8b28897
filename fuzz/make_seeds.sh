#!/usr/bin/env bash
# Writes the seed corpora of the fuzz targets from the committed fixtures:
#   manifest/        every fixture's manifest.json
#   bundle/          every fixture bundle as one input (length-prefixed parts, see
#                    ternary_bundle::fuzzing::split_parts)
#   codecs/          a few packed rows of the fixtures
#   verify_numeric/  a few edit lists
# and base/tiny-trit5-channel.bin, the bundle that verify_numeric mutates.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus/manifest corpus/bundle corpus/codecs corpus/verify_numeric base
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
    if name == "bundles-tiny-trit5-channel":
        open("base/tiny-trit5-channel.bin", "wb").write(join(parts[:3] + [b""]))
# codecs: header byte (encoding bit, cols - 1) then rows
open("corpus/codecs/trit5-7cols", "wb").write(bytes([6 << 1]) + bytes([0xF2, 0x06, 0x79, 0x04]))
open("corpus/codecs/trit2-6cols", "wb").write(bytes([(5 << 1) | 1]) + bytes([0x55, 0x02, 0xAA, 0x0A]))
open("corpus/verify_numeric/scale-nan", "wb").write(bytes([0, 0, 0, 0x7F, 0, 1, 0, 0xC0]))
open("corpus/verify_numeric/fp16-flip", "wb").write(bytes([1, 7, 0, 0x3C]))
PY
echo "seeds written under fuzz/corpus and fuzz/base"
