"""Statistics over seeds against small cases worked out by hand (derivations in the comments).

Student t quantiles used below: t(0.975, df=2) = 4.302653, t(0.975, df=3) = 3.182446. For df = 2 the t
distribution has the closed form CDF F(t) = 1/2 + t / (2 sqrt(2 + t^2)), so a two-sided p = 1 - |t| / sqrt(2 + t^2).
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
from analysis.stats import (NO_TEST_NOTE, describe, failed_trials, holm, paired_test,
                            significance_note, stars, summarize)
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
