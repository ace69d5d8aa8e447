"""Validation of what the data files hold, in every format we read (release, PYSKL, MiGA): labels are whole numbers,
clip names and labels are unambiguous, a clip has one person (or zero padding for the others), keypoints are real
numbers, and the restricted unpickler bounds what a pickle may allocate. Each case is a real file on disk."""
from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ablations import run as ablations_run
from mmn import train as mmn_train
from mmn.data import (
    DataFormatError,
    UnsafePickleError,
    load_pickle,
    read_split,
    safe_pickle,
)
from mmn.layouts import get_layout

ROOT = Path(__file__).resolve().parents[1]
MA52, IMIGUE = get_layout("ma52"), get_layout("imigue")


def _dump(path: Path, value: object) -> None:
    path.write_bytes(pickle.dumps(value))


def _keypoint(frames: int = 5, joints: int = 44, persons: int = 1, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(persons, frames, joints, 2)).astype(np.float32)


# Writers: each puts `keypoints` (one (M, T, V, 2) array per clip), `names` and `labels` in one format's files and
# returns the folder or file to read, the layout, and the file that holds the labels.

def write_release(root: Path, keypoints: list, names: list[str], labels: list) -> tuple[Path, object, Path]:
    root.mkdir(parents=True, exist_ok=True)
    _dump(root / "train_data.pkl", {"annotations": [{"frame_dir": n, "keypoint": k} for n, k in zip(names, keypoints)]})
    _dump(root / "train_label.pkl", [{"file_name": n, "length": 5, "label": label} for n, label in zip(names, labels)])
    return root, MA52, root / "train_label.pkl"


def write_pyskl(root: Path, keypoints: list, names: list[str], labels: list) -> tuple[Path, object, Path]:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "ma52.pkl"
    _dump(path, {"split": {"train": list(names)}, "annotations": [
        {"frame_dir": n, "label": label, "keypoint": k} for n, k, label in zip(names, keypoints, labels)]})
    return path, MA52, path


def write_miga(root: Path, keypoints: list, names: list[str], labels: list) -> tuple[Path, object, Path]:
    """keypoints (M, T, 22, 2) each, stacked to MiGA's (N, 3, T, 22, M) with a confidence channel; persons missing
    from a clip are zero, as in a real file."""
    root.mkdir(parents=True, exist_ok=True)
    persons = max(len(k) for k in keypoints)
    stacked = np.stack([np.pad(np.concatenate([k, np.ones_like(k[..., :1])], axis=-1),
                               [(0, persons - len(k)), (0, 0), (0, 0), (0, 0)]) for k in keypoints])  # N M T V 3
    np.save(root / "train_data.npy", stacked.transpose(0, 4, 2, 3, 1))
    _dump(root / "train_label.pkl", (list(names), labels))
    return root, IMIGUE, root / "train_label.pkl"


WRITERS: dict[str, Callable] = {"release": write_release, "pyskl": write_pyskl, "miga": write_miga}


def _write(fmt: str, root: Path, labels: list, keypoints: list | None = None,
           names: list[str] | None = None) -> tuple[Path, object, Path]:
    joints = 22 if fmt == "miga" else 44
    keypoints = keypoints if keypoints is not None else [_keypoint(joints=joints, seed=i) for i in range(len(labels))]
    names = names or [f"clip{i}" for i in range(len(labels))]
    return WRITERS[fmt](root, keypoints, names, labels)


def _read(fmt: str, root: Path, labels: list, **kwargs) -> list:
    path, layout, _ = _write(fmt, root, labels, **kwargs)
    return read_split(path, "train", layout)


# --- labels ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", WRITERS)
@pytest.mark.parametrize("label, shown", [(3.7, "3.7 (float)"), (True, "True (bool)"), ("seven", "'seven' (str)"),
                                          (np.float64(np.nan), "nan (float64)"), (np.bool_(True), "True (bool)"),
                                          ("3", "'3' (str)")])
def test_a_label_that_is_not_a_whole_number_names_file_and_clip(tmp_path: Path, fmt: str, label, shown: str) -> None:
    path, layout, label_file = _write(fmt, tmp_path, [1, label])
    with pytest.raises(DataFormatError) as error:
        read_split(path, "train", layout)
    assert str(error.value) == (f"{label_file}: clip 'clip1' has label {shown}, expected a whole-number class index")


@pytest.mark.parametrize("fmt", WRITERS)
def test_integral_floats_and_numpy_integers_are_labels(tmp_path: Path, fmt: str) -> None:
    """A float label array (numpy files often hold one) gives 3.0 for class 3: exactly integral values are read."""
    clips = _read(fmt, tmp_path, [np.float64(3.0), 4.0, np.int64(5), np.array(6), np.uint8(7)])
    assert [(c.label, type(c.label)) for c in clips] == [(n, int) for n in (3, 4, 5, 6, 7)]


def test_miga_float_label_array_is_read(tmp_path: Path) -> None:
    clips = _read("miga", tmp_path, np.array([2.0, 31.0]))
    assert [c.label for c in clips] == [2, 31]
    _write("miga", tmp_path, np.array([2.0, 30.5]))
    with pytest.raises(DataFormatError, match=r"clip 'clip1' has label 30\.5 \(float64\)"):
        read_split(tmp_path, "train", IMIGUE)


def test_a_text_label_stops_the_command_lines_with_one_line(capsys, tmp_path: Path) -> None:
    """Before: "invalid literal for int()" and a traceback in mmn.train, naming neither file nor clip."""
    root, _, label_file = _write("release", tmp_path / "data", [0, "seven"])
    message = f"error: {label_file}: clip 'clip1' has label 'seven' (str), expected a whole-number class index"
    status = mmn_train.main(["--quiet", f"data.root={root}", "--out", str(tmp_path / "out")])
    err = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("training ")]
    assert (status, err) == (2, [message])
    assert ablations_run.main(["msm_mtm", "--data-root", str(root), "--storage", str(tmp_path / "runs")]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [message] and "Traceback" not in captured.err


# --- duplicates --------------------------------------------------------------------------------------------------

def test_a_clip_given_two_labels_is_an_error(tmp_path: Path) -> None:
    root, _, label_file = _write("release", tmp_path, [1, 2])
    _dump(label_file, [*load_pickle(label_file), {"file_name": "clip0", "length": 5, "label": 7}])
    with pytest.raises(DataFormatError) as error:
        read_split(root, "train", MA52)
    assert str(error.value) == (f"{label_file}: clip 'clip0' is given two labels, 1 and 7 (the second at entry 2); "
                                "keep the right one")


def test_a_label_entry_repeated_with_the_same_label_is_harmless(tmp_path: Path) -> None:
    root, _, label_file = _write("release", tmp_path, [1, 2])
    _dump(label_file, [*load_pickle(label_file), {"file_name": "clip0", "length": 5, "label": 1}])
    assert [c.label for c in read_split(root, "train", MA52)] == [1, 2]


@pytest.mark.parametrize("fmt", WRITERS)
def test_a_clip_name_twice_in_a_split_is_an_error(tmp_path: Path, fmt: str) -> None:
    path, layout, _ = _write(fmt, tmp_path, [1, 2, 1], names=["a", "b", "a"])
    data_file = {"release": tmp_path / "train_data.pkl", "pyskl": path, "miga": tmp_path / "train_data.npy"}[fmt]
    with pytest.raises(DataFormatError) as error:
        read_split(path, "train", layout)
    assert str(error.value) == (f"{data_file}: clip 'a' appears twice in the train split (clips 0 and 2); clip names "
                                "must be unique, so rename or remove one")


# --- persons -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", WRITERS)
def test_a_second_person_is_an_error_that_says_how_to_keep_going(tmp_path: Path, fmt: str) -> None:
    """Before: the second person (M = 2) was dropped silently."""
    joints = 22 if fmt == "miga" else 44
    keypoints = [_keypoint(joints=joints), _keypoint(joints=joints, persons=2, seed=1)]
    path, layout, _ = _write(fmt, tmp_path, [1, 2], keypoints=keypoints)
    with pytest.raises(DataFormatError) as error:
        read_split(path, "train", layout)
    assert "clip 'clip1' has 2 persons, and training uses one per clip" in str(error.value)
    assert "keep the person to use in the file (keypoint[:1], or zero the others), or leave the clip out" in str(
        error.value)


@pytest.mark.parametrize("fmt", WRITERS)
def test_an_all_zero_second_person_is_padding(tmp_path: Path, fmt: str) -> None:
    joints = 22 if fmt == "miga" else 44
    padded = np.concatenate([_keypoint(joints=joints, seed=1), np.zeros((1, 5, joints, 2), np.float32)])
    clips = _read(fmt, tmp_path, [1, 2], keypoints=[_keypoint(joints=joints), padded])
    assert clips[1].keypoint.shape[0] == 2
    np.testing.assert_array_equal(clips[1].keypoint[0], padded[0])


def test_the_dataset_trains_on_the_first_person_of_a_padded_clip(tmp_path: Path) -> None:
    from mmn.data import SkeletonDataset

    padded = np.concatenate([_keypoint(frames=8, seed=1), np.zeros((1, 8, 44, 2), np.float32)])
    _write("release", tmp_path, [1, 2], keypoints=[_keypoint(frames=8), padded])
    single = tmp_path / "single"
    _write("release", single, [1, 2], keypoints=[_keypoint(frames=8), padded[:1]])
    x_padded = SkeletonDataset(tmp_path, split="train", num_frames=4, augment="none").get_batch([0, 1])[0]
    x_single = SkeletonDataset(single, split="train", num_frames=4, augment="none").get_batch([0, 1])[0]
    assert np.array_equal(x_padded.numpy(), x_single.numpy())


# --- keypoint values ---------------------------------------------------------------------------------------------

OBJECTS = "holds Python objects, expected keypoint coordinates; save it with a numeric dtype (e.g. float32)"
NOT_NUMBERS = [
    (np.complex64, "holds complex numbers (complex64), expected real keypoint coordinates; save the real part"),
    (np.bool_, "holds bool values, expected keypoint coordinates as integers or floats"),
    (np.str_, "holds <U"),
    (object, OBJECTS),
]


@pytest.mark.parametrize("fmt", ["release", "pyskl"])
@pytest.mark.parametrize("dtype, says", NOT_NUMBERS)
def test_keypoints_in_pickles_must_be_real_numbers(tmp_path: Path, fmt: str, dtype, says: str) -> None:
    """Before: complex keypoints silently lost their imaginary part."""
    bad = (_keypoint() + (1j if dtype is np.complex64 else 0)).astype(dtype)
    path, layout, _ = _write(fmt, tmp_path, [1, 2], keypoints=[_keypoint(), bad])
    data_file = tmp_path / "train_data.pkl" if fmt == "release" else path
    with pytest.raises(DataFormatError) as error:
        read_split(path, "train", layout)
    assert str(error.value).startswith(f"{data_file}: clip 'clip1' {says}")


def test_integer_keypoints_are_coordinates(tmp_path: Path) -> None:
    clips = _read("release", tmp_path, [1], keypoints=[np.arange(5 * 44 * 2, dtype=np.int16).reshape(1, 5, 44, 2)])
    assert clips[0].keypoint.dtype == np.float32 and clips[0].keypoint[0, 4, 43, 1] == 5 * 44 * 2 - 1


def test_ragged_keypoint_lists_are_one_line(tmp_path: Path) -> None:
    ragged = [[[[0.0, 1.0]] * 44, [[0.0, 1.0]] * 43]]
    path, layout, _ = _write("release", tmp_path, [1], keypoints=[ragged])
    with pytest.raises(DataFormatError, match=r"clip 'clip0' has a keypoint of ragged nested lists"):
        read_split(path, "train", layout)


@pytest.mark.parametrize("dtype, says", [(np.complex128, "holds complex numbers (complex128), expected real"),
                                         (np.bool_, "holds bool values"), (object, OBJECTS)])
def test_keypoints_in_npy_must_be_real_numbers(tmp_path: Path, dtype, says: str) -> None:
    """Before: an .npy holding objects was refused as "truncated or corrupt"."""
    _write("miga", tmp_path, [1, 2])
    data = np.load(tmp_path / "train_data.npy", allow_pickle=False).astype(dtype)
    np.save(tmp_path / "train_data.npy", data, allow_pickle=dtype is object)  # a file as numpy writes it
    with pytest.raises(DataFormatError) as error:
        read_split(tmp_path, "train", IMIGUE)
    assert str(error.value).startswith(f"{tmp_path / 'train_data.npy'}: {says}")


def test_truncated_npy_header_is_still_reported_as_such(tmp_path: Path) -> None:
    _write("miga", tmp_path, [1, 2])
    (tmp_path / "train_data.npy").write_bytes((tmp_path / "train_data.npy").read_bytes()[:20])
    with pytest.raises(DataFormatError, match=r"train_data\.npy is truncated or corrupt"):
        read_split(tmp_path, "train", IMIGUE)


# --- the restricted unpickler bounds what it allocates ---------------------------------------------------------

HUGE = 20 * 10**9  # 20 GB: more than any test machine may hand out under the limit below
_LONG = b"\x8a\x05" + HUGE.to_bytes(5, "little")  # LONG1 opcode: the int 20_000_000_000
BOMBS = {
    # a 38-byte-class pickle that asks an allowed constructor for 20 GB
    "bytearray(20 GB)": b"\x80\x02cbuiltins\nbytearray\n" + _LONG + b"\x85R.",
    "bytes(20 GB)": b"\x80\x02cbuiltins\nbytes\n" + _LONG + b"\x85R.",
    "ndarray((20 G,))": b"\x80\x02cnumpy\nndarray\n" + _LONG + b"\x85\x85R.",
    "ndarray.__new__ (NEWOBJ)": b"\x80\x02cnumpy\nndarray\n" + _LONG + b"\x85\x85\x81.",
    "array reconstruction": (b"\x80\x02cnumpy._core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _LONG
                             + b"\x85C\x01b\x87R."),
    "object array state": None,  # built in the child: a real object-array pickle with its shape patched
    "BINBYTES8 length": b"\x80\x04\x8e" + struct.pack("<Q", HUGE) + b"xx.",
    "BYTEARRAY8 length": b"\x80\x05\x96" + struct.pack("<Q", HUGE) + b"xx.",
    "BINUNICODE8 length": b"\x80\x04\x8d" + struct.pack("<Q", HUGE) + b"xx.",
    "FRAME length": b"\x80\x04\x95" + struct.pack("<Q", HUGE) + b"xx.",
}

# Runs each bomb in a child process whose address space is capped at 512 MiB above what it uses after its imports:
# if a guard failed, the load would die of MemoryError instead of being refused, and never take GBs from the machine.
_CHILD = textwrap.dedent("""
    import json, pickle, resource, sys
    import numpy as np
    from mmn.data.safe_pickle import load_pickle
    vm = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmSize"))
    resource.setrlimit(resource.RLIMIT_AS, (vm + (512 << 20), vm + (512 << 20)))
    results = {}
    for path in sys.argv[1:]:
        try:
            load_pickle(path)
            results[path] = "loaded"
        except BaseException as error:
            results[path] = f"{type(error).__name__}: {error}"
    print(json.dumps(results))
""")


def test_a_pickle_cannot_make_the_unpickler_allocate_gigabytes(tmp_path: Path) -> None:
    """Before: a 38-byte pickle asking the allowed bytearray for 20 GB was stopped only by the memory limit."""
    paths = {}
    for name, raw in BOMBS.items():
        if raw is None:  # a real object array's pickle with its shape (2,) patched to (20 G,)
            raw = pickle.dumps(np.array([None, None], dtype=object), protocol=2).replace(b"K\x02\x85", _LONG + b"\x85")
        paths[name] = tmp_path / f"bomb{len(paths)}.pkl"
        paths[name].write_bytes(raw)
    assert len(BOMBS["bytearray(20 GB)"]) <= 38
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}  # no per-thread buffers to reserve
    done = subprocess.run([sys.executable, "-c", _CHILD, *map(str, paths.values())], capture_output=True, text=True,
                          timeout=120, cwd=ROOT, env=env, check=False)
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)
    outcome = {name: results[str(path)] for name, path in paths.items()}
    for name, got in outcome.items():
        assert "MemoryError" not in got and got != "loaded", (name, got)
    refused = "would allocate 18.6 GiB, beyond what a {size}-byte file may (its own size plus 256 MiB in all); " \
              "nothing was allocated"
    path = paths["bytearray(20 GB)"]
    assert outcome["bytearray(20 GB)"] == (f"UnsafePickleError: {path}: refusing to load: bytearray(...) "
                                           + refused.format(size=path.stat().st_size))
    assert outcome["bytes(20 GB)"].startswith("UnsafePickleError:") and "bytes(...) would allocate 18.6 GiB" in (
        outcome["bytes(20 GB)"])
    for name in ("ndarray((20 G,))", "ndarray.__new__ (NEWOBJ)"):
        assert "would allocate 149 GiB" in outcome[name] and outcome[name].startswith("UnsafePickleError:")
    assert "_reconstruct(...) would allocate 18.6 GiB" in outcome["array reconstruction"]
    assert outcome["object array state"].endswith("refusing to load: an object array of shape (20000000000,) comes "
                                                  "with 2 values")
    # a declared length beyond the file's end: the file is cut short, and nothing of that length is allocated
    for name in ("BINBYTES8 length", "BINUNICODE8 length", "FRAME length"):
        assert outcome[name] == f"CorruptPickleError: {paths[name]} is truncated or corrupt: pickle data was truncated"
    assert outcome["BYTEARRAY8 length"] == (f"CorruptPickleError: {paths['BYTEARRAY8 length']} is truncated or "
                                            "corrupt: a byte array of 20000000000 bytes is declared, but only 3 "
                                            "bytes follow")


def test_real_pickles_load_within_their_own_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With no slack at all, data pickles of every protocol still load: the budget costs real files nothing."""
    monkeypatch.setattr(safe_pickle, "ALLOCATION_SLACK", 0)
    value = {"annotations": [{"frame_dir": f"c{i}", "keypoint": _keypoint(seed=i), "label": i, "s": {1, 2},
                              "z": 1.5j, "b": bytearray(b"xy")} for i in range(20)],
             "names": np.array(["a", "b"]), "objects": np.array([None, "x"], dtype=object)}
    for protocol in (0, 2, 3, 4, 5):
        path = tmp_path / f"p{protocol}.pkl"
        path.write_bytes(pickle.dumps(value, protocol=protocol))
        loaded = load_pickle(path)
        np.testing.assert_array_equal(loaded["annotations"][19]["keypoint"], value["annotations"][19]["keypoint"])
        assert loaded["annotations"][3]["s"] == {1, 2} and list(loaded["objects"]) == [None, "x"]


def test_copies_of_one_value_count_against_the_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The memo lets a pickle name one value many times for a few bytes each: every copy made from it is counted."""
    monkeypatch.setattr(safe_pickle, "ALLOCATION_SLACK", 1 << 20)
    text = b"X" + struct.pack("<I", 100_000) + b"a" * 100_000 + b"q\x01"  # a 100 kB string, memo 1
    copy = b"h\x00h\x01X\x06\x00\x00\x00latin1\x86R"  # encode(memo 1, "latin1")
    raw = b"\x80\x02c_codecs\nencode\nq\x000" + text + b"0(" + copy * 200 + b"l."
    path = tmp_path / "copies.pkl"
    path.write_bytes(raw)  # 100 kB that would make 20 MB of copies
    with pytest.raises(UnsafePickleError, match=r"refusing to load: encode\(\.\.\.\) would allocate 97\.7 KiB, beyond"):
        load_pickle(path)


def test_text_of_a_container_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "repr.pkl"
    path.write_bytes(b"\x80\x02cbuiltins\nstr\n]\x85R.")  # str([])
    with pytest.raises(UnsafePickleError, match=r"refusing to load: str\(\) of a list"):
        load_pickle(path)
