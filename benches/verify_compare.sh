#!/usr/bin/env bash
# `bundle verify` next to an equivalent numpy script (benches/verify_numpy.py) on the demo bundle
# (25 M parameters, 4 layers, validation set of 1000 samples): wall time (best of REPS runs, default
# 3) and peak RSS of each, then a side-by-side table. A tool that fails (for example a `bundle`
# built without the `verify` subcommand) is reported as failed, with its error, and not timed.
#
#   bash benches/verify_compare.sh [WORK_DIR]      (REPS=5 bash benches/verify_compare.sh for 5 runs)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bundle=target/release/bundle
reps=${REPS:-3}

if [ $# -ge 1 ]; then
    work=$1
    mkdir -p "$work"
else
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
fi
"$bundle" create --demo --out "$work/demo" --force >/dev/null
du -sh "$work/demo"/* | sed 's/^/  /'

if ! python3 -c 'import numpy' 2>/dev/null; then
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore numpy
fi

have_time=0
if [ -x /usr/bin/time ]; then have_time=1; fi

# measure KEY CMD...: runs CMD up to $reps times; sets status_KEY, best_KEY (s), runs_KEY,
# rss_KEY (largest peak RSS, MB) and keeps the first run's output in $work/KEY.out.
measure() {
    local key=$1 i t0 t1 rc ms rss best="" runs="" maxrss=0
    shift
    for i in $(seq "$reps"); do
        rc=0
        t0=$(date +%s%N)
        if [ "$have_time" = 1 ]; then
            /usr/bin/time -f %M -o "$work/$key.rss" "$@" >"$work/$key.run" 2>&1 || rc=$?
        else
            "$@" >"$work/$key.run" 2>&1 || rc=$?
        fi
        t1=$(date +%s%N)
        [ "$i" = 1 ] && cp "$work/$key.run" "$work/$key.out"
        if [ "$rc" != 0 ]; then
            printf -v "status_$key" 'FAILED (exit %s)' "$rc"
            printf -v "best_$key" '-'
            printf -v "runs_$key" '-'
            printf -v "rss_$key" '-'
            return 0
        fi
        ms=$(( (t1 - t0) / 1000000 ))
        runs+="$(awk -v m="$ms" 'BEGIN { printf "%.2f", m / 1000 }') "
        if [ -z "$best" ] || [ "$ms" -lt "$best" ]; then best=$ms; fi
        if [ "$have_time" = 1 ]; then
            rss=$(tail -n 1 "$work/$key.rss")
            if [ "$rss" -gt "$maxrss" ]; then maxrss=$rss; fi
        fi
    done
    printf -v "status_$key" 'ok'
    printf -v "best_$key" '%s' "$(awk -v m="$best" 'BEGIN { printf "%.2f s", m / 1000 }')"
    printf -v "runs_$key" '%s' "${runs% }"
    if [ "$have_time" = 1 ]; then
        printf -v "rss_$key" '%s' "$(awk -v k="$maxrss" 'BEGIN { printf "%.0f MB", k / 1024 }')"
    else
        printf -v "rss_$key" 'n/a (no /usr/bin/time)'
    fi
    # Best time in ms, for the ratio.
    printf -v "ms_$key" '%s' "$best"
}

echo "timing: $bundle verify $work/demo ($reps runs)"
measure rust "$bundle" verify "$work/demo"
echo "timing: python3 benches/verify_numpy.py $work/demo ($reps runs)"
measure numpy python3 benches/verify_numpy.py "$work/demo"

show() { # KEY TITLE: the first run's output (or the end of a failed tool's output)
    local status="status_$1"
    echo
    if [ "${!status}" = ok ]; then
        echo "--- $2: output of the first run"
        sed 's/^/  /' "$work/$1.out"
    else
        echo "--- $2: ${!status}, last lines of its output"
        tail -n 5 "$work/$1.out" | sed 's/^/  /'
    fi
}
show rust "bundle verify"
show numpy "verify_numpy.py"

echo
echo "--- summary (demo bundle, best of $reps wall-clock runs; peak RSS = largest of the runs)"
printf '%-22s %-18s %-12s %-26s %s\n' tool status "best wall" "all runs (s)" "peak RSS"
printf '%-22s %-18s %-12s %-26s %s\n' "bundle verify" "$status_rust" "$best_rust" "$runs_rust" "$rss_rust"
printf '%-22s %-18s %-12s %-26s %s\n' "verify_numpy.py" "$status_numpy" "$best_numpy" "$runs_numpy" "$rss_numpy"
if [ "$status_rust" = ok ] && [ "$status_numpy" = ok ]; then
    awk -v r="$ms_rust" -v n="$ms_numpy" 'BEGIN { if (r > 0) printf "numpy / bundle wall time: %.1fx\n", n / r }'
fi
if [ "$status_rust" != ok ] || [ "$status_numpy" != ok ]; then
    exit 1
fi
