"""The LaTeX and Markdown tables: cells, marks, bold, grouping, escaping and the failed-trial list."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from analysis.collect import ExperimentInfo, collect, read_experiment
from analysis.stats import failed_trials, summarize
from analysis.tables import escape_latex, escape_markdown, latex_table, markdown_failed, markdown_table
from tests.helpers.experiment_factory import NEITHER, hand_score, make_experiment

METRICS = ["top1", "top5"]


@pytest.fixture(scope="module")
def ablation(tmp_path_factory: pytest.TempPathFactory) -> tuple[pd.DataFrame, pd.DataFrame, list[ExperimentInfo]]:
    """The hand-computed experiment of test_analysis_stats: NO_MTM is significant (*), NO_MSM not, NEITHER
    has two seeds (untested)."""
    experiment = make_experiment(tmp_path_factory.mktemp("tables"), score=hand_score, failed=[(NEITHER, 1)])
    table = collect(experiment)
    infos = [read_experiment(experiment)]
    return table, summarize(table, infos, METRICS), infos


def _lines_starting(text: str, start: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(start)]


def test_markdown_table_content(ablation) -> None:
    table, summary, infos = ablation
    text = markdown_table(summary, infos, METRICS)
    assert text.startswith("**MSM and MTM on and off**")
    assert "| MSM | MTM | Top-1 (%) | Top-5 (%) | Params (M) | GFLOPs |" in text
    rows = _lines_starting(text, "| released") + _lines_starting(text, "| off")
    # Reference: 60, 61, 62 -> 61.0 ± 1.0, the best, bold; dagger on its first cell.
    assert rows[0] == "| released † | ✓ | **61.0** ± 1.0 | **81.0** ± 1.0 | 1.33 | 2.73 |"
    # NO_MTM: 58, 58.5, 60 -> mean 58.83, std 1.04; Holm p 0.0117 -> one star.
    assert rows[1].startswith("| released | ✗ | 58.8 ± 1.0 \\* |")
    assert "\\*" not in rows[2]  # NO_MSM: p 0.18
    assert rows[3].startswith("| off | ✗ | 55.5 ± 0.7 |")  # NEITHER: two seeds, untested
    assert "Fewer than 3 seeds: no significance test." in text
    assert "Holm-corrected" in text


def test_latex_table_content(ablation) -> None:
    _, summary, infos = ablation
    text = latex_table(summary, infos, METRICS)
    for part in (r"\toprule", r"\midrule", r"\bottomrule", r"\caption{MSM and MTM on and off.", r"\label{tab:msm_mtm}",
                 r"\begin{tabular}{llccrr}", r"MSM & MTM & Top-1 (\%) & Top-5 (\%) & Params (M) & GFLOPs \\"):
        assert part in text, part
    assert (r"released\textsuperscript{\dag} & \cmark & \textbf{61.0}{\scriptsize$\pm$1.0} & "
            r"\textbf{81.0}{\scriptsize$\pm$1.0} & 1.33 & 2.73 \\") in text
    assert r"released & \xmark & 58.8{\scriptsize$\pm$1.0}$^{*}$" in text
    assert "Fewer than 3 seeds: no significance test." in text


def test_variant_without_results_shows_a_dash(tmp_path: Path) -> None:
    experiment = make_experiment(tmp_path, failed=[(NEITHER, seed) for seed in (0, 1, 2)])
    table = collect(experiment)
    infos = [read_experiment(experiment)]
    summary = summarize(table, infos, METRICS)
    assert _lines_starting(markdown_table(summary, infos, METRICS), "| off | ✗ |")[0].count("—") == 2
    assert r"off & \xmark & --- & --- &" in latex_table(summary, infos, METRICS)


def test_only_the_variants_the_experiment_ran_are_rows(tmp_path: Path) -> None:
    """A spec's exclude leaves variants out; the table follows the experiment's record, not the factor grid."""
    ran = [{"model.msm": "released", "model.mtm": True}, {"model.msm": "released", "model.mtm": False},
           {"model.msm": "off", "model.mtm": True}]
    experiment = make_experiment(tmp_path, variants=ran)
    infos = [read_experiment(experiment)]
    summary = summarize(collect(experiment), infos, METRICS)
    assert summary["variant"].nunique() == 3
    markdown = markdown_table(summary, infos, METRICS)
    assert not _lines_starting(markdown, "| off | ✗ |") and len(_lines_starting(markdown, "| off | ✓ |")) == 1


def test_several_experiments_are_grouped(ablation, tmp_path: Path) -> None:
    table, _, infos = ablation
    other = make_experiment(tmp_path, name="drop_path", factors={"model.drop_path": [0.1, 0.0]},
                            factor_labels={"model.drop_path": "Drop path"}, reference={"model.drop_path": 0.1})
    both = pd.concat([table, collect(other)], ignore_index=True)
    infos = infos + [read_experiment(other)]
    summary = summarize(both, infos, METRICS)
    latex = latex_table(summary, infos, METRICS)
    assert r"MSM & MTM & Drop path &" in latex
    assert r"\multicolumn{7}{l}{\textit{msm\_mtm}} \\" in latex
    assert r"\multicolumn{7}{l}{\textit{drop\_path}} \\" in latex
    assert latex.count(r"\midrule") == 2  # under the header, and between the groups
    # The second experiment's reference mark sits on its own first factor, not on the empty MSM cell.
    assert r" &  & 0.1\textsuperscript{\dag} &" in latex
    assert "msm\\_mtm: fewer than 3 seeds" in markdown_table(summary, infos, METRICS)
    assert "| **drop\\_path** |" in markdown_table(summary, infos, METRICS)


def test_escaping() -> None:
    assert escape_latex(r"50% & $x_1$ #2 {a} ~ ^ \ ") == (
        r"50\% \& \$x\_1\$ \#2 \{a\} \textasciitilde{} \textasciicircum{} \textbackslash{} ")
    assert escape_markdown("a|b *c* _d_") == r"a\|b \*c\* \_d\_"


def test_failed_list(ablation) -> None:
    table, _, infos = ablation
    text = markdown_failed(failed_trials(table), infos)
    assert "**Trials that did not finish (1)**" in text
    assert "| msm\\_mtm | MSM: off, MTM: off | 1 | failed | CUDA out of memory |  | no |" in text
