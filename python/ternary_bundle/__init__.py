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

__all__ = ["open", "create", "verify", "assess", "inspect", "run", "Bundle", "BundleError",
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

    def __repr__(self) -> str:
        return f"<ternary_bundle.Bundle {self.path!r}: {len(self.names())} tensors>"


def open(path: "os.PathLike[str] | str", *, mmap: bool = True) -> Bundle:  # noqa: A001
    """Opens the bundle directory `path` (structure and headers validated; the data checks are
    `verify`'s). `mmap=False` reads the files into memory (network filesystems)."""
    return Bundle(path, mmap=mmap)


_NP_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16"}


def _raw(name: str, t: Any):
    """(name, dtype, shape, little-endian bytes) of a numpy array, a torch tensor (bf16
    included) or a (bytes, dtype, shape) triple, as safetensors takes them."""
    if isinstance(t, tuple) and len(t) == 3:
        data, dtype, shape = t
        return name, str(dtype).upper(), [int(d) for d in shape], bytes(data)
    if type(t).__module__.startswith("torch"):
        import torch
        t = t.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            return name, "BF16", list(t.shape), t.view(torch.int16).numpy().astype("<i2").tobytes()
        t = t.numpy()
    a = np.asarray(t)
    if a.dtype.newbyteorder("=") not in _NP_DTYPES:
        raise TypeError(f"tensor {name!r}: expected float32 or float16 (bfloat16 as a torch tensor"
                        f" or (bytes, 'BF16', shape)), found {a.dtype}")
    kind = _NP_DTYPES[a.dtype.newbyteorder("=")]
    return name, kind, list(a.shape), np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<")).tobytes()


def create(out: "os.PathLike[str] | str", tensors: Mapping[str, Any], *, arch: Optional[str] = None,
           quantize: Optional[Sequence[str]] = None, encoding: str = "trit5",
           granularity: Optional[str] = None, group_size: Optional[int] = None,
           validation: Optional[Mapping[str, Any]] = None, original_forward: str = "dense",
           original_top_k: Optional[int] = None, force: bool = False) -> Dict[str, Any]:
    """`bundle create` from tensors in memory: a chain of layers (`fc1.weight`, ... or
    `arch`, a JSON architecture file), quantized with the absmean quantizer (granularity
    "channel" unless given). `tensors` maps names to numpy arrays or torch tensors (F32, F16,
    BF16: a `state_dict()` as it is). `validation` = {"inputs": [N, D], "labels": [N],
    "difficulty": [N] (optional)}. Returns `inspect(out)`.

        >>> info = tb.create("my-bundle", model.state_dict(), validation={"inputs": x, "labels": y})
    """
    raw = [_raw(n, t) for n, t in tensors.items()]
    options: Dict[str, Any] = {"encoding": encoding, "force": force,
                               "quantize": list(quantize or []),
                               "original_forward": original_forward}
    for k, v in [("arch", arch), ("granularity", granularity), ("group_size", group_size),
                 ("original_top_k", original_top_k)]:
        if v is not None:
            options[k] = os.fspath(v) if k == "arch" else v
    val = None
    if validation is not None:
        x = np.ascontiguousarray(np.asarray(validation["inputs"]), dtype="<f4")
        y = np.ascontiguousarray(np.asarray(validation["labels"]), dtype="<i8")
        d = validation.get("difficulty")
        val = (list(x.shape), x.tobytes(), y.tobytes(),
               None if d is None else np.ascontiguousarray(np.asarray(d), dtype=np.uint8).tobytes())
    return json.loads(_call(_native.create, os.fspath(out), raw, json.dumps(options), val))


def verify(path: "os.PathLike[str] | str", *, only: Optional[Sequence[str]] = None,
           skip: Optional[Sequence[str]] = None, strict: bool = False,
           min_agreement: Optional[float] = None, min_retention: Optional[float] = None,
           max_kl: Optional[float] = None, samples: Optional[int] = None,
           seed: Optional[int] = None, grad_tol: Optional[float] = None,
           reference: "Optional[os.PathLike[str] | str]" = None, mmap: bool = True) -> Dict[str, Any]:
    """`bundle verify --json` as a dict (spec/verify.schema.json): `report["ok"]` is the gate.
    A failed check is in the report, not an exception."""
    options: Dict[str, Any] = {"only": list(only or []), "skip": list(skip or []),
                               "strict": strict, "mmap": mmap}
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


def inspect(path: "os.PathLike[str] | str", *, mmap: bool = True) -> Dict[str, Any]:
    """`bundle inspect --json` as a dict (spec/inspect.schema.json)."""
    return json.loads(_call(_native.inspect, os.fspath(path), mmap))
