"""Loading downloaded pickles without running their code.

A pickle can name any importable callable and call it while loading, so a data file from the internet is untrusted
code. The unpickler here resolves only the few globals that numpy arrays and builtin containers need; anything else is
refused before it is imported or called.
"""
from __future__ import annotations

import builtins
import codecs
import importlib
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any


class UnsafePickleError(ValueError):
    """The file names a global outside the allowlist; nothing from it was executed."""


class CorruptPickleError(ValueError):
    """The file is not a complete pickle."""


def _numpy_core(submodule: str, name: str) -> Callable[[], Any]:
    # numpy 2 moved numpy.core to numpy._core; importing the new path first keeps numpy 2 free of its deprecation
    # warning, and numpy < 1.26 (no numpy._core) falls back to the old one.
    def resolve() -> Any:
        for base in ("numpy._core", "numpy.core"):
            try:
                return getattr(importlib.import_module(f"{base}.{submodule}"), name)
            except ImportError:
                continue
        raise ImportError(f"numpy has no {submodule}.{name}")

    return resolve


def _numpy_top(name: str) -> Callable[[], Any]:
    return lambda: getattr(importlib.import_module("numpy"), name)


def _builtin(name: str) -> Callable[[], Any]:
    return lambda: getattr(builtins, name)


_BUILTIN_NAMES = ("dict", "list", "tuple", "set", "frozenset", "int", "float", "complex", "bool", "str", "bytes",
                  "bytearray")

# (module, name) as written in the pickle -> how to get the object; array reconstruction and plain values only.
_ALLOWED: dict[tuple[str, str], Callable[[], Any]] = {
    **{(module, "_reconstruct"): _numpy_core("multiarray", "_reconstruct")
       for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(module, "scalar"): _numpy_core("multiarray", "scalar")
       for module in ("numpy.core.multiarray", "numpy._core.multiarray")},
    # protocol 5 pickles rebuild arrays from a byte buffer
    **{(module, "_frombuffer"): _numpy_core("numeric", "_frombuffer")
       for module in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): _numpy_top("ndarray"),
    ("numpy", "dtype"): _numpy_top("dtype"),
    # protocol 2 writes bytes as _codecs.encode(text, "latin1")
    ("_codecs", "encode"): lambda: codecs.encode,
    **{(module, name): _builtin(name) for module in ("builtins", "__builtin__") for name in _BUILTIN_NAMES},
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        resolve = _ALLOWED.get((module, name))
        if resolve is None:
            raise UnsafePickleError(
                f"{self._path}: refusing to load global {module}.{name}: data pickles may hold only numpy arrays "
                "and builtin containers, and nothing from this file was executed")
        return resolve()


def load_pickle(path: str | Path) -> Any:
    """Unpickle `path`, admitting only numpy arrays and builtin values; errors name the file."""
    path = Path(path)
    with path.open("rb") as file:
        try:
            return _RestrictedUnpickler(file, path).load()
        except UnsafePickleError:
            raise
        except Exception as error:  # any failure while decoding means the bytes are not a whole, valid pickle
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise CorruptPickleError(f"{path} is truncated or corrupt: {reason}") from None
