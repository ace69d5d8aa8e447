"""`python -m mmn.data check DIR`: read a data folder the way training will, and say what is in it and what is wrong.

Per split: clip counts (next to MA-52's where the classes are MA-52's), classes and their clip counts, frame lengths,
joints and coordinate channels, and the time reading and preprocessing took. Errors are what training would refuse
(`mmn.data.formats.clip_problem`: wrong joints, non-finite coordinates, labels out of range, ...; a missing train or
val split); warnings are what it accepts but a researcher wants to know (all-zero clips, clips in two splits, counts
other than MA-52's, classes without clips). Every line names the clip. Only numpy is needed: no torch.
"""
from __future__ import annotations

import textwrap
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmn.data import preprocess as pp
from mmn.data.formats import SPLITS, DataFormatError, clip_problem, read_clips, repeated_names
from mmn.data.safe_pickle import CorruptPickleError, UnsafePickleError
from mmn.data.synthetic.sets import MA52_SPLIT_CLIPS
from mmn.layouts import MA52_CLASS_NAMES, SkeletonLayout

REQUIRED_SPLITS = ("train", "val")  # what training reads; test is read only by evaluation on the test split


@dataclass
class SplitReport:
    """What one split holds, and its problems; `errors` are what training refuses."""

    split: str
    format: str | None = None
    path: str | None = None
    clips: int = 0
    expected_clips: int | None = None  # MA-52's count, where the classes are MA-52's
    classes: dict[int, int] = field(default_factory=dict)  # label → clips; -1: withheld labels
    frames: tuple[int, int, int] | None = None  # min, median, max
    joints: list[int] = field(default_factory=list)  # the joint counts found
    channels: list[int] = field(default_factory=list)  # the coordinate channels found (2: x, y; 3: with score)
    read_s: float = 0.0
    preprocess_s: float = 0.0
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class FolderReport:
    root: str
    layout: str  # its name
    layout_file: str
    num_joints: int
    num_classes: int
    splits: list[SplitReport]
    warnings: list[str] = field(default_factory=list)  # across splits

    @property
    def accepted(self) -> bool:
        """Whether training would accept the folder."""
        return not any(split.errors for split in self.splits)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "accepted": self.accepted}


def check_folder(root: str | Path, layout: SkeletonLayout, format: str = "auto") -> FolderReport:
    """Read every split of `root` as training does, under `layout`, and report it (see the module docstring)."""
    expected = MA52_SPLIT_CLIPS if layout.class_names == MA52_CLASS_NAMES else {}
    report = FolderReport(str(root), layout.name, layout.source, layout.num_joints, layout.num_classes, [])
    names: dict[str, list[str]] = {}  # clip name → the splits holding it
    for split in SPLITS:
        part, clip_names = _check_split(root, split, layout, format)
        part.expected_clips = expected.get(split)
        report.splits.append(part)
        for name in dict.fromkeys(clip_names):  # a name repeated within the split is that split's error
            names.setdefault(name, []).append(split)
    for name, splits in names.items():
        if len(splits) > 1:
            report.warnings.append(f"clip {name!r} is in the {' and '.join(splits)} splits: a clip seen in training "
                                   "and scored in evaluation inflates the scores; keep it in one split")
    return report


def _check_split(root: str | Path, split: str, layout: SkeletonLayout, format: str) -> tuple[SplitReport, list[str]]:
    report = SplitReport(split)
    started = time.perf_counter()
    try:
        report.format, path, clips = read_clips(root, split, format)
    except (DataFormatError, CorruptPickleError, UnsafePickleError) as error:
        (report.errors if split in REQUIRED_SPLITS else report.warnings).append(
            str(error) if split in REQUIRED_SPLITS else f"{error} (only evaluation on the test split needs it)")
        return report, []
    report.path, report.clips = str(path), len(clips)
    if not clips:
        report.errors.append(f"{path}: the {split} split has no clips")
        return report, []
    report.errors += repeated_names(clips, split)
    good = []
    for clip in clips:
        problem = clip_problem(clip, layout, split)
        if problem:
            report.errors.append(problem)
            continue
        good.append(clip)
        if not clip.keypoint.any():
            report.warnings.append(f"{clip.source}: clip {clip.name!r} is all zeros: no pose was found in it; "
                                   "leave it out or estimate its poses again")
    report.read_s = time.perf_counter() - started
    labels, counts = np.unique([clip.label for clip in clips], return_counts=True)
    report.classes = dict(zip(labels.tolist(), counts.tolist()))
    lengths = [clip.keypoint.shape[1] for clip in clips]
    report.frames = (min(lengths), int(np.median(lengths)), max(lengths))
    report.joints = sorted({clip.keypoint.shape[2] for clip in clips})
    report.channels = sorted({clip.channels for clip in clips})
    if good:
        started = time.perf_counter()
        packed = pp.prepare([clip.keypoint[0] for clip in good], layout, "joint", "released")
        report.preprocess_s = time.perf_counter() - started
        if not np.isfinite(packed.frames).all():  # finite input scales to finite output: this would be a bug here
            report.errors.append(f"{path}: preprocessing the {split} split gave non-finite values")
    missing = [label for label in range(layout.num_classes) if label not in report.classes]
    if missing and -1 not in report.classes:
        shown = ", ".join(map(str, missing[:10])) + (" ..." if len(missing) > 10 else "")
        report.warnings.append(f"{path}: {len(missing)} of {layout.num_classes} classes have no {split} clip "
                               f"(labels {shown})")
    return report, [clip.name for clip in clips]


def format_report(report: FolderReport, limit: int = 20) -> str:
    """The report as text; at most `limit` errors and warnings per split (all of them are in `to_dict`)."""
    lines = [f"{report.root}: layout {report.layout} ({report.num_joints} joints, {report.num_classes} classes, "
             f"{report.layout_file})"]
    for part in report.splits:
        expected = f" (MA-52: {part.expected_clips:,})" if part.expected_clips is not None else ""
        lines.append(f"{part.split}: {part.clips:,} clips{expected}" + (f", {part.format} format, {part.path}"
                                                                       if part.format else ""))
        if part.frames:
            labelled = {label: count for label, count in part.classes.items() if label >= 0}
            withheld = f", {part.classes[-1]:,} withheld" if -1 in part.classes else ""
            spread = (f", {min(labelled.values())}-{max(labelled.values())} clips per class" if labelled else "")
            lines.append(f"  classes: {len(labelled)} present{spread}{withheld}")
            counts = " ".join(f"{label}:{count}" for label, count in sorted(labelled.items()))
            lines += textwrap.wrap(counts, 116, initial_indent="    ", subsequent_indent="    ")
            lines.append(f"  frames: min {part.frames[0]}, median {part.frames[1]}, max {part.frames[2]}")
            channels = "/".join(map(str, part.channels))
            lines.append(f"  joints: {'/'.join(map(str, part.joints))}; coordinate channels in the files: {channels} "
                         "(x, y kept)")
            lines.append(f"  read in {part.read_s:.2f} s, preprocessed in {part.preprocess_s:.2f} s")
        lines += _listed("error", part.errors, limit) + _listed("warning", part.warnings, limit)
    lines += _listed("warning", report.warnings, limit)
    lines.append("training would accept this folder" if report.accepted else
                 "training would refuse this folder: fix the errors above")
    return "\n".join(lines)


def _listed(kind: str, messages: list[str], limit: int) -> list[str]:
    lines = [f"  {kind}: {message}" for message in messages[:limit]]
    if len(messages) > limit:
        lines.append(f"  ... and {len(messages) - limit} more {kind}s (--json lists them all)")
    return lines
