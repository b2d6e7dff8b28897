#!/usr/bin/env python3
"""By-hand checks of format 4.0's conversions with transformers and torch on the CPU (too heavy
for CI, which runs the numpy oracle scripts/conversions_numpy.py instead). Needs torch,
transformers (5.x), accelerate, safetensors and numpy.

    transformers_check.py packed PACKED_DIR BUNDLE
        transformers loads a Hugging Face packed BitNet directory; its unpacked trits equal the
        bundle's, and its effective weights (autobitlinear: t x weight_scale; bitlinear:
        t / weight_scale) equal the bundle's t x scale (exactly, or within one f32 rounding)
    transformers_check.py online MASTER_DIR BUNDLE
        transformers' own WeightQuant ternarizes each projection of a master directory with
        online quantization to the bundle's trits, tensor by tensor; its forward pass (ActQuant
        and WeightQuant) agrees with the bundle's stored original_predictions on
        MASTER_DIR/data.safetensors
    transformers_check.py hf EXPORT_DIR BUNDLE IDS.safetensors RUN.safetensors
        AutoModelForCausalLM.from_pretrained loads `bundle export --format hf` with no missing,
        unexpected or mismatched keys, and its logits equal `bundle run --path fp16`'s
        (RUN.safetensors, on IDS.safetensors) within 1e-4 of the largest |logit|;
        AutoTokenizer loads the carried tokenizer when there is one
    transformers_check.py bitnet EXPORT_DIR BUNDLE
        transformers loads `bundle export --format hf-bitnet` in float16, and every
        AutoBitLinear's unpacked weight x weight_scale is the bundle's FP16 weight bit for bit
"""
import json
import sys

import numpy as np
import torch
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.integrations.bitnet import AutoBitLinear, BitLinear, WeightQuant, unpack_weights


def bundle_trits(bundle):
    """{name: (trits [R, C] int8, scale f32)} of a per-tensor bundle, decoded from the spec."""
    m = json.load(open(f"{bundle}/manifest.json"))
    tern = load_file(f"{bundle}/ternary.safetensors")
    q = m["quantization"]
    assert q["granularity"] == "tensor", q["granularity"]
    out = {}
    for t in m["tensors"]:
        if not t["quantized"]:
            continue
        rows, cols = t["shape"][0], int(np.prod(t["shape"][1:]))
        packed = tern[t["name"]].astype(np.int64)
        if q["encoding"] == "trit5":
            digits = np.stack([(packed // 3**i) % 3 for i in range(5)], -1)
        else:
            digits = np.stack([(packed >> (2 * i)) & 3 for i in range(4)], -1)
        trits = digits.reshape(rows, -1)[:, :cols].astype(np.int8) - 1
        out[t["name"]] = (trits, np.float32(tern[t["name"] + ".scale"][0]))
    return out


def packed(d, bundle):
    ours = bundle_trits(bundle)
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    n = 0
    for name, mod in model.named_modules():
        if not isinstance(mod, (AutoBitLinear, BitLinear)):
            continue
        trits, s = ours[name + ".weight"]
        ws = np.float32(mod.weight_scale.item())
        if isinstance(mod, AutoBitLinear):  # unpacked at load; the output is multiplied
            w = mod.weight.detach().numpy()
            assert np.array_equal(w.astype(np.int8), trits), name
            assert np.array_equal((w * ws).astype(np.float32), trits.astype(np.float32) * s), name
        else:  # packed buffer; the output is divided
            w = unpack_weights(mod.weight, dtype=torch.float32).numpy()
            assert np.array_equal(w.astype(np.int8), trits), name
            theirs, mine = (w / ws).astype(np.float32), trits.astype(np.float32) * s
            assert np.max(np.abs(theirs - mine)) <= np.abs(mine).max() * 2**-23, name
        n += 1
    print(f"ok   {d}: {n} converted modules; transformers' trits == the bundle's, effective weights equal")


def online(d, bundle):
    ours = bundle_trits(bundle)
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    n, worst = 0, 0.0
    for name, mod in model.named_modules():
        if not isinstance(mod, AutoBitLinear):
            continue
        trits, s = ours[name + ".weight"]
        w = mod.weight.detach().float()
        scale = 1.0 / w.abs().mean().clamp_(min=1e-5)
        assert np.array_equal((w * scale).round().clamp(-1, 1).numpy().astype(np.int8), trits), name
        wq = WeightQuant.apply(mod.weight).detach().numpy()
        worst = max(worst, float(np.max(np.abs(wq - trits.astype(np.float32) * s)) / float(s)))
        n += 1
    print(f"ok   {d}: transformers' WeightQuant gives the bundle's trits in all {n} projections; "
          f"its weights t / s differ from t x gamma by at most {worst:.2e} of the scale")
    ids = load_file(f"{d}/data.safetensors")["input_ids"]
    stored = load_file(f"{bundle}/validation.safetensors")["original_predictions"]
    with torch.no_grad():
        predicted = model(torch.from_numpy(ids)).logits.numpy()[:, :-1].argmax(-1)
    agree = (predicted == stored).mean()
    print(f"ok   transformers' online forward pass agrees with the stored original_predictions on "
          f"{agree * 100:.2f}% of {predicted.size} positions")


def hf(d, bundle, ids_file, run_file):
    model, info = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    ids = load_file(ids_file)["input_ids"]
    with torch.no_grad():
        logits = model(torch.from_numpy(ids)).logits.numpy()
    ours = load_file(run_file)["logits"]
    err = float(np.abs(logits - ours).max() / np.abs(ours).max())
    assert err < 1e-4, err
    print(f"ok   {d}: from_pretrained loads with no missing, unexpected or mismatched keys; "
          f"logits within {err:.2e} of the largest |logit| of bundle run --path fp16")
    m = json.load(open(f"{bundle}/manifest.json"))
    if any(a["name"] == "tokenizer.json" for a in (m["files"].get("assets") or [])):
        tok = AutoTokenizer.from_pretrained(d)
        print(f"ok   AutoTokenizer.from_pretrained: {len(tok)} tokens")


def bitnet(d, bundle):
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float16)
    fp16 = load_file(f"{bundle}/fp16.safetensors")
    n = 0
    for name, mod in model.named_modules():
        if isinstance(mod, AutoBitLinear):
            w = (mod.weight.detach() * mod.weight_scale.detach()).numpy().astype(np.float16)
            assert np.array_equal(w.view(np.uint16), fp16[name + ".weight"].view(np.uint16)), name
            n += 1
    print(f"ok   {d}: loaded in float16; {n} AutoBitLinear modules: unpacked x weight_scale == "
          f"the bundle's FP16 weights bit for bit")


if __name__ == "__main__":
    commands = {"packed": packed, "online": online, "hf": hf, "bitnet": bitnet}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](*sys.argv[2:])
