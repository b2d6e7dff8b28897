#!/usr/bin/env bash
# The whole test suite, with all set-up, on a fresh machine: `bash scripts/test.sh`.
# Installs the Python packages the interop checks need, then runs the Rust tests (release mode:
# the property and exhaustive tests are slow in debug) and the Python checks.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r scripts/requirements.txt

cargo test --release --all-targets
cargo test --release --doc
python3 scripts/check_interop.py
