#!/usr/bin/env python3
"""The proof of `bundle export --format gguf` and `bundle create --from FILE.gguf` with
llama.cpp's own Python package, gguf-py (`pip install gguf==0.19.0`): its reader, writer, and
TQ1_0 / TQ2_0 dequantizer and quantizer; and, for bitnet.cpp's I2_S (type 36, which gguf-py
does not know), a numpy reader written from the layout.

    python3 scripts/gguf_check.py make DIR --family llama|bitnet [--untied] [--seed S]
        writes a random model directory in transformers' layout (config.json and
        model.safetensors, F32) whose rows are multiples of 256 columns: hidden 256,
        intermediate 512, 4 heads (2 KV) of 64, 2 layers, vocab 300
    python3 scripts/gguf_check.py check BUNDLE FILE.gguf
        proves with gguf-py that FILE.gguf (TQ1_0 or TQ2_0) is the bundle:
        (1) GGUFReader reads it; every quantized tensor has one ternary type, and
            gguf.quants.dequantize of its bytes equals f32 of the bundle's fp16.safetensors
            values bit for bit (llama: after undoing the q/k RoPE permutation);
        (2) gguf.quants.quantize of those FP16 values (as f32) gives the file's bytes exactly;
        (3) the F32 / F16 tensors equal the bundle's stored values (F16: their f16 rounding);
            a quantized tensor kept as F16 (--allow-float-fallback) equals fp16.safetensors'
            bytes;
        (4) the hyperparameters equal the bundle's config (manifest.json model.decoder), and
            bundle.granularity / bundle.group_size / bundle.scale.<tensor> are the bundle's
            quantization and its f32 scales bit for bit, in the file's row order;
        (5) the numpy header reader of check-i2s reads the same keys and tensor infos as
            GGUFReader.
    python3 scripts/gguf_check.py check-i2s BUNDLE FILE.gguf
        the same proof for an I2_S file, which GGUFReader refuses (unknown type 36): the header
        read with numpy; every I2_S tensor (128-value blocks of 2-bit codes, then its f32
        scale and 28 zero bytes) decodes to the bundle's trits (llama: q/k permuted), its f32
        scale is the bundle's bit for bit, and f16(trit * scale) is fp16.safetensors bit for
        bit; bitnet.cpp's quantize_i2_s (ported to numpy) of the f32 weights trit * scale gives
        the file's bytes; float tensors, fallback F16 tensors, hyperparameters and bundle.* keys
        as in check.
    python3 scripts/gguf_check.py same BUNDLE_A BUNDLE_B
        the two bundles hold the same trits, scales and FP16 bytes: ternary.safetensors and
        fp16.safetensors have the same tensors, each with the same dtype, shape and bytes, and
        the manifests the same model and tensor list (a GGUF round trip: export, then
        `bundle create --from FILE.gguf`, gives the bundle back).
    python3 scripts/gguf_check.py foreign FILE.gguf [--seed S]
        writes, with gguf-py's GGUFWriter and gguf.quants.quantize alone, a llama GGUF file the
        bundle tool did not make (make's shapes, untied): the projections ternary values t * s
        with a different s per row, quantized to TQ1_0 (q, v, gate, down) and TQ2_0 (k, o, up),
        q/k permuted as convert_hf_to_gguf.py's LlamaModel.permute does, one block of zeros
        (d = 0); the embedding, output and norms F32; the hyperparameters convert_hf_to_gguf.py
        writes for llama, with tokenizer.ggml.model "none".
    python3 scripts/gguf_check.py check-foreign BUNDLE FILE.gguf
        after `bundle create --from FILE.gguf --out BUNDLE` of a foreign file: every FP16
        weight of the bundle is gguf.quants.dequantize of the file's tensor (q/k unpermuted)
        bit for bit as f32, and so is trit * scale; the bundle's scales are per channel, f32 of
        the d of each row's blocks; the F32 tensors are carried bit for bit; the hyperparameters
        are the file's.
    python3 scripts/gguf_check.py check-tokenizer TOKENIZER.json FILE.gguf BACK_BUNDLE TEXT
        FILE.gguf was exported from a bundle carrying TOKENIZER.json (byte-level BPE) and
        BACK_BUNDLE created from FILE.gguf: gguf-py reads tokenizer.ggml.model "gpt2", the
        tokens in id order, and the merges, as the tokenizer states them; Hugging Face
        `tokenizers` encodes TEXT with BACK_BUNDLE's tokenizer.json to the same ids as with
        TOKENIZER.json.
    Prints `ok ...` lines; exits 1 at the first mismatch, naming the tensor and index.
"""
import argparse
import json
import sys
from itertools import zip_longest
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

import gguf
from gguf import GGMLQuantizationType as Q

# The tensors of a transformers Llama / BitNet directory, as the other decoder scripts name them,
# and the bundle's trits and scales decoded by the independent reader of sections 5 and 6.
from decoder_numpy import tensor_shapes
from decoder_bundle_numpy import Mismatch, unpack
from decoder_bundle_numpy import scales as expand_scales

SHAPE = dict(vocab_size=300, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, head_dim=64, rms_norm_eps=1e-5)

LAYER_NAMES = {
    "input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
    "self_attn.attn_sub_norm": "attn_sub_norm", "post_attention_layernorm": "ffn_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    "mlp.ffn_sub_norm": "ffn_sub_norm",
}

# bitnet.cpp's GGML_TYPE_I2_S, and `general.file_type` of each export type.
I2_S = 36
FILE_TYPES = {Q.TQ1_0: 36, Q.TQ2_0: 37, I2_S: 40}
SCALE_PREFIX = "bundle.scale."


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
    """convert_hf_to_gguf.py's LlamaModel.permute, on the rows of an array (1-D: a value per row)."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def rope_heads(dec, name):
    """The heads whose rows llama.cpp's RoPE permutation interleaves (llama q/k), else None."""
    if dec["family"] != "llama":
        return None
    if name.endswith("q_proj.weight"):
        return dec["num_attention_heads"]
    if name.endswith("k_proj.weight"):
        return dec["num_key_value_heads"]
    return None


def file_order(a, heads):
    """Rows of transformers' order in the file's order (permuted when `heads` is not None)."""
    return a if heads is None else permute(a, heads)


def matched(manifest, tensors, name_of, ne_of):
    """Each tensor of the manifest with the file's tensor of its GGUF name (`tensors`: the
    file's tensors in order), after checking that the file has exactly those tensors, each with
    the dims of its shape reversed (GGUF's innermost first): (manifest entry, file tensor)."""
    by_name = {name_of(g): g for g in tensors}
    expected = {gguf_name(t["name"]) for t in manifest["tensors"]}
    if set(by_name) != expected or len(by_name) != len(tensors):
        fail(f"tensor names differ: {sorted(set(by_name) ^ expected)} ({len(tensors)} tensors in the file)")
    for t in manifest["tensors"]:
        g = by_name[gguf_name(t["name"])]
        if list(ne_of(g)) != list(reversed(t["shape"])):
            fail(f"{name_of(g)}: dims expected {list(reversed(t['shape']))}, found {list(ne_of(g))}")
        yield t, g


def block_ds(raw, qtype):
    """The f16 scale d of each TQ1_0 / TQ2_0 block of a tensor's bytes (its last two bytes)."""
    size = {Q.TQ1_0: 54, Q.TQ2_0: 66}[qtype]
    return np.asarray(raw).view(np.uint8).reshape(-1, size)[:, -2:].copy().view(np.float16).reshape(-1)


def first_difference(a, b):
    a, b = np.ravel(a), np.ravel(b)
    if a.shape != b.shape:
        return f"shape {a.shape} vs {b.shape}"
    idx = np.flatnonzero(a != b)
    return None if idx.size == 0 else f"index {idx[0]}: {a[idx[0]]!r} vs {b[idx[0]]!r}"


def bits(a):
    """The bits of a float array (unsigned integers of its width), to compare bit for bit."""
    a = np.asarray(a)
    return a.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


def load_bundle(path):
    """manifest.json, fp16.safetensors and ternary.safetensors of a bundle."""
    d = Path(path)
    manifest = json.loads((d / "manifest.json").read_text())
    return manifest, load_file(str(d / "fp16.safetensors")), load_file(str(d / "ternary.safetensors"))


def bundle_trits(manifest, ternary, name, shape):
    """The trits int8 [R, C] of a quantized tensor and scale(r, c) f32 [R, C] (sections 5, 6)."""
    rows, cols = shape
    try:
        t = unpack(name, ternary[name], rows, cols, manifest["quantization"]["encoding"])
        s = expand_scales(name, ternary[name + ".scale"], rows, cols, manifest["quantization"])
    except Mismatch as e:
        fail(f"bundle: {e}")
    return t, s


def need(get, key):
    value = get(key)
    if value is None:
        fail(f"metadata {key}: missing")
    return value


def reader_get(reader):
    """Metadata lookup on a GGUFReader: the field's contents, or None."""
    def get(key):
        f = reader.get_field(key)
        return None if f is None else f.contents()
    return get


def check_hparams(dec, arch, get, tensor_names, extra):
    """The hyperparameters of `arch` equal the bundle's config (and the `extra` keys theirs)."""
    want = dict(extra)
    want.update({
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
    })
    if dec["family"] == "bitnet":
        want[f"{arch}.hidden_activation"] = "relu2"
        want[f"{arch}.rope.scaling.type"] = "linear"
        want[f"{arch}.rope.scaling.factor"] = np.float32(1.0)
    for key, value in want.items():
        found = need(get, key)
        if isinstance(value, np.float32):
            same = np.float32(found).view(np.uint32) == value.view(np.uint32)
        else:
            same = found == value
        if not same:
            fail(f"metadata {key}: expected {value!r}, found {found!r}")
    if need(get, f"{arch}.context_length") < 1:
        fail(f"metadata {arch}.context_length: expected >= 1")
    if ("output.weight" in tensor_names) == dec["tie_word_embeddings"]:
        fail(f"output.weight present: {'output.weight' in tensor_names}, tie_word_embeddings {dec['tie_word_embeddings']}")
    print(f"ok {len(want) + 1} hyperparameters equal the bundle's config ({arch})")


def export_keys(qtype):
    """The keys every export writes: alignment, file type, no tokenizer (--no-tokenizer)."""
    return {"general.alignment": 32, "general.file_type": FILE_TYPES[qtype], "tokenizer.ggml.model": "none"}


def check_scale_keys(manifest, ternary, get, keys, quantized):
    """bundle.granularity / bundle.group_size are the bundle's, and bundle.scale.<name> of each
    quantized tensor ([(name, gguf name, rows, heads)]) its f32 scales in the file's row order;
    no other tensor has such a key."""
    q = manifest["quantization"]
    gran = need(get, "bundle.granularity")
    if gran != q["granularity"]:
        fail(f"metadata bundle.granularity: expected {q['granularity']!r}, found {gran!r}")
    group = get("bundle.group_size")
    if group != (q["group_size"] if gran == "group" else None):
        fail(f"metadata bundle.group_size: expected {q['group_size'] if gran == 'group' else None}, found {group!r}")
    for name, gname, rows, heads in quantized:
        s = ternary[name + ".scale"]
        want = s if gran == "tensor" else file_order(s.reshape(rows, -1), heads).reshape(-1)
        got = np.asarray(need(get, SCALE_PREFIX + gname), dtype=np.float32)
        diff = first_difference(bits(got), bits(want))
        if diff:
            fail(f"metadata {SCALE_PREFIX}{gname} ({name}): differs from {name}.scale at {diff}")
    stated = {k for k in keys if k.startswith(SCALE_PREFIX)}
    expected = {SCALE_PREFIX + gname for _, gname, _, _ in quantized}
    if stated != expected:
        fail(f"bundle.scale keys differ from the quantized tensors: {sorted(stated ^ expected)}")
    print(f"ok bundle.granularity {gran} and {len(quantized)} bundle.scale keys: the bundle's f32 scales bit for bit"
          " in the file's row order")


def check_float(g, name, qtype, data, shape, heads, quantized, fp16, ternary):
    """A tensor the file stores as F32 / F16 (`data`: its bytes): a float tensor is the bundle's
    stored F32 values (F16: their f16 rounding); a quantized one (kept as F16 by
    --allow-float-fallback) is fp16.safetensors' values, bytes for bytes."""
    if quantized:
        if qtype != Q.F16:
            fail(f"{g} ({name}): a quantized tensor not ternary: expected F16 (fallback), found {qtype!r}")
        want, what = fp16[name], "fp16.safetensors"
    elif qtype == Q.F32:
        want, what = ternary[name], "ternary.safetensors"
    elif qtype == Q.F16:
        want, what = ternary[name].astype(np.float16), "f16 of ternary.safetensors"
    else:
        fail(f"{g} ({name}): expected F32 or F16, found {qtype!r}")
    want = file_order(want.reshape(shape), heads)
    got = np.frombuffer(np.ascontiguousarray(data).tobytes(), dtype=want.dtype)
    diff = first_difference(bits(got), bits(want))
    if diff:
        fail(f"{g} ({name}): values differ from {what} at {diff}")


def float_summary(n_float, n_fallback):
    print(f"ok {n_float} float tensors equal the bundle's stored values, {n_fallback} F16 fallback tensors"
          " equal fp16.safetensors")


# --- A GGUF reader in numpy alone (GGUFReader raises on bitnet.cpp's type 36) ------------------

SCALARS = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1",
           10: "<u8", 11: "<i8", 12: "<f8"}


class Cursor:
    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def read(self, dtype, count=None):
        dt = np.dtype(dtype)
        n = 1 if count is None else count
        if self.pos + dt.itemsize * n > len(self.buf):
            fail(f"GGUF header: truncated at byte {self.pos}")
        a = np.frombuffer(self.buf, dt, n, self.pos)
        self.pos += dt.itemsize * n
        return a[0] if count is None else a

    def string(self):
        return bytes(self.read("u1", int(self.read("<u8")))).decode("utf-8")

    def value(self, vtype):
        if vtype == 8:
            return self.string()
        if vtype == 9:
            etype, n = int(self.read("<u4")), int(self.read("<u8"))
            if etype in (8, 9):
                return [self.value(etype) for _ in range(n)]
            if etype not in SCALARS:
                fail(f"GGUF header: array of unknown value type {etype}")
            return self.read(SCALARS[etype], n).copy()
        if vtype not in SCALARS:
            fail(f"GGUF header: unknown value type {vtype}")
        v = self.read(SCALARS[vtype])
        return bool(v) if vtype == 7 else (v if vtype in (6, 12) else int(v))


def tensor_nbytes(ttype, ne):
    """Bytes of a tensor: I2_S n/4 + 32; the other types by gguf-py's block sizes."""
    n = int(np.prod(ne, dtype=np.uint64))
    if ttype == I2_S:
        return n // 4 + 32
    try:
        block, size = gguf.GGML_QUANT_SIZES[Q(ttype)]
    except ValueError:
        fail(f"GGUF tensor of unknown type {ttype}")
    return n // block * size


def read_gguf(path):
    """A little-endian GGUF v3 file: ({key: value}, [{name, ne, type, offset, nbytes, data}]),
    offsets absolute; arrays as numpy arrays (lists for strings), f32 / f64 scalars as numpy
    scalars. Every tensor aligned and inside the file, no two overlapping."""
    buf = np.memmap(path, dtype=np.uint8, mode="r")
    c = Cursor(buf)
    if bytes(c.read("u1", 4)) != b"GGUF":
        fail(f"{path}: not a GGUF file (magic)")
    version = int(c.read("<u4"))
    if version != 3:
        fail(f"{path}: GGUF version {version}, expected 3")
    n_tensors, n_kv = int(c.read("<u8")), int(c.read("<u8"))
    kv = {}
    for _ in range(n_kv):
        key = c.string()
        kv[key] = c.value(int(c.read("<u4")))
    tensors = []
    for _ in range(n_tensors):
        name = c.string()
        ne = [int(x) for x in c.read("<u8", int(c.read("<u4")))]
        tensors.append(dict(name=name, ne=ne, type=int(c.read("<u4")), offset=int(c.read("<u8"))))
    align = kv.get("general.alignment", 32)
    start = -(-c.pos // align) * align
    end = start
    for t in sorted(tensors, key=lambda t: t["offset"]):
        t["nbytes"] = tensor_nbytes(t["type"], t["ne"])
        if t["offset"] % align or start + t["offset"] < end or start + t["offset"] + t["nbytes"] > len(buf):
            fail(f"{path}: tensor {t['name']}: offset {t['offset']} ({t['nbytes']} bytes) not aligned to {align},"
                 f" overlapping or past the end ({len(buf)} bytes)")
        t["offset"] += start
        t["data"] = buf[t["offset"]:t["offset"] + t["nbytes"]]
        end = t["offset"] + t["nbytes"]
    return kv, tensors


def same_contents(a, b):
    """A value of read_gguf equals GGUFReader's contents() of the same field."""
    if isinstance(a, np.ndarray):
        return a.shape == (len(b),) and bool((bits(a) == bits(np.array(b, dtype=a.dtype))).all()) \
            if a.dtype.kind == "f" else a.tolist() == list(b)
    if isinstance(a, np.floating):
        return bits(np.array(a)) == bits(np.array(b, dtype=a.dtype))
    return a == b


def check_reader_agrees(reader, path):
    """read_gguf (check-i2s's reader) gives GGUFReader's keys, values and tensor infos."""
    kv, tensors = read_gguf(path)
    fields = {k: f for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    if set(kv) != set(fields):
        fail(f"numpy reader: keys differ from GGUFReader's: {sorted(set(kv) ^ set(fields))}")
    for k, f in fields.items():
        if not same_contents(kv[k], f.contents()):
            fail(f"numpy reader: {k} = {kv[k]!r}, GGUFReader {f.contents()!r}")
    theirs = [(t.name, [int(x) for x in t.shape], int(t.tensor_type), int(t.data_offset), int(t.n_bytes))
              for t in reader.tensors]
    ours = [(t["name"], t["ne"], t["type"], t["offset"], t["nbytes"]) for t in tensors]
    for i, (x, y) in enumerate(zip_longest(ours, theirs)):
        if x != y:
            fail(f"numpy reader: tensor info {i} (name, ne, type, offset, bytes): {x}, GGUFReader {y}")
    print(f"ok the numpy GGUF reader (check-i2s) agrees with GGUFReader: {len(kv)} keys, {len(tensors)} tensor infos")


# --- check: TQ1_0 / TQ2_0 files ---------------------------------------------------------------

def check(args):
    manifest, fp16, ternary = load_bundle(args.bundle)
    dec = manifest["model"]["decoder"]
    family = dec["family"]
    reader = gguf.GGUFReader(args.file)
    get = reader_get(reader)
    tensors = {t.name for t in reader.tensors}
    print(f"ok GGUFReader read {args.file}: {len(tensors)} tensors, {len(reader.fields)} fields")

    arch = need(get, "general.architecture")
    if arch != family:
        fail(f"general.architecture: expected {family}, found {arch}")

    qtypes = set()
    quantized = []
    n_quantized = n_float = n_fallback = zero_blocks = 0
    for t, g in matched(manifest, reader.tensors, lambda g: g.name, lambda g: [int(x) for x in g.shape]):
        name, shape = t["name"], t["shape"]
        heads = rope_heads(dec, name)
        raw = np.asarray(g.data)
        if t["quantized"]:
            quantized.append((name, g.name, shape[0], heads))
        if t["quantized"] and g.tensor_type not in (Q.F16, Q.F32):
            qtype = Q(g.tensor_type)
            qtypes.add(qtype)
            if qtype not in (Q.TQ1_0, Q.TQ2_0):
                fail(f"{g.name}: expected TQ1_0 or TQ2_0, found {qtype.name}")
            want = file_order(fp16[name].astype(np.float32).reshape(shape), heads)
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
            zero_blocks += int(np.count_nonzero(block_ds(raw, qtype) == 0))
        else:
            # (3) the stored F32 values (or their f16 rounding); fallback F16: the FP16 bytes.
            check_float(g.name, name, g.tensor_type, raw, shape, heads, t["quantized"], fp16, ternary)
            n_fallback += t["quantized"]
            n_float += not t["quantized"]
    if len(qtypes) > 1:
        fail(f"quantized tensors of several types: {sorted(q.name for q in qtypes)}")
    # (All quantized tensors kept as F16: the type the export was asked for, by its file type.)
    by_file_type = {v: k for k, v in FILE_TYPES.items() if k != I2_S}
    qtype = next(iter(qtypes)) if qtypes else by_file_type.get(need(get, "general.file_type"), Q.TQ1_0)
    print(f"ok {n_quantized} {qtype.name} tensors: gguf.quants.dequantize == f32(fp16.safetensors) bit for bit")
    print(f"ok {n_quantized} {qtype.name} tensors: gguf.quants.quantize(fp16 values) == the file's bytes"
          f" ({zero_blocks} blocks of zeros with d = 0 among them)")
    float_summary(n_float, n_fallback)
    # (4) hyperparameters and the bundle's exact scales.
    check_hparams(dec, arch, get, tensors, export_keys(qtype))
    check_scale_keys(manifest, ternary, get, reader.fields, quantized)
    # (5) the reader of check-i2s, against gguf-py's.
    check_reader_agrees(reader, args.file)


# --- check-i2s: I2_S files --------------------------------------------------------------------

def decode_i2s(data, n, what):
    """The n trits (codes 0, 1, 2 -> -1, 0, +1) and the f32 scale of an I2_S tensor's bytes:
    blocks of 128 values in 32 bytes, value j of a block in byte j % 32 at bits 6 - 2 (j // 32);
    then the scale (little-endian f32) at byte n / 4 and 28 zero bytes."""
    data = np.asarray(data, dtype=np.uint8)
    if n % 128 or data.size != n // 4 + 32:
        fail(f"{what}: I2_S of {n} values in {data.size} bytes, expected n % 128 == 0 and {n // 4 + 32} bytes")
    shifts = np.array([6, 4, 2, 0], dtype=np.uint8)
    codes = (data[:n // 4].reshape(-1, 1, 32) >> shifts[None, :, None]) & 3   # [block, j // 32, j % 32]
    codes = codes.reshape(-1)
    bad = np.flatnonzero(codes == 3)
    if bad.size:
        fail(f"{what}: I2_S code 3 (not a trit) at value {bad[0]}")
    trailer = data[n // 4 + 4:]
    if trailer.any():
        fail(f"{what}: I2_S padding after the scale not zero at byte {n // 4 + 4 + np.flatnonzero(trailer)[0]}")
    return codes.astype(np.int8) - 1, data[n // 4:n // 4 + 4].copy().view("<f4")[0]


def quantize_i2s(values):
    """bitnet.cpp's quantize_i2_s (ggml-bitnet-mad.cpp, x86) in numpy, on the f32 values of a
    whole tensor in ggml order: scale = max |v| (double); code 1 for |v| < 1e-6, else 2 if
    v * scale > 0, else 0; value j of block i in byte 32 i + j % 32 at bits 6 - 2 (j // 32);
    f32(scale) at byte n / 4; 32 bytes after the codes in all."""
    v = values.reshape(-1).astype(np.float64)
    scale = np.abs(v).max()
    q8 = np.where(np.abs(v) < 1e-6, 1, np.where(v * scale > 0, 2, 0)).astype(np.uint8)
    out = np.zeros(v.size // 4 + 32, np.uint8)
    shifted = q8.reshape(-1, 4, 32) << np.array([6, 4, 2, 0], np.uint8)[None, :, None]
    out[:v.size // 4] = np.bitwise_or.reduce(shifted, axis=1).reshape(-1)
    out[v.size // 4:v.size // 4 + 4] = np.array([scale], "<f4").view(np.uint8)
    return out


def check_i2s(args):
    manifest, fp16, ternary = load_bundle(args.bundle)
    dec = manifest["model"]["decoder"]
    kv, infos = read_gguf(args.file)
    tensors = {t["name"] for t in infos}
    get = kv.get
    print(f"ok numpy read {args.file}: {len(infos)} tensors, {len(kv)} keys")
    arch = need(get, "general.architecture")
    want_arch = {"llama": "llama", "bitnet": "bitnet-b1.58"}[dec["family"]]
    if arch != want_arch:
        fail(f"general.architecture: expected {want_arch}, found {arch}")

    quantized = []
    n_i2s = n_float = n_fallback = 0
    for t, g in matched(manifest, infos, lambda g: g["name"], lambda g: g["ne"]):
        name, shape, gname = t["name"], t["shape"], g["name"]
        heads = rope_heads(dec, name)
        if t["quantized"]:
            quantized.append((name, gname, shape[0], heads))
        if g["type"] != I2_S:
            check_float(gname, name, g["type"], g["data"], shape, heads, t["quantized"], fp16, ternary)
            n_fallback += t["quantized"]
            n_float += not t["quantized"]
            continue
        if not t["quantized"]:
            fail(f"{gname} ({name}): I2_S for a tensor the bundle does not quantize")
        got, scale = decode_i2s(g["data"], int(np.prod(shape)), gname)
        got = got.reshape(shape)
        trits, scales = bundle_trits(manifest, ternary, name, shape)
        # The trits, in the file's row order.
        diff = first_difference(got, file_order(trits, heads))
        if diff:
            fail(f"{gname} ({name}): I2_S trits differ from the bundle's at {diff}")
        # The one f32 scale: every scale of the bundle's tensor, bit for bit.
        diff = first_difference(bits(scales), bits(np.full(scales.shape, scale, np.float32)))
        if diff:
            fail(f"{gname} ({name}): I2_S scale {scale!r} differs from the bundle's scale at {diff}")
        # f16(trit * scale) == fp16.safetensors, bit for bit.
        values = (got.astype(np.float32) * scale).astype(np.float16)
        diff = first_difference(bits(values), bits(file_order(fp16[name].reshape(shape), heads)))
        if diff:
            fail(f"{gname} ({name}): f16(trit * scale) differs from fp16.safetensors at {diff}")
        # bitnet.cpp's quantizer of the f32 weights trit * scale gives the file's bytes (a
        # tensor of zeros has no scale to find: its max is 0).
        if got.any():
            diff = first_difference(quantize_i2s(got.astype(np.float32) * scale), np.asarray(g["data"]))
            if diff:
                fail(f"{gname} ({name}): bitnet.cpp's quantize_i2_s(trit * scale) differs from the file at byte {diff}")
        n_i2s += 1
    print(f"ok {n_i2s} I2_S tensors: the bundle's trits, its f32 scale bit for bit, f16(trit * scale)"
          " == fp16.safetensors bit for bit")
    print(f"ok {n_i2s} I2_S tensors: bitnet.cpp's quantize_i2_s (numpy) of the f32 weights trit * scale =="
          " the file's bytes")
    float_summary(n_float, n_fallback)
    check_hparams(dec, arch, get, tensors, export_keys(I2_S))
    check_scale_keys(manifest, ternary, get, kv, quantized)


# --- same: two bundles, the same tensors ------------------------------------------------------

def same(args):
    a, b = Path(args.bundle_a), Path(args.bundle_b)
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (a, b))
    def first_key(x, y, path):
        """The path of the first value that differs between two JSON objects, and the values."""
        if not (isinstance(x, dict) and isinstance(y, dict)):
            return None if x == y else (path, x, y)
        return next(filter(None, (first_key(x.get(k), y.get(k), f"{path}.{k}") for k in sorted(set(x) | set(y)))), None)

    diff = first_key(ma["model"], mb["model"], "model")
    if diff:
        fail(f"manifest.json {diff[0]}: {diff[1]!r} vs {diff[2]!r}")
    names_a, names_b = ([t["name"] for t in m["tensors"]] for m in (ma, mb))
    if names_a != names_b:
        fail(f"manifest.json tensors: names differ: {names_a} vs {names_b}")
    for x, y in zip(ma["tensors"], mb["tensors"]):
        key = next((k for k in sorted(set(x) | set(y)) if x.get(k) != y.get(k)), None)
        if key:
            fail(f"manifest.json tensors: {x['name']}: {key} {x.get(key)!r} vs {y.get(key)!r}")
    counts = []
    for f in ("ternary.safetensors", "fp16.safetensors"):
        ta, tb = load_file(str(a / f)), load_file(str(b / f))
        if set(ta) != set(tb):
            fail(f"{f}: tensor names differ: {sorted(set(ta) ^ set(tb))}")
        for name in sorted(ta):
            x, y = ta[name], tb[name]
            if x.dtype != y.dtype or x.shape != y.shape:
                fail(f"{f}: {name}: {x.dtype} {list(x.shape)} vs {y.dtype} {list(y.shape)}")
            diff = first_difference(np.frombuffer(x.tobytes(), np.uint8), np.frombuffer(y.tobytes(), np.uint8))
            if diff:
                fail(f"{f}: {name}: bytes differ at byte {diff}")
        counts.append(len(ta))
    print(f"ok {a} and {b}: the same model and tensors; ternary.safetensors ({counts[0]} tensors) and"
          f" fp16.safetensors ({counts[1]}) tensors byte-identical")


# --- foreign: a GGUF file made by gguf-py alone, and the bundle read from it --------------------

FOREIGN_TYPES = {"self_attn.q_proj": Q.TQ1_0, "self_attn.k_proj": Q.TQ2_0, "self_attn.v_proj": Q.TQ1_0,
                 "self_attn.o_proj": Q.TQ2_0, "mlp.gate_proj": Q.TQ1_0, "mlp.up_proj": Q.TQ2_0,
                 "mlp.down_proj": Q.TQ1_0}


def foreign_config():
    return dict(SHAPE, family="llama", rope_theta=10000.0, tie_word_embeddings=False)


def foreign(args):
    c = foreign_config()
    rng = np.random.default_rng(args.seed)
    w = gguf.GGUFWriter(args.file, "llama")
    # As convert_hf_to_gguf.py's TextModel / LlamaModel.set_gguf_parameters write them.
    w.add_name("foreign-tiny-llama")
    w.add_block_count(c["num_hidden_layers"])
    w.add_context_length(2048)
    w.add_embedding_length(c["hidden_size"])
    w.add_feed_forward_length(c["intermediate_size"])
    w.add_head_count(c["num_attention_heads"])
    w.add_head_count_kv(c["num_key_value_heads"])
    w.add_rope_freq_base(c["rope_theta"])
    w.add_layer_norm_rms_eps(c["rms_norm_eps"])
    w.add_key_length(c["head_dim"])
    w.add_value_length(c["head_dim"])
    w.add_file_type(gguf.LlamaFileType.MOSTLY_TQ1_0)
    w.add_vocab_size(c["vocab_size"])
    w.add_rope_dimension_count(c["head_dim"])
    w.add_tokenizer_model("none")
    n_tq = 0
    for name, shape in tensor_shapes(c, "llama").items():
        part = name.removeprefix("model.layers.").split(".", 1)[-1].removesuffix(".weight")
        qtype = FOREIGN_TYPES.get(part)
        if qtype is None:
            w.add_tensor(gguf_name(name), (rng.standard_normal(shape) * 0.1 + (len(shape) == 1)).astype(np.float32))
            continue
        rows = shape[0]
        # A scale per row, each different as f16 (the file's d; distinct f16 values in
        # [0.01, 0.1), then moved off them by less than half an f16 step so that gguf-py's
        # quantizer does the rounding), and trits t: weights t * s.
        d16 = rng.choice(np.arange(*np.array([0.01, 0.1], np.float16).view(np.uint16)), rows, replace=False)
        s = (d16.astype(np.uint16).view(np.float16).astype(np.float32)
             * (1 + rng.uniform(-1e-4, 1e-4, rows))).astype(np.float32)
        t = rng.choice(np.array([-1, 0, 1], np.int8), size=shape, p=[0.35, 0.3, 0.35])
        if name == "model.layers.0.mlp.down_proj.weight":
            t[3, 256:512] = 0   # a block of zeros: gguf-py's quantizer writes d = 0 for it
        heads = rope_heads(c, name)
        values = file_order(t.astype(np.float32) * s[:, None], heads)
        w.add_tensor(gguf_name(name), gguf.quants.quantize(values, qtype), raw_dtype=qtype)
        n_tq += 1
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {args.file}: llama, {n_tq} TQ1_0 / TQ2_0 tensors quantized by gguf.quants.quantize")


def check_foreign(args):
    manifest, fp16, ternary = load_bundle(args.bundle)
    dec = manifest["model"]["decoder"]
    reader = gguf.GGUFReader(args.file)
    get = reader_get(reader)
    tensors = {t.name for t in reader.tensors}
    q = manifest["quantization"]
    if q["granularity"] != "channel":
        fail(f"bundle granularity {q['granularity']}, expected channel (each row of the file has its own d)")
    if q["method"] != "given" or (q.get("source") or {}).get("format") != "gguf":
        fail(f"bundle quantization: expected method given from source format gguf,"
             f" found {q['method']!r}, {q.get('source')!r}")
    c = foreign_config()
    for key in ("family", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "head_dim", "tie_word_embeddings"):
        if dec[key] != c[key]:
            fail(f"manifest model.decoder.{key}: expected {c[key]!r}, found {dec[key]!r}")
    check_hparams(dec, "llama", get, tensors, {"general.file_type": int(gguf.LlamaFileType.MOSTLY_TQ1_0)})
    n_tq = n_float = zero_blocks = 0
    for t, g in matched(manifest, reader.tensors, lambda g: g.name, lambda g: [int(x) for x in g.shape]):
        name, shape = t["name"], t["shape"]
        heads = rope_heads(dec, name)
        raw = np.asarray(g.data)
        if g.tensor_type == Q.F32:
            if t["quantized"]:
                fail(f"{g.name} ({name}): F32 in the file, quantized in the bundle")
            got = raw.reshape(shape)
            diff = first_difference(bits(file_order(ternary[name].reshape(shape), heads)), bits(got)) or \
                first_difference(bits(file_order(fp16[name].reshape(shape), heads)), bits(got.astype(np.float16)))
            if diff:
                fail(f"{g.name} ({name}): the bundle's stored / FP16 values differ from the file's F32 at {diff}")
            n_float += 1
            continue
        if g.tensor_type not in (Q.TQ1_0, Q.TQ2_0) or not t["quantized"]:
            fail(f"{g.name} ({name}): {Q(g.tensor_type).name} in the file, quantized {t['quantized']} in the bundle")
        qtype = Q(g.tensor_type)
        deq = gguf.quants.dequantize(raw, qtype).reshape(shape)
        # The FP16 weights, in the file's row order, == dequantize bit for bit as f32.
        diff = first_difference(bits(file_order(fp16[name].astype(np.float32).reshape(shape), heads)), bits(deq))
        if diff:
            fail(f"{g.name} ({name}): f32(fp16.safetensors) differs from gguf.quants.dequantize at {diff}")
        trits, scales = bundle_trits(manifest, ternary, name, shape)
        diff = first_difference(bits(file_order(trits * scales, heads)), bits(deq))
        if diff:
            fail(f"{g.name} ({name}): trit * scale differs from gguf.quants.dequantize at {diff}")
        # Each row's scale is f32 of the d of its blocks (blocks of zeros: d = 0).
        d = block_ds(raw, qtype).reshape(shape[0], -1)
        live = file_order(trits, heads).reshape(shape[0], d.shape[1], -1).any(-1)
        row_scale = np.broadcast_to(file_order(ternary[name + ".scale"], heads)[:, None], d.shape)
        want_d = np.where(live, row_scale, np.float32(0))
        diff = first_difference(bits(d.astype(np.float32)), bits(want_d.astype(np.float32)))
        if diff:
            fail(f"{g.name} ({name}): the blocks' d differ from the bundle's scales (row order of the file) at {diff}")
        zero_blocks += int(np.count_nonzero(~live))
        n_tq += 1
    print(f"ok {n_tq} TQ1_0 / TQ2_0 tensors of a gguf-py file: f32(fp16.safetensors) and trit * scale =="
          f" gguf.quants.dequantize bit for bit, scales per channel == f32(d) ({zero_blocks} blocks of zeros)")
    print(f"ok {n_float} F32 tensors carried bit for bit")


def check_tokenizer(args):
    from tokenizers import Tokenizer
    original = json.loads(Path(args.tokenizer).read_text())
    vocab = original["model"]["vocab"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in original["model"]["merges"]]
    get = reader_get(gguf.GGUFReader(args.file))
    if get("tokenizer.ggml.model") != "gpt2":
        fail(f"tokenizer.ggml.model: expected gpt2, found {get('tokenizer.ggml.model')!r}")
    tokens = get("tokenizer.ggml.tokens")
    by_id = {i: t for t, i in vocab.items()}
    for i, t in enumerate(tokens):
        if i in by_id and by_id[i] != t:
            fail(f"tokenizer.ggml.tokens[{i}]: expected {by_id[i]!r}, found {t!r}")
    if len(tokens) < len(vocab):
        fail(f"tokenizer.ggml.tokens: {len(tokens)} tokens for a vocabulary of {len(vocab)}")
    if list(get("tokenizer.ggml.merges")) != merges:
        fail("tokenizer.ggml.merges differ from the tokenizer's merges")
    back = Path(args.back) / "tokenizer.json"
    text = Path(args.text).read_text()
    a = Tokenizer.from_file(args.tokenizer).encode(text, add_special_tokens=False).ids
    b = Tokenizer.from_file(str(back)).encode(text, add_special_tokens=False).ids
    if a != b:
        i = next(i for i, (x, y) in enumerate(zip_longest(a, b)) if x != y)
        fail(f"{back}: encodes {args.text} differently from {args.tokenizer} at token {i}")
    print(f"ok tokenizer: {len(tokens)} tokens and {len(merges)} merges in the GGUF; the tokenizer"
          f" read back encodes {len(a)} tokens of {args.text} identically")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("dir")
    m.add_argument("--family", choices=["llama", "bitnet"], required=True)
    m.add_argument("--untied", action="store_true")
    m.add_argument("--seed", type=int, default=0)
    for cmd in ("check", "check-i2s", "check-foreign"):
        c = sub.add_parser(cmd)
        c.add_argument("bundle")
        c.add_argument("file")
    s = sub.add_parser("same")
    s.add_argument("bundle_a")
    s.add_argument("bundle_b")
    t = sub.add_parser("check-tokenizer")
    for a in ("tokenizer", "file", "back", "text"):
        t.add_argument(a)
    f = sub.add_parser("foreign")
    f.add_argument("file")
    f.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    {"make": make, "check": check, "check-i2s": check_i2s, "same": same, "foreign": foreign,
     "check-foreign": check_foreign, "check-tokenizer": check_tokenizer}[args.cmd](args)


if __name__ == "__main__":
    main()
