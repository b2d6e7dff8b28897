#!/usr/bin/env python3
"""An independent numpy implementation of the decoder reference model (Llama and BitNet
b1.58, as src/model/decoder.rs documents it and transformers computes it), and of the absmean
quantization of its projections (spec section 7), to check the Rust code in CI.

    python3 scripts/decoder_numpy.py make DIR --family llama|bitnet [--shards K] [--tied] [--seed S]
            [--dtype f32|bf16] [--task]
        writes a random model directory in transformers' layout and naming: config.json and
        model.safetensors (or K shards and model.safetensors.index.json), F32 or BF16, and
        DIR/ids.safetensors (input_ids I64 [3, 9]); with --task, weights that do a task and
        DIR/data.safetensors, a validation set of token sequences with difficulty levels
    python3 scripts/decoder_numpy.py check DIR OUT.safetensors
        recomputes `logits` (original weights), `logits_ternary` (t * scale) and `logits_fp16` (f16(t * scale); other tensors F16-rounded) of
        `cargo run --example decoder_logits -- DIR DIR/ids.safetensors OUT.safetensors`
        and requires each within 1e-4 of the largest |logit|
"""
import argparse
import json
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

SHAPE = dict(vocab_size=53, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, head_dim=8, rms_norm_eps=1e-5)
PROJECTIONS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def tensor_shapes(c, family):
    h, i, hd = c["hidden_size"], c["intermediate_size"], c["head_dim"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    out = {"model.embed_tokens.weight": (c["vocab_size"], h), "model.norm.weight": (h,)}
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        out.update({p + "input_layernorm.weight": (h,), p + "self_attn.q_proj.weight": (q, h),
                    p + "self_attn.k_proj.weight": (kv, h), p + "self_attn.v_proj.weight": (kv, h),
                    p + "self_attn.o_proj.weight": (h, q), p + "post_attention_layernorm.weight": (h,),
                    p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h),
                    p + "mlp.down_proj.weight": (h, i)})
        if family == "bitnet":
            out[p + "self_attn.attn_sub_norm.weight"] = (h,)
            out[p + "mlp.ffn_sub_norm.weight"] = (i,)
    if not c["tie_word_embeddings"]:
        out["lm_head.weight"] = (c["vocab_size"], h)
    return out


def task_weights(c, family, rng):
    """A model that does a task, built rather than trained: the residual stream carries the
    token's embedding (rows of RMS 1), every layer adds a small contribution (o_proj and
    down_proj of RMS 0.1 / sqrt(fan-in)), and the head reads the next token off it: tied
    embeddings repeat the token (copy), an untied lm_head whose row y is the embedding of
    succ^-1(y) predicts succ(x) = (7x + 3) mod V (successor). So the quantized projections
    change small terms and the decisions, with their margins, mostly survive."""
    out = {}
    for name, shape in tensor_shapes(c, family).items():
        if len(shape) == 1:
            out[name] = (1.0 + 0.05 * rng.standard_normal(shape)).astype(np.float32)
        elif name.endswith(("o_proj.weight", "down_proj.weight")):
            out[name] = (0.1 / np.sqrt(shape[1]) * rng.standard_normal(shape)).astype(np.float32)
        else:
            out[name] = (rng.standard_normal(shape) / np.sqrt(shape[1])).astype(np.float32)
    v = c["vocab_size"]
    out["model.embed_tokens.weight"] = rng.standard_normal((v, c["hidden_size"])).astype(np.float32)
    if not c["tie_word_embeddings"]:
        succ = (7 * np.arange(v) + 3) % v
        inverse = np.argsort(succ)
        out["lm_head.weight"] = out["model.embed_tokens.weight"][inverse].copy()
    return out


def task_data(c, rng, n, t):
    """n sequences of t tokens following the task's rule (repeat when tied, succ otherwise),
    each next token replaced by a uniform one with probability 0.06 * (d - 1) at difficulty d
    (1..10, cycling over the sequences)."""
    v = c["vocab_size"]
    step = (lambda x: x) if c["tie_word_embeddings"] else (lambda x: (7 * x + 3) % v)
    difficulty = (np.arange(n) % 10 + 1).astype(np.uint8)
    ids = np.zeros((n, t), dtype=np.int64)
    ids[:, 0] = rng.integers(0, v, n)
    for p in range(1, t):
        noise = rng.random(n) < 0.06 * (difficulty - 1)
        ids[:, p] = np.where(noise, rng.integers(0, v, n), step(ids[:, p - 1]))
    return ids, difficulty


def bf16_bytes(x):
    """f32 values rounded to bfloat16 (nearest, ties to even), as little-endian bytes."""
    b = x.astype("<f4").view("<u4").astype(np.uint64)
    b = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
    return b.astype("<u2").tobytes()


def save(tensors, path, dtype):
    """model safetensors via the Python safetensors package: F32, or BF16 through its
    serialize_file (numpy has no bfloat16)."""
    if dtype == "f32":
        save_file(tensors, str(path), metadata={"format": "pt"})
    else:
        from safetensors import TensorSpec, serialize_file
        raw = {n: np.frombuffer(bf16_bytes(v), dtype=np.uint16) for n, v in tensors.items()}
        specs = {n: TensorSpec(dtype="bfloat16", shape=tensors[n].shape, data_ptr=b.ctypes.data,
                               data_len=b.nbytes) for n, b in raw.items()}
        serialize_file(specs, str(path), metadata={"format": "pt"})


def make(args):
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    c = dict(SHAPE, model_type=args.family, tie_word_embeddings=args.tied,
             hidden_act="silu" if args.family == "llama" else "relu2",
             rope_parameters={"rope_theta": 10000.0 if args.family == "llama" else 500000.0, "rope_type": "default"})
    (d / "config.json").write_text(json.dumps(c, indent=1))
    if args.task:
        tensors = task_weights(c, args.family, rng)
    else:
        tensors = {}
        for name, shape in tensor_shapes(c, args.family).items():
            v = rng.standard_normal(shape).astype(np.float32) * np.float32(0.3)
            tensors[name] = (v + np.float32(1.0)) if len(shape) == 1 else v
    names = sorted(tensors)
    if args.shards == 1:
        save(tensors, d / "model.safetensors", args.dtype)
    else:
        weight_map = {}
        for k in range(args.shards):
            file = f"model-{k + 1:05d}-of-{args.shards:05d}.safetensors"
            part = {n: tensors[n] for n in names[k :: args.shards]}
            save(part, d / file, args.dtype)
            weight_map.update({n: file for n in part})
        (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    ids = rng.integers(0, c["vocab_size"], size=(3, 9), dtype=np.int64)
    save_file({"input_ids": ids}, str(d / "ids.safetensors"))
    if args.task:
        ids, difficulty = task_data(c, rng, 100, 16)
        save_file({"input_ids": ids, "difficulty": difficulty}, str(d / "data.safetensors"))
    print(f"{d}: {args.family}, {sum(v.size for v in tensors.values())} parameters, {args.shards} file(s), {args.dtype}")
    return 0


def rmsnorm(x, w, eps):
    ms = (x.astype(np.float64) ** 2).mean(-1, keepdims=True)
    return (x * (1.0 / np.sqrt(ms + eps)).astype(np.float32)) * w


def forward(c, family, W, ids, bitnet_act="relu2"):
    """Logits [N, T, V] in f32, step by step as transformers' modeling code computes them.
    `bitnet_act="silu"` computes a BitNet model with SiLU in its FFN, as mainline llama.cpp's
    bitnet graph does (scripts/llama_cpp_check.py)."""
    hd, heads, kvh = c["head_dim"], c["num_attention_heads"], c["num_key_value_heads"]
    eps, theta = c["rms_norm_eps"], c["rope_parameters"]["rope_theta"]
    n, t = ids.shape
    inv_freq = (1.0 / (np.float32(theta) ** (np.arange(0, hd, 2, dtype=np.float32) / np.float32(hd)))).astype(np.float32)
    ang = np.arange(t, dtype=np.float32)[:, None] * inv_freq[None, :]
    cos, sin = np.cos(ang), np.sin(ang)

    def rope(x):  # [N, T, heads, hd]
        x1, x2 = x[..., : hd // 2], x[..., hd // 2 :]
        c_, s_ = cos[None, :, None, :], sin[None, :, None, :]
        return np.concatenate([x1 * c_ - x2 * s_, x2 * c_ + x1 * s_], -1)

    h = W["model.embed_tokens.weight"][ids]
    mask = np.triu(np.full((t, t), -np.inf, dtype=np.float32), 1)
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        n1 = rmsnorm(h, W[p + "input_layernorm.weight"], eps)
        q = rope((n1 @ W[p + "self_attn.q_proj.weight"].T).reshape(n, t, heads, hd))
        k = rope((n1 @ W[p + "self_attn.k_proj.weight"].T).reshape(n, t, kvh, hd))
        v = (n1 @ W[p + "self_attn.v_proj.weight"].T).reshape(n, t, kvh, hd)
        k, v = np.repeat(k, heads // kvh, axis=2), np.repeat(v, heads // kvh, axis=2)
        s = np.einsum("nqhd,nkhd->nhqk", q, k) / np.float32(np.sqrt(hd)) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        a = np.einsum("nhqk,nkhd->nqhd", s / s.sum(-1, keepdims=True), v).reshape(n, t, heads * hd)
        if family == "bitnet":
            a = rmsnorm(a, W[p + "self_attn.attn_sub_norm.weight"], eps)
        h = h + a @ W[p + "self_attn.o_proj.weight"].T
        n2 = rmsnorm(h, W[p + "post_attention_layernorm.weight"], eps)
        g, u = n2 @ W[p + "mlp.gate_proj.weight"].T, n2 @ W[p + "mlp.up_proj.weight"].T
        if family == "llama":
            m = g / (np.float32(1) + np.exp(-g)) * u
        else:
            act = np.maximum(g, 0) ** 2 if bitnet_act == "relu2" else g / (np.float32(1) + np.exp(-g))
            m = rmsnorm(act * u, W[p + "mlp.ffn_sub_norm.weight"], eps)
        h = h + m @ W[p + "mlp.down_proj.weight"].T
    head = W["model.embed_tokens.weight"] if c["tie_word_embeddings"] else W["lm_head.weight"]
    return rmsnorm(h, W["model.norm.weight"], eps) @ head.T


def absmean_channel(w):
    """Trits and per-row scales by spec section 7 (epsilon 1e-5, threshold 0.5)."""
    gamma = (np.cumsum(np.abs(w).astype(np.float64), axis=1)[:, -1] / np.float64(w.shape[1])).astype(np.float32)
    scale = np.maximum(gamma, np.float32(1e-5))
    x = w * (np.float32(1) / scale)[:, None]
    return np.where(x > 0.5, 1, np.where(x < -0.5, -1, 0)).astype(np.float32), scale


def check(args):
    d = Path(args.dir)
    c = json.loads((d / "config.json").read_text())
    family = c["model_type"]
    W = {}
    if (d / "model.safetensors.index.json").exists():
        for file in set(json.loads((d / "model.safetensors.index.json").read_text())["weight_map"].values()):
            W.update(load_file(str(d / file)))
    else:
        W = load_file(str(d / "model.safetensors"))
    ids = load_file(str(d / "ids.safetensors"))["input_ids"]
    out = load_file(args.out)
    ternary, fp16 = {}, {}
    for name, w in W.items():
        if any(name.endswith(p + ".weight") for p in PROJECTIONS):
            t, s = absmean_channel(w)
            ternary[name] = (t, s)
            fp16[name] = (t * s[:, None]).astype(np.float16).astype(np.float32)
        else:
            fp16[name] = w.astype(np.float16).astype(np.float32)

    def ternary_forward():
        # The projections as t * scale in f32: the ternary path's product (trits, then the
        # scales) in another rounding order, well within the tolerance.
        dense = dict(W)
        for name, (t, s) in ternary.items():
            dense[name] = t * s[:, None]
        return forward(c, family, dense, ids)

    results = {"logits": forward(c, family, W, ids), "logits_fp16": forward(c, family, fp16, ids),
               "logits_ternary": ternary_forward()}
    worst = {}
    for key, want in results.items():
        got = out[key]
        assert got.shape == want.shape, f"{key}: shape {got.shape}, numpy {want.shape}"
        err = float(np.abs(got - want).max() / np.abs(want).max())
        assert err <= 1e-4, f"{key}: differs from numpy by {err:.2e} of the largest |logit|"
        worst[key] = err
    agree = float((results["logits_fp16"].argmax(-1) == results["logits_ternary"].argmax(-1)).mean())
    print(f"ok   {d} ({family}): " + ", ".join(f"{k} within {v:.1e}" for k, v in worst.items())
          + f" of numpy's; ternary/FP16 next-token agreement {agree:.3f}")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("dir")
    m.add_argument("--family", choices=["llama", "bitnet"], required=True)
    m.add_argument("--shards", type=int, default=1)
    m.add_argument("--tied", action="store_true")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    m.add_argument("--task", action="store_true",
                   help="weights that do a task (copy when tied, successor when untied) and DIR/data.safetensors: 100 sequences of 16 tokens, difficulty 1..10")
    k = sub.add_parser("check")
    k.add_argument("dir")
    k.add_argument("out")
    args = ap.parse_args()
    return make(args) if args.cmd == "make" else check(args)


if __name__ == "__main__":
    sys.exit(main())
