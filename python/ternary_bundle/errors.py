"""The exceptions of `ternary_bundle`. They are plain Python classes, so they pickle."""
from __future__ import annotations

from typing import Optional


class BundleError(Exception):
    """Any error of the toolkit (a damaged bundle, a bad argument, a file that cannot be read)."""


class RuleViolation(BundleError, ValueError):
    """A broken rule of spec/FORMAT.md: `.rule` ("4.4"), `.path`, `.tensor`, `.expected`,
    `.found`."""

    def __init__(self, message: str, rule: Optional[str] = None, path: Optional[str] = None,
                 tensor: Optional[str] = None, expected: Optional[str] = None,
                 found: Optional[str] = None):
        super().__init__(message, rule, path, tensor, expected, found)
        self.rule, self.path, self.tensor = rule, path, tensor
        self.expected, self.found = expected, found

    def __str__(self) -> str:
        return self.args[0]


class BundleExistsError(BundleError, FileExistsError):
    """The destination exists (pass `force=True` to replace a bundle)."""


class BundleNotFoundError(BundleError, FileNotFoundError):
    """A file or directory is missing."""


class BundlePermissionError(BundleError, PermissionError):
    """The operating system refused access."""


def from_native(e: Exception) -> BundleError:
    """The exception for a `_native.NativeError`."""
    kind, message, rule, path, tensor, expected, found = e.args
    if kind == "rule":
        return RuleViolation(message, rule, path, tensor, expected, found)
    cls = {"exists": BundleExistsError, "not_found": BundleNotFoundError,
           "permission": BundlePermissionError}.get(kind, BundleError)
    return cls(message)
