"""The report of one or more experiments: the collected table, LaTeX and Markdown tables, plots, the list of trials
that did not finish, and summary.md saying what each file shows.

    python -m analysis.report RUN [RUN ...] [--metrics top1,top5,...] [--format latex,md,png,pdf] [--out DIR]
                              [--phase best|final]

RUN is an experiment folder: a path, a file:// URI or the storage URI it ran with (s3://..., which needs --out).
Everything goes to <first RUN>/report/ unless --out says otherwise. Bad input exits with status 2 and one line.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Iterable, Sequence
from urllib.parse import unquote, urlparse

import pandas as pd

from mmn.atomic import write_text

from .collect import ExperimentError, ExperimentInfo, collect, read_experiment, save_table
from .columns import DEFAULT_METRICS, METRICS, PHASES, check_metrics, metric_column
from .plots import FORMATS as IMAGE_FORMATS
from .plots import (NothingToPlot, plot_confusion, plot_cost_accuracy, plot_learning_curves, plot_metric_bars,
                    plot_param_importance)
from .stats import failed_trials, summarize
from .tables import LATEX_PREAMBLE, latex_table, markdown_failed, markdown_table

FORMATS = ("latex", "md", *IMAGE_FORMATS)


class ReportError(ValueError):
    """The report was asked for something that cannot be done (unknown metric or format, nowhere to write)."""


def _default_out(run: str) -> Path:
    parsed = urlparse(run)
    if "://" not in run:
        return Path(run) / "report"
    if parsed.scheme == "file":
        return Path(unquote(parsed.path)) / "report"
    raise ReportError(f"{run} is not a local folder: say where the report goes with --out")


def _check_choices(values: Iterable[str] | None, valid: Sequence[str], what: str) -> list[str]:
    chosen = list(valid if values is None else values)
    unknown = [value for value in chosen if value not in valid]
    if unknown or not chosen:
        raise ReportError(f"unknown {what} {', '.join(map(repr, unknown)) or '(none given)'}; "
                          f"valid {what}s: {', '.join(valid)}")
    return chosen


def _metric_name(info: ExperimentInfo) -> str:
    """The short name of the metric the experiment optimised (for curves, cost plots and the best trial)."""
    return next((name for name, spec in METRICS.items() if spec.key == info.metric), "top1")


def _plots(table: pd.DataFrame, summary: pd.DataFrame, info: ExperimentInfo, out: Path, metrics: list[str],
           formats: list[str], phase: str, prefix: str) -> tuple[list[tuple[Path, str]], list[str]]:
    """Every figure of one experiment: (file, what it shows) pairs, and a note for each figure left out."""
    metric = _metric_name(info)
    header = METRICS[metric].header
    jobs = [
        ("bars", f"mean over seeds per variant with 95% CI and single seeds, one panel per metric "
                 f"({', '.join(metrics)})",
         lambda stem: plot_metric_bars(table, summary, info, out, metrics, phase=phase, formats=formats, stem=stem)),
        ("learning_curves", f"{METRICS[metric].key} by epoch per variant, mean over seeds with 95% CI band",
         lambda stem: plot_learning_curves(table, info, out, metric, formats=formats, stem=stem)),
        ("cost_accuracy", f"{header} against GFLOPs per clip and against parameters, Pareto front dashed",
         lambda stem: plot_cost_accuracy(summary, info, out, metric, formats=formats, stem=stem)),
        ("param_importance", "hyperparameter importance (PED-ANOVA) in each tuned Optuna study",
         lambda stem: plot_param_importance(info, out, formats=formats, stem=stem)),
        ("confusion", "row-normalised confusion matrix of the best trial",
         lambda stem: plot_confusion(table, info, out, formats=formats, stem=stem)),
    ]
    written, notes = [], []
    for name, shows, plot in jobs:
        try:
            paths = plot(prefix + name)
        except NothingToPlot as reason:
            notes.append(f"{prefix + name} ({info.name}) not drawn: {reason}")
            continue
        for path in paths:
            level = " (body level)" if path.stem.endswith("_body") else (
                " (action level)" if path.stem.endswith("_action") else "")
            written.append((path, f"{info.name}: {shows}{level}"))
    return written, notes


def _summary_markdown(experiments: Sequence[ExperimentInfo], table: pd.DataFrame, metrics: list[str], phase: str,
                      files: list[tuple[Path, str]], notes: list[str], out: Path) -> str:
    trials = table[table["row"] == "summary"]
    lines = [f"# Report: {', '.join(info.name for info in experiments)}", ""]
    for info in experiments:
        status = trials.loc[trials["experiment"] == info.name, "status"].value_counts()
        counts = ", ".join(f"{count} {name}" for name, count in status.items()) or "no trials"
        lines.append(f"- **{info.name}** ({info.location}): {info.description or 'no description'}; "
                     f"trials: {counts}.")
    lines += ["", f"Metrics: {', '.join(metrics)}, validation values at the {phase} epoch "
                  f"({'best epoch of each trial' if phase == 'best' else 'last epoch'}).", "",
              "| File | What it shows |", "|:---|:---|"]
    lines += [f"| {path.relative_to(out).as_posix()} | {shows} |" for path, shows in files]
    if notes:
        lines += ["", "Not drawn:", *[f"- {note}" for note in notes]]
    return "\n".join(lines) + "\n"


def build_report(run_dirs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                 metrics: Sequence[str] | None = None, formats: Sequence[str] | None = None,
                 out_dir: str | os.PathLike[str] | None = None, *, phase: str = "best") -> Path:
    """Write the report of the experiments in `run_dirs` and return its folder.

    metrics: short names (see analysis.columns.METRICS); by default the paper's (top1, top5, body_top1, f1_mean)
    that the runs recorded. formats: any of latex, md, png, pdf (default all). out_dir: default <first run>/report.
    phase: "best" (best-epoch values, the default) or "final". ReportError or ExperimentError on bad input.
    """
    runs = [os.fspath(run_dirs)] if isinstance(run_dirs, (str, os.PathLike)) else [os.fspath(r) for r in run_dirs]
    if not runs:
        raise ReportError("no experiment folder given")
    formats = _check_choices(formats, FORMATS, "format")
    phase = _check_choices([phase], PHASES, "phase")[0]
    try:
        metrics = None if metrics is None else check_metrics(list(metrics))
    except ValueError as error:
        raise ReportError(str(error)) from None
    out = Path(out_dir) if out_dir is not None else _default_out(runs[0])  # before any remote read
    experiments = [read_experiment(run) for run in runs]
    names = [info.name for info in experiments]
    if len(set(names)) < len(names):
        raise ReportError(f"several runs share an experiment name ({', '.join(names)}); their rows would mix")

    table = pd.concat([collect(run) for run in runs], ignore_index=True)
    if metrics is None:
        recorded = [name for name in DEFAULT_METRICS
                    if table.get(metric_column(name, phase), pd.Series()).notna().any()]
        metrics = recorded or ["top1"]
    summary = summarize(table, experiments, metrics, phase)

    files = [(path, "the collected table: one row per trial and epoch plus a summary row per trial")
             for path in save_table(table, out)]
    if "latex" in formats:
        path = out / "table.tex"
        write_text(path, latex_table(summary, experiments, metrics, phase=phase))
        preamble = LATEX_PREAMBLE.strip().replace("\n", " ")
        files.append((path, f"the ablation table in LaTeX (booktabs); preamble: `{preamble}`"))
    if "md" in formats:
        path = out / "table.md"
        write_text(path, markdown_table(summary, experiments, metrics, phase=phase))
        files.append((path, "the ablation table in Markdown"))
    failed = failed_trials(table)
    failed_path = out / "failed.md"
    if len(failed):
        write_text(failed_path, markdown_failed(failed, experiments))
        files.append((failed_path, f"trials that did not finish ({len(failed)}), with their errors"))
    else:
        failed_path.unlink(missing_ok=True)  # left from an earlier report, no longer true
    notes = []
    images = [extension for extension in formats if extension in IMAGE_FORMATS]
    if images:
        for info in experiments:
            prefix = "" if len(experiments) == 1 else re.sub(r"[^\w.-]+", "_", info.name) + "_"
            written, skipped = _plots(table, summary, info, out, metrics, images, phase, prefix)
            files += written
            notes += skipped
    write_text(out / "summary.md", _summary_markdown(experiments, table, metrics, phase, files, notes, out))
    return out


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [part.strip() for part in text.split(",") if part.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (2 on bad input)."""
    parser = argparse.ArgumentParser(prog="python -m analysis.report",
                                     description="Tables and plots of finished experiments.")
    parser.add_argument("runs", nargs="+", metavar="RUN", help="experiment folder, file:// or s3:// URI")
    parser.add_argument("--metrics", help=f"comma-separated, from: {', '.join(METRICS)} "
                                          f"(default: {', '.join(DEFAULT_METRICS)}, those recorded)")
    parser.add_argument("--format", help=f"comma-separated, from: {', '.join(FORMATS)} (default: all)")
    parser.add_argument("--out", help="report folder (default: <first RUN>/report)")
    parser.add_argument("--phase", default="best", choices=PHASES,
                        help="metric values at the best epoch (default) or the final one")
    args = parser.parse_args(argv)
    try:
        out = build_report(args.runs, metrics=_split(args.metrics), formats=_split(args.format), out_dir=args.out,
                           phase=args.phase)
    except (ReportError, ExperimentError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"report written to {out} (see {out / 'summary.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
