"""The report: `python -m analysis.report` as a user runs it, and build_report as the runner calls it."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from analysis.report import ReportError, build_report, main
from mmn.folders import EXPERIMENT, RESULT
from tests.helpers.experiment_factory import NEITHER, default_score, hand_score, make_experiment

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "analysis.report", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_a_variant_whose_every_trial_failed_before_training_gets_dashes(tmp_path: Path) -> None:
    """A trial that fails before its model exists (bad data, no GPU) records no params or GFLOPs: the variant's
    costs are then missing (pandas' NA, not NaN), and the table shows a dash instead of crashing."""
    import json

    from mmn.folders import RESULT

    experiment = make_experiment(tmp_path, seeds=(1, 2), failed=[(NEITHER, 1), (NEITHER, 2)])
    for path in experiment.rglob(RESULT):
        record = json.loads(path.read_text())
        if record["status"] == "failed":
            path.write_text(json.dumps({k: v for k, v in record.items() if k not in ("params", "gflops")}))
    build_report([str(experiment)], formats=["latex", "md"])
    rows = [line for line in (experiment / "report" / "table.md").read_text().splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + 4 and rows[-1].endswith("| — | — |")  # the header and 4 variants; NEITHER is last


@pytest.mark.slow
def test_cli_writes_the_report(tmp_path: Path) -> None:
    experiment = make_experiment(tmp_path, failed=[(NEITHER, 1)], study_trials=6)
    result = _run(str(experiment), "--metrics", "top1,body_top1", "--format", "latex,md,png")
    assert result.returncode == 0, result.stderr
    report = experiment / "report"
    names = {path.name for path in report.iterdir()}
    assert {"table.tex", "table.md", "failed.md", "summary.md", "results.parquet", "results.csv", "bars.png",
            "learning_curves.png", "cost_accuracy.png", "param_importance.png"} <= names
    assert not any(name.endswith(".pdf") for name in names)
    summary = (report / "summary.md").read_text()
    for name in names - {"summary.md"}:
        assert f"| {name} |" in summary, name
    # The fake runs saved no predictions: the confusion matrices are reported as not drawn, with the reason.
    assert "confusion (msm_mtm) not drawn: no finished trial saved best_val_predictions.npz" in summary
    assert "Body Top-1" in (report / "table.md").read_text()


@pytest.mark.slow
def test_cli_rejects_a_missing_run_with_one_line(tmp_path: Path) -> None:
    result = _run(str(tmp_path / "no_such_run"))
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "no experiment at" in result.stderr and "experiment.json not found" in result.stderr


def test_unknown_metric_lists_the_valid_ones(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    experiment = make_experiment(tmp_path, seeds=(0,))
    assert main([str(experiment), "--metrics", "top1,top7"]) == 2
    error = capsys.readouterr().err
    assert "unknown metric 'top7'" in error and "top1, top5, body_top1" in error
    assert main([str(experiment), "--format", "latex,docx"]) == 2
    assert "valid formats: latex, md, png, pdf" in capsys.readouterr().err
    assert not (experiment / "report").exists()


def test_build_report_combines_runs_into_one_table(tmp_path: Path) -> None:
    first = make_experiment(tmp_path, seeds=(0, 1, 2))
    second = make_experiment(tmp_path, name="imigue_drop_path", dataset="imigue",
                             factors={"model.drop_path": [0.1, 0.0]}, factor_labels={"model.drop_path": "Drop path"},
                             reference={"model.drop_path": 0.1})
    out = build_report([first, second], formats=["latex", "md"], out_dir=tmp_path / "combined")
    assert out == tmp_path / "combined"
    markdown = (out / "table.md").read_text()
    assert "| **msm\\_mtm** |" in markdown and "| **imigue\\_drop\\_path** |" in markdown
    # Default metrics are the paper's that the runs recorded: MA-52's body metrics exist in the first run.
    assert "Body Top-1 (%)" in markdown and "F1 mean (%)" in markdown
    assert not (out / "failed.md").exists()
    with pytest.raises(ReportError, match="share an experiment name"):
        build_report([first, first], formats=["md"], out_dir=tmp_path / "twice")
    with pytest.raises(ReportError, match="--out"):
        build_report("s3://bucket/runs/msm_mtm", formats=["md"])  # refused before anything is read


def test_analysis_never_imports_ray() -> None:
    # docs/design.md: an experiment folder copied to a laptop is enough; results are read from files, never via Ray.
    for module in (ROOT / "analysis").glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(name == "ray" or name.startswith("ray.") for name in names), module


def test_report_compares_with_the_chosen_test_and_draws_the_paired_differences(tmp_path: Path,
                                                                               capsys: pytest.CaptureFixture) -> None:
    experiment = make_experiment(tmp_path, score=hand_score, failed=[(NEITHER, 1)])
    assert main([str(experiment), "--metrics", "top1", "--format", "md,png", "--test", "wilcoxon",
                 "--margin", "2", "--no-delta"]) == 0
    report = experiment / "report"
    markdown = (report / "table.md").read_text()
    assert "Δ" not in markdown.split("\n\n")[1]  # the table itself has no Δ column
    # Wilcoxon with 3 seeds: p 0.25 at best, so NO_MTM (-2, -2.5, -2) is not significant; with a margin of 2 it is
    # not equivalent either (every difference lies beyond -2): undecided. NO_MSM (-1, 0, -1): zeros are dropped,
    # two differences of -1 are within -/+2 but one-sided signed-rank tests of 2 values reach p 0.25 only.
    assert "Wilcoxon signed-rank test" in markdown and "| worse |" not in markdown
    assert (report / "paired_differences.png").stat().st_size > 1024
    assert "| paired_differences.png |" in (report / "summary.md").read_text()
    with pytest.raises(SystemExit) as exit_status:
        main([str(experiment), "--margin", "-1"])
    assert exit_status.value.code == 2
    assert "expected a positive number" in capsys.readouterr().err


def test_an_experiment_that_optimised_the_training_loss_gets_its_paired_differences(tmp_path: Path) -> None:
    """The figure compares on the experiment's own metric, which the tables' metrics (top1, ... by default) leave
    out here: it is summarised all the same."""
    experiment = make_experiment(tmp_path, score=hand_score)
    meta = json.loads((experiment / EXPERIMENT).read_text())
    meta.update(metric="train_loss", mode="min")
    (experiment / EXPERIMENT).write_text(json.dumps(meta))
    assert main([str(experiment), "--format", "md,png"]) == 0
    assert (experiment / "report" / "paired_differences.png").stat().st_size > 1024


def test_the_summary_counts_a_resumed_trial_once(tmp_path: Path) -> None:
    """A trial interrupted in one run and resumed (finished) in the next leaves its first folder's record saying
    running: the summary counts the configuration as finished, and says the earlier run is not counted."""
    experiment = make_experiment(tmp_path)
    finished = next(experiment.rglob(RESULT))
    interrupted = experiment / "trials" / "msm_mtm_2024-12-31_00-00-00" / finished.parent.name
    interrupted.mkdir(parents=True)
    record = json.loads(finished.read_text())
    record.update(status="running", started="2024-12-31T00:00:00+00:00", ended=None)
    (interrupted / RESULT).write_text(json.dumps(record))
    assert main([str(experiment), "--format", "md"]) == 0
    summary = (experiment / "report" / "summary.md").read_text()
    assert "trials: 12 finished (1 earlier runs of them, interrupted or run again, not counted)." in summary


def test_two_budgets_of_one_experiment_get_their_rank_agreement(tmp_path: Path) -> None:
    quick = make_experiment(tmp_path, name="msm_mtm_quick")
    paper = make_experiment(tmp_path, name="msm_mtm_paper", score=lambda variant, seed: default_score(variant, seed)
                            + 10)
    record = json.loads((paper / EXPERIMENT).read_text())
    (paper / EXPERIMENT).write_text(json.dumps({**record, "budget": "paper"}))
    lines: list[str] = []
    out = build_report([quick, paper], formats=["md"], out_dir=tmp_path / "both", say=lines.append)
    # The same order under both budgets: 4 variants, all 6 pairs concordant, tau = 1; of the 4! = 24 orders only
    # this one reaches it, so the exact two-sided p = 2 / 24 = 0.0833.
    expected = ("msm_mtm_quick (quick) and msm_mtm_paper (paper) rank their 4 variants by Top-1 with Kendall's "
                "tau = 1.00 (p = 0.0833): no agreement beyond chance")
    assert expected in lines
    assert expected in (out / "summary.md").read_text()


def test_the_margin_defaults_to_the_one_the_experiment_ran_with(tmp_path: Path) -> None:
    experiment = make_experiment(tmp_path, score=hand_score, failed=[(NEITHER, 1)])
    build_report(experiment, metrics=["top1"], formats=["md"])
    table = (experiment / "report" / "table.md").read_text()
    # NO_MSM (-1, 0, -1): its 90% interval [-1.64, 0.31] (test_analysis_stats) is not inside -/+0.5, the default
    assert "| undecided |" in [line for line in table.splitlines() if line.startswith("| off | ✓ |")][0]
    record = json.loads((experiment / EXPERIMENT).read_text())
    record["spec"]["until"] = {"min": 3, "max": 10, "until": "decided", "margin": 2.0}
    (experiment / EXPERIMENT).write_text(json.dumps(record))
    build_report(experiment, metrics=["top1"], formats=["md"])
    table = (experiment / "report" / "table.md").read_text()
    assert "| equivalent |" in [line for line in table.splitlines() if line.startswith("| off | ✓ |")][0]
    assert "the 90% interval inside ±2 points" in table
    build_report(experiment, metrics=["top1"], formats=["md"], margin=0.5)  # said explicitly, it wins
    assert "inside ±0.5 points" in (experiment / "report" / "table.md").read_text()
