#!/usr/bin/env python3
"""The proof of `bundle export --format gguf` with llama.cpp's own Python package, gguf-py
(`pip install gguf==0.19.0`): its reader, its TQ1_0 / TQ2_0 dequantizer and quantizer.

    python3 scripts/gguf_check.py make DIR --family llama|bitnet [--untied] [--seed S]
        writes a random model directory in transformers' layout (config.json and
        model.safetensors, F32) whose rows are multiples of 256 columns: hidden 256,
        intermediate 512, 4 heads (2 KV) of 64, 2 layers, vocab 300
    python3 scripts/gguf_check.py check BUNDLE FILE.gguf
        proves with gguf-py that FILE.gguf is the bundle:
        (1) GGUFReader reads it; every quantized tensor has one ternary type, and
            gguf.quants.dequantize of its bytes equals f32 of the bundle's fp16.safetensors
            values bit for bit (llama: after undoing the q/k RoPE permutation);
        (2) gguf.quants.quantize of those FP16 values (as f32) gives the file's bytes exactly;
        (3) the F32 / F16 tensors equal the bundle's stored values (F16: their f16 rounding);
        (4) the hyperparameters equal the bundle's config (manifest.json model.decoder).
    Prints `ok ...` lines; exits 1 at the first mismatch, naming the tensor and index.
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

import gguf
from gguf import GGMLQuantizationType as Q

# The tensors of a transformers Llama / BitNet directory, as the other decoder scripts name them.
from decoder_numpy import tensor_shapes

SHAPE = dict(vocab_size=300, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, head_dim=64, rms_norm_eps=1e-5)

LAYER_NAMES = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "self_attn.attn_sub_norm": "attn_sub_norm", "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    "mlp.ffn_sub_norm": "ffn_sub_norm",
}


def fail(msg):
    print(f"FAIL {msg}", file=sys.stderr)
    sys.exit(1)


def make(args):
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    c = dict(SHAPE, model_type=args.family, tie_word_embeddings=not args.untied,
             hidden_act="silu" if args.family == "llama" else "relu2",
             rope_parameters={"rope_theta": 10000.0 if args.family == "llama" else 500000.0,
                              "rope_type": "default"})
    (d / "config.json").write_text(json.dumps(c, indent=1))
    tensors = {}
    for name, shape in tensor_shapes(c, args.family).items():
        if len(shape) == 1:
            tensors[name] = (1.0 + 0.05 * rng.standard_normal(shape)).astype(np.float32)
        else:
            tensors[name] = (rng.standard_normal(shape) / np.sqrt(shape[1])).astype(np.float32)
    # A block of 256 weights far below its row's absmean quantizes to 256 zeros: its d is 0,
    # as ggml's and gguf-py's quantizers compute it (the block's absmax).
    tensors["model.layers.0.mlp.down_proj.weight"][0, :256] *= 1e-3
    save_file(tensors, str(d / "model.safetensors"), metadata={"format": "pt"})
    print(f"wrote {d}: {args.family}, {len(tensors)} tensors")


def gguf_name(name):
    fixed = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    if name in fixed:
        return fixed[name]
    rest = name.removeprefix("model.layers.")
    layer, part = rest.split(".", 1)
    return f"blk.{layer}.{LAYER_NAMES[part.removesuffix('.weight')]}.weight"


def permute(w, n_head):
    """convert_hf_to_gguf.py's LlamaModel.permute, on the rows of a 2-D array."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def first_difference(a, b):
    a, b = np.ravel(a), np.ravel(b)
    if a.shape != b.shape:
        return f"shape {a.shape} vs {b.shape}"
    idx = np.flatnonzero(a != b)
    return None if idx.size == 0 else f"index {idx[0]}: {a[idx[0]]!r} vs {b[idx[0]]!r}"


def field(reader, key):
    f = reader.get_field(key)
    if f is None:
        fail(f"metadata {key}: missing")
    return f.contents()


def check(args):
    bundle = Path(args.bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    dec = manifest["model"]["decoder"]
    family = dec["family"]
    fp16 = load_file(str(bundle / "fp16.safetensors"))
    ternary = load_file(str(bundle / "ternary.safetensors"))
    reader = gguf.GGUFReader(args.file)
    tensors = {t.name: t for t in reader.tensors}
    print(f"ok GGUFReader read {args.file}: {len(tensors)} tensors, {len(reader.fields)} fields")

    arch = field(reader, "general.architecture")
    if arch != family:
        fail(f"general.architecture: expected {family}, found {arch}")
    expected_names = {gguf_name(t["name"]) for t in manifest["tensors"]}
    if set(tensors) != expected_names:
        fail(f"tensor names differ: {sorted(set(tensors) ^ expected_names)}")

    qtypes = set()
    n_quantized = n_float = zero_blocks = 0
    for t in manifest["tensors"]:
        name, shape = t["name"], t["shape"]
        g = tensors[gguf_name(name)]
        ne = [int(x) for x in g.shape]
        if ne != list(reversed(shape)):
            fail(f"{g.name}: dims expected {list(reversed(shape))}, found {ne}")
        heads = None
        if family == "llama" and name.endswith("q_proj.weight"):
            heads = dec["num_attention_heads"]
        elif family == "llama" and name.endswith("k_proj.weight"):
            heads = dec["num_key_value_heads"]
        raw = np.asarray(g.data)
        if t["quantized"]:
            qtype = Q(g.tensor_type)
            qtypes.add(qtype)
            if qtype not in (Q.TQ1_0, Q.TQ2_0):
                fail(f"{g.name}: expected TQ1_0 or TQ2_0, found {qtype.name}")
            want = fp16[name].astype(np.float32).reshape(shape)
            if heads is not None:
                want = permute(want, heads)
            # (1) dequantize(file bytes) == f32(fp16 values), bit for bit.
            got = gguf.quants.dequantize(raw, qtype).reshape(shape)
            diff = first_difference(got.view(np.uint32), want.view(np.uint32))
            if diff:
                fail(f"{g.name} ({name}): dequantized {qtype.name} differs from fp16.safetensors at {diff}")
            # (2) quantize(fp16 values as f32) == file bytes.
            requant = gguf.quants.quantize(want, qtype)
            diff = first_difference(requant.view(np.uint8), raw.view(np.uint8))
            if diff:
                fail(f"{g.name} ({name}): gguf.quants.quantize bytes differ from the file at byte {diff}")
            n_quantized += 1
            block_bytes = 54 if qtype == Q.TQ1_0 else 66
            d = raw.view(np.uint8).reshape(-1, block_bytes)[:, -2:].copy().view(np.float16)
            zero_blocks += int(np.count_nonzero(d == 0))
        else:
            # (3) the stored F32 values (or their f16 rounding).
            stored = ternary[name].reshape(shape)
            if heads is not None:
                stored = permute(stored, heads)
            if g.tensor_type == Q.F32:
                want, got = stored.view(np.uint32), np.asarray(raw, dtype=np.float32).reshape(shape).view(np.uint32)
            elif g.tensor_type == Q.F16:
                want = stored.astype(np.float16).view(np.uint16)
                got = np.asarray(raw, dtype=np.float16).reshape(shape).view(np.uint16)
            else:
                fail(f"{g.name}: expected F32 or F16, found {Q(g.tensor_type).name}")
            diff = first_difference(got, want)
            if diff:
                fail(f"{g.name} ({name}): values differ from ternary.safetensors at {diff}")
            n_float += 1
    if len(qtypes) > 1:
        fail(f"quantized tensors of several types: {sorted(q.name for q in qtypes)}")
    qname = next(iter(qtypes)).name if qtypes else "-"
    print(f"ok {n_quantized} {qname} tensors: gguf.quants.dequantize == f32(fp16.safetensors) bit for bit")
    print(f"ok {n_quantized} {qname} tensors: gguf.quants.quantize(fp16 values) == the file's bytes"
          f" ({zero_blocks} blocks of zeros with d = 0 among them)")
    print(f"ok {n_float} float tensors equal the bundle's stored values")

    # (4) hyperparameters.
    want = {
        "general.alignment": 32,
        f"{arch}.vocab_size": dec["vocab_size"],
        f"{arch}.embedding_length": dec["hidden_size"],
        f"{arch}.feed_forward_length": dec["intermediate_size"],
        f"{arch}.block_count": dec["num_hidden_layers"],
        f"{arch}.attention.head_count": dec["num_attention_heads"],
        f"{arch}.attention.head_count_kv": dec["num_key_value_heads"],
        f"{arch}.attention.key_length": dec["head_dim"],
        f"{arch}.attention.value_length": dec["head_dim"],
        f"{arch}.rope.dimension_count": dec["head_dim"],
        f"{arch}.rope.freq_base": np.float32(dec["rope_theta"]),
        f"{arch}.attention.layer_norm_rms_epsilon": np.float32(dec["rms_norm_eps"]),
        "tokenizer.ggml.model": "none",
    }
    if arch == "bitnet":
        want["bitnet.hidden_activation"] = "relu2"
    for key, value in want.items():
        found = field(reader, key)
        if isinstance(value, np.float32):
            same = np.float32(found).view(np.uint32) == value.view(np.uint32)
        else:
            same = found == value
        if not same:
            fail(f"metadata {key}: expected {value!r}, found {found!r}")
    if field(reader, f"{arch}.context_length") < 1:
        fail(f"metadata {arch}.context_length: expected >= 1")
    if ("output.weight" in tensors) == dec["tie_word_embeddings"]:
        fail(f"output.weight present: {'output.weight' in tensors}, tie_word_embeddings {dec['tie_word_embeddings']}")
    print(f"ok {len(want) + 1} hyperparameters equal the bundle's config ({arch})")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("dir")
    m.add_argument("--family", choices=["llama", "bitnet"], required=True)
    m.add_argument("--untied", action="store_true")
    m.add_argument("--seed", type=int, default=0)
    c = sub.add_parser("check")
    c.add_argument("bundle")
    c.add_argument("file")
    args = p.parse_args()
    make(args) if args.cmd == "make" else check(args)


if __name__ == "__main__":
    main()
