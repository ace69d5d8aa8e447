"""Statistics over seeds: per variant n, mean, std, 95% CI, the difference to the reference variant and a paired
t-test against it (Holm-corrected across variants); and the list of trials that did not finish.

Only trials that go into tables count: summary rows whose search phase is "final" or absent (tuning trials,
phase "tune", only explore the search space), and the rows of stream ensembles (analysis.ensembles, row
"ensemble"), which count as variants of their own. A variant with no finished trial still gets its rows, with n = 0
and NaN elsewhere, so tables show it as "—" instead of dropping it.
"""
from __future__ import annotations

import json
import warnings
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from .collect import ExperimentInfo
from .columns import metric_column, variant_key

MIN_PAIRED_SEEDS = 3
NO_TEST_NOTE = "fewer than 3 seeds: no significance test"
NO_REFERENCE_NOTE = "no reference variant: no significance test"
SIGNIFICANCE_LEVELS = ((0.01, "**"), (0.05, "*"))  # after Holm correction, strictest first


def describe(values: Sequence[float]) -> dict[str, float]:
    """n, mean, std (ddof=1) and the half-width of the 95% Student-t confidence interval of the mean.

    std and ci95 need two values; with fewer they are NaN, as is the mean of nothing.
    """
    x = np.asarray(values, dtype=np.float64)
    x = x[~np.isnan(x)]
    n = len(x)
    mean = float(x.mean()) if n else np.nan
    std = float(x.std(ddof=1)) if n >= 2 else np.nan
    ci95 = float(scipy_stats.t.ppf(0.975, n - 1) * std / np.sqrt(n)) if n >= 2 else np.nan
    return {"n": n, "mean": mean, "std": std, "ci95": ci95}


def paired_test(values: pd.Series, reference: pd.Series) -> tuple[int, float]:
    """(number of seeds both have, two-sided p of a paired t-test over them); p is NaN below MIN_PAIRED_SEEDS.

    Both series are indexed by seed; a seed only one of them finished is left out.
    """
    both = pd.concat([values.rename("variant"), reference.rename("reference")], axis=1, join="inner").dropna()
    if len(both) < MIN_PAIRED_SEEDS:
        return len(both), np.nan
    with warnings.catch_warnings():
        # Identical differences on every seed have no variance: scipy warns and returns NaN or 0, which we keep.
        warnings.simplefilter("ignore", RuntimeWarning)
        result = scipy_stats.ttest_rel(both["variant"].to_numpy(float), both["reference"].to_numpy(float))
    return len(both), float(result.pvalue)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values, in the input order; NaN entries stay NaN and are not counted.

    Sorted ascending, p_(i) of m tests becomes max over j <= i of min(1, (m - j + 1) * p_(j)), so adjusted values
    never decrease along the sorted order (the step-down procedure's monotonicity).
    """
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full_like(p, np.nan)
    tested = np.flatnonzero(~np.isnan(p))
    m = len(tested)
    order = tested[np.argsort(p[tested], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[index]))
        adjusted[index] = running
    return adjusted


def stars(p_holm: float) -> str:
    """"**" below 0.01, "*" below 0.05, else ""; NaN (no test) is never marked."""
    for level, mark in SIGNIFICANCE_LEVELS:
        if p_holm < level:  # False for NaN
            return mark
    return ""


def table_trials(table: pd.DataFrame) -> pd.DataFrame:
    """The summary rows of trials that go into tables (not tuning trials), and the ensemble rows."""
    summary = table[table["row"].isin(("summary", "ensemble"))]
    return summary[summary["search_phase"].isna() | (summary["search_phase"] == "final")]


def counted_trials(table: pd.DataFrame) -> pd.DataFrame:
    """The finished trials that go into tables, one per experiment, variant and seed."""
    trials = table_trials(table)
    finished = trials[trials["status"] == "finished"]
    # One value per variant and seed: if a configuration ran twice, the run that ended last counts.
    return finished.sort_values("ended", kind="stable").drop_duplicates(["experiment", "variant", "seed"],
                                                                          keep="last")


def _variant_order(info: ExperimentInfo, trials: pd.DataFrame) -> list[str]:
    """The experiment's variants (reference first), then any the trials ran that it does not name."""
    keys = [variant_key(variant) for variant in info.variants()]
    return keys + [key for key in dict.fromkeys(trials["variant"].dropna()) if key not in keys]


def summarize(table: pd.DataFrame, experiments: Sequence[ExperimentInfo], metrics: Sequence[str],
              phase: str = "best", split: str = "val") -> pd.DataFrame:
    """One row per experiment, variant and metric (in that order; variants in grid order, reference first).

    Columns: experiment, variant (canonical JSON), settings (the variant as a dict), is_reference, metric, n,
    mean, std, ci95, diff (mean minus the reference's mean), n_paired, p (paired t-test against the reference,
    NaN below 3 paired seeds), p_holm (Holm-adjusted across the experiment's non-reference variants, per metric),
    params_m (parameters in millions) and gflops. `phase` picks best-epoch ("best") or last-epoch ("final") values,
    `split` the split they were measured on (see columns.metric_column).
    """
    trials = table_trials(table)
    finished = counted_trials(table)
    rows = []
    for info in experiments:
        mine = trials[trials["experiment"] == info.name]
        by_variant = {key: group.set_index("seed") for key, group in finished[finished["experiment"]
                                                                                  == info.name].groupby("variant")}
        costs = mine.groupby("variant")[["params", "gflops"]].mean()
        reference = None if info.reference is None else variant_key(info.reference)
        for metric in metrics:
            column = metric_column(metric, phase, split)
            samples = {key: group[column].dropna() if column in group else pd.Series(dtype=float)
                       for key, group in by_variant.items()}
            reference_values = samples.get(reference, pd.Series(dtype=float))
            block = []
            for key in _variant_order(info, mine):
                values = samples.get(key, pd.Series(dtype=float))
                is_reference = key == reference
                n_paired, p = (0, np.nan) if is_reference or reference is None else paired_test(values,
                                                                                              reference_values)
                summary = describe(values)
                block.append({
                    "experiment": info.name, "variant": key, "settings": json.loads(key),
                    "is_reference": is_reference, "metric": metric, **summary,
                    "diff": summary["mean"] - describe(reference_values)["mean"], "n_paired": n_paired, "p": p,
                    "params_m": costs["params"].get(key, np.nan) / 1e6, "gflops": costs["gflops"].get(key, np.nan),
                })
            for row, adjusted in zip(block, holm([row["p"] for row in block])):
                row["p_holm"] = adjusted
            rows.extend(block)
    return pd.DataFrame(rows, columns=["experiment", "variant", "settings", "is_reference", "metric", "n", "mean",
                                       "std", "ci95", "diff", "n_paired", "p", "p_holm", "params_m", "gflops"])


def significance_note(summary: pd.DataFrame, experiment: str) -> str | None:
    """Why some result of `experiment` got no test (NO_REFERENCE_NOTE or NO_TEST_NOTE), or None if all did.

    Only results that exist count: a metric the dataset lacks (body metrics on iMiGUE) needs no explanation.
    """
    rows = summary[summary["experiment"] == experiment]
    if not rows["is_reference"].any():
        return NO_REFERENCE_NOTE
    shown = rows[~rows["is_reference"] & (rows["n"] > 0)]
    if (shown["n_paired"] < MIN_PAIRED_SEEDS).any():
        return NO_TEST_NOTE
    return None


def failed_trials(table: pd.DataFrame) -> pd.DataFrame:
    """Every trial that did not finish (tuning trials included), never silently dropped.

    Columns: experiment, variant (canonical JSON, None if its trial record was unreadable), seed, status, error,
    search_phase, trial_dir, and rerun_finished: whether the same configuration (config_hash) finished in
    another trial, so the failure cost no result.
    """
    summary = table[table["row"] == "summary"]
    finished_hashes = set(summary.loc[summary["status"] == "finished", "config_hash"].dropna())
    failed = summary[summary["status"] != "finished"]
    columns = ["experiment", "variant", "seed", "status", "error", "search_phase", "trial_dir"]
    return failed[columns].assign(rerun_finished=failed["config_hash"].isin(finished_hashes)).reset_index(drop=True)
