"""Stream ensembles: models trained on different input streams (values of the data.modality factor) fused clip by
clip, seed by seed, into one more row of the table.

A spec declares them (`ensembles: {2s: {joint: 1, bone: 1}}`, recorded in experiment.json's spec). For each
ensemble, each combination of the other factors and each seed, the streams' predictions on the split are fused and
scored with mmn.metrics.evaluate. Over seeds an ensemble's row is a variant like any other: mean ± std, paired test
against the reference. A seed lacking one of the streams is left out of that row, with a note.

Fusion, by default, is the weighted sum of the streams' softmax probabilities. Streams' logits differ in scale (a
stream trained to be more confident has larger logits), so a sum of raw logits lets the most confident stream
dominate whatever the weights say; probabilities put every stream on one scale, so a weight means what it says.
The weighted sum of raw logits ("logits") is what the release does for its two streams (mmn.metrics.fuse_logits).

Fused streams must describe the same clips in the same order: their clip names must match one to one. Files
written before names were recorded (older best_val_predictions.npz) are matched by row once their labels agree.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from mmn.metrics import evaluate

from .cli import FUSIONS
from .collect import ExperimentInfo, Predictions, load_predictions
from .columns import metric_column, value_text, variant_key, variant_label
from .stats import counted_trials

STREAM_FACTOR = "data.modality"


class EnsembleError(ValueError):
    """Predictions that cannot be fused or averaged: they do not describe the same clips."""


def same_clips(first: Predictions, other: Predictions) -> bool:
    """Check that two prediction files cover the same clips in the same order, by clip name; where a file predates
    names, by label. Returns whether names were compared. EnsembleError names the first clip that differs."""
    by_name = first.names is not None and other.names is not None
    a, b = (first.names, other.names) if by_name else (first.labels, other.labels)
    if len(a) == len(b) and np.array_equal(a, b):
        return by_name
    row = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
    shown = [repr(values[row].item()) if row < len(values) else "(no clip)" for values in (a, b)]
    what = "clip names" if by_name else "labels (clip names were not recorded)"
    raise EnsembleError(f"{first.where} and {other.where} do not describe the same clips: their {what} first differ "
                        f"at row {row}: {shown[0]} vs {shown[1]}; evaluate both trials on the same data")


def fuse(logits: Sequence[np.ndarray], weights: Sequence[float], fusion: str = "probabilities") -> np.ndarray:
    """The weighted sum of each stream's softmax probabilities ("probabilities") or raw logits ("logits")."""
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, got {fusion!r}")
    total = np.zeros(np.shape(logits[0]), dtype=np.float64)
    for scores, weight in zip(logits, weights):
        scores = np.asarray(scores, dtype=np.float64)
        if fusion == "probabilities":
            scores = np.exp(scores - scores.max(axis=1, keepdims=True))  # shifted: exp never overflows
            scores /= scores.sum(axis=1, keepdims=True)
        total += float(weight) * scores
    return total


@dataclass(frozen=True)
class Fused:
    """One ensemble's fused scores at one seed and one combination of the other factors."""

    name: str
    settings: dict[str, Any]  # the row's factor values: the other factors', and data.modality = the ensemble's name
    seed: int
    scores: np.ndarray
    predictions: Predictions  # the first stream's: labels and clip names
    params: float  # of all its streams' models together
    gflops: float


def fuse_streams(table: pd.DataFrame, info: ExperimentInfo, split: str = "val",
                 fusion: str = "probabilities") -> tuple[list[Fused], list[str]]:
    """Every ensemble of `info` at every combination of the other factors and seed that has all its streams'
    predictions on `split`; and notes on what was left out or matched without clip names."""
    trials = counted_trials(table)
    trials = trials[(trials["experiment"] == info.name) & (trials["row"] == "summary")
                    & trials["has_predictions"].fillna(False).astype(bool)]
    streams: dict[str, dict[int, dict[str, pd.Series]]] = {}  # other factors' key → seed → stream → trial
    for _, trial in trials.iterrows():
        settings = json.loads(trial["variant"])
        if STREAM_FACTOR in settings:
            others = variant_key({k: v for k, v in settings.items() if k != STREAM_FACTOR})
            streams.setdefault(others, {}).setdefault(int(trial["seed"]), {})[settings[STREAM_FACTOR]] = trial
    # In the experiment's variant order, as the table lists the variants.
    planned = list(dict.fromkeys(variant_key({k: v for k, v in variant.items() if k != STREAM_FACTOR})
                                 for variant in info.variants()))
    order = sorted(streams, key=lambda others: planned.index(others) if others in planned else len(planned))
    fused, notes, unnamed = [], [], set()
    for name, weights in info.ensembles.items():
        for others in order:
            seeds = streams[others]
            label = variant_label(json.loads(others), info.factor_labels)
            for seed, found in sorted(seeds.items()):
                missing = [stream for stream in weights if stream not in found]
                if missing:
                    notes.append(f"ensemble {name} ({label}): seed {seed} left out, no finished {', '.join(missing)} "
                                 f"trial with {split} predictions")
                    continue
                loaded = [load_predictions(info.location, found[stream]["trial_dir"], split) for stream in weights]
                for other in loaded[1:]:
                    if not same_clips(loaded[0], other):
                        unnamed.update({loaded[0].where, other.where})
                members = [found[stream] for stream in weights]
                fused.append(Fused(
                    name, {**json.loads(others), STREAM_FACTOR: name}, seed,
                    fuse([p.logits for p in loaded], list(weights.values()), fusion), loaded[0],
                    sum(float(m["params"]) for m in members), sum(float(m["gflops"]) for m in members)))
    if unnamed:
        notes.append(f"clip names were not recorded in {len(unnamed)} prediction files (older runs): their streams "
                     f"were matched by row, and their labels agree")
    return fused, notes


def ensemble_rows(fused: Sequence[Fused], info: ExperimentInfo, split: str = "val") -> pd.DataFrame:
    """One finished-trial-like row per fused result (row "ensemble"), with its metrics on `split`, for the table."""
    rows = []
    for item in fused:
        metrics = evaluate(item.scores, item.predictions.labels, info.dataset)
        rows.append({"experiment": info.name, "variant": variant_key(item.settings), **item.settings,
                     "seed": item.seed, "status": "finished", "row": "ensemble", "params": item.params,
                     "gflops": item.gflops,
                     **{metric_column(metric, "best", split): value for metric, value in metrics.items()}})
    return pd.DataFrame.from_records(rows)


def ensembles_note(info: ExperimentInfo, fusion: str = "probabilities") -> str:
    """What the ensemble rows are, for a table caption, e.g. "Ensembles fuse ...: 2s = 1 joint + 1 bone"."""
    what = "softmax probabilities" if fusion == "probabilities" else "logits"
    parts = [f"{name} = " + " + ".join(f"{weight:g} {value_text(stream)}" for stream, weight in weights.items())
             for name, weights in info.ensembles.items()]
    return f"Ensembles: weighted sum of the streams' {what}, per seed: {'; '.join(parts)}"
