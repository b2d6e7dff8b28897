#!/usr/bin/env bash
# `bundle create` next to the same work in numpy (benches/create_numpy.py) on a demo-sized F32
# checkpoint (512 -> 4096 -> 4096 -> 1536 -> 100, 25 M parameters, written by
# benches/make_scale_checkpoint.py): wall time (best of REPS runs, default 3) and peak RSS of
# each. The numpy script then checks that every tensor it wrote equals the bundle's, bit for bit.
#
#   bash benches/create_compare.sh [WORK_DIR]      (WIDTHS=... for another model)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bundle=$PWD/target/release/bundle
reps=${REPS:-3}
widths=${WIDTHS:-512,4096,4096,1536,100}
if [ $# -ge 1 ]; then
    work=$1
    mkdir -p "$work"
else
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
fi
if ! python3 -c 'import numpy, safetensors' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore numpy safetensors
fi
python3 benches/make_scale_checkpoint.py "$work/ckpt.safetensors" --widths "$widths" >/dev/null

# best KEY CMD...: runs CMD $reps times; prints "KEY best-seconds peak-RSS-MB runs".
best() {
    local key=$1 i t0 t1 ms best="" runs="" rss maxrss=0
    shift
    for i in $(seq "$reps"); do
        rm -rf "$work/$key"
        t0=$(date +%s%N)
        /usr/bin/time -f %M -o "$work/$key.rss" "$@" >"$work/$key.out" 2>&1 ||
            { echo "$key failed:" >&2; cat "$work/$key.out" >&2; exit 1; }
        t1=$(date +%s%N)
        ms=$(( (t1 - t0) / 1000000 ))
        runs+="$(awk -v m="$ms" 'BEGIN { printf "%.2f", m / 1000 }') "
        if [ -z "$best" ] || [ "$ms" -lt "$best" ]; then best=$ms; fi
        rss=$(tail -n 1 "$work/$key.rss")
        if [ "$rss" -gt "$maxrss" ]; then maxrss=$rss; fi
    done
    printf '%s %s %s %s\n' "$key" "$best" "$maxrss" "${runs% }"
}

echo "checkpoint: widths $widths, $(du -h "$work/ckpt.safetensors" | cut -f1)"
rust=$(best bundle "$bundle" create --from "$work/ckpt.safetensors" --out "$work/bundle" --force)
numpy=$(best numpy python3 benches/create_numpy.py "$work/ckpt.safetensors" "$work/numpy")
python3 benches/create_numpy.py "$work/ckpt.safetensors" "$work/numpy" --compare "$work/bundle" | tail -n 1
echo
printf '%-22s %-12s %-26s %s\n' tool "best wall" "all runs (s)" "peak RSS"
for row in "$rust" "$numpy"; do
    read -r key ms rss runs <<<"$row"
    name=$([ "$key" = bundle ] && echo "bundle create" || echo "create_numpy.py")
    printf '%-22s %-12s %-26s %s\n' "$name" "$(awk -v m="$ms" 'BEGIN { printf "%.2f s", m / 1000 }')" \
        "$runs" "$(awk -v k="$rss" 'BEGIN { printf "%.0f MB", k / 1024 }')"
done
read -r _ rust_ms _ <<<"$rust"
read -r _ numpy_ms _ <<<"$numpy"
awk -v a="$numpy_ms" -v b="$rust_ms" 'BEGIN { printf "numpy / bundle wall time: %.1fx\n", a / b }'
