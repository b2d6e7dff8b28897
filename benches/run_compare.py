#!/usr/bin/env python3
"""`bundle run --path fp16` side by side with transformers on the CPU (not in CI: it needs
torch and transformers, several GB, and a model of billions of parameters).

    python3 benches/run_compare.py BUNDLE HF_DIR [--n 8] [--t 128] [--repeats 3]
        [--python PYTHON] [--bundle-bin target/release/bundle] [--work DIR]

BUNDLE is a decoder bundle (e.g. `bundle create --from` the directory of
benches/make_decoder_checkpoint.py) and HF_DIR the same weights as transformers loads them:
`bundle export BUNDLE --format hf --dtype f16 --out HF_DIR` (the bundle's FP16 weights, so that
both sides compute the same function and their logits can be compared). PYTHON is an
interpreter with torch and transformers (default: this one).

Both run on the same N sequences of T token ids (seeded), from a warm page cache (every file
of both is read once before the first run), each in a fresh process, `repeats` times:
  - bundle: `bundle run BUNDLE --input ids --out logits --path fp16` under /usr/bin/time -v:
    its whole wall time (the bundle's checks, the forward pass, writing the logits to disk) and
    peak RSS;
  - transformers: `AutoModelForCausalLM.from_pretrained(HF_DIR, torch_dtype=torch.float32)`,
    `torch.set_num_threads(2)`, one forward pass under `torch.no_grad()`: the time from
    before from_pretrained to the logits in memory (import of torch not counted), and the peak
    RSS of its process (/usr/bin/time -v).
Printed: the median of each and the ratios, and the largest |bundle - transformers| logit
difference over the largest |logit| (both from the last run), which must be within 1e-4.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

TRANSFORMERS_RUN = r"""
import sys, time
import numpy as np
import torch
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM
torch.set_num_threads(int(sys.argv[4]))
ids = torch.from_numpy(load_file(sys.argv[2])["input_ids"])
t0 = time.perf_counter()
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], torch_dtype=torch.float32)
model.eval()
t1 = time.perf_counter()
with torch.no_grad():
    logits = model(input_ids=ids).logits
t2 = time.perf_counter()
np.save(sys.argv[3], logits.float().numpy())
print(f"TIMES {t1 - t0} {t2 - t1}")
"""


def timed(cmd):
    """Runs `cmd` under /usr/bin/time -v; returns (wall seconds, peak RSS bytes, stdout)."""
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", r.stderr).group(1)
    seconds = 0.0
    for part in wall.split(":"):
        seconds = seconds * 60 + float(part)
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1)) * 1024
    return seconds, rss, r.stdout


def warm(*dirs):
    """Reads every file under `dirs` once, so both sides start from a warm page cache."""
    for d in dirs:
        for p in sorted(Path(d).rglob("*")):
            if p.is_file():
                with open(p, "rb") as f:
                    while f.read(1 << 24):
                        pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("bundle")
    ap.add_argument("hf_dir")
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--t", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--bundle-bin", default=str(Path(__file__).resolve().parent.parent / "target/release/bundle"))
    ap.add_argument("--work", default=None)
    a = ap.parse_args()

    work = Path(a.work or tempfile.mkdtemp(prefix="run-compare-"))
    work.mkdir(parents=True, exist_ok=True)
    vocab = json.load(open(Path(a.hf_dir) / "config.json"))["vocab_size"]
    ids = np.random.default_rng(0).integers(0, vocab, (a.n, a.t), dtype=np.int64)
    ids_path = work / "ids.safetensors"
    save_file({"input_ids": ids}, str(ids_path))
    script = work / "transformers_run.py"
    script.write_text(TRANSFORMERS_RUN)
    warm(a.bundle, a.hf_dir)

    ours, theirs = [], []
    for i in range(a.repeats):
        out = work / "bundle-logits.safetensors"
        out.unlink(missing_ok=True)
        wall, rss, _ = timed([a.bundle_bin, "run", a.bundle, "--input", str(ids_path), "--out", str(out),
                              "--path", "fp16", "--threads", str(a.threads)])
        ours.append((wall, rss))
        print(f"bundle run       #{i + 1}: {wall:7.2f} s  {rss / 1e9:6.2f} GB peak RSS", flush=True)
        npy = work / "transformers-logits.npy"
        wall_t, rss_t, stdout = timed([a.python, str(script), a.hf_dir, str(ids_path), str(npy), str(a.threads)])
        load, forward = map(float, re.search(r"TIMES (\S+) (\S+)", stdout).groups())
        theirs.append((load + forward, rss_t, load, forward, wall_t))
        print(f"transformers     #{i + 1}: {load + forward:7.2f} s  {rss_t / 1e9:6.2f} GB peak RSS "
              f"(load {load:.2f} s, forward {forward:.2f} s; process {wall_t:.2f} s)", flush=True)

    b_logits = load_file(str(work / "bundle-logits.safetensors"))["logits"]
    t_logits = np.load(work / "transformers-logits.npy")
    assert b_logits.shape == t_logits.shape, (b_logits.shape, t_logits.shape)
    scale = float(np.abs(t_logits).max())
    diff = float(np.abs(b_logits.astype(np.float64) - t_logits.astype(np.float64)).max())
    agree = float((b_logits.argmax(-1) == t_logits.argmax(-1)).mean())

    med = lambda xs: statistics.median(xs)
    ob_wall, ob_rss = med([w for w, _ in ours]), med([r for _, r in ours])
    th_wall, th_rss = med([w for w, *_ in theirs]), med([r for _, r, *_ in theirs])
    print(f"\n{a.n} sequences of {a.t} tokens, {a.threads} threads, median of {a.repeats}:")
    print(f"  bundle run --path fp16 : {ob_wall:7.2f} s  {ob_rss / 1e9:6.2f} GB")
    print(f"  transformers (float32) : {th_wall:7.2f} s  {th_rss / 1e9:6.2f} GB "
          f"(load {med([x[2] for x in theirs]):.2f} s, forward {med([x[3] for x in theirs]):.2f} s)")
    print(f"  speed-up {th_wall / ob_wall:.2f}x, RSS {ob_rss / th_rss:.2f}x of transformers'")
    print(f"  logits: max |difference| {diff:.3e} = {diff / scale:.2e} of the largest |logit| {scale:.3e}; "
          f"argmax agreement {agree:.4f}")
    if diff > 1e-4 * scale:
        sys.exit("the logits differ by more than 1e-4 of the largest |logit|")


if __name__ == "__main__":
    main()
