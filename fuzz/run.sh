#!/usr/bin/env bash
# Runs every fuzz target (or the TARGETs named) for SECONDS each (default 60):
#     bash fuzz/run.sh [SECONDS] [TARGET...]
# Needs the nightly toolchain (installed beside stable) and cargo-fuzz (installed if missing).
# The committed seeds are read from fuzz/corpus/<target>; new inputs go to fuzz/work/<target>
# (not committed; minimize with `cargo fuzz cmin` before adding any to the corpus). Crashes go to
# fuzz/artifacts/<target>: copy a crash into fuzz/regressions/<target>/ once fixed, so the
# replay test keeps it fixed.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(manifest bundle codecs verify_numeric decoder_config gguf signature)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz
[ -f fuzz/corpus/verify_numeric/trit5-channel-two-layers ] && [ -d fuzz/corpus/gguf ] || bash fuzz/make_seeds.sh
failed=0
for target in "${targets[@]}"; do
    mkdir -p "fuzz/work/$target" "fuzz/corpus/$target"
    log="fuzz/work/$target.log"
    echo "== $target: ${seconds}s (full output in $log)"
    status=0
    cargo +nightly fuzz run "$target" "fuzz/work/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=262144 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    grep -E "^(stat::|#[0-9]+ +DONE|==[0-9]+== ERROR|SUMMARY|Done)" "$log" || true
    # A build failure, a crash or a leak: the target did not run clean.
    if [ "$status" -ne 0 ]; then
        echo "fuzz target $target exited with status $status; last lines of $log:" >&2
        tail -n 30 "$log" >&2
        failed=1
    fi
done
# A crash leaves its input in fuzz/artifacts/<target>/: fail loudly.
if find fuzz/artifacts -type f 2>/dev/null | grep -q .; then
    echo "fuzzing found crashes:" >&2
    find fuzz/artifacts -type f >&2
    failed=1
fi
exit "$failed"
