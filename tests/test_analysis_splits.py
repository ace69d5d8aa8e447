"""The report of another split: `--split test` tables from each trial's test_result.json beside the val report, trials
not evaluated, and, where the test labels are withheld (MA-52), a server file per variant from its seeds' mean."""
from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pytest

from analysis.ensembles import EnsembleError
from analysis.report import build_report, main
from mmn.folders import RESULT, split_result_file
from tests.helpers.experiment_factory import REFERENCE, clip_names, fake_predictions, make_experiment

NO_MSM = {"model.msm": "off", "model.mtm": True}


def _test_top1(variant: Mapping[str, Any], seed: int) -> float:
    return {True: 70.0, False: 40.0}[variant["model.msm"] == "released"] + 5.0 * seed


def _labelled(variant: Mapping[str, Any], seed: int) -> dict[str, np.ndarray]:
    return fake_predictions(_test_top1(variant, seed), seed=100 + seed, split="test")


def test_test_split_tables_sit_beside_the_val_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    experiment = make_experiment(tmp_path, test=_labelled, predictions=True)
    val = build_report(experiment, formats=["md"])
    val_table = (val / "table.md").read_text()
    # One trial of the reference was never evaluated: it is left out, and the report says how to evaluate it.
    folders = sorted(path.parent for path in experiment.rglob(split_result_file("test")))
    (folders[0] / split_result_file("test")).unlink()
    out = build_report(experiment, formats=["md", "latex"], split="test")
    assert out == experiment / "report" / "test"
    assert (val / "table.md").read_text() == val_table  # the val report is untouched

    # Each cell is the mean over seeds of the metrics in the trials' test_result.json.
    records = [json.loads(path.read_text()) for path in experiment.rglob(split_result_file("test"))]
    no_msm_row = next(line for line in (out / "table.md").read_text().splitlines() if line.startswith("| off | ✓ |"))
    by_hash = {json.loads(path.read_text())["config_hash"]: path for path in experiment.rglob(RESULT)
               if "config_hash" in path.read_text()}
    no_msm = [record["metrics"]["test_top1"] for record in records
              if json.loads(by_hash[record["config_hash"]].read_text())["variant"] == NO_MSM]
    assert len(no_msm) == 3
    assert f"{np.mean(no_msm):.1f} ± {np.std(no_msm, ddof=1):.1f}" in no_msm_row
    reference = [record["metrics"]["test_top1"] for record in records
                 if json.loads(by_hash[record["config_hash"]].read_text())["variant"] == REFERENCE]
    reference_row = next(line for line in (out / "table.md").read_text().splitlines() if " † |" in line)
    assert len(reference) == 2  # the best row: its mean is bold
    assert f"**{np.mean(reference):.1f}** ± {np.std(reference, ddof=1):.1f}" in reference_row
    markdown = (out / "table.md").read_text()
    assert "Test metrics of each trial's best-validation weights" in markdown
    assert "Test metrics of each trial" in (out / "table.tex").read_text()

    printed = capsys.readouterr().out
    command = f"python -m ablations.evaluate {experiment} --split test"
    assert f"1 of 12 finished trials of msm_mtm were not evaluated on test and are left out: run {command}" in printed
    summary = (out / "summary.md").read_text()
    assert command in summary and f"seed 0: {folders[0].relative_to(experiment).as_posix()}" in summary


def test_nothing_evaluated_is_one_line_naming_the_command(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    experiment = make_experiment(tmp_path, seeds=(0,))
    assert main([str(experiment), "--split", "test"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert f"no trial of {experiment} was evaluated on test" in error
    assert f"run python -m ablations.evaluate {experiment} --split test" in error
    assert not (experiment / "report").exists()


def _withheld(variant: Mapping[str, Any], seed: int) -> dict[str, np.ndarray]:
    """Test logits with labels withheld, built so that the mean over seeds ranks the clips' classes differently
    from either seed: clip 0 scores class 5 at 3 and class 7 at 2 under seed 0, 0 and 3 under seed 1."""
    logits = np.zeros((3, 52), dtype=np.float32)
    logits[0, [5, 7]] = [3.0, 2.0] if seed == 0 else [0.0, 3.0]
    logits[1, 40] = 1.0 + seed  # every seed agrees on clip 1: action 40 first
    logits[2, 12 if variant == REFERENCE else 13] = 2.0
    return {"logits": logits, "labels": np.full(3, -1, dtype=np.int64), "names": clip_names(3, "test")}


def _read_submission(path: Path) -> list[dict[str, str]]:
    with zipfile.ZipFile(path) as archive:
        assert archive.namelist() == ["prediction.csv"]
        return list(csv.DictReader(io.StringIO(archive.read("prediction.csv").decode())))


def test_withheld_labels_give_a_server_file_per_variant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    experiment = make_experiment(tmp_path, seeds=(0, 1), test=_withheld)
    assert main([str(experiment), "--split", "test", "--format", "latex,md,png"]) == 0
    out = experiment / "report" / "test"
    zips = sorted(path.name for path in out.glob("*.zip"))
    assert zips == ["submission_msm-off_mtm-off.zip", "submission_msm-off_mtm-on.zip",
                    "submission_msm-released_mtm-off.zip", "submission_msm-released_mtm-on.zip"]
    rows = _read_submission(out / "submission_msm-released_mtm-on.zip")
    assert [row["vid"] for row in rows] == ["test0000.mp4", "test0001.mp4", "test0002.mp4"]
    # Mean of the seeds' logits on clip 0: class 5 at 1.5, class 7 at 2.5; then every other class at 0, lowest first.
    assert [rows[0][f"action_pred_{i}"] for i in range(1, 6)] == ["7", "5", "0", "1", "2"]
    assert rows[1]["action_pred_1"] == "40" and rows[2]["action_pred_1"] == "12"
    assert _read_submission(out / "submission_msm-off_mtm-on.zip")[2]["action_pred_1"] == "13"

    message = "test labels are withheld: upload these to the MA-52 evaluation server"
    assert message in capsys.readouterr().out and message in (out / "summary.md").read_text()
    # Without labels there is nothing to tabulate or plot, and the summary says so.
    assert not (out / "table.tex").exists() and not list(out.glob("*.png"))
    assert "No metrics: the test labels are withheld." in (out / "summary.md").read_text()


def test_seeds_of_other_clips_are_not_averaged(tmp_path: Path) -> None:
    experiment = make_experiment(tmp_path, seeds=(0, 1), test=_withheld)
    victim = next(path for path in experiment.rglob("test_predictions.npz"))
    arrays = dict(np.load(victim))
    arrays["names"] = np.array(["test0000", "test0001", "test0099"])
    np.savez(victim, **arrays)
    with pytest.raises(EnsembleError, match=r"first differ at row 2: 'test0002' vs 'test0099'|first differ at row 2: "
                                            r"'test0099' vs 'test0002'") as caught:
        build_report(experiment, formats=["md"], split="test", say=lambda line: None)
    assert "\n" not in str(caught.value)
