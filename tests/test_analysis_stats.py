"""Statistics over seeds against small cases worked out by hand (derivations in the comments).

Student t quantiles used below: t(0.975, df=2) = 4.302653, t(0.975, df=3) = 3.182446. For df = 2 the t
distribution has the closed form CDF F(t) = 1/2 + t / (2 sqrt(2 + t^2)), so a two-sided p = 1 - |t| / sqrt(2 + t^2),
and its quantiles solve t / sqrt(2 + t^2) = 2F - 1: t(0.95, 2) = sqrt(2 * 0.81 / 0.19) = 2.919986,
t(0.8, 2) = sqrt(2 * 0.36 / 0.64) = 1.060660.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.collect import collect, read_experiment
from analysis.columns import variant_key
from analysis.stats import (NO_TEST_NOTE, compare, decide, decide_all, describe, detectable_difference,
                            failed_trials, holm, paired_differences, paired_test, significance_note, stars,
                            summarize)
from mmn.folders import RESULT
from tests.helpers.experiment_factory import NEITHER, NO_MSM, NO_MTM, REFERENCE, hand_score, make_experiment


def test_describe_by_hand() -> None:
    # [1, 2, 3, 4]: mean 2.5; squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5, std = sqrt(5 / 3) = 1.290994;
    # ci95 = 3.182446 * 1.290994 / sqrt(4) = 3.182446 * 0.645497 = 2.054260
    result = describe([1, 2, 3, 4])
    assert result["n"] == 4
    assert result["mean"] == pytest.approx(2.5)
    assert result["std"] == pytest.approx(1.290994, abs=1e-6)
    assert result["ci95"] == pytest.approx(2.054260, abs=1e-6)


def test_describe_with_one_or_no_value() -> None:
    one = describe([61.2])
    assert one["n"] == 1 and one["mean"] == 61.2 and math.isnan(one["std"]) and math.isnan(one["ci95"])
    none = describe([float("nan")])
    assert none["n"] == 0 and math.isnan(none["mean"])


def test_paired_test_by_hand() -> None:
    # Differences 1, 2, 3: mean 2, std 1, t = 2 / (1 / sqrt 3) = 3.464102 on 2 df;
    # p = 1 - 3.464102 / sqrt(2 + 12) = 1 - 3.464102 / 3.741657 = 0.074180
    n, p = paired_test(pd.Series([2.0, 4.0, 6.0], index=[0, 1, 2]), pd.Series([1.0, 2.0, 3.0], index=[0, 1, 2]))
    assert n == 3
    assert p == pytest.approx(0.074180, abs=1e-6)


def test_paired_test_pairs_by_seed() -> None:
    # Seeds 5 and 3 have no partner; seeds 0-2 pair up in index order, not by position: same numbers as above.
    variant = pd.Series([99.0, 6.0, 2.0, 4.0], index=[5, 2, 0, 1])
    reference = pd.Series([3.0, 1.0, 2.0, 7.0], index=[2, 0, 1, 3])
    n, p = paired_test(variant, reference)
    assert n == 3
    assert p == pytest.approx(0.074180, abs=1e-6)


def test_paired_test_needs_three_seeds() -> None:
    n, p = paired_test(pd.Series([2.0, 4.0], index=[0, 1]), pd.Series([1.0, 2.0], index=[0, 1]))
    assert n == 2 and math.isnan(p)


def test_holm_by_hand() -> None:
    # m = 3 tested values (the NaN is not a test). Ascending: 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; 0.04 * 1 = 0.04,
    # raised to 0.06 so adjusted values never decrease. Back in input order: 0.03, 0.06, 0.06, NaN.
    adjusted = holm([0.01, 0.04, 0.03, float("nan")])
    np.testing.assert_allclose(adjusted[:3], [0.03, 0.06, 0.06])
    assert math.isnan(adjusted[3])
    # 0.5 * 2 = 1.0 (capped at 1), then 0.6 * 1 = 0.6 raised to 1.0.
    np.testing.assert_allclose(holm([0.6, 0.5]), [1.0, 1.0])
    assert holm([]).shape == (0,)


def test_stars() -> None:
    assert stars(0.009) == "**" and stars(0.01) == "*" and stars(0.049) == "*"
    assert stars(0.05) == "" and stars(float("nan")) == ""


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_experiment(tmp_path_factory.mktemp("stats"), score=hand_score, failed=[(NEITHER, 1)])


def _rows(experiment: Path, metric: str = "top1") -> pd.DataFrame:
    info = read_experiment(experiment)
    summary = summarize(collect(experiment), [info], [metric])
    return summary.set_index("variant")


def test_summarize_by_hand(experiment: Path) -> None:
    rows = _rows(experiment)
    assert list(rows.index) == [variant_key(v) for v in (REFERENCE, NO_MTM, NO_MSM, NEITHER)]  # reference first
    ref = rows.loc[variant_key(REFERENCE)]
    # 60, 61, 62: mean 61, std 1, ci95 = 4.302653 * 1 / sqrt(3) = 2.484138
    assert ref["is_reference"] and ref["n"] == 3
    assert (ref["mean"], ref["std"]) == pytest.approx((61.0, 1.0))
    assert ref["ci95"] == pytest.approx(2.484138, abs=1e-6)
    assert ref["params_m"] == pytest.approx(1.325186)

    # NO_MTM (58, 58.5, 60 against 60, 61, 62): differences -2, -2.5, -2, mean -2.1667; squared deviations
    #   0.027778 + 0.111111 + 0.027778 = 0.166667, std = sqrt(0.166667 / 2) = 0.288675;
    #   t = -2.1667 / (0.288675 / sqrt 3) = -13.0, p = 1 - 13 / sqrt(171) = 0.005865.
    # NO_MSM (59, 61, 61): differences -1, 0, -1, mean -0.6667, std 0.57735, t = -2.0, p = 1 - 2 / sqrt(6) = 0.183503.
    # Holm over these two: 0.005865 * 2 = 0.011730, then max(0.011730, 0.183503 * 1) = 0.183503.
    no_mtm, no_msm = rows.loc[variant_key(NO_MTM)], rows.loc[variant_key(NO_MSM)]
    assert no_mtm["diff"] == pytest.approx(-13 / 6)
    assert no_mtm["p"] == pytest.approx(0.005865, abs=1e-6)
    assert no_mtm["p_holm"] == pytest.approx(0.011730, abs=1e-6)
    assert stars(no_mtm["p_holm"]) == "*"  # "**" before the correction
    assert no_msm["p"] == pytest.approx(0.183503, abs=1e-6)
    assert no_msm["p_holm"] == pytest.approx(0.183503, abs=1e-6)

    # NEITHER: seed 1 failed, so seeds 0 and 2 only: mean 55.5, two paired seeds, no test.
    neither = rows.loc[variant_key(NEITHER)]
    assert neither["n"] == 2 and neither["mean"] == pytest.approx(55.5)
    assert neither["n_paired"] == 2 and math.isnan(neither["p"]) and math.isnan(neither["p_holm"])
    assert significance_note(rows.reset_index(), "msm_mtm") == NO_TEST_NOTE


def test_final_phase_uses_last_epoch_values(experiment: Path) -> None:
    info = read_experiment(experiment)
    summary = summarize(collect(experiment), [info], ["top1"], phase="final")
    # The factory's final values are the best minus 0.5.
    assert summary.loc[summary["is_reference"], "mean"].item() == pytest.approx(60.5)


def test_failed_trials_are_listed(experiment: Path) -> None:
    failed = failed_trials(collect(experiment))
    assert len(failed) == 1
    row = failed.iloc[0]
    assert row["variant"] == variant_key(NEITHER) and row["seed"] == 1
    assert row["status"] == "failed" and row["error"] == "CUDA out of memory" and not row["rerun_finished"]


def test_variant_without_finished_trials_stays(tmp_path: Path) -> None:
    experiment = make_experiment(tmp_path, failed=[(NEITHER, seed) for seed in (0, 1, 2)])
    rows = _rows(experiment)
    neither = rows.loc[variant_key(NEITHER)]
    assert neither["n"] == 0 and math.isnan(neither["mean"]) and math.isnan(neither["p"])
    assert len(failed_trials(collect(experiment))) == 3


def test_fewer_than_three_seeds_means_no_test(tmp_path: Path) -> None:
    experiment = make_experiment(tmp_path, seeds=(0, 1))
    rows = _rows(experiment).reset_index()
    assert rows["p"].isna().all() and rows["p_holm"].isna().all()
    assert significance_note(rows, "msm_mtm") == NO_TEST_NOTE


def test_tuning_trials_stay_out_and_reruns_are_recognised(tmp_path: Path) -> None:
    experiment = make_experiment(tmp_path, score=hand_score, failed=[(NEITHER, 1)])
    # A tuning trial of the reference with a far better score must not move its mean.
    result_path = next(experiment.rglob(RESULT))
    record = json.loads(result_path.read_text())
    record.update(seed=0, config_hash="tuning000000000", search={"study": "s", "optuna_trial": 3, "phase": "tune"})
    record["best"]["val_top1"] = 99.0
    (experiment / "trials" / "tune").mkdir()
    (experiment / "trials" / "tune" / RESULT).write_text(json.dumps(record))
    # The failed seed re-run, now finished, with the failed trial's config hash.
    failed_path = next(path for path in experiment.rglob(RESULT) if '"failed"' in path.read_text())
    rerun = json.loads(failed_path.read_text())
    rerun.update(status="finished", error=None, ended="2025-01-02T00:00:00+00:00")
    (experiment / "trials" / "rerun").mkdir()
    (experiment / "trials" / "rerun" / RESULT).write_text(json.dumps(rerun))

    rows = _rows(experiment)
    assert rows.loc[variant_key(REFERENCE), "mean"] == pytest.approx(61.0)
    assert rows.loc[variant_key(NEITHER), "n"] == 3
    assert failed_trials(collect(experiment))["rerun_finished"].tolist() == [True]


def test_missing_metrics_need_no_note(tmp_path: Path) -> None:
    # iMiGUE records no body metrics: their empty rows must not claim that seeds were missing.
    experiment = make_experiment(tmp_path, dataset="imigue")
    info = read_experiment(experiment)
    summary = summarize(collect(experiment), [info], ["top1", "body_top1"])
    assert (summary.loc[summary["metric"] == "body_top1", "n"] == 0).all()
    assert significance_note(summary, "msm_mtm") is None


# Paired comparisons and decisions


def test_paired_differences_pair_by_seed() -> None:
    differences = paired_differences(pd.Series([99.0, 6.0, 2.0, 4.0], index=[5, 2, 0, 1]),
                                     pd.Series([3.0, 1.0, 2.0, 7.0], index=[2, 0, 1, 3]))
    assert differences.to_dict() == {0: 1.0, 1: 2.0, 2: 3.0}


def test_comparison_that_must_end_significant() -> None:
    # NO_MTM of the hand experiment: differences -2, -2.5, -2 (derived in test_summarize_by_hand): mean -13/6,
    # std 0.288675, standard error 0.166667, t = -13, p = 0.005865.
    # 95% interval: -2.166667 -/+ 4.302653 * 0.166667 = -2.166667 -/+ 0.717109 = [-2.883776, -1.449558].
    # Detectable: (t(0.975, 2) + t(0.8, 2)) * 0.166667 = (4.302653 + 1.060660) * 0.166667 = 0.893886.
    comparison = compare([-2.0, -2.5, -2.0])
    assert comparison.n == 3 and comparison.mean == pytest.approx(-13 / 6)
    assert (comparison.low, comparison.high) == pytest.approx((-2.883776, -1.449558), abs=1e-6)
    assert comparison.p == pytest.approx(0.005865, abs=1e-6)
    assert comparison.detectable == pytest.approx(0.893886, abs=1e-6)
    # Alone it is significant; Holm with the undecided NO_MSM (p 0.183503) doubles it to 0.011730: still below 0.05.
    assert decide(comparison, 0.011730) == "worse"
    assert decide(comparison, 0.011730, higher_is_better=False) == "better"  # a loss that fell


def test_comparison_that_must_end_equivalent() -> None:
    # Differences 0.1, -0.1, 0: mean 0, std 0.1, standard error 0.1 / sqrt 3 = 0.057735.
    # Two one-sided tests against -/+0.5: t = 0.5 / 0.057735 = 8.660254 each way,
    # p = 1 - F(8.660254) = 1/2 - 8.660254 / (2 sqrt(2 + 75)) = 0.5 - 0.493464 = 0.006536, below 0.05.
    # (The same: the 90% interval 0 -/+ 2.919986 * 0.057735 = -/+ 0.168585 lies inside -/+ 0.5.)
    comparison = compare([0.1, -0.1, 0.0], margin=0.5)
    assert comparison.p_equivalent == pytest.approx(0.006536, abs=1e-6)
    assert comparison.p == pytest.approx(1.0)
    assert decide(comparison, comparison.p) == "equivalent"
    # Within -/+0.15 it is not: t = 0.15 / 0.057735 = 2.598076, p = 0.5 - 2.598076 / (2 * 2.958040) = 0.060845.
    narrow = compare([0.1, -0.1, 0.0], margin=0.15)
    assert narrow.p_equivalent == pytest.approx(0.060845, abs=1e-6)
    assert decide(narrow, narrow.p) == "undecided"


def test_too_few_seeds_get_no_mark() -> None:
    comparison = compare([-5.0, -5.1])
    assert comparison.n == 2 and math.isnan(comparison.p) and math.isnan(comparison.p_equivalent)
    assert decide(comparison, comparison.p) == ""
    assert detectable_difference(float("nan"), 1) != detectable_difference(float("nan"), 1)  # NaN


def test_decide_all_corrects_across_variants() -> None:
    # The hand experiment's two tested variants: Holm 0.005865 * 2 = 0.011730 (worse), 0.183503 (undecided:
    # 90% interval -0.666667 -/+ 2.919986 * 0.333333 = [-1.64, 0.31] is not inside -/+0.5).
    decided = decide_all({"no_mtm": [-2.0, -2.5, -2.0], "no_msm": [-1.0, 0.0, -1.0], "neither": [-5.0, -6.0]})
    assert decided["no_mtm"][1] == pytest.approx(0.011730, abs=1e-6) and decided["no_mtm"][2] == "worse"
    assert decided["no_msm"][1] == pytest.approx(0.183503, abs=1e-6) and decided["no_msm"][2] == "undecided"
    assert math.isnan(decided["neither"][1]) and decided["neither"][2] == ""


def test_wilcoxon_by_hand() -> None:
    # Differences 1..6, all positive: the signed-rank statistic takes its most extreme value, which 1 of the
    # 2^6 = 64 sign patterns reaches on each side: exact two-sided p = 2 / 64 = 0.03125.
    comparison = compare([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], test="wilcoxon")
    assert comparison.p == pytest.approx(0.03125)
    assert decide(comparison, comparison.p) == "better"
    # With 3 seeds the smallest possible p is 2 / 8 = 0.25: never significant.
    assert compare([1.0, 2.0, 3.0], test="wilcoxon").p == pytest.approx(0.25)


def test_bootstrap_interval() -> None:
    # Every resampled mean of 1, 2, 3 lies in [1, 3], none at or below 0: p = 0 and the interval within [1, 3].
    comparison = compare([1.0, 2.0, 3.0], test="bootstrap")
    assert 1.0 <= comparison.low < 2.0 < comparison.high <= 3.0
    assert comparison.p == 0.0 and decide(comparison, comparison.p) == "better"
    assert compare([1.0, 2.0, 3.0], test="bootstrap") == comparison  # a fixed seed: reports repeat
    assert decide(compare([0.1, -0.1, 0.0], test="bootstrap"), 1.0) == "equivalent"
    with pytest.raises(ValueError, match="valid tests: t, wilcoxon, bootstrap"):
        compare([1.0, 2.0, 3.0], test="z")


def test_summary_carries_deltas_and_decisions(experiment: Path) -> None:
    rows = _rows(experiment)
    no_mtm, no_msm = rows.loc[variant_key(NO_MTM)], rows.loc[variant_key(NO_MSM)]
    assert no_mtm["delta"] == pytest.approx(-13 / 6)
    assert (no_mtm["delta_low"], no_mtm["delta_high"]) == pytest.approx((-2.883776, -1.449558), abs=1e-6)
    assert no_mtm["decision"] == "worse" and no_msm["decision"] == "undecided"
    assert no_mtm["detectable"] == pytest.approx(0.893886, abs=1e-6)
    assert rows.loc[variant_key(NEITHER), "decision"] == "" and rows.loc[variant_key(REFERENCE), "decision"] == ""


EQUIVALENT = {json.dumps(REFERENCE, sort_keys=True): [60.0, 61.0, 62.0],
              json.dumps(NO_MTM, sort_keys=True): [60.1, 60.9, 62.0],  # differences 0.1, -0.1, 0
              json.dumps(NO_MSM, sort_keys=True): [57.0, 57.5, 59.0],  # -3, -3.5, -3
              json.dumps(NEITHER, sort_keys=True): [50.0, 40.0, 30.0]}  # -10, -21, -32: wide, undecided


def test_a_folder_that_ends_equivalent_and_significant(tmp_path: Path) -> None:
    folder = make_experiment(tmp_path, score=lambda variant, seed: EQUIVALENT[json.dumps(dict(variant),
                                                                                          sort_keys=True)][seed])
    rows = _rows(folder)
    assert rows.loc[variant_key(NO_MTM), "decision"] == "equivalent"
    assert rows.loc[variant_key(NO_MTM), "p_equivalent"] == pytest.approx(0.006536, abs=1e-6)
    assert rows.loc[variant_key(NO_MSM), "decision"] == "worse"
    assert rows.loc[variant_key(NEITHER), "decision"] == "undecided"
