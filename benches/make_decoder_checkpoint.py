#!/usr/bin/env python3
"""Writes a model directory shaped like BitNet b1.58 2B4T by streaming (never committed): the
real config (hidden 2560, intermediate 6912, 30 layers, 20 heads, 5 KV heads, vocab 128,256,
tied embeddings, rope_theta 5e5; 2,412,820,480 parameters), synthetic BF16 weights in one
model.safetensors of 4.8 GB, in transformers' names, one block of rows in memory at a time.

    python3 benches/make_decoder_checkpoint.py OUT_DIR [--layers N] [--seed S]

Projections are standard normal / sqrt(in_features), embeddings standard normal, norm weights
1; BF16 by round-to-nearest-even of the f32 values. --layers makes a shallower model of the
same widths (for a quick run).
"""
import argparse
import json
import struct
import sys
from pathlib import Path

import numpy as np

CONFIG = {
    "architectures": ["BitNetForCausalLM"], "model_type": "bitnet", "vocab_size": 128256,
    "hidden_size": 2560, "intermediate_size": 6912, "num_hidden_layers": 30,
    "num_attention_heads": 20, "num_key_value_heads": 5, "head_dim": 128, "hidden_act": "relu2",
    "rms_norm_eps": 1e-5, "rope_parameters": {"rope_theta": 500000.0, "rope_type": "default"},
    "max_position_embeddings": 4096, "tie_word_embeddings": True, "attention_bias": False,
    "torch_dtype": "bfloat16",
}
ROWS_PER_BLOCK = 2048


def shapes(c):
    h, i, hd = c["hidden_size"], c["intermediate_size"], c["head_dim"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    out = [("model.embed_tokens.weight", [c["vocab_size"], h])]
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        out += [(p + "input_layernorm.weight", [h]), (p + "self_attn.q_proj.weight", [q, h]),
                (p + "self_attn.k_proj.weight", [kv, h]), (p + "self_attn.v_proj.weight", [kv, h]),
                (p + "self_attn.attn_sub_norm.weight", [h]), (p + "self_attn.o_proj.weight", [h, q]),
                (p + "post_attention_layernorm.weight", [h]), (p + "mlp.gate_proj.weight", [i, h]),
                (p + "mlp.up_proj.weight", [i, h]), (p + "mlp.ffn_sub_norm.weight", [i]),
                (p + "mlp.down_proj.weight", [h, i])]
    return out + [("model.norm.weight", [h])]


def bf16_bytes(x):
    """Round-to-nearest-even f32 -> bf16, little-endian bytes."""
    bits = x.astype("<f4").view("<u4")
    bits = bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))
    return (bits >> np.uint32(16)).astype("<u2").tobytes()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--layers", type=int, default=CONFIG["num_hidden_layers"])
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    c = dict(CONFIG, num_hidden_layers=args.layers)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(c, indent=1))
    tensors, offset, header = shapes(c), 0, {"__metadata__": {"format": "pt"}}
    for name, shape in tensors:
        size = 2 * int(np.prod(shape))
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    rng = np.random.default_rng(args.seed)
    with open(out / "model.safetensors", "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name, shape in tensors:
            if len(shape) == 1:
                f.write(bf16_bytes(np.ones(shape, dtype=np.float32)))
                continue
            rows, cols = shape
            scale = np.float32(1.0 if "embed" in name else 1.0 / np.sqrt(cols))
            for r in range(0, rows, ROWS_PER_BLOCK):
                block = rng.standard_normal((min(ROWS_PER_BLOCK, rows - r), cols), dtype=np.float32)
                f.write(bf16_bytes(block * scale))
    params = sum(int(np.prod(s)) for _, s in tensors)
    print(f"wrote {out}: {c['num_hidden_layers']} layers, {params:,} parameters, {8 + len(raw) + offset:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
