"""table.tex compiles with pdflatex inside a minimal article using only analysis.tables.LATEX_PREAMBLE.

Needs pdflatex with booktabs and amssymb (Debian: texlive-latex-base texlive-latex-recommended, which CI installs);
skipped, with the reason shown, where pdflatex is missing.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from analysis.collect import collect, read_experiment
from analysis.report import build_report
from analysis.stats import summarize
from analysis.tables import LATEX_PREAMBLE, latex_table
from tests.helpers.experiment_factory import NEITHER, fake_predictions, hand_score, make_experiment

# CI installs pdflatex (.ci/run), so there a missing pdflatex fails instead of skipping.
pytestmark = pytest.mark.skipif(shutil.which("pdflatex") is None and not os.environ.get("CI"),
                                reason="pdflatex not installed (apt-get install texlive-latex-base "
                                       "texlive-latex-recommended)")


def _compile(table_tex: str, folder: Path) -> None:
    (folder / "table.tex").write_text(table_tex)
    (folder / "main.tex").write_text("\\documentclass{article}\n" + LATEX_PREAMBLE
                                     + "\\begin{document}\n\\input{table.tex}\n\\end{document}\n")
    result = subprocess.run(["pdflatex", "-halt-on-error", "-interaction=nonstopmode", "main.tex"], cwd=folder,
                            capture_output=True, text=True, timeout=120)
    log = (folder / "main.log").read_text(errors="replace") if (folder / "main.log").exists() else result.stdout
    assert result.returncode == 0, log[-3000:]
    assert (folder / "main.pdf").stat().st_size > 1000
    # Undefined macros or missing characters would still produce a PDF; fail on them too.
    for problem in ("Undefined control sequence", "Missing character", "LaTeX Error"):
        assert problem not in log, problem


def test_table_compiles(tmp_path: Path) -> None:
    # Special characters in names and description, a failed seed, and a variant with no result at all.
    experiment = make_experiment(tmp_path, name="msm_mtm#1", score=hand_score,
                                 failed=[(NEITHER, seed) for seed in (0, 1, 2)],
                                 factor_labels={"model.msm": "MSM & co", "model.mtm": "MTM_50%"})
    (experiment / "experiment.json").write_text(
        (experiment / "experiment.json").read_text().replace("MSM and MTM on and off", "Ablation: 100% $ {x} ~ ^ \\\\"))
    infos = [read_experiment(experiment)]
    metrics = ["top1", "top5", "body_top1", "f1_mean", "train_loss"]
    _compile(latex_table(summarize(collect(experiment), infos, metrics), infos, metrics), tmp_path)


def test_combined_table_compiles(tmp_path: Path) -> None:
    first = make_experiment(tmp_path, score=hand_score)
    second = make_experiment(tmp_path, name="imigue", dataset="imigue", seeds=(0, 1),
                             factors={"model.drop_path": [0.1, 0.0], "data.augment": ["flip", "none"]},
                             factor_labels={"model.drop_path": "Drop path"},
                             reference={"model.drop_path": 0.1, "data.augment": "flip"})
    infos = [read_experiment(first), read_experiment(second)]
    table = pd.concat([collect(first), collect(second)], ignore_index=True)
    metrics = ["top1", "body_top1"]
    _compile(latex_table(summarize(table, infos, metrics), infos, metrics, phase="final"), tmp_path)


def test_test_split_table_with_ensembles_compiles(tmp_path: Path) -> None:
    # Stream names with underscores, ensemble rows, their caption note and the note on reused older results.
    streams = ["joint", "bone", "joint_motion", "bone_motion"]

    def test_predictions(variant: dict, seed: int) -> dict:
        return fake_predictions(50.0 + 10 * streams.index(variant["data.modality"]), seed=seed, split="test")

    experiment = make_experiment(tmp_path, name="streams", factors={"data.modality": streams},
                                 factor_labels={"data.modality": "Stream"}, reference={"data.modality": "joint"},
                                 test=test_predictions, kept_stale=2,
                                 ensembles={"2s": {"joint": 1, "bone": 1},
                                            "4s": {"joint": 2, "bone": 2, "joint_motion": 1, "bone_motion": 1}})
    report = build_report(experiment, formats=["latex"], split="test", say=lambda line: None)
    table_tex = (report / "table.tex").read_text()
    assert r"4s = 2 joint + 2 bone + 1 joint\_motion + 1 bone\_motion" in table_tex
    assert "Test metrics of each trial's best-validation weights" in table_tex and "older code" in table_tex
    _compile(table_tex, tmp_path)
