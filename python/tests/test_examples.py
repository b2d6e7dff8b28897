"""The example scripts of both stages (examples/python), run as a user runs them: the quantizing
stage's finalize writes a bundle that verifies with retention >= 0.995, deterministically; the
receiving stage's initialize takes it over and prints the phase4_to_5/* and phase5/* metrics,
equal to those of the verify and assess reports. The numpy variants always run; the torch
variants when torch can be imported.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import ternary_bundle as tb

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "python"
SPEC = ROOT / "spec"
# The metric names the receiving stage logs: those of the two reports' schemas.
PHASE_KEYS = {k for schema in ("verify.schema.json", "assess.schema.json")
              for k in json.loads((SPEC / schema).read_text())["properties"]["metrics"]["required"]
              if k.startswith(("phase4_to_5/", "phase5/"))}
# The models are tiny: BLAS and OpenMP threads cost more than they give (and spin on a busy
# machine), so the scripts run on one.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
BACKENDS = ["numpy", "torch"]


def run(script, *args, cwd, ok=True):
    """Runs examples/python/`script` with this interpreter in `cwd`; returns the process."""
    r = subprocess.run([sys.executable, str(EXAMPLES / script), *args], cwd=cwd, env=ENV,
                       capture_output=True, text=True, timeout=300)
    if ok:
        assert r.returncode == 0, f"{script} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r


@pytest.mark.parametrize("backend", BACKENDS)
def test_finalize_then_initialize(backend, tmp_path):
    if backend == "torch":
        pytest.importorskip("torch")
    # Defaults: finalize writes ./finalized-bundle, initialize reads it.
    out = run("quantizing_stage_finalize.py", "--backend", backend, cwd=tmp_path).stdout
    bundle = tmp_path / "finalized-bundle"
    report = tb.verify(bundle)
    assert report["ok"], [c for c in report["checks"] if c["status"] == "fail"]
    retention = report["metrics"]["phase4_to_5/dequantization_accuracy_retention"]
    assert retention >= 0.995
    assert f"phase4_to_5/dequantization_accuracy_retention: {retention}" in out
    manifest = tb.open(bundle).manifest
    assert manifest["provenance"]["original"]["forward"] == "ternary"
    assert [t["name"] for t in manifest["tensors"] if t["quantized"]] == \
        ["fc1.weight", "fc2.weight", "fc3.weight"]

    printed = run("receiving_stage_initialize.py", "--backend", backend, cwd=tmp_path).stdout
    metrics = json.loads(printed)
    assert set(metrics) == PHASE_KEYS
    reported = {**report["metrics"], **tb.assess(bundle)["metrics"]}
    assert metrics == {k: reported[k] for k in PHASE_KEYS}
    assert metrics["phase5/edge_of_chaos_assessment_completed"] is True


def test_finalize_is_deterministic(tmp_path):
    for out in ("a", "b"):
        run("quantizing_stage_finalize.py", "--backend", "numpy", "--seed", "3", "--out", out,
            cwd=tmp_path)
    a, b = (tb.open(tmp_path / out).manifest["files"] for out in ("a", "b"))
    assert [a[f]["sha256"] for f in ("ternary", "fp16", "validation")] == \
        [b[f]["sha256"] for f in ("ternary", "fp16", "validation")]


def test_initialize_refuses_a_missing_bundle(tmp_path):
    r = run("receiving_stage_initialize.py", "no-such-bundle", "--backend", "numpy",
            cwd=tmp_path, ok=False)
    assert r.returncode != 0 and "no-such-bundle" in r.stderr and not r.stdout
