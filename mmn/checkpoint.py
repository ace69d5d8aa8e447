"""Checkpoints of a training run and its best weights: written atomically, read with weights_only (nothing in
them is executed)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .atomic import atomic_write
from .folders import BEST_WEIGHTS, CHECKPOINT, CHECKPOINT_FORMAT, WEIGHTS_FORMAT, check_version


class CheckpointMismatch(ValueError):
    """A checkpoint written for another configuration (another variant, seed or data set), or not readable."""


class WeightsError(ValueError):
    """A best-weights file that is missing, truncated, foreign or of a newer format."""


def save_checkpoint(directory: str | os.PathLike, state: dict[str, Any]) -> Path:
    return atomic_write(Path(directory) / CHECKPOINT,
                        lambda f: torch.save({"format_version": CHECKPOINT_FORMAT, **state}, f))


def load_checkpoint(directory: str | os.PathLike, config: dict[str, Any], config_hash: str) -> dict[str, Any] | None:
    """The checkpoint in `directory` if there is one; an error if it belongs to another configuration."""
    path = Path(directory) / CHECKPOINT
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which, never run code from it
        raise CheckpointMismatch(f"{path} is not a readable MMN checkpoint ({type(error).__name__}: "
                                 f"{str(error).splitlines()[0][:200]}); delete it to start over") from None
    if not isinstance(state, dict):
        raise CheckpointMismatch(f"{path} is not an MMN checkpoint (it holds a {type(state).__name__}); delete it "
                                 "to start over")
    check_version(state, CHECKPOINT_FORMAT, str(path), error=CheckpointMismatch)
    if state.get("config_hash") != config_hash:
        raise CheckpointMismatch(f"{path} was written for another configuration ({describe_difference(state.get('config', {}), config)}); "
                                 f"use another checkpoint folder or the matching config")
    return state


def describe_difference(old: dict[str, Any], new: dict[str, Any]) -> str:
    """'model.msm: off → released, ...' for the first few keys that differ between two nested configs."""
    changes = []
    for section in sorted(set(old) | set(new)):
        before, after = old.get(section, {}), new.get(section, {})
        for key in sorted(set(before) | set(after)):
            if before.get(key) != after.get(key):
                changes.append(f"{section}.{key}: {before.get(key)!r} → {after.get(key)!r}")
    return ", ".join(changes[:4]) + (" ..." if len(changes) > 4 else "") if changes else "different hash"


def save_weights(directory: str | os.PathLike, config: dict[str, Any], config_hash: str, epoch: int,
                 metrics: dict[str, Any], model: dict[str, torch.Tensor]) -> Path:
    """Write `directory`/best_weights.pt: a model state dict (on the CPU) with the config and epoch behind it."""
    record = {"format_version": WEIGHTS_FORMAT, "config": config, "config_hash": config_hash, "epoch": epoch,
              "metrics": metrics, "model": {name: tensor.detach().cpu() for name, tensor in model.items()}}
    return atomic_write(Path(directory) / BEST_WEIGHTS, lambda f: torch.save(record, f))


def read_weights(path: str | os.PathLike) -> dict[str, Any]:
    """The record `save_weights` wrote, tensors on the CPU; a `WeightsError` naming the problem otherwise."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such file; {BEST_WEIGHTS} is written by training on each new best val epoch "
                           "(runs from before it was kept have none: train again)")
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated or foreign file: say which, never run code from it
        raise WeightsError(f"{path} is not a readable MMN weights file ({type(error).__name__}: "
                           f"{str(error).splitlines()[0][:200] if str(error) else ''})") from None
    check_version(record, WEIGHTS_FORMAT, str(path), error=WeightsError)
    if not (isinstance(record, dict) and isinstance(record.get("config"), dict)
            and isinstance(record["config"].get("model"), dict) and isinstance(record.get("model"), dict)
            and isinstance(record.get("epoch"), int)):
        raise WeightsError(f"{path} is not an MMN best-weights file (no config, epoch and model state); for the "
                           "release's checkpoints use mmn.model.from_released")
    return record
