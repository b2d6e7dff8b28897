"""Ternary (BitNet b1.58) handoff bundles from Python.

    >>> import ternary_bundle as tb
    >>> b = tb.open("demo-bundle")
    >>> w = b.fp16("fc1.weight")          # a read-only numpy view over the memory-mapped file
    >>> sd = b.state_dict()               # every FP16 tensor, by name
    >>> report = tb.verify("demo-bundle") # the dict `bundle verify --json` prints
    >>> report["ok"]
    True

The Rust core (`ternary_bundle._native`) opens and validates the bundle; this module maps the
files it validated (checking they are the same files: size, device, inode) and hands out numpy
views over them, never copies. Errors are `BundleError` and its subclasses; a failed check is
not an error: `verify` returns the report.
"""
from __future__ import annotations

import builtins
import json
import mmap as _mmap
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from . import _native
from .errors import (BundleError, BundleExistsError, BundleNotFoundError, BundlePermissionError,
                     RuleViolation, from_native)

__all__ = ["open", "create", "verify", "assess", "inspect", "run", "sign", "Bundle", "BundleError",
           "RuleViolation", "BundleExistsError", "BundleNotFoundError", "BundlePermissionError"]
__version__ = _native.__version__

_DTYPES = {"F16": np.float16, "F32": np.float32, "F64": np.float64, "U8": np.uint8,
           "I8": np.int8, "I16": np.int16, "I32": np.int32, "I64": np.int64, "U16": np.uint16,
           "U32": np.uint32, "U64": np.uint64, "BOOL": np.bool_}


def _call(f, *args, **kwargs):
    try:
        return f(*args, **kwargs)
    except _native.NativeError as e:
        raise from_native(e) from None


class Bundle:
    """An opened bundle. Arrays it returns are read-only views over the memory-mapped files
    (or, with `mmap=False`, over a copy read into memory); each keeps the map alive, so they
    stay valid after the Bundle is gone."""

    def __init__(self, path: "os.PathLike[str] | str", *, mmap: bool = True):
        self._native = _call(_native.NativeBundle, os.fspath(path), mmap)
        d = json.loads(self._native.describe())
        self.path: str = d["dir"]
        self.manifest: Dict[str, Any] = d["manifest"]
        self._tensors = {role: {t["name"]: t for t in ts} for role, ts in d["tensors"].items()}
        self._buffers: Dict[str, Any] = {}
        self._files = d["files"]
        self._mmap = mmap

    def _buffer(self, role: str, private: bool = False):
        """The bytes of file `role` as validated: a read-only map, or with `private` a
        copy-on-write map (writable; writes stay in this process and never reach the file)."""
        key = (role, private)
        if key not in self._buffers:
            ident = self._files[role]
            with builtins.open(ident["path"], "rb") as f:
                st = os.fstat(f.fileno())
                if (st.st_size, st.st_dev, st.st_ino) != (ident["size"], ident["dev"], ident["ino"]):
                    raise BundleError(f"{ident['path']}: the file changed after it was validated")
                if not self._mmap or st.st_size == 0:
                    buf: Any = bytearray(f.read()) if private else f.read()
                else:
                    access = _mmap.ACCESS_COPY if private else _mmap.ACCESS_READ
                    buf = _mmap.mmap(f.fileno(), 0, access=access)
            self._buffers[key] = buf
        return self._buffers[key]

    def _view(self, role: str, name: str, private: bool = False) -> np.ndarray:
        try:
            t = self._tensors[role][name]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor {name!r} in {role}.safetensors") from None
        dtype = np.dtype(_DTYPES[t["dtype"]]).newbyteorder("<")
        count = t["nbytes"] // dtype.itemsize
        a = np.frombuffer(self._buffer(role, private), dtype=dtype, count=count, offset=t["offset"])
        a = a.reshape(t["shape"])
        if not private:
            a.flags.writeable = False
        return a

    def names(self) -> List[str]:
        """Every tensor of the model, in the manifest's order."""
        return [t["name"] for t in self.manifest["tensors"]]

    def fp16(self, name: str) -> np.ndarray:
        """The FP16 weights of `name` (read-only view, float16)."""
        return self._view("fp16", name)

    def state_dict(self, framework: str = "np") -> Dict[str, Any]:
        """Every FP16 tensor by name: read-only numpy views (`"np"`), or torch tensors (`"pt"`)
        over a copy-on-write map of the same file."""
        if framework == "np":
            return {n: self.fp16(n) for n in self.names()}
        if framework == "pt":
            import torch
            # torch tensors are writable: they view a copy-on-write map of the file (no copy
            # until a page is written, and writes never reach the file); data the spec lets
            # sit at an odd offset is copied, since torch cannot view it.
            views = {n: self._view("fp16", n, private=True) for n in self.names()}
            return {n: torch.from_numpy(a if a.flags.aligned else a.copy())
                    for n, a in views.items()}
        raise ValueError(f"framework: expected 'np' or 'pt', found {framework!r}")

    def trits(self, name: str) -> np.ndarray:
        """The trits of quantized tensor `name`: int8 in {-1, 0, 1}, its shape, decoded and
        checked (rules 4.3, 4.4)."""
        raw = _call(self._native.trits, name)
        shape = next(t["shape"] for t in self.manifest["tensors"] if t["name"] == name)
        a = np.frombuffer(raw, dtype=np.int8).reshape(shape)
        return a

    def scales(self, name: str) -> np.ndarray:
        """The scales of quantized tensor `name` (float32; one, one per row, or per group)."""
        return self._view("ternary", name + ".scale")

    def validation(self) -> Dict[str, np.ndarray]:
        """The validation set the bundle carries (`validation.safetensors`, spec section 6):
        `inputs` [N, D] or `input_ids` [N, T], `labels`, `difficulty` when given, and the
        original model's `original_predictions` (and distributions), as read-only views. Empty
        when the bundle has none."""
        return {n: self._view("validation", n) for n in self._tensors.get("validation", {})}

    def __repr__(self) -> str:
        return f"<ternary_bundle.Bundle {self.path!r}: {len(self.names())} tensors>"


def open(path: "os.PathLike[str] | str", *, mmap: bool = True) -> Bundle:  # noqa: A001
    """Opens the bundle directory `path` (structure and headers validated; the data checks are
    `verify`'s). `mmap=False` reads the files into memory (network filesystems)."""
    return Bundle(path, mmap=mmap)


_SAFETENSORS_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64",
                      "int8": "I8", "uint8": "U8", "int16": "I16", "uint16": "U16",
                      "int32": "I32", "uint32": "U32", "int64": "I64", "uint64": "U64",
                      "bool": "BOOL"}


def _lend(name: str, t: Any):
    """(name, dtype, shape, bytes) of a tensor, its bytes a flat uint8 view of the caller's own
    memory (nothing is copied unless the array is not C-contiguous little-endian): a numpy array,
    a CPU torch tensor (bf16 included, as it is), or a (bytes, dtype, shape) triple as
    safetensors takes them."""
    if isinstance(t, tuple) and len(t) == 3:
        data, dtype, shape = t
        return name, str(dtype).upper(), [int(d) for d in shape], np.frombuffer(data, np.uint8)
    if type(t).__module__.startswith("torch"):
        import torch
        t = t.detach()
        if t.device.type != "cpu":
            raise TypeError(f"tensor {name!r}: expected a CPU tensor, found one on {t.device}"
                            " (move it with .cpu(): the bundle is written from host memory)")
        t = t.contiguous()
        shape = list(t.shape)
        if t.dtype == torch.bfloat16:
            return name, "BF16", shape, t.reshape(-1).view(torch.int16).numpy().view(np.uint8)
        t = t.numpy()
    a = np.asarray(t)
    kind = _SAFETENSORS_DTYPES.get(a.dtype.name)
    if kind is None:
        raise TypeError(f"tensor {name!r}: expected a numeric array (F32, F16, BF16 weights; "
                        f"integer trits), found dtype {a.dtype}")
    shape = list(a.shape)
    if a.dtype.itemsize > 1 and a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    a = np.ascontiguousarray(a).reshape(-1)
    return name, kind, shape, a.view(np.uint8)


def _lend_all(label: str, tensors: Mapping[str, Any]) -> List[Any]:
    if not isinstance(tensors, Mapping):
        raise TypeError(f"{label}: expected a mapping of names to tensors (a state_dict), "
                        f"found {type(tensors).__name__}")
    return [_lend(str(n), t) for n, t in tensors.items()]


# A validation set's arrays, named and typed as in a validation file (spec rule 6.1).
_VALIDATION_DTYPES = {"inputs": "<f4", "input_ids": "<i8", "labels": "<i8", "difficulty": "u1"}


def _validation(validation: Mapping[str, Any]) -> List[Any]:
    unknown = set(validation) - set(_VALIDATION_DTYPES)
    if unknown:
        raise ValueError(f"validation: unknown keys {sorted(unknown)}; expected "
                         f"{sorted(_VALIDATION_DTYPES)}")
    out = []
    for key, dtype in _VALIDATION_DTYPES.items():
        v = validation.get(key)
        if v is None:
            continue
        if type(v).__module__.startswith("torch"):
            v = v.detach().cpu().numpy()
        a = np.ascontiguousarray(np.asarray(v), dtype=dtype)
        out.append((key, {"<f4": "F32", "<i8": "I64", "u1": "U8"}[dtype], list(a.shape),
                    a.reshape(-1).view(np.uint8)))
    return out


def _is_path(x: Any) -> bool:
    return isinstance(x, (str, os.PathLike))


def create(out: "os.PathLike[str] | str", tensors: Optional[Mapping[str, Any]] = None, *,
           model_dir: "Optional[os.PathLike[str] | str]" = None, arch: Optional[str] = None,
           quantize: Optional[Sequence[str]] = None, encoding: str = "trit5",
           granularity: Optional[str] = None, group_size: Optional[int] = None,
           validation: Any = None, validation_text: "Optional[os.PathLike[str] | str]" = None,
           seq_len: Optional[int] = None, quantization_metadata: Any = None,
           original: Any = None, original_forward: str = "dense",
           original_top_k: Optional[int] = None, force: bool = False) -> Dict[str, Any]:
    """`bundle create` in-process. Returns `inspect(out)` with `notes` (how the source was read).

    From tensors in memory, a chain of layers (`fc1.weight`, ... or `arch`, a JSON
    architecture file): `tensors` maps names to numpy arrays or CPU torch tensors, a
    `state_dict()` as it is (F32, F16, BF16; bf16 numpy-less as `(bytes, "BF16", shape)`). The
    arrays are read in place, one at a time, as `bundle create --from` reads a checkpoint: no
    copy of the model is made.

    - Float weights are quantized by the absmean quantizer (`granularity` "channel" unless
      given, `encoding`, `quantize` globs).
    - The quantizing stage's own trits go in as they are: `tensors` holds the trits (int8 in
      {-1, 0, 1}, or any integer or float dtype holding them) beside the float tensors, and
      `quantization_metadata` their scales, as the dict of `quantization_metadata.json` (spec
      section 18.1: `{"scales": {name: number | [per row] | [[per group] per row]}, ...}`) or
      its path.

    From a file or model directory: `model_dir=PATH` is `bundle create --from PATH` (a Hugging
    Face directory, a GGUF file, a checkpoint), `validation_text` + `seq_len` its
    `--validation-text` and `--seq-len`.

    `validation`: a dict `{"inputs": [N, D], "labels": [N], "difficulty": [N]}` (a decoder:
    `{"input_ids": [N, T]}`, labels derived) or the path of a validation file. `original`: the
    original (pre-quantization) model, a mapping of float tensors or a path, run dense (or
    `original_forward="ternary"`: through this bundle's quantizer, for a stage whose model ran
    its weights ternary). Retention is measured against it.

        >>> info = tb.create("my-bundle", model.state_dict(),
        ...                  validation={"inputs": x, "labels": y}, original_forward="ternary")
        >>> info = tb.create("lm-bundle", model_dir="checkpoints/llama", validation_text="val.txt",
        ...                  seq_len=128)
    """
    if (tensors is None) == (model_dir is None):
        raise TypeError("create: give tensors (a state dict in memory) or model_dir (a path), "
                        "exactly one")
    options: Dict[str, Any] = {"encoding": encoding, "force": force,
                               "quantize": list(quantize or []),
                               "original_forward": original_forward}
    for k, v in [("arch", arch), ("granularity", granularity), ("group_size", group_size),
                 ("original_top_k", original_top_k), ("validation_text", validation_text),
                 ("seq_len", seq_len)]:
        if v is not None:
            options[k] = os.fspath(v) if k in ("arch", "validation_text") else v
    if quantization_metadata is not None:
        if _is_path(quantization_metadata):
            options["quantization_metadata"] = os.fspath(quantization_metadata)
        else:
            options["metadata"] = json.dumps(quantization_metadata)
    lent_validation = lent_original = None
    if validation is not None:
        if _is_path(validation):
            options["validation"] = os.fspath(validation)
        else:
            lent_validation = _validation(validation)
    if original is not None:
        if _is_path(original):
            options["original"] = os.fspath(original)
        else:
            lent_original = _lend_all("original", original)
    if model_dir is not None:
        if lent_original is not None:
            raise TypeError("create(model_dir=...): give original as a path (a checkpoint or "
                            "model directory), as bundle create --from takes it")
        options["from"] = os.fspath(model_dir)
        return json.loads(_call(_native.create_from, os.fspath(out), json.dumps(options),
                                lent_validation))
    return json.loads(_call(_native.create, os.fspath(out), _lend_all("tensors", tensors),
                            json.dumps(options), lent_validation, lent_original))


def verify(path: "os.PathLike[str] | str", *, only: Optional[Sequence[str]] = None,
           skip: Optional[Sequence[str]] = None, strict: bool = False,
           min_agreement: Optional[float] = None, min_retention: Optional[float] = None,
           max_kl: Optional[float] = None, samples: Optional[int] = None,
           seed: Optional[int] = None, grad_tol: Optional[float] = None,
           reference: "Optional[os.PathLike[str] | str]" = None, mmap: bool = True,
           trusted_keys: "Sequence[os.PathLike[str] | str]" = (),
           require_signature: bool = False) -> Dict[str, Any]:
    """`bundle verify --json` as a dict (spec/verify.schema.json): `report["ok"]` is the gate.
    A failed check is in the report, not an exception. `trusted_keys` are public key PEM files
    (`--trusted-key`): the signature check passes only for a `model.sig` by one of them."""
    options: Dict[str, Any] = {"only": list(only or []), "skip": list(skip or []),
                               "strict": strict, "mmap": mmap,
                               "trusted_keys": [os.fspath(k) for k in trusted_keys],
                               "require_signature": require_signature}
    for k, v in [("min_agreement", min_agreement), ("min_retention", min_retention),
                 ("max_kl", max_kl), ("samples", samples), ("seed", seed), ("grad_tol", grad_tol)]:
        if v is not None:
            options[k] = v
    if reference is not None:
        options["reference"] = os.fspath(reference)
    return json.loads(_call(_native.verify, os.fspath(path), json.dumps(options)))


def assess(path: "os.PathLike[str] | str", *, target: Optional[float] = None,
           zone: Optional[Sequence[float]] = None, batch_size: Optional[int] = None,
           data: "Optional[os.PathLike[str] | str]" = None, mmap: bool = True) -> Dict[str, Any]:
    """`bundle assess --json` as a dict (spec/assess.schema.json): the receiving stage's
    accuracy per difficulty, the level nearest `target` and the `phase5/*` metrics."""
    options: Dict[str, Any] = {"mmap": mmap}
    if target is not None:
        options["target"] = target
    if zone is not None:
        options["zone"] = list(zone)
    if batch_size is not None:
        options["batch_size"] = batch_size
    if data is not None:
        options["data"] = os.fspath(data)
    return json.loads(_call(_native.assess, os.fspath(path), json.dumps(options)))


def run(path: "os.PathLike[str] | str", inputs: Any, *, weights: str = "fp16") -> np.ndarray:
    """`bundle run`: the bundle's reference model (spec section 16, f32) along `weights`
    ("fp16" or "ternary") on `inputs`: rows [N, input_dim] of a chain of layers, or a decoder's
    token ids [N, T]. Returns the logits, [N, classes] or [N, T, vocab] float32. The bundle is
    checked first (checksums, encoding, scales, exact dequantization)."""
    a = np.asarray(inputs)
    if a.ndim != 2:
        raise ValueError(f"inputs: expected a matrix [N, D] or [N, T], found shape {a.shape}")
    if np.issubdtype(a.dtype, np.integer):
        raw, shape = _call(_native.run, os.fspath(path), weights, None,
                           a.astype(np.int64).ravel().tolist(), int(a.shape[1]))
    else:
        raw, shape = _call(_native.run, os.fspath(path), weights,
                           np.ascontiguousarray(a, dtype=np.float32).ravel().tolist(), None, 0)
    return np.frombuffer(raw, dtype="<f4").reshape(shape)


def sign(path: "os.PathLike[str] | str", key: "os.PathLike[str] | str") -> Dict[str, Any]:
    """`bundle sign`: checks the bundle's digests, then writes `model.sig` (OpenSSF Model
    Signing, spec section 10.1) signed with the PEM private key `key` (EC P-256 or P-384).
    Returns {"hint", "curve", "files"}."""
    hint, curve, files = _call(_native.sign, os.fspath(path), os.fspath(key))
    return {"hint": hint, "curve": curve, "files": files}


def inspect(path: "os.PathLike[str] | str", *, mmap: bool = True) -> Dict[str, Any]:
    """`bundle inspect --json` as a dict (spec/inspect.schema.json)."""
    return json.loads(_call(_native.inspect, os.fspath(path), mmap))
