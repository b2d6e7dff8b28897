#!/usr/bin/env python3
"""By hand, not in CI: llama.cpp (llama-cpp-python, built from its sdist) runs a GGUF file that
`bundle export --format gguf` wrote, and its logits are compared with the bundle's reference
model on the same token ids (`bundle run --path ternary`).

    python3 scripts/llama_cpp_check.py BUNDLE FILE.gguf [--bundle-bin PATH] [--seqs 8] [--len 32]

Prints, over every position of every sequence: argmax agreement, the largest absolute logit
difference, and the largest difference relative to the reference logits' spread (max - min of
each row). Token ids are drawn uniformly from the vocabulary with a fixed seed.
Needs numpy, safetensors and llama_cpp (pip install --no-binary llama-cpp-python llama-cpp-python).
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

import llama_cpp


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle")
    ap.add_argument("gguf")
    ap.add_argument("--bundle-bin", default="target/release/bundle")
    ap.add_argument("--seqs", type=int, default=8)
    ap.add_argument("--len", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokens", help="a .safetensors with input_ids I64 [N, T] to use instead")
    ap.add_argument("--bitnet-silu", action="store_true",
                    help="compare with the bundle's BitNet model computed with SiLU in the FFN "
                         "(scripts/decoder_numpy.py), as mainline llama.cpp's bitnet graph does")
    args = ap.parse_args()
    manifest = json.loads((Path(args.bundle) / "manifest.json").read_text())
    vocab = manifest["model"]["decoder"]["vocab_size"]
    if args.tokens:
        ids = load_file(args.tokens)["input_ids"].astype(np.int64)
    else:
        ids = np.random.default_rng(args.seed).integers(0, vocab, size=(args.seqs, args.len), dtype=np.int64)
    with tempfile.TemporaryDirectory() as t:
        save_file({"input_ids": ids}, f"{t}/in.safetensors")
        subprocess.run([args.bundle_bin, "run", args.bundle, "--path", "ternary",
                        "--input", f"{t}/in.safetensors", "--out", f"{t}/out.safetensors"],
                       check=True, stdout=subprocess.DEVNULL)
        ref = load_file(f"{t}/out.safetensors")["logits"]
        if args.bitnet_silu:
            sys.path.insert(0, str(Path(__file__).parent))
            from decoder_numpy import forward
            subprocess.run([args.bundle_bin, "export", args.bundle, "--dtype", "f32",
                            "--out", f"{t}/w.safetensors"], check=True, stdout=subprocess.DEVNULL)
            d = manifest["model"]["decoder"]
            c = dict(d, rope_parameters={"rope_theta": d["rope_theta"]})
            ref = forward(c, "bitnet", load_file(f"{t}/w.safetensors"), ids, bitnet_act="silu")
    llm = llama_cpp.Llama(model_path=args.gguf, n_ctx=max(64, ids.shape[1]), logits_all=True,
                          n_threads=2, verbose=False, n_batch=max(64, ids.shape[1]))
    agree = total = 0
    max_abs = max_rel = 0.0
    for n, seq in enumerate(ids):
        llm.reset()
        llm.eval([int(x) for x in seq])
        got = np.array(llm.scores[: len(seq)], dtype=np.float32)
        want = ref[n]
        agree += int((got.argmax(-1) == want.argmax(-1)).sum())
        total += len(seq)
        diff = np.abs(got - want)
        max_abs = max(max_abs, float(diff.max()))
        spread = want.max(-1) - want.min(-1)
        max_rel = max(max_rel, float((diff.max(-1) / spread).max()))
    against = "the bundle's model with SiLU (numpy)" if args.bitnet_silu else "bundle run --path ternary"
    print(f"{Path(args.gguf).name}: llama.cpp {llama_cpp.__version__} vs {against} on "
          f"{ids.shape[0]} x {ids.shape[1]} tokens: argmax agreement {agree}/{total} "
          f"({100 * agree / total:.2f}%), max |diff| {max_abs:.4g}, max |diff| / row spread {max_rel:.4g}")


if __name__ == "__main__":
    sys.exit(main())
