"""Whole synthetic sets: clips per class and split, the files of a set in the release's pickle format, and the
cache of generated sets that training and experiments share.

A set is `<split>_data.pkl` and `<split>_label.pkl` per split, then a manifest written last, whose presence marks
a complete set. Unlike MA-52, the synthetic test split keeps its labels. Same arguments, same bytes: each clip
draws from a generator seeded by (seed, split, label, index), and the pickle protocol is fixed.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import shutil
import tempfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from mmn.atomic import write_bytes
from mmn.data.formats import SPLITS
from mmn.layouts import MA52_CLASS_NAMES

from .difficulty import DEFAULT_DIFFICULTY, Difficulty
from .render import render_clip

try:
    import fcntl
except ImportError:  # Windows has no fcntl; the atomic rename alone then keeps the cache whole
    fcntl = None

GENERATOR_VERSION = 3  # bump when the generated data changes, so caches regenerate
DEFAULT_CLIPS_PER_CLASS = 40  # train clips per class; val and test get a quarter each
MANIFEST = "synthetic.json"  # written last: its presence marks a complete set
# MA-52's size: clips per split, and the smallest and largest train class (its long tail).
MA52_SPLIT_CLIPS = {"train": 11_250, "val": 5_586, "test": 5_586}
MA52_TRAIN_CLASS_RANGE = (6, 1_283)


def split_counts(split: str, clips_per_class: int, long_tail: bool, seed: int) -> list[int]:
    """Clips per class of a split: val and test get a quarter of `clips_per_class`; a long-tailed train split
    falls exponentially from 3x to 1/8 of it over a seed-dependent class order, like MA-52's frequencies."""
    num = len(MA52_CLASS_NAMES)
    if split != "train":
        return [max(2, clips_per_class // 4)] * num
    if not long_tail:
        return [clips_per_class] * num
    head, tail = 3.0 * clips_per_class, max(2.0, clips_per_class / 8)
    rank = np.random.default_rng([seed, 0x7A11]).permutation(num)
    return [int(round(head * (tail / head) ** (r / (num - 1)))) for r in rank]


def _exact_total(weights: np.ndarray, total: int, least: int) -> list[int]:
    """Integers proportional to `weights`, each at least `least`, summing to `total` (largest remainders)."""
    raw = np.maximum(weights * total / weights.sum(), least)
    counts = np.floor(raw).astype(int)
    for index in np.argsort(counts - raw)[:total - counts.sum()]:  # the largest remainders round up
        counts[index] += 1
    return counts.tolist()


def ma52_sized_counts(seed: int = 0) -> dict[str, list[int]]:
    """Clips per class of every split for a set of MA-52's size and shape: 11,250 train clips falling from 1,283 to
    6 per class over a seed-dependent class order, like MA-52's, and 5,586 val and test clips in the same proportions.
    """
    num = len(MA52_CLASS_NAMES)
    low, high = MA52_TRAIN_CLASS_RANGE
    rank = np.random.default_rng([seed, 0x7A11]).permutation(num) / (num - 1)
    # high·(low/high)^(rank^p) runs from high to low; the power p that gives MA-52's total is found by bisection.
    lo_p, hi_p = 0.05, 5.0
    for _ in range(60):
        power = (lo_p + hi_p) / 2
        if (high * (low / high) ** rank ** power).sum() > MA52_SPLIT_CLIPS["train"]:
            hi_p = power
        else:
            lo_p = power
    train = high * (low / high) ** rank ** power
    return {split: _exact_total(train, total, 1) for split, total in MA52_SPLIT_CLIPS.items()}


def _split_clips(split: str, seed: int, counts: Sequence[int], difficulty: Difficulty,
                 ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Annotations and label records of one split, in a seeded shuffled order."""
    key = zlib.crc32(split.encode())
    jobs = [(label, j) for label, count in enumerate(counts) for j in range(count)]
    order = np.random.default_rng([seed, key]).permutation(len(jobs))
    annotations, labels = [], []
    for position, job in enumerate(order):
        label, j = jobs[job]
        xy, score = render_clip(np.random.default_rng([seed, key, label, j]), label, difficulty)
        name = f"{split}{position:05d}"
        annotations.append({"frame_dir": name, "keypoint": xy[None], "keypoint_score": score[None],
                            "total_frames": len(xy), "label": label})
        labels.append({"file_name": name, "length": len(xy), "label": label})
    return annotations, labels


def generate(out_dir: str | os.PathLike[str], seed: int = 0, clips_per_class: int = DEFAULT_CLIPS_PER_CLASS,
             long_tail: bool = False, splits: Sequence[str] = SPLITS,
             difficulty: Difficulty = DEFAULT_DIFFICULTY, counts: Mapping[str, Sequence[int]] | None = None) -> Path:
    """Write `<split>_data.pkl` and `<split>_label.pkl` for each split into `out_dir`, then the manifest.

    Same arguments, same bytes. `clips_per_class` is the train count per class (see `split_counts`); `counts`, when
    given, sets the clips per class of each split instead (e.g. `ma52_sized_counts()`).
    """
    if clips_per_class < 1:
        raise ValueError(f"clips_per_class must be at least 1, got {clips_per_class}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)  # fail on an unusable folder before generating, not after
    summary: dict[str, int] = {}
    for split in splits:
        per_class = counts[split] if counts else split_counts(split, clips_per_class, long_tail, seed)
        annotations, labels = _split_clips(split, seed, per_class, difficulty)
        names = [a["frame_dir"] for a in annotations]
        # Protocol 4 is fixed so that the bytes do not depend on the Python version's default.
        write_bytes(out / f"{split}_data.pkl",
                    pickle.dumps({"split": {split: names}, "annotations": annotations}, protocol=4))
        write_bytes(out / f"{split}_label.pkl", pickle.dumps(labels, protocol=4))
        summary[split] = len(annotations)
    manifest = {"generator_version": GENERATOR_VERSION, "seed": seed, "clips_per_class": clips_per_class,
                "long_tail": long_tail, "difficulty": asdict(difficulty), "clips": summary,
                "class_names": list(MA52_CLASS_NAMES), "test_labels": "kept (synthetic)"}
    write_bytes(out / MANIFEST, json.dumps(manifest, indent=1).encode())
    return out


def cache_name(seed: int, clips_per_class: int, long_tail: bool, difficulty: Difficulty) -> str:
    """Folder name of a cached set; it changes whenever the generator or its knobs do."""
    digest = hashlib.sha256(json.dumps({"version": GENERATOR_VERSION, "difficulty": asdict(difficulty)},
                                       sort_keys=True).encode()).hexdigest()[:10]
    return f"synthetic-s{seed}-n{clips_per_class}{'-lt' if long_tail else ''}-{digest}"


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """An advisory lock on `path`, so that concurrent callers wait for one generation instead of all doing it."""
    if fcntl is None:
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_synthetic(cache_dir: str | os.PathLike[str] | None = None, seed: int = 0,
                     clips_per_class: int = DEFAULT_CLIPS_PER_CLASS, long_tail: bool = False,
                     difficulty: Difficulty = DEFAULT_DIFFICULTY) -> Path:
    """The folder of a synthetic set, generated on first use under `cache_dir` (default `$MMN_CACHE`, else
    ~/.cache/mmn) and reused afterwards.

    Safe with concurrent callers (e.g. several Ray workers): they take turns on a lock file, and the set is
    generated into a temporary folder renamed into place only when complete, so a crash never leaves half a set
    (and where locks do not work, a caller that loses the race discards its copy and uses the winner's).
    """
    root = Path(cache_dir or os.environ.get("MMN_CACHE") or Path.home() / ".cache" / "mmn")
    final = root / cache_name(seed, clips_per_class, long_tail, difficulty)
    if (final / MANIFEST).is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    with _exclusive(root / f".{final.name}.lock"):
        if (final / MANIFEST).is_file():  # made by another caller while this one waited
            return final
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=f".{final.name}.tmp-"))
        try:
            generate(tmp, seed=seed, clips_per_class=clips_per_class, long_tail=long_tail, difficulty=difficulty)
            tmp.chmod(0o755)  # mkdtemp's private mode would hide a shared cache from other users
            try:
                os.rename(tmp, final)  # atomic; fails if another caller already put its set there
            except OSError:
                if not (final / MANIFEST).is_file():
                    raise RuntimeError(f"{final} exists but is not a complete synthetic set (no {MANIFEST}); "
                                       f"delete it and retry") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return final
