"""The package with PyTorch: state_dict("pt") equals what safetensors.torch reads, bit for bit,
without a copy of the file; a torch state dict with bf16 tensors creates the same bundle as
`bundle create` from the same checkpoint, byte for byte; the FP16 weights load into the module
they came from and gradients flow.

torch is heavy (several GB with its GPU wheels), so CI does not install it and these tests skip
there (issue 22); they are run by hand in an environment with torch (docs/PERFORMANCE.md and
the issue note say where and when).
"""
import gc
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from safetensors.torch import load_file as torch_load_file  # noqa: E402
from safetensors.torch import save_file as torch_save_file  # noqa: E402

import ternary_bundle as tb  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("BUNDLE_BIN", str(ROOT / "target" / "release" / "bundle"))
BUNDLES = sorted(p for p in (ROOT / "fixtures" / "bundles").iterdir()
                 if (p / "manifest.json").exists())


@pytest.mark.parametrize("path", BUNDLES, ids=lambda p: p.name)
def test_pt_state_dict_equals_safetensors_torch(path):
    b = tb.open(path)
    sd = b.state_dict("pt")
    ref = torch_load_file(str(path / "fp16.safetensors"))
    assert sorted(sd) == sorted(ref)
    for name, t in sd.items():
        assert t.dtype == ref[name].dtype == torch.float16, name
        assert t.shape == ref[name].shape, name
        assert torch.equal(t.view(torch.int16), ref[name].view(torch.int16)), name


def test_pt_tensors_are_private_writable_and_outlive_the_bundle(tmp_path):
    path = BUNDLES[0]
    before = (path / "fp16.safetensors").read_bytes()
    b = tb.open(path)
    sd = b.state_dict("pt")
    name = next(n for n, t in sd.items() if t.numel())
    expected = sd[name].clone()
    del b
    gc.collect()
    assert torch.equal(sd[name], expected)
    sd[name].fill_(3.0)  # writable: a copy-on-write page, never the file
    assert (sd[name] == 3.0).all()
    assert (path / "fp16.safetensors").read_bytes() == before
    assert torch.equal(tb.open(path).state_dict("pt")[name], expected)


def _model(dtype):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 24), torch.nn.ReLU(), torch.nn.Linear(24, 10))
    return torch.nn.ModuleDict({"net": net}).to(dtype)


def test_create_from_a_bf16_torch_state_dict_equals_bundle_create(tmp_path):
    # A module in bfloat16, its state_dict() as it is: the same bundle as `bundle create` from
    # safetensors.torch.save_file of the same state dict.
    sd = _model(torch.bfloat16).state_dict()
    assert any(t.dtype == torch.bfloat16 for t in sd.values())
    ckpt = tmp_path / "model.safetensors"
    torch_save_file(sd, str(ckpt))
    cli = tmp_path / "cli"
    subprocess.run([BIN, "create", "--from", str(ckpt), "--out", str(cli)], check=True,
                   stdout=subprocess.DEVNULL)
    out = tmp_path / "py"
    tb.create(out, sd)
    for f in ("ternary.safetensors", "fp16.safetensors"):
        assert (out / f).read_bytes() == (cli / f).read_bytes(), f
    # A parameter that requires grad and a tensor on another device: the first is read as is,
    # the second refused with a TypeError naming it.
    params = dict(_model(torch.float32).named_parameters())
    tb.create(tmp_path / "params", params, force=True)
    meta = torch.empty((2, 2), device="meta")
    with pytest.raises(TypeError, match="x"):
        tb.create(tmp_path / "meta", {"x": meta})


def test_fp16_weights_load_strictly_and_gradients_flow(tmp_path):
    model = _model(torch.float32)
    x = torch.randn(32, 16)
    y = model["net"](x).argmax(1)
    out = tmp_path / "b"
    tb.create(out, model.state_dict(), validation={"inputs": x, "labels": y})
    receiver = _model(torch.float16).float()
    receiver.load_state_dict({k: v.float() for k, v in tb.open(out).state_dict("pt").items()},
                             strict=True)
    loss = torch.nn.functional.cross_entropy(receiver["net"](x), y)
    loss.backward()
    for name, p in receiver.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert np.isfinite(loss.item())


def test_unaligned_data_is_copied_for_torch(tmp_path):
    # Data at odd offsets (valid, spec section 3): torch cannot view it, so it gets a copy of the
    # same values, never a misread.
    from test_bundle import unaligned_copy
    src = BUNDLES[0]
    unaligned_copy(src, tmp_path / "odd")
    got, want = tb.open(tmp_path / "odd").state_dict("pt"), torch_load_file(str(src / "fp16.safetensors"))
    assert sorted(got) == sorted(want)
    for name, t in got.items():
        assert torch.equal(t.view(torch.int16), want[name].view(torch.int16)), name
