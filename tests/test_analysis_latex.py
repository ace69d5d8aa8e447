"""table.tex compiles with real pdflatex, preceded only by the report's preamble.tex (analysis.tables.LATEX_PREAMBLE):
in `article`, and for the demo's table also in ACM's `acmart` (sigconf) and `IEEEtran` (conference), without an
"Overfull \\hbox": the table fits the page.

Needs pdflatex with booktabs, amssymb, acmart and IEEEtran (Debian: texlive-latex-base texlive-latex-recommended
texlive-latex-extra texlive-publishers texlive-plain-generic texlive-fonts-recommended, which CI installs); skipped,
with the reason shown, where pdflatex is missing.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest

from analysis.collect import collect, read_experiment
from analysis.report import build_report, main
from analysis.stats import summarize
from analysis.tables import LATEX_PREAMBLE, latex_table
from tests.helpers.experiment_factory import NEITHER, fake_predictions, hand_score, make_experiment

# CI installs pdflatex (.ci/run), so there a missing pdflatex fails instead of skipping.
pytestmark = pytest.mark.skipif(shutil.which("pdflatex") is None and not os.environ.get("CI"),
                                reason="pdflatex not installed (apt-get install texlive-latex-base "
                                       "texlive-latex-recommended texlive-latex-extra texlive-publishers "
                                       "texlive-plain-generic texlive-fonts-recommended)")

# The first lines of a paper in each class; a title block, so that two-column classes set two columns.
CLASSES = {"article": r"\documentclass{article}",
           "acmart": r"\documentclass[sigconf]{acmart}",
           "IEEEtran": r"\documentclass[conference]{IEEEtran}"}
# The demo's table: README's example with six metric columns (2 factors, 4 variants, plus Params and GFLOPs).
DEMO_METRICS = ["top1", "top5", "body_top1", "f1_micro", "f1_macro", "f1_mean"]


def _document(folder: Path, name: str, head: str, table_tex: str, before_preamble: str = "") -> str:
    """Writes <name>.tex, a document of class `head` that inputs preamble.tex and the table; returns its file."""
    (folder / "preamble.tex").write_text(LATEX_PREAMBLE)
    (folder / f"{name}-table.tex").write_text(table_tex)
    (folder / f"{name}.tex").write_text(
        f"{head}\n{before_preamble}\\input{{preamble.tex}}\n\\begin{{document}}\n\\title{{Ablations}}\n"
        f"\\author{{A. Author}}\n\\maketitle\nThe ablation table.\n\\input{{{name}-table.tex}}\n\\end{{document}}\n")
    return f"{name}.tex"


def _compile(folder: Path, document: str) -> str:
    """Runs pdflatex once on `document` and returns its log, after checking it made a PDF without errors."""
    result = subprocess.run(["pdflatex", "-halt-on-error", "-interaction=nonstopmode", document], cwd=folder,
                            capture_output=True, text=True, timeout=120)
    log_path = folder / document.replace(".tex", ".log")
    log = log_path.read_text(errors="replace") if log_path.exists() else result.stdout
    assert result.returncode == 0, log[-3000:]
    assert (folder / document.replace(".tex", ".pdf")).stat().st_size > 1000
    # Undefined macros or missing characters would still produce a PDF; fail on them too.
    for problem in ("Undefined control sequence", "Missing character", "LaTeX Error"):
        assert problem not in log, problem
    return log


def _compile_in_article(table_tex: str, folder: Path) -> None:
    log = _compile(folder, _document(folder, "main", CLASSES["article"], table_tex))
    assert "Overfull \\hbox" not in log


@pytest.fixture(scope="module")
def demo_summary(tmp_path_factory) -> tuple[pd.DataFrame, list]:
    experiment = make_experiment(tmp_path_factory.mktemp("demo"))
    infos = [read_experiment(experiment)]
    return summarize(collect(experiment), infos, DEMO_METRICS), infos


@pytest.mark.parametrize("fit", ["auto", "column"])
def test_demo_table_fits_every_class(demo_summary, fit: str, tmp_path: Path) -> None:
    summary, infos = demo_summary
    table_tex = latex_table(summary, infos, DEMO_METRICS, fit=fit)
    assert table_tex.startswith(r"\begin{table*}" if fit == "auto" else r"\begin{table}")  # 10 columns: too wide
    documents = [_document(tmp_path, name, head, table_tex) for name, head in CLASSES.items()]
    with ThreadPoolExecutor(len(documents)) as pool:
        logs = dict(zip(CLASSES, pool.map(lambda document: _compile(tmp_path, document), documents)))
    for name, log in logs.items():
        assert "Overfull \\hbox" not in log, f"{name}: {log[log.index('Overfull'):][:200]}"


def test_natural_size_table_is_what_overflows(demo_summary, tmp_path: Path) -> None:
    """--latex-fit none keeps the natural size: the check above could fail."""
    summary, infos = demo_summary
    log = _compile(tmp_path, _document(tmp_path, "main", CLASSES["article"],
                                       latex_table(summary, infos, DEMO_METRICS, fit="none")))
    assert "Overfull \\hbox" in log


def test_narrow_table_stays_in_one_column(tmp_path: Path) -> None:
    experiment = make_experiment(tmp_path, factors={"model.mtm": [True, False]}, factor_labels={"model.mtm": "MTM"},
                                 reference={"model.mtm": True})
    infos = [read_experiment(experiment)]
    table_tex = latex_table(summarize(collect(experiment), infos, ["top1"]), infos, ["top1"])
    assert table_tex.startswith(r"\begin{table}[t]")
    log = _compile(tmp_path, _document(tmp_path, "ieee", CLASSES["IEEEtran"], table_tex))
    assert "Overfull \\hbox" not in log


def test_preamble_leaves_a_class_s_own_amssymb_symbols(demo_summary, tmp_path: Path) -> None:
    """acmart with its fonts loads newtxmath, which defines amssymb's symbols; loading amssymb again would stop
    with "Command \\Bbbk already defined". Here a document defines them the way newtxmath does."""
    summary, infos = demo_summary
    newtxmath_like = "\\newcommand{\\Bbbk}{k}\n\\newcommand{\\checkmark}{\\ensuremath{\\surd}}\n"
    _compile(tmp_path, _document(tmp_path, "main", CLASSES["article"], latex_table(summary, infos, DEMO_METRICS),
                                 before_preamble=newtxmath_like))


def test_report_writes_the_preamble_and_takes_the_fit(tmp_path: Path, capsys) -> None:
    experiment = make_experiment(tmp_path)
    assert main([str(experiment), "--format", "latex", "--metrics", "top1", "--latex-fit", "span"]) == 0
    report = experiment / "report"
    assert (report / "table.tex").read_text().startswith("\\begin{table*}[t]")
    assert (report / "preamble.tex").read_text() == LATEX_PREAMBLE
    assert "| preamble.tex |" in (report / "summary.md").read_text()
    with pytest.raises(SystemExit) as exited:  # argparse's usage error
        main([str(experiment), "--format", "latex", "--latex-fit", "wide"])
    assert exited.value.code == 2
    assert "invalid choice: 'wide'" in capsys.readouterr().err


def test_table_compiles(tmp_path: Path) -> None:
    # Special characters in names and description, a failed seed, and a variant with no result at all.
    experiment = make_experiment(tmp_path, name="msm_mtm#1", score=hand_score,
                                 failed=[(NEITHER, seed) for seed in (0, 1, 2)],
                                 factor_labels={"model.msm": "MSM & co", "model.mtm": "MTM_50%"})
    (experiment / "experiment.json").write_text(
        (experiment / "experiment.json").read_text().replace("MSM and MTM on and off", "Ablation: 100% $ {x} ~ ^ \\\\"))
    infos = [read_experiment(experiment)]
    metrics = ["top1", "top5", "body_top1", "f1_mean", "train_loss"]
    _compile_in_article(latex_table(summarize(collect(experiment), infos, metrics), infos, metrics), tmp_path)


def test_combined_table_compiles(tmp_path: Path) -> None:
    first = make_experiment(tmp_path, score=hand_score)
    second = make_experiment(tmp_path, name="imigue", dataset="imigue", seeds=(0, 1),
                             factors={"model.drop_path": [0.1, 0.0], "data.augment": ["flip", "none"]},
                             factor_labels={"model.drop_path": "Drop path"},
                             reference={"model.drop_path": 0.1, "data.augment": "flip"})
    infos = [read_experiment(first), read_experiment(second)]
    table = pd.concat([collect(first), collect(second)], ignore_index=True)
    metrics = ["top1", "body_top1"]
    _compile_in_article(latex_table(summarize(table, infos, metrics), infos, metrics, phase="final"), tmp_path)


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
    assert (report / "preamble.tex").read_text() == LATEX_PREAMBLE
    _compile_in_article(table_tex, tmp_path)
