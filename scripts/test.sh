#!/usr/bin/env bash
# The whole test suite, with all set-up, on a fresh machine: `bash scripts/test.sh`.
# Installs the Python packages of the interop checks, runs the Rust tests (release mode: the
# property and exhaustive tests are slow in debug), then checks bundles made by the `bundle`
# binary with an independent Python reading of the spec.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r scripts/requirements.txt

# Headless Chromium for the browser test of `bundle report` (Debian's chromium package).
if ! command -v chromium >/dev/null; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then sudo=sudo; fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get install -y -qq chromium >/dev/null ||
        { $sudo apt-get update -qq && $sudo apt-get install -y -qq chromium >/dev/null; }
fi

cargo test --release --all-targets
cargo test --release --doc

work=$(mktemp -d)
trap 'rm -rf "$work"; git worktree prune' EXIT

# The Python-written checkpoint fixtures regenerate byte for byte.
python3 fixtures/source/make_checkpoint.py "$work/source"
cmp fixtures/source/tiny.safetensors "$work/source/tiny.safetensors"
cmp fixtures/source/validation.safetensors "$work/source/validation.safetensors"

# Bundles created by the CLI (from the Python checkpoint, and the demo) pass the independent
# checks, and `inspect --json` / `verify --json` match their documented schemas.
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
"$bundle" verify --json fixtures/versions/written-by-1.0 >"$work/v1-verify.json"
"$bundle" verify --json --min-retention 0 "$work/from-python" >"$work/from-python-verify.json"
"$bundle" assess --json "$work/demo" >"$work/demo-assess.json"
"$bundle" assess --json --batch-size 30 "$work/demo" >"$work/demo-assess-30.json"

# A model trained for real (numpy), quantized with its validation set: the retention gate fails
# at the handoff's 0.995 (exit 1) and passes at 0.9; both reports are recomputed independently.
python3 scripts/train_mlp.py "$work/trained"
"$bundle" create --from "$work/trained/model.safetensors" --validation "$work/trained/validation.safetensors" \
    --out "$work/trained-bundle" >/dev/null
status=0
"$bundle" verify --json "$work/trained-bundle" >"$work/trained-verify.json" || status=$?
test "$status" -eq 1
"$bundle" verify --json --min-retention 0.9 "$work/trained-bundle" >"$work/trained-verify-0.9.json"

# An independent numpy writer (spec sections 5, 7, 8) quantizes, packs and dequantizes the same
# checkpoint as `create`: every tensor of both files must be equal bit for bit.
python3 benches/make_scale_checkpoint.py "$work/mlp.safetensors" --widths 64,301,7 --seed 3 >/dev/null
"$bundle" create --from "$work/mlp.safetensors" --out "$work/mlp-bundle" >/dev/null
python3 benches/create_numpy.py "$work/mlp.safetensors" "$work/mlp-numpy" --compare "$work/mlp-bundle"

# `bundle run` on both weight paths of the demo and of a trit2 / group-scale bundle; numpy
# recomputes the logits from the bundle files (--run below).
python3 -c 'import sys, numpy as np; from safetensors.numpy import save_file
for path, width in ((sys.argv[1], 512), (sys.argv[2], 16)):
    save_file({"inputs": np.random.default_rng(width).standard_normal((64, width)).astype(np.float32)}, path)' \
    "$work/x-demo.safetensors" "$work/x-tiny.safetensors"
for p in fp16 ternary; do
    "$bundle" run "$work/demo" --input "$work/x-demo.safetensors" --out "$work/run-demo-$p.safetensors" --path $p >/dev/null
    "$bundle" run "$work/from-python-trit2" --input "$work/x-tiny.safetensors" --out "$work/run-tiny-$p.safetensors" --path $p >/dev/null
done

# The decoder reference model (Llama, BitNet) on model directories written by Python in
# transformers' layout, single-file and sharded, tied and untied: numpy recomputes the logits of
# the original weights and of both quantized paths.
for cfg in "llama 1" "llama 3 --tied" "bitnet 1 --tied" "bitnet 2"; do
    set -- $cfg
    d="$work/decoder-$1-$2"
    python3 scripts/decoder_numpy.py make "$d" --family "$1" --shards "$2" "${@:3}" >/dev/null
    cargo run --release --quiet --example decoder_logits -- "$d" "$d/ids.safetensors" "$d/out.safetensors" >/dev/null
    python3 scripts/decoder_numpy.py check "$d" "$d/out.safetensors"
done

# Language models (format 3.0): a Llama (F32, one file, untied) and a BitNet b1.58 (BF16, two
# shards, tied) checkpoint written by the Python safetensors package in transformers' naming,
# with weights that do a task and a validation set of token sequences with difficulty levels:
# created, inspected, verified with every check passing (reference included), assessed, run on
# both paths; an independent numpy reader of the spec recomputes every tensor and the logits.
for cfg in "llama 1 f32" "bitnet 2 bf16 --tied"; do
    set -- $cfg
    d="$work/lm-$1"
    python3 scripts/decoder_numpy.py make "$d" --family "$1" --shards "$2" --dtype "$3" "${@:4}" --task >/dev/null
    "$bundle" create --from "$d" --validation "$d/data.safetensors" --out "$d-bundle" >/dev/null
    "$bundle" inspect "$d-bundle" --json >"$d-inspect.json"
    "$bundle" verify "$d-bundle" --reference "$d" --json >"$d-verify.json"
    python3 -c 'import json, sys
r = json.load(open(sys.argv[1]))
bad = [(c["name"], c["status"]) for c in r["checks"] if c["status"] != "pass"]
assert not bad, f"{sys.argv[1]}: not every check passed: {bad}"
n, m = len(r["checks"]), r["metrics"]["phase4_to_5/dequantization_accuracy_retention"]
print(f"ok   {sys.argv[1]}: all {n} checks pass, retention {m}")' "$d-verify.json"
    "$bundle" assess "$d-bundle" --json >"$d-assess.json"
    for p in fp16 ternary; do
        "$bundle" run "$d-bundle" --input "$d/ids.safetensors" --out "$d-run-$p.safetensors" --path $p >/dev/null
    done
    python3 scripts/decoder_bundle_numpy.py check "$d-bundle" "$d/ids.safetensors" "$d-run-fp16.safetensors" "$d-run-ternary.safetensors"
done

# The language-model demo, read and recomputed the same way.
"$bundle" create --demo lm --out "$work/lm-demo" >/dev/null
python3 -c 'import sys, numpy as np; from safetensors.numpy import save_file
save_file({"input_ids": np.random.default_rng(5).integers(0, 1000, (3, 20), dtype=np.int64)}, sys.argv[1])' "$work/lm-ids.safetensors"
for p in fp16 ternary; do
    "$bundle" run "$work/lm-demo" --input "$work/lm-ids.safetensors" --out "$work/lm-demo-$p.safetensors" --path $p >/dev/null
done
python3 scripts/decoder_bundle_numpy.py check "$work/lm-demo" "$work/lm-ids.safetensors" "$work/lm-demo-fp16.safetensors" "$work/lm-demo-ternary.safetensors"

python3 scripts/check_interop.py "$work/from-python" "$work/from-python-trit2" "$work/demo" "$work/trained-bundle" \
    "$work/lm-llama-bundle" "$work/lm-bitnet-bundle" \
    --inspect-json "$work/lm-llama-inspect.json" --verify-json "$work/lm-bitnet-verify.json" \
    --verify-json "$work/lm-llama-verify.json" --assess-json "$work/lm-bitnet-assess.json" \
    --inspect-json "$work/demo-inspect.json" --inspect-json "$work/newer-inspect.json" \
    --verify-json "$work/demo-verify.json" --verify-json "$work/broken-verify.json" \
    --verify-json "$work/v1-verify.json" --verify-json "$work/trained-verify.json" \
    --retention "$work/trained-bundle" "$work/trained/model.safetensors" "$work/trained-verify.json" \
    --retention "$work/trained-bundle" "$work/trained/model.safetensors" "$work/trained-verify-0.9.json" \
    --retention "$work/from-python" fixtures/source/tiny.safetensors "$work/from-python-verify.json" \
    --demo "$work/demo" "$work/demo-verify.json" \
    --assess "$work/demo" "$work/demo-assess.json" --assess "$work/demo" "$work/demo-assess-30.json" \
    --assess-json "$work/demo-assess.json" \
    --run "$work/demo" "$work/x-demo.safetensors" "$work/run-demo-fp16.safetensors" \
    --run "$work/demo" "$work/x-demo.safetensors" "$work/run-demo-ternary.safetensors" \
    --run "$work/from-python-trit2" "$work/x-tiny.safetensors" "$work/run-tiny-fp16.safetensors" \
    --run "$work/from-python-trit2" "$work/x-tiny.safetensors" "$work/run-tiny-ternary.safetensors"

# The browser test: headless Chromium renders the reports of the demo and of a bundle whose
# tensor names are markup; no console message, no script, every chart, names shown as text.
python3 scripts/check_report.py hostile-checkpoint "$work/hostile-source"
"$bundle" create --from "$work/hostile-source/model.safetensors" \
    --validation "$work/hostile-source/validation.safetensors" --out "$work/hostile" >/dev/null
"$bundle" report "$work/demo" --out "$work/demo-report.html" >/dev/null
"$bundle" report "$work/hostile" --out "$work/hostile-report.html" >/dev/null
python3 scripts/check_report.py browse "$work/demo-report.html" "$work/hostile-report.html" \
    --shots "$work/screenshots" --chosen "$work/demo-report.html" 7 \
    --names "$work/hostile-report.html" "$work/hostile-source/names.json"

# The previous release (format 2.0, the commit before format 3.0) refuses a decoder bundle for
# its version (rule 2.4), not as a damaged file. Built from this repository's history in a
# target directory of its own (sharing this one would mix the two builds of the crate).
previous=8847d04
git worktree add --quiet --detach "$work/previous" "$previous" ||
    { echo "the previous release's commit $previous is not in this checkout's history" >&2; exit 1; }
(cd "$work/previous" && CARGO_TARGET_DIR="$work/previous-target" cargo build --release --quiet --bin bundle)
cp "$work/previous-target/release/bundle" "$work/bundle-2.0"
git worktree remove --force "$work/previous"
set +e
"$work/bundle-2.0" inspect "$work/lm-bitnet-bundle" 2>"$work/previous.err"
code=$?
set -e
grep -q "rule 2.4" "$work/previous.err" && grep -q "found format version 3.0" "$work/previous.err" && [ $code -eq 1 ] ||
    { echo "the 2.0 reader did not refuse the decoder bundle for its version (exit $code):" >&2; cat "$work/previous.err" >&2; exit 1; }
echo "ok   the 2.0 release refuses a decoder bundle by version: $(cat "$work/previous.err")"
