"""The ablation table as LaTeX (booktabs) and GitHub Markdown, from `stats.summarize`; and the failed-trial list.

One column per factor (switches as check marks, other values as text), one per metric as mean ± std over seeds
with the best mean in bold and significance marks against the reference, then Params (M) and GFLOPs. Several
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

from .cli import LATEX_FITS
from .collect import Damage, ExperimentInfo
from .columns import METRICS, value_text, variant_label
from .stats import significance_note, stars

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


@dataclass(frozen=True)
class _Row:
    settings: dict[str, Any]
    is_reference: bool
    cells: list[_Cell]
    params_m: float
    gflops: float


@dataclass(frozen=True)
class _Layout:
    factors: list[str]  # dotted keys, the union over experiments in order of appearance
    factor_headers: list[str]
    groups: list[tuple[ExperimentInfo, list[_Row]]]
    notes: list[str]  # plain sentences, without the final full stop


def _layout(summary: pd.DataFrame, experiments: Sequence[ExperimentInfo], metrics: Sequence[str]) -> _Layout:
    factors = list(dict.fromkeys(key for info in experiments for key in info.factors))
    headers = {}
    for info in experiments:
        for key in info.factors:
            headers.setdefault(key, info.factor_labels.get(key, key))
    groups = []
    notes = []
    for info in experiments:
        rows = summary[summary["experiment"] == info.name]
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
                                   "" if row["is_reference"] else stars(row["p_holm"])))
            first = variant_rows.iloc[0]
            table_rows.append(_Row(json.loads(key), bool(first["is_reference"]), cells, first["params_m"],
                                   first["gflops"]))
        groups.append((info, table_rows))
        for note in [significance_note(rows, info.name), stale_note(info)]:
            if note:
                notes.append(note[0].upper() + note[1:] if len(experiments) == 1 else f"{info.name}: {note}")
    return _Layout(factors, [headers[key] for key in factors], groups, notes)


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


def _number(value: float, decimals: int) -> str | None:
    # pd.isna: a variant whose every trial failed has pd.NA (the mean of a nullable column), not NaN
    return None if pd.isna(value) else f"{float(value):.{decimals}f}"


def _default_caption(experiments: Sequence[ExperimentInfo]) -> str:
    if len(experiments) == 1:
        info = experiments[0]
        return (info.description or f"Ablation {info.name}").rstrip(".")
    return "Ablations " + ", ".join(info.name for info in experiments)


@dataclass(frozen=True)
class _Syntax:
    """How a table format writes a factor value and a metric cell (mean, spread, best in bold, significance)."""

    on: str
    off: str
    missing: str
    escape: Callable[[str], str]
    bold: Callable[[str], str]
    spread: Callable[[str], str]
    stars: Callable[[str], str]

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


_LATEX = _Syntax(on=r"\cmark", off=r"\xmark", missing="---", escape=escape_latex,
                 bold=lambda text: rf"\textbf{{{text}}}", spread=lambda text: rf"{{\scriptsize$\pm${text}}}",
                 stars=lambda text: rf"$^{{{text}}}$")
_MARKDOWN = _Syntax(on="✓", off="✗", missing="—", escape=escape_markdown, bold=lambda text: f"**{text}**",
                    spread=lambda text: f" ± {text}", stars=lambda text: " " + escape_markdown(text))


# LaTeX


def latex_table(summary: pd.DataFrame, experiments: Sequence[ExperimentInfo], metrics: Sequence[str], *,
                phase: str = "best", split: str = "val", caption: str | None = None, label: str | None = None,
                notes: Sequence[str] = (), fit: str = "auto") -> str:
    """A booktabs `table` (or `table*`) environment (needs LATEX_PREAMBLE). `caption` is plain text (escaped here);
    the notes on what the cells mean, on missing tests, on reused results and `notes` (plain sentences) are appended
    to it. `label` defaults to tab:<experiment names>; `split` and `phase` say where the values come from; `fit`
    (one of LATEX_FITS) how the table fits the page.
    """
    if fit not in LATEX_FITS:
        raise ValueError(f"unknown LaTeX fit {fit!r}; valid fits: {', '.join(LATEX_FITS)}")
    layout = _layout(summary, experiments, metrics)
    factor_headers = layout.factor_headers or ["Variant"]
    headers = ([escape_latex(header) for header in factor_headers]
               + [escape_latex(METRICS[metric].header) for metric in metrics] + ["Params (M)", "GFLOPs"])
    width = len(headers)
    rows_cells = [headers]
    lines = [r"\begin{tabular}{" + "l" * len(factor_headers) + "c" * len(metrics) + "rr}", r"\toprule",
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
            cells = [_LATEX.cell(cell, METRICS[metric].decimals) for cell, metric in zip(row.cells, metrics)]
            costs = [_number(row.params_m, 2) or "---", _number(row.gflops, 2) or "---"]
            rows_cells.append(factors + cells + costs)
            lines.append(" & ".join(factors + cells + costs) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]

    # The mark in a box (\textsuperscript), as in the rows: a bare \dag in a caption that microtype expands stops
    # acmart where its fonts are missing (TS1 bitmap fonts cannot be expanded).
    text = escape_latex(caption or _default_caption(experiments)) + (
        f". {escape_latex(_measured(phase, split))}, " + r"mean{\scriptsize$\pm$}std over seeds; best in bold; "
        r"\textsuperscript{\dag} reference; $^{*}$ $p<0.05$, $^{**}$ $p<0.01$ against the reference (paired $t$-test "
        r"over seeds, Holm-corrected).")
    text += "".join(f" {escape_latex(note)}." for note in [*layout.notes, *notes])
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
                   notes: Sequence[str] = ()) -> str:
    """The same table as GitHub Markdown: the caption above it, the notes below."""
    layout = _layout(summary, experiments, metrics)
    factor_headers = layout.factor_headers or ["Variant"]
    headers = ([escape_markdown(header) for header in factor_headers]
               + [escape_markdown(METRICS[metric].header) for metric in metrics] + ["Params (M)", "GFLOPs"])
    lines = ["| " + " | ".join(headers) + " |",
             "|" + ":---|" * len(factor_headers) + "---:|" * (len(metrics) + 2)]
    for info, rows in layout.groups:
        if len(layout.groups) > 1:
            lines.append(f"| **{escape_markdown(info.name)}** |" + " |" * (len(headers) - 1))
        for row in rows:
            factors = ([_MARKDOWN.value(row.settings[key]) if key in row.settings else "" for key in layout.factors]
                       or ["default"])
            if row.is_reference:
                factors[_marked_column(row, layout)] += " †"
            cells = [_MARKDOWN.cell(cell, METRICS[metric].decimals) for cell, metric in zip(row.cells, metrics)]
            costs = [_number(row.params_m, 2) or "—", _number(row.gflops, 2) or "—"]
            lines.append("| " + " | ".join(factors + cells + costs) + " |")

    below = [f"{_measured(phase, split)}, mean ± std over seeds; best in bold; † reference; "
             "\\* p < 0.05, \\*\\* p < 0.01 against the reference (paired t-test over seeds, Holm-corrected)."]
    below += [escape_markdown(note) + "." for note in [*layout.notes, *notes]]
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
