"""Figures of one experiment, each written as PNG and/or PDF; every function returns the files it wrote.

Every figure of a report gives a variant the same colour (`variant_colours`: the reference always REFERENCE_COLOUR),
and no interval leaves its metric's range (0..100 for accuracies).

Figures are `matplotlib.figure.Figure` objects on an Agg canvas, not made through pyplot: they render the same
whatever backend the caller's session uses (no display needed), and no global figure registry grows in long
reports.
A plot with nothing to show raises NothingToPlot with the reason, which the report writes down instead.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np
import optuna
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats as scipy_stats

from mmn.atomic import atomic_write
from mmn.folders import predictions_file
from mmn.layouts import MA52_ACTION_TO_BODY, MA52_BODY_NAMES, get_layout

from .cli import IMAGE_FORMATS as FORMATS
from .collect import ExperimentInfo, load_predictions, load_studies
from .columns import METRICS, metric_column, variant_label
from .stats import seed_differences, table_trials

MIN_STUDY_TRIALS = 5  # below this a parameter-importance estimate is noise
MIN_BAND_SEEDS = 5  # below this a t band is mostly its quantile (12.7 for 2 seeds): curves show each seed instead
REFERENCE_COLOUR = "black"
_PALETTE = "colorblind"
_STYLE = "whitegrid"
_DPI = 150


class NothingToPlot(Exception):
    """The experiment holds no data for this figure; the message says what is missing."""


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    # An Agg canvas caches its renderer; the bare default canvas renders a whole PNG each time text is measured.
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, out_dir: str | Path, stem: str, formats: Sequence[str]) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for extension in formats:
        path = out / f"{stem}.{extension}"
        # bbox_inches="tight" keeps legends placed outside the axes inside the saved image.
        atomic_write(path, lambda handle: figure.savefig(handle, format=extension, dpi=_DPI, bbox_inches="tight"))
        paths.append(path)
    return paths


def _labels(info: ExperimentInfo, keys: Sequence[str]) -> list[str]:
    reference = None if info.reference is None else json.dumps(info.reference, sort_keys=True)
    return [variant_label(json.loads(key), info.factor_labels) + (" (ref.)" if key == reference else "")
            for key in keys]


def variant_colours(info: ExperimentInfo, keys: Sequence[str]) -> dict[str, tuple[float, float, float] | str]:
    """A colour per variant, the same in every figure of the experiment: REFERENCE_COLOUR for the reference, the
    colour-blind palette in the experiment's variant order for the others, then for `keys` it does not name
    (ensembles), in their order."""
    reference = None if info.reference is None else json.dumps(info.reference, sort_keys=True)
    named = [json.dumps(variant, sort_keys=True) for variant in info.variants()]
    others = [key for key in dict.fromkeys([*named, *keys]) if key != reference]
    palette = sns.color_palette(_PALETTE, max(len(others), 1))
    colours: dict[str, tuple[float, float, float] | str] = {key: palette[i % len(palette)]
                                                            for i, key in enumerate(others)}
    if reference is not None:
        colours[reference] = REFERENCE_COLOUR
    return colours


def metric_range(metric: str) -> tuple[float, float]:
    """The values `metric` can take: 0..100 for the percentages, 0..inf for the loss."""
    return (0.0, 100.0) if METRICS[metric].header.endswith("(%)") else (0.0, np.inf)


def _clipped(mean: np.ndarray, half_width: np.ndarray, metric: str) -> np.ndarray:
    """Error-bar lengths (2, n) below and above `mean` that stop at the metric's range; 0 where unknown."""
    low, high = metric_range(metric)
    mean, half_width = np.asarray(mean, dtype=float), np.nan_to_num(np.asarray(half_width, dtype=float))
    return np.vstack([np.minimum(half_width, np.maximum(mean - low, 0)),
                      np.minimum(half_width, np.maximum(high - mean, 0))])


def _t_interval(frame: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """Row-wise mean and 95% Student-t half-width over the columns (seeds) of `frame`; NaN half-width below n=2."""
    n = frame.count(axis=1)
    t = pd.Series(scipy_stats.t.ppf(0.975, (n - 1).clip(lower=1)), index=frame.index).where(n >= 2)
    return frame.mean(axis=1), t * frame.std(axis=1, ddof=1) / np.sqrt(n)


def plot_metric_bars(table: pd.DataFrame, summary: pd.DataFrame, info: ExperimentInfo, out_dir: str | Path,
                     metrics: Sequence[str], *, phase: str = "best", split: str = "val",
                     formats: Sequence[str] = FORMATS, stem: str = "bars") -> list[Path]:
    """One panel per metric: a bar per variant at the mean over seeds, the 95% CI as whiskers, seeds as dots.
    `summary` holds the values of `split` (stats.summarize), which the dots take from `table` too."""
    rows = summary[summary["experiment"] == info.name]
    keys = list(dict.fromkeys(rows["variant"]))
    if rows["n"].sum() == 0:
        raise NothingToPlot("no finished trial")
    trials = table_trials(table)
    finished = trials[(trials["experiment"] == info.name) & (trials["status"] == "finished")]
    positions = np.arange(len(keys))
    palette = variant_colours(info, keys)
    colours = [palette[key] for key in keys]
    with sns.axes_style(_STYLE):
        figure = _figure(3.6 * len(metrics) + 2.5, 0.45 * len(keys) + 1.6)
        axes = figure.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
        for ax, metric in zip(axes, metrics):
            spec = METRICS[metric]
            values = rows[rows["metric"] == metric].set_index("variant").reindex(keys)
            means = values["mean"].fillna(0)
            ax.barh(positions, means, xerr=_clipped(means, values["ci95"], metric), color=colours, alpha=0.8,
                    capsize=3, error_kw={"elinewidth": 1})
            column = metric_column(metric, phase, split)
            if column in finished:
                seeds = finished[["variant", column]].dropna()
                # white-edged, to show on every bar, the reference's black one too
                ax.scatter(seeds[column], [keys.index(key) for key in seeds["variant"]], s=16, color="black",
                           edgecolors="white", linewidths=0.6, zorder=3)
            for position, n in zip(positions, values["n"]):
                if n == 0:
                    ax.text(0, position, " no finished trial", va="center", fontsize=8, color="dimgray")
            ax.set_title(spec.header)
            ax.set_xlabel(spec.axis)
        axes[0].set_yticks(positions, _labels(info, keys))
        axes[0].invert_yaxis()  # the reference, listed first, on top
        axes[0].set_ylabel("Variant")
        where = "" if split == "val" else f" ({split} split)"
        figure.suptitle(f"{info.name}{where}: mean over seeds with 95% CI (Student t); dots: single seeds")
    return _save(figure, out_dir, stem, formats)


def plot_learning_curves(table: pd.DataFrame, info: ExperimentInfo, out_dir: str | Path, metric: str = "top1", *,
                         formats: Sequence[str] = FORMATS, stem: str = "learning_curves") -> list[Path]:
    """`metric` by epoch from history.jsonl (val_top1 for "top1"): the mean over seeds per variant, with its 95% CI
    as a band clipped to the metric's range; a variant with fewer than MIN_BAND_SEEDS seeds shows each seed as a
    faint line instead of a band."""
    spec = METRICS[metric]
    epochs = table[(table["row"] == "epoch") & (table["experiment"] == info.name) & (table["status"] == "finished")
                   & (table["search_phase"].isna() | (table["search_phase"] == "final"))]
    if spec.key not in epochs or epochs[spec.key].isna().all():
        raise NothingToPlot(f"no {spec.key} in history.jsonl")
    keys = list(dict.fromkeys(epochs["variant"]))
    colours = variant_colours(info, keys)
    low, high = metric_range(metric)
    banded = []
    with sns.axes_style(_STYLE):
        figure = _figure(9, 5)
        ax = figure.subplots()
        for key, label in zip(keys, _labels(info, keys)):
            curve = epochs[epochs["variant"] == key].pivot_table(index="epoch", columns="seed", values=spec.key)
            mean, half_width = _t_interval(curve)
            ax.plot(mean.index, mean, color=colours[key], label=label, linewidth=2)
            if curve.shape[1] >= MIN_BAND_SEEDS:
                banded.append(key)
                ax.fill_between(mean.index, (mean - half_width).clip(low, high), (mean + half_width).clip(low, high),
                                color=colours[key], alpha=0.2, linewidth=0)
            else:
                for seed in curve.columns:
                    ax.plot(curve.index, curve[seed], color=colours[key], alpha=0.3, linewidth=0.8)
        shown = epochs[spec.key].dropna()
        margin = 0.05 * max(float(shown.max() - shown.min()), 1.0)
        ax.set_ylim(max(low, float(shown.min()) - margin), min(high, float(shown.max()) + margin))
        ax.set_xlabel("Epoch")
        ax.set_ylabel(spec.axis)
        how = ("95% CI band" if len(banded) == len(keys) else
               f"faint lines: single seeds{'' if not banded else f'; 95% CI band with {MIN_BAND_SEEDS}+ seeds'}")
        ax.set_title(f"{info.name}: {spec.key} by epoch (mean over seeds; {how})")
        ax.legend(title="Variant", loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    return _save(figure, out_dir, stem, formats)


def plot_paired_differences(table: pd.DataFrame, summary: pd.DataFrame, info: ExperimentInfo, out_dir: str | Path,
                            metric: str = "top1", *, phase: str = "best", split: str = "val",
                            margin: float | None = None, formats: Sequence[str] = FORMATS,
                            stem: str = "paired_differences") -> list[Path]:
    """Per variant, its difference to the reference on each seed both finished (dots), their mean and its 95%
    interval (from `summary`, stats.summarize), the zero line, and the equivalence margin ± `margin` shaded."""
    differences = {key: values for key, values in seed_differences(table, info, metric, phase, split).items()
                   if len(values)}
    if info.reference is None:
        raise NothingToPlot("no reference variant to pair with")
    if not differences:
        raise NothingToPlot("no seed finished by both a variant and the reference")
    spec = METRICS[metric]
    rows = summary[(summary["experiment"] == info.name) & (summary["metric"] == metric)].set_index("variant")
    keys = list(differences)
    colours = variant_colours(info, keys)
    span = metric_range(metric)[1] - metric_range(metric)[0]
    with sns.axes_style(_STYLE):
        figure = _figure(8, 0.55 * len(keys) + 1.8)
        ax = figure.subplots()
        if margin:
            ax.axvspan(-margin, margin, color="gray", alpha=0.15, linewidth=0, label=f"±{margin:g} (equivalence)")
        ax.axvline(0, color=REFERENCE_COLOUR, linewidth=1)
        for position, key in enumerate(keys):
            values = differences[key]
            jitter = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(1)
            ax.scatter(values, position + jitter, s=16, color=colours[key], alpha=0.6, zorder=3)
            row = rows.loc[key]
            low, high = np.clip([row["delta_low"], row["delta_high"]], -span, span)
            error = [[row["delta"] - low], [high - row["delta"]]] if not np.isnan(low) else None
            ax.errorbar(row["delta"], position, xerr=error, fmt="D", color=colours[key], markersize=7, capsize=4,
                        markeredgecolor="black", zorder=4)
            ax.annotate(f"n={len(values)}{', ' + row['decision'] if row['decision'] else ''}", (1.0, position),
                        xycoords=("axes fraction", "data"), xytext=(4, 0), textcoords="offset points",
                        va="center", fontsize=8)
        ax.set_yticks(range(len(keys)), _labels(info, keys))
        ax.invert_yaxis()
        ax.set_xlabel(f"{spec.header.replace(' (%)', '')} minus the reference's, same seed "
                      f"({'points' if spec.header.endswith('(%)') else spec.axis})")
        ax.set_title(f"{info.name}: paired differences to the reference (dots: seeds; diamond: mean, 95% interval)")
        if margin:
            figure.legend(loc="outside lower right", fontsize=8, frameon=False)
    return _save(figure, out_dir, stem, formats)


def pareto_front(costs: Sequence[float], scores: Sequence[float], higher_is_better: bool = True) -> list[int]:
    """Indices of the non-dominated points, by increasing cost: no other point costs no more and scores better.

    Points with a NaN cost or score are never on the front; of equal points only the first is kept.
    """
    cost = np.asarray(costs, dtype=np.float64)
    score = np.asarray(scores, dtype=np.float64) * (1 if higher_is_better else -1)
    valid = np.flatnonzero(~np.isnan(cost) & ~np.isnan(score))
    # Cheapest first and, at equal cost, best first: a point is on the front iff it beats every cheaper one.
    order = valid[np.lexsort((-score[valid], cost[valid]))]
    front, best = [], -np.inf
    for index in order:
        if score[index] > best:
            front.append(int(index))
            best = score[index]
    return front


def plot_cost_accuracy(summary: pd.DataFrame, info: ExperimentInfo, out_dir: str | Path, metric: str = "top1", *,
                       formats: Sequence[str] = FORMATS, stem: str = "cost_accuracy") -> list[Path]:
    """`metric` against GFLOPs per clip and against parameters (two panels), the Pareto front drawn through."""
    spec = METRICS[metric]
    rows = summary[(summary["experiment"] == info.name) & (summary["metric"] == metric)].reset_index(drop=True)
    if rows["mean"].isna().all():
        raise NothingToPlot("no finished trial")
    labels = _labels(info, rows["variant"])
    palette = variant_colours(info, list(rows["variant"]))
    colours = [palette[key] for key in rows["variant"]]
    with sns.axes_style(_STYLE):
        figure = _figure(12, 4.8)
        axes = figure.subplots(1, 2, sharey=True)
        for ax, cost, axis_label in zip(axes, ["gflops", "params_m"], ["GFLOPs per clip", "Parameters (M)"]):
            for i, row in rows.iterrows():
                ax.errorbar(row[cost], row["mean"], yerr=_clipped([row["mean"]], [row["ci95"]], metric), fmt="o",
                            capsize=3, color=colours[i], label=labels[i])
            front = pareto_front(rows[cost], rows["mean"], spec.higher_is_better)
            placed = int((rows[cost].notna() & rows["mean"].notna()).sum())
            if len(front) > 1:
                ax.plot(rows.loc[front, cost], rows.loc[front, "mean"], "--", color="gray", label="Pareto front")
            elif front and placed > 1:  # a front of one point: a line would be nothing to see
                ax.text(0.5, 0.02, f"{labels[front[0]]} dominates: no other variant is as cheap and as good",
                        transform=ax.transAxes, ha="center", va="bottom", fontsize=8)
            elif not front:
                ax.text(0.5, 0.5, f"no {axis_label} recorded", transform=ax.transAxes, ha="center")
            ax.set_xlabel(axis_label)
            ax.set_title(f"{spec.header} vs. {axis_label}")
        axes[0].set_ylabel(spec.axis)
        handles, names = axes[0].get_legend_handles_labels()
        figure.legend(handles, names, title="Variant (mean, 95% CI)", loc="outside right upper")
        figure.suptitle(f"{info.name}: accuracy against cost")
    return _save(figure, out_dir, stem, formats)


def plot_param_importance(info: ExperimentInfo, out_dir: str | Path, *, formats: Sequence[str] = FORMATS,
                          stem: str = "param_importance", min_trials: int = MIN_STUDY_TRIALS) -> list[Path]:
    """Parameter importance (PED-ANOVA, normalised to sum 1) of each Optuna study in study.journal: a tuning
    study's sampled hyperparameters, a grid or final study's factors and seed (each one an Optuna parameter)."""
    studies = load_studies(info.location)
    if not studies:
        raise NothingToPlot("no Optuna study (study.journal) in the experiment")
    results, skipped = [], []
    for study in studies:
        completed = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        if len(study.directions) > 1:
            skipped.append(f"{study.study_name}: several objectives")
        elif len(completed) < min_trials:
            skipped.append(f"{study.study_name}: {len(completed)} completed trials, fewer than {min_trials}")
        else:
            try:
                # PED-ANOVA, Optuna's own evaluator: the fANOVA one would need scikit-learn.
                importances = optuna.importance.get_param_importances(
                    study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
            except (ValueError, RuntimeError) as error:  # e.g. no parameter varies across the trials
                skipped.append(f"{study.study_name}: {error}")
                continue
            if importances:
                results.append((study.study_name, len(completed), importances))
            else:
                skipped.append(f"{study.study_name}: no parameters")
    if not results:
        raise NothingToPlot("; ".join(skipped))
    with sns.axes_style(_STYLE):
        tallest = max(len(importances) for _, _, importances in results)
        figure = _figure(8, (0.35 * tallest + 1.2) * len(results))
        axes = figure.subplots(len(results), 1, squeeze=False)[:, 0]
        for ax, (name, count, importances) in zip(axes, results):
            ax.barh(list(importances), list(importances.values()), color="tab:blue")
            ax.invert_yaxis()  # most important on top
            ax.set_title(f"Study {name} ({count} trials)")
            ax.set_xlabel("Importance (PED-ANOVA, fraction of total)")
            ax.set_ylabel("Parameter")
        if skipped:
            figure.supxlabel("Not shown: " + "; ".join(skipped), fontsize=8)
    return _save(figure, out_dir, stem, formats)


def _confusion_figure(counts: np.ndarray, names: Sequence[str], title: str) -> Figure:
    support = counts.sum(axis=1, keepdims=True)
    # Row-normalised: each row is how the clips of one true class were predicted; a class without clips stays blank.
    fractions = np.divide(counts, support, out=np.full(counts.shape, np.nan), where=support > 0)
    size = len(names)
    small = size > 20
    figure = _figure(0.22 * size + 4, 0.22 * size + 3) if small else _figure(8, 7)
    ax = figure.subplots()
    sns.heatmap(fractions, ax=ax, cmap="Blues", vmin=0, vmax=1, square=True, annot=not small, fmt=".2f",
                xticklabels=names, yticklabels=names, cbar_kws={"label": "Fraction of the true class", "shrink": 0.6})
    fontsize = 6 if small else 9
    ax.tick_params(axis="both", labelsize=fontsize)
    ax.set_xticklabels(ax.get_xticklabels(), rotation=90)
    ax.set_yticklabels(ax.get_yticklabels(), rotation=0)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    ax.set_title(title)
    return figure


def plot_confusion(table: pd.DataFrame, info: ExperimentInfo, out_dir: str | Path, *, split: str = "val",
                   formats: Sequence[str] = FORMATS, stem: str = "confusion") -> list[Path]:
    """Row-normalised confusion matrices on `split` of the best finished trial (by the experiment's validation
    metric, as the release selects) that saved its predictions on `split`: action level (<stem>_action), and for
    MA-52 also body level (<stem>_body, 7 x 7)."""
    # mmn.metrics imports torch, which takes seconds: only this figure needs it.
    from mmn.metrics import action_to_body, confusion_matrix

    trials = table_trials(table)
    candidates = trials[(trials["experiment"] == info.name) & (trials["status"] == "finished")
                        & (trials["row"] == "summary") & trials["has_predictions"].fillna(False).astype(bool)]
    column = f"best_{info.metric}"
    if candidates.empty or column not in candidates or candidates[column].isna().all():
        raise NothingToPlot(f"no finished trial saved {predictions_file(split)}")
    best = candidates.loc[candidates[column].idxmax() if info.mode == "max" else candidates[column].idxmin()]
    logits, labels, _, _ = load_predictions(info.location, best["trial_dir"], split)
    if (labels < 0).any():
        raise NothingToPlot(f"the {split} labels are withheld")
    num_classes = logits.shape[1]
    predicted = logits.argmax(axis=1)  # ties go to the lower index, as in mmn.metrics
    try:
        names = list(get_layout(info.dataset).class_names)
    except ValueError:
        names = []
    if len(names) != num_classes:
        names = [str(index) for index in range(num_classes)]
    label = variant_label(json.loads(best["variant"]), info.factor_labels)
    where = "" if split == "val" else f"{split} split, "
    title = f"{info.name}: {where}{label}, seed {best['seed']} ({column} {best[column]:.1f}%)"
    paths = _save(_confusion_figure(confusion_matrix(labels, predicted, num_classes), names,
                                    f"Action-level confusion, row-normalised\n{title}"),
                  out_dir, f"{stem}_action", formats)
    if info.dataset == "ma52" and num_classes == len(MA52_ACTION_TO_BODY):
        body = confusion_matrix(action_to_body(labels), action_to_body(predicted), len(MA52_BODY_NAMES))
        paths += _save(_confusion_figure(body, MA52_BODY_NAMES, f"Body-level confusion, row-normalised\n{title}"),
                       out_dir, f"{stem}_body", formats)
    return paths
