#!/usr/bin/env bash
# What a signature costs on a big bundle (issue 23's target: signing, and verifying the
# signature, cost no more than the checksums check plus 10%, because the file digests are
# computed once). On BUNDLE (e.g. the 2.5 B bundle of benches/scale.sh or decoder_scale.sh), best
# of REPEAT runs each, alternating, with a warm page cache:
#   checksums   bundle verify --only checksums                  (every file and tensor digest)
#   sign        bundle sign --key K                              (checksums, then model.sig)
#   verify      bundle verify --only checksums,signature --trusted-key K.pub
#               (the same digests, then the signature over them)
# and prints each wall time and its ratio to checksums.
#
#   bash benches/sign_scale.sh BUNDLE [REPEAT]     (BUNDLE gets a model.sig; a copy of an
#                                                   existing one is kept and put back)
set -euo pipefail
cd "$(dirname "$0")/.."
bundle_dir=${1:?usage: bash benches/sign_scale.sh BUNDLE [REPEAT]}
repeat=${2:-3}
cargo build --release --quiet --bin bundle
bin=target/release/bundle
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[ -f "$bundle_dir/model.sig" ] && cp "$bundle_dir/model.sig" "$work/model.sig.saved"
"$bin" keygen --out "$work/k.pem" >/dev/null
cat "$bundle_dir"/*.safetensors >/dev/null   # warm the page cache
seconds() { # COMMAND...: wall seconds of one run
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc
}
best() { sort -n | head -1; }
: >"$work/checksums"; : >"$work/sign"; : >"$work/verify"
for _ in $(seq "$repeat"); do
    seconds "$bin" verify "$bundle_dir" --only checksums >>"$work/checksums"
    seconds "$bin" sign "$bundle_dir" --key "$work/k.pem" >>"$work/sign"
    seconds "$bin" verify "$bundle_dir" --only checksums,signature --trusted-key "$work/k.pub.pem" >>"$work/verify"
done
"$bin" verify "$bundle_dir" --only checksums,signature --trusted-key "$work/k.pub.pem" | grep -E "checksums|signature"
c=$(best <"$work/checksums"); s=$(best <"$work/sign"); v=$(best <"$work/verify")
bytes=$(du -cb "$bundle_dir"/*.safetensors "$bundle_dir"/manifest.json | tail -1 | cut -f1)
echo
echo "bundle $bundle_dir: $bytes bytes; best of $repeat, warm page cache, $(nproc) cores"
echo "| step | wall | vs checksums |"
echo "| --- | --- | --- |"
printf '| `verify --only checksums` | %.2f s | 1.00x |\n' "$c"
printf '| `sign` (checksums, then model.sig) | %.2f s | %.2fx |\n' "$s" "$(echo "$s / $c" | bc -l)"
printf '| `verify --only checksums,signature --trusted-key` | %.2f s | %.2fx |\n' "$v" "$(echo "$v / $c" | bc -l)"
if [ -f "$work/model.sig.saved" ]; then cp "$work/model.sig.saved" "$bundle_dir/model.sig"; else rm -f "$bundle_dir/model.sig"; fi
