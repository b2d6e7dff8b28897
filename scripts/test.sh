#!/usr/bin/env bash
# The whole test suite, with all set-up, on a fresh machine: `bash scripts/test.sh`.
# Installs the Python packages of the interop checks, runs the Rust tests (release mode: the
# property and exhaustive tests are slow in debug), then checks bundles made by the `bundle`
# binary with an independent Python reading of the spec.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r scripts/requirements.txt

cargo test --release --all-targets
cargo test --release --doc

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The Python-written checkpoint fixtures regenerate byte for byte.
python3 fixtures/source/make_checkpoint.py "$work/source"
cmp fixtures/source/tiny.safetensors "$work/source/tiny.safetensors"
cmp fixtures/source/validation.safetensors "$work/source/validation.safetensors"

# Bundles created by the CLI (from the Python checkpoint, and the demo) pass the independent
# checks, and `inspect --json` matches its documented schema.
bundle=target/release/bundle
"$bundle" create --from fixtures/source/tiny.safetensors --validation fixtures/source/validation.safetensors \
    --out "$work/from-python" >/dev/null
"$bundle" create --from fixtures/source/tiny.safetensors --encoding trit2 --granularity group --group-size 7 \
    --out "$work/from-python-trit2" >/dev/null
"$bundle" create --demo --out "$work/demo" >/dev/null
"$bundle" inspect --json "$work/demo" >"$work/demo-inspect.json"
"$bundle" inspect --json fixtures/versions/newer-minor >"$work/newer-inspect.json"
"$bundle" verify --json "$work/demo" >"$work/demo-verify.json"
"$bundle" verify --json fixtures/broken/nan-scale >"$work/broken-verify.json" || test $? -eq 1
python3 scripts/check_interop.py "$work/from-python" "$work/from-python-trit2" "$work/demo" \
    --inspect-json "$work/demo-inspect.json" --inspect-json "$work/newer-inspect.json" \
    --verify-json "$work/demo-verify.json" --verify-json "$work/broken-verify.json"
