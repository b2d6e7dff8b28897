#!/usr/bin/env bash
# The hostile-input suite must end every case in well under a second (issue: bounded time).
# Unit tests do not assert time, so this runs tests/hostile.rs in release mode, collects the
# `hostile-case <seconds> <name>` lines it prints (open plus every data check, damage excluded),
# lists the slowest cases and fails if any took a second or more.
#
#   bash benches/hostile_timing.sh [LIMIT_SECONDS]      (default 1)
set -euo pipefail
cd "$(dirname "$0")/.."
limit=${1:-1}
out=$(cargo test --release --quiet --test hostile -- --nocapture --test-threads 1 2>&1) || {
    echo "$out" >&2
    exit 1
}
cases=$(grep -o 'hostile-case .*' <<<"$out" | sort -k2 -g -r)
n=$(wc -l <<<"$cases")
echo "$n hostile cases; slowest first (seconds, open + every data check):"
head -n 8 <<<"$cases" | awk '{ printf "  %.4f  %s\n", $2, substr($0, index($0, $3)) }'
awk -v limit="$limit" '$2 >= limit { bad = 1 } END { exit bad }' <<<"$cases" || {
    echo "some case took ${limit} s or more" >&2
    exit 1
}
echo "all under ${limit} s"
