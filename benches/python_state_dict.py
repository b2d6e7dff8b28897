#!/usr/bin/env python3
"""A bundle's FP16 weights as a state dict in Python, next to safetensors' own loader of the
same file (issue 22, "Speed and memory"): wall time and memory of

    (a) ternary_bundle.open(B).state_dict("pt")             torch tensors over a copy-on-write map
    (b) safetensors.torch.load_file(B/fp16.safetensors)
    (c) ternary_bundle.open(B).state_dict("np")             read-only numpy views over a map
    (d) safetensors.numpy.load_file(B/fp16.safetensors)

each "before touching" (the call alone) and "after touching" (then reading every value of every
tensor: `float(t.float().sum())` in torch, `float(a.sum(dtype=np.float32))` in numpy; torch's
`.float()` makes an f32 temporary of one tensor at a time, numpy sums in f32 by blocks without
one).

    python3 benches/python_state_dict.py BUNDLE_DIR [--repeat N] [--json] [--python PY]

    cargo build --release --bin bundle && target/release/bundle create --demo --out /tmp/demo
    python3 benches/python_state_dict.py /tmp/demo
    python3 benches/python_state_dict.py /tmp/demo --python /tmp/torchvenv/bin/python --json

How: every measurement runs in a fresh process (`PY THIS_SCRIPT --child CASE BUNDLE_DIR`), so
memory and mappings start from nothing each time. Imports are done before the clock starts.
Nothing is dropped from the page cache: every case runs once untimed first (the warm-up
round), then --repeat rounds (default 3) of every case in turn, and before each timed run the
share of fp16.safetensors resident in the page cache is measured with mincore(2) and reported
(100% = a warm run; the file being read from disk would show here).

Figures per case: wall seconds of the call and of the touching (best of the rounds), and from
/proc/self/status: the growth of VmRSS (split into RssAnon, the process's own memory, and
RssFile, pages of a mapped file, shared with the page cache) after the call and after touching,
and the peak, VmHWM, over VmRSS before the call (VmHWM is reset just before the call by
writing 5 to /proc/self/clear_refs, so imports do not count). Memory is the largest over the
rounds; MB = 10^6 bytes. A framework not installed for PY (torch, say) is reported as "not
installed", loudly, on stderr and under the table, rather than failing; any other failure of a
case is an error (exit 1). All four must read the same bytes: in the warm-up round each
hashes (SHA-256) every tensor it loaded, after its measurements, and the digests must agree;
the timed sums of the two cases of one framework must agree too.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import struct
import subprocess
import sys
import time

from pagecache import resident_share

CASES = [
    ("bundle-pt", "ternary_bundle.open(B).state_dict(\"pt\")"),
    ("safetensors-pt", "safetensors.torch.load_file(fp16)"),
    ("bundle-np", "ternary_bundle.open(B).state_dict(\"np\")"),
    ("safetensors-np", "safetensors.numpy.load_file(fp16)"),
]
STATUS_KEYS = ("VmRSS", "VmHWM", "RssAnon", "RssFile")


def proc_status() -> dict:
    """VmRSS, VmHWM, RssAnon, RssFile of this process, in bytes."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in STATUS_KEYS:
                out[key] = int(value.split()[0]) * 1024
    return out


def reset_peak() -> bool:
    """Resets VmHWM to the current VmRSS (Linux >= 4.0); False where that is not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def safetensors_header(path: str):
    """(tensor count, bytes of tensor data) from a safetensors file's header."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return len(header), sum(t["data_offsets"][1] - t["data_offsets"][0] for t in header.values())


# --- the child: one measurement -------------------------------------------------------------


def child(case: str, bundle: str, digest: bool = False) -> dict:
    source, framework = case.rsplit("-", 1)
    fp16 = os.path.join(bundle, "fp16.safetensors")
    versions = {}
    try:
        import numpy as np
        versions["numpy"] = np.__version__
        if framework == "pt":
            import torch
            versions["torch"] = torch.__version__
        if source == "bundle":
            import ternary_bundle
            versions["ternary_bundle"] = ternary_bundle.__version__
            load = lambda: ternary_bundle.open(bundle).state_dict(framework)  # noqa: E731
        else:
            import safetensors
            versions["safetensors"] = safetensors.__version__
            if framework == "pt":
                import safetensors.torch
                load = lambda: safetensors.torch.load_file(fp16)  # noqa: E731
            else:
                import safetensors.numpy
                load = lambda: safetensors.numpy.load_file(fp16)  # noqa: E731
    except ImportError as e:
        return {"case": case, "status": "not installed", "missing": e.name or str(e)}
    if framework == "pt":
        touch = lambda t: float(t.float().sum())  # noqa: E731
    else:
        touch = lambda a: float(a.sum(dtype=np.float32))  # noqa: E731

    peak_reset = reset_peak()
    before = proc_status()
    t0 = time.perf_counter()
    state = load()
    t1 = time.perf_counter()
    loaded = proc_status()
    checksum = 0.0
    for value in state.values():
        checksum += touch(value)
    t2 = time.perf_counter()
    touched = proc_status()
    nbytes = sum(v.numel() * v.element_size() if framework == "pt" else v.nbytes
                 for v in state.values())

    def growth(after: dict) -> dict:
        return {"rss": after["VmRSS"] - before["VmRSS"],
                "anon": after["RssAnon"] - before["RssAnon"],
                "file": after["RssFile"] - before["RssFile"],
                "peak": after["VmHWM"] - before["VmRSS"]}

    out = {"case": case, "status": "ok", "versions": versions, "tensors": len(state),
           "bytes": nbytes, "checksum": checksum, "peak_reset": peak_reset,
           "rss_before": before["VmRSS"], "load_seconds": t1 - t0, "touch_seconds": t2 - t1,
           "load": growth(loaded), "touched": growth(touched)}
    if digest:  # after the measurements: SHA-256 of every tensor's bytes, in name order
        h = hashlib.sha256()
        for name in sorted(state):
            a = state[name].numpy() if framework == "pt" else state[name]
            h.update(name.encode() + b"\0")
            h.update(memoryview(np.ascontiguousarray(a)).cast("B"))
        out["digest"] = h.hexdigest()
    return out


# --- the parent: rounds of fresh processes, then the table --------------------------------


def run_child(python: str, case: str, bundle: str, digest: bool = False) -> dict:
    p = subprocess.run([python, os.path.abspath(__file__), "--child", case, bundle]
                       + (["--digest"] if digest else []),
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = p.stdout.strip().splitlines()
    if p.returncode != 0 or not lines:
        return {"case": case, "status": "failed",
                "error": f"exit {p.returncode}: " + " | ".join(p.stderr.strip().splitlines()[-5:])}
    return json.loads(lines[-1])


def mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


def summarize(case: str, runs: list, residency: list) -> dict:
    ok = [r for r in runs if r["status"] == "ok"]
    if not ok or len(ok) != len(runs):
        bad = next(r for r in runs if r["status"] != "ok")
        return {"case": case, **bad}
    worst = lambda phase, key: max(r[phase][key] for r in ok)  # noqa: E731
    return {
        "case": case, "status": "ok", "runs": len(ok), "tensors": ok[0]["tensors"],
        "bytes": ok[0]["bytes"], "checksum": ok[0]["checksum"],
        "checksums_agree": all(r["checksum"] == ok[0]["checksum"] for r in ok),
        "versions": ok[0]["versions"], "peak_reset": all(r["peak_reset"] for r in ok),
        "load_seconds": min(r["load_seconds"] for r in ok),
        "touch_seconds": min(r["touch_seconds"] for r in ok),
        "load_seconds_all": [round(r["load_seconds"], 4) for r in ok],
        "touch_seconds_all": [round(r["touch_seconds"], 4) for r in ok],
        "rss_before": max(r["rss_before"] for r in ok),
        "load": {k: worst("load", k) for k in ("rss", "anon", "file", "peak")},
        "touched": {k: worst("touched", k) for k in ("rss", "anon", "file", "peak")},
        "page_cache_resident_min": min(residency) if residency else None,
    }


def markdown(info: dict, results: list) -> str:
    out = [f"Bundle `{info['bundle']}`: fp16.safetensors {info['file_bytes'] / 1e6:,.1f} MB, "
           f"{info['tensors']} tensors ({info['data_bytes'] / 1e6:,.1f} MB of data). "
           f"Python {info['python_version']} (`{info['python']}`); {info['versions']}. "
           f"Fresh process per run, warm-up round untimed, best of {info['repeat']}; "
           "memory is growth over VmRSS before the call (MB), the largest of the rounds.",
           "",
           "| case | call | RSS after call (anon / file) | peak to then | touch every tensor | "
           "RSS after touching (anon / file) | peak to then | page cache |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in results:
        title = f"`{dict(CASES)[r['case']]}`"
        if r["status"] != "ok":
            what = (f"**NOT INSTALLED** ({r['missing']})" if r["status"] == "not installed"
                    else f"**FAILED**: {r['error']}")
            out.append(f"| {title} | {what} | | | | | | |")
            continue
        l, t = r["load"], r["touched"]
        res = r["page_cache_resident_min"]
        warm = "n/a" if res is None or res < 0 else (f"warm ({100 * res:.0f}%)" if res >= 0.999
                                                     else f"**{100 * res:.1f}% resident**")
        out.append(f"| {title} | {r['load_seconds']:.4f} s | +{mb(l['rss'])} ({mb(l['anon'])} / "
                   f"{mb(l['file'])}) | +{mb(l['peak'])} | {r['touch_seconds']:.4f} s | +{mb(t['rss'])} "
                   f"({mb(t['anon'])} / {mb(t['file'])}) | +{mb(t['peak'])} | {warm} |")
    return "\n".join(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bundle", help="a bundle directory (with fp16.safetensors)")
    p.add_argument("--repeat", type=int, default=3, help="timed rounds after the warm-up (default 3)")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.add_argument("--python", default=sys.executable,
                   help="the interpreter the measurements run in (default: this one)")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--digest", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.bundle, args.digest)))
        return 0
    if args.repeat < 1:
        p.error("--repeat must be at least 1")

    bundle = os.path.abspath(args.bundle)
    fp16 = os.path.join(bundle, "fp16.safetensors")
    if not os.path.isfile(fp16):
        p.error(f"{fp16}: no such file (is {args.bundle} a bundle?)")
    tensors, data_bytes = safetensors_header(fp16)
    print(f"fp16.safetensors: {os.path.getsize(fp16):,} bytes, {tensors} tensors", file=sys.stderr)

    print("warm-up round (untimed): " + ", ".join(c for c, _ in CASES), file=sys.stderr)
    warm = {c: run_child(args.python, c, bundle, digest=True) for c, _ in CASES}
    runs = {c: [] for c, _ in CASES}
    residency = {c: [] for c, _ in CASES}
    active = [c for c, _ in CASES if warm[c]["status"] != "not installed"]
    for i in range(args.repeat):
        print(f"round {i + 1}/{args.repeat}", file=sys.stderr)
        for c in active:
            residency[c].append(resident_share(fp16))
            runs[c].append(run_child(args.python, c, bundle))
    results = [summarize(c, runs[c], residency[c]) if c in active else warm[c] for c, _ in CASES]

    ok = [r for r in results if r["status"] == "ok"]
    versions = {}
    for r in ok:
        versions.update(r["versions"])
    python_version = subprocess.run([args.python, "-c", "import sys; print(sys.version.split()[0])"],
                                    stdout=subprocess.PIPE, text=True).stdout.strip()
    info = {"bundle": bundle, "file_bytes": os.path.getsize(fp16), "tensors": tensors,
            "data_bytes": data_bytes, "python": args.python, "python_version": python_version,
            "versions": ", ".join(f"{k} {v}" for k, v in sorted(versions.items())),
            "repeat": args.repeat, "cores": os.cpu_count()}

    problems = []
    for fw in ("pt", "np"):
        pair = [r for r in ok if r["case"].endswith(fw)]
        if len(pair) == 2 and pair[0]["checksum"] != pair[1]["checksum"]:
            problems.append(f"{fw}: the sums differ ({pair[0]['checksum']!r} vs {pair[1]['checksum']!r})")
    digests = {c: w["digest"] for c, w in warm.items() if w["status"] == "ok"}
    if len(set(digests.values())) > 1:
        problems.append(f"the loaders read different bytes: {digests}")
    for r in ok:
        r["digest"] = digests.get(r["case"])
        if r["tensors"] != tensors:
            problems.append(f"{r['case']}: {r['tensors']} tensors, the file has {tensors}")
        if not r["checksums_agree"]:
            problems.append(f"{r['case']}: the sums differ between rounds")
        if not r["peak_reset"]:
            problems.append(f"{r['case']}: VmHWM could not be reset; the peak includes the imports")
    missing = sorted({r["missing"] for r in results if r["status"] == "not installed"})
    failed = [r for r in results if r["status"] == "failed"]

    if args.json:
        print(json.dumps({"info": info, "results": results, "not_installed": missing,
                          "problems": problems}, indent=1))
    else:
        print(markdown(info, results))
        for name in missing:
            print(f"\n**{name} is not installed for `{args.python}`: its rows were not measured.**")
    for name in missing:
        cases = ", ".join(r["case"] for r in results if r.get("missing") == name)
        print(f"\n!!! WARNING: {name} is NOT INSTALLED for {args.python}: {cases} NOT MEASURED. "
              f"Install it, or pass --python an interpreter that has it. !!!", file=sys.stderr)
    for r in failed:
        print(f"\n!!! {r['case']} FAILED: {r['error']}", file=sys.stderr)
    for line in problems:
        print(f"\n!!! {line}", file=sys.stderr)
    return 1 if failed or problems else 0


if __name__ == "__main__":
    sys.exit(main())
