#!/usr/bin/env python3
"""By-hand check with PyTorch (not run in CI: torch with its CUDA wheels is several GB).

    python3 scripts/torch_retention.py [BUNDLE_BINARY]     (default target/release/bundle)

Trains a small MLP with PyTorch (torch.nn.Sequential(Linear, ReLU, Linear), Adam, cross-entropy)
on a 10-class Gaussian-cloud task, saves it with safetensors.torch as a user would, runs
`bundle create --validation` and `bundle verify --json`, then recomputes in PyTorch:
  * the original model's argmax on the validation inputs: must equal the bundle's stored
    original_predictions (up to near-ties, spec section 16.1);
  * the FP16 model loaded from fp16.safetensors into the same nn.Sequential (the handoff's
    next stage does exactly this): its argmax agreement with the original must equal verify's
    phase4_to_5/dequantization_accuracy_retention, and its label accuracy accuracy_fp16;
  * the retention gate: verify must exit 1 below --min-retention (0.995 by default) and 0 at a
    bar it meets (0.9, and the measured retention).
Prints the figures and exits non-zero on any difference.
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

BUNDLE = sys.argv[1] if len(sys.argv) > 1 else "target/release/bundle"
torch.manual_seed(0)
CLASSES, DIM, HIDDEN = 10, 32, 64


def data(n, centres, spread):
    y = torch.randint(0, CLASSES, (n,))
    return centres[y] + spread * torch.randn(n, DIM), y


def model():
    return torch.nn.Sequential(torch.nn.Linear(DIM, HIDDEN), torch.nn.ReLU(), torch.nn.Linear(HIDDEN, CLASSES))


def main():
    centres = torch.randn(CLASSES, DIM) * 0.55
    x, y = data(2000, centres, 0.75)
    vx, vy = data(400, centres, 0.75)
    net = model()
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    with torch.no_grad():
        orig = net(vx).argmax(1)
    work = Path(tempfile.mkdtemp())
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(work / "model.safetensors"))
    save_file({"inputs": vx.contiguous(), "labels": vy.to(torch.int64)}, str(work / "validation.safetensors"))
    subprocess.run([BUNDLE, "create", "--from", str(work / "model.safetensors"), "--validation",
                    str(work / "validation.safetensors"), "--out", str(work / "b")], check=True,
                   stdout=subprocess.DEVNULL)

    stored = load_file(str(work / "b" / "validation.safetensors"))["original_predictions"]
    with torch.no_grad():
        logits = net(vx)
        top2 = logits.topk(2, 1).values
        tie = (top2[:, 0] - top2[:, 1]) <= 1e-4 * logits.abs().max(1).values
    differ = ((stored != orig) & ~tie).sum().item()

    fp16 = model()
    fp16.load_state_dict({k: v.float() for k, v in load_file(str(work / "b" / "fp16.safetensors")).items()})
    with torch.no_grad():
        pf = fp16(vx).argmax(1)
    n = len(vy)  # shares as counts / n in Python floats (f64), as verify computes them
    retention = (pf == orig).sum().item() / n
    acc_orig = (orig == vy).sum().item() / n
    acc_fp16 = (pf == vy).sum().item() / n

    def verify(*extra):
        out = subprocess.run([BUNDLE, "verify", str(work / "b"), "--json", *extra], capture_output=True, text=True)
        return out.returncode, json.loads(out.stdout)

    code, report = verify()
    m = report["metrics"]
    print(f"torch: original accuracy {acc_orig:.4f}, FP16 accuracy {acc_fp16:.4f}, retention {retention:.4f}; "
          f"stored predictions differing beyond near-ties: {differ}")
    print(f"bundle verify: retention {m['phase4_to_5/dequantization_accuracy_retention']}, accuracy original "
          f"{m['accuracy_original']}, FP16 {m['accuracy_fp16']}, exit {code}")
    problems = []
    if differ:
        problems.append(f"{differ} stored original predictions differ from torch's argmax")
    if abs(m["phase4_to_5/dequantization_accuracy_retention"] - retention) > tie.sum().item() / n + 1e-12:
        problems.append("retention differs from torch's")
    if abs(m["accuracy_fp16"] - acc_fp16) > 1e-12 or abs(m["accuracy_original"] - acc_orig) > 1e-12:
        problems.append("accuracies differ from torch's")
    if (code == 0) != (retention >= 0.995):
        problems.append(f"exit {code} with retention {retention} at the default 0.995 gate")
    for bar in (retention, 0.9):
        lenient, _ = verify("--min-retention", str(bar))
        if (lenient == 0) != (retention >= bar):
            problems.append(f"exit {lenient} with --min-retention {bar} and retention {retention}")
    for p in problems:
        print("FAIL:", p)
    print("OK" if not problems else "FAILED")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
