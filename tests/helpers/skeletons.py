"""Data folders for the layout and data-check tests: the synthetic set as `python -m mmn.data synth` writes it, and
the same clips as COCO-17 skeletons in one PYSKL pickle."""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from mmn.data import SPLITS, load_pickle
from mmn.data.__main__ import main as data_main

COCO17_JOINTS = 17  # MA-52's joints 0-16 are Halpe-26's first 17, which are COCO-17's, in COCO's order


def synthetic_set(out: Path) -> Path:
    """The smallest synthetic MA-52 set (one train clip per class), written by the command line."""
    assert data_main(["synth", "--out", str(out), "--clips-per-class", "1"]) == 0
    return out


def coco17_pyskl(synthetic: Path, out: Path) -> Path:
    """The clips of a synthetic set cut to their first 17 joints, with a score channel as pose estimators give
    (x, y, score), in one PYSKL pickle with train, val and test splits; MA-52's labels."""
    annotations, split = [], {}
    for name in SPLITS:
        split[name] = []
        for clip in load_pickle(synthetic / f"{name}_data.pkl")["annotations"]:
            xy = clip["keypoint"][:, :, :COCO17_JOINTS]
            score = np.ones(xy.shape[:3] + (1,), dtype=np.float32)
            annotations.append({"frame_dir": clip["frame_dir"], "label": clip["label"],
                                "keypoint": np.concatenate([xy, score], axis=-1), "total_frames": xy.shape[1]})
            split[name].append(clip["frame_dir"])
    out.write_bytes(pickle.dumps({"split": split, "annotations": annotations}))
    return out
