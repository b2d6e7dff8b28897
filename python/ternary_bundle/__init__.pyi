"""Type stubs of `ternary_bundle` (see the module docstring for examples)."""
import os
from typing import Any, Dict, List, Literal, Mapping, Optional, Sequence, Union, overload

import numpy as np
import numpy.typing as npt

from .errors import BundleError as BundleError
from .errors import RuleViolation as RuleViolation

__version__: str

_Path = str | os.PathLike[str]

class Bundle:
    path: str
    manifest: Dict[str, Any]
    def __init__(self, path: _Path, *, mmap: bool = True) -> None: ...
    def names(self) -> List[str]: ...
    def fp16(self, name: str) -> npt.NDArray[np.float16]: ...
    @overload
    def state_dict(self, framework: Literal["np"] = "np") -> Dict[str, npt.NDArray[np.float16]]: ...
    @overload
    def state_dict(self, framework: Literal["pt"]) -> Dict[str, Any]: ...
    def trits(self, name: str) -> npt.NDArray[np.int8]: ...
    def scales(self, name: str) -> npt.NDArray[np.float32]: ...
    def validation(self) -> Dict[str, npt.NDArray[Any]]: ...

def open(path: _Path, *, mmap: bool = True) -> Bundle: ...
def create(
    out: _Path,
    tensors: Optional[Mapping[str, Any]] = None,
    *,
    model_dir: Optional[_Path] = None,
    arch: Optional[_Path] = None,
    quantize: Optional[Sequence[str]] = None,
    encoding: Literal["trit5", "trit2"] = "trit5",
    granularity: Optional[Literal["tensor", "channel", "group"]] = None,
    group_size: Optional[int] = None,
    validation: Union[Mapping[str, Any], _Path, None] = None,
    validation_text: Optional[_Path] = None,
    seq_len: Optional[int] = None,
    quantization_metadata: Union[Mapping[str, Any], _Path, None] = None,
    original: Union[Mapping[str, Any], _Path, None] = None,
    original_forward: Literal["dense", "ternary"] = "dense",
    original_top_k: Optional[int] = None,
    force: bool = False,
) -> Dict[str, Any]: ...
def verify(
    path: _Path,
    *,
    only: Optional[Sequence[str]] = None,
    skip: Optional[Sequence[str]] = None,
    strict: bool = False,
    min_agreement: Optional[float] = None,
    min_retention: Optional[float] = None,
    max_kl: Optional[float] = None,
    samples: Optional[int] = None,
    seed: Optional[int] = None,
    grad_tol: Optional[float] = None,
    reference: Optional[_Path] = None,
    mmap: bool = True,
    trusted_keys: Sequence[_Path] = (),
    require_signature: bool = False,
) -> Dict[str, Any]: ...
def sign(path: _Path, key: _Path) -> Dict[str, Any]: ...
def assess(
    path: _Path,
    *,
    target: Optional[float] = None,
    zone: Optional[Sequence[float]] = None,
    batch_size: Optional[int] = None,
    data: Optional[_Path] = None,
    mmap: bool = True,
) -> Dict[str, Any]: ...
def run(
    path: _Path, inputs: Any, *, weights: Literal["fp16", "ternary"] = "fp16"
) -> npt.NDArray[np.float32]: ...
def inspect(path: _Path, *, mmap: bool = True) -> Dict[str, Any]: ...
