"""The ablation table as LaTeX (booktabs) and GitHub Markdown, from `stats.summarize`; and the failed-trial list.

One column per factor (switches as check marks, other values as text), one per metric as mean ± std over seeds
with the best mean in bold and significance marks against the reference, each followed (for experiments with a
reference, unless turned off) by a Δ column: the mean paired difference to the reference with its 95% interval.
Then, with a reference, the decision of each row against it (better, worse, equivalent, undecided) and the seeds
it used; then Params (M) and GFLOPs. The caption gives each comparison's smallest detectable difference. Several
experiments share one table, their rows grouped under a header row per experiment.

The LaTeX needs booktabs, graphicx and amssymb (standard TeX Live: Debian's texlive-latex-base and
texlive-latex-recommended): put LATEX_PREAMBLE (the report's preamble.tex) in the document's preamble. It suits
`article`, `IEEEtran` and `acmart`; LATEX_FITS are the ways a table fits the page.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import pandas as pd

from .cli import DEFAULT_MARGIN, LATEX_FITS
from .collect import Damage, ExperimentInfo
from .columns import METRICS, value_text, variant_label
from .stats import ALPHA, MIN_PAIRED_SEEDS, POWER, significance_note, stars

# What each test of stats.compare is called in a caption, and where its interval comes from.
TEST_NAMES = {"t": "paired t-test", "wilcoxon": "Wilcoxon signed-rank test",
              "bootstrap": "percentile bootstrap of the mean difference"}
_INTERVALS = {"t": "paired t", "wilcoxon": "paired t", "bootstrap": "percentile bootstrap"}

# \providecommand: a document that already defines \cmark / \xmark (often with pifont's \ding) keeps its own.
# amssymb only where \checkmark is missing: acmart loads newtxmath, which defines every amssymb symbol, and a later
# amssymb stops the document ("Command \Bbbk already defined"). The ablationfit environment shrinks its content to
# the line's width (a column, or the page in table*) only when wider, so a table is never enlarged.
LATEX_PREAMBLE = r"""\usepackage{booktabs}
\usepackage{graphicx}
\ifdefined\checkmark\else\usepackage{amssymb}\fi
\providecommand{\cmark}{\ensuremath{\checkmark}}
\providecommand{\xmark}{\ensuremath{\times}}
\ifdefined\ablationfitbox\else
  \newsavebox{\ablationfitbox}
  \newenvironment{ablationfit}{\begin{lrbox}{\ablationfitbox}}{\end{lrbox}%
    \ifdim\wd\ablationfitbox>\linewidth\resizebox{\linewidth}{!}{\usebox{\ablationfitbox}}%
    \else\usebox{\ablationfitbox}\fi}
\fi
"""

_COLUMN_PT = 240.0  # the narrowest column of the common two-column classes (acmart sigconf 241pt, IEEEtran 252pt)
_CHAR_PT = 4.4  # average width of a character at \footnotesize, measured on the 10-column demo table
_COMPACT_SEP_PT = 3.0  # \tabcolsep of the compact body

_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_LATEX_PATTERN = re.compile("|".join(map(re.escape, _LATEX_SPECIAL)))
_MARKDOWN_PATTERN = re.compile(r"([\\`*_|<>\[\]])")


def escape_latex(text: str) -> str:
    """`text` with LaTeX's special characters escaped, to typeset as written."""
    return _LATEX_PATTERN.sub(lambda match: _LATEX_SPECIAL[match.group()], text)


def escape_markdown(text: str) -> str:
    """`text` with the characters that Markdown tables or emphasis would interpret escaped."""
    return _MARKDOWN_PATTERN.sub(r"\\\1", text).replace("\n", " ")


@dataclass(frozen=True)
class _Cell:
    mean: float
    std: float
    bold: bool
    stars: str
    delta: float  # mean paired difference to the reference (NaN for the reference itself, or no shared seed)
    low: float  # its 95% interval, NaN below 2 shared seeds
    high: float


@dataclass(frozen=True)
class _Row:
    settings: dict[str, Any]
    is_reference: bool
    cells: list[_Cell]
    params_m: float
    gflops: float
    decision: str  # stats.DECISIONS, "" without a test
    seeds: int  # the seeds the decision used: shared with the reference (the reference's own, for it)


@dataclass(frozen=True)
class _Layout:
    factors: list[str]  # dotted keys, the union over experiments in order of appearance
    factor_headers: list[str]
    groups: list[tuple[ExperimentInfo, list[_Row]]]
    notes: list[str]  # plain sentences, without the final full stop
    deltas: bool  # a Δ column after each metric
    decisions: bool  # a Decision column (some experiment has a reference)
    seeds: bool  # a Seeds column: the rows' decisions used different numbers of seeds (else a note says how many)


def decision_metric(info: ExperimentInfo, metrics: Sequence[str]) -> str:
    """The metric a row's decision is on: the one the experiment optimised when the table shows it, else the
    table's first."""
    chosen = next((name for name, spec in METRICS.items() if spec.key == info.metric), None)
    return chosen if chosen in metrics else metrics[0]


def _detectable_note(rows: pd.DataFrame, info: ExperimentInfo, metric: str) -> str | None:
    """The smallest difference each comparison's seeds could detect, or None when none was tested."""
    tested = rows[(rows["metric"] == metric) & ~rows["is_reference"] & (rows["n_paired"] >= MIN_PAIRED_SEEDS)]
    parts = [f"{_number(value, METRICS[metric].decimals)} ({variant_label(settings, info.factor_labels)})"
             for settings, value in zip(tested["settings"], tested["detectable"]) if not pd.isna(value)]
    if not parts:
        return None
    return (f"smallest {METRICS[metric].header.replace(' (%)', '')} difference the seeds could detect "
            f"(two-sided α = {ALPHA:g}, {POWER:.0%} power, from the paired std): " + "; ".join(parts))


def _layout(summary: pd.DataFrame, experiments: Sequence[ExperimentInfo], metrics: Sequence[str],
            delta: bool | None) -> _Layout:
    factors = list(dict.fromkeys(key for info in experiments for key in info.factors))
    headers = {}
    for info in experiments:
        for key in info.factors:
            headers.setdefault(key, info.factor_labels.get(key, key))
    groups = []
    notes = []
    decisions = any(info.reference is not None for info in experiments)
    for info in experiments:
        rows = summary[summary["experiment"] == info.name]
        decided_on = decision_metric(info, metrics)
        best = {}
        for metric in metrics:
            spec = METRICS[metric]
            means = rows.loc[rows["metric"] == metric, "mean"].dropna()
            # Bold compares what the reader sees (the printed digits), when there is something to compare with.
            if len(means) >= 2:
                best[metric] = _number(means.max() if spec.higher_is_better else means.min(), spec.decimals)
        table_rows = []
        for key, variant_rows in rows.groupby("variant", sort=False):
            by_metric = variant_rows.set_index("metric")
            cells = []
            for metric in metrics:
                row = by_metric.loc[metric]
                shown = _number(row["mean"], METRICS[metric].decimals)
                cells.append(_Cell(row["mean"], row["std"], shown is not None and shown == best.get(metric),
                                   "" if row["is_reference"] else stars(row["p_holm"]), row["delta"],
                                   row["delta_low"], row["delta_high"]))
            first = variant_rows.iloc[0]
            decided = by_metric.loc[decided_on]
            table_rows.append(_Row(json.loads(key), bool(first["is_reference"]), cells, first["params_m"],
                                   first["gflops"], decided["decision"],
                                   int(decided["n_paired"] if info.reference and not decided["is_reference"]
                                       else decided["n"])))
        groups.append((info, table_rows))
        found = [significance_note(rows, info.name), stale_note(info)]
        if info.reference is not None:
            found.append(_detectable_note(rows, info, decided_on))
        for note in found:
            if note:
                notes.append(note[0].upper() + note[1:] if len(experiments) == 1 else f"{info.name}: {note}")
    counts = {row.seeds for _, rows in groups for row in rows}
    if decisions and len(counts) == 1:
        notes.append(f"Every row used {counts.pop()} seeds")
    return _Layout(factors, [headers[key] for key in factors], groups, notes,
                   decisions if delta is None else delta and decisions, decisions, decisions and len(counts) > 1)


def stale_note(info: ExperimentInfo) -> str | None:
    """Why a result may not come from the current code: a rerun kept results of older code (experiment.json)."""
    if not info.kept_stale:
        return None
    return (f"{info.kept_stale} {'result' if info.kept_stale == 1 else 'results'} of older code "
            f"{'was' if info.kept_stale == 1 else 'were'} reused")


def _measured(phase: str, split: str) -> str:
    """What the metric cells hold, the caption's first note."""
    if split != "val":
        return f"{split.capitalize()} metrics of each trial's best-validation weights"
    return f"Validation metrics at the {'best' if phase == 'best' else 'last'} epoch"


def _marked_column(row: _Row, layout: _Layout) -> int:
    """Where the reference mark goes: the row's first factor cell that is not empty (its experiment's first)."""
    return next((i for i, key in enumerate(layout.factors) if key in row.settings), 0)


def _number(value: float, decimals: int, signed: bool = False) -> str | None:
    # pd.isna: a variant whose every trial failed has pd.NA (the mean of a nullable column), not NaN
    return None if pd.isna(value) else f"{float(value):{'+' if signed else ''}.{decimals}f}"


def _default_caption(experiments: Sequence[ExperimentInfo]) -> str:
    if len(experiments) == 1:
        info = experiments[0]
        return (info.description or f"Ablation {info.name}").rstrip(".")
    return "Ablations " + ", ".join(info.name for info in experiments)


@dataclass(frozen=True)
class _Syntax:
    """How a table format writes a factor value, a metric cell (mean, spread, best in bold, significance) and a Δ
    cell (signed mean difference and its interval)."""

    on: str
    off: str
    missing: str
    escape: Callable[[str], str]
    bold: Callable[[str], str]
    spread: Callable[[str], str]
    stars: Callable[[str], str]
    signed: Callable[[str], str]
    interval: Callable[[str, str, str], str]  # (low, high, half-width) as the format shows an interval

    def value(self, value: Any) -> str:
        if isinstance(value, bool):
            return self.on if value else self.off
        return self.escape(value_text(value))

    def cell(self, cell: _Cell, decimals: int) -> str:
        mean = _number(cell.mean, decimals)
        if mean is None:
            return self.missing
        text = self.bold(mean) if cell.bold else mean
        std = _number(cell.std, decimals)
        if std is not None:
            text += self.spread(std)
        return text + (self.stars(cell.stars) if cell.stars else "")

    def delta(self, cell: _Cell, decimals: int, is_reference: bool) -> str:
        if is_reference:
            return ""
        mean = _number(cell.delta, decimals, signed=True)
        if mean is None:
            return self.missing
        low, high = _number(cell.low, decimals, signed=True), _number(cell.high, decimals, signed=True)
        if low is None or high is None:
            return self.signed(mean)
        # A symmetric interval (Student t) as its half-width; a bootstrap's, asymmetric, by its ends.
        symmetric = _number(cell.delta - cell.low, decimals) == _number(cell.high - cell.delta, decimals)
        return self.signed(mean) + self.interval(low, high, _number(cell.high - cell.delta, decimals)
                                                 if symmetric else "")


_LATEX = _Syntax(on=r"\cmark", off=r"\xmark", missing="---", escape=escape_latex,
                 bold=lambda text: rf"\textbf{{{text}}}", spread=lambda text: rf"{{\scriptsize$\pm${text}}}",
                 stars=lambda text: rf"$^{{{text}}}$", signed=lambda text: f"${text}$",
                 # LaTeX is for a page: the short form where the interval is symmetric
                 interval=lambda low, high, half: (rf"{{\scriptsize$\pm${half}}}" if half
                                                   else rf"{{\scriptsize[${low}$,${high}$]}}"))
_MARKDOWN = _Syntax(on="✓", off="✗", missing="—", escape=escape_markdown, bold=lambda text: f"**{text}**",
                    spread=lambda text: f" ± {text}", stars=lambda text: " " + escape_markdown(text),
                    signed=lambda text: text, interval=lambda low, high, half: f" [{low}, {high}]")


def _legend(layout: _Layout, experiments: Sequence[ExperimentInfo], metrics: Sequence[str], test: str,
            margin: float, latex: bool) -> list[str]:
    """Plain sentences on what the Δ, Decision and Seeds columns mean (none for a table without them)."""
    sentences = []
    if layout.deltas:
        shown = "± the half-width of its 95% interval" if latex and test != "bootstrap" else \
            "[its 95% interval]"
        sentences.append(f"Δ: mean paired difference to the reference over the seeds both finished, {shown} "
                         f"({_INTERVALS[test]})")
    if layout.decisions:
        compared = [info for info in experiments if info.reference is not None]
        on = ", ".join(dict.fromkeys(METRICS[decision_metric(info, metrics)].header.replace(" (%)", "")
                                     for info in compared))
        equivalence = ("the 90% interval inside" if test == "t" else "two one-sided tests within") + f" ±{margin:g}"
        sentences.append(f"Decision on {on} against the reference: better or worse when the {TEST_NAMES[test]} is "
                         f"significant at α = {ALPHA:g} after Holm correction, equivalent with {equivalence} "
                         f"points, else undecided; none below {MIN_PAIRED_SEEDS} shared seeds"
                         + ("; Seeds: the seeds it used" if layout.seeds else ""))
    return sentences


def _check(fit: str | None, test: str) -> None:
    if fit is not None and fit not in LATEX_FITS:
        raise ValueError(f"unknown LaTeX fit {fit!r}; valid fits: {', '.join(LATEX_FITS)}")
    if test not in TEST_NAMES:
        raise ValueError(f"unknown test {test!r}; valid tests: {', '.join(TEST_NAMES)}")


def _headers(layout: _Layout, metrics: Sequence[str], escape: Callable[[str], str], delta: str) -> list[str]:
    """The header row: factors, each metric (and its Δ), Decision and Seeds, costs."""
    headers = [escape(header) for header in layout.factor_headers or ["Variant"]]
    for metric in metrics:
        headers.append(escape(METRICS[metric].header))
        if layout.deltas:
            headers.append(delta + escape(METRICS[metric].header.replace(" (%)", "")))
    return headers + ["Decision"] * layout.decisions + ["Seeds"] * layout.seeds + ["Params (M)", "GFLOPs"]


def _body(row: _Row, layout: _Layout, metrics: Sequence[str], syntax: _Syntax) -> list[str]:
    """A row's cells after its factors."""
    cells = []
    for cell, metric in zip(row.cells, metrics):
        cells.append(syntax.cell(cell, METRICS[metric].decimals))
        if layout.deltas:
            cells.append(syntax.delta(cell, METRICS[metric].decimals, row.is_reference))
    if layout.decisions:
        cells.append("reference" if row.is_reference else row.decision or syntax.missing)
    if layout.seeds:
        cells.append(str(row.seeds))
    return cells + [_number(row.params_m, 2) or syntax.missing, _number(row.gflops, 2) or syntax.missing]


# LaTeX


def latex_table(summary: pd.DataFrame, experiments: Sequence[ExperimentInfo], metrics: Sequence[str], *,
                phase: str = "best", split: str = "val", caption: str | None = None, label: str | None = None,
                notes: Sequence[str] = (), fit: str = "auto", delta: bool | None = None, test: str = "t",
                margin: float = DEFAULT_MARGIN) -> str:
    """A booktabs `table` (or `table*`) environment (needs LATEX_PREAMBLE). `caption` is plain text (escaped here);
    the notes on what the cells mean, on missing tests, on reused results and `notes` (plain sentences) are appended
    to it. `label` defaults to tab:<experiment names>; `split` and `phase` say where the values come from; `fit`
    (one of LATEX_FITS) how the table fits the page. `delta`: the Δ columns (default: where an experiment has a
    reference); `test` and `margin`: what summarize compared with, for the caption.
    """
    _check(fit, test)
    layout = _layout(summary, experiments, metrics, delta)
    headers = _headers(layout, metrics, escape_latex, r"$\Delta$ ")
    width = len(headers)
    rows_cells = [headers]
    columns = "l" * len(layout.factor_headers or ["Variant"]) + "c" * len(metrics) * (1 + layout.deltas)
    lines = [r"\begin{tabular}{" + columns + "l" * layout.decisions + "r" * layout.seeds + "rr}", r"\toprule",
             " & ".join(headers) + r" \\", r"\midrule"]
    for index, (info, rows) in enumerate(layout.groups):
        if index:
            lines.append(r"\midrule")
        if len(layout.groups) > 1:
            lines.append(rf"\multicolumn{{{width}}}{{l}}{{\textit{{{escape_latex(info.name)}}}}} \\")
        for row in rows:
            factors = ([_LATEX.value(row.settings[key]) if key in row.settings else "" for key in layout.factors]
                       or ["default"])
            if row.is_reference:
                factors[_marked_column(row, layout)] += r"\textsuperscript{\dag}"
            cells = factors + _body(row, layout, metrics, _LATEX)
            rows_cells.append(cells)
            lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]

    # The mark in a box (\textsuperscript), as in the rows: a bare \dag in a caption that microtype expands stops
    # acmart where its fonts are missing (TS1 bitmap fonts cannot be expanded).
    text = escape_latex(caption or _default_caption(experiments)) + (
        f". {escape_latex(_measured(phase, split))}, " + r"mean{\scriptsize$\pm$}std over seeds; best in bold; "
        r"\textsuperscript{\dag} reference; $^{*}$ $p<0.05$, $^{**}$ $p<0.01$ against the reference ("
        + escape_latex(TEST_NAMES[test]) + r" over seeds, Holm-corrected).")
    legend = [sentence.replace("Δ", r"$\Delta$").replace("α", r"$\alpha$").replace("±", r"$\pm$")
              for sentence in map(escape_latex, [*_legend(layout, experiments, metrics, test, margin, True),
                                                 *layout.notes, *notes])]
    text += "".join(f" {sentence}." for sentence in legend)
    names = "-".join(info.name for info in experiments)
    label = label or "tab:" + re.sub(r"[^A-Za-z0-9:_-]+", "-", names)
    if fit == "auto":
        fit = "column" if _compact_width_pt(rows_cells) <= _COLUMN_PT else "span"
    float_name = "table*" if fit == "span" else "table"
    if fit != "none":
        lines = [r"\footnotesize", rf"\setlength{{\tabcolsep}}{{{_COMPACT_SEP_PT:g}pt}}", r"\begin{ablationfit}",
                 *lines, r"\end{ablationfit}"]
    return "\n".join([rf"\begin{{{float_name}}}[t]", r"\centering", rf"\caption{{{text}}}", rf"\label{{{label}}}",
                      *lines, rf"\end{{{float_name}}}", ""])


def _compact_width_pt(rows: list[list[str]]) -> float:
    """A rough width of the compact tabular: the widest cell of each column, counted in visible characters."""
    def visible(cell: str) -> int:
        return len(re.sub(r"\\[A-Za-z]+|[{}$^]", "", cell))

    columns = zip(*rows)
    return sum(max(map(visible, column)) * _CHAR_PT + 2 * _COMPACT_SEP_PT for column in columns)


# Markdown

def markdown_table(summary: pd.DataFrame, experiments: Sequence[ExperimentInfo], metrics: Sequence[str], *,
                   phase: str = "best", split: str = "val", caption: str | None = None,
                   notes: Sequence[str] = (), delta: bool | None = None, test: str = "t",
                   margin: float = DEFAULT_MARGIN) -> str:
    """The same table as GitHub Markdown: the caption above it, the notes below."""
    _check(None, test)
    layout = _layout(summary, experiments, metrics, delta)
    headers = _headers(layout, metrics, escape_markdown, "Δ ")
    lines = ["| " + " | ".join(headers) + " |",
             "|" + ":---|" * len(layout.factor_headers or ["Variant"])
             + "---:|" * (len(metrics) * (1 + layout.deltas)) + ":---|" * layout.decisions
             + "---:|" * (layout.seeds + 2)]
    for info, rows in layout.groups:
        if len(layout.groups) > 1:
            lines.append(f"| **{escape_markdown(info.name)}** |" + " |" * (len(headers) - 1))
        for row in rows:
            factors = ([_MARKDOWN.value(row.settings[key]) if key in row.settings else "" for key in layout.factors]
                       or ["default"])
            if row.is_reference:
                factors[_marked_column(row, layout)] += " †"
            lines.append("| " + " | ".join(factors + _body(row, layout, metrics, _MARKDOWN)) + " |")

    below = [f"{_measured(phase, split)}, mean ± std over seeds; best in bold; † reference; "
             f"\\* p < 0.05, \\*\\* p < 0.01 against the reference ({TEST_NAMES[test]} over seeds, Holm-corrected)."]
    below += [escape_markdown(note) + "." for note in [*_legend(layout, experiments, metrics, test, margin, False),
                                                       *layout.notes, *notes]]
    title = escape_markdown(caption or _default_caption(experiments))
    return "\n".join([f"**{title}**", "", *lines, "", *below, ""])


def markdown_failed(failed: pd.DataFrame, experiments: Sequence[ExperimentInfo]) -> str:
    """The trials that did not finish (from `stats.failed_trials`) as a Markdown list table."""
    labels = {info.name: info.factor_labels for info in experiments}
    lines = ["| Experiment | Variant | Seed | Status | Error | Phase | Rerun finished | Trial folder |",
             "|:---|:---|---:|:---|:---|:---|:---|:---|"]
    for row in failed.itertuples(index=False):
        variant = ("unknown (unreadable trial record)" if not isinstance(row.variant, str)
                   else variant_label(json.loads(row.variant), labels.get(row.experiment, {})))
        cells = [row.experiment, variant, "—" if pd.isna(row.seed) else str(row.seed), row.status,
                 "" if not isinstance(row.error, str) else row.error,
                 row.search_phase if isinstance(row.search_phase, str) else "", "yes" if row.rerun_finished else "no",
                 row.trial_dir]
        lines.append("| " + " | ".join(escape_markdown(str(cell)) for cell in cells) + " |")
    return "\n".join([f"**Trials that did not finish ({len(failed)})**", "", *lines, ""])


def markdown_damaged(damaged: Mapping[str, Sequence[Damage]]) -> str:
    """The damaged trial files (from `collect.collect_checked`, per experiment) as a Markdown list table: which
    file of which trial, what is wrong with it, and whether the trial was left out of the tables and plots."""
    count = sum(len(entries) for entries in damaged.values())
    lines = [f"**Damaged trial files ({count})**", "",
             "| Experiment | Trial folder | File | Problem | Trial left out |", "|:---|:---|:---|:---|:---|"]
    for experiment, entries in damaged.items():
        for entry in entries:
            cells = [experiment, entry.trial_dir, entry.file, entry.problem, "yes" if entry.left_out else "no"]
            lines.append("| " + " | ".join(escape_markdown(cell) for cell in cells) + " |")
    return "\n".join([*lines, ""])
