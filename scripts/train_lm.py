#!/usr/bin/env python3
"""Trains the small character-level Llama language model of fixtures/lm/ with ternary
quantization-aware training, and writes it as a user would hand it to `bundle create`.

    python3 scripts/train_lm.py OUT_DIR [--steps N] [--seed S]

reads fixtures/lm/corpus.txt (training text) and fixtures/lm/validation.txt (held out; used
for the tokenizer's vocabulary and the report only) and writes into OUT_DIR:

  tokenizer.json     a Hugging Face `tokenizers` file: one id per character, id = index of the
                     character in the sorted set of characters of corpus.txt and validation.txt
                     (a WordLevel model behind a Split pre-tokenizer that isolates every
                     character; no normalizer, no special tokens, a Fuse decoder so decode()
                     round-trips)
  config.json        LlamaForCausalLM (keys sorted, indent 2)
  model.safetensors  the F32 MASTER weights in transformers' names (safetensors.numpy.save_file)

The defaults reproduce the committed fixtures/lm/ files byte for byte (on the same package
versions and CPU; XLA's float arithmetic is deterministic run to run on one machine).

Model: transformers' LlamaForCausalLM, vocab 63, hidden 96, 4 layers, 4 attention heads and 2
KV heads (GQA) of head_dim 24, SwiGLU MLP of 256, RMSNorm eps 1e-5, RoPE theta 10000
(rotate_half), untied lm_head, no biases: 418,464 parameters, 405,504 of them in the 28
projections. Init: embeddings and lm_head N(0, 0.02^2), projections N(0, 1/fan_in), norms 1.

Quantization-aware training: in the forward pass every projection (q, k, v, o, gate, up, down
of every layer) is its ternary quantization per output row, exactly as `bundle create`
quantizes it (spec section 7, channel granularity): gamma = mean |w_row| (float64, rounded to
f32), scale = max(gamma, 1e-5), x = w * (1/scale) in f32, t = +1 if x > 0.5, -1 if x < -0.5,
else 0, W_q = t * scale. Gradients pass straight through to the master weights (the forward
uses stop_gradient(W_q) + (W - stop_gradient(W)), whose value is W_q exactly). Embeddings,
norms and lm_head stay full precision. So the model that was trained is the ternary forward of
the committed master weights: `bundle create --original-forward ternary` is its faithful
original.

Data: batches of 32 sequences of 128 characters (129 with the last target). 12 of the 32 are
"repeat" sequences: a random chunk of real text of length L (uniform in 8..32) repeated until
the sequence is full, so the model must learn to copy from its context (induction heads, which
need attention, positions and at least two layers); the other 20 are random windows of the
corpus. AdamW (beta 0.9/0.95, eps 1e-8, weight decay 0.05 on matrices), learning rate 3e-3
with 100 linear warmup steps and a cosine decay to 3e-4, gradient clipping at global norm 1.
All randomness comes from numpy generators seeded by --seed.

After training the script evaluates the ternary forward in numpy (float32, transformers'
order of operations) on validation.txt: per-character cross-entropy and top-1 accuracy on
plain 128-character windows and on repeat-format sequences built from validation.txt, and the
mean KL(P_model || P_mutated) over 64-character windows for mutations of the model (the
rope_theta, the eps, a norm, some rows' scales, a layer removed, attention heads swapped), to
show that every part of it matters.

Packages used (pinned): Python 3.11.7, jax==0.10.2, jaxlib==0.10.2, numpy==2.4.6,
safetensors==0.8.0, tokenizers==0.23.3 (for the tokenizer self-check). On 2 CPU cores the
default 3000 steps took 20 minutes (0.3 to 0.45 s a step), the evaluation and the mutation
report about 2 more (23 minutes in all); --no-kl skips the mutation report.
"""
import argparse
import json
import math
import sys
import time
from pathlib import Path


import numpy as np
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "fixtures" / "lm"

SHAPE = dict(hidden_size=96, intermediate_size=256, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, head_dim=24)
EPS, THETA, SEQ, MAX_POS = 1e-5, 10000.0, 128, 128
BATCH, REPEATS = 32, 12
LR, LR_MIN, WARMUP, WD, CLIP = 3e-3, 3e-4, 100, 0.05, 1.0
STEPS, SEED = 3000, 1158
PROJ = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


# ----------------------------------------------------------------------------- data, tokenizer

def read_text(path):
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def tokenizer_json(chars):
    return {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": None,
        "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "[\\s\\S]"},
                          "behavior": "Isolated", "invert": False},
        "post_processor": None, "decoder": {"type": "Fuse"},
        "model": {"type": "WordLevel", "vocab": {c: i for i, c in enumerate(chars)},
                  "unk_token": "<unk>"},
    }


def config_json(vocab):
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
        **SHAPE, "rms_norm_eps": EPS, "rope_theta": THETA, "tie_word_embeddings": False,
        "max_position_embeddings": MAX_POS, "hidden_act": "silu", "torch_dtype": "float32",
        "attention_bias": False, "mlp_bias": False,
    }


def repeat_seq(ids, start, length, total):
    chunk = ids[start:start + length]
    return np.tile(chunk, total // length + 1)[:total]


def batch(rng, ids):
    """BATCH sequences of SEQ + 1 ids: the first REPEATS repeat-format, the rest plain."""
    out = np.empty((BATCH, SEQ + 1), dtype=np.int32)
    for b in range(BATCH):
        if b < REPEATS:
            length = int(rng.integers(8, 33))
            out[b] = repeat_seq(ids, int(rng.integers(0, len(ids) - length)), length, SEQ + 1)
        else:
            s = int(rng.integers(0, len(ids) - SEQ - 1))
            out[b] = ids[s:s + SEQ + 1]
    return out


# ----------------------------------------------------------------------------- the weights

def tensor_shapes(v):
    h, i, hd = SHAPE["hidden_size"], SHAPE["intermediate_size"], SHAPE["head_dim"]
    q, kv = SHAPE["num_attention_heads"] * hd, SHAPE["num_key_value_heads"] * hd
    out = {"model.embed_tokens.weight": (v, h)}
    for l in range(SHAPE["num_hidden_layers"]):
        p = f"model.layers.{l}."
        out.update({p + "input_layernorm.weight": (h,), p + "self_attn.q_proj.weight": (q, h),
                    p + "self_attn.k_proj.weight": (kv, h), p + "self_attn.v_proj.weight": (kv, h),
                    p + "self_attn.o_proj.weight": (h, q), p + "post_attention_layernorm.weight": (h,),
                    p + "mlp.gate_proj.weight": (i, h), p + "mlp.up_proj.weight": (i, h),
                    p + "mlp.down_proj.weight": (h, i)})
    out["model.norm.weight"] = (h,)
    out["lm_head.weight"] = (v, h)
    return out


def init(rng, v):
    out = {}
    for name, shape in tensor_shapes(v).items():
        if len(shape) == 1:
            out[name] = np.ones(shape, np.float32)
        elif name in ("model.embed_tokens.weight", "lm_head.weight"):
            out[name] = (0.02 * rng.standard_normal(shape)).astype(np.float32)
        else:
            out[name] = (rng.standard_normal(shape) / np.sqrt(shape[1])).astype(np.float32)
    return out


def is_projection(name):
    return any(name.endswith(p + ".weight") for p in PROJ)


def absmean_channel(w):
    """Trits and per-row scales by spec section 7 (epsilon 1e-5, threshold 0.5), in numpy."""
    gamma = (np.abs(w).astype(np.float64).sum(1) / np.float64(w.shape[1])).astype(np.float32)
    scale = np.maximum(gamma, np.float32(1e-5))
    x = w * (np.float32(1) / scale)[:, None]
    return np.where(x > 0.5, 1, np.where(x < -0.5, -1, 0)).astype(np.float32), scale


# ----------------------------------------------------------------------------- training (jax)

def train(params, ids, steps, seed, log=print):
    import jax
    jax.config.update("jax_enable_x64", True)  # gamma's float64 mean; everything else is f32
    import jax.numpy as jnp

    h, hd = SHAPE["hidden_size"], SHAPE["head_dim"]
    heads, kvh, layers = SHAPE["num_attention_heads"], SHAPE["num_key_value_heads"], SHAPE["num_hidden_layers"]
    f32 = jnp.float32
    inv_freq = (1.0 / (np.float32(THETA) ** (np.arange(0, hd, 2, dtype=np.float32) / np.float32(hd)))).astype(np.float32)
    ang = np.arange(SEQ, dtype=np.float32)[:, None] * inv_freq[None, :]
    cos, sin = jnp.asarray(np.cos(ang)), jnp.asarray(np.sin(ang))
    mask = jnp.asarray(np.triu(np.full((SEQ, SEQ), -np.inf, dtype=np.float32), 1))

    def quant(w):
        gamma = jnp.mean(jnp.abs(w).astype(jnp.float64), axis=1).astype(f32)
        scale = jnp.maximum(gamma, f32(1e-5))
        x = w * (f32(1) / scale)[:, None]
        t = jnp.where(x > 0.5, f32(1), jnp.where(x < -0.5, f32(-1), f32(0)))
        wq = t * scale[:, None]
        return jax.lax.stop_gradient(wq) + (w - jax.lax.stop_gradient(w))

    def rmsnorm(x, w):
        return x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + f32(EPS)) * w

    def rope(x):  # [B, T, heads, hd]
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        c_, s_ = cos[None, :, None, :], sin[None, :, None, :]
        return jnp.concatenate([x1 * c_ - x2 * s_, x2 * c_ + x1 * s_], -1)

    def loss_fn(P, seqs):
        x, y = seqs[:, :-1], seqs[:, 1:]
        b, t = x.shape
        hs = P["model.embed_tokens.weight"][x]
        for l in range(layers):
            p = f"model.layers.{l}."
            W = {k: quant(P[p + k + ".weight"]) for k in PROJ}
            n1 = rmsnorm(hs, P[p + "input_layernorm.weight"])
            q = rope((n1 @ W["self_attn.q_proj"].T).reshape(b, t, heads, hd))
            k = rope((n1 @ W["self_attn.k_proj"].T).reshape(b, t, kvh, hd))
            v = (n1 @ W["self_attn.v_proj"].T).reshape(b, t, kvh, hd)
            k, v = jnp.repeat(k, heads // kvh, axis=2), jnp.repeat(v, heads // kvh, axis=2)
            s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / f32(math.sqrt(hd)) + mask
            a = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, -1), v).reshape(b, t, heads * hd)
            hs = hs + a @ W["self_attn.o_proj"].T
            n2 = rmsnorm(hs, P[p + "post_attention_layernorm.weight"])
            g, u = n2 @ W["mlp.gate_proj"].T, n2 @ W["mlp.up_proj"].T
            hs = hs + (jax.nn.silu(g) * u) @ W["mlp.down_proj"].T
        logits = rmsnorm(hs, P["model.norm.weight"]) @ P["lm_head.weight"].T
        lse = jax.nn.logsumexp(logits, -1)
        tgt = jnp.take_along_axis(logits, y[..., None], -1)[..., 0]
        return jnp.mean(lse - tgt)

    names = sorted(params)
    decay = {n: f32(WD) if params[n].ndim == 2 else f32(0) for n in names}

    @jax.jit
    def step(P, m, v, seqs, lr, t):
        loss, g = jax.value_and_grad(loss_fn)(P, seqs)
        norm = jnp.sqrt(sum(jnp.sum(x * x) for x in g.values()))
        clip = jnp.minimum(f32(1), f32(CLIP) / (norm + f32(1e-6)))
        b1, b2 = f32(0.9), f32(0.95)
        c1, c2 = 1 - b1 ** t, 1 - b2 ** t
        P2, m2, v2 = {}, {}, {}
        for n in names:
            gn = g[n] * clip
            m2[n] = b1 * m[n] + (1 - b1) * gn
            v2[n] = b2 * v[n] + (1 - b2) * gn * gn
            upd = (m2[n] / c1) / (jnp.sqrt(v2[n] / c2) + f32(1e-8))
            P2[n] = P[n] - lr * (upd + decay[n] * P[n])
        return P2, m2, v2, loss

    P = {n: jnp.asarray(params[n]) for n in names}
    m = {n: jnp.zeros_like(P[n]) for n in names}
    v = {n: jnp.zeros_like(P[n]) for n in names}
    rng = np.random.default_rng([seed, 2])
    t0, recent = time.time(), []
    for i in range(1, steps + 1):
        if i <= WARMUP:
            lr = LR * i / WARMUP
        else:
            frac = (i - WARMUP) / max(1, steps - WARMUP)
            lr = LR_MIN + 0.5 * (LR - LR_MIN) * (1 + math.cos(math.pi * frac))
        P, m, v, loss = step(P, m, v, jnp.asarray(batch(rng, ids)), np.float32(lr), np.float32(i))
        recent.append(float(loss))
        if i % 100 == 0 or i == steps:
            log(f"step {i:5d}  loss {np.mean(recent[-100:]):.4f}  lr {lr:.2e}  {time.time() - t0:6.0f} s")
    final = float(np.mean(recent[-100:]))
    return {n: np.asarray(P[n], dtype=np.float32) for n in names}, final, time.time() - t0


# ----------------------------------------------------------------------------- numpy reference

def rmsnorm_np(x, w, eps):
    ms = (x.astype(np.float64) ** 2).mean(-1, keepdims=True)
    return (x * (1.0 / np.sqrt(ms + eps)).astype(np.float32)) * w


def forward_np(W, ids, cfg, skip=()):
    """Logits [N, T, V] in f32, as transformers' LlamaForCausalLM computes them; `W` holds the
    (dequantized) weights; the layers in `skip` are left out."""
    hd, heads, kvh = cfg["head_dim"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    eps, theta = cfg["rms_norm_eps"], cfg["rope_theta"]
    n, t = ids.shape
    inv_freq = (1.0 / (np.float32(theta) ** (np.arange(0, hd, 2, dtype=np.float32) / np.float32(hd)))).astype(np.float32)
    ang = np.arange(t, dtype=np.float32)[:, None] * inv_freq[None, :]
    cos, sin = np.cos(ang), np.sin(ang)

    def rope(x):
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        c_, s_ = cos[None, :, None, :], sin[None, :, None, :]
        return np.concatenate([x1 * c_ - x2 * s_, x2 * c_ + x1 * s_], -1)

    hs = W["model.embed_tokens.weight"][ids]
    mask = np.triu(np.full((t, t), -np.inf, dtype=np.float32), 1)
    for l in range(cfg["num_hidden_layers"]):
        if l in skip:
            continue
        p = f"model.layers.{l}."
        n1 = rmsnorm_np(hs, W[p + "input_layernorm.weight"], eps)
        q = rope((n1 @ W[p + "self_attn.q_proj.weight"].T).reshape(n, t, heads, hd))
        k = rope((n1 @ W[p + "self_attn.k_proj.weight"].T).reshape(n, t, kvh, hd))
        v = (n1 @ W[p + "self_attn.v_proj.weight"].T).reshape(n, t, kvh, hd)
        k, v = np.repeat(k, heads // kvh, axis=2), np.repeat(v, heads // kvh, axis=2)
        s = np.einsum("nqhd,nkhd->nhqk", q, k) / np.float32(np.sqrt(hd)) + mask
        s = np.exp(s - s.max(-1, keepdims=True))
        a = np.einsum("nhqk,nkhd->nqhd", s / s.sum(-1, keepdims=True), v).reshape(n, t, heads * hd)
        hs = hs + a @ W[p + "self_attn.o_proj.weight"].T
        n2 = rmsnorm_np(hs, W[p + "post_attention_layernorm.weight"], eps)
        g, u = n2 @ W[p + "mlp.gate_proj.weight"].T, n2 @ W[p + "mlp.up_proj.weight"].T
        hs = hs + (g / (np.float32(1) + np.exp(-g)) * u) @ W[p + "mlp.down_proj.weight"].T
    return rmsnorm_np(hs, W["model.norm.weight"], eps) @ W["lm_head.weight"].T


def ternary(W):
    """The trits and scales of every projection, and the dense ternary-forward weights."""
    ts, dense = {}, dict(W)
    for name, w in W.items():
        if is_projection(name):
            t, s = absmean_channel(w)
            ts[name] = (t, s)
            dense[name] = t * s[:, None]
    return ts, dense


def log_softmax(z):
    z = z.astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def ce_acc(dense, cfg, seqs, from_pos=None):
    """Mean cross-entropy (nats) and top-1 accuracy of next-char prediction over seqs [N, T+1];
    with from_pos [N], only positions >= from_pos[n] (the repeated copies) count."""
    lp = log_softmax(forward_np(dense, seqs[:, :-1], cfg))
    y = seqs[:, 1:]
    nll = -np.take_along_axis(lp, y[..., None], -1)[..., 0]
    hit = lp.argmax(-1) == y
    keep = np.ones_like(y, dtype=bool)
    if from_pos is not None:
        keep = np.arange(y.shape[1])[None, :] >= from_pos[:, None] - 1
    return float(nll[keep].mean()), float(hit[keep].mean())


def evaluate(W, cfg, val_ids, seed, log=print):
    _, dense = ternary(W)
    n = (len(val_ids) - 1) // SEQ
    plain = np.stack([val_ids[i * SEQ: i * SEQ + SEQ + 1] for i in range(n)])
    rng = np.random.default_rng([seed, 3])
    lens = rng.integers(8, 33, 128)
    rep = np.stack([repeat_seq(val_ids, int(rng.integers(0, len(val_ids) - L)), int(L), SEQ + 1) for L in lens])
    out = {"plain": ce_acc(dense, cfg, plain), "repeat": ce_acc(dense, cfg, rep),
           "repeat_copies": ce_acc(dense, cfg, rep, from_pos=lens)}
    log(f"validation, ternary forward: plain {n} x {SEQ} chars: CE {out['plain'][0]:.4f} nats, top-1 {out['plain'][1]:.4f}")
    log(f"  repeat-format 128 x {SEQ}: CE {out['repeat'][0]:.4f}, top-1 {out['repeat'][1]:.4f}; "
        f"the repeated copies only: CE {out['repeat_copies'][0]:.4f}, top-1 {out['repeat_copies'][1]:.4f}")
    return out


def mutations(W, cfg):
    """(name, cfg, dense weights, skipped layers) of each mutation of the ternary forward."""
    ts, dense = ternary(W)
    hd, kvh = cfg["head_dim"], cfg["num_key_value_heads"]

    def with_scale(name, rows, factor):
        t, s = ts[name]
        s = s.copy()
        s[rows] *= np.float32(factor)
        return {**dense, name: t * s[:, None]}

    def swap_rows(name, a, b):
        w = dense[name].copy()
        w[a * hd:(a + 1) * hd], w[b * hd:(b + 1) * hd] = dense[name][b * hd:(b + 1) * hd], dense[name][a * hd:(a + 1) * hd]
        return {**dense, name: w}

    out = [("rope_theta x10", {**cfg, "rope_theta": cfg["rope_theta"] * 10}, dense, ()),
           ("rms_norm_eps x1e4", {**cfg, "rms_norm_eps": cfg["rms_norm_eps"] * 1e4}, dense, ()),
           ("layer 0 input_layernorm x4", cfg, {**dense, "model.layers.0.input_layernorm.weight":
                                                  dense["model.layers.0.input_layernorm.weight"] * np.float32(4)}, ())]
    out.append(("layer 1 o_proj: 16 rows' scale x3", cfg,
                with_scale("model.layers.1.self_attn.o_proj.weight", np.arange(16), 3), ()))
    out.append(("layer 0 down_proj: 16 rows' scale x3", cfg,
                with_scale("model.layers.0.mlp.down_proj.weight", np.arange(16), 3), ()))
    for l in range(cfg["num_hidden_layers"]):
        out.append((f"layer {l} removed", cfg, dense, (l,)))
    for l in range(cfg["num_hidden_layers"]):
        out.append((f"layer {l}: q_proj rows of heads 0 and 2 swapped", cfg,
                    swap_rows(f"model.layers.{l}.self_attn.q_proj.weight", 0, 2), ()))
    for l in range(cfg["num_hidden_layers"]):
        out.append((f"layer {l}: k_proj rows of kv heads 0 and 1 swapped", cfg,
                    swap_rows(f"model.layers.{l}.self_attn.k_proj.weight", 0, kvh - 1), ()))
    return dense, out


def mutation_kl(W, cfg, val_ids, log=print, t=64):
    """Mean KL(P_model || P_mutated) (nats) of the next-char distributions over the
    floor(n / t) windows of t characters of the validation text (as `bundle create
    --validation-text --seq-len t` cuts it), every position."""
    n = len(val_ids) // t
    seqs = val_ids[: n * t].reshape(n, t)
    dense, muts = mutations(W, cfg)
    base = log_softmax(forward_np(dense, seqs, cfg))
    res = {}
    for name, c, d, skip in muts:
        lp = log_softmax(forward_np(d, seqs, c, skip))
        res[name] = float((np.exp(base) * (base - lp)).sum(-1).mean())
        log(f"  KL {res[name]:8.4f} nats  {name}")
    return res


# ----------------------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--no-kl", action="store_true", help="skip the mutation report")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    corpus, val = read_text(DATA / "corpus.txt"), read_text(DATA / "validation.txt")
    chars = sorted(set(corpus) | set(val))
    index = {c: i for i, c in enumerate(chars)}
    ids = np.array([index[c] for c in corpus], dtype=np.int32)
    val_ids = np.array([index[c] for c in val], dtype=np.int32)
    tok = tokenizer_json(chars)
    (out / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    try:  # the tokenizer must give exactly these ids and decode back to the text
        from tokenizers import Tokenizer
        t = Tokenizer.from_file(str(out / "tokenizer.json"))
        for text, want in ((corpus, ids), (val, val_ids)):
            enc = t.encode(text).ids
            assert enc == want.tolist() and t.decode(enc) == text, "tokenizer.json does not round-trip"
    except ImportError:
        print("tokenizers not installed: tokenizer.json not checked", file=sys.stderr)

    cfg = config_json(len(chars))
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    params = init(np.random.default_rng([args.seed, 1]), len(chars))
    total = sum(p.size for p in params.values())
    print(f"{len(chars)} characters, {len(ids)} training ids, {len(val_ids)} validation ids; "
          f"{total} parameters ({sum(p.size for n, p in params.items() if is_projection(n))} in projections)")
    W, final, secs = train(params, ids, args.steps, args.seed)
    save_file({n: W[n] for n in sorted(W)}, str(out / "model.safetensors"))
    print(f"trained {args.steps} steps in {secs:.0f} s; final training loss (mean of the last 100 steps) {final:.4f}")
    evaluate(W, cfg, val_ids, args.seed)
    if not args.no_kl:
        print("mutations of the ternary forward, mean KL over the validation text's 64-char windows:")
        mutation_kl(W, cfg, val_ids)
    return 0


if __name__ == "__main__":
    sys.exit(main())
