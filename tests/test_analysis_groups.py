"""Tables never mix settings: a folder holding a rerun with other options is reported from its newest setting (or
--group N), and says so; what a variant, a rule, a search or the machine sets never splits a setting."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import pytest

from analysis.collect import collect, read_experiment
from analysis.groups import settings
from analysis.report import build_report, main
from mmn.folders import RESULT
from tests.helpers.experiment_factory import make_experiment


def _old(variant: Mapping[str, Any], seed: int) -> float:
    return 40.0 + seed


def _new(variant: Mapping[str, Any], seed: int) -> float:
    return 70.0 + 2 * seed


def _reference_row(report: Path) -> str:
    return next(line for line in (report / "table.md").read_text().splitlines() if " † |" in line)


def test_a_rerun_with_other_epochs_is_reported_alone(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_experiment(tmp_path, score=_old, epochs=3)
    experiment = make_experiment(tmp_path, score=_new, epochs=5, seeds=(0, 1), run=1)  # a day later, --epochs 5
    assert main([str(experiment), "--format", "md,png", "--metrics", "top1"]) == 0
    report = experiment / "report"
    # Only the newest setting: 70 and 72 over seeds 0 and 1, never the 3-epoch 40-42.
    assert "| released † | ✓ | **71.0** ± 1.4 |" in _reference_row(report)
    message = (f"{experiment} holds trials of 2 settings; the tables and plots of msm_mtm use only the newest "
               f"(8 trials); compared with it, setting 2 (12 trials) differs in train.epochs: 5 → 3 "
               f"(choose one with --group N)")
    printed = capsys.readouterr().out
    assert message in printed and printed.count("holds trials of") == 1
    assert message in (report / "summary.md").read_text()
    collected = collect(experiment)
    assert (collected["row"] == "summary").sum() == 20  # the files hold both; the table does not

    assert main([str(experiment), "--format", "md", "--metrics", "top1", "--group", "2"]) == 0
    assert "| released † | ✓ | **41.0** ± 1.0 |" in _reference_row(report)
    assert "the tables and plots of msm_mtm use only setting 2 (12 trials); compared with it, setting 1 (8 trials) " \
           "differs in train.epochs: 3 → 5" in capsys.readouterr().out

    assert main([str(experiment), "--group", "3"]) == 2
    assert capsys.readouterr().err == (f"error: {experiment} holds trials of 2 settings; --group 3 does not exist "
                                       f"(1 is the newest)\n")


def test_where_a_run_executed_never_splits_a_setting(tmp_path: Path) -> None:
    make_experiment(tmp_path, score=_old, seeds=(0, 1), overrides={"train.threads": 1, "train.device": "cpu"})
    experiment = make_experiment(tmp_path, score=_old, seeds=(2,), run=1,
                                 overrides={"train.threads": 8, "train.device": "cuda", "train.eval_batch_size": 64})
    lines: list[str] = []
    report = build_report(experiment, metrics=["top1"], formats=["md"], say=lines.append)
    assert lines == []
    assert "| released † | ✓ | **41.0** ± 1.0 |" in _reference_row(report)  # seeds 0, 1 and 2: 40, 41, 42


def test_rules_and_tuned_values_belong_to_the_variant(tmp_path: Path) -> None:
    # A rule sets model.drop_path for one MTM value; a search tuned train.lr per variant before its final runs.
    experiment = make_experiment(tmp_path, rules=[{"when": {"model.mtm": False}, "set": {"model.drop_path": 0.0}}])
    ours = [path for path in sorted(experiment.rglob(RESULT)) if "config_hash" in path.read_text()]
    for number, path in enumerate(ours):
        record = json.loads(path.read_text())
        record["config"]["train"]["lr"] = 0.001 * (1 + number % 4)
        record["search"] = {"phase": "final", "sampled": {"train.lr": record["config"]["train"]["lr"]}}
        path.write_text(json.dumps(record))
    info = read_experiment(experiment)
    assert info.rule_keys == ("model.drop_path",)
    found = settings(collect(experiment), info)
    assert len(found) == 1 and len(found[0].trial_dirs) == 12


def test_a_caption_says_when_results_of_older_code_were_reused(tmp_path: Path) -> None:
    experiment = make_experiment(tmp_path, kept_stale=3)
    report = build_report(experiment, metrics=["top1"], formats=["md", "latex"], say=lambda line: None)
    assert "3 results of older code were reused." in (report / "table.md").read_text()
    assert "3 results of older code were reused." in (report / "table.tex").read_text()
    fresh = make_experiment(tmp_path / "fresh", kept_stale=0)
    assert "older code" not in (build_report(fresh, formats=["md"], say=lambda line: None) / "table.md").read_text()
