"""The synthetic MA-52-layout set: release format, determinism, pose-estimator artefacts, caching, the CLI, and
the property it exists for: a clip's motion tells its class, its mean posture hardly does."""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import pickle
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mmn.data.__main__ import main
from mmn.data.synthetic import (
    DEFAULT_DIFFICULTY, MANIFEST, MAX_FRAMES, MIN_FRAMES, cache_name, ensure_synthetic, generate, motions, sets,
    ma52_sized_counts, split_counts,
)
from mmn.data.synthetic.sets import MA52_SPLIT_CLIPS, MA52_TRAIN_CLASS_RANGE
from mmn.layouts import MA52_CLASS_NAMES
from tests.helpers.fixtures import RAW_VAL

ROOT = Path(__file__).resolve().parents[1]
NUM_CLASSES = len(MA52_CLASS_NAMES)


def _folders(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir() if p.is_dir())


def _load(folder: Path, split: str) -> tuple[dict, list[dict]]:
    with open(folder / f"{split}_data.pkl", "rb") as f:
        data = pickle.load(f)
    with open(folder / f"{split}_label.pkl", "rb") as f:
        labels = pickle.load(f)
    return data, labels


@pytest.fixture(scope="module")
def default_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Train and val splits with the default knobs, a little smaller than the default set to keep tests fast."""
    return generate(tmp_path_factory.mktemp("synthetic"), seed=0, clips_per_class=30, splits=("train", "val"))


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate(tmp_path_factory.mktemp("small"), seed=3, clips_per_class=1)


# ----------------------------------------------------------------------------------------------------------------
# Format

def test_files_follow_the_release_format(small_set: Path) -> None:
    for split in ("train", "val", "test"):
        data, labels = _load(small_set, split)
        annotations = data["annotations"]
        names = [a["frame_dir"] for a in annotations]
        assert data["split"] == {split: names}
        assert len(set(names)) == len(names)
        assert [(r["file_name"], r["length"], r["label"]) for r in labels] == [
            (a["frame_dir"], a["total_frames"], a["label"]) for a in annotations]
        for a in annotations:
            length = a["total_frames"]
            assert type(length) is int and type(a["label"]) is int and 0 <= a["label"] < NUM_CLASSES
            assert MIN_FRAMES <= length <= MAX_FRAMES
            assert a["keypoint"].dtype == np.float32 and a["keypoint"].shape == (1, length, 44, 2)
            assert a["keypoint_score"].dtype == np.float32 and a["keypoint_score"].shape == (1, length, 44)
            assert np.isfinite(a["keypoint"]).all()
        assert set(Counter(r["label"] for r in labels)) == set(range(NUM_CLASSES))  # test keeps its labels too
    assert (small_set / MANIFEST).is_file()


def test_annotations_have_the_fixture_fields(small_set: Path) -> None:
    with open(RAW_VAL / "val_data.pkl", "rb") as f:
        fixture = pickle.load(f)
    data, _ = _load(small_set, "val")
    assert set(data) == set(fixture)
    ours, theirs = data["annotations"][0], fixture["annotations"][0]
    assert set(ours) == set(theirs)
    for key in ours:
        assert type(ours[key]) is type(theirs[key])
        if isinstance(ours[key], np.ndarray):
            assert ours[key].dtype == theirs[key].dtype and ours[key].ndim == theirs[key].ndim


def test_lengths_and_image_coordinates_are_plausible(default_set: Path) -> None:
    data, _ = _load(default_set, "train")
    lengths = np.array([a["total_frames"] for a in data["annotations"]])
    assert lengths.min() >= MIN_FRAMES and lengths.max() <= MAX_FRAMES
    assert 50 < np.median(lengths) < 90  # log-uniform over 30..150
    points = np.concatenate([a["keypoint"][0].reshape(-1, 2) for a in data["annotations"]])
    points = points[(points != 0).any(axis=1)]
    assert points.min() > -100 and points[:, 0].max() < 1400 and points[:, 1].max() < 900
    # A seated person spans a few hundred pixels: head top (17) well above the hip centre (19).
    first = np.stack([a["keypoint"][0, 0] for a in data["annotations"]])
    visible = (first[:, [17, 19]] != 0).all(axis=(1, 2))
    height = first[visible, 19, 1] - first[visible, 17, 1]
    assert 120 < np.median(height) < 350


def test_bones_keep_their_length(default_set: Path) -> None:
    """2D bones can look shorter (pointing at the camera) but never longer than the body allows: measured against
    the longest neck-to-hip length of the clip, limbs stay within human proportions whatever the motion."""
    limits = {(5, 7): 0.9, (7, 9): 0.8, (6, 8): 0.9, (8, 10): 0.8, (11, 13): 1.1, (13, 15): 1.3, (12, 14): 1.1,
              (14, 16): 1.3, (9, 32): 0.4, (10, 38): 0.4, (18, 17): 1.0}
    data, _ = _load(default_set, "train")
    for a in data["annotations"]:
        x = a["keypoint"][0]
        seen = (x != 0).any(axis=-1)
        both = seen[:, 18] & seen[:, 19]
        trunk = np.linalg.norm(x[both, 18] - x[both, 19], axis=-1).max()
        for (p, q), limit in limits.items():
            both = seen[:, p] & seen[:, q]
            assert np.linalg.norm(x[both, p] - x[both, q], axis=-1).max(initial=0) < limit * trunk, (a["label"], p, q)


def test_some_joints_are_missing_as_zeros(default_set: Path) -> None:
    data, _ = _load(default_set, "train")
    missing = [(a["keypoint"][0] == 0).all(axis=-1) for a in data["annotations"]]
    clips_with_gaps = np.mean([m.any() for m in missing])
    # A share of clips near Difficulty.missing_prob has gaps (2,080 train clips: a few tenths of a percent of spread).
    assert 0.5 * DEFAULT_DIFFICULTY.missing_prob < clips_with_gaps < 2 * DEFAULT_DIFFICULTY.missing_prob
    assert np.mean(np.concatenate([m.ravel() for m in missing])) < 0.02  # a few frames, not whole clips
    for a, m in zip(data["annotations"], missing, strict=True):
        assert (a["keypoint_score"][0][m] == 0).all() and (a["keypoint_score"][0][~m] > 0).all()


def test_every_class_has_one_motion_program() -> None:
    assert sorted(motions.PROGRAMS) == sorted(MA52_CLASS_NAMES)
    with pytest.raises(RuntimeError, match="missing 'nodding'; extra 'juggling'"):
        motions.check_programs({**{name: motions.PROGRAMS[name] for name in MA52_CLASS_NAMES if name != "nodding"},
                                "juggling": motions.nodding}, MA52_CLASS_NAMES)
    with pytest.raises(ValueError, match="two motion programs for 'nodding'"):
        motions.motion("nodding")(motions.shaking_head)
    assert motions.PROGRAMS["nodding"] is motions.nodding


def test_long_tail_train_split(tmp_path: Path) -> None:
    counts = split_counts("train", 40, long_tail=True, seed=0)
    assert len(counts) == NUM_CLASSES and min(counts) >= 2 and max(counts) / min(counts) >= 10
    assert sorted(counts) != counts  # class order is shuffled, not by label
    assert split_counts("val", 40, long_tail=True, seed=0) == [10] * NUM_CLASSES
    generate(tmp_path, seed=0, clips_per_class=2, long_tail=True, splits=("train",))
    _, labels = _load(tmp_path, "train")
    assert sorted(Counter(r["label"] for r in labels).items()) == list(enumerate(
        split_counts("train", 2, long_tail=True, seed=0)))


# ----------------------------------------------------------------------------------------------------------------
# Determinism and caching

# SHA-256 of every file `generate` writes, computed with the generator as it stood in one module (git 07daa84,
# mmn/data/synthetic.py): restructuring the generator must not move one random draw or change one byte.
PINNED = {
    (0, 2, False): {
        "synthetic.json": "a01f0a78af0337d08063aaaefc6ed9e502037368ac37979f0542b01ac6a961a5",
        "test_data.pkl": "160145fb1cc72880308a3448c5e0a8b5649412fcb47cc1f41bd7e623e356766f",
        "test_label.pkl": "ccf8e8cd984ca00987062d7670bebd551daad265b0381f4c8cc93c755e7bc446",
        "train_data.pkl": "f2aeb4b3f9dc669f9b051c4e2d89430e24162fedbc86c2e2028e3d67b9aa31d8",
        "train_label.pkl": "4370bb2c089a2f3976e6812fe4c7b179d3a8eab45568f100778beaafb1c1a92d",
        "val_data.pkl": "a18c3d044e90735734e2a3b66df3ce055094bea99cecbf6fae4fbb987f4d2b9b",
        "val_label.pkl": "2cfaced9a486a3c9675a11e775a8d4eb9bfd515e172c7009661c9de6c2e272a6",
    },
    (3, 4, True): {
        "synthetic.json": "02871470f231a0b715970b25fe4ce1a396fa92c9580bb7e146e910b33c0de2b4",
        "test_data.pkl": "2202ea1392b1c8a65acb592b1b8724a1f06fb909f6d49293fb346a94938b2b81",
        "test_label.pkl": "4f917beb397635b819371b3d8d60d6f4b2025187bc8ee24d06795bc67641128d",
        "train_data.pkl": "f0d14009b9b585e20b12bf473b6740848449ab467705cd87f0e688b6ef925043",
        "train_label.pkl": "823721c14c874e7ad6efc862bc744ece421633d689d6a05688fd4b6f44a8ce30",
        "val_data.pkl": "3a243187da8388691b8fad156d136bc5d0640b7f260df5ddc2dc28e403231215",
        "val_label.pkl": "b70e9a12faff7f4e952a45b1ed904f5c9cf6a6acbbbc63f42c1970d0332f216b",
    },
}


@pytest.mark.parametrize(("seed", "clips_per_class", "long_tail"), sorted(PINNED))
def test_generated_bytes_are_pinned(tmp_path: Path, seed: int, clips_per_class: int, long_tail: bool) -> None:
    previous = os.umask(0o022)
    try:
        out = generate(tmp_path, seed=seed, clips_per_class=clips_per_class, long_tail=long_tail)
    finally:
        os.umask(previous)
    files = sorted(out.iterdir())
    assert {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files} == PINNED[seed, clips_per_class,
                                                                                         long_tail]
    assert {f.name: f.stat().st_mode & 0o777 for f in files} == {f.name: 0o644 for f in files}  # readable by all


def test_same_seed_same_bytes(tmp_path: Path) -> None:
    first = generate(tmp_path / "a", seed=7, clips_per_class=2, splits=("val",))
    second = generate(tmp_path / "b", seed=7, clips_per_class=2, splits=("val",))
    other = generate(tmp_path / "c", seed=8, clips_per_class=2, splits=("val",))
    for name in ("val_data.pkl", "val_label.pkl", MANIFEST):
        assert (first / name).read_bytes() == (second / name).read_bytes()
    assert (first / "val_data.pkl").read_bytes() != (other / "val_data.pkl").read_bytes()


def test_ensure_synthetic_generates_once_under_mmn_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMN_CACHE", str(tmp_path))
    path = ensure_synthetic(seed=1, clips_per_class=1)
    assert path.parent == tmp_path and path.name == cache_name(1, 1, False, DEFAULT_DIFFICULTY)
    stamp = (path / "train_data.pkl").stat().st_mtime_ns
    assert ensure_synthetic(tmp_path, seed=1, clips_per_class=1) == path
    assert (path / "train_data.pkl").stat().st_mtime_ns == stamp
    assert _folders(tmp_path) == [path.name]  # no temporary folders left behind
    assert cache_name(1, 1, True, DEFAULT_DIFFICULTY) != path.name  # other parameters, other folder


def _fake_generate(out: str | os.PathLike, **_: object) -> Path:
    """Stands in for `generate` where only the caching matters: slow enough for callers to overlap, and it logs
    each call next to the cache."""
    out = Path(out)
    with open(out.parent / "generations.log", "a") as log:
        log.write(f"{os.getpid()}\n")
    time.sleep(0.3)
    (out / MANIFEST).write_text("{}")
    return out


def test_ensure_synthetic_loses_a_race_gracefully(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another worker finishes the same set while this one is generating (no lock between them, as on a file
    system without locks): this one keeps the winner's set."""
    real_rename = os.rename

    def rename_after_rival(src: str | os.PathLike, dst: str | os.PathLike) -> None:
        Path(dst).mkdir()  # the rival's complete set appears first
        (Path(dst) / MANIFEST).write_text("rival")
        real_rename(src, dst)  # fails: the folder exists and is not empty

    monkeypatch.setattr(sets, "generate", _fake_generate)  # the name ensure_synthetic calls
    monkeypatch.setattr(os, "rename", rename_after_rival)
    path = ensure_synthetic(tmp_path, seed=4, clips_per_class=1)
    assert (path / MANIFEST).read_text() == "rival"
    assert _folders(tmp_path) == [path.name]


def _ensure_in_child(cache: str, queue: multiprocessing.Queue) -> None:
    queue.put(str(ensure_synthetic(cache, seed=6, clips_per_class=1)))


def test_ensure_synthetic_from_concurrent_processes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers starting together generate the set once and all get the same folder."""
    monkeypatch.setattr(sets, "generate", _fake_generate)  # the name ensure_synthetic calls
    context = multiprocessing.get_context("fork")  # children inherit the stand-in
    queue = context.Queue()
    workers = [context.Process(target=_ensure_in_child, args=(str(tmp_path), queue)) for _ in range(3)]
    for worker in workers:
        worker.start()
    paths = {queue.get(timeout=60) for _ in workers}
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert len(paths) == 1 and _folders(tmp_path) == [Path(paths.pop()).name]
    assert len((tmp_path / "generations.log").read_text().split()) == 1


# ----------------------------------------------------------------------------------------------------------------
# Motion matters

def _normalised(keypoint: np.ndarray) -> np.ndarray:
    """(L, 44, 2) centred on the hip centre of frame 0 and scaled by the median neck-hip length; missing joints
    take the value of the nearest earlier (else later) frame where they were seen."""
    x = keypoint[0].astype(np.float64)
    seen = (x != 0).any(axis=-1)
    frames = np.arange(len(x))[:, None]
    last = np.maximum.accumulate(np.where(seen, frames, -1), axis=0)
    first_seen = np.argmax(seen, axis=0)
    source = np.where(last >= 0, last, first_seen[None])
    x = x[source, np.arange(x.shape[1])[None]]
    scale = np.median(np.linalg.norm(x[:, 18] - x[:, 19], axis=-1))
    return (x - x[0, 19]) / scale


def _posture_features(keypoint: np.ndarray) -> np.ndarray:
    return _normalised(keypoint).mean(axis=0).ravel()


def _motion_features(keypoint: np.ndarray) -> np.ndarray:
    """Zero for a still clip: how much and how fast each joint moves, per axis."""
    x = _normalised(keypoint)
    return np.concatenate([np.diff(x, axis=0).std(axis=0).ravel(), x.std(axis=0).ravel()])


def _ridge_accuracy(train: np.ndarray, train_y: np.ndarray, test: np.ndarray, test_y: np.ndarray) -> float:
    """One-vs-rest ridge regression on standardised features, a linear classifier in closed form."""
    mean, std = train.mean(axis=0), train.std(axis=0) + 1e-8
    a, b = (train - mean) / std, (test - mean) / std
    targets = np.eye(NUM_CLASSES)[train_y]
    weights = np.linalg.solve(a.T @ a + 10.0 * np.eye(a.shape[1]), a.T @ (targets - targets.mean(axis=0)))
    return float(np.mean((b @ weights).argmax(axis=1) == test_y))


def test_motion_tells_the_class_and_mean_posture_hardly(default_set: Path) -> None:
    train, _ = _load(default_set, "train")
    val, _ = _load(default_set, "val")
    train_y = np.array([a["label"] for a in train["annotations"]])
    val_y = np.array([a["label"] for a in val["annotations"]])
    accuracy = {}
    for name, features in (("posture", _posture_features), ("motion", _motion_features)):
        x_train = np.stack([features(a["keypoint"]) for a in train["annotations"]])
        x_val = np.stack([features(a["keypoint"]) for a in val["annotations"]])
        accuracy[name] = _ridge_accuracy(x_train, train_y, x_val, val_y)
    print(f"val top-1 of a linear classifier (chance {1 / NUM_CLASSES:.3f}): {accuracy}")
    assert accuracy["posture"] < 0.15
    assert accuracy["motion"] > 0.4
    assert accuracy["motion"] > 3 * accuracy["posture"]
    assert accuracy["motion"] < 0.9  # classes stay confusable: not solved by a linear model


# ----------------------------------------------------------------------------------------------------------------
# Command line

@pytest.mark.slow
def test_cli_writes_a_set(tmp_path: Path) -> None:
    out = tmp_path / "set"
    result = subprocess.run([sys.executable, "-m", "mmn.data", "synth", "--out", str(out), "--seed", "5",
                             "--clips-per-class", "1"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for split in ("train", "val", "test"):
        assert (out / f"{split}_data.pkl").is_file() and (out / f"{split}_label.pkl").is_file()
        assert split in result.stdout
    assert (out / MANIFEST).is_file()


# Usage errors run in-process: `python -m mmn.data` is `sys.exit(main())`, and a second interpreter start (which
# imports torch through mmn.data) would double this file's run time.
@pytest.mark.parametrize("argv", [
    [], ["synth"], ["unknown"], ["synth", "--out", "x", "--clips-per-class", "0"],
    ["synth", "--out", "x", "--clips-per-class", "many"], ["synth", "--out", "x", "--seed", "one"],
])
def test_cli_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_cli_refuses_a_file_as_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "file"
    target.write_text("not a folder")
    with pytest.raises(SystemExit) as exit_info:
        main(["synth", "--out", str(target)])
    assert exit_info.value.code == 2


def test_ma52_sized_counts_have_ma52s_size_and_long_tail(tmp_path):
    counts = ma52_sized_counts(seed=0)
    assert {split: sum(per_class) for split, per_class in counts.items()} == MA52_SPLIT_CLIPS
    assert (min(counts["train"]), max(counts["train"])) == MA52_TRAIN_CLASS_RANGE
    assert all(len(per_class) == NUM_CLASSES and min(per_class) >= 1 for per_class in counts.values())
    # val and test follow the train proportions: the same class is the largest everywhere
    assert len({int(np.argmax(per_class)) for per_class in counts.values()}) == 1
    small = {"train": [2] * NUM_CLASSES, "val": [1] * NUM_CLASSES}
    out = generate(tmp_path, seed=0, splits=("train", "val"), counts=small)
    assert json.loads((out / MANIFEST).read_text())["clips"] == {"train": 2 * NUM_CLASSES, "val": NUM_CLASSES}
