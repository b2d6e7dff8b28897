#!/usr/bin/env bash
# `bundle verify` and `bundle create --demo` on a quiet machine and beside BUSY processes that
# keep cores busy (`yes > /dev/null`, started and stopped by this script), next to the numpy
# equivalent of verify (benches/verify_numpy.py) under the same load. One table: the median and
# the spread of REPS runs (default 5) per case, and each case's slowdown against its quiet
# median.
#
#   bash benches/contention.sh [WORK_DIR]          BUSY=2 REPS=5 by default
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bundle=$PWD/target/release/bundle
reps=${REPS:-5}
busy=${BUSY:-2}

hogs=()
stop_hogs() {
    if [ ${#hogs[@]} -gt 0 ]; then kill "${hogs[@]}" 2>/dev/null || true; fi
    hogs=()
}
if [ $# -ge 1 ]; then
    work=$1
    mkdir -p "$work"
    trap stop_hogs EXIT
else
    work=$(mktemp -d)
    trap 'stop_hogs; rm -rf "$work"' EXIT
fi

if ! python3 -c 'import numpy' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore numpy
fi
"$bundle" create --demo --out "$work/demo" --force >/dev/null

# times KEY CMD...: runs CMD $reps times, records the wall times (s) in $work/KEY.times.
times() {
    local key=$1 t0 t1
    shift
    : >"$work/$key.times"
    for _ in $(seq "$reps"); do
        t0=$(date +%s%N)
        "$@" >/dev/null 2>&1
        t1=$(date +%s%N)
        awk -v d=$((t1 - t0)) 'BEGIN { printf "%.3f\n", d / 1e9 }' >>"$work/$key.times"
    done
}
run_cases() { # SUFFIX
    times "verify_$1" "$bundle" verify "$work/demo"
    times "numpy_$1" python3 benches/verify_numpy.py "$work/demo"
    times "create_$1" "$bundle" create --demo --out "$work/created" --force
}

echo "quiet: $reps runs of each case"
run_cases quiet
echo "beside $busy busy processes: $reps runs of each case"
for _ in $(seq "$busy"); do
    yes >/dev/null &
    hogs+=($!)
done
sleep 1
run_cases busy
stop_hogs

median() { sort -n "$1" | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
spread() { sort -n "$1" | awk 'NR == 1 { lo = $1 } { hi = $1 } END { printf "%.2f-%.2f", lo, hi }'; }

echo
echo "--- demo bundle; $(nproc) cores; wall time in seconds, median of $reps runs (min-max)"
printf '%-26s %-18s %-24s %s\n' case quiet "beside $busy busy" "busy / quiet"
for case in verify numpy create; do
    case $case in
        verify) title="bundle verify" ;;
        numpy) title="verify_numpy.py" ;;
        create) title="bundle create --demo" ;;
    esac
    q=$(median "$work/${case}_quiet.times")
    b=$(median "$work/${case}_busy.times")
    printf '%-26s %-18s %-24s %s\n' "$title" "$q ($(spread "$work/${case}_quiet.times"))" \
        "$b ($(spread "$work/${case}_busy.times"))" "$(awk -v q="$q" -v b="$b" 'BEGIN { printf "%.1fx", b / q }')"
done
vb=$(median "$work/verify_busy.times")
nb=$(median "$work/numpy_busy.times")
awk -v v="$vb" -v n="$nb" 'BEGIN { printf "under load, bundle verify takes %.2f of the numpy equivalent'"'"'s time\n", v / n }'
