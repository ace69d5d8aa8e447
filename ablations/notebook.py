"""Experiments from Python, e.g. in a notebook: one call runs an experiment (or opens a finished one) and returns an
`Experiment` whose methods give its results as pandas DataFrames and build its report.

    exp = ablations.run_experiment("msm_mtm", seeds=2, epochs=4)
    exp.results()   # the tidy table: one row per trial and epoch, a summary row per trial (analysis.collect)
    exp.table()     # mean, std and tests per variant and metric (analysis.stats.summarize)
    exp.report()    # the report folder, as python -m analysis.report writes it

Ray and torch are imported only when an experiment runs: `open_experiment` and the methods read files only.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import pandas as pd

from mmn.config import check_value
from mmn.suggest import closest

if TYPE_CHECKING:
    from .runner import Outcome
    from .spec import Spec


class Experiment:
    """A finished (or partly finished) experiment folder; `outcome` is the run's when this session ran it."""

    def __init__(self, location: str | os.PathLike[str], outcome: Outcome | None = None) -> None:
        from analysis.collect import read_experiment

        self.location = os.fspath(location)
        self.info = read_experiment(self.location)  # ExperimentError if no experiment is there
        self.outcome = outcome

    def __repr__(self) -> str:
        return f"Experiment({self.info.name!r} at {self.location})"

    def results(self, split: str = "val") -> pd.DataFrame:
        """The tidy table of every trial (analysis.collect.collect): one row per trial and epoch plus a summary row
        per trial; `split` another split that ablations.evaluate evaluated, e.g. "test"."""
        from analysis.collect import collect

        return collect(self.location, split)

    def table(self, metrics: Sequence[str] | None = None, phase: str = "best", split: str = "val",
              group: int = 1) -> pd.DataFrame:
        """One row per variant and metric (analysis.stats.summarize): mean, std, 95% CI, difference to the reference
        and its Holm-corrected p. metrics: short names (analysis.columns.METRICS), by default the paper's that were
        recorded; group: which setting of a folder holding trials of several, 1 the newest (as the report's)."""
        from analysis.columns import DEFAULT_METRICS, check_metrics, metric_column
        from analysis.groups import setting_rows, settings
        from analysis.stats import summarize

        table = self.results(split)
        found = settings(table, self.info)
        if group < 1 or group > max(len(found), 1):
            raise ValueError(f"{self.location} holds trials of {len(found)} setting(s); group {group} does not "
                             f"exist (1 is the newest)")
        if found:
            table = table[setting_rows(table, self.info, found[group - 1])]
        if metrics is None:
            metrics = [name for name in DEFAULT_METRICS
                       if table.get(metric_column(name, phase, split), pd.Series()).notna().any()] or ["top1"]
        return summarize(table, [self.info], check_metrics(list(metrics)), phase, split)

    def report(self, **options: Any) -> Path:
        """Build the report folder (tables, plots, summary.md) and return its path; `options` are
        analysis.report.build_report's (metrics, formats, out_dir, phase, split, group, fusion, latex_fit)."""
        from analysis.report import build_report

        return build_report(self.location, **options)


def open_experiment(path: str | os.PathLike[str]) -> Experiment:
    """The experiment in folder `path` (or a file:// or s3:// URI), without Ray."""
    return Experiment(path)


def run_experiment(spec: str | os.PathLike[str] | Spec, **options: Any) -> Experiment:
    """Run `spec` (a name such as "msm_mtm", a YAML file or a loaded Spec) on Ray Tune, as python -m ablations.run
    does, and return the experiment. Keyword arguments are ablations.runner.RunOptions fields: budget, seeds,
    epochs, storage, name, data_root, overrides (a dict of dotted config keys, e.g. {"model.depth": 2}), ...;
    an unknown one is a TypeError naming the valid ones. The report is built only when asked (Experiment.report).
    """
    from .console import console
    from .runner import RunOptions
    from .runner import run_experiment as run_on_ray
    from .spec import Spec, load_spec

    valid = [field.name for field in dataclasses.fields(RunOptions)]
    unknown = [key for key in options if key not in valid]
    if unknown:
        near = closest(unknown[0], valid)
        raise TypeError(f"run_experiment() got unknown keyword argument {unknown[0]!r}"
                        f"{f' (did you mean {near}?)' if near else ''}; valid keywords: {', '.join(valid)}")
    overrides = options.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise TypeError(f"overrides must be a dict of dotted config keys, e.g. {{'model.depth': 2}}, "
                        f"got {type(overrides).__name__}")
    options["overrides"] = {key: check_value(key, value) for key, value in overrides.items()}
    if "storage" in options:
        options["storage"] = os.fspath(options["storage"])
    loaded = spec if isinstance(spec, Spec) else load_spec(spec)
    with console():  # the run's status lines (trials done, ETA, failures) in the notebook's output
        outcome = run_on_ray(loaded, RunOptions(**options))
    return Experiment(outcome.experiment.path if outcome.experiment.is_local else outcome.experiment.uri, outcome)
