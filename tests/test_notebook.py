"""The notebook API (ablations.notebook): a real tiny experiment run from Python, its tidy results, summary table and
report; a finished folder opened without Ray; keyword arguments checked against RunOptions."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

import ablations
from tests.helpers.experiment_factory import make_experiment

# The smallest real trials, as tests/test_evaluate.py's SMALL: one scale of one block 16 wide on 8 frames.
SMALL = {"model.embed_dim": 16, "model.depth": 1, "model.num_scales": 1, "data.synthetic_clips_per_class": 1,
         "model.num_frames": 8, "train.batch_size": 8}


def test_unknown_keyword_names_the_valid_ones() -> None:
    with pytest.raises(TypeError, match=r"'epoch' \(did you mean epochs\?\); valid keywords: budget, .*seeds"):
        ablations.run_experiment("msm_mtm", epoch=4)


def test_open_experiment_reads_a_folder_without_ray(tmp_path: Path) -> None:
    folder = make_experiment(tmp_path)
    script = textwrap.dedent(f"""\
        import sys
        import ablations
        exp = ablations.open_experiment({str(folder)!r})
        table = exp.table()
        assert "ray" not in sys.modules, "ray imported"
        print(len(table), sorted(table["metric"].unique()))
        """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                            cwd=Path(__file__).parent.parent)
    assert result.returncode == 0, result.stderr[-2000:]
    # 4 variants × the 4 default metrics, all recorded by the fake experiment.
    assert result.stdout.strip() == "16 ['body_top1', 'f1_mean', 'top1', 'top5']"


@pytest.mark.ray
@pytest.mark.slow
def test_run_experiment_returns_results_table_and_report(ray_session, tmp_path: Path) -> None:
    spec = tmp_path / "mini.yaml"
    spec.write_text("name: mini\nfactors:\n  model.mtm: {values: [true, false], label: MTM}\n"
                    "reference: {model.mtm: true}\nseeds: 1\n")
    exp = ablations.run_experiment(spec, storage=tmp_path / "runs", seeds=1, epochs=1, overrides=SMALL)
    assert Path(exp.location) == tmp_path / "runs" / "mini"
    assert (exp.outcome.planned, len(exp.outcome.finished), len(exp.outcome.failed)) == (2, 2, 0)

    results = exp.results()
    summaries = results[results["row"] == "summary"]
    assert len(summaries) == 2 and set(summaries["status"]) == {"finished"}
    assert summaries["best_val_top1"].between(0, 100).all()
    assert (results["row"] == "epoch").sum() == 2  # one epoch each

    table = exp.table(["top1", "f1_mean"])
    assert list(table["metric"]) == ["top1", "top1", "f1_mean", "f1_mean"]
    assert table["is_reference"].tolist() == [True, False, True, False]
    assert table["mean"].notna().all() and (table["n"] == 1).all()

    report = exp.report(formats=["latex", "md"])
    assert report == tmp_path / "runs" / "mini" / "report"
    assert {"table.tex", "preamble.tex", "table.md", "summary.md"} <= {path.name for path in report.iterdir()}

    again = ablations.open_experiment(report.parent)
    assert again.outcome is None
    pd.testing.assert_frame_equal(again.table(["top1", "f1_mean"]), table)
