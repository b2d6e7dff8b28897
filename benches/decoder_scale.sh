#!/usr/bin/env bash
# The decoder at the size of BitNet b1.58 2B4T: streams the model directory
# (benches/make_decoder_checkpoint.py: the real config, synthetic BF16 weights, 4.8 GB, never
# committed), runs the f32 forward of the original weights on a few sequences
# (examples/decoder_logits.rs --original-only), then `bundle create --from` the directory and
# `bundle verify` the bundle (6.5 GB more), each under /usr/bin/time: wall time, peak RSS, and
# for verify the seconds of every check.
#
#   bash benches/decoder_scale.sh [WORK_DIR]      needs about 5 GB free (default: a temporary
#                                                 directory, removed afterwards)
#   LAYERS=4 bash benches/decoder_scale.sh        a shallower model of the same widths
#   N=2 T=64 bash benches/decoder_scale.sh        sequences and tokens per sequence
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --example decoder_logits --bin bundle
if [ $# -ge 1 ]; then
    work=$1
    mkdir -p "$work"
else
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
fi
model="$work/bitnet-2b4t-shaped"
if [ ! -f "$model/model.safetensors" ]; then
    t0=$(date +%s.%N)
    python3 benches/make_decoder_checkpoint.py "$model" --layers "${LAYERS:-30}"
    echo "generated in $(echo "$(date +%s.%N) - $t0" | bc) s"
fi
python3 -c 'import sys, numpy as np; from safetensors.numpy import save_file
n, t = int(sys.argv[2]), int(sys.argv[3])
save_file({"input_ids": np.random.default_rng(0).integers(0, 128256, (n, t), dtype=np.int64)}, sys.argv[1])' \
    "$work/ids.safetensors" "${N:-2}" "${T:-32}"
/usr/bin/time -v target/release/examples/decoder_logits "$model" "$work/ids.safetensors" "$work/logits.safetensors" \
    --original-only 2>"$work/time.txt" >/dev/null || { cat "$work/time.txt" >&2; exit 1; }
grep -E "forward in" "$work/time.txt"
grep -E "Elapsed|Maximum resident" "$work/time.txt" | sed 's/^\s*//'

rm -rf "$work/bundle"
/usr/bin/time -v target/release/bundle create --from "$model" --out "$work/bundle" \
    2>"$work/create-time.txt" >/dev/null || { cat "$work/create-time.txt" >&2; exit 1; }
echo "create:"
grep -E "Elapsed|Maximum resident" "$work/create-time.txt" | sed 's/^\s*/  /'
/usr/bin/time -v target/release/bundle verify "$work/bundle" --json >"$work/verify.json" \
    2>"$work/verify-time.txt" || { cat "$work/verify-time.txt" >&2; exit 1; }
echo "verify:"
grep -E "Elapsed|Maximum resident" "$work/verify-time.txt" | sed 's/^\s*/  /'
python3 -c 'import json, sys
for c in json.load(open(sys.argv[1]))["checks"]:
    print(f"  {c['"'"'name'"'"']:15} {c['"'"'status'"'"']:5} {c['"'"'seconds'"'"']:6.1f} s  {c['"'"'detail'"'"'][:90]}")' "$work/verify.json"
