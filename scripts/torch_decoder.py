#!/usr/bin/env python3
"""By-hand oracle for the decoder reference model (src/model/decoder.rs): builds tiny random
LlamaForCausalLM and BitNetForCausalLM models with transformers, saves each with
save_pretrained (config.json + model.safetensors, F32) and writes the logits transformers
computes on random token ids. Not in CI: torch's wheels are several GB.

    pip install torch transformers safetensors
    python3 scripts/torch_decoder.py OUT_DIR
    DECODER_ORACLE=OUT_DIR cargo test --release --test suite decoder:: -- --ignored

Writes OUT_DIR/{llama,bitnet}/ (the model), OUT_DIR/{llama,bitnet}-sharded/ (the same in
shards of 100 KB with model.safetensors.index.json), OUT_DIR/{llama,bitnet}-bf16/ (its weights
in BF16; the oracle is transformers loading them in f32) and oracle.safetensors in each (input_ids
I64 [N, T], logits F32 [N, T, V]).
"""
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import BitNetConfig, BitNetForCausalLM, LlamaConfig, LlamaForCausalLM


def main() -> int:
    out = Path(sys.argv[1])
    torch.manual_seed(0)
    shape = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-5,
                 max_position_embeddings=64)
    models = {
        "llama": LlamaForCausalLM(LlamaConfig(**shape, rope_theta=10000.0, tie_word_embeddings=False)),
        "bitnet": BitNetForCausalLM(BitNetConfig(**shape, rope_theta=500000.0, tie_word_embeddings=True)),
    }
    for name, model in models.items():
        model = model.float().eval()
        with torch.no_grad():
            for p in model.parameters():
                p.normal_(0.0, 0.2)  # norm weights too, so that a missing norm shows
        d = out / name
        model.save_pretrained(d, safe_serialization=True)
        ids = torch.randint(0, shape["vocab_size"], (3, 11))
        with torch.no_grad():
            logits = model(input_ids=ids).logits.float()
        save_file({"input_ids": ids.to(torch.int64), "logits": logits.contiguous()}, str(d / "oracle.safetensors"))
        print(f"{d}: {sum(p.numel() for p in model.parameters())} parameters, logits {tuple(logits.shape)}")
        # The same model in shards with an index, as large checkpoints are published.
        sharded = out / f"{name}-sharded"
        model.save_pretrained(sharded, safe_serialization=True, max_shard_size="100KB")
        save_file({"input_ids": ids.to(torch.int64), "logits": logits.contiguous()}, str(sharded / "oracle.safetensors"))
        # The same weights in BF16 (as BitNet 2B4T's master weights are published); the oracle
        # is transformers loading that directory in f32 (weights upcast exactly, RoPE computed
        # afresh in f32).
        bf16 = out / f"{name}-bf16"
        model.to(torch.bfloat16).save_pretrained(bf16, safe_serialization=True)
        loaded = type(model).from_pretrained(bf16, dtype=torch.float32).eval()
        with torch.no_grad():
            rounded = loaded(input_ids=ids).logits.float()
        save_file({"input_ids": ids.to(torch.int64), "logits": rounded.contiguous()}, str(bf16 / "oracle.safetensors"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
