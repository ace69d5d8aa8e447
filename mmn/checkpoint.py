"""Atomic files: checkpoints (safe to load: weights_only) and JSON results never exist half-written."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = 1


class CheckpointMismatch(ValueError):
    """A checkpoint written for another configuration (another variant, seed or data set)."""


def atomic_write(path: str | os.PathLike, write: Callable[[Any], None], binary: bool = True) -> Path:
    """Write through `write(file)` into a temporary file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb" if binary else "w") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_json(path: str | os.PathLike, data: Any) -> Path:
    return atomic_write(path, lambda f: json.dump(data, f, indent=2, sort_keys=True, default=str), binary=False)


def save_checkpoint(directory: str | os.PathLike, state: dict[str, Any]) -> Path:
    return atomic_write(Path(directory) / CHECKPOINT_NAME,
                        lambda f: torch.save({"format_version": CHECKPOINT_FORMAT, **state}, f))


def load_checkpoint(directory: str | os.PathLike, config: dict[str, Any], config_hash: str) -> dict[str, Any] | None:
    """The checkpoint in `directory` if there is one; an error if it belongs to another configuration."""
    path = Path(directory) / CHECKPOINT_NAME
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which, never run code from it
        raise CheckpointMismatch(f"{path} is not a readable MMN checkpoint ({type(error).__name__}: "
                                 f"{str(error).splitlines()[0][:200]}); delete it to start over") from None
    if not isinstance(state, dict) or state.get("format_version", 0) > CHECKPOINT_FORMAT:
        raise CheckpointMismatch(f"{path} was written by a newer mmn-ablate (format "
                                 f"{state.get('format_version') if isinstance(state, dict) else '?'}); upgrade")
    if state.get("config_hash") != config_hash:
        raise CheckpointMismatch(f"{path} was written for another configuration ({describe_difference(state.get('config', {}), config)}); "
                                 f"use another checkpoint folder or the matching config")
    return state


def describe_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """'model.msm: off → released, ...' for the first few keys that differ between two nested configs."""
    changes = []
    for section in sorted(set(old) | set(new)):
        before, after = old.get(section, {}), new.get(section, {})
        for key in sorted(set(before) | set(after)):
            if before.get(key) != after.get(key):
                changes.append(f"{section}.{key}: {before.get(key)!r} → {after.get(key)!r}")
    return ", ".join(changes[:4]) + (" ..." if len(changes) > 4 else "") if changes else "different hash"
