#!/usr/bin/env bash
# Writes the seed corpora of the fuzz targets from the committed fixtures:
#   manifest/        every fixture's manifest.json
#   bundle/          every fixture bundle as one input (length-prefixed parts, see
#                    ternary_bundle::fuzzing::split_parts)
#   codecs/          a few packed rows of the fixtures
#   verify_numeric/  a few small models (layout: ternary_bundle::fuzzing::verify_numeric), with
#                    and without edits
#   gguf/            GGUF files exported by the bundle tool from small decoder bundles (both
#                    families, TQ1_0, TQ2_0 and I2_S, with and without F16 fallback tensors), one
#                    without the bundle.* keys (a foreign file: scales from the blocks), and one
#                    written here with a key of every value type and a tensor of every type
#   signature/       not written here (committed): model.sig files of the model_signing tool and of
#                    `bundle sign`, broken variants, raw statements
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus/manifest corpus/bundle corpus/codecs corpus/verify_numeric corpus/gguf
python3 - <<'PY'
import os, struct, glob, hashlib
def join(parts):
    out = b""
    for i, p in enumerate(parts):
        if i + 1 < len(parts):
            out += struct.pack("<I", len(p))
        out += p
    return out
for d in sorted(glob.glob("../fixtures/*/*/")):
    name = d.rstrip("/").replace("../fixtures/", "").replace("/", "-")
    files = {f: open(os.path.join(d, f), "rb").read() for f in os.listdir(d)}
    if "manifest.json" in files:
        open(f"corpus/manifest/{name}", "wb").write(files["manifest.json"])
    parts = [files.get(f, b"") for f in ("manifest.json", "ternary.safetensors", "fp16.safetensors", "validation.safetensors")]
    open(f"corpus/bundle/{name}", "wb").write(join(parts))
# codecs: header byte (encoding bit, cols - 1) then rows
open("corpus/codecs/trit5-7cols", "wb").write(bytes([6 << 1]) + bytes([0xF2, 0x06, 0x79, 0x04]))
open("corpus/codecs/trit2-6cols", "wb").write(bytes([(5 << 1) | 1]) + bytes([0x55, 0x02, 0xAA, 0x0A]))
# verify_numeric: flags (bit 0 trit2, bits 1-2 granularity tensor/channel/group, bit 3 validation
# set, bit 4 fixed scales, bits 5-7 activation), group size - 1, epsilon and threshold codes,
# input_dim - 1, layers - 1, then (out_features - 1, flags: 1 bias, 2 rmsnorm, 4 not quantized)
# per layer, then the values (byte codes below 244 are (code - 122) / 32), then edits.
import random
rng = random.Random(7)
def vals(n):
    return bytes(rng.randrange(60, 184) for _ in range(n))
# 7 -> 12 (relu, bias) -> 5 (rmsnorm): 84 + 12 + 60 + 12 values.
two = bytes([0x02, 0, 0, 0, 6, 1, 11, 1, 4, 2]) + vals(84 + 12 + 60 + 12)
open("corpus/verify_numeric/trit5-channel-two-layers", "wb").write(two)
# The same with edits: a scale's top byte, a packed byte, an F16 value.
edits = bytes([0, 0xFF, 0xFF, 0x7F, 0, 3, 0, 0xF3, 1, 9, 0, 0x7C])
open("corpus/verify_numeric/trit5-channel-two-layers-edited", "wb").write(two + edits)
# trit2, groups of 5, gelu, 9 -> 6 (gelu) -> 3 with a validation set of 2 samples.
three = bytes([0x01 | (2 << 1) | 8 | (1 << 5), 4, 1, 2, 8, 1, 5, 1, 2, 0]) + vals(54 + 6 + 18)
three += bytes([1]) + vals(18) + bytes([0, 2])
open("corpus/verify_numeric/trit2-group-validation", "wb").write(three)
# Fixed scales (one per tensor), one layer 4 -> 2, tanh unused (last layer is identity).
fixed = bytes([0x10 | (3 << 5), 0, 0, 0, 3, 0, 1, 0]) + vals(8) + bytes([160])
open("corpus/verify_numeric/tensor-fixed-scale", "wb").write(fixed)
PY
# gguf: model directories (config.json, model.safetensors) written here, made bundles by
# `bundle create`, exported by `bundle export --format gguf`. The smallest models whose rows are
# whole blocks (TQ: 256 columns, I2_S: 128); the "small" ones have projections of 2 columns that
# no block holds (kept as F16 with --allow-float-fallback), so that their files stay small.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
bundle() { cargo run -q --release --manifest-path ../Cargo.toml --bin bundle -- "$@"; }
WORK="$work" python3 - <<'PY'
import json, os, struct
work = os.environ["WORK"]
def model(name, family, hidden, heads, head_dim, kv, inter):
    c = dict(model_type=family, vocab_size=8, hidden_size=hidden, intermediate_size=inter,
             num_hidden_layers=1, num_attention_heads=heads, num_key_value_heads=kv,
             head_dim=head_dim, rms_norm_eps=1e-5, tie_word_embeddings=True,
             hidden_act="silu" if family == "llama" else "relu2",
             rope_parameters={"rope_theta": 10000.0, "rope_type": "default"})
    h, q, k = hidden, heads * head_dim, kv * head_dim
    shapes = {"model.embed_tokens.weight": [8, h], "model.norm.weight": [h]}
    p = "model.layers.0."
    shapes.update({p + "input_layernorm.weight": [h], p + "self_attn.q_proj.weight": [q, h],
                   p + "self_attn.k_proj.weight": [k, h], p + "self_attn.v_proj.weight": [k, h],
                   p + "self_attn.o_proj.weight": [h, q], p + "post_attention_layernorm.weight": [h],
                   p + "mlp.gate_proj.weight": [inter, h], p + "mlp.up_proj.weight": [inter, h],
                   p + "mlp.down_proj.weight": [h, inter]})
    if family == "bitnet":
        shapes[p + "self_attn.attn_sub_norm.weight"] = [h]
        shapes[p + "mlp.ffn_sub_norm.weight"] = [inter]
    x = 12345
    header, data = {}, b""
    for n in sorted(shapes):
        count = 1
        for d in shapes[n]:
            count *= d
        vals = []
        for _ in range(count):
            x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
            v = ((x >> 40) / (1 << 24)) * 2 - 1
            vals.append(1 + v / 2 if len(shapes[n]) == 1 else v)
        header[n] = {"dtype": "F32", "shape": shapes[n], "data_offsets": [len(data), len(data) + 4 * count]}
        data += struct.pack(f"<{count}f", *vals)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    d = os.path.join(work, name)
    os.makedirs(d)
    json.dump(c, open(os.path.join(d, "config.json"), "w"))
    open(os.path.join(d, "model.safetensors"), "wb").write(struct.pack("<Q", len(text)) + text + data)
model("llama", "llama", 256, 2, 128, 1, 256)
model("bitnet", "bitnet", 256, 2, 128, 1, 256)
model("bitnet-128", "bitnet", 128, 1, 128, 1, 128)
model("llama-small", "llama", 256, 1, 2, 1, 2)
model("bitnet-small", "bitnet", 256, 2, 128, 1, 2)
PY
for m in llama bitnet bitnet-128 llama-small bitnet-small; do
    bundle create --from "$work/$m" --out "$work/$m-channel" >/dev/null
    bundle create --from "$work/$m" --out "$work/$m-tensor" --granularity tensor >/dev/null
done
export_gguf() { # BUNDLE TYPE SEED [--allow-float-fallback]; its warnings shown only on failure
    bundle export "$work/$1" --format gguf --type "$2" --no-tokenizer --force \
        --out "corpus/gguf/$3" "${@:4}" >/dev/null 2>"$work/export.err" ||
        { cat "$work/export.err" >&2; exit 1; }
}
export_gguf llama-channel tq1_0 llama-tq1_0
export_gguf bitnet-channel tq2_0 bitnet-tq2_0
export_gguf bitnet-128-tensor i2_s bitnet-i2_s
export_gguf llama-small-channel tq2_0 llama-tq2_0-fallback --allow-float-fallback
export_gguf llama-small-tensor i2_s llama-i2_s-fallback --allow-float-fallback
export_gguf bitnet-small-channel tq1_0 bitnet-tq1_0-fallback --allow-float-fallback
python3 - <<'PY'
import struct
ALIGN = 32
def skip_value(b, at, ty):
    fixed = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    if ty in fixed:
        return at + fixed[ty]
    if ty == 8:
        return at + 8 + struct.unpack_from("<Q", b, at)[0]
    inner, n = struct.unpack_from("<IQ", b, at)
    at += 12
    for _ in range(n):
        at = skip_value(b, at, inner)
    return at
def strip_bundle_keys(b):
    """The file without its bundle.* keys (a file as another tool writes it): the same tensor
    infos and data, after a shorter header."""
    n_tensors, n_kvs = struct.unpack_from("<QQ", b, 8)
    at, kept = 24, []
    for _ in range(n_kvs):
        start = at
        klen = struct.unpack_from("<Q", b, at)[0]
        key = b[at + 8:at + 8 + klen]
        at = skip_value(b, at + 8 + klen + 4, struct.unpack_from("<I", b, at + 8 + klen)[0])
        if not key.startswith(b"bundle."):
            kept.append(b[start:at])
    infos = at
    for _ in range(n_tensors):
        nlen = struct.unpack_from("<Q", b, at)[0]
        n_dims = struct.unpack_from("<I", b, at + 8 + nlen)[0]
        at += 8 + nlen + 4 + 8 * n_dims + 4 + 8
    head = b[:16] + struct.pack("<Q", len(kept)) + b"".join(kept) + b[infos:at]
    head += b"\0" * (-len(head) % ALIGN)
    return head + b[at + (-at % ALIGN):]
src = open("corpus/gguf/llama-tq2_0-fallback", "rb").read()
open("corpus/gguf/llama-tq2_0-no-bundle-keys", "wb").write(strip_bundle_keys(src))
# A key of every value type (arrays of every element type) and a tensor of every type the
# reader takes, each with valid blocks.
def s(x):
    return struct.pack("<Q", len(x)) + x
def kv(key, ty, payload):
    return s(key.encode()) + struct.pack("<I", ty) + payload
def arr(ty, n, payload):
    return struct.pack("<IQ", ty, n) + payload
kvs = [kv("general.architecture", 8, s(b"llama")), kv("t.u8", 0, b"\x01"), kv("t.i8", 1, b"\xff"),
       kv("t.u16", 2, struct.pack("<H", 2)), kv("t.i16", 3, struct.pack("<h", -2)),
       kv("t.u32", 4, struct.pack("<I", 3)), kv("t.i32", 5, struct.pack("<i", -3)),
       kv("t.f32", 6, struct.pack("<f", 0.5)), kv("t.bool", 7, b"\x01"),
       kv("t.u64", 10, struct.pack("<Q", 1 << 40)), kv("t.i64", 11, struct.pack("<q", -(1 << 40))),
       kv("t.f64", 12, struct.pack("<d", 0.25)), kv("a.u8", 9, arr(0, 2, b"\x01\x02")),
       kv("a.i32", 9, arr(5, 1, struct.pack("<i", -9))), kv("a.f32", 9, arr(6, 2, struct.pack("<2f", 1.5, -2))),
       kv("a.bool", 9, arr(7, 2, b"\x01\x00")), kv("a.str", 9, arr(8, 2, s(b"x") + s(b"yz"))),
       kv("a.u64", 9, arr(10, 1, struct.pack("<Q", 7))), kv("a.f64", 9, arr(12, 0, b""))]
tq1 = bytes([128] * 48 + [127] * 4) + struct.pack("<e", 0.5)   # 256 zeros, d 0.5
tq2 = bytes([0x56] + [0x55] * 63) + struct.pack("<e", 0.25)    # weight 0 is +1
i2s = bytes([0x95] + [0x55] * 31) + struct.pack("<f", 0.125) + bytes(28)
tensors = [("f32", [3], 0, b"\0" * 12), ("f16", [2, 2], 1, b"\0" * 8), ("bf16", [5], 30, b"\0" * 10),
           ("tq1", [256, 1], 34, tq1), ("tq2", [256, 2], 35, tq2 * 2), ("i2s", [128, 1], 36, i2s)]
out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs)
offset, data = 0, b""
for name, ne, ty, d in tensors:
    out += s(name.encode()) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", x) for x in ne)
    out += struct.pack("<IQ", ty, offset)
    data += d + b"\0" * (-len(d) % ALIGN)
    offset = len(data)
out += b"\0" * (-len(out) % ALIGN)
open("corpus/gguf/written-every-type", "wb").write(out + data)
PY
echo "seeds written under fuzz/corpus"
