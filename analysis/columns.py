"""How metrics, factor values and variants are named: result keys, table columns, table headers and axis labels.

A metric is chosen by a short name ("top1", "body_top1", ...). Its values live in the trial record under "best" (at the
best epoch, the checkpoint the release keeps: the default) or "final" (last epoch), which `collect` turns into the
columns best_val_top1 / final_val_top1, and in history.jsonl under the key itself (val_top1). On another split
(`collect(..., split="test")`) a metric is the evaluation of each trial's best weights: column test_top1.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Mapping

from mmn.folders import VALIDATION_PREFIX
from mmn.metrics import METRIC_NAMES

PHASES = ("best", "final")


@dataclass(frozen=True)
class MetricSpec:
    key: str  # key in the trial record's best/final dicts and in history.jsonl
    header: str  # table column header, plain text (tables escape it)
    axis: str  # plot axis label, with unit
    higher_is_better: bool = True
    decimals: int = 1


# Table header and axis label of each metric mmn.metrics.evaluate reports (its METRIC_NAMES).
_LABELS = {
    "top1": ("Top-1 (%)", "Top-1 accuracy (%)"),
    "top5": ("Top-5 (%)", "Top-5 accuracy (%)"),
    "body_top1": ("Body Top-1 (%)", "Body-level Top-1 accuracy (%)"),
    "f1_micro": ("F1 micro (%)", "F1 micro (%)"),
    "f1_macro": ("F1 macro (%)", "F1 macro (%)"),
    "body_f1_micro": ("Body F1 micro (%)", "Body-level F1 micro (%)"),
    "body_f1_macro": ("Body F1 macro (%)", "Body-level F1 macro (%)"),
    "f1_mean": ("F1 mean (%)", "Mean of the four F1 scores (%)"),
}
METRICS: dict[str, MetricSpec] = {
    **{name: MetricSpec(VALIDATION_PREFIX + name, *_LABELS[name]) for name in METRIC_NAMES},
    "train_loss": MetricSpec("train_loss", "Train loss", "Training loss", higher_is_better=False, decimals=3),
}

# The paper's MA-52 table; iMiGUE experiments lack the body metrics, and tables show only the ones present.
DEFAULT_METRICS = ("top1", "top5", "body_top1", "f1_mean")


def check_metrics(names: list[str] | tuple[str, ...]) -> list[str]:
    """`names` as a list, or a ValueError naming the unknown ones and listing the valid ones."""
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise ValueError(f"unknown metric {', '.join(map(repr, unknown))}; valid metrics: {', '.join(METRICS)}")
    return list(names)


def metric_column(name: str, phase: str = "best", split: str = "val") -> str:
    """The collected column of metric `name` at `phase` ("best" or "final"), e.g. best_val_top1; on a split other
    than val, where only the best weights are evaluated, the split's column, e.g. test_top1."""
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {', '.join(PHASES)}, got {phase!r}")
    return f"{phase}_{METRICS[name].key}" if split == "val" else f"{split}_{name}"


def variant_key(variant: Mapping[str, Any]) -> str:
    """A variant's identity: canonical JSON, so equal settings compare equal whatever the key order."""
    return json.dumps(dict(variant), sort_keys=True)


def value_text(value: Any) -> str:
    """A factor value as plain text: switches read on/off, a missing value "none"."""
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None else str(value)


def variant_label(variant: Mapping[str, Any], factor_labels: Mapping[str, str]) -> str:
    """A one-line name for plots and lists, e.g. "MSM: released, MTM: on"."""
    if not variant:
        return "default"
    return ", ".join(f"{factor_labels.get(key, key)}: {value_text(value)}" for key, value in variant.items())
