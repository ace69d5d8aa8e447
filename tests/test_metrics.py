"""Metrics against small cases worked out by hand (the expected numbers are derived in the comments)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mmn.layouts import MA52_ACTION_TO_BODY
from mmn.metrics import (
    action_to_body,
    confusion_matrix,
    evaluate,
    f1_scores,
    fuse_logits,
    per_class_accuracy,
    top_k_accuracy,
    top_k_indices,
)

# Rows and the stable ranking (equal logits: lower index first):
#   [0.1, 0.5, 0.5, 0.2], label 2 -> ranking 1, 2, 3, 0: Top-1 miss (the tie goes to class 1), Top-2 hit
#   [3, 1, 2, 0],         label 0 -> ranking 0, 2, 1, 3: hit from Top-1
#   [0, 0, 0, 0],         label 3 -> ranking 0, 1, 2, 3: first hit at Top-4
TIE_LOGITS = np.array([[0.1, 0.5, 0.5, 0.2], [3, 1, 2, 0], [0, 0, 0, 0]])
TIE_LABELS = np.array([2, 0, 3])

# Five classes. Class 3 is predicted once but never true; class 4 appears in neither.
#   class 0: TP 2, FP 0, FN 1 -> F1 = 2*2 / (2*2 + 0 + 1) = 0.8
#   class 1: TP 1, FP 1 (a 0 predicted as 1), FN 1 (a 1 predicted as 3) -> F1 = 2 / 4 = 0.5
#   class 2: TP 1, FP 0, FN 0 -> F1 = 1
#   class 3: TP 0, FP 1, FN 0 -> F1 = 0 (kept: it is in y_pred)
#   class 4: not in the label set at all
# macro = (0.8 + 0.5 + 1 + 0) / 4 = 0.575  (dividing by 5 would give 0.46, dropping class 3 0.7667)
# micro: TP 4, FP 2, FN 2 -> 2*4 / (2*4 + 2 + 2) = 2/3 = accuracy 4/6
Y_TRUE = np.array([0, 0, 0, 1, 1, 2])
Y_PRED = np.array([0, 0, 1, 1, 3, 2])


def test_top_k_indices_break_ties_towards_lower_index() -> None:
    assert top_k_indices(TIE_LOGITS, 4).tolist() == [[1, 2, 3, 0], [0, 2, 1, 3], [0, 1, 2, 3]]
    assert top_k_indices(TIE_LOGITS, 2).shape == (3, 2)


def test_top_k_accuracy_with_ties() -> None:
    assert top_k_accuracy(TIE_LOGITS, TIE_LABELS, 1) == pytest.approx(100 / 3)
    assert top_k_accuracy(TIE_LOGITS, TIE_LABELS, 2) == pytest.approx(200 / 3)
    assert top_k_accuracy(TIE_LOGITS, TIE_LABELS, 3) == pytest.approx(200 / 3)
    assert top_k_accuracy(TIE_LOGITS, TIE_LABELS, 4) == 100.0
    assert top_k_accuracy(TIE_LOGITS, TIE_LABELS, 10) == 100.0  # k beyond the class count: every sample a hit


def test_top_k_accuracy_accepts_torch_tensors() -> None:
    logits = torch.tensor(TIE_LOGITS, dtype=torch.bfloat16)
    assert top_k_accuracy(logits, torch.tensor(TIE_LABELS), 2) == pytest.approx(200 / 3)


def test_f1_hand_worked_example() -> None:
    scores = f1_scores(Y_TRUE, Y_PRED, num_classes=5)
    assert scores["f1_macro"] == pytest.approx(57.5)
    assert scores["f1_micro"] == pytest.approx(200 / 3)


def test_f1_perfect_and_all_wrong() -> None:
    assert f1_scores([1, 2, 2], [1, 2, 2], 4) == {"f1_micro": 100.0, "f1_macro": 100.0}
    # Every class (0 and 1) has TP 0: both averages are 0.
    assert f1_scores([0, 0], [1, 1], 2) == {"f1_micro": 0.0, "f1_macro": 0.0}


def test_confusion_matrix_rows_true_columns_predicted() -> None:
    expected = np.array([
        [2, 1, 0, 0, 0],
        [0, 1, 0, 1, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0],
    ])
    np.testing.assert_array_equal(confusion_matrix(Y_TRUE, Y_PRED, 5), expected)


def test_per_class_accuracy_is_nan_for_absent_classes() -> None:
    # class 0: 2 of 3, class 1: 1 of 2, class 2: 1 of 1; classes 3 and 4 have no true sample.
    acc = per_class_accuracy(Y_TRUE, Y_PRED, 5)
    np.testing.assert_allclose(acc[:3], [200 / 3, 50.0, 100.0])
    assert math.isnan(acc[3]) and math.isnan(acc[4])
    assert np.nanmean(acc) == pytest.approx((200 / 3 + 50 + 100) / 3)


def test_action_to_body_follows_the_spec_ranges() -> None:
    # SPEC: 0-4 body, 5-10 head, 11-23 upper limb, 24-31 lower limb, 32-37 body-hand, 38-47 head-hand, 48-51 leg-hand.
    edges = [0, 4, 5, 10, 11, 23, 24, 31, 32, 37, 38, 47, 48, 51]
    assert action_to_body(edges).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]
    assert len(MA52_ACTION_TO_BODY) == 52
    with pytest.raises(ValueError, match="actions"):
        action_to_body([52])


def _ma52_case() -> tuple[np.ndarray, np.ndarray]:
    # Four clips (true action -> predicted action, bodies in brackets):
    #   0 [0] -> 1 [0]     action wrong, body right; true 0 is second, so a Top-5 hit
    #   5 [1] -> 5 [1]     both right
    #   11 [2] -> 24 [3]   both wrong; the rest of the row is 0 and class 11 is -1, so top-5 = 24, 0, 1, 2, 3: a miss
    #   12 [2] -> 12 [2]   both right
    logits = np.zeros((4, 52))
    logits[0, 1], logits[0, 0] = 5, 4
    logits[1, 5] = 5
    logits[2, 24], logits[2, 11] = 5, -1
    logits[3, 12] = 5
    return logits, np.array([0, 5, 11, 12])


def test_evaluate_ma52_hand_worked() -> None:
    # Action: Top-1 2/4 = 50, Top-5 3/4 = 75.
    #   label set {0, 1, 5, 11, 12, 24}: F1 1 for 5 and 12, 0 for the other four -> macro 2/6, micro = accuracy 50.
    # Body: true [0, 1, 2, 2], predicted [0, 1, 3, 2] -> Top-1 3/4 = 75.
    #   label set {0, 1, 2, 3}: body 0 and 1 F1 1; body 2 TP 1, FN 1 -> 2/3; body 3 FP 1 -> 0.
    #   macro (1 + 1 + 2/3 + 0) / 4 = 2/3, micro 75.
    # f1_mean = (50 + 100/3 + 75 + 200/3) / 4 = 56.25
    metrics = evaluate(*_ma52_case(), dataset="ma52")
    expected = {
        "top1": 50.0, "top5": 75.0, "f1_micro": 50.0, "f1_macro": 100 / 3,
        "body_top1": 75.0, "body_f1_micro": 75.0, "body_f1_macro": 200 / 3, "f1_mean": 56.25,
    }
    assert metrics.keys() == expected.keys()
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value), key
        assert type(metrics[key]) is float


def test_evaluate_same_for_torch_and_numpy() -> None:
    logits, labels = _ma52_case()
    assert evaluate(torch.from_numpy(logits).float(), torch.from_numpy(labels)) == pytest.approx(
        evaluate(logits, labels))


def test_evaluate_imigue_has_no_body_metrics() -> None:
    logits = np.zeros((2, 32))
    logits[0, 3], logits[1, 7] = 1, 1
    metrics = evaluate(logits, np.array([3, 8]), dataset="imigue")
    # Top-1 1/2; label 8 ranks 7 first then 0, 1, 2, 3 (all 0): not in the top 5.
    # F1 label set {3, 7, 8}: 3 -> 1, 7 -> 0, 8 -> 0 -> macro 1/3.
    assert metrics == pytest.approx({"top1": 50.0, "top5": 50.0, "f1_micro": 50.0, "f1_macro": 100 / 3})


def test_evaluate_rejects_bad_input() -> None:
    logits, labels = _ma52_case()
    with pytest.raises(ValueError, match="imigue has 32 classes"):
        evaluate(logits, labels, dataset="imigue")
    with pytest.raises(ValueError, match="unknown dataset"):
        evaluate(logits, labels, dataset="ntu")
    with pytest.raises(ValueError, match="4 rows but labels have 3"):
        evaluate(logits, labels[:3])
    with pytest.raises(ValueError, match=r"\[0, 52\)"):
        evaluate(logits, np.array([0, 5, 11, 52]))
    with pytest.raises(ValueError, match="integer"):
        evaluate(logits, labels.astype(float))
    logits[0, 0] = np.nan
    with pytest.raises(ValueError, match="diverged"):
        evaluate(logits, labels)


def test_fuse_logits_averages_the_streams() -> None:
    joint = np.array([[1.0, 0.0], [2.0, 4.0]])
    bone = np.array([[0.0, 3.0], [2.0, 0.0]])
    np.testing.assert_allclose(fuse_logits(joint, bone), [[0.5, 1.5], [2.0, 2.0]])
    np.testing.assert_allclose(fuse_logits(joint, bone, weights=(1.0, 0.0)), joint)
    np.testing.assert_allclose(fuse_logits(torch.tensor(joint), torch.tensor(bone), (0.25, 0.75)),
                               [[0.25, 2.25], [2.0, 1.0]])
    with pytest.raises(ValueError, match="same shape"):
        fuse_logits(joint, bone[:1])
    with pytest.raises(ValueError, match="two numbers"):
        fuse_logits(joint, bone, weights=(1.0,))
