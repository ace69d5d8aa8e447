"""Loading downloaded pickles without running their code.

A pickle can name any importable callable and call it while loading, so a data file from the internet is untrusted
code. The unpickler here resolves only the few globals that numpy arrays and builtin containers need; anything else is
refused before it is imported or called.

Even allowed callables can be asked for memory the file does not hold: `bytearray(20_000_000_000)` is a 38-byte
pickle, and so is an array reconstruction with a huge shape. So every call the pickle makes, and every length it
declares, is sized before it runs: what one load may allocate beyond copies of its own bytes is bounded by the file's
size plus `ALLOCATION_SLACK`. The pure-Python unpickler is used because only it lets these checks run before the
allocation (the C one allocates a declared byte string's length before reading it).
"""
from __future__ import annotations

import builtins
import codecs
import importlib
import math
import os
import pickle
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import numpy as np

# What one load may allocate beyond the file's size; real data pickles allocate next to nothing beyond their bytes.
ALLOCATION_SLACK = 256 << 20
_PER_ELEMENT = 64  # bytes charged per element a container constructor builds (a reference plus a share of the object)


class UnsafePickleError(ValueError):
    """The file names a global outside the allowlist; nothing from it was executed."""


class CorruptPickleError(ValueError):
    """The file is not a complete pickle."""


class _Refused(Exception):
    """A call or length the budget does not allow; load_pickle turns it into an UnsafePickleError naming the file."""


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


class _BoundedFile:
    """A file whose reads never ask for more than it has left, so a declared length cannot make them allocate more."""

    def __init__(self, file: BinaryIO, size: int) -> None:
        self._file, self.size = file, size

    def remaining(self) -> int:
        return self.size - self._file.tell()

    def read(self, n: int = -1) -> bytes:
        return self._file.read(self.remaining() if n < 0 else min(n, self.remaining()))

    def readline(self) -> bytes:
        return self._file.readline()


_RECONSTRUCT = _ALLOWED[("numpy._core.multiarray", "_reconstruct")]()
_FROMBUFFER = _ALLOWED[("numpy._core.numeric", "_frombuffer")]()
_SCALAR = _ALLOWED[("numpy._core.multiarray", "scalar")]()


class _RestrictedUnpickler(pickle._Unpickler):  # the Python implementation: see the module docstring
    def __init__(self, file: _BoundedFile, path: Path, budget: int) -> None:
        super().__init__(file)
        self._bounded, self._path, self._budget = file, path, budget

    def _charge(self, size: int, what: str) -> None:
        if size > self._budget:
            raise _Refused(f"{what} would allocate {_human(size)}, beyond what a {_human(self._bounded.size)} file may "
                           f"(its own size plus {_human(ALLOCATION_SLACK)} in all); nothing was allocated")
        self._budget -= size

    def _call(self, func: Any, args: tuple) -> Any:
        self._charge(_cost(func, args, {}), f"{_name(func)}(...)")
        return func(*args)

    # the opcodes that call something or allocate a declared length: sized first, then done as pickle does them
    def _load_reduce(self) -> None:
        args = self.stack.pop()
        self.stack[-1] = self._call(self.stack[-1], args)

    def _load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        self._charge(_cost(cls, args, {}), f"{_name(cls)}.__new__(...)")
        self.append(cls.__new__(cls, *args))

    def _load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        self._charge(_cost(cls, args, kwargs), f"{_name(cls)}.__new__(...)")
        self.append(cls.__new__(cls, *args, **kwargs))

    def _instantiate(self, klass: Any, args: list) -> None:  # the protocol 0/1 OBJ and INST opcodes
        self.append(self._call(klass, tuple(args)))

    def _load_build(self) -> None:
        inst, state = self.stack[-2], self.stack[-1]
        if isinstance(inst, np.ndarray) and isinstance(state, tuple) and len(state) == 5:
            self._check_array_state(state)
        pickle._Unpickler.load_build(self)

    def _check_array_state(self, state: tuple) -> None:
        # (version, shape, dtype, fortran, data): numpy checks a byte buffer's size against the shape, but allocates
        # an object array for the shape before filling it from the list
        _, shape, dtype, _, data = state
        if isinstance(dtype, np.dtype) and dtype.hasobject and isinstance(data, list):
            count = _elements(shape)
            if count != len(data):
                raise _Refused(f"an object array of shape {tuple(shape)} comes with {len(data)} values")
            self._charge(count * _PER_ELEMENT, "an object array")

    def _load_bytearray8(self) -> None:
        # its bytes follow in the file (or the frame read from it): a longer declared length is a truncated file
        (size,) = struct.unpack("<Q", self.read(8))
        frame = self._unframer.current_frame
        left = self._bounded.remaining() + (len(frame.getbuffer()) - frame.tell() if frame else 0)
        if size > left:
            raise pickle.UnpicklingError(f"a byte array of {size} bytes is declared, but only {left} bytes follow")
        buffer = bytearray(size)
        self.readinto(buffer)
        self.append(buffer)

    dispatch: ClassVar[dict] = {
        **pickle._Unpickler.dispatch, pickle.REDUCE[0]: _load_reduce, pickle.NEWOBJ[0]: _load_newobj,
        pickle.NEWOBJ_EX[0]: _load_newobj_ex, pickle.BUILD[0]: _load_build, pickle.BYTEARRAY8[0]: _load_bytearray8}

    def find_class(self, module: str, name: str) -> Any:
        resolve = _ALLOWED.get((module, name))
        if resolve is None:
            raise UnsafePickleError(
                f"{self._path}: refusing to load global {module}.{name}: data pickles may hold only numpy arrays "
                "and builtin containers, and nothing from this file was executed")
        return resolve()


def load_pickle(path: str | Path) -> Any:
    """Unpickle `path`, admitting only numpy arrays and builtin values, and at most the file's size plus
    `ALLOCATION_SLACK` of memory beyond them; errors name the file."""
    path = Path(path)
    with path.open("rb") as file:
        bounded = _BoundedFile(file, os.fstat(file.fileno()).st_size)
        try:
            return _RestrictedUnpickler(bounded, path, bounded.size + ALLOCATION_SLACK).load()
        except UnsafePickleError:
            raise
        except _Refused as refusal:
            raise UnsafePickleError(f"{path}: refusing to load: {refusal}") from None
        except Exception as error:  # any failure while decoding means the bytes are not a whole, valid pickle
            if bounded.remaining() == 0:  # the file ended first, however the opcode at hand reports it
                reason = "pickle data was truncated"
            else:
                reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise CorruptPickleError(f"{path} is truncated or corrupt: {reason}") from None


def _cost(func: Any, args: tuple, kwargs: dict) -> int:
    """Bytes of new memory a call from a pickle may take, estimated from its arguments before it runs (an upper
    bound). Views and the numpy type objects cost nothing; copies cost their length."""
    if func in (bytes, bytearray) and args and isinstance(args[0], int):
        return args[0]  # bytes(n): n zero bytes
    if isinstance(func, type) and issubclass(func, np.ndarray):  # ndarray(shape, dtype=float, ...)
        return _array_bytes(args[0] if args else kwargs.get("shape", ()),
                            args[1] if len(args) > 1 else kwargs.get("dtype", float))
    if func is _RECONSTRUCT:  # _reconstruct(subtype, shape, dtype), then the data comes with BUILD
        return _array_bytes(args[1], args[2]) if len(args) == 3 else 0
    if func in (_FROMBUFFER, np.dtype):  # a view of bytes already read; a type description
        return 0
    if func is _SCALAR:  # scalar(dtype, bytes)
        return args[0].itemsize if args and isinstance(args[0], np.dtype) else 0
    if func in (str, int, float, complex, bool) and not all(map(_is_scalar, args)):
        # the text of a container repeats every element, however often the pickle refers to it
        raise _Refused(f"{func.__name__}() of a {type(next(a for a in args if not _is_scalar(a))).__name__}")
    if func is codecs.encode and len(args) > 1 and str(args[1]).lower().replace("-", "") != "latin1":
        raise _Refused(f"encoding with {args[1]!r} (data pickles use latin1 only)")
    return sum(map(_size, args))  # containers, strings and numbers built from values: a copy of them


def _array_bytes(shape: Any, dtype: Any) -> int:
    try:
        return _elements(shape) * np.dtype(dtype).itemsize
    except (TypeError, ValueError) as error:
        raise _Refused(f"an array of shape {shape!r} and dtype {dtype!r}: {error}") from None


def _elements(shape: Any) -> int:
    dims = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
    if not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in dims):
        raise _Refused(f"an array of shape {shape!r}")
    return math.prod(int(d) for d in dims)  # a Python int: no overflow to hide a huge request


def _size(value: Any) -> int:
    if isinstance(value, (str, bytes, bytearray)):
        return len(value)
    if isinstance(value, np.ndarray):
        return value.size * _PER_ELEMENT
    try:
        return len(value) * _PER_ELEMENT
    except TypeError:
        return 0


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (str, bytes, bytearray, int, float, complex, np.number, np.bool_)) or value is None


def _name(func: Any) -> str:
    return getattr(func, "__qualname__", type(func).__name__)


def _human(size: int) -> str:
    if size < 1024:
        return f"{size}-byte"
    for unit in ("KiB", "MiB", "GiB"):
        size /= 1024
        if size < 1024 or unit == "GiB":
            return f"{size:.3g} {unit}" if size < 1000 else f"{size:.0f} {unit}"
    raise AssertionError("unreachable")
