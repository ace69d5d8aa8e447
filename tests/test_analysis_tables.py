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
    assert ("| MSM | MTM | Top-1 (%) | Δ Top-1 | Top-5 (%) | Δ Top-5 | Decision | Seeds | Params (M) | GFLOPs |"
            in text)
    rows = _lines_starting(text, "| released") + _lines_starting(text, "| off")
    # Reference: 60, 61, 62 -> 61.0 ± 1.0, the best, bold; dagger on its first cell; no Δ of its own.
    assert rows[0] == "| released † | ✓ | **61.0** ± 1.0 |  | **81.0** ± 1.0 |  | reference | 3 | 1.33 | 2.73 |"
    # NO_MTM: 58, 58.5, 60 -> mean 58.83, std 1.04; Holm p 0.0117 -> one star, worse. Δ -2.17 in
    # [-2.88, -1.45] (test_analysis_stats derives it).
    assert rows[1] == ("| released | ✗ | 58.8 ± 1.0 \\* | -2.2 [-2.9, -1.4] | 78.8 ± 1.0 \\* | -2.2 [-2.9, -1.4] | "
                       "worse | 3 | 1.29 | 2.53 |")
    # NO_MSM: Δ -0.67, 95% interval -0.67 -/+ 4.302653 * 0.57735 / sqrt 3 = [-2.10, +0.77]; p 0.18: undecided.
    assert "\\*" not in rows[2] and "| -0.7 [-2.1, +0.8] |" in rows[2] and "| undecided | 3 |" in rows[2]
    # NEITHER: two seeds, untested: no mark. Differences -5, -6 (55 - 60, 56 - 62): -5.5, interval
    # -5.5 -/+ 12.706205 * 0.707107 / sqrt 2 = -/+ 6.35.
    assert rows[3].startswith("| off | ✗ | 55.5 ± 0.7 | -5.5 [-11.9, +0.9] |") and "| — | 2 |" in rows[3]
    assert "Fewer than 3 seeds: no significance test." in text
    assert "Holm-corrected" in text and "Decision on Top-1 against the reference" in text
    # The seeds' resolution, from the paired std of the tested rows: 0.893886 for NO_MTM (test_analysis_stats);
    # NO_MSM: 5.363313 * 0.57735 / sqrt 3 = 1.787771.
    assert "could detect (two-sided α = 0.05, 80% power, from the paired std): 0.9 (MSM: released, MTM: off); " \
           "1.8 (MSM: off, MTM: on)." in text


def test_latex_table_content(ablation) -> None:
    _, summary, infos = ablation
    text = latex_table(summary, infos, METRICS)
    for part in (r"\toprule", r"\midrule", r"\bottomrule", r"\caption{MSM and MTM on and off.", r"\label{tab:msm_mtm}",
                 r"\begin{tabular}{llcccclrrr}",
                 r"MSM & MTM & Top-1 (\%) & $\Delta$ Top-1 & Top-5 (\%) & $\Delta$ Top-5 & Decision & Seeds & "
                 r"Params (M) & GFLOPs \\"):
        assert part in text, part
    assert (r"released\textsuperscript{\dag} & \cmark & \textbf{61.0}{\scriptsize$\pm$1.0} &  & "
            r"\textbf{81.0}{\scriptsize$\pm$1.0} &  & reference & 3 & 1.33 & 2.73 \\") in text
    # The symmetric t interval as its half-width on the page: -2.17 -/+ 0.72.
    assert r"released & \xmark & 58.8{\scriptsize$\pm$1.0}$^{*}$ & $-2.2${\scriptsize$\pm$0.7} &" in text
    assert "Fewer than 3 seeds: no significance test." in text
    assert r"$\alpha$ = 0.05" in text and "α" not in text and "Δ" not in text  # pdflatex has no such glyphs


def test_delta_columns_can_be_left_out_and_follow_the_test(ablation) -> None:
    table, _, infos = ablation
    text = markdown_table(summarize(table, infos, METRICS), infos, METRICS, delta=False)
    assert "| MSM | MTM | Top-1 (%) | Top-5 (%) | Decision | Seeds | Params (M) | GFLOPs |" in text
    assert "Δ:" not in text
    # The bootstrap's interval is not symmetric: LaTeX shows its ends, and the caption names the test.
    boot = summarize(table, infos, METRICS, test="bootstrap")
    latex = latex_table(boot, infos, METRICS, test="bootstrap")
    assert "percentile bootstrap of the mean difference over seeds, Holm-corrected" in latex
    assert r"$-2.2${\scriptsize[$-2.5$,$-2.0$]}" in latex  # the mean of three of -2, -2.5, -2 lies in [-2.5, -2]
    with pytest.raises(ValueError, match="valid tests"):
        markdown_table(boot, infos, METRICS, test="z")


def test_equal_seed_counts_go_to_the_caption(tmp_path: Path) -> None:
    experiment = make_experiment(tmp_path)
    infos = [read_experiment(experiment)]
    text = markdown_table(summarize(collect(experiment), infos, ["top1"]), infos, ["top1"])
    assert "| Decision | Params (M) |" in text and "Seeds |" not in text
    assert "Every row used 3 seeds." in text


def test_no_reference_no_decision(tmp_path: Path) -> None:
    experiment = make_experiment(tmp_path, reference=None)
    infos = [read_experiment(experiment)]
    text = markdown_table(summarize(collect(experiment), infos, ["top1"]), infos, ["top1"])
    assert "| MSM | MTM | Top-1 (%) | Params (M) | GFLOPs |" in text and "Decision" not in text


def test_variant_without_results_shows_a_dash(tmp_path: Path) -> None:
    experiment = make_experiment(tmp_path, failed=[(NEITHER, seed) for seed in (0, 1, 2)])
    table = collect(experiment)
    infos = [read_experiment(experiment)]
    summary = summarize(table, infos, METRICS)
    # Each metric, its Δ and the decision; no seed to decide with.
    assert _lines_starting(markdown_table(summary, infos, METRICS), "| off | ✗ |") == [
        "| off | ✗ | — | — | — | — | — | 0 | 1.25 | 2.33 |"]
    assert r"off & \xmark & --- & --- & --- & --- & --- & 0 &" in latex_table(summary, infos, METRICS)


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
    # 3 factors, 2 metrics with their Δ, Decision, Seeds, Params and GFLOPs
    assert r"\multicolumn{11}{l}{\textit{msm\_mtm}} \\" in latex
    assert r"\multicolumn{11}{l}{\textit{drop\_path}} \\" in latex
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


def test_every_interval_form_compiles(ablation, tmp_path: Path) -> None:
    """Δ cells as ± half-width (t) and as [low, high] (bootstrap), the decisions and the caption's α, Δ and ±
    through pdflatex (test_analysis_latex's helpers), without an overfull box."""
    from tests.test_analysis_latex import CLASSES, _compile, _document

    table, _, infos = ablation
    tables = [latex_table(summarize(table, infos, METRICS, test=test), infos, METRICS, test=test)
              for test in ("t", "bootstrap")]
    log = _compile(tmp_path, _document(tmp_path, "main", CLASSES["IEEEtran"], "\n".join(tables)))
    assert "Overfull \\hbox" not in log
