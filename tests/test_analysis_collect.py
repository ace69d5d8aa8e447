"""collect(): a fake experiment folder (Ray-like nesting, Ray's own result.json beside our records) into the tidy
table; folders of older versions (our record named result.json); format and corruption handling; saving; the study
and prediction readers."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.collect import (ExperimentError, collect, load_predictions, load_studies, read_experiment,
                              save_table)
from mmn.folders import LEGACY_RESULT, RESULT
from tests.helpers.experiment_factory import (REFERENCE, default_score, make_experiment, result_record,
                                              write_experiment_json, write_trial)

EPOCHS = 4


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_experiment(tmp_path_factory.mktemp("collect"), epochs=EPOCHS, predictions=True, study_trials=3,
                           failed=[({"model.msm": "off", "model.mtm": False}, 1)])


@pytest.fixture(scope="module")
def table(experiment: Path) -> pd.DataFrame:
    return collect(experiment)


def test_one_summary_row_per_trial_and_one_row_per_epoch(table: pd.DataFrame) -> None:
    summary = table[table["row"] == "summary"]
    epochs = table[table["row"] == "epoch"]
    # 4 variants x 3 seeds, found at two depths; Ray's own JSON-lines result.json (beside each of our records, and
    # alone in a folder) is not a trial.
    assert len(summary) == 12
    assert summary["epoch"].isna().all()
    # Finished trials log EPOCHS epochs; the failed one stopped after EPOCHS // 2.
    assert len(epochs) == 11 * EPOCHS + EPOCHS // 2
    assert epochs["epoch"].notna().all()
    assert (epochs.groupby("trial_dir")["epoch"].max() <= EPOCHS).all()


def test_columns_of_the_contract(table: pd.DataFrame) -> None:
    for column in ["experiment", "trial_id", "trial_dir", "config_hash", "variant", "model.msm", "model.mtm", "seed",
                   "status", "error", "params", "gflops", "throughput_train_clips_per_s",
                   "throughput_eval_clips_per_s", "final_val_top1", "best_val_top1", "best_val_body_top1",
                   "best_epoch", "search_phase", "row", "epoch", "train_loss", "lr", "val_top1", "time_s"]:
        assert column in table.columns, column


def test_values_round_trip(table: pd.DataFrame) -> None:
    summary = table[table["row"] == "summary"].set_index(["model.msm", "model.mtm", "seed"]).sort_index()
    row = summary.loc[("released", True, 1)]
    assert row["best_val_top1"] == pytest.approx(default_score(REFERENCE, 1))
    assert row["final_val_top1"] == pytest.approx(default_score(REFERENCE, 1) - 0.5)
    assert row["status"] == "finished" and row["params"] == 1_325_186 and row["experiment"] == "msm_mtm"
    assert row["variant"] == json.dumps(REFERENCE, sort_keys=True)
    failed = summary.loc[("off", False, 1)]
    assert failed["status"] == "failed" and failed["error"] == "CUDA out of memory"
    # Epoch rows carry the trial's identity, so curves can be grouped by variant and seed directly.
    epochs = table[(table["row"] == "epoch") & (table["trial_id"] == row["trial_id"])]
    assert epochs["seed"].tolist() == [1] * EPOCHS and epochs["model.msm"].eq("released").all()
    assert epochs["val_top1"].iloc[-1] == pytest.approx(row["best_val_top1"])


def test_file_uri_reads_the_same(experiment: Path, table: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(collect(experiment.as_uri()), table)


def test_experiment_info(experiment: Path) -> None:
    info = read_experiment(experiment)
    assert info.name == "msm_mtm" and info.factor_labels == {"model.msm": "MSM", "model.mtm": "MTM"}
    assert info.variants()[0] == REFERENCE and len(info.variants()) == 4


def test_newer_format_is_refused(tmp_path: Path) -> None:
    write_experiment_json(tmp_path, format_version=2)
    with pytest.raises(ExperimentError, match=r"experiment.json was written by a newer mmn-ablate \(format 2, this one "
                                              r"reads 1\); upgrade mmn-ablate$"):
        collect(tmp_path)


def test_missing_experiment_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ExperimentError, match="experiment.json not found"):
        collect(tmp_path / "nothing")


@pytest.mark.parametrize("legacy", [False, True], ids=["record", "old folder"])
@pytest.mark.parametrize("history", [[{"epoch": 1, "val_top1": 3.0}], None], ids=["with history", "alone"])
def test_corrupt_result_is_a_failed_trial(tmp_path: Path, history: list | None, legacy: bool) -> None:
    experiment = make_experiment(tmp_path, seeds=(0,), legacy=legacy)
    name = LEGACY_RESULT if legacy else RESULT
    broken = write_trial(experiment, "trials/cut_short", '{"format_version": 1, "status": "fini',
                         history=history, legacy=legacy) / name
    with pytest.warns(UserWarning, match=f"1 unreadable trial records.*{broken}"):
        table = collect(experiment)
    row = table[(table["row"] == "summary") & (table["trial_dir"] == "trials/cut_short")].iloc[0]
    assert row["status"] == "failed" and row["error"] == f"unreadable {name}"
    assert (table["row"] == "summary").sum() == 5


def test_old_folders_read_as_new_ones(tmp_path: Path, table: pd.DataFrame) -> None:
    """Folders written before our record had its own name (it was result.json, in Ray's place) give the same
    table; an experiment with runs of both kinds gives every trial once."""
    old = make_experiment(tmp_path / "old", epochs=EPOCHS, predictions=True,
                          failed=[({"model.msm": "off", "model.mtm": False}, 1)], legacy=True)
    assert not list(old.rglob(RESULT))
    pd.testing.assert_frame_equal(collect(old), table)
    make_experiment(tmp_path / "old", epochs=EPOCHS, run=1, seeds=(3,))  # a rerun after the upgrade
    summary = collect(old).query("row == 'summary'")
    assert len(summary) == 12 + 4 and sorted(summary["seed"].unique()) == [0, 1, 2, 3]


def test_a_record_beside_rays_result_json_is_the_only_one_read(tmp_path: Path) -> None:
    """In a folder with our record, result.json is Ray's, even when it parses as one JSON object (one report) that
    looks like a record; alone in a folder, a result.json that is ours (an old folder) is read."""
    experiment = make_experiment(tmp_path, seeds=(0,))
    ours = result_record("msm_mtm", REFERENCE, 7, 50.0)
    folder = write_trial(experiment, "trials/new", ours)
    (folder / LEGACY_RESULT).write_text(json.dumps({**ours, "seed": 8}) + "\n")
    write_trial(experiment, "trials/old", {**ours, "seed": 9}, legacy=True)
    summary = collect(experiment).query("row == 'summary'")
    assert sorted(summary["seed"].tolist()) == [0, 0, 0, 0, 7, 9]


def test_cut_short_history_keeps_its_complete_lines(tmp_path: Path) -> None:
    experiment = make_experiment(tmp_path, seeds=(0,), epochs=3)
    history = next(experiment.rglob("history.jsonl"))
    history.write_text(history.read_text() + '{"epoch": 4, "val_to')
    with pytest.warns(UserWarning, match="unreadable lines in 1 history.jsonl"):
        table = collect(experiment)
    assert (table["row"] == "epoch").sum() == 4 * 3


def test_save_table_writes_parquet_and_csv(table: pd.DataFrame, tmp_path: Path) -> None:
    paths = save_table(table, tmp_path / "out")
    assert sorted(path.name for path in paths) == ["results.csv", "results.parquet"]
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["results.csv", "results.parquet"]
    back = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert len(back) == len(table) and back["best_val_top1"].sum() == pytest.approx(table["best_val_top1"].sum())
    assert len(pd.read_csv(tmp_path / "out" / "results.csv")) == len(table)


def test_save_table_stores_a_factor_of_mixed_types(tmp_path: Path) -> None:
    mixed = pd.DataFrame({"model.msm": ["released", False, None], "seed": [0, 1, 2]})
    save_table(mixed, tmp_path)
    assert pd.read_parquet(tmp_path / "results.parquet")["model.msm"].tolist()[:2] == ["released", "False"]


def test_studies_and_predictions(experiment: Path, table: pd.DataFrame) -> None:
    studies = load_studies(experiment)
    assert [study.study_name for study in studies] == ["msm_mtm/reference"]
    assert len(studies[0].trials) == 3
    trial = table[(table["row"] == "summary") & table["has_predictions"].fillna(False).astype(bool)].iloc[0]
    logits, labels, names, where = load_predictions(experiment, trial["trial_dir"])
    assert logits.shape == (104, 52) and logits.dtype == np.float32 and labels.shape == (104,)
    assert names.tolist()[:2] == ["val0000", "val0001"] and where == f"{trial['trial_dir']}/best_val_predictions.npz"
    failed = table[(table["row"] == "summary") & (table["status"] == "failed")].iloc[0]
    assert load_predictions(experiment, failed["trial_dir"]) is None
    assert load_studies(experiment / "trials") == []
