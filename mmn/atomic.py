"""Files that never exist half-written: every file this project writes goes through `atomic_write`.

The content goes to a temporary file beside the target, is flushed to disk, and is then renamed over the target,
so a reader (or a rerun after a crash or a full disk) sees the old complete file or the new one, never a torn one.
The temporary file is created with mode 0666 less the process umask, as `open()` would create it (0644 under the
usual umask 022), so a labmate reading results on shared storage can read them; `tempfile.mkstemp` would leave 0600.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import IO, Any, Callable


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[Any]], None], binary: bool = True) -> Path:
    """Write through `write(file)` into a temporary file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb" if binary else "w") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    return atomic_write(path, lambda handle: handle.write(data))


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write(path, lambda handle: handle.write(text), binary=False)


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """`data` as indented JSON with sorted keys; values JSON cannot hold are written as their str()."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str))
