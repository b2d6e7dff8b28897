#!/usr/bin/env python3
"""An independent numpy reader of decoder bundles (format 3.x to 5.x, spec/FORMAT.md rules 2.13
and 2.14), written from the spec alone, to check what `bundle create` wrote and `bundle run` computed.

    python3 scripts/decoder_bundle_numpy.py check BUNDLE INPUT.safetensors RUN_FP16.safetensors RUN_TERNARY.safetensors
        BUNDLE: manifest.json, ternary.safetensors, fp16.safetensors; INPUT: input_ids I64 [N, T];
        RUN_*: the outputs of `bundle run BUNDLE --input INPUT --out RUN_* --path fp16|ternary`
        (logits F32 [N, T, V], predictions I64 [N, T]). Checks, one line each:
        1. format_version 3.x to 5.x with model.decoder, and `tensors` is exactly rule 2.14's table;
        2. every tensor of ternary.safetensors decoded by sections 5 and 6 (valid bytes, zero
           padding, scale shapes, zeros/scale_min/scale_max of rule 4.6, f16-representable scales
           and values of rules 4.5 and 4.7), and fp16.safetensors equal to f16(t * scale) /
           f16(value) bit for bit (section 8);
        3. the logits of both paths, recomputed by scripts/decoder_numpy.py's forward (section
           16.2), within 1e-4 of the largest |logit|, and predictions == argmax of the logits.
        Exits 1 at the first mismatch, naming the tensor and what was expected and found.
"""
import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decoder_numpy import forward  # noqa: E402

TRITS_PER_BYTE = {"trit5": 5, "trit2": 4}


class Mismatch(Exception):
    pass


def need(ok, msg):
    if not ok:
        raise Mismatch(msg)


def rule_2_14(dec):
    """Tensor name -> shape, the table of rule 2.14."""
    h, i, V = dec["hidden_size"], dec["intermediate_size"], dec["vocab_size"]
    q, kv = dec["num_attention_heads"] * dec["head_dim"], dec["num_key_value_heads"] * dec["head_dim"]
    out = {"model.embed_tokens.weight": [V, h], "model.norm.weight": [h]}
    for l in range(dec["num_hidden_layers"]):
        p = f"model.layers.{l}."
        out.update({p + "input_layernorm.weight": [h], p + "self_attn.q_proj.weight": [q, h],
                    p + "self_attn.k_proj.weight": [kv, h], p + "self_attn.v_proj.weight": [kv, h],
                    p + "self_attn.o_proj.weight": [h, q], p + "post_attention_layernorm.weight": [h],
                    p + "mlp.gate_proj.weight": [i, h], p + "mlp.up_proj.weight": [i, h],
                    p + "mlp.down_proj.weight": [h, i]})
        if dec["family"] == "bitnet":
            out.update({p + "self_attn.attn_sub_norm.weight": [h], p + "mlp.ffn_sub_norm.weight": [i]})
    if not dec["tie_word_embeddings"]:
        out["lm_head.weight"] = [V, h]
    return out


def unpack(name, packed, R, C, encoding):
    """Trits int8 [R, C] of a packed U8 [R, ceil(C / n)] array (section 5, rules 4.3 and 4.4)."""
    n = TRITS_PER_BYTE[encoding]
    need(packed.dtype == np.uint8 and packed.shape == (R, -(-C // n)),
         f"{name}: packed {packed.dtype} {list(packed.shape)}, expected uint8 {[R, -(-C // n)]} (rule 4.2)")
    b = packed.astype(np.int64)[:, :, None]
    if encoding == "trit5":
        bad = np.argwhere(packed > 242)
        digits = (b // 3 ** np.arange(5)) % 3
    else:
        digits = (b >> (2 * np.arange(4))) & 3
        bad = np.argwhere((digits == 3).any(-1))
    if len(bad):
        r, j = bad[0]
        raise Mismatch(f"{name}: row {r} byte {j} is {packed[r, j]}, not a valid {encoding} byte (rule 4.3)")
    digits = digits.reshape(R, -1)
    pad = np.argwhere(digits[:, C:] != 0)
    if len(pad):
        r, j = pad[0]
        raise Mismatch(f"{name}: row {r}: padding position {C + j} (column {C + j} of {C}) holds digit "
                       f"{digits[r, C + j]}, expected 0 (rule 4.4)")
    return (digits[:, :C] - 1).astype(np.int8)


def scales(name, s, R, C, q):
    """scale(r, c) as f32 [R, C] (section 6), after checking the scale tensor's shape."""
    gran, G = q["granularity"], q.get("group_size")
    want = {"tensor": (1,), "channel": (R,), "group": (R, -(-C // G) if G else 0)}[gran]
    need(s.dtype == np.float32 and s.shape == want,
         f"{name}.scale: {s.dtype} {list(s.shape)}, expected float32 {list(want)} ({gran}, rule 4.2)")
    need(bool(np.isfinite(s).all() and (s > 0).all()), f"{name}.scale: a scale is not finite and > 0 (rule 4.5)")
    if gran == "tensor":
        return np.full((R, C), s[0], np.float32)
    if gran == "channel":
        return np.repeat(s[:, None], C, axis=1)
    return np.repeat(s, G, axis=1)[:, :C]


def check(bundle, input_path, run_paths):
    d = Path(bundle)
    m = json.loads((d / "manifest.json").read_text(encoding="utf-8"))

    # 1. version, decoder and the tensor table of rule 2.14
    version, dec = m.get("format_version", ""), (m.get("model") or {}).get("decoder")
    # A decoder is 3.0; given trits, assets or provenance.original make it 4.0, and the original
    # model's distributions in the validation file 5.0 (section 13).
    need(isinstance(version, str) and version.split(".")[0] in ("3", "4", "5") and dec is not None,
         f"manifest: format_version {version!r}, model.decoder {'present' if dec else 'absent'}; "
         f"expected 3.x to 5.x with a decoder")
    family, q = dec["family"], m["quantization"]
    c = dict(dec, rope_parameters={"rope_theta": dec["rope_theta"]})
    c["rms_norm_eps"] = float(np.float32(dec["rms_norm_eps"]))  # an f32 value (section 3.2)
    want = rule_2_14(dec)
    entries = {e["name"]: e for e in m["tensors"]}
    need(len(entries) == len(m["tensors"]), "manifest: duplicate tensor names (rule 2.6)")
    got = {k: e["shape"] for k, e in entries.items()}
    for k in sorted(want.keys() | got.keys()):
        need(want.get(k) == got.get(k), f"manifest: tensor {k}: {'shape ' + str(got[k]) if k in got else 'missing'}, "
                                        f"rule 2.14 expects {'shape ' + str(want[k]) if k in want else 'no such tensor'}")
    nq = sum(e["quantized"] for e in entries.values())
    gran = q["granularity"] + (f" G={q['group_size']}" if q["granularity"] == "group" else "")
    print(f"ok   1. format {version}, {family} decoder, {len(entries)} tensors as rule 2.14 "
          f"({nq} quantized, {q['encoding']}, {gran})")

    # 2. every tensor read by sections 5, 6 and 8
    ter, f16 = load_file(str(d / "ternary.safetensors")), load_file(str(d / "fp16.safetensors"))
    want_ter = set(entries) | {k + ".scale" for k, e in entries.items() if e["quantized"]}
    need(set(ter) == want_ter,
         f"ternary.safetensors: tensors {sorted(set(ter) ^ want_ter)} missing or extra (rule 4.1)")
    need(set(f16) == set(entries),
         f"fp16.safetensors: tensors {sorted(set(f16) ^ set(entries))} missing or extra (rule 5.1)")
    dense = {}  # the ternary path: t * scale in f32, or the F32 value
    for name, e in sorted(entries.items()):
        shape = tuple(e["shape"])
        R, C = shape[0], int(np.prod(shape[1:], dtype=np.int64))  # section 1.3
        h = f16[name]
        need(h.dtype == np.float16 and h.shape == shape,
             f"fp16.safetensors: {name} {h.dtype} {list(h.shape)}, expected float16 {list(shape)} (rule 5.1)")
        if e["quantized"]:
            t = unpack(name, ter[name], R, C, q["encoding"])
            s = ter[name + ".scale"]
            sc = scales(name, s, R, C, q)
            zeros = int((t == 0).sum())
            need(zeros == e["zeros"], f"{name}: {zeros} zero trits, manifest zeros {e['zeros']} (rule 4.6)")
            need(np.float32(e["scale_min"]) == s.min() and np.float32(e["scale_max"]) == s.max(),
                 f"{name}: scales span [{float(s.min()):.9g}, {float(s.max()):.9g}], "
                 f"manifest [{e['scale_min']}, {e['scale_max']}] (rule 4.6)")
            value = t.astype(np.float32) * sc  # exact: 0, scale or -scale
            dense[name] = value.reshape(shape)
            rule = "5.2: f16(t * scale)"
        else:
            v = ter[name]
            need(v.dtype == np.float32 and v.shape == shape,
                 f"ternary.safetensors: {name} {v.dtype} {list(v.shape)}, expected float32 {list(shape)} (rule 4.2)")
            dense[name] = v
            value = v.reshape(R, C)
            rule = "5.3: f16(value)"
        with np.errstate(over="ignore"):
            half = value.astype(np.float16)  # numpy rounds f32 -> f16 to nearest, ties to even
        unfit = np.argwhere(~np.isfinite(half) | ((half == 0) & (value != 0) & e["quantized"]))
        if len(unfit):  # a scale of a non-zero trit (rule 4.5) or a value (rule 4.7) that f16 cannot hold
            r, col = unfit[0]
            raise Mismatch(f"{name} row {r} column {col}: {float(value[r, col]):.9g} becomes f16 {half[r, col]} "
                           f"(rule {'4.5' if e['quantized'] else '4.7'})")
        expect = half.view(np.uint16)
        found = h.reshape(R, C).view(np.uint16)
        diff = np.argwhere(expect != found)
        if len(diff):
            r, col = diff[0]
            what = (f"trit {t[r, col]}, scale {float(sc[r, col]):.9g}" if e["quantized"]
                    else f"value {float(value[r, col]):.9g}")
            raise Mismatch(f"fp16.safetensors: {name} row {r} column {col} ({what}): expected 0x{expect[r, col]:04x}, "
                           f"found 0x{found[r, col]:04x}; {len(diff)} element(s) differ (rule {rule})")
    print(f"ok   2. {len(entries)} tensors decoded from ternary.safetensors by sections 5 and 6; "
          f"fp16.safetensors equals f16(t * scale) / f16(value) bit for bit")

    # 3. both paths of `bundle run`
    ids = load_file(input_path).get("input_ids")
    need(ids is not None and ids.dtype == np.int64 and ids.ndim == 2, f"{input_path}: expected input_ids I64 [N, T]")
    need(bool(((ids >= 0) & (ids < dec["vocab_size"])).all()),
         f"{input_path}: an id outside 0 .. {dec['vocab_size'] - 1}")
    weights = {"fp16": {k: v.astype(np.float32) for k, v in f16.items()}, "ternary": dense}
    errs = {}
    for path, run in zip(("fp16", "ternary"), run_paths):
        out = load_file(run)
        ours = forward(c, family, weights[path], ids)
        theirs, pred = out.get("logits"), out.get("predictions")
        for key, a, dtype, shape in (("logits", theirs, np.float32, ours.shape),
                                     ("predictions", pred, np.int64, ids.shape)):
            need(a is not None and a.dtype == dtype and a.shape == shape,
                 f"{run}: {key} {'missing' if a is None else f'{a.dtype} {list(a.shape)}'}, "
                 f"expected {np.dtype(dtype)} {list(shape)}")
        dev = np.abs(ours - theirs)
        err = float(dev.max() / np.abs(ours).max())
        where = np.unravel_index(np.argmax(np.nan_to_num(dev, nan=np.inf)), dev.shape)
        need(err <= 1e-4, f"{run} ({path} path): logits{list(map(int, where))} = {float(theirs[where]):.8g}, "
                          f"numpy {float(ours[where]):.8g}: max |diff| {dev.max():.3g} is {err:.3g} "
                          f"of max |logit| {np.abs(ours).max():.4g} (> 1e-4)")
        bad = np.argwhere(pred != theirs.argmax(-1))
        if len(bad):
            at = tuple(bad[0])
            raise Mismatch(f"{run} ({path} path): predictions{list(map(int, at))} = {pred[at]}, "
                           f"argmax of its logits {theirs.argmax(-1)[at]}; {len(bad)} position(s) differ")
        errs[path] = err
        print(f"ok   3. {path} path: logits {list(ours.shape)} within {err:.1e} of the largest |logit| of numpy's; "
              f"predictions are their argmax")
    print(f"decoder bundle {d.name}: {len(entries)} tensors read by the spec, fp16 exact, "
          f"logits fp16 max rel diff {errs['fp16']:.1e}, ternary {errs['ternary']:.1e}")


def main():
    if len(sys.argv) != 6 or sys.argv[1] != "check":
        print(__doc__, file=sys.stderr)
        return 2
    try:
        check(sys.argv[2], sys.argv[3], sys.argv[4:6])
    except Mismatch as e:
        print(f"FAIL {e}")
        return 1
    except KeyError as e:
        print(f"FAIL missing key or tensor {e}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
