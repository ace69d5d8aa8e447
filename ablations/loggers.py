"""Experiment trackers a run logs to besides its own files, as Ray Tune callbacks.

TensorBoard needs nothing here: Tune's default loggers write an event file into every trial folder
(`tensorboard --logdir runs/NAME`). Weights & Biases and MLflow are optional (`--log wandb`, `--log mlflow`; the
extras `mmn-ablate[wandb]` and `mmn-ablate[mlflow]`): each trial becomes a run, in a W&B project or an MLflow
experiment named after the experiment, grouped or tagged by its Tune invocation (grid-..., tune-...).
"""
from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from typing import Any

TRACKERS = {"wandb": "wandb", "mlflow": "mlflow"}  # --log name → the module it needs


class MissingTracker(ValueError):
    """A tracker was asked for whose package is not installed."""


def check_trackers(names: Sequence[str]) -> None:
    """Refuse, before anything runs, a tracker that is unknown or whose package is missing, with the fix."""
    for name in names:
        if name not in TRACKERS:
            raise MissingTracker(f"--log {name} is not a tracker; choose from {', '.join(TRACKERS)}")
        if importlib.util.find_spec(TRACKERS[name]) is None:
            raise MissingTracker(f"--log {name} needs the {TRACKERS[name]} package: pip install "
                                 f"'mmn-ablate[{name}]'")


def tracker_callbacks(names: Sequence[str], experiment: str, invocation: str) -> list[Any]:
    """A Tune callback for each named tracker: its runs go to the W&B project or MLflow experiment `experiment`,
    grouped (W&B) or tagged (MLflow) with `invocation`, the Tune invocation's name."""
    check_trackers(names)
    callbacks: list[Any] = []
    if "wandb" in names:
        from ray.air.integrations.wandb import WandbLoggerCallback

        callbacks.append(WandbLoggerCallback(project=experiment, group=invocation, **_wandb_settings()))
    if "mlflow" in names:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        # The tracking URI is MLflow's own choice: MLFLOW_TRACKING_URI, else its local default.
        callbacks.append(MLflowLoggerCallback(experiment_name=experiment, tags={"invocation": invocation}))
    return callbacks


def _wandb_settings() -> dict[str, str]:
    """The driver's WANDB_MODE (offline, say) and WANDB_DIR as wandb.init arguments: W&B logs from a Ray actor,
    whose environment is the cluster's (started earlier, or elsewhere with --address), not the driver's."""
    settings = {"mode": os.environ.get("WANDB_MODE"), "dir": os.environ.get("WANDB_DIR")}
    return {key: value for key, value in settings.items() if value}
