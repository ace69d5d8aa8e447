"""Where a run executes: device choice, CPU allocator tuning, and the versions and hardware a result records."""
from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import sys
from collections.abc import Iterator
from importlib import metadata
from typing import Any

import torch

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def tune_cpu_allocator() -> bool:
    """Keep freed activation memory in glibc's heap instead of returning it to the OS after every op.

    A training step allocates and frees hundreds of tensors of tens of MB; by default glibc serves each with a
    fresh mmap, and the page faults on first touch cost more than many of the ops themselves. Returns whether the
    tuning applied (glibc only).
    """
    if sys.platform != "linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return all(libc.mallopt(option, value) == 1 for option, value in (
            (_M_MMAP_THRESHOLD, 1 << 30), (_M_TRIM_THRESHOLD, 1 << 30), (_M_TOP_PAD, 64 << 20)))
    except (OSError, AttributeError):
        return False


@contextlib.contextmanager
def num_threads(threads: int | None) -> Iterator[None]:
    """torch's CPU threads set to `threads` (None or 0: left as they are) inside the block, restored after it."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def resolve_device(name: str) -> torch.device:
    """auto → the first CUDA device Ray or the user made visible, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device={name} but no CUDA device is visible; use train.device=cpu or auto")
    return device


def versions() -> dict[str, str | int | None]:
    """Versions of what a result depends on. CUDA and cuDNN are those torch was built with (None in a CPU build);
    Ray and Optuna are read from package metadata, as mmn never imports them."""
    def version(package: str) -> str:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(), "numpy": version("numpy"), "ray": version("ray"),
            "optuna": version("optuna"), "mmn-ablate": version("mmn-ablate")}


def hardware(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"device": str(device), "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
                            "machine": platform.machine(), "processor": platform.processor() or platform.machine()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_memory_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    return info


def peak_memory_mib(device: torch.device) -> dict[str, float]:
    """The most memory this process has held so far: resident set ("rss", Linux and macOS) and, on a GPU, what
    torch allocated there ("gpu"), in MiB."""
    peak: dict[str, float] = {}
    try:
        import resource  # Unix only

        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        peak["rss"] = round(maxrss / (2**20 if sys.platform == "darwin" else 2**10), 1)  # bytes on macOS, KiB else
    except ImportError:
        pass
    if device.type == "cuda":
        peak["gpu"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return peak
