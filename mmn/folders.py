"""The on-disk format: every file of a trial folder and of an experiment folder, and each record's format version.

This module is the one place these names live. The trainer writes a trial folder, the runner writes an experiment
folder around Ray Tune's trial folders, analysis reads both, and the tests build fakes of both: all of them import
the names from here, so renaming a file or bumping a version is a change in one place.

A reader refuses a record whose version is newer than the one below (it would misread it) and reads older ones.
"""
from __future__ import annotations

import posixpath
from collections.abc import Iterable

from .metrics import METRIC_NAMES

# A trial folder: one training run (`mmn.train.fit`), standalone or as a Ray Tune trial.
# Our record: status, config and its hash, final and best metrics, cost, versions, hardware. Its own name, because a
# Ray trial folder is also Ray Tune's, whose readers (ExperimentAnalysis) need Ray's result.json there: JSON lines of
# the reported metrics.
RESULT = "trial_result.json"
LEGACY_RESULT = "result.json"  # our record's name before: it replaced Ray's; folders written then are still read
HISTORY = "history.jsonl"  # one JSON line per finished epoch
BEST_PREDICTIONS = "best_val_predictions.npz"  # logits, labels and clip names of the val split at the best epoch
BEST_WEIGHTS = "best_weights.pt"  # the model's weights at the best val epoch, with its config (mmn.model.load)
CHECKPOINT = "checkpoint.pt"  # model, optimizer, scheduler and RNG states after the last finished epoch
TRIAL_STATE = "state"  # subfolder of a Ray trial's folder where its checkpoint.pt lives
VALIDATION_PREFIX = "val_"  # an epoch's record names the metrics of mmn.metrics.evaluate val_top1, val_top5, ...
RECORDED_METRICS = (*(VALIDATION_PREFIX + name for name in METRIC_NAMES), "train_loss")  # a spec's `metric` is one
RESULT_FORMAT = 1
CHECKPOINT_FORMAT = 1
WEIGHTS_FORMAT = 1

# A trial's best weights evaluated on a split afterwards (`python -m ablations.evaluate`), beside its record.
SPLIT_RESULT_FORMAT = 1


def record_paths(paths: Iterable[str]) -> list[str]:
    """Of the "/"-separated file `paths` under an experiment folder, those that may hold a trial's record, sorted:
    every RESULT, and a LEGACY_RESULT in a folder without one (an old folder's record; but it may be Ray's own, or
    torn: the reader tells them apart by content). Beside a RESULT, result.json is always Ray's."""
    split = [posixpath.split(path) for path in paths]
    current = {folder for folder, name in split if name == RESULT}
    return sorted(posixpath.join(folder, name) for folder, name in split
                  if name == RESULT or (name == LEGACY_RESULT and folder not in current))


def predictions_file(split: str) -> str:
    """Logits, labels and clip names of `split`: the val split's are those of the best epoch, kept while training."""
    return BEST_PREDICTIONS if split == "val" else f"{split}_predictions.npz"


def split_result_file(split: str) -> str:
    """The record of the best weights evaluated on `split`: its metrics, named f"{split}_top1" and so on."""
    return f"{split}_result.json"


# An experiment folder: one spec as run (`python -m ablations.run`), holding a folder per Ray Tune invocation.
EXPERIMENT = "experiment.json"  # what was run: factors, variants, reference, seeds, metric, options
SPEC_AS_RUN = "spec.yaml"
STUDY = "study.journal"  # the Optuna studies (optuna-dashboard reads it)
DRIVER_LOCK = "driver.lock"  # host, PID and start of the one driver running the experiment (ablations.lock)
REPORT = "report"  # folder of tables and plots that analysis writes
EXPERIMENT_FORMAT = 1


class NewerFormat(ValueError):
    """A record written by a newer mmn-ablate than this one, which would misread it."""


def check_version(record: object, newest: int, where: str, fix: str = "upgrade mmn-ablate",
                  error: type[Exception] = NewerFormat) -> None:
    """Refuse `record` (a parsed JSON object or checkpoint dict) if its format_version is newer than `newest`;
    `error` is the exception the caller's users expect."""
    version = record.get("format_version", 0) if isinstance(record, dict) else 0
    if isinstance(version, int) and version > newest:
        raise error(f"{where} was written by a newer mmn-ablate (format {version}, this one reads {newest}); {fix}")
