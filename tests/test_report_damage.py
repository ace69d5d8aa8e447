"""The report on damaged experiment folders: every file it reads may be missing, cut short, newer or hand-edited.

Each damaged trial is listed in failed.md with the file and what is wrong, the report is built from the rest, and
a report is moved into place whole (never half old, half new). Folders come from the analysis tests' factory
(tests.helpers.experiment_factory) and, for the runner's own call, from real training runs (`mmn.train.fit`).
"""
from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest

from analysis import report as report_module
from analysis.report import NothingToReport, build_report, main
from analysis.tables import escape_markdown
from mmn.folders import BEST_PREDICTIONS, EXPERIMENT, HISTORY, RESULT, STUDY, split_result_file
from tests.helpers.experiment_factory import make_experiment


def _trials(experiment: Path) -> list[Path]:
    return sorted(path.parent for path in experiment.rglob(RESULT))


def _edit_record(edit: Callable[[dict], object]) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        record = json.loads((folder / RESULT).read_text())
        edited = edit(record)
        (folder / RESULT).write_text(json.dumps(record if edited is None else edited))
    return damage


def _cut(name: str) -> Callable[[Path], None]:
    def damage(folder: Path) -> None:
        data = (folder / name).read_bytes()
        (folder / name).write_bytes(data[:len(data) // 2])  # what an interrupted copy leaves
    return damage


def _no_metrics(record: dict) -> None:
    del record["best"], record["final"]


def _wrong_arrays(folder: Path) -> None:
    np.savez(folder / BEST_PREDICTIONS, logits=np.zeros(5), labels=np.zeros(3, dtype=int))


DAMAGES = {
    "record cut short": (_cut(RESULT), RESULT, "not valid JSON", True),
    "record a list": (_edit_record(lambda record: [record]), RESULT, "does not hold a JSON object", True),
    "seed as text": (_edit_record(lambda record: record.update(seed="one")), RESULT,
                     "wrong type or value for seed", True),
    "params beyond 64 bits": (_edit_record(lambda record: record.update(params=10 ** 30)), RESULT,
                              "wrong type or value for params", True),
    "metric NaN": (_edit_record(lambda record: record["best"].update(val_top1=math.nan)), RESULT,
                   "best.val_top1", True),
    "newer format": (_edit_record(lambda record: record.update(format_version=99)), RESULT,
                     "newer mmn-ablate (format 99", True),
    "finished without metrics": (_edit_record(_no_metrics), RESULT, "marked finished but holds no metrics", True),
    "history garbage": (lambda folder: (folder / HISTORY).write_text('[1, 2]\n{"epoch": "two"}\n{"epoch": 3, '),
                        HISTORY, "3 lines unreadable", False),
    "predictions cut short": (_cut(BEST_PREDICTIONS), BEST_PREDICTIONS, "cut short", False),
    "predictions of other arrays": (_wrong_arrays, BEST_PREDICTIONS, "does not hold (N, classes) logits", False),
}


@pytest.mark.parametrize("case", DAMAGES)
def test_a_damaged_trial_file_is_listed_and_the_report_is_built_from_the_rest(tmp_path: Path, case: str) -> None:
    damage, name, problem, left_out = DAMAGES[case]
    experiment = make_experiment(tmp_path, seeds=(0, 1), predictions=True)
    victim = _trials(experiment)[0]
    damage(victim)
    told: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # collect's warning about unreadable records and lines
        out = build_report([str(experiment)], formats=["md"], say=told.append)
    trial_dir = victim.relative_to(experiment).as_posix()
    failed = (out / "failed.md").read_text()
    line = next(line for line in failed.splitlines()
                if escape_markdown(trial_dir) in line and f"| {escape_markdown(name)} |" in line)
    assert escape_markdown(problem) in line and line.rstrip(" |").endswith("yes" if left_out else "no")
    assert "1 damaged trial file (see failed.md)" in "\n".join(told)
    table = pd.read_csv(out / "results.csv")
    summary = table[(table["row"] == "summary") & (table["trial_dir"] == trial_dir)]
    assert (summary["status"].iloc[0] != "finished") == left_out
    assert (table["row"] == "summary").sum() == 8  # every trial is still in the CSV
    assert (out / "table.md").read_text().count("\n| ") >= 4  # the header and every variant
    if name == BEST_PREDICTIONS:  # the trial counts, its predictions do not
        assert not summary["has_predictions"].iloc[0]


def test_plots_skip_damaged_predictions_history_and_journal(tmp_path: Path) -> None:
    experiment = make_experiment(tmp_path, seeds=(0,), predictions=True, study_trials=6)
    trials = _trials(experiment)
    for folder in trials:  # the confusion matrix falls to the one trial whose predictions still load
        if folder != trials[-1]:
            _cut(BEST_PREDICTIONS)(folder)
    (trials[0] / HISTORY).write_text('{"epoch": 1, "val_top1": NaN}\n')
    lines = (experiment / STUDY).read_bytes().split(b"\n")
    lines[3] = b'{"op_code": "seven"'  # a hand-edited line (Optuna skips a torn last one itself)
    (experiment / STUDY).write_bytes(b"\n".join(lines))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = build_report([str(experiment)], formats=["md", "png"], say=lambda line: None)
    summary = (out / "summary.md").read_text()
    assert "| confusion_action.png |" in summary and "| learning_curves.png |" in summary
    assert f"param_importance (msm_mtm) not drawn: {STUDY} is cut short or hand-edited" in summary
    assert f"| {escape_markdown(BEST_PREDICTIONS)} |" in (out / "failed.md").read_text()


def test_a_damaged_test_evaluation_is_listed_and_the_trial_left_out_of_the_split(tmp_path: Path) -> None:
    from tests.helpers.experiment_factory import fake_predictions

    experiment = make_experiment(tmp_path, seeds=(0, 1),
                                 test=lambda variant, seed: fake_predictions(50.0, seed=seed, split="test"))
    victim = _trials(experiment)[0]
    (victim / split_result_file("test")).write_text('{"format_version": 1, "config_hash": ')
    out = build_report([str(experiment)], formats=["md"], split="test", say=lambda line: None)
    failed = (out / "failed.md").read_text()
    line = next(line for line in failed.splitlines() if escape_markdown(split_result_file("test")) in line)
    assert "not valid JSON" in line and line.endswith("| yes |")
    assert victim.relative_to(experiment).as_posix() in (out / "summary.md").read_text()  # not evaluated: listed


def test_a_factor_listing_a_value_twice_counts_each_configuration_once(tmp_path: Path) -> None:
    """The same configuration trained twice: table, plots and CSV use the newest finished run; the caption says
    how many were set aside."""
    experiment = make_experiment(tmp_path, seeds=(0, 1), factors={"model.msm": ["released", "off", "off"],
                                                                  "model.mtm": [True]},
                                 reference={"model.msm": "released", "model.mtm": True})
    out = build_report([str(experiment)], formats=["md", "png"], say=lambda line: None)
    table = (out / "table.md").read_text()
    assert "2 older finished runs of a configuration that ran twice set aside: the newest counts" in table
    rows = [line for line in table.splitlines() if line.startswith("| off |")]
    assert len(rows) == 1
    collected = pd.read_csv(out / "results.csv")
    summaries = collected[collected["row"] == "summary"]
    assert len(summaries) == 6 and summaries["set_aside"].sum() == 2
    kept = summaries[~summaries["set_aside"]]
    assert not kept.duplicated(["config_hash"]).any()
    assert (out / "bars.png").exists()


def test_nothing_usable_is_one_line_exit_1_and_the_previous_report_stays(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    experiment = make_experiment(tmp_path, seeds=(0,))
    assert main([str(experiment), "--format", "md"]) == 0
    before = {path.name: path.read_bytes() for path in (experiment / "report").iterdir()}
    capsys.readouterr()
    for folder in _trials(experiment):
        _edit_record(_no_metrics)(folder)
    assert main([str(experiment), "--format", "md"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and error.startswith("error: nothing to report: no finished trial is readable")
    assert "marked finished but holds no metrics" in error
    assert {path.name: path.read_bytes() for path in (experiment / "report").iterdir()} == before
    with pytest.raises(NothingToReport):
        build_report([str(experiment)], formats=["md"])


def test_a_hand_edited_experiment_json_is_one_line_exit_2(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    experiment = make_experiment(tmp_path, seeds=(0,))
    meta = json.loads((experiment / EXPERIMENT).read_text())
    meta["factors"] = {"model.msm": "released"}  # a string where a list belongs
    (experiment / EXPERIMENT).write_text(json.dumps(meta))
    assert main([str(experiment)]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"{EXPERIMENT} is damaged" in error
    assert not (experiment / "report").exists()


def test_a_failure_midway_leaves_the_previous_report_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    experiment = make_experiment(tmp_path, seeds=(0,))
    build_report([str(experiment)], formats=["md"], say=lambda line: None)
    before = {path.name: path.read_bytes() for path in (experiment / "report").iterdir()}

    def broken(*args: object, **kwargs: object) -> str:
        raise RuntimeError("disk full")

    monkeypatch.setattr(report_module, "markdown_table", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        build_report([str(experiment)], formats=["md"], say=lambda line: None)
    assert {path.name: path.read_bytes() for path in (experiment / "report").iterdir()} == before
    assert sorted(path.name for path in experiment.iterdir() if path.name.startswith(".")) == []


def test_a_new_report_replaces_the_old_files_and_keeps_what_is_not_its_own(tmp_path: Path) -> None:
    from tests.helpers.experiment_factory import NEITHER

    experiment = make_experiment(tmp_path, seeds=(0,), failed=[(NEITHER, 0)])
    out = build_report([str(experiment)], formats=["md"], say=lambda line: None)
    assert (out / "failed.md").exists()
    (out / "test").mkdir()
    (out / "test" / "summary.md").write_text("the test report\n")
    (out / "notes.txt").write_text("mine\n")
    failed = next(folder for folder in _trials(experiment)
                  if json.loads((folder / RESULT).read_text())["status"] == "failed")
    shutil.rmtree(failed)
    build_report([str(experiment)], formats=["md"], say=lambda line: None)
    assert not (out / "failed.md").exists()  # no longer true
    assert (out / "test" / "summary.md").read_text() == "the test report\n"
    assert (out / "notes.txt").read_text() == "mine\n"
    assert not [path for path in experiment.iterdir() if path.name.startswith(".")]


# --- real trial folders, as ablations.run hands them to build_report ------------------------------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An experiment of real trials (mmn.train.fit): drop path 0.0 once and 0.1 twice, as a spec whose factor
    lists 0.1 twice trains it."""
    from mmn.config import apply_overrides
    from mmn.train import fit
    from tests.helpers.experiment_factory import write_experiment_json
    from tests.test_evaluate import _config

    folder = tmp_path_factory.mktemp("trained") / "drop_path"
    factors = {"model.drop_path": [0.0, 0.1, 0.1]}
    write_experiment_json(folder, name="drop_path", factors=factors, factor_labels={"model.drop_path": "Drop path"},
                          reference={"model.drop_path": 0.0}, seeds=(1,), variants=[{"model.drop_path": value}
                                                                                    for value in factors[
                                                                                        "model.drop_path"]])
    for index, value in enumerate(factors["model.drop_path"]):
        variant = {"model.drop_path": value}
        fit(apply_overrides(_config(1), variant), checkpoint_dir=folder / "trials" / f"trial_{index}",
            progress=False, extra={"experiment": "drop_path", "variant": variant, "trial_id": f"t{index}"})
    return folder


@pytest.mark.slow
def test_build_report_on_damaged_real_trials_as_the_runner_calls_it(trained: Path, tmp_path: Path) -> None:
    experiment = Path(shutil.copytree(trained, tmp_path / "drop_path"))
    _cut(BEST_PREDICTIONS)(experiment / "trials" / "trial_0")
    (experiment / "trials" / "trial_1" / HISTORY).write_text("{\"epoch\": 1, \"val_top1\"")
    with pytest.warns(UserWarning, match=f"unreadable lines in 1 {HISTORY}"):
        out = build_report([str(experiment)], say=lambda line: None)  # as ablations.run's _report: the defaults
    failed = (out / "failed.md").read_text()
    assert "trials/trial\\_0" in failed and escape_markdown(BEST_PREDICTIONS) in failed
    table = (out / "table.md").read_text()
    assert "1 older finished run of a configuration that ran twice set aside" in table
    collected = pd.read_csv(out / "results.csv")
    assert collected.loc[collected["row"] == "summary", "set_aside"].sum() == 1
    assert (out / "table.tex").exists() and (out / "bars.png").exists()

    # The newer run of the duplicate loses its metrics: the older one counts instead, and nothing is set aside.
    _edit_record(_no_metrics)(experiment / "trials" / "trial_2")
    with pytest.warns(UserWarning, match=f"unreadable lines in 1 {HISTORY}"):
        out = build_report([str(experiment)], formats=["md"], say=lambda line: None)
    assert "set aside" not in (out / "table.md").read_text()
    assert "marked finished but holds no metrics" in (out / "failed.md").read_text()
