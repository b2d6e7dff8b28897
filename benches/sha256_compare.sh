#!/usr/bin/env bash
# The integrity checks against OpenSSL: `openssl speed -evp sha256` (one stream, 1 MiB blocks)
# next to `bundle verify --only manifest,files,checksums` on a bundle (default: the demo). Rule
# 7.1 hashes every file whole and rule 7.2 every tensor, so each byte is hashed twice; the
# bound on N cores is N streams at OpenSSL's speed.
#
#   bash benches/sha256_compare.sh [BUNDLE_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bundle=target/release/bundle
if [ $# -ge 1 ]; then
    dir=$1
else
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    dir=$work/demo
    "$bundle" create --demo --out "$dir" >/dev/null
fi
bytes=$(du -cb "$dir"/*.safetensors "$dir"/manifest.json | tail -n 1 | cut -f1)
ossl=$(openssl speed -evp sha256 -bytes 1048576 -seconds 3 2>/dev/null | awk '/^sha256/ { v = $NF } END { sub("k", "", v); print v * 1000 / 1e9 }')
best=""
for _ in 1 2 3; do
    secs=$("$bundle" verify --json --only manifest,files,checksums "$dir" |
        python3 -c 'import json, sys; print(next(c["seconds"] for c in json.load(sys.stdin)["checks"] if c["name"] == "checksums"))')
    if [ -z "$best" ] || awk -v a="$secs" -v b="$best" 'BEGIN { exit !(a < b) }'; then best=$secs; fi
done
cores=$(nproc)
awk -v o="$ossl" -v s="$best" -v b="$bytes" -v n="$cores" 'BEGIN {
    printf "openssl sha256, one stream:          %.2f GB/s\n", o
    printf "bound on %d cores (2 digests/byte):   %.2f GB/s of bundle\n", n, o * n / 2
    printf "bundle checksums (best of 3):        %.2f GB/s of bundle (%.0f MB in %.3f s)\n", b / s / 1e9, b / 1e6, s
    printf "share of the bound:                  %.0f%%\n", 100 * (b / s / 1e9) / (o * n / 2)
}'
