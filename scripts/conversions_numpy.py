#!/usr/bin/env python3
"""An independent numpy implementation of the conversions of spec/FORMAT.md section 18 (format
4.0), written from the spec text alone, to check what `bundle create` reads and `bundle export`
writes. Generators write the sources as their producers publish them; checkers decode bundles
and exports by the spec (sections 5, 6, 8) and compare them with those sources.

    python3 scripts/conversions_numpy.py make-stage DIR [--decoder [--family llama|bitnet] | --group-size G] [--seed S]
        the quantizing stage's handoff (18.1): trits as I8 and quantization_metadata.json with
        mixed scale forms (a list of R numbers, a number, a one-element list; with --group-size,
        chain only, net.2's scales as R lists of ceil(C / G)), zero points 0. Chain (default):
        DIR/trits.safetensors (net.{0,2,4}.weight I8, .bias F32; ReLU chain 16 -> 24 -> 20 -> 10),
        DIR/original.safetensors (latent weights near t * s) and DIR/validation.safetensors
        (inputs F32 [64, 16], labels I64 = the ternary model's argmax, inputs chosen where the
        ternary, FP16 and original models agree with a margin). --decoder: a transformers model
        directory (config.json, model.safetensors: the 7 projections of every layer I8, the rest
        F32) quantized by absmean from latent weights in DIR/original/, and DIR/data.safetensors
        (input_ids I64 [100, 16], difficulty U8)
    python3 scripts/conversions_numpy.py make-packed DIR --linear-class autobitlinear|bitlinear [--dtype bf16|f32]
            [--tied] [--not-convert ENTRY]... [--seed S]
        a Hugging Face packed BitNet directory (18.2): every converted projection U8 [out/4, in]
        as transformers' pack_weights and weight_scale [1] (gamma for autobitlinear, 1 / gamma for
        bitlinear) in --dtype, like every other tensor; config.json as Microsoft publishes it
        (no head_dim, top-level rope_theta); --not-convert adds modules_to_not_convert entries
        (then "lm_head" is listed too) whose projections stay float. DIR/expected.safetensors
        holds what the bundle must hold: NAME I8 trits and NAME.scale F32 [1] per converted
        projection, NAME F32 for every other tensor; DIR/ids.safetensors input_ids I64 [100, 16]
    python3 scripts/conversions_numpy.py make-online DIR [--tied] [--seed S] [--layer-scale F]
        BitNet BF16 master weights with quantization_mode "online" (18.3), o_proj and down_proj
        F x decoder_numpy's task weights (default 5: the bitnet-online original model differs from
        the dense master at ~5 % of the positions; 15: its 8-bit activations also decide about 1 %
        of them); DIR/data.safetensors (input_ids I64 [100, 16], difficulty)
    python3 scripts/conversions_numpy.py make-tokenizer OUT_DIR TEXT_FILE
        a byte-for-byte deterministic BPE tokenizer.json (vocabulary <= 50: <unk> <s> </s>, the
        30 commonest characters, then merges chosen by count, ties by the pair's order; the
        `tokenizers` trainer is not deterministic; Whitespace pre-tokenizer; <s> prepended when
        special tokens are added), tokenizer_config.json, generation_config.json (bos 1, eos 2)
    python3 scripts/conversions_numpy.py check-bundle BUNDLE --expect SOURCE --kind stage|packed|online
        every kind: format 4.0 (5.0 when the validation file holds the original model's
        distributions, section 9.1); every tensor decoded by sections 5 and 6 (valid bytes, zero
        padding, scale shapes, rule 4.6's zeros/scale_min/scale_max) and fp16.safetensors ==
        f16(t * scale) / f16(value) bit for bit (rules 5.2, 5.3). stage (SOURCE the DIR of make-stage,
        or the trits file): method "given", epsilon and sparsity_threshold null, source
        {quantization-metadata, scales, multiply, details}, granularity the finest given; per tensor
        the given trits and scale(r, c) == the given scale repeated (7.1), other tensors' F32 values
        bit for bit; the validation inputs and, when stored, original_predictions == numpy's dense
        original model (near-ties of section 16.1 allowed). packed (SOURCE the make-packed DIR):
        source {hf-bitnet, weight_scale, multiply for autobitlinear / divide for bitlinear},
        granularity tensor, trits and scales == expected.safetensors bit for bit. online (SOURCE the
        master DIR): absmean, tensor, epsilon 1e-5, threshold 0.5; trits == transformers'
        WeightQuant in f32, scale == its f32 gamma; provenance.original.forward "bitnet-online" and,
        when stored, original_predictions == numpy's bitnet-online forward (8-bit activations per
        token); with --act-quant-decides, the same forward without the 8-bit activations must
        predict otherwise at some position, so that the check tells whether the original ran them
    python3 scripts/conversions_numpy.py check-export-hf EXPORT_DIR BUNDLE [--dtype f16|bf16|f32]
            [--max-position-embeddings N]
        18.4: config.json from model.decoder (architectures, model_type, sizes, hidden_act,
        rope_theta and rms_norm_eps as f32, tie_word_embeddings, attention_bias and mlp_bias false,
        max_position_embeddings, bos/eos/pad ids of a carried generation_config.json else null,
        torch_dtype; no quantization_config), model.safetensors or shards
        with a complete index (total_size, weight_map, names model-0000k-of-0000N), each file with
        __metadata__ {"format": "pt"}; every tensor the bytes of fp16.safetensors (f16),
        f32(t * scale) / the F32 value (f32), or their bf16 rounding to nearest even (bf16); the
        bundle's asset files byte-identical
    python3 scripts/conversions_numpy.py check-export-bitnet EXPORT_DIR BUNDLE [--max-position-embeddings N]
        18.2 writing: config.json as for check-export-hf but with quantization_config autobitlinear offline, modules_to_not_convert matching
        lm_head and exactly the projections the bundle does not quantize, torch_dtype float16;
        each projection unpacked by numpy == the bundle's trits, weight_scale F32 [1] == its scale,
        t * f16(weight_scale) in float16 == fp16.safetensors bit for bit; other tensors F32 ==
        ternary.safetensors; assets byte-identical
    python3 scripts/conversions_numpy.py check-tokens BUNDLE TEXT_FILE SEQ_LEN
        18.5: BUNDLE/tokenizer.json (a listed asset) encodes the UTF-8 text without special
        tokens; validation input_ids == the ids cut into floor(n / T) rows of T, labels the next ids

Every check prints one "ok" line per thing checked and exits 1 at the first mismatch, naming the
file and tensor.
"""
import argparse
import hashlib
import json
import sys
from collections import Counter
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import numpy as np
from safetensors import TensorSpec, serialize_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decoder_numpy import PROJECTIONS, SHAPE, forward, task_data, task_weights  # noqa: E402

NP = {"BOOL": "?", "U8": "u1", "I8": "i1", "U16": "<u2", "I16": "<i2", "U32": "<u4", "I32": "<i4",
      "U64": "<u8", "I64": "<i8", "F16": "<f2", "BF16": "<u2", "F32": "<f4", "F64": "<f8"}
TORCH = {"U8": "uint8", "I8": "int8", "I64": "int64", "F16": "float16", "BF16": "bfloat16", "F32": "float32"}
ARCH = {"llama": "LlamaForCausalLM", "bitnet": "BitNetForCausalLM"}
ACT = {"llama": "silu", "bitnet": "relu2"}
SPECIALS = ["<unk>", "<s>", "</s>"]


class Mismatch(Exception):
    pass


def need(cond, msg):
    if not cond:
        raise Mismatch(msg)


def ok(msg):
    print(f"ok   {msg}")


# ---------------------------------------------------------------- files and numbers

# The original model's distributions in the validation file (format 5.0, rule 6.1): full or top K.
DISTRIBUTIONS = {"original_log_probs", "original_top_ids", "original_top_log_probs", "original_log_sum_exp",
                 "original_label_log_probs"}


def read_st(path):
    """(name -> (dtype, array), __metadata__) of a safetensors file parsed by section 4; BF16
    arrays are their uint16 bits."""
    b = Path(path).read_bytes()
    n = int.from_bytes(b[:8], "little")
    head = json.loads(b[8:8 + n])
    meta, out = head.pop("__metadata__", None), {}
    for name, e in head.items():
        s, t = e["data_offsets"]
        dt = np.dtype(NP[e["dtype"]])
        out[name] = (e["dtype"], np.frombuffer(b, dt, (t - s) // dt.itemsize, 8 + n + s).reshape(e["shape"]))
    return out, meta


def write_st(path, tensors, metadata=None):
    """name -> (dtype, array) through the Python safetensors package (BF16 as uint16 bits)."""
    arrays = {n: np.ascontiguousarray(a) for n, (_, a) in tensors.items()}
    specs = {n: TensorSpec(dtype=TORCH[d], shape=list(a.shape), data_ptr=arrays[n].ctypes.data,
                           data_len=arrays[n].nbytes) for n, (d, a) in tensors.items()}
    serialize_file(specs, str(path), metadata=metadata)


def bf16_bits(x):
    """f32 -> bfloat16 bits, round to nearest even (finite values)."""
    b = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)


def f32_of(dtype, a, what):
    """The exact f32 values of a float tensor (rule 8.2)."""
    if dtype == "BF16":
        return (a.astype(np.uint32) << 16).view(np.float32)
    need(dtype in ("F32", "F16"), f"{what}: dtype {dtype}, expected F32, F16 or BF16")
    return a.astype(np.float32)


def in_dtype(x, dtype):
    return (dtype, bf16_bits(x) if dtype == "BF16" else np.asarray(x, np.float32))


def f32_decimal(x):
    """The f32 nearest to a JSON number's exact decimal value, ties to even (section 3.2; no
    double rounding through f64). x: int, Decimal or float."""
    exact = Fraction(x)
    c = np.float32(float(exact))
    near = [np.nextafter(c, np.float32(-np.inf)), c, np.nextafter(c, np.float32(np.inf))]
    return min(near, key=lambda v: (abs(Fraction(float(v)) - exact), int(np.float32(v).view(np.uint32)) & 1))


def load_json(path):
    return json.loads(Path(path).read_text(encoding="utf-8"), parse_float=Decimal)


def write_json(path, obj):
    Path(path).write_text(json.dumps(obj, indent=2) + "\n")


def load_model_dir(d, exported=False):
    """name -> (dtype, array) of model.safetensors, or of the shards of model.safetensors.index.json
    (checked: complete weight_map, shard names, total_size; with `exported`, __metadata__ pt)."""
    d, index = Path(d), Path(d) / "model.safetensors.index.json"
    if not index.exists():
        t, meta = read_st(d / "model.safetensors")
        need(not exported or meta == {"format": "pt"}, f"{d}/model.safetensors: __metadata__ {meta}, expected pt")
        return t, "model.safetensors"
    need(not (d / "model.safetensors").exists(), f"{d}: both model.safetensors and an index")
    idx = load_json(index)
    wm, shards, out = idx["weight_map"], sorted(set(idx["weight_map"].values())), {}
    if exported:
        k = len(shards)
        need(shards == [f"model-{i:05d}-of-{k:05d}.safetensors" for i in range(1, k + 1)], f"{index}: shards {shards}")
    for s in shards:
        t, meta = read_st(d / s)
        need(set(t) == {n for n, f in wm.items() if f == s}, f"{d}/{s}: tensors {sorted(t)} differ from the weight_map's")
        need(not exported or meta == {"format": "pt"}, f"{d}/{s}: __metadata__ {meta}, expected pt")
        out.update(t)
    total = sum(a.nbytes for _, a in out.values())
    need(idx["metadata"]["total_size"] == total, f"{index}: total_size {idx['metadata'].get('total_size')}, data {total}")
    return out, f"{len(shards)} shards, index total_size {total}"


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------- trits and scales

def absmean(w, per_row):
    """Section 7 steps 1-5 (epsilon 1e-5, threshold 0.5): trits I8 and scales (per row or [1])."""
    a = np.abs(w).astype(np.float64).reshape(w.shape[0] if per_row else 1, -1)
    scale = np.maximum((np.cumsum(a, axis=1)[:, -1] / a.shape[1]).astype(np.float32), np.float32(1e-5))
    x = w.reshape(len(scale), -1) * (np.float32(1) / scale)[:, None]
    return np.where(x > 0.5, 1, np.where(x < -0.5, -1, 0)).astype(np.int8).reshape(w.shape), scale


def weight_quant(w):
    """transformers' WeightQuant in f32: s = 1 / max(mean|W|, 1e-5), t = clamp(round(W s), -1, 1);
    the mean summed in f64 and rounded to f32 (section 7 step 1). Returns (t, gamma)."""
    gamma = np.maximum(np.float32(np.cumsum(np.abs(w).astype(np.float64).ravel())[-1] / w.size), np.float32(1e-5))
    return np.clip(np.rint(w * (np.float32(1) / gamma)), -1, 1).astype(np.int8), gamma


def hf_pack(t):
    """transformers' pack_weights: [out, in] trits -> U8 [out/4, in]; rows r + kP in bits 2k, 2k+1 as t + 1."""
    c = (t.astype(np.int16) + 1).astype(np.uint8).reshape(4, t.shape[0] // 4, -1)
    return c[0] | c[1] << 2 | c[2] << 4 | c[3] << 6


def hf_unpack(b, what):
    c = (b[None].astype(np.uint8) >> (2 * np.arange(4, dtype=np.uint8))[:, None, None]) & 3
    need(not (c == 3).any(), f"{what}: a packed byte holds code 3")
    return (c.astype(np.int8) - 1).reshape(-1, b.shape[1])


def unpack(name, packed, R, C, enc):
    """Section 5: trits [R, C] of a bundle's packed rows (rules 4.2 to 4.4)."""
    n = 5 if enc == "trit5" else 4
    need(packed.shape == (R, -(-C // n)), f"ternary.safetensors: {name} shape {list(packed.shape)} (rule 4.2)")
    b = packed.astype(np.int64)[:, :, None]
    digits = (b // 3 ** np.arange(5)) % 3 if n == 5 else (b >> (2 * np.arange(4))) & 3
    invalid = (packed > 242).any() if n == 5 else (digits == 3).any()
    need(not invalid, f"ternary.safetensors: {name}: invalid byte (rule 4.3)")
    digits = digits.reshape(R, -1)
    need(not digits[:, C:].any(), f"ternary.safetensors: {name}: non-zero padding (rule 4.4)")
    return (digits[:, :C] - 1).astype(np.int8)


def expand(s, R, C, gran, G):
    """scale(r, c) as f32 [R, C] from scales of a granularity (section 6)."""
    s = np.asarray(s, np.float32)
    if gran == "tensor":
        return np.full((R, C), s.reshape(-1)[0], np.float32)
    if gran == "channel":
        return np.repeat(s.reshape(R, 1), C, axis=1)
    return np.repeat(s.reshape(R, -1), G, axis=1)[:, :C]


def given_scale(name, v, R, C, G):
    """A quantization_metadata.json scale (section 18.1) -> (granularity, scale(r, c))."""
    if not isinstance(v, list) or (len(v) == 1 and not isinstance(v[0], list)):
        return "tensor", expand([f32_decimal(v[0] if isinstance(v, list) else v)], R, C, "tensor", G)
    if not isinstance(v[0], list):
        need(len(v) == R, f"quantization_metadata.json: {name}: {len(v)} scales for {R} rows")
        return "channel", expand([f32_decimal(x) for x in v], R, C, "channel", G)
    need(G is not None and len(v) == R and all(len(r) == -(-C // G) for r in v),
         f"quantization_metadata.json: {name}: not R lists of ceil(C / group_size) scales")
    return "group", expand([[f32_decimal(x) for x in r] for r in v], R, C, "group", G)


def rc(shape):
    return shape[0], int(np.prod(shape[1:], dtype=np.int64))  # section 1.3


# ---------------------------------------------------------------- generators

def f32_scale(x):
    """A scale as a Python float that is exactly an f32 (its repr round-trips through f32)."""
    return float(np.float32(x))


def chain_forward(layers, W, x):
    acts = {"relu": lambda z: np.maximum(z, 0), "identity": lambda z: z, "tanh": np.tanh,
            "silu": lambda z: z / (1 + np.exp(-z))}
    for lay in layers:
        x = x @ W[lay["weight"]].T + (W[lay["bias"]] if lay["bias"] else 0)
        x = acts[lay["activation"]](x)
    return x


def chain_layers(names, tensors):
    """The chain `create` infers (src/write/arch.rs): every 2-D <p>.weight in natural order (here
    plain order: fewer than 10 layers), its <p>.bias, ReLU between layers, identity last."""
    ws = [n for n in names if n.endswith(".weight")]
    return [dict(weight=w, bias=w[:-6] + "bias" if w[:-6] + "bias" in tensors else None,
                 activation="relu" if i + 1 < len(ws) else "identity") for i, w in enumerate(ws)]


def make_stage_chain(d, rng, G):
    dims, trits, scales, zps, bias, tern, orig = [16, 24, 20, 10], {}, {}, {}, {}, {}, {}
    for i, (c, r) in enumerate(zip(dims, dims[1:])):
        name = f"net.{2 * i}.weight"
        t = rng.integers(-1, 2, (r, c)).astype(np.int8)
        zps[name] = 0
        if i == 0:  # per channel: a list of R numbers (and a list of zero points)
            s = [f32_scale(x) for x in rng.uniform(0.05, 0.3, r)]
            zps[name], full = [0] * r, expand(s, r, c, "channel", 0)
        elif i == 1 and G:  # per group: R lists of ceil(C / G)
            s = [[f32_scale(x) for x in rng.uniform(0.05, 0.3, -(-c // G))] for _ in range(r)]
            full = expand(s, r, c, "group", G)
        else:  # per tensor: a one-element list (net.2) or a number (net.4)
            s = f32_scale(rng.uniform(0.05, 0.3))
            full, s = np.full((r, c), s, np.float32), [s] if i == 1 else s
        trits[name], scales[name] = t, s
        tern[name] = t * full  # the ternary model, f32(t * s)
        noise = np.where(t != 0, tern[name] * 0.05 * rng.standard_normal(t.shape), full * rng.uniform(-0.3, 0.3, t.shape))
        orig[name] = (tern[name] + noise).astype(np.float32)  # latent weights near t * s
        bias[f"net.{2 * i}.bias"] = (0.1 * rng.standard_normal(r)).astype(np.float32)
    tern.update(bias)
    orig.update(bias)
    f16 = {k: v.astype(np.float16).astype(np.float32) for k, v in tern.items()}
    layers = chain_layers(sorted(tern), tern)
    x = rng.standard_normal((1024, dims[0])).astype(np.float32)
    logits = [chain_forward(layers, w, x) for w in (tern, f16, orig)]

    def margin(z):
        top = np.sort(z, axis=1)
        return (top[:, -1] - top[:, -2]) / np.abs(z).max(axis=1)
    keep = np.flatnonzero((logits[0].argmax(1) == logits[1].argmax(1)) & (logits[0].argmax(1) == logits[2].argmax(1))
                          & (np.min([margin(z) for z in logits], axis=0) > 1e-2))[:64]
    need(len(keep) == 64, "too few inputs with a clear decision")
    meta = {"scales": scales, "zero_points": zps, "quantization_scheme": "1.58-bit", "sparsity_threshold": 0.5}
    if G:
        meta["group_size"] = G
    write_json(d / "quantization_metadata.json", meta)
    save = {**{k: ("I8", v) for k, v in trits.items()}, **{k: ("F32", v) for k, v in bias.items()}}
    write_st(d / "trits.safetensors", save)
    write_st(d / "original.safetensors", {k: ("F32", v) for k, v in orig.items()})
    write_st(d / "validation.safetensors", {"inputs": ("F32", x[keep]), "labels": ("I64", logits[0].argmax(1)[keep])})
    return f"chain 16 -> 24 -> 20 -> 10, {len(keep)} validation rows"


def hf_config(family, tied, **extra):
    """config.json as Microsoft publishes BitNet: top-level rope_theta, head_dim left to its default."""
    c = {"architectures": [ARCH[family]], "model_type": family, "hidden_act": ACT[family],
         **{k: v for k, v in SHAPE.items() if k != "head_dim"}, "rope_theta": 500000.0 if family == "bitnet" else 10000.0,
         "tie_word_embeddings": tied, "max_position_embeddings": 2048, "attention_bias": False}
    return dict(c, **extra)


def fwd_config(c):
    """The keys decoder_numpy.forward reads, with transformers' defaults."""
    theta = c.get("rope_theta") or c["rope_parameters"]["rope_theta"]
    return dict(c, head_dim=c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"],
                rope_parameters={"rope_theta": float(theta)}, rms_norm_eps=float(c["rms_norm_eps"]))


def make_stage_decoder(d, rng, family):
    c = hf_config(family, False, head_dim=SHAPE["head_dim"])
    latent = task_weights(fwd_config(c), family, rng)
    tensors, scales, zps = {}, {}, {}
    for name, w in latent.items():
        if not any(name.endswith(p + ".weight") for p in PROJECTIONS):
            tensors[name] = ("F32", w)
            continue
        per_row = name.endswith(("q_proj.weight", "k_proj.weight", "v_proj.weight", "gate_proj.weight"))
        t, s = absmean(w, per_row)
        tensors[name] = ("I8", t)
        scales[name] = [float(x) for x in s] if per_row else float(s[0])
        zps[name] = [0] * len(s) if per_row else 0
    scales["model.layers.0.self_attn.o_proj.weight"] = [scales["model.layers.0.self_attn.o_proj.weight"]]
    (d / "original").mkdir(parents=True, exist_ok=True)
    for where in (d, d / "original"):
        write_json(where / "config.json", c)
    write_st(d / "model.safetensors", tensors, {"format": "pt"})
    write_st(d / "original" / "model.safetensors", {k: ("F32", v) for k, v in latent.items()}, {"format": "pt"})
    write_json(d / "quantization_metadata.json", {"scales": scales, "zero_points": zps,
                                                  "quantization_scheme": "1.58-bit", "sparsity_threshold": 0.5})
    ids, difficulty = task_data(c, rng, 100, 16)
    write_st(d / "data.safetensors", {"input_ids": ("I64", ids), "difficulty": ("U8", difficulty)})
    return f"{family} decoder, {len(scales)} projections given as trits, original/ and data.safetensors"


def not_converted(module, entries):
    """Spec 18.2: an entry matches a module it equals, prefixes (followed by '.'), or ends."""
    return any(module == e or module.startswith(e + ".") or module.endswith(e) for e in entries)


def converted(c, names):
    """The converted modules' weights (18.2): the 7 projections and an untied lm_head, less modules_to_not_convert."""
    entries = (c.get("quantization_config") or {}).get("modules_to_not_convert") or ["lm_head"]
    return {n for n in names if (any(n.endswith(p + ".weight") for p in PROJECTIONS) or n == "lm_head.weight")
            and not not_converted(n[:-len(".weight")], entries)}


def make_packed(args, d, rng):
    dt = {"bf16": "BF16", "f32": "F32"}[args.dtype]
    qc = {"quant_method": "bitnet", "linear_class": args.linear_class, "quantization_mode": "offline"}
    if args.not_convert:
        qc["modules_to_not_convert"] = ["lm_head"] + args.not_convert
    c = hf_config("bitnet", args.tied, torch_dtype={"BF16": "bfloat16", "F32": "float32"}[dt], quantization_config=qc)
    latent = task_weights(fwd_config(c), "bitnet", rng)
    conv = converted(c, latent)
    tensors, expected = {}, {}
    for name, w in sorted(latent.items()):
        if name not in conv:
            tensors[name] = in_dtype(w, dt)
            expected[name] = ("F32", f32_of(*tensors[name], name))
            continue
        t, gamma = absmean(w, per_row=False)
        ws = in_dtype(gamma if args.linear_class == "autobitlinear" else np.float32(1) / gamma, dt)
        s = f32_of(*ws, name)
        tensors[name] = ("U8", hf_pack(t))
        tensors[name[:-len("weight")] + "weight_scale"] = ws
        expected[name] = ("I8", t)
        expected[name + ".scale"] = ("F32", s if args.linear_class == "autobitlinear" else np.float32(1) / s)
    write_json(d / "config.json", c)
    write_st(d / "model.safetensors", tensors, {"format": "pt"})
    write_st(d / "expected.safetensors", expected)
    write_st(d / "ids.safetensors", {"input_ids": ("I64", task_data(fwd_config(c), rng, 100, 16)[0])})
    return f"packed BitNet, {args.linear_class}, {len(conv)} converted projections, {args.dtype}"


def make_online(args, d, rng):
    qc = {"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "online"}
    c = hf_config("bitnet", args.tied, torch_dtype="bfloat16", quantization_config=qc)
    latent = task_weights(fwd_config(c), "bitnet", rng)
    for k in latent:  # layers that matter: ~5 % of next-token decisions change when the projections are ternarized
        if k.endswith(("o_proj.weight", "down_proj.weight")):
            latent[k] = latent[k] * np.float32(args.layer_scale)
    write_json(d / "config.json", c)
    write_st(d / "model.safetensors", {k: in_dtype(v, "BF16") for k, v in sorted(latent.items())}, {"format": "pt"})
    ids, difficulty = task_data(fwd_config(c), rng, 100, 16)
    write_st(d / "data.safetensors", {"input_ids": ("I64", ids), "difficulty": ("U8", difficulty)})
    return "BitNet BF16 master weights, online quantization, data.safetensors"


def make_tokenizer(args):
    """A BPE trained here, deterministically: the commonest 30 characters (ties by character),
    then merges of the most frequent adjacent pair (ties by the pair) up to 50 tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pre = pre_tokenizers.Whitespace()
    words = Counter(w for w, _ in pre.pre_tokenize_str(Path(args.text).read_bytes().decode("utf-8")))
    chars = Counter()
    for w, n in words.items():
        for ch in w:
            chars[ch] += n
    vocab = {tok: i for i, tok in enumerate(SPECIALS + sorted(sorted(chars, key=lambda ch: (-chars[ch], ch))[:30]))}
    seqs, merges = {w: [ch if ch in vocab else None for ch in w] for w in words}, []
    while len(vocab) < 50 and len(merges) < 200:
        pairs = Counter()
        for w, s in seqs.items():
            for a, b in zip(s, s[1:]):
                if a is not None and b is not None:
                    pairs[a, b] += words[w]
        if not pairs:
            break
        a, b = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append((a, b))
        vocab.setdefault(a + b, len(vocab))
        for w, s in seqs.items():
            m, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == (a, b):
                    m, i = m + [a + b], i + 2
                else:
                    m, i = m + [s[i]], i + 1
            seqs[w] = m
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token="<unk>"))
    tok.pre_tokenizer = pre
    tok.add_special_tokens(SPECIALS)
    # BOS first, as Llama's and BitNet's tokenizers: ids with add_special_tokens = true differ
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", 1)])
    need(tok.get_vocab_size() <= 50, f"vocabulary of {tok.get_vocab_size()}")
    tok.save(str(out / "tokenizer.json"))
    write_json(out / "tokenizer_config.json", {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<s>",
                                               "eos_token": "</s>", "unk_token": "<unk>", "model_max_length": 2048})
    write_json(out / "generation_config.json", {"bos_token_id": 1, "eos_token_id": 2})
    print(f"{out}: BPE tokenizer of {tok.get_vocab_size()} tokens ({len(merges)} merges)")
    return 0


# ---------------------------------------------------------------- reading a bundle

def read_bundle(b):
    """Manifest and every tensor decoded by sections 5, 6 and 8: name -> dict(quantized, shape,
    t, scale (the stored scales), sc (scale(r, c)), value (F32), f16 (the fp16 bits))."""
    b = Path(b)
    m = json.loads((b / "manifest.json").read_text(encoding="utf-8"), parse_float=Decimal)
    q = m["quantization"]
    ter, _ = read_st(b / "ternary.safetensors")
    f16, _ = read_st(b / "fp16.safetensors")
    entries = {e["name"]: e for e in m["tensors"]}
    want = set(entries) | {k + ".scale" for k, e in entries.items() if e["quantized"]}
    need(set(ter) == want, f"ternary.safetensors: tensors {sorted(set(ter) ^ want)} missing or extra (rule 4.1)")
    need(set(f16) == set(entries), f"fp16.safetensors: tensors {sorted(set(f16) ^ set(entries))} missing or extra (rule 5.1)")
    out = {}
    for name, e in entries.items():
        shape, (R, C) = tuple(e["shape"]), rc(e["shape"])
        hd, h = f16[name]
        need(hd == "F16" and h.shape == shape, f"fp16.safetensors: {name} {hd} {list(h.shape)} (rule 5.1)")
        r = dict(quantized=e["quantized"], shape=shape, f16=h.view(np.uint16).reshape(R, C))
        if e["quantized"]:
            sd, s = ter[name + ".scale"]
            G = q.get("group_size")
            want_s = {"tensor": (1,), "channel": (R,), "group": (R, -(-C // G) if G else 0)}[q["granularity"]]
            need(sd == "F32" and s.shape == want_s, f"ternary.safetensors: {name}.scale {sd} {list(s.shape)} (rule 4.2)")
            need(ter[name][0] == "U8", f"ternary.safetensors: {name} dtype {ter[name][0]} (rule 4.2)")
            r.update(t=unpack(name, ter[name][1], R, C, q["encoding"]), scale=s, sc=expand(s, R, C, q["granularity"], G))
            need(int((r["t"] == 0).sum()) == e["zeros"] and f32_decimal(e["scale_min"]) == s.min()
                 and f32_decimal(e["scale_max"]) == s.max(), f"manifest: {name}: zeros/scale_min/scale_max (rule 4.6)")
            value, rule = r["t"].astype(np.float32) * r["sc"], "5.2"
        else:
            vd, v = ter[name]
            need(vd == "F32" and v.shape == shape, f"ternary.safetensors: {name} {vd} {list(v.shape)} (rule 4.2)")
            value, rule = v.reshape(R, C), "5.3"
            r["value"] = v
        r["dense"] = value.reshape(shape)
        with np.errstate(over="ignore"):
            exp = value.astype(np.float16).view(np.uint16)
        bad = np.argwhere(exp != r["f16"])
        need(not len(bad), f"fp16.safetensors: {name} at {bad[0].tolist() if len(bad) else ''}: "
                           f"not f16 of ternary.safetensors' value (rule {rule})")
        out[name] = r
    ok(f"{b.name}: {len(out)} tensors decoded ({q['encoding']}, {q['granularity']}); "
       f"fp16.safetensors == f16(t * scale) / f16(value) bit for bit (rules 5.2, 5.3)")
    return m, out


def same_f32(name, got, want, what):
    g, w = np.asarray(got, np.float32), np.asarray(want, np.float32)
    need(g.shape == w.shape, f"{name}: {what} shape {list(g.shape)}, expected {list(w.shape)}")
    bad = np.argwhere(g.view(np.uint32) != w.view(np.uint32))
    need(not len(bad), f"{name}: {what} differs at {bad[0].tolist() if len(bad) else ''}: "
                       f"{g[tuple(bad[0])] if len(bad) else ''} != expected {w[tuple(bad[0])] if len(bad) else ''}")


def check_trits(what, got, want):
    """got: the bundle's trits [R, C]; want: the other side's, any shape of R x C."""
    want = want.reshape(got.shape)
    bad = np.argwhere(got != want)[:1].tolist()
    need(not bad, f"{what}: the bundle's trit at {bad} is {got[tuple(bad[0])] if bad else ''}, expected "
                  f"{want[tuple(bad[0])] if bad else ''}")


def check_predictions(b, stored, ours, what):
    """original_predictions == argmax of our logits, except near-ties (section 16.1: the stored
    class within 1e-4 of the largest |logit| of the maximum)."""
    z = ours.reshape(-1, ours.shape[-1])
    p = stored.reshape(-1)
    diff = np.flatnonzero(p != z.argmax(1))
    far = [i for i in diff if z[i].max() - z[i, p[i]] > 1e-4 * np.abs(z[i]).max()]
    need(not far, f"{b}/validation.safetensors: original_predictions[{far[0] if far else ''}] = "
                  f"{p[far[0]] if far else ''}, {what} predicts {z[far[0]].argmax() if far else ''}")
    ok(f"validation original_predictions == {what}'s argmax on {len(p)} samples ({len(diff)} near-ties)")


class QuantLinear:
    """A converted module of the bitnet-online forward (18.3): 8-bit activations per token, then
    x W^T with W = f32(t * gamma). `forward` computes `x @ W.T`; numpy defers @ to __rmatmul__."""
    __array_ufunc__ = None

    def __init__(self, w):
        self.w = w
        self.T = self

    def __rmatmul__(self, x):
        s = np.float32(127) / np.maximum(np.abs(x).max(-1, keepdims=True), np.float32(1e-5))
        return (np.clip(np.rint(x * s), -128, 127) / s) @ self.w.T


# ---------------------------------------------------------------- checks

def check_bundle(args):
    b = Path(args.bundle)
    m, T = read_bundle(b)
    val = read_st(b / "validation.safetensors")[0] if (b / "validation.safetensors").exists() else None
    # 5.0 when the validation file holds the original model's distributions (section 9.1).
    version = "5.0" if val is not None and set(val) & DISTRIBUTIONS else "4.0"
    need(m["format_version"] == version, f"{b}/manifest.json: format_version {m['format_version']!r}, expected {version}")
    q = m["quantization"]
    if args.kind != "online":
        need(q["method"] == "given" and q["epsilon"] is None and q["sparsity_threshold"] is None,
             f"{b}/manifest.json: method {q['method']!r}, epsilon {q['epsilon']}, sparsity_threshold "
             f"{q['sparsity_threshold']}: expected given, null, null (rule 2.8)")
    if args.kind == "online":
        check_online(b, Path(args.expect), m, T, val, args.act_quant_decides)
    else:
        {"stage": check_stage, "packed": check_packed}[args.kind](b, Path(args.expect), m, T, val)
    return 0


def check_stage(b, src, m, T, val):
    """Section 18.1 against make-stage's DIR (or its trits file)."""
    q, source = m["quantization"], m["quantization"].get("source") or {}
    chain = src.is_file() or (src / "trits.safetensors").exists()
    sdir = src.parent if src.is_file() else src
    tensors = read_st(src if src.is_file() else src / "trits.safetensors")[0] if chain else load_model_dir(src)[0]
    meta = load_json(sdir / "quantization_metadata.json")
    need((source.get("format"), source.get("scale_name"), source.get("scale_convention"))
         == ("quantization-metadata", "scales", "multiply"), f"{b}/manifest.json: quantization.source {source}")
    details = source.get("details") or {}
    for k, v in meta.items():
        if k not in ("scales", "zero_points", "group_size"):
            need(details.get(k) == v, f"{b}/manifest.json: source.details.{k} {details.get(k)!r}, metadata says {v!r}")
    ok(f"manifest: format {m['format_version']}, method given, epsilon/threshold null, source quantization-metadata, scales, "
       f"multiply, details {sorted(details)}")
    quantized = {n for n, r in T.items() if r["quantized"]}
    need(quantized == set(meta["scales"]), f"quantized tensors {sorted(quantized ^ set(meta['scales']))} "
                                           f"differ from quantization_metadata.json's scales")
    G = meta.get("group_size")
    forms = {n: given_scale(n, v, *rc(T[n]["shape"]), G) for n, v in meta["scales"].items()}
    finest = min((f for f, _ in forms.values()), key=["group", "channel", "tensor"].index)
    need(q["granularity"] == finest and (finest != "group" or q["group_size"] == G),
         f"{b}/manifest.json: granularity {q['granularity']} (group_size {q.get('group_size')}), expected {finest} "
         f"(the finest given, section 7.1)")
    ok(f"granularity {finest}, the finest of the given {sorted(set(f for f, _ in forms.values()))}")
    need(set(T) == set(tensors), f"bundle tensors {sorted(set(T) ^ set(tensors))} missing or extra")
    for name, r in sorted(T.items()):
        dtype, a = tensors[name]
        if r["quantized"]:
            check_trits(f"{name} (given trits)", r["t"], a.astype(np.int64))
            same_f32(name, r["sc"], forms[name][1], f"scale(r, c) ({forms[name][0]} scale given)")
            ok(f"{name}: trits == given {dtype}, scale(r, c) == the given {forms[name][0]} scale")
        else:
            same_f32(name, r["value"], f32_of(dtype, a, name), "F32 value")
            ok(f"{name}: F32 == the source's {dtype} values")
    orig = m["provenance"].get("original") or {}
    if orig:
        need(orig.get("forward") == "dense", f"{b}/manifest.json: provenance.original {orig}, expected forward dense")
        if chain and orig.get("sha256") is not None:
            need(orig["sha256"] == sha256(sdir / "original.safetensors"),
                 f"{b}/manifest.json: provenance.original.sha256 is not original.safetensors'")
        ok(f"provenance.original: forward dense, sha256 {orig.get('sha256')}")
    if val is None:
        return
    data = read_st(sdir / ("validation.safetensors" if chain else "data.safetensors"))[0]
    key = "inputs" if chain else "input_ids"
    need(np.array_equal(val[key][1], data[key][1]), f"{b}/validation.safetensors: {key} differ from the source's")
    ok(f"validation {key} == the source's {list(data[key][1].shape)}")
    if "original_predictions" in val:
        if chain:
            W = {k: f32_of(d, a, k) for k, (d, a) in read_st(sdir / "original.safetensors")[0].items()}
            logits = chain_forward(m["model"]["layers"], W, data["inputs"][1])
        else:
            c = fwd_config(load_json(sdir / "original" / "config.json"))
            W = {k: f32_of(d, a, k) for k, (d, a) in load_model_dir(sdir / "original")[0].items()}
            logits = forward(c, c["model_type"], W, data["input_ids"][1])[:, :-1]
        check_predictions(b, val["original_predictions"][1], logits, "numpy's dense original model")


def check_packed(b, src, m, T, val):
    """Section 18.2 against make-packed's DIR (config.json, expected.safetensors)."""
    q, source = m["quantization"], m["quantization"].get("source") or {}
    qc = load_json(src / "config.json")["quantization_config"]
    exp = read_st(src / "expected.safetensors")[0]
    conv = "multiply" if qc.get("linear_class") == "autobitlinear" else "divide"
    need((source.get("format"), source.get("scale_name"), source.get("scale_convention"))
         == ("hf-bitnet", "weight_scale", conv),
         f"{b}/manifest.json: quantization.source {source}, expected hf-bitnet, weight_scale, {conv}")
    details = source.get("details") or {}
    for k in ("linear_class", "quantization_mode", "modules_to_not_convert"):
        need(details.get(k) == qc.get(k), f"{b}/manifest.json: source.details.{k} {details.get(k)!r}, config {qc.get(k)!r}")
    need(q["granularity"] == "tensor", f"{b}/manifest.json: granularity {q['granularity']}, expected tensor (18.2)")
    ok(f"manifest: format 4.0, method given, granularity tensor, source hf-bitnet, weight_scale, {conv}, details as read")
    want_q = {n for n, (d, _) in exp.items() if d == "I8"}
    quantized = {n for n, r in T.items() if r["quantized"]}
    need(quantized == want_q, f"quantized tensors {sorted(quantized ^ want_q)} differ from the converted modules")
    want = {n for n in exp if n[:-len(".scale")] not in want_q}
    need(set(T) == want, f"bundle tensors {sorted(set(T) ^ want)} missing or extra")
    for name, r in sorted(T.items()):
        if r["quantized"]:
            check_trits(f"{name} (expected.safetensors)", r["t"], exp[name][1])
            same_f32(name, r["scale"], exp[name + ".scale"][1], f"scale ({conv} of weight_scale)")
            ok(f"{name}: trits == unpacked pack_weights, scale {float(r['scale'][0]):.9g} == {conv} convention's")
        else:
            same_f32(name, r["value"], exp[name][1], "F32 value")
            ok(f"{name}: F32 == the source's values")


def check_online(b, src, m, T, val, act_quant_decides=False):
    """Section 18.3 against make-online's master DIR."""
    q, c = m["quantization"], load_json(src / "config.json")
    need(q["method"] == "absmean" and q["granularity"] == "tensor" and f32_decimal(q["epsilon"]) == np.float32(1e-5)
         and f32_decimal(q["sparsity_threshold"]) == np.float32(0.5) and not q.get("source"),
         f"{b}/manifest.json: quantization {q}: expected absmean, tensor, 1e-5, 0.5, no source (18.3)")
    orig = m["provenance"].get("original") or {}
    need(orig.get("forward") == "bitnet-online", f"{b}/manifest.json: provenance.original {orig}, expected bitnet-online")
    ok(f"manifest: format {m['format_version']}, absmean, tensor, epsilon 1e-5, threshold 0.5, provenance.original bitnet-online")
    src_t = {k: f32_of(d, a, k) for k, (d, a) in load_model_dir(src)[0].items()}
    conv, quantized = converted(c, src_t), {n for n, r in T.items() if r["quantized"]}
    need(quantized == conv, f"quantized tensors {sorted(quantized ^ conv)} differ from the converted modules (18.2)")
    need(set(T) == set(src_t), f"bundle tensors {sorted(set(T) ^ set(src_t))} missing or extra")
    online = {}  # the model transformers runs: converted modules as QuantLinear
    for name, r in sorted(T.items()):
        if r["quantized"]:
            t, gamma = weight_quant(src_t[name])
            check_trits(f"{name} (WeightQuant of the master)", r["t"], t)
            same_f32(name, r["scale"], [gamma], "scale (WeightQuant's f32 gamma)")
            online[name] = QuantLinear(t.astype(np.float32) * gamma)
            ok(f"{name}: trits == WeightQuant's clamp(round(W / gamma)), scale == gamma {float(gamma):.9g}")
        else:
            same_f32(name, r["value"], src_t[name], "F32 value")
            online[name] = src_t[name]
            ok(f"{name}: F32 == the master's values")
    if val is not None and "original_predictions" in val:
        ids = val["input_ids"][1]
        logits = forward(fwd_config(c), "bitnet", online, ids)[:, :-1]
        check_predictions(b, val["original_predictions"][1], logits, "numpy's bitnet-online forward")
        if act_quant_decides:
            # The same weights without ActQuant: the check above can fail on an original
            # computed without 8-bit activations only where they change a decision.
            plain = {k: (v.w if isinstance(v, QuantLinear) else v) for k, v in online.items()}
            without = forward(fwd_config(c), "bitnet", plain, ids)[:, :-1].argmax(-1)
            changed = int((without != logits.argmax(-1)).sum())
            need(changed > 0, f"{b}: 8-bit activations decide no position of this model: the "
                              "check cannot tell whether the original model ran them")
            ok(f"8-bit activations decide {changed} of {without.size} positions: a forward without them fails the check above")


def bundle_assets(b, m, out_dir):
    for a in m["files"].get("assets") or []:
        need((out_dir / a["name"]).read_bytes() == (b / a["name"]).read_bytes(),
             f"{out_dir}/{a['name']}: differs from the bundle's")
        ok(f"{a['name']}: byte-identical to the bundle's")


def check_config(cfg, m, b, torch_dtype, max_pos):
    """config.json keys of section 18.4 from manifest model.decoder."""
    dec = m["model"]["decoder"]
    fam = dec["family"]
    gen = {}
    if any(a["name"] == "generation_config.json" for a in m["files"].get("assets") or []):
        gen = load_json(b / "generation_config.json")
    want = {"architectures": [ARCH[fam]], "model_type": fam, "hidden_act": ACT[fam], "attention_bias": False,
            "mlp_bias": False, "max_position_embeddings": max_pos, "torch_dtype": torch_dtype,
            **{k: gen.get(k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")},
            **{k: dec[k] for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                                   "num_attention_heads", "num_key_value_heads", "head_dim", "tie_word_embeddings")}}
    for k, v in want.items():
        need(k in cfg and cfg[k] == v and type(cfg[k]) is type(v),
             f"config.json: {k} {cfg.get(k, 'missing')!r}, expected {v!r}")
    for k in ("rms_norm_eps", "rope_theta"):
        need(isinstance(cfg.get(k), (Decimal, int)) and f32_decimal(cfg[k]) == f32_decimal(dec[k]),
             f"config.json: {k} {cfg.get(k)}, expected {dec[k]} (as f32)")
    ok(f"config.json: {fam} {want['architectures']}, sizes, {want['hidden_act']}, rope_theta, rms_norm_eps, "
       f"tie {dec['tie_word_embeddings']}, torch_dtype {torch_dtype}, token ids {gen}")


def check_export_hf(args):
    out, b = Path(args.export_dir), Path(args.bundle)
    m, T = read_bundle(b)
    cfg = load_json(out / "config.json")
    need("quantization_config" not in cfg, "config.json: has a quantization_config (18.4: none)")
    torch_dtype = {"f16": "float16", "bf16": "bfloat16", "f32": "float32"}[args.dtype]
    check_config(cfg, m, b, torch_dtype, args.max_position_embeddings)
    W, how = load_model_dir(out, exported=True)
    need(set(W) == set(T), f"{out}: tensors {sorted(set(W) ^ set(T))} missing or extra")
    ok(f"weights: {how}, the bundle's {len(T)} names")
    for name, r in sorted(T.items()):
        dtype, a = W[name]
        want_dt = {"f16": "F16", "bf16": "BF16", "f32": "F32"}[args.dtype]
        need(dtype == want_dt and a.shape == r["shape"],
             f"{out}: {name} {dtype} {list(a.shape)}, expected {want_dt} {list(r['shape'])}")
        want = {"f16": r["f16"], "f32": r["dense"].view(np.uint32), "bf16": bf16_bits(r["dense"])}[args.dtype]
        bad = np.argwhere(a.view(want.dtype).reshape(-1) != want.reshape(-1))
        need(not len(bad), f"{out}: {name} flat element {bad[0].tolist() if len(bad) else ''} differs from the "
                           f"bundle's {args.dtype}")
        ok(f"{name}: {want_dt} == {'fp16.safetensors' if args.dtype == 'f16' else args.dtype + '(t * scale / F32 value)'}")
    bundle_assets(b, m, out)
    return 0


def check_export_bitnet(args):
    out, b = Path(args.export_dir), Path(args.bundle)
    m, T = read_bundle(b)
    cfg = load_json(out / "config.json")
    check_config(cfg, m, b, "float16", args.max_position_embeddings)
    qc = cfg.get("quantization_config") or {}
    need({k: qc.get(k) for k in ("quant_method", "linear_class", "quantization_mode")}
         == {"quant_method": "bitnet", "linear_class": "autobitlinear", "quantization_mode": "offline"},
         f"config.json: quantization_config {qc}, expected bitnet autobitlinear offline")
    entries = qc.get("modules_to_not_convert")
    need(isinstance(entries, list) and "lm_head" in entries,
         f"config.json: modules_to_not_convert {entries}, without lm_head")
    for name, r in T.items():
        if any(name.endswith(p + ".weight") for p in PROJECTIONS):
            need(not_converted(name[:-7], entries) != r["quantized"],
                 f"config.json: modules_to_not_convert {entries} {'matches' if r['quantized'] else 'misses'} {name[:-7]}")
    ok(f"config.json: quantization_config autobitlinear offline, modules_to_not_convert {entries} == lm_head and "
       f"the unquantized projections")
    W, how = load_model_dir(out, exported=True)
    want = {n for n in T} | {n[:-6] + "weight_scale" for n, r in T.items() if r["quantized"]}
    need(set(W) == want, f"{out}: tensors {sorted(set(W) ^ want)} missing or extra")
    ok(f"weights: {how}, packed projections with weight_scale, others F32")
    for name, r in sorted(T.items()):
        dtype, a = W[name]
        if not r["quantized"]:
            need(dtype == "F32", f"{out}: {name} {dtype}, expected F32")
            same_f32(name, a, r["value"], "F32 value (ternary.safetensors')")
            ok(f"{name}: F32 == ternary.safetensors")
            continue
        R, C = rc(r["shape"])
        need(dtype == "U8" and a.shape == (R // 4, C), f"{out}: {name} {dtype} {list(a.shape)}, expected U8 {[R // 4, C]}")
        sd, s = W[name[:-6] + "weight_scale"]
        need(sd == "F32" and s.shape == (1,), f"{out}: {name[:-6]}weight_scale {sd} {list(s.shape)}, expected F32 [1]")
        t = hf_unpack(a, f"{out}: {name}")
        check_trits(f"{out}: {name} (unpacked)", r["t"], t)
        same_f32(name, r["sc"], np.full((R, C), s[0], np.float32), "bundle scale vs weight_scale")
        half = (t.astype(np.float16) * s.astype(np.float16)).view(np.uint16)
        bad = np.argwhere(half != r["f16"])
        need(not len(bad), f"{out}: {name}: t * f16(weight_scale) at {bad[0].tolist() if len(bad) else ''} "
                           f"!= fp16.safetensors")
        ok(f"{name}: unpacked == the bundle's trits, weight_scale == its scale, t * f16(s) == fp16.safetensors")
    bundle_assets(b, m, out)
    return 0


def check_tokens(args):
    from tokenizers import Tokenizer
    b, T = Path(args.bundle), args.seq_len
    m = json.loads((b / "manifest.json").read_text(encoding="utf-8"))
    listed = {a["name"]: a for a in m["files"].get("assets") or []}
    need("tokenizer.json" in listed and listed["tokenizer.json"]["sha256"] == sha256(b / "tokenizer.json"),
         f"{b}/manifest.json: tokenizer.json not listed as an asset with its sha256")
    ids = Tokenizer.from_file(str(b / "tokenizer.json")).encode(
        Path(args.text).read_bytes().decode("utf-8"), add_special_tokens=False).ids
    n = len(ids) // T
    need(n >= 1, f"{args.text}: {len(ids)} tokens, fewer than one sequence of {T}")
    want = np.array(ids[:n * T], np.int64).reshape(n, T)
    val = read_st(b / "validation.safetensors")[0]
    need(set(val) <= {"input_ids", "labels", "original_predictions"} | DISTRIBUTIONS,
         f"validation.safetensors: tensors {sorted(val)}")
    got = val["input_ids"][1]
    at = np.argwhere(got != want)[:1].tolist() if got.shape == want.shape else "shape"
    need(not at, f"{b}/validation.safetensors: input_ids {list(got.shape)} differ from tokenizers' "
                 f"{list(want.shape)} at {at}")
    ok(f"input_ids == Tokenizer.from_file(tokenizer.json).encode(text) cut into {n} x {T} ({len(ids) - n * T} ids dropped)")
    need(np.array_equal(val["labels"][1], want[:, 1:]), f"{b}/validation.safetensors: labels are not the next ids")
    ok("labels == input_ids shifted by one; no difficulty")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("make-stage")
    p.add_argument("dir")
    p.add_argument("--decoder", action="store_true")
    p.add_argument("--family", choices=["llama", "bitnet"], default="bitnet")
    p.add_argument("--group-size", type=int)
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("make-packed")
    p.add_argument("dir")
    p.add_argument("--linear-class", choices=["autobitlinear", "bitlinear"], required=True)
    p.add_argument("--dtype", choices=["bf16", "f32"], default="bf16")
    p.add_argument("--tied", action="store_true")
    p.add_argument("--not-convert", action="append", default=[])
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("make-online")
    p.add_argument("dir")
    p.add_argument("--tied", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layer-scale", type=float, default=5.0)
    p = sub.add_parser("make-tokenizer")
    p.add_argument("out_dir")
    p.add_argument("text")
    p = sub.add_parser("check-bundle")
    p.add_argument("bundle")
    p.add_argument("--expect", required=True)
    p.add_argument("--kind", choices=["stage", "packed", "online"], required=True)
    p.add_argument("--act-quant-decides", action="store_true")
    for name in ("check-export-hf", "check-export-bitnet"):
        p = sub.add_parser(name)
        p.add_argument("export_dir")
        p.add_argument("bundle")
        p.add_argument("--max-position-embeddings", type=int, default=2048)
        if name == "check-export-hf":
            p.add_argument("--dtype", choices=["f16", "bf16", "f32"], default="f16")
    p = sub.add_parser("check-tokens")
    p.add_argument("bundle")
    p.add_argument("text")
    p.add_argument("seq_len", type=int)
    args = ap.parse_args()
    if args.cmd == "make-stage" and args.decoder and args.group_size:
        ap.error("--group-size is for the chain of layers only")
    try:
        if args.cmd.startswith("make-") and args.cmd != "make-tokenizer":
            d = Path(args.dir)
            d.mkdir(parents=True, exist_ok=True)
            rng = np.random.default_rng(args.seed)
            what = {"make-stage": lambda: make_stage_decoder(d, rng, args.family) if args.decoder
                    else make_stage_chain(d, rng, args.group_size),
                    "make-packed": lambda: make_packed(args, d, rng), "make-online": lambda: make_online(args, d, rng)}
            print(f"{d}: {what[args.cmd]()}")
            return 0
        return {"make-tokenizer": make_tokenizer, "check-bundle": check_bundle, "check-export-hf": check_export_hf,
                "check-export-bitnet": check_export_bitnet, "check-tokens": check_tokens}[args.cmd](args)
    except Mismatch as e:
        print(f"FAIL {e}")
        return 1
    except (KeyError, FileNotFoundError) as e:
        print(f"FAIL missing key, tensor or file: {e}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
