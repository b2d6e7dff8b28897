#!/usr/bin/env bash
# The decoder reference model at the size of BitNet b1.58 2B4T: streams the model directory
# (benches/make_decoder_checkpoint.py: the real config, synthetic BF16 weights, 4.8 GB, never
# committed), then runs the f32 forward of the original weights on a few sequences
# (examples/decoder_logits.rs --original-only) under /usr/bin/time: wall time, peak RSS, and
# the forward's own time.
#
#   bash benches/decoder_scale.sh [WORK_DIR]      needs about 5 GB free (default: a temporary
#                                                 directory, removed afterwards)
#   LAYERS=4 bash benches/decoder_scale.sh        a shallower model of the same widths
#   N=2 T=64 bash benches/decoder_scale.sh        sequences and tokens per sequence
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --example decoder_logits
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
