"""Statistics over seeds: per variant n, mean, std, 95% CI, the difference to the reference variant; the paired
comparison to the reference over the seeds both finished (mean difference, its interval, a test Holm-corrected
across variants, an equivalence test, the smallest difference the seeds could detect) and the decision it supports:
better, worse, equivalent or undecided; and the list of trials that did not finish.

The decision (`compare`, `decide`) is pure arithmetic on per-seed differences, so the runner's seeds-until-decided
rounds (ablations.rounds) use the very rule the table shows.

Only trials that go into tables count: summary rows whose search phase is "final" or absent (tuning trials,
phase "tune", only explore the search space), and the rows of stream ensembles (analysis.ensembles, row
"ensemble"), which count as variants of their own. A variant with no finished trial still gets its rows, with n = 0
and NaN elsewhere, so tables show it as "—" instead of dropping it.
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from .cli import DEFAULT_MARGIN, MIN_PAIRED_SEEDS, TESTS
from .collect import ExperimentInfo
from .columns import METRICS, metric_column, variant_key

NO_TEST_NOTE = "fewer than 3 seeds: no significance test"
NO_REFERENCE_NOTE = "no reference variant: no significance test"
SIGNIFICANCE_LEVELS = ((0.01, "**"), (0.05, "*"))  # after Holm correction, strictest first
ALPHA = 0.05  # the level of every decision: significance after Holm, and each one-sided test of equivalence
POWER = 0.8  # the power the smallest detectable difference assumes
DECISIONS = ("better", "worse", "equivalent", "undecided")  # "" where fewer than MIN_PAIRED_SEEDS seeds pair up
BOOTSTRAP_RESAMPLES = 9_999


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


def paired_differences(values: pd.Series, reference: pd.Series) -> pd.Series:
    """Variant minus reference on each seed both finished, indexed by seed (ascending).

    Both series are indexed by seed; a seed only one of them finished is left out.
    """
    both = pd.concat([values.rename("variant"), reference.rename("reference")], axis=1, join="inner").dropna()
    return (both["variant"] - both["reference"]).astype(float).sort_index()


def paired_test(values: pd.Series, reference: pd.Series) -> tuple[int, float]:
    """(number of seeds both have, two-sided p of a paired t-test over them); p is NaN below MIN_PAIRED_SEEDS."""
    comparison = compare(paired_differences(values, reference))
    return comparison.n, comparison.p


@dataclass(frozen=True)
class Comparison:
    """A variant against the reference over the seeds both finished (differences: variant minus reference)."""

    n: int  # seeds both finished
    mean: float  # mean paired difference
    low: float  # its 95% interval (Student t; percentile bootstrap with test "bootstrap"); NaN below 2 seeds
    high: float
    p: float  # two-sided p of the test, before Holm's correction; NaN below MIN_PAIRED_SEEDS
    p_equivalent: float  # the larger p of the two one-sided tests against ± margin; NaN below MIN_PAIRED_SEEDS
    detectable: float  # the smallest difference these seeds detect at ALPHA with POWER (paired std, n)


def _t_p(differences: np.ndarray, shift: float = 0.0, alternative: str = "two-sided") -> float:
    """p of a one-sample t-test of the differences against `shift`; exact where they do not vary (0 or 1)."""
    centred = differences - shift
    if np.ptp(centred) == 0:  # no variance: t is ±inf, or undefined for a mean of exactly the shift
        mean = float(centred.mean())
        if mean == 0:
            return 1.0
        rejects = {"two-sided": True, "greater": mean > 0, "less": mean < 0}[alternative]
        return 0.0 if rejects else 1.0
    with warnings.catch_warnings():
        # Differences equal up to rounding (one offset on every seed): scipy warns of precision loss, t is huge.
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(scipy_stats.ttest_1samp(centred, 0.0, alternative=alternative).pvalue)


def _wilcoxon_p(differences: np.ndarray, shift: float = 0.0, alternative: str = "two-sided") -> float:
    """p of Wilcoxon's signed-rank test of the differences against `shift` (exact for small n, zeros dropped)."""
    centred = differences - shift
    if not centred.any():
        return 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (RuntimeWarning, UserWarning))
        return float(scipy_stats.wilcoxon(centred, alternative=alternative).pvalue)


def detectable_difference(std: float, n: int, alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest true mean difference a two-sided paired t-test at `alpha` finds with probability `power`:
    (t(1 - alpha/2, n-1) + t(power, n-1)) * std / sqrt(n), the usual approximation of the noncentral t. NaN below
    2 seeds."""
    if n < 2 or math.isnan(std):
        return np.nan
    quantiles = scipy_stats.t.ppf(1 - alpha / 2, n - 1) + scipy_stats.t.ppf(power, n - 1)
    return float(quantiles * std / math.sqrt(n))


def compare(differences: Sequence[float] | pd.Series, test: str = "t", margin: float = DEFAULT_MARGIN,
            alpha: float = ALPHA) -> Comparison:
    """The paired comparison from per-seed differences (variant minus reference).

    test "t": the paired t-test, its 95% interval, and equivalence by two one-sided t-tests against ± margin (the
    same as the 90% interval for alpha 0.05 lying inside ± margin). "wilcoxon": Wilcoxon's signed-rank test, two
    one-sided signed-rank tests for equivalence, and the t interval for display. "bootstrap": the percentile
    interval of the mean from scipy.stats.bootstrap (fixed seed, so reports repeat), p from where 0 lies in the
    bootstrap distribution, and equivalence when its 1 - 2 alpha interval lies inside ± margin.
    """
    if test not in TESTS:
        raise ValueError(f"unknown test {test!r}; valid tests: {', '.join(TESTS)}")
    d = np.asarray(differences, dtype=np.float64)
    d = d[~np.isnan(d)]
    summary = describe(d)  # n, mean, std and the paired t interval's half-width
    n, mean, std, half = summary["n"], summary["mean"], summary["std"], summary["ci95"]
    low, high, p, p_equivalent = mean - half, mean + half, np.nan, np.nan
    if n >= MIN_PAIRED_SEEDS:
        if test == "t":
            p = _t_p(d)
            p_equivalent = max(_t_p(d, -margin, "greater"), _t_p(d, margin, "less"))
        elif test == "wilcoxon":
            p = _wilcoxon_p(d)
            p_equivalent = max(_wilcoxon_p(d, -margin, "greater"), _wilcoxon_p(d, margin, "less"))
        else:
            result = scipy_stats.bootstrap((d,), np.mean, n_resamples=BOOTSTRAP_RESAMPLES, method="percentile",
                                           rng=np.random.default_rng(0))
            low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
            means = result.bootstrap_distribution
            p = min(1.0, 2 * min(float(np.mean(means <= 0)), float(np.mean(means >= 0))))
            inner_low, inner_high = np.quantile(means, [alpha, 1 - alpha])
            p_equivalent = 0.0 if -margin < inner_low and inner_high < margin else 1.0
    return Comparison(n, mean, low, high, p, p_equivalent, detectable_difference(std, n, alpha))


def decide(comparison: Comparison, p_holm: float, higher_is_better: bool = True, alpha: float = ALPHA) -> str:
    """"better" or "worse" when the Holm-adjusted p is below `alpha`, else "equivalent" when both one-sided tests
    against ± margin are, else "undecided"; "" (no mark) below MIN_PAIRED_SEEDS paired seeds."""
    if comparison.n < MIN_PAIRED_SEEDS:
        return ""
    if p_holm < alpha:
        return "better" if (comparison.mean > 0) == higher_is_better else "worse"
    if comparison.p_equivalent < alpha:
        return "equivalent"
    return "undecided"


def decide_all(differences: Mapping[str, Sequence[float] | pd.Series], test: str = "t",
               margin: float = DEFAULT_MARGIN, higher_is_better: bool = True,
               alpha: float = ALPHA) -> dict[str, tuple[Comparison, float, str]]:
    """Every variant's comparison to the reference, Holm-adjusted p (across these variants) and decision."""
    comparisons = {key: compare(values, test, margin, alpha) for key, values in differences.items()}
    adjusted = holm([comparison.p for comparison in comparisons.values()])
    return {key: (comparison, float(p_holm), decide(comparison, p_holm, higher_is_better, alpha))
            for (key, comparison), p_holm in zip(comparisons.items(), adjusted)}


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


def _by_variant(finished: pd.DataFrame, info: ExperimentInfo) -> dict[str, pd.DataFrame]:
    """The finished trials of `info` per variant, indexed by seed."""
    mine = finished[finished["experiment"] == info.name]
    return {key: group.set_index("seed") for key, group in mine.groupby("variant")}


def _seed_values(by_variant: Mapping[str, pd.DataFrame], column: str) -> dict[str, pd.Series]:
    """Each variant's values of `column` by seed (empty where it has none)."""
    return {key: group[column].dropna() if column in group else pd.Series(dtype=float)
            for key, group in by_variant.items()}


def seed_differences(table: pd.DataFrame, info: ExperimentInfo, metric: str, phase: str = "best",
                     split: str = "val") -> dict[str, pd.Series]:
    """Each non-reference variant's paired differences to the reference by seed (stats.paired_differences), in
    table order; empty without a reference."""
    if info.reference is None:
        return {}
    samples = _seed_values(_by_variant(counted_trials(table), info), metric_column(metric, phase, split))
    reference = variant_key(info.reference)
    trials = table_trials(table)
    empty = pd.Series(dtype=float)
    return {key: paired_differences(samples.get(key, empty), samples.get(reference, empty))
            for key in _variant_order(info, trials[trials["experiment"] == info.name]) if key != reference}


def summarize(table: pd.DataFrame, experiments: Sequence[ExperimentInfo], metrics: Sequence[str],
              phase: str = "best", split: str = "val", *, test: str = "t",
              margin: float = DEFAULT_MARGIN) -> pd.DataFrame:
    """One row per experiment, variant and metric (in that order; variants in grid order, reference first).

    Columns: experiment, variant (canonical JSON), settings (the variant as a dict), is_reference, metric, n,
    mean, std, ci95, diff (mean minus the reference's mean), n_paired (seeds both finished), delta (mean paired
    difference to the reference), delta_low and delta_high (its 95% interval), p (`test` against the reference,
    NaN below 3 paired seeds), p_holm (Holm-adjusted across the experiment's non-reference variants, per metric),
    p_equivalent (two one-sided tests against ± `margin`), detectable (smallest difference detectable at ALPHA
    with POWER), decision (DECISIONS, "" without a test), params_m (parameters in millions) and gflops. `phase`
    picks best-epoch ("best") or last-epoch ("final") values, `split` the split they were measured on (see
    columns.metric_column).
    """
    trials = table_trials(table)
    finished = counted_trials(table)
    rows = []
    for info in experiments:
        mine = trials[trials["experiment"] == info.name]
        by_variant = _by_variant(finished, info)
        costs = mine.groupby("variant")[["params", "gflops"]].mean()
        reference = None if info.reference is None else variant_key(info.reference)
        for metric in metrics:
            samples = _seed_values(by_variant, metric_column(metric, phase, split))
            reference_values = samples.get(reference, pd.Series(dtype=float))
            keys = _variant_order(info, mine)
            compared = [] if reference is None else [key for key in keys if key != reference]
            decisions = decide_all({key: paired_differences(samples.get(key, pd.Series(dtype=float)),
                                                            reference_values) for key in compared},
                                   test, margin, METRICS[metric].higher_is_better)
            for key in keys:
                summary = describe(samples.get(key, pd.Series(dtype=float)))
                comparison, p_holm, decision = decisions.get(key, (_NO_COMPARISON, np.nan, ""))
                rows.append({
                    "experiment": info.name, "variant": key, "settings": json.loads(key),
                    "is_reference": key == reference, "metric": metric, **summary,
                    "diff": summary["mean"] - describe(reference_values)["mean"], "n_paired": comparison.n,
                    "delta": comparison.mean, "delta_low": comparison.low, "delta_high": comparison.high,
                    "p": comparison.p, "p_holm": p_holm, "p_equivalent": comparison.p_equivalent,
                    "detectable": comparison.detectable, "decision": decision,
                    "params_m": costs["params"].get(key, np.nan) / 1e6, "gflops": costs["gflops"].get(key, np.nan),
                })
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)


SUMMARY_COLUMNS = ["experiment", "variant", "settings", "is_reference", "metric", "n", "mean", "std", "ci95", "diff",
                   "n_paired", "delta", "delta_low", "delta_high", "p", "p_holm", "p_equivalent", "detectable",
                   "decision", "params_m", "gflops"]
_NO_COMPARISON = Comparison(0, np.nan, np.nan, np.nan, np.nan, np.nan, np.nan)  # the reference, or no reference


def rank_agreement(summary: pd.DataFrame, first: str, second: str, metric: str) -> tuple[float, float, int]:
    """(Kendall's tau-b, its two-sided p, the number of variants) between the means of experiments `first` and
    `second` over the variants both have a result for; tau and p are NaN below 2 variants."""
    means = [summary[(summary["experiment"] == name) & (summary["metric"] == metric)].set_index("variant")["mean"]
             for name in (first, second)]
    both = pd.concat(means, axis=1, join="inner").dropna()
    if len(both) < 2:
        return np.nan, np.nan, len(both)
    result = scipy_stats.kendalltau(both.iloc[:, 0], both.iloc[:, 1])
    return float(result.statistic), float(result.pvalue), len(both)


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
    """Every trial that did not finish (tuning trials included), never silently dropped; a tuning trial that the
    early-stopping scheduler stopped (status "stopped") ended as meant and is not among them.

    Columns: experiment, variant (canonical JSON, None if its trial record was unreadable), seed, status, error,
    search_phase, trial_dir, and rerun_finished: whether the same configuration (config_hash) finished in
    another trial, so the failure cost no result.
    """
    summary = table[table["row"] == "summary"]
    finished_hashes = set(summary.loc[summary["status"] == "finished", "config_hash"].dropna())
    failed = summary[~summary["status"].isin(("finished", "stopped"))]
    columns = ["experiment", "variant", "seed", "status", "error", "search_phase", "trial_dir"]
    return failed[columns].assign(rerun_finished=failed["config_hash"].isin(finished_hashes)).reset_index(drop=True)
