"""Readers for the skeleton formats users download, and validation of what they read.

Every reader returns a list of `Clip`s: keypoints float32 (persons M, frames L, joints V, 2), a name and a label
(-1 where withheld). Formats:
- release: MMN's pickles, `<split>_data.pkl` ({"annotations": [{"frame_dir", "keypoint", ...}]}) with labels from
  `<split>_label.pkl` ([{"file_name", "length", "label"}]);
- pyskl: one pickle {"split": {split: [frame_dir, ...]}, "annotations": [{"frame_dir", "label", "keypoint"
  (M, T, V, C)}]}, C 2 or 3 (x, y[, score]);
- miga: the MiGA challenge's iMiGUE files, `<split>_data.npy` (N, 3, T, V, M) zero-padded at the end and
  `<split>_label.pkl` = (names, labels).
Errors are one line naming the file, the clip and what was expected. Labels are whole numbers: an integral float
(3.0, as a float label array holds) is read as that integer, while 3.7, True or "seven" are errors. Keypoints are
real numbers. Training uses one person per clip; a clip whose further persons hold any nonzero coordinate is an
error rather than a silent drop (further persons that are all zero are padding).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmn.data.safe_pickle import load_pickle
from mmn.layouts import LAYOUTS, SkeletonLayout

FORMATS = ("release", "pyskl", "miga")
SPLITS = ("train", "val", "test")
_MIGA_CHUNK = 256  # clips per pass when finding padding, so a large .npy is never fully in memory as booleans


class DataFormatError(ValueError):
    """Data files that are missing, malformed, or do not fit the chosen skeleton layout."""


@dataclass(frozen=True, eq=False)  # eq would compare arrays elementwise
class Clip:
    name: str
    keypoint: np.ndarray  # float32 (M, L, V, 2)
    label: int  # -1 where withheld
    source: Path  # the file it came from, for error messages
    channels: int = 2  # coordinate channels in the file: 2 (x, y) or 3 (x, y, score); x and y are kept


def read_split(root: str | Path, split: str, layout: SkeletonLayout, format: str = "auto") -> list[Clip]:
    """Read and validate one split from `root` (a folder, or a PYSKL file); `format` "auto" detects it."""
    _, path, clips = read_clips(root, split, format)
    validate_clips(clips, layout, split, path)
    return clips


def read_clips(root: str | Path, split: str, format: str = "auto") -> tuple[str, Path, list[Clip]]:
    """(format, path read, clips) of one split as the files hold them, not yet checked against a layout."""
    fmt, path = detect_format(root, split) if format == "auto" else _explicit(root, split, format)
    reader = {"release": read_release, "pyskl": read_pyskl, "miga": read_miga}[fmt]
    return fmt, path, reader(path, split)


def detect_format(root: str | Path, split: str) -> tuple[str, Path]:
    """(format, path to read) for the files in `root`, with an error naming the files expected otherwise."""
    root = _existing(root)
    if root.is_file():
        if root.suffix == ".pkl":
            return "pyskl", root
        raise DataFormatError(f"{root} is not a data folder or a PYSKL .pkl file")
    if (root / f"{split}_data.pkl").is_file():
        return "release", root
    if (root / f"{split}_data.npy").is_file():
        return "miga", root
    candidates = _pyskl_candidates(root)
    if len(candidates) == 1:
        return "pyskl", candidates[0]
    if len(candidates) > 1:
        raise DataFormatError(f"{root} holds several pickles that could be PYSKL files "
                              f"({', '.join(p.name for p in candidates)}); pass the one to use as the data root")
    raise DataFormatError(
        f"no {split} data recognised in {root}: expected {split}_data.pkl and {split}_label.pkl (MMN release), "
        f"{split}_data.npy and {split}_label.pkl (MiGA), or one PYSKL .pkl file")


def read_release(root: str | Path, split: str) -> list[Clip]:
    """MMN's released pickles for `split` in folder `root`; labels come from the label file."""
    data_path, label_path = Path(root) / f"{split}_data.pkl", Path(root) / f"{split}_label.pkl"
    data = _load(data_path)
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise DataFormatError(f"{data_path}: expected a dict with an 'annotations' list (MMN release format), "
                              f"got {_describe(data)}")
    labels = _release_labels(label_path, split)
    clips = []
    for position, annotation in enumerate(data["annotations"]):
        name = _clip_name(annotation, "frame_dir", data_path, position)
        if labels is None:
            label = -1
        elif name in labels:
            label = labels[name]
        elif split == "test":
            label = -1
        else:
            raise DataFormatError(f"{label_path}: no label for clip {name!r} of {data_path.name}")
        keypoint, channels = _keypoint(annotation, data_path, name)
        clips.append(Clip(name, keypoint, label, data_path, channels))
    return clips


def read_pyskl(path: str | Path, split: str) -> list[Clip]:
    """The clips of `split` in a PYSKL pickle, in the file's annotation order. A split missing by that name may be
    the one key ending in `_<split>` (PYSKL's benchmark files name theirs e.g. "xsub_train")."""
    path = Path(path)
    data = _load(path)
    if not (isinstance(data, dict) and isinstance(data.get("split"), dict)
            and isinstance(data.get("annotations"), list)):
        raise DataFormatError(f"{path}: expected a dict with a 'split' dict and an 'annotations' list "
                              f"(PYSKL format), got {_describe(data)}")
    members = {str(name) for name in data["split"][_pyskl_split(data["split"], split, path)]}
    clips = []
    for position, annotation in enumerate(data["annotations"]):
        name = _clip_name(annotation, "frame_dir", path, position)
        if name in members:
            keypoint, channels = _keypoint(annotation, path, name)
            clips.append(Clip(name, keypoint, _label(annotation.get("label"), path, name), path, channels))
    return clips


def read_miga(root: str | Path, split: str) -> list[Clip]:
    """MiGA's iMiGUE arrays: trailing all-zero frames dropped, (x, y) kept of (x, y, confidence)."""
    data_path, label_path = Path(root) / f"{split}_data.npy", Path(root) / f"{split}_label.pkl"
    _check_coordinates(_npy_dtype(data_path), f"{data_path}:")
    try:
        data = np.load(data_path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError) as error:
        raise DataFormatError(f"{data_path} is truncated or corrupt: {error}") from None
    if data.ndim != 5 or data.shape[1] < 2:
        raise DataFormatError(f"{data_path}: array of shape {data.shape}, expected (clips, 3, frames, joints, "
                              "persons) with channels x, y, confidence")
    names, labels = _miga_labels(label_path, split, len(data))
    clips = []
    for start in range(0, len(data), _MIGA_CHUNK):
        chunk = np.asarray(data[start:start + _MIGA_CHUNK])
        filled = (chunk != 0).any(axis=(1, 3, 4))  # (n, T): frames with any nonzero value
        lengths = np.where(filled.any(axis=1), filled.shape[1] - np.argmax(filled[:, ::-1], axis=1), 0)
        for offset, length in enumerate(lengths):
            keypoint = chunk[offset, :2, :length].transpose(3, 1, 2, 0)  # (2, L, V, M) -> (M, L, V, 2)
            index = start + offset
            clips.append(Clip(names[index], np.ascontiguousarray(keypoint, dtype=np.float32), labels[index],
                              data_path, data.shape[1]))
    return clips


def validate_clips(clips: list[Clip], layout: SkeletonLayout, split: str, source: Path) -> None:
    """Check clips against `layout`: unique names, joints, frames, one person, finite values, labels in [0, classes)
    (-1 on test); the first problem is a DataFormatError."""
    if not clips:
        raise DataFormatError(f"{source}: the {split} split has no clips")
    for problem in repeated_names(clips, split):
        raise DataFormatError(problem)
    for clip in clips:
        problem = clip_problem(clip, layout, split)
        if problem:
            raise DataFormatError(problem)


def clip_problem(clip: Clip, layout: SkeletonLayout, split: str) -> str | None:
    """Why training would refuse `clip` of `split` under `layout`, in one line naming file and clip; None if not."""
    where = f"{clip.source}: clip {clip.name!r}"
    persons, frames, joints, _ = clip.keypoint.shape
    if joints != layout.num_joints:
        option = "the dataset option" if layout in LAYOUTS.values() else "data.layout"
        return (f"{where} has {joints} joints, expected {layout.num_joints} for the {layout.name} layout (is {option} "
                "right?)")
    if frames == 0:
        return f"{where} has no frames"
    if persons == 0:
        return f"{where} has no person"
    if persons > 1 and clip.keypoint[1:].any():  # all-zero further persons are padding: nothing is lost
        return (f"{where} has {persons} persons, and training uses one per clip (the model's input holds one "
                "person, as MA-52 and iMiGUE have); to train on it, keep the person to use in the file "
                "(keypoint[:1], or zero the others), or leave the clip out")
    if not np.isfinite(clip.keypoint).all():
        return f"{where} has non-finite coordinates"
    if not (0 <= clip.label < layout.num_classes or (clip.label == -1 and split == "test")):
        withheld = " (-1, a withheld label, is allowed only on the test split)" if clip.label == -1 else ""
        return f"{where} has label {clip.label}, expected an integer in [0, {layout.num_classes}){withheld}"
    return None


def _existing(root: str | Path) -> Path:
    root = Path(root)
    if not root.exists():
        raise DataFormatError(f"data folder {root} does not exist; pass --data-root with the folder that holds the "
                              "dataset files")
    return root


def _explicit(root: str | Path, split: str, format: str) -> tuple[str, Path]:
    if format not in FORMATS:
        raise DataFormatError(f"unknown data format {format!r}: choose auto or one of {', '.join(FORMATS)}")
    root = _existing(root)
    if format == "pyskl" and root.is_dir():
        candidates = _pyskl_candidates(root)
        if len(candidates) != 1:
            raise DataFormatError(f"{root}: expected one PYSKL .pkl file, found {len(candidates)}; pass the file "
                                  "as the data root")
        return format, candidates[0]
    if format != "pyskl":
        expected = f"{split}_data.pkl" if format == "release" else f"{split}_data.npy"
        if not (root / expected).is_file():
            raise DataFormatError(f"{root / expected} does not exist ({format} format, {split} split)")
    return format, root


def _pyskl_candidates(root: Path) -> list[Path]:
    # the release's own files are <split>_data.pkl / <split>_label.pkl; any other pickle may be a PYSKL file
    return sorted(p for p in root.glob("*.pkl") if not p.name.endswith(("_data.pkl", "_label.pkl")))


def _load(path: Path) -> Any:
    if not path.is_file():
        raise DataFormatError(f"{path} does not exist")
    return load_pickle(path)


def _pyskl_split(splits: dict, split: str, path: Path) -> Any:
    if split in splits:
        return split
    suffixed = [key for key in splits if str(key).endswith(f"_{split}")]
    if len(suffixed) == 1:
        return suffixed[0]
    raise DataFormatError(f"{path}: no split {split!r}; the file has {sorted(map(str, splits))}")


def _release_labels(path: Path, split: str) -> dict[str, int] | None:
    if not path.is_file():
        if split == "test":  # test labels are withheld
            return None
        raise DataFormatError(f"{path} does not exist: the {split} split needs its labels")
    entries = load_pickle(path)
    if not isinstance(entries, list):
        raise DataFormatError(f"{path}: expected a list of {{'file_name', 'length', 'label'}} dicts, "
                              f"got {_describe(entries)}")
    labels: dict[str, int] = {}
    for position, entry in enumerate(entries):
        name = _clip_name(entry, "file_name", path, position)
        label = _label(entry.get("label"), path, name)
        if labels.get(name, label) != label:  # a repeated entry that agrees is harmless
            raise DataFormatError(f"{path}: clip {name!r} is given two labels, {labels[name]} and {label} (the "
                                  f"second at entry {position}); keep the right one")
        labels[name] = label
    return labels


def _miga_labels(path: Path, split: str, count: int) -> tuple[list[str], list[int]]:
    if not path.is_file():
        if split == "test":  # labels (and so names) withheld: name clips by position
            return [f"{split}{i:05d}" for i in range(count)], [-1] * count
        raise DataFormatError(f"{path} does not exist: the {split} split needs its labels")
    content = load_pickle(path)
    if not (isinstance(content, (tuple, list)) and len(content) == 2):
        raise DataFormatError(f"{path}: expected (names, labels), got {_describe(content)}")
    names, labels = (list(part) for part in content)
    if len(names) != count or len(labels) != count:
        raise DataFormatError(f"{path}: {len(names)} names and {len(labels)} labels for {count} clips in "
                              f"{split}_data.npy, expected one of each per clip")
    names = [str(name) for name in names]
    return names, [_label(label, path, name) for name, label in zip(names, labels)]


def _clip_name(entry: Any, key: str, path: Path, position: int) -> str:
    if not isinstance(entry, dict) or key not in entry:
        raise DataFormatError(f"{path}: entry {position} is {_describe(entry)}, expected a dict with {key!r}")
    return str(entry[key])


def _keypoint(annotation: dict, path: Path, name: str) -> tuple[np.ndarray, int]:
    """(x and y float32 (M, L, V, 2), coordinate channels in the file) of a clip's annotation."""
    if "keypoint" not in annotation:
        raise DataFormatError(f"{path}: clip {name!r} has no 'keypoint'")
    try:
        keypoint = np.asarray(annotation["keypoint"])
    except ValueError:  # nested lists of unequal lengths
        raise DataFormatError(f"{path}: clip {name!r} has a keypoint of ragged nested lists, expected an array of "
                              "shape (persons, frames, joints, 2 or 3)") from None
    _check_coordinates(keypoint.dtype, f"{path}: clip {name!r}")
    if keypoint.ndim != 4 or keypoint.shape[-1] < 2:
        raise DataFormatError(f"{path}: clip {name!r} has keypoint of shape {keypoint.shape} ({keypoint.dtype}), "
                              "expected numbers of shape (persons, frames, joints, 2 or 3)")
    return np.ascontiguousarray(keypoint[..., :2], dtype=np.float32), keypoint.shape[-1]


def _check_coordinates(dtype: np.dtype, where: str) -> None:
    """Coordinates are real numbers: integers or floats (bools, complex numbers, text and objects are refused)."""
    if dtype.hasobject:
        raise DataFormatError(f"{where} holds Python objects, expected keypoint coordinates; save it with a numeric "
                              "dtype (e.g. float32)")
    if dtype.kind == "c":
        raise DataFormatError(f"{where} holds complex numbers ({dtype}), expected real keypoint coordinates; save "
                              "the real part (np.real) if that is what the coordinates are")
    if dtype.kind not in "iuf":
        raise DataFormatError(f"{where} holds {dtype} values, expected keypoint coordinates as integers or floats")


def _npy_dtype(path: Path) -> np.dtype:
    """The dtype a .npy file declares, read from its header without loading (or unpickling) anything."""
    if not path.is_file():
        raise DataFormatError(f"{path} does not exist")
    with path.open("rb") as file:
        try:
            version = np.lib.format.read_magic(file)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            return read(file)[2]
        except (ValueError, OSError, EOFError) as error:
            raise DataFormatError(f"{path} is truncated or corrupt: {error}") from None


def _label(value: Any, path: Path, name: str) -> int:
    """A class index from a label file: None (withheld) is -1; whole numbers only, an integral float included."""
    if isinstance(value, np.ndarray) and value.ndim == 0:  # a label saved as a 0-d array
        value = value[()]
    if value is None:
        return -1
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (float, np.floating)) and np.isfinite(value) and float(value).is_integer():
        return int(value)
    shown = repr(value) if isinstance(value, str) else str(value)
    raise DataFormatError(f"{path}: clip {name!r} has label {shown} ({type(value).__name__}), expected a whole-number "
                          "class index")


def repeated_names(clips: list[Clip], split: str) -> list[str]:
    """One line for each clip whose name an earlier clip of the split already has."""
    first: dict[str, int] = {}
    problems = []
    for position, clip in enumerate(clips):
        if clip.name in first:
            problems.append(f"{clip.source}: clip {clip.name!r} appears twice in the {split} split (clips "
                            f"{first[clip.name]} and {position}); clip names must be unique, so rename or remove one")
        else:
            first[clip.name] = position
    return problems


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return f"a dict with keys {sorted(map(str, value))[:8]}"
    return f"a {type(value).__name__}"
