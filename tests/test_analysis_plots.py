"""Every figure is written, non-empty and readable; figures without data say why; the Pareto front by hand; and,
from the matplotlib objects, what makes them readable: one colour per variant, intervals within range, single seeds
where a band would mislead, the front or who dominates, the paired differences."""
from __future__ import annotations

from pathlib import Path

import matplotlib.image
import pytest
from matplotlib.collections import PathCollection, PolyCollection
from matplotlib.colors import to_rgb

from analysis import plots
from analysis.collect import collect, read_experiment
from analysis.plots import (NothingToPlot, pareto_front, plot_confusion, plot_cost_accuracy,
                            plot_learning_curves, plot_metric_bars, plot_paired_differences, plot_param_importance)
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


# Readable figures, checked on the matplotlib objects


@pytest.fixture
def figures(monkeypatch: pytest.MonkeyPatch) -> list:
    """The figures the plot functions save, in order (each is still saved as usual)."""
    saved = []
    original = plots._save

    def keep(figure, out_dir, stem, formats):
        saved.append(figure)
        return original(figure, out_dir, stem, formats)

    monkeypatch.setattr(plots, "_save", keep)
    return saved


def _rgb(colour) -> tuple:
    return tuple(round(value, 3) for value in to_rgb(colour))


def test_every_figure_gives_a_variant_the_same_colour(experiment, tmp_path: Path, figures: list) -> None:
    table, summary, info = experiment
    plot_metric_bars(table, summary, info, tmp_path, ["top1"], formats=("png",))
    plot_learning_curves(table, info, tmp_path, formats=("png",))
    plot_cost_accuracy(summary, info, tmp_path, formats=("png",))
    plot_paired_differences(table, summary, info, tmp_path, formats=("png",))
    bars, curves, costs, paired = figures
    labels = [tick.get_text() for tick in bars.axes[0].get_yticklabels()]
    by_bars = {label: _rgb(patch.get_facecolor()) for label, patch in zip(labels, bars.axes[0].patches)}
    by_curves = {line.get_label(): _rgb(line.get_color()) for line in curves.axes[0].get_lines()
                 if not line.get_label().startswith("_")}
    by_costs = {container.get_label(): _rgb(container.lines[0].get_color()) for container in costs.axes[0].containers}
    paired_labels = [tick.get_text() for tick in paired.axes[0].get_yticklabels()]
    by_paired = {label: _rgb(container.lines[0].get_color())
                 for label, container in zip(paired_labels, paired.axes[0].containers)}
    assert len(by_bars) == 4 and by_curves == by_bars and by_costs == by_bars
    assert by_paired == {label: colour for label, colour in by_bars.items() if "(ref.)" not in label}
    (reference,) = [label for label in by_bars if "(ref.)" in label]
    assert by_bars[reference] == _rgb(plots.REFERENCE_COLOUR)
    assert len(set(by_bars.values())) == 4


def _near_the_top(variant, seed: int) -> float:
    """Accuracies a few points under 100, spread enough that a t interval would pass 100."""
    return 99.0 - 3.0 * (variant["model.mtm"] is False) + (-3.0, 0.5, 1.0, -1.0, 0.8)[seed]


def test_intervals_stay_within_the_metric_s_range(tmp_path: Path, figures: list) -> None:
    folder = make_experiment(tmp_path, seeds=range(5), epochs=4, score=_near_the_top)
    table = collect(folder)
    info = read_experiment(folder)
    summary = summarize(table, [info], ["top1"])
    assert (summary["mean"] + summary["ci95"]).max() > 100  # the unclipped interval would leave the range
    plot_metric_bars(table, summary, info, tmp_path, ["top1"], formats=("png",))
    plot_learning_curves(table, info, tmp_path, formats=("png",))
    plot_cost_accuracy(summary, info, tmp_path, formats=("png",))
    bars, curves, costs = figures
    for line in bars.axes[0].collections:  # the whiskers
        for segment in getattr(line, "get_segments", lambda: [])():
            assert segment[:, 0].max() <= 100 and segment[:, 0].min() >= 0
    ax = curves.axes[0]
    bands = [collection for collection in ax.collections if isinstance(collection, PolyCollection)]
    assert len(bands) == 4  # 5 seeds: a band per variant, no single-seed lines
    assert len(ax.get_lines()) == 4
    for band in bands:
        assert max(path.vertices[:, 1].max() for path in band.get_paths()) <= 100
    assert ax.get_ylim()[1] <= 100
    for container in costs.axes[0].containers:
        for segment in container.lines[2][0].get_segments():
            assert segment[:, 1].max() <= 100


def test_few_seeds_show_each_seed_instead_of_a_band(experiment, tmp_path: Path, figures: list) -> None:
    table, _, info = experiment
    plot_learning_curves(table, info, tmp_path, formats=("png",))
    ax = figures[0].axes[0]
    assert not [collection for collection in ax.collections if isinstance(collection, PolyCollection)]
    # 4 variants: a mean each, and a faint line per seed (3, but 2 for the variant whose seed 2 failed)
    faint = [line for line in ax.get_lines() if line.get_alpha() is not None and line.get_alpha() < 0.5]
    assert len(ax.get_lines()) == 4 + 11 and len(faint) == 11
    assert "faint lines: single seeds" in ax.get_title()


def _cheapest_is_best(variant, seed: int) -> float:
    return 60.0 + 2.0 * (variant["model.msm"] == "off") + 2.0 * (variant["model.mtm"] is False) + 0.3 * seed


def test_pareto_plot_says_when_one_variant_dominates(tmp_path: Path, figures: list) -> None:
    folder = make_experiment(tmp_path, score=_cheapest_is_best)
    info = read_experiment(folder)
    plot_cost_accuracy(summarize(collect(folder), [info], ["top1"]), info, tmp_path, formats=("png",))
    for ax in figures[0].axes[:2]:
        assert not [line for line in ax.get_lines() if line.get_label() == "Pareto front"]
        assert [text.get_text() for text in ax.texts] == [
            "MSM: off, MTM: off dominates: no other variant is as cheap and as good"]


def test_pareto_front_is_drawn_through_its_points(experiment, tmp_path: Path, figures: list) -> None:
    _, summary, info = experiment
    plot_cost_accuracy(summary, info, tmp_path, formats=("png",))
    (front,) = [line for line in figures[0].axes[0].get_lines() if line.get_label() == "Pareto front"]
    assert len(front.get_xdata()) >= 2 and not figures[0].axes[0].texts


def test_paired_differences_show_seeds_mean_interval_and_zero(experiment, tmp_path: Path, figures: list) -> None:
    table, summary, info = experiment
    paths = plot_paired_differences(table, summary, info, tmp_path, margin=0.5, formats=("png",))
    _check(paths, ["paired_differences.png"])
    ax = figures[0].axes[0]
    labels = [tick.get_text() for tick in ax.get_yticklabels()]
    assert labels == ["MSM: released, MTM: off", "MSM: off, MTM: on", "MSM: off, MTM: off"]
    dots = [collection for collection in ax.collections if isinstance(collection, PathCollection)]
    assert [len(collection.get_offsets()) for collection in dots] == [3, 3, 2]  # NEITHER's seed 2 failed
    rows = summary[(summary["metric"] == "top1") & ~summary["is_reference"]]
    for container, delta in zip(ax.containers, rows["delta"]):
        assert container.lines[0].get_xdata()[0] == pytest.approx(delta)
    assert any(list(line.get_xdata()) == [0, 0] for line in ax.get_lines())  # the zero line


def test_paired_differences_need_a_reference(tmp_path: Path) -> None:
    folder = make_experiment(tmp_path, reference=None)
    info = read_experiment(folder)
    table = collect(folder)
    with pytest.raises(NothingToPlot, match="no reference"):
        plot_paired_differences(table, summarize(table, [info], ["top1"]), info, tmp_path)
