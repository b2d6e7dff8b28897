#!/usr/bin/env python3
"""`ternary_bundle.create` from a state dict in memory, next to `bundle create --from` the same
checkpoint on disk (issue 22, "Speed and memory"): wall time and peak memory of each, and
whether the two bundles are the same.

    python3 benches/python_create.py [--widths W] [--work DIR] [--repeat N] [--json]
                                     [--python PY] [--bundle-bin BIN]

    python3 benches/python_create.py                          # ~243 M parameters (0.97 GB F32)
    python3 benches/python_create.py --widths 512,512,10 --repeat 1   # a quick check of the script

The checkpoint is an F32 MLP written by benches/make_scale_checkpoint.py into --work (default:
a temporary directory, removed afterwards; with --work it is kept and reused while --widths is
the same). Default widths 4096,8192,8192,8192,8192,1000: 243 M parameters, the largest tensor
8192 x 8192 (268 MB in f32); `--widths 4096,16384,16384,16384,16384,1000` is 888 M (3.6 GB).

Then --repeat rounds (default 3), each a fresh process of both, alternating:

  CLI     target/release/bundle create --from CKPT --out OUT --force   (built with `cargo build
          --release --bin bundle` if missing); wall time of the whole process, reading the
          checkpoint included; peak RSS from wait4(2)'s ru_maxrss (the process's VmHWM).
  Python  PY THIS_SCRIPT --child: `safetensors.numpy.load_file(CKPT)` first, untimed (the point
          is a state dict already in memory), then `ternary_bundle.create(OUT, tensors,
          force=True)` alone is timed. Memory from /proc/self/status: VmRSS after the imports,
          after loading (the state dict's RSS is the difference), VmHWM over the whole process
          (loading's transient included), and VmHWM during create (reset after loading by
          writing 5 to /proc/self/clear_refs): that peak counts the state dict and create; over
          VmRSS just before create it is create's own working memory.

Each output directory is removed before its run, outside the timing. Times are the best of the
rounds, memory the largest; MB = 10^6 bytes. Before the first round the share of the
checkpoint resident in the page cache is measured (mincore(2)) and reported: nothing is dropped
from it, and the CLI, which reads the checkpoint inside its timing, runs warm when it is 100%.

"create from memory makes no extra copy of the model" is judged by: the peak during create
minus the state dict's RSS, next to the CLI's peak; and create's own working memory over the
state dict's size (a copy of the model would make that ratio 1 or more).

Last, the two bundles are compared: every .safetensors file byte for byte, and manifest.json
key by key, listing the keys that differ; provenance.* and manifest_sha256 (what the source
was) may differ legitimately, anything else is a failure (exit 1).
"""
from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from pagecache import resident_share

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_WIDTHS = "4096,8192,8192,8192,8192,1000"
LEGITIMATE = ("manifest_sha256", "provenance.")


def proc_status() -> dict:
    """VmRSS, VmHWM, RssAnon, RssFile of this process, in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0]) * 1024
    return out


# --- the child: load the checkpoint, then time create ---------------------------------------


def child(ckpt: str, out: str) -> dict:
    import numpy as np
    import safetensors
    import safetensors.numpy
    import ternary_bundle as tb

    imported = proc_status()
    t0 = time.perf_counter()
    tensors = safetensors.numpy.load_file(ckpt)
    t1 = time.perf_counter()
    loaded = proc_status()
    try:  # VmHWM := VmRSS, so the next peak is create's
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    reset = proc_status()
    t2 = time.perf_counter()
    tb.create(out, tensors, force=True)
    t3 = time.perf_counter()
    created = proc_status()
    return {"versions": {"numpy": np.__version__, "safetensors": safetensors.__version__,
                         "ternary_bundle": tb.__version__},
            "load_seconds": t1 - t0, "create_seconds": t3 - t2,
            "state_dict_bytes": sum(a.nbytes for a in tensors.values()),
            "tensors": len(tensors),
            "rss_imported": imported["VmRSS"], "rss_loaded": loaded["VmRSS"],
            "state_dict_rss": loaded["VmRSS"] - imported["VmRSS"],
            "hwm_reset_ok": reset["VmHWM"] < loaded["VmHWM"] or reset["VmHWM"] == reset["VmRSS"],
            "rss_before_create": reset["VmRSS"], "rss_after_create": created["VmRSS"],
            "create_peak": created["VmHWM"],
            "create_peak_over_before": created["VmHWM"] - reset["VmRSS"],
            "process_peak": max(loaded["VmHWM"], created["VmHWM"])}


# --- the parent -----------------------------------------------------------------------------


def timed(cmd: list, log: str) -> tuple:
    """Runs cmd (stdout and stderr to `log`); (exit status, wall seconds, peak RSS in bytes)."""
    with open(log, "w") as f:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(p.pid, 0)
        t1 = time.perf_counter()
        p.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait
    return p.returncode, t1 - t0, usage.ru_maxrss * 1024


def fail(msg: str, log: str = "") -> None:
    """Exits with `msg` and the last lines of `log`."""
    if log and os.path.exists(log):
        with open(log) as f:
            tail = f.read().strip().splitlines()[-10:]
        msg += "\n" + "\n".join("  " + line for line in tail)
    sys.exit(msg)


def manifest_diff(a, b, path: str = "") -> list:
    """[(key path, value in a, value in b)] where two JSON values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in list(a) + [k for k in b if k not in a]:
            out += manifest_diff(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{path}.{k}" if path else k)
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in manifest_diff(x, y, f"{path}[{i}]")]
    return [] if a == b and type(a) is type(b) else [(path, a, b)]


def compare(cli: str, py: str) -> dict:
    """Every file of the two bundles: .safetensors (and anything else) byte for byte,
    manifest.json key by key."""
    names = sorted(set(os.listdir(cli)) | set(os.listdir(py)))
    files, problems = {}, []
    for name in names:
        a, b = os.path.join(cli, name), os.path.join(py, name)
        if not (os.path.isfile(a) and os.path.isfile(b)):
            files[name] = "only in " + ("CLI" if os.path.isfile(a) else "Python") + " bundle"
            problems.append(f"{name}: {files[name]}")
        elif name == "manifest.json":
            continue
        elif filecmp.cmp(a, b, shallow=False):
            files[name] = f"identical ({os.path.getsize(a):,} bytes)"
        else:
            files[name] = f"DIFFERENT ({os.path.getsize(a):,} vs {os.path.getsize(b):,} bytes)"
            problems.append(f"{name} differs")
    diffs = []
    if os.path.isfile(os.path.join(cli, "manifest.json")) and os.path.isfile(os.path.join(py, "manifest.json")):
        with open(os.path.join(cli, "manifest.json")) as f:
            ma = json.load(f)
        with open(os.path.join(py, "manifest.json")) as f:
            mb_ = json.load(f)
        for key, x, y in manifest_diff(ma, mb_):
            ok = key == LEGITIMATE[0] or key.startswith(LEGITIMATE[1])
            diffs.append({"key": key, "cli": x, "python": y, "legitimate": ok})
            if not ok:
                problems.append(f"manifest.json: {key} differs")
    return {"files": files, "manifest_diff": diffs, "problems": problems}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", default=DEFAULT_WIDTHS, help=f"MLP widths (default {DEFAULT_WIDTHS})")
    p.add_argument("--work", help="work directory (kept; default: a temporary one, removed)")
    p.add_argument("--repeat", type=int, default=3, help="rounds of both (default 3)")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument("--python", default=sys.executable,
                   help="the interpreter of the Python runs (default: this one)")
    p.add_argument("--bundle-bin", default=os.path.join(ROOT, "target", "release", "bundle"),
                   help="the bundle binary (default target/release/bundle, built if missing)")
    p.add_argument("--child", nargs=2, metavar=("CKPT", "OUT"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return 0
    if args.repeat < 1:
        p.error("--repeat must be at least 1")
    log = lambda *a: print(*a, file=sys.stderr, flush=True)  # noqa: E731

    try:
        widths = [int(w) for w in args.widths.split(",")]
    except ValueError:
        p.error(f"--widths: expected comma-separated integers, found {args.widths!r}")
    bundle = os.path.abspath(args.bundle_bin)
    if not os.path.exists(bundle):
        log(f"{bundle} missing: cargo build --release --bin bundle")
        subprocess.run(["cargo", "build", "--release", "--bin", "bundle"], cwd=ROOT, check=True)
    bundle_version = subprocess.run([bundle, "--version"], stdout=subprocess.PIPE,
                                    text=True, check=True).stdout.strip()

    work = os.path.abspath(args.work) if args.work else tempfile.mkdtemp(prefix="python-create-")
    os.makedirs(work, exist_ok=True)
    try:
        ckpt = os.path.join(work, "ckpt.safetensors")
        stamp = os.path.join(work, "ckpt.widths")
        if not os.path.exists(ckpt) or not os.path.exists(stamp) or open(stamp).read() != args.widths:
            log(f"generating the checkpoint ({args.widths})")
            t0 = time.perf_counter()
            subprocess.run([sys.executable, os.path.join(ROOT, "benches", "make_scale_checkpoint.py"),
                            ckpt, "--widths", args.widths], check=True, stdout=sys.stderr)
            log(f"  in {time.perf_counter() - t0:.1f} s")
            with open(stamp, "w") as f:
                f.write(args.widths)
        resident = resident_share(ckpt)

        cli_out, py_out = os.path.join(work, "cli-bundle"), os.path.join(work, "py-bundle")
        cli_runs, py_runs = [], []
        for i in range(args.repeat):
            log(f"round {i + 1}/{args.repeat}: bundle create, then ternary_bundle.create")
            shutil.rmtree(cli_out, ignore_errors=True)
            rc, secs, peak = timed([bundle, "create", "--from", ckpt, "--out", cli_out, "--force"],
                                   os.path.join(work, "cli.log"))
            if rc != 0:
                fail(f"bundle create failed (exit {rc}):", os.path.join(work, "cli.log"))
            cli_runs.append({"seconds": secs, "peak": peak})

            shutil.rmtree(py_out, ignore_errors=True)
            py_log = os.path.join(work, "py.log")
            rc, secs, peak = timed([args.python, os.path.abspath(__file__), "--child", ckpt, py_out], py_log)
            if rc != 0:
                fail(f"the Python create failed (exit {rc}):", py_log)
            with open(py_log) as f:
                r = json.loads(f.read().strip().splitlines()[-1])
            r["process_seconds"], r["ru_maxrss"] = secs, peak
            py_runs.append(r)

        cmp = compare(cli_out, py_out)
        py0 = py_runs[0]
        cli = {"seconds": min(r["seconds"] for r in cli_runs), "peak": max(r["peak"] for r in cli_runs),
               "seconds_all": [round(r["seconds"], 3) for r in cli_runs]}
        py = {"create_seconds": min(r["create_seconds"] for r in py_runs),
              "create_seconds_all": [round(r["create_seconds"], 3) for r in py_runs],
              "load_seconds": min(r["load_seconds"] for r in py_runs),
              "state_dict_bytes": py0["state_dict_bytes"], "tensors": py0["tensors"],
              "rss_imported": max(r["rss_imported"] for r in py_runs),
              "state_dict_rss": max(r["state_dict_rss"] for r in py_runs),
              "process_peak": max(max(r["process_peak"], r["ru_maxrss"]) for r in py_runs),
              "create_peak": max(r["create_peak"] for r in py_runs),
              "create_peak_over_before": max(r["create_peak_over_before"] for r in py_runs),
              "hwm_reset_ok": all(r["hwm_reset_ok"] for r in py_runs),
              "versions": py0["versions"]}
        py["peak_minus_state_dict"] = py["process_peak"] - py["state_dict_rss"]
        py["create_peak_minus_state_dict"] = py["create_peak"] - py["state_dict_rss"]
        results = {
            "info": {"widths": args.widths, "checkpoint_bytes": os.path.getsize(ckpt),
                     "parameters": sum(x * y + y for x, y in zip(widths, widths[1:])), "page_cache_resident": resident,
                     "repeat": args.repeat, "cores": os.cpu_count(), "bundle": bundle,
                     "bundle_version": bundle_version, "python": args.python},
            "cli": cli, "python": py,
            "ratio_python_over_cli": py["create_seconds"] / cli["seconds"],
            "create_extra_over_state_dict": py["create_peak_over_before"] / max(1, py["state_dict_bytes"]),
            "comparison": cmp}
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)

    if args.json:
        print(json.dumps(results, indent=1))
    else:
        print(markdown(results))
    for line in cmp["problems"]:
        log(f"!!! {line}")
    if not py["hwm_reset_ok"]:
        log("!!! VmHWM could not be reset: create's peak includes the loading")
    return 1 if cmp["problems"] else 0


def markdown(r: dict) -> str:
    i, cli, py, c = r["info"], r["cli"], r["python"], r["comparison"]
    M = lambda n: f"{n / 1e6:,.0f} MB" if n >= 1e8 else f"{n / 1e6:,.1f} MB"  # noqa: E731
    res = i["page_cache_resident"]
    warm = "n/a" if res < 0 else f"{100 * res:.0f}% of it in the page cache before the first round"
    out = [f"F32 checkpoint, widths {i['widths']}: {i['parameters']:,} parameters, "
           f"{i['checkpoint_bytes'] / 1e6:,.1f} MB ({warm}). `{i['bundle_version']}`; Python "
           f"{', '.join(f'{k} {v}' for k, v in sorted(py['versions'].items()))}. {i['cores']} cores; "
           f"best of {i['repeat']} fresh processes each, alternating; memory the largest of the runs.",
           "",
           "| | wall | runs (s) | peak RSS of the process | peak during create | "
           "peak during create minus the state dict | create's own working memory |",
           "| --- | --- | --- | --- | --- | --- | --- |",
           f"| `bundle create --from CKPT` | {cli['seconds']:.3f} s | "
           f"{', '.join(f'{s:.2f}' for s in cli['seconds_all'])} | {M(cli['peak'])} | "
           f"{M(cli['peak'])} | {M(cli['peak'])} (no state dict) | |",
           f"| `ternary_bundle.create(out, state_dict)` | {py['create_seconds']:.3f} s | "
           f"{', '.join(f'{s:.2f}' for s in py['create_seconds_all'])} | {M(py['process_peak'])} | "
           f"{M(py['create_peak'])} | {M(py['create_peak_minus_state_dict'])} | "
           f"{M(py['create_peak_over_before'])} ({r['create_extra_over_state_dict']:.2f}x the "
           "state dict) |",
           "",
           f"Python / CLI wall time: {r['ratio_python_over_cli']:.2f}x. The state dict "
           f"(`safetensors.numpy.load_file`, untimed, {py['load_seconds']:.2f} s): {py['tensors']} "
           f"tensors, {M(py['state_dict_bytes'])} of data, {M(py['state_dict_rss'])} of RSS, over "
           f"{M(py['rss_imported'])} after the imports. The Python process's peak includes "
           "loading (safetensors holds the file's bytes and the arrays at once); 'peak during "
           "create' is VmHWM reset after loading, so it counts the state dict, the interpreter "
           "and numpy, and create; 'create's own working memory' is that peak over the RSS just "
           "before create.",
           "",
           "Bundles: " + "; ".join(f"{name} {what}" for name, what in c["files"].items()) + "."]
    if c["manifest_diff"]:
        out.append("manifest.json differs in: " + "; ".join(
            f"`{d['key']}` ({'legitimate' if d['legitimate'] else '**NOT EXPECTED**'}: CLI "
            f"{str(d['cli'])[:16]}, Python {str(d['python'])[:16]})" for d in c["manifest_diff"]) + ".")
    else:
        out.append("manifest.json: identical.")
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
