"""By hand (needs torch and transformers, too heavy for CI): a decoder bundle's fp16.safetensors,
with a config.json built from its manifest's model.decoder, loads with transformers'
from_pretrained (LlamaForCausalLM / BitNetForCausalLM), and its logits equal those of
`bundle run --path fp16` within 1e-4 of the largest |logit|.

    bundle run BUNDLE --input IDS.safetensors --out RUN.safetensors --path fp16
    python3 scripts/torch_bundle.py BUNDLE IDS.safetensors RUN.safetensors WORK_DIR
"""
import json, shutil, sys
from pathlib import Path
import numpy as np, torch
from safetensors.numpy import load_file
from transformers import AutoModelForCausalLM

bundle, ids_file, run_file, work = map(Path, sys.argv[1:5])
d = json.loads((bundle / "manifest.json").read_text())["model"]["decoder"]
work.mkdir(parents=True, exist_ok=True)
cfg = dict(model_type=d["family"], vocab_size=d["vocab_size"], hidden_size=d["hidden_size"],
           intermediate_size=d["intermediate_size"], num_hidden_layers=d["num_hidden_layers"],
           num_attention_heads=d["num_attention_heads"], num_key_value_heads=d["num_key_value_heads"],
           head_dim=d["head_dim"], rms_norm_eps=d["rms_norm_eps"], tie_word_embeddings=d["tie_word_embeddings"],
           rope_parameters={"rope_theta": d["rope_theta"], "rope_type": "default"},
           hidden_act="relu2" if d["family"] == "bitnet" else "silu",
           architectures=["BitNetForCausalLM" if d["family"] == "bitnet" else "LlamaForCausalLM"])
(work / "config.json").write_text(json.dumps(cfg))
shutil.copy(bundle / "fp16.safetensors", work / "model.safetensors")
model = AutoModelForCausalLM.from_pretrained(work, dtype=torch.float32).eval()
ids = torch.from_numpy(load_file(ids_file)["input_ids"])
with torch.no_grad():
    ours = model(input_ids=ids).logits.numpy()
theirs = load_file(run_file)["logits"]
rel = np.abs(ours - theirs).max() / np.abs(ours).max()
print(f"{bundle}: {type(model).__name__} from fp16.safetensors + config.json; logits {ours.shape} within {rel:.2e} of bundle run (largest |logit|)")
assert rel < 1e-4, rel
