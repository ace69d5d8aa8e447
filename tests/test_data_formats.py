"""Readers of the downloadable formats, format detection, validation errors and safe unpickling."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from mmn.data import (
    CorruptPickleError,
    DataFormatError,
    UnsafePickleError,
    detect_format,
    load_pickle,
    read_miga,
    read_pyskl,
    read_release,
    read_split,
)
from mmn.layouts import get_layout
from tests.helpers.fixtures import RAW_VAL
from tests.helpers.malicious import RunsCode

MA52 = get_layout("ma52")
IMIGUE = get_layout("imigue")


def _dump(path: Path, value: object) -> None:
    path.write_bytes(pickle.dumps(value))


def write_release(root: Path, split: str, keypoints: list[np.ndarray], labels: list[int] | None,
                  data_labels: list[int] | None = None) -> None:
    """Release-format files; `labels` go to the label file (None: no label file), `data_labels` to the data file."""
    root.mkdir(parents=True, exist_ok=True)
    names = [f"{split}{i:04d}" for i in range(len(keypoints))]
    annotations = [{"frame_dir": name, "keypoint": kp, "keypoint_score": np.ones(kp.shape[:3], np.float32),
                    "total_frames": kp.shape[1], "label": (data_labels or [0] * len(names))[i]}
                   for i, (name, kp) in enumerate(zip(names, keypoints))]
    _dump(root / f"{split}_data.pkl", {"split": {split: names}, "annotations": annotations})
    if labels is not None:
        _dump(root / f"{split}_label.pkl", [{"file_name": name, "length": kp.shape[1], "label": label}
                                            for name, kp, label in zip(names, keypoints, labels)])


def clip(frames: int, joints: int = 44, channels: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(1, frames, joints, channels)).astype(np.float32)


# --- release pickles ---------------------------------------------------------------------------------------------

def test_release_reader_reads_the_fixture() -> None:
    clips = read_release(RAW_VAL, "val")
    assert [c.name for c in clips] == ["clip000", "clip001", "clip002", "clip003"]
    assert [c.label for c in clips] == [0, 1, 2, 3]
    assert [c.keypoint.shape for c in clips] == [(1, n, 44, 2) for n in (40, 64, 97, 250)]
    assert all(c.keypoint.dtype == np.float32 for c in clips)


def test_release_labels_come_from_the_label_file(tmp_path: Path) -> None:
    write_release(tmp_path, "train", [clip(5), clip(6)], labels=[7, 8], data_labels=[1, 2])
    assert [c.label for c in read_release(tmp_path, "train")] == [7, 8]


def test_release_test_labels_may_be_withheld(tmp_path: Path) -> None:
    write_release(tmp_path / "none", "test", [clip(5), clip(6)], labels=None)
    assert [c.label for c in read_split(tmp_path / "none", "test", MA52)] == [-1, -1]
    write_release(tmp_path / "some", "test", [clip(5), clip(6)], labels=[-1, 3])
    entries = load_pickle(tmp_path / "some" / "test_label.pkl")
    del entries[1]["label"]  # a label missing from its entry counts as withheld
    _dump(tmp_path / "some" / "test_label.pkl", entries)
    assert [c.label for c in read_split(tmp_path / "some", "test", MA52)] == [-1, -1]


def test_release_train_needs_its_label_file(tmp_path: Path) -> None:
    write_release(tmp_path, "train", [clip(5)], labels=None)
    with pytest.raises(DataFormatError, match=r"train_label\.pkl does not exist"):
        read_release(tmp_path, "train")


def test_release_clip_missing_from_label_file(tmp_path: Path) -> None:
    write_release(tmp_path, "val", [clip(5), clip(6)], labels=[1, 2])
    _dump(tmp_path / "val_label.pkl", load_pickle(tmp_path / "val_label.pkl")[:1])
    with pytest.raises(DataFormatError, match=r"val_label\.pkl: no label for clip 'val0001'"):
        read_release(tmp_path, "val")


# --- PYSKL and MiGA ----------------------------------------------------------------------------------------------

def test_pyskl_reader_selects_the_split_and_keeps_xy(tmp_path: Path) -> None:
    annotations = [{"frame_dir": f"c{i}", "label": i, "keypoint": clip(4 + i, channels=3, seed=i),
                    "total_frames": 4 + i} for i in range(3)]
    path = tmp_path / "ma52_pyskl.pkl"
    _dump(path, {"split": {"xsub_train": ["c0", "c2"], "xsub_val": ["c1"]}, "annotations": annotations})
    clips = read_pyskl(path, "xsub_train")
    assert [(c.name, c.label) for c in clips] == [("c0", 0), ("c2", 2)]
    np.testing.assert_array_equal(clips[1].keypoint, annotations[2]["keypoint"][..., :2])
    assert [c.name for c in read_pyskl(path, "val")] == ["c1"]  # the one split named *_val
    with pytest.raises(DataFormatError, match=r"no split 'test'; the file has \['xsub_train', 'xsub_val'\]"):
        read_pyskl(path, "test")


def write_miga(root: Path, split: str, data: np.ndarray, names: list[str], labels: list[int]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    np.save(root / f"{split}_data.npy", data)
    _dump(root / f"{split}_label.pkl", (names, labels))


def test_miga_reader_drops_padding_and_confidence(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = np.zeros((2, 3, 10, 22, 1), dtype=np.float32)
    data[0, :, :7] = rng.normal(size=(3, 7, 22, 1))
    data[0, :, 3] = 0  # an all-zero frame inside the clip is not padding
    data[1, :, :10] = rng.normal(size=(3, 10, 22, 1))
    write_miga(tmp_path, "train", data, ["a", "b"], [4, 31])
    clips = read_miga(tmp_path, "train")
    assert [(c.name, c.label, c.keypoint.shape) for c in clips] == [("a", 4, (1, 7, 22, 2)), ("b", 31, (1, 10, 22, 2))]
    np.testing.assert_array_equal(clips[0].keypoint[0], data[0, :2, :7, :, 0].transpose(1, 2, 0))


def test_miga_label_count_must_match(tmp_path: Path) -> None:
    write_miga(tmp_path, "train", np.ones((2, 3, 4, 22, 1), np.float32), ["a"], [1])
    with pytest.raises(DataFormatError, match=r"train_label\.pkl: 1 names and 1 labels for 2 clips"):
        read_miga(tmp_path, "train")


# --- detection ---------------------------------------------------------------------------------------------------

def test_detect_format(tmp_path: Path) -> None:
    write_release(tmp_path / "release", "val", [clip(5)], labels=[0])
    write_miga(tmp_path / "miga", "val", np.ones((1, 3, 4, 22, 1), np.float32), ["a"], [0])
    (tmp_path / "pyskl").mkdir()
    _dump(tmp_path / "pyskl" / "x.pkl", {"split": {}, "annotations": []})
    assert detect_format(tmp_path / "release", "val") == ("release", tmp_path / "release")
    assert detect_format(tmp_path / "miga", "val") == ("miga", tmp_path / "miga")
    assert detect_format(tmp_path / "pyskl", "val") == ("pyskl", tmp_path / "pyskl" / "x.pkl")
    assert detect_format(tmp_path / "pyskl" / "x.pkl", "val") == ("pyskl", tmp_path / "pyskl" / "x.pkl")


def test_detect_format_names_the_expected_files(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"expected train_data\.pkl and train_label\.pkl \(MMN release\), "
                                              r"train_data\.npy and train_label\.pkl \(MiGA\), or one PYSKL"):
        detect_format(tmp_path, "train")


def test_missing_data_folder(tmp_path: Path) -> None:
    with pytest.raises(DataFormatError, match=r"data folder .*nowhere does not exist; pass --data-root"):
        read_split(tmp_path / "nowhere", "train", MA52)


def test_explicit_format_checks_its_file(tmp_path: Path) -> None:
    write_release(tmp_path, "val", [clip(5)], labels=[0])
    assert len(read_split(tmp_path, "val", MA52, format="release")) == 1
    with pytest.raises(DataFormatError, match=r"val_data\.npy does not exist \(miga format, val split\)"):
        read_split(tmp_path, "val", MA52, format="miga")
    with pytest.raises(DataFormatError, match=r"unknown data format 'csv'"):
        read_split(tmp_path, "val", MA52, format="csv")


# --- validation --------------------------------------------------------------------------------------------------

def test_wrong_joint_count_names_file_and_clip(tmp_path: Path) -> None:
    write_release(tmp_path, "val", [clip(5), clip(5, joints=22)], labels=[0, 1])
    with pytest.raises(DataFormatError, match=r"val_data\.pkl: clip 'val0001' has 22 joints, expected 44 for the "
                                              r"ma52 layout"):
        read_split(tmp_path, "val", MA52)


def test_wrong_keypoint_shape(tmp_path: Path) -> None:
    write_release(tmp_path, "val", [clip(5)[0]], labels=[0])  # (L, V, 2): persons axis missing
    with pytest.raises(DataFormatError, match=r"clip 'val0000' has keypoint of shape \(5, 44, 2\).*expected numbers "
                                              r"of shape \(persons, frames, joints, 2 or 3\)"):
        read_split(tmp_path, "val", MA52)


def test_empty_split(tmp_path: Path) -> None:
    write_release(tmp_path, "val", [], labels=[])
    with pytest.raises(DataFormatError, match=r"the val split has no clips"):
        read_split(tmp_path, "val", MA52)


@pytest.mark.parametrize(("label", "message"), [
    (52, r"clip 'train0000' has label 52, expected an integer in \[0, 52\)$"),
    (-1, r"has label -1, expected an integer in \[0, 52\) \(-1, a withheld label, is allowed only on the test"),
])
def test_label_out_of_range(tmp_path: Path, label: int, message: str) -> None:
    write_release(tmp_path, "train", [clip(5)], labels=[label])
    with pytest.raises(DataFormatError, match=message):
        read_split(tmp_path, "train", MA52)


def test_clip_with_zero_frames(tmp_path: Path) -> None:
    write_release(tmp_path, "val", [clip(5), clip(0)], labels=[0, 1])
    with pytest.raises(DataFormatError, match=r"val_data\.pkl: clip 'val0001' has no frames"):
        read_split(tmp_path, "val", MA52)
    write_miga(tmp_path / "miga", "val", np.zeros((1, 3, 4, 22, 1), np.float32), ["empty"], [0])
    with pytest.raises(DataFormatError, match=r"val_data\.npy: clip 'empty' has no frames"):
        read_split(tmp_path / "miga", "val", IMIGUE)


def test_non_finite_coordinates(tmp_path: Path) -> None:
    bad = clip(5)
    bad[0, 2, 3, 1] = np.nan
    write_release(tmp_path, "val", [bad], labels=[0])
    with pytest.raises(DataFormatError, match=r"clip 'val0000' has non-finite coordinates"):
        read_split(tmp_path, "val", MA52)


def test_wrong_top_level_structure(tmp_path: Path) -> None:
    _dump(tmp_path / "val_data.pkl", [1, 2, 3])
    with pytest.raises(DataFormatError, match=r"val_data\.pkl: expected a dict with an 'annotations' list"):
        read_release(tmp_path, "val")


# --- safe unpickling ---------------------------------------------------------------------------------------------

def test_unsafe_pickle_is_refused_without_running_it(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "val_data.pkl"
    _dump(path, {"annotations": [RunsCode(marker)]})
    with pytest.raises(UnsafePickleError, match=r"val_data\.pkl: refusing to load global (posix|os)\.system"):
        load_pickle(path)
    with pytest.raises(UnsafePickleError):
        read_release(tmp_path, "val")
    assert not marker.exists()


def test_truncated_pickle_is_reported_as_such(tmp_path: Path) -> None:
    path = tmp_path / "val_label.pkl"
    path.write_bytes(pickle.dumps([{"file_name": "a", "label": 1}] * 10)[:-20])
    with pytest.raises(CorruptPickleError, match=r"val_label\.pkl is truncated or corrupt: "):
        load_pickle(path)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_values_load_under_every_protocol(tmp_path: Path, protocol: int) -> None:
    value = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.int64(3), "c": {1, 2}, "d": (b"x", 1.5j)}
    path = tmp_path / "v.pkl"
    path.write_bytes(pickle.dumps(value, protocol=protocol))
    loaded = load_pickle(path)
    np.testing.assert_array_equal(loaded["a"], value["a"])
    assert loaded["b"] == 3 and loaded["c"] == {1, 2} and loaded["d"] == (b"x", 1.5j)


def test_numpy_1_module_names_load(tmp_path: Path) -> None:
    # pickles written by numpy 1.x name numpy.core.multiarray; protocol 2 spells globals out as plain text
    raw = pickle.dumps(np.arange(3, dtype=np.float32), protocol=2).replace(b"numpy._core.", b"numpy.core.")
    assert b"numpy.core.multiarray" in raw
    path = tmp_path / "old.pkl"
    path.write_bytes(raw)
    np.testing.assert_array_equal(load_pickle(path), np.arange(3, dtype=np.float32))
