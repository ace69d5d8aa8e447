"""Classification metrics of the MA-52 and iMiGUE benchmarks (docs/spec-mmn.md, "Benchmark metrics").

Everything works on numpy; torch tensors are accepted and converted, so the training loop can pass its outputs
directly (torch itself is not imported: reading results never needs it). Accuracies and F1 scores come back in percent (0-100), the unit the benchmark tables use.

Ties between equal logits are broken towards the lower class index everywhere (ranking, Top-k, the predicted label),
the same choice as `argmax`, so Top-1 accuracy always equals the accuracy of the labels F1 is computed from.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .layouts import MA52_ACTION_TO_BODY, MA52_BODY_NAMES, SkeletonLayout, get_layout

# Every metric `evaluate` reports, in the order tables show them; iMiGUE has no body level (BODY_METRICS).
METRIC_NAMES = ("top1", "top5", "body_top1", "f1_micro", "f1_macro", "body_f1_micro", "body_f1_macro", "f1_mean")
BODY_METRICS = ("body_top1", "body_f1_micro", "body_f1_macro", "f1_mean")

_ACTION_TO_BODY = np.asarray(MA52_ACTION_TO_BODY, dtype=np.int64)


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        # float() first: numpy has no bfloat16, and half-precision logits are fine to widen.
        x = x.detach().cpu()
        return (x.float() if x.is_floating_point() else x).numpy()
    return np.asarray(x)


def _check_logits(logits: Any) -> np.ndarray:
    scores = _as_numpy(logits)
    if scores.ndim != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(f"logits must have shape (N, num_classes) with N, num_classes >= 1, got {scores.shape}")
    if not np.issubdtype(scores.dtype, np.floating) and not np.issubdtype(scores.dtype, np.integer):
        raise ValueError(f"logits must be numeric, got dtype {scores.dtype}")
    if not np.isfinite(scores).all():
        # A ranking with NaN in it is meaningless; a diverged run should fail loudly, not score at random.
        raise ValueError("logits contain NaN or inf; the model has probably diverged")
    return scores


def _check_labels(labels: Any, num_classes: int, name: str = "labels") -> np.ndarray:
    y = _as_numpy(labels)
    if y.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional (N,), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must be integer class indices, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{name} must lie in [0, {num_classes}), got values in [{y.min()}, {y.max()}]")
    return y.astype(np.int64, copy=False)


def _check_pair(logits: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    scores = _check_logits(logits)
    y = _check_labels(labels, scores.shape[1])
    if len(y) != len(scores):
        raise ValueError(f"logits have {len(scores)} rows but labels have {len(y)} entries")
    return scores, y


def top_k_indices(logits: Any, k: int) -> np.ndarray:
    """The k highest-scoring classes of each row, best first, shape (N, min(k, num_classes)).

    Equal logits rank the lower class index first (a stable sort of the negated scores).
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    scores = _check_logits(logits)
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def top_k_accuracy(logits: Any, labels: Any, k: int = 1) -> float:
    """Percentage of samples whose true class is among the k best-ranked classes (ties: lower index first).

    With k >= num_classes every sample is a hit, as the true class is always among all classes.
    """
    scores, y = _check_pair(logits, labels)
    hits = (top_k_indices(scores, k) == y[:, None]).any(axis=1)
    return 100.0 * float(hits.mean())


def confusion_matrix(labels: Any, predictions: Any, num_classes: int) -> np.ndarray:
    """Counts (num_classes, num_classes): entry [t, p] is the number of samples of true class t predicted as p."""
    y = _check_labels(labels, num_classes)
    p = _check_labels(predictions, num_classes, name="predictions")
    if len(y) != len(p):
        raise ValueError(f"labels have {len(y)} entries but predictions have {len(p)}")
    return np.bincount(y * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(labels: Any, predictions: Any, num_classes: int) -> np.ndarray:
    """Recall of each class in percent, shape (num_classes,).

    A class with no sample in `labels` has no defined accuracy: its entry is NaN (not 0), so that `np.nanmean`
    gives the mean over the classes actually present and a missing class is never mistaken for a failed one.
    """
    counts = confusion_matrix(labels, predictions, num_classes)
    support = counts.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, 100.0 * np.diag(counts) / support, np.nan)


def f1_scores(labels: Any, predictions: Any, num_classes: int) -> dict[str, float]:
    """F1 micro and macro in percent, as scikit-learn's `f1_score(y_true, y_pred, average=...)` with its defaults.

    The label set is scikit-learn's default (`labels=None`): the classes present in `labels` or `predictions`. A
    class absent from both is left out; a class only predicted, or only true, is kept with F1 0 (zero_division=0:
    its undefined recall or precision counts as 0). Per class F1 = 2TP / (2TP + FP + FN). Micro F1 pools TP, FP and
    FN over the label set; for single-label data it equals plain accuracy.
    """
    counts = confusion_matrix(labels, predictions, num_classes)
    if counts.sum() == 0:
        raise ValueError("F1 needs at least one sample")
    tp = np.diag(counts).astype(np.float64)
    fp = counts.sum(axis=0) - tp  # predicted as the class, but of another class
    fn = counts.sum(axis=1) - tp  # of the class, but predicted as another
    present = (counts.sum(axis=0) + counts.sum(axis=1)) > 0
    # Every present class has 2TP + FP + FN > 0, so no division by zero below.
    per_class = 2 * tp[present] / (2 * tp[present] + fp[present] + fn[present])
    micro = 2 * tp[present].sum() / (2 * tp[present].sum() + fp[present].sum() + fn[present].sum())
    return {"f1_micro": 100.0 * float(micro), "f1_macro": 100.0 * float(per_class.mean())}


def action_to_body(actions: Any) -> np.ndarray:
    """MA-52 body-part labels (0-6, see MA52_BODY_NAMES) of MA-52 action labels (0-51)."""
    return _ACTION_TO_BODY[_check_labels(actions, len(_ACTION_TO_BODY), name="actions")]


def fuse_logits(joint_logits: Any, bone_logits: Any, weights: Sequence[float] = (0.5, 0.5)) -> np.ndarray:
    """Two-stream score: weights[0] * joint + weights[1] * bone, as a float64 numpy array.

    The release averages the two streams' logits 0.5/0.5 (the default). Weights are used as given, not normalised.
    """
    joint = _check_logits(joint_logits).astype(np.float64)
    bone = _check_logits(bone_logits).astype(np.float64)
    if joint.shape != bone.shape:
        raise ValueError(f"joint and bone logits must have the same shape, got {joint.shape} and {bone.shape}")
    if len(weights) != 2:
        raise ValueError(f"weights must be two numbers (joint, bone), got {weights!r}")
    return float(weights[0]) * joint + float(weights[1]) * bone


def evaluate(logits: Any, labels: Any, dataset: str | SkeletonLayout = "ma52") -> dict[str, float]:
    """The benchmark's reported metrics, in percent.

    iMiGUE: top1, top5, f1_micro, f1_macro. MA-52 adds the body level, where the predicted body is the body of the
    predicted (top-1) action: body_top1, body_f1_micro, body_f1_macro, and f1_mean, the mean of the four F1 values.
    `dataset` may be a layout (data.layout): it has MA-52's body level where its classes are MA-52's.
    """
    layout = get_layout(dataset)  # rejects unknown names with the list of choices
    scores, y = _check_pair(logits, labels)
    if scores.shape[1] != layout.num_classes:
        raise ValueError(f"{layout.name} has {layout.num_classes} classes but logits have {scores.shape[1]} columns")
    predicted = top_k_indices(scores, 1)[:, 0]
    metrics = {
        "top1": top_k_accuracy(scores, y, 1),
        "top5": top_k_accuracy(scores, y, 5),
        **f1_scores(y, predicted, scores.shape[1]),
    }
    if layout.action_to_body == MA52_ACTION_TO_BODY:
        body_true, body_pred = action_to_body(y), action_to_body(predicted)
        body_f1 = f1_scores(body_true, body_pred, len(MA52_BODY_NAMES))
        metrics["body_top1"] = 100.0 * float((body_true == body_pred).mean())
        metrics["body_f1_micro"] = body_f1["f1_micro"]
        metrics["body_f1_macro"] = body_f1["f1_macro"]
        metrics["f1_mean"] = (metrics["f1_micro"] + metrics["f1_macro"] + body_f1["f1_micro"]
                              + body_f1["f1_macro"]) / 4
    return {name: metrics[name] for name in METRIC_NAMES if name in metrics}
