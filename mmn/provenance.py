"""Where a result came from: fingerprints of the code and the data a run trained with, and its provenance (git
commit, versions, GPU model, command line).

A fingerprint is a short string compared for equality: a rerun of an experiment refuses to mix finished results of
other code or data with new ones (ablations.runner). Like the rest of mmn this module imports neither Ray nor
Optuna; their versions come from the installed packages' metadata (mmn.runtime.versions).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .config import DataConfig
from .data.synthetic import DEFAULT_DIFFICULTY, cache_name
from .model.registry import module_files
from .runtime import hardware, resolve_device, versions

SOURCE_PACKAGES = ("mmn", "ablations", "search_spaces")  # the code that changes a result (tests and docs do not)
_ROOT = Path(__file__).resolve().parent.parent  # the folder holding those packages: a checkout or site-packages
_GIT_TIMEOUT_S = 5


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def code_fingerprint(root: Path = _ROOT, user_modules: Sequence[str] = ()) -> str:
    """A hash of the paths and contents of the .py files of mmn/, ablations/ and search_spaces/ under `root`, and of
    the files of the user's modules a run imports (`user_modules`, as given to mmn.model.registry).

    Read from disk on every call, not cached: Ray workers import the files as they are when they start."""
    digest = hashlib.sha256()
    for package in SOURCE_PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            content = path.read_bytes()
            digest.update(f"{path.relative_to(root).as_posix()}\0{len(content)}\0".encode() + content)
    for path in module_files(user_modules):  # the user's modules (--import, a spec's imports:), by content
        content = path.read_bytes() if path.is_file() else b""
        digest.update(f"user:{path.name}\0{len(content)}\0".encode() + content)
    return digest.hexdigest()[:16]


def data_fingerprint(data: DataConfig) -> str:
    """What identifies the data a run of `data` trains on (`_files_fingerprint`), and with data.layout the layout's
    contents too: results read with a layout file that was edited since are stale."""
    files = _files_fingerprint(data)
    if data.layout is None:
        return files
    return _digest(json.dumps({"data": files, "layout": repr(data.skeleton())}).encode())


def _files_fingerprint(data: DataConfig) -> str:
    """The data's files. The built-in set: its cache name, which holds the generator's version, its settings and seed.
    A local folder: a hash of the names and contents of its files (hidden ones aside), or of the one file a PYSKL root
    names; contents, not modification times, so that a copy of the same files on another machine is the same data
    (SHA-256 runs at about 1.3 GB/s on one core of the development machine, once per experiment). A remote URI is
    only named: it is not read."""
    if data.root is None:
        return cache_name(data.synthetic_seed, data.synthetic_clips_per_class, data.synthetic_long_tail,
                          DEFAULT_DIFFICULTY)
    if "://" in data.root:
        return _digest(json.dumps({"uri": data.root}).encode())
    root = Path(data.root)
    files = [root] if root.is_file() else sorted(p for p in root.iterdir() if p.is_file()
                                                 and not p.name.startswith("."))
    digest = hashlib.sha256()
    for path in files:
        with open(path, "rb") as handle:
            digest.update(f"{path.name}\0".encode() + hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()[:16]


@functools.cache
def git_state(root: Path = _ROOT) -> dict[str, Any] | None:
    """{"commit": ..., "dirty": ...} when the packages run from a git checkout, else None (not a checkout, no git,
    or git too slow). Dirty means tracked files differ from the commit. Asked once per process."""
    def git(*args: str) -> str:
        # GIT_OPTIONAL_LOCKS=0: `git status` must not take the index lock from someone working in the same checkout
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True,
                              timeout=_GIT_TIMEOUT_S, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"}).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != root.resolve():
            return None  # installed inside some other repository (e.g. a virtualenv in a project folder)
        return {"commit": git("rev-parse", "HEAD"),
                "dirty": bool(git("status", "--porcelain", "--untracked-files=no"))}
    except (OSError, subprocess.SubprocessError):
        return None


def _gpu_model(device: str) -> str | None:
    """The model of the GPU a run on `device` (a train.device value) uses, None on the CPU."""
    if device == "cpu" or not torch.cuda.is_available():
        return None
    try:
        return hardware(resolve_device(device)).get("gpu")
    except (RuntimeError, AssertionError, ValueError):  # e.g. cuda:3 on a machine with one GPU
        return None


def provenance(device: str = "auto", command: Sequence[str] | None = None) -> dict[str, Any]:
    """What a result records about its origin: git commit and dirtiness (from a checkout only), versions of
    Python, torch, CUDA, cuDNN, numpy, Ray and Optuna, the GPU model, and the command line (default this
    process's; a Ray trial passes its driver's)."""
    record: dict[str, Any] = {"versions": versions(), "gpu": _gpu_model(device),
                              "command": list(sys.argv if command is None else command)}
    git = git_state()
    if git is not None:
        record["git"] = dict(git)
    return record
