"""Skeleton data: the formats users download, the release's preprocessing, and the built-in synthetic set."""
from mmn.data.dataset import SkeletonDataset
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
