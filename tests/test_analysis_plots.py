"""Every figure is written, non-empty and readable; figures without data say why; the Pareto front by hand."""
from __future__ import annotations

from pathlib import Path

import matplotlib.image
import pytest

from analysis.collect import collect, read_experiment
from analysis.plots import (NothingToPlot, pareto_front, plot_confusion, plot_cost_accuracy,
                            plot_learning_curves, plot_metric_bars, plot_param_importance)
from analysis.stats import summarize
from tests.helpers.experiment_factory import make_experiment

METRICS = ["top1", "body_top1"]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory):
    folder = make_experiment(tmp_path_factory.mktemp("plots"), epochs=5, predictions=True, study_trials=8,
                             failed=[({"model.msm": "off", "model.mtm": False}, 2)])
    table = collect(folder)
    info = read_experiment(folder)
    return table, summarize(table, [info], METRICS), info


def _check(paths: list[Path], names: list[str]) -> None:
    assert sorted(path.name for path in paths) == sorted(names)
    for path in paths:
        assert path.stat().st_size > 1024, path
        if path.suffix == ".png":
            image = matplotlib.image.imread(path)
            assert image.ndim == 3 and min(image.shape[:2]) > 100
        else:
            assert path.read_bytes().startswith(b"%PDF")


def test_metric_bars(experiment, tmp_path: Path) -> None:
    table, summary, info = experiment
    _check(plot_metric_bars(table, summary, info, tmp_path, METRICS), ["bars.png", "bars.pdf"])


def test_learning_curves(experiment, tmp_path: Path) -> None:
    table, _, info = experiment
    _check(plot_learning_curves(table, info, tmp_path, formats=("png",)), ["learning_curves.png"])


def test_cost_accuracy(experiment, tmp_path: Path) -> None:
    _, summary, info = experiment
    _check(plot_cost_accuracy(summary, info, tmp_path, formats=("png",)), ["cost_accuracy.png"])


def test_param_importance(experiment, tmp_path: Path) -> None:
    _, _, info = experiment
    _check(plot_param_importance(info, tmp_path, formats=("png",)), ["param_importance.png"])
    with pytest.raises(NothingToPlot, match="fewer than 20"):
        plot_param_importance(info, tmp_path, min_trials=20)


def test_confusion_matrices(experiment, tmp_path: Path) -> None:
    table, _, info = experiment
    _check(plot_confusion(table, info, tmp_path, formats=("png",)), ["confusion_action.png", "confusion_body.png"])


def test_figures_without_data_say_why(tmp_path: Path) -> None:
    folder = make_experiment(tmp_path, seeds=(0,))
    info = read_experiment(folder)
    with pytest.raises(NothingToPlot, match="no Optuna study"):
        plot_param_importance(info, tmp_path)
    with pytest.raises(NothingToPlot, match="best_val_predictions.npz"):
        plot_confusion(collect(folder), info, tmp_path)


def test_pareto_front_by_hand() -> None:
    # (cost, accuracy): a (1, 50), b (2, 60), c (2, 55) dominated by b, d (3, 58) dominated by b, e (4, 70),
    # f (NaN, 99) has no cost. Front by increasing cost: a, b, e.
    costs = [1, 2, 2, 3, 4, float("nan")]
    accuracy = [50, 60, 55, 58, 70, 99]
    assert pareto_front(costs, accuracy) == [0, 1, 4]
    # A loss (lower is better): a (1, 50) is best at the lowest cost, and nothing costlier is lower.
    assert pareto_front(costs, accuracy, higher_is_better=False) == [0]
