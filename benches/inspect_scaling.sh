#!/usr/bin/env bash
# `bundle inspect` reads only the manifest and the safetensors headers, so its time must not grow
# with the bundle. This builds a bundle of over 1 GB (a demo-style model of about 550 M
# parameters) and times `inspect` on it and on the tiny fixture, side by side.
#
#   bash benches/inspect_scaling.sh [WORK_DIR]      (needs about 1.3 GB of disk)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bundle=target/release/bundle
work=${1:-$(mktemp -d)}
big="$work/big-bundle"
if [ ! -f "$big/manifest.json" ]; then
    echo "building a large bundle in $big ..."
    /usr/bin/time -f "create: %e s, peak RSS %M kB" \
        "$bundle" create --demo --demo-widths 512,16384,16384,16384,100 --out "$big" --force >/dev/null
fi
du -sh "$big"/*.safetensors

time_inspect() { # prints the median wall time of 21 runs, in ms
    local dir=$1 times=()
    for _ in $(seq 21); do
        local t0 t1
        t0=$(date +%s%N)
        "$bundle" inspect --json "$dir" >/dev/null
        t1=$(date +%s%N)
        times+=($(( (t1 - t0) / 1000 )))
    done
    printf '%s\n' "${times[@]}" | sort -n | sed -n 11p | awk '{printf "%.2f ms", $1 / 1000}'
}
echo "inspect tiny fixture ($(du -sh fixtures/bundles/tiny-trit5-channel | cut -f1)): $(time_inspect fixtures/bundles/tiny-trit5-channel) (median of 21)"
echo "inspect large bundle ($(du -sh "$big" | cut -f1)): $(time_inspect "$big") (median of 21)"
