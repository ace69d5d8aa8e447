"""Server files: on a split whose labels are withheld (MA-52's test set, scored only by its evaluation server), each
variant's and each ensemble's predictions in the server's format (mmn.predictions.write_submission).

A variant's file ranks the mean over its seeds of their logits; an ensemble's, the mean over seeds of its fused
scores (analysis.ensembles). Seeds are averaged clip by clip only once their clip names match one to one.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from mmn.predictions import write_submission

from .collect import ExperimentInfo, load_predictions
from .columns import value_text, variant_key, variant_label
from .ensembles import Fused, same_clips
from .stats import counted_trials


def labels_withheld(table: pd.DataFrame, info: ExperimentInfo) -> bool:
    """Whether every evaluated trial of `info` in `table` (collected for a split other than val) found the split's
    labels withheld (its metrics null)."""
    trials = counted_trials(table)
    evaluated = trials[(trials["experiment"] == info.name) & (trials["row"] == "summary")
                       & trials["evaluated"].fillna(False).astype(bool)]
    return bool(len(evaluated)) and bool(evaluated["labels_withheld"].fillna(False).all())


def slug(settings: dict) -> str:
    """A file-name part naming a variant, e.g. "msm-released_mtm-on" or "modality-2s"."""
    text = "_".join(f"{key.split('.')[-1]}-{value_text(value)}" for key, value in settings.items()) or "default"
    return re.sub(r"[^\w.-]+", "-", text)


def write_submissions(table: pd.DataFrame, info: ExperimentInfo, split: str, out: Path,
                      fused: Sequence[Fused] = (), prefix: str = "") -> list[tuple[Path, str]]:
    """Write <prefix>submission_<variant>.zip into `out` for every variant with predictions on `split`, and for
    every ensemble in `fused`; return (file, what it holds) pairs. EnsembleError if seeds' clips differ."""
    trials = counted_trials(table)
    trials = trials[(trials["experiment"] == info.name) & (trials["row"] == "summary")
                    & trials["has_predictions"].fillna(False).astype(bool)]
    groups: dict[str, tuple[dict, list]] = {}  # variant key → (settings, [(seed, scores, predictions)])
    for key, variant in trials.groupby("variant", sort=False):
        loaded = [load_predictions(info.location, trial_dir, split) for trial_dir in variant["trial_dir"]]
        groups[key] = (json.loads(key), [(seed, p.logits, p) for seed, p in zip(variant["seed"], loaded)])
    for item in fused:
        groups.setdefault(variant_key(item.settings), (item.settings, []))[1].append(
            (item.seed, item.scores, item.predictions))
    written = []
    for settings, seeds in groups.values():
        for _, _, other in seeds[1:]:
            same_clips(seeds[0][2], other)
        mean = np.mean([scores for _, scores, _ in seeds], axis=0)
        path = write_submission(mean, out / f"{prefix}submission_{slug(settings)}.zip", seeds[0][2].names)
        seed_list = ", ".join(str(seed) for seed, _, _ in sorted(seeds, key=lambda entry: entry[0]))
        written.append((path, f"{info.name}: {split} predictions of {variant_label(settings, info.factor_labels)} "
                              f"for the evaluation server, mean over seeds {seed_list}"))
    return written
