"""Skeleton data: the formats users download, the release's preprocessing, and the built-in synthetic set."""
from __future__ import annotations

from typing import Any

from mmn.data.formats import (
    FORMATS,
    SPLITS,
    Clip,
    DataFormatError,
    detect_format,
    read_miga,
    read_pyskl,
    read_release,
    read_split,
    validate_clips,
)
from mmn.data.safe_pickle import CorruptPickleError, UnsafePickleError, load_pickle

__all__ = [
    "FORMATS", "SPLITS", "Clip", "CorruptPickleError", "DataFormatError", "SkeletonDataset", "UnsafePickleError",
    "detect_format", "load_pickle", "read_miga", "read_pyskl", "read_release", "read_split", "validate_clips",
]


def __getattr__(name: str) -> Any:
    """SkeletonDataset on first use: it needs torch, which the config and the command lines' --help must not load."""
    if name == "SkeletonDataset":
        from mmn.data.dataset import SkeletonDataset
        return SkeletonDataset
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
