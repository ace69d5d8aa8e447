"""The report of one or more experiments: the collected table, LaTeX and Markdown tables, plots, the list of trials
that did not finish, and summary.md saying what each file shows.

    python -m analysis.report RUN [RUN ...] [--metrics top1,top5,...] [--format latex,md,png,pdf] [--out DIR]
                              [--phase best|final] [--split val|test] [--group N] [--fusion probabilities|logits]
                              [--latex-fit auto|span|column|none]

RUN is an experiment folder: a path, a file:// URI or the storage URI it ran with (s3://..., which needs --out).
Everything goes to <first RUN>/report/ for the val split and to <first RUN>/report/<split>/ for another one (so the
val report stays), unless --out says otherwise. Bad input exits with status 2 and one line.

On another split than val the metrics are those `python -m ablations.evaluate RUN --split test` recorded for each
trial's best weights; where the split's labels are withheld (MA-52's test set), each variant and ensemble gets a file
for the evaluation server instead (analysis.submission). Tables and plots use the trials of one setting of each
experiment (analysis.groups: the newest, or --group N), and add a row per stream ensemble (analysis.ensembles).
"""
from __future__ import annotations

if __name__ == "__main__":  # --help answers before pandas and matplotlib load
    from analysis.cli import report_parser
    from mmn.cli import answer_help_early

    answer_help_early(report_parser)

import json
import os
import re
import sys
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Sequence
from urllib.parse import unquote, urlparse

import pandas as pd

from mmn.atomic import write_text
from mmn.folders import REPORT, split_result_file

from .cli import FORMATS, FUSIONS, IMAGE_FORMATS, LATEX_FITS, report_parser
from .collect import ExperimentError, ExperimentInfo, collect, read_experiment, save_table
from .columns import DEFAULT_METRICS, METRICS, PHASES, check_metrics, metric_column, variant_label
from .ensembles import EnsembleError, ensemble_rows, ensembles_note, fuse_streams
from .groups import describe_settings, setting_rows, settings
from .plots import (NothingToPlot, plot_confusion, plot_cost_accuracy, plot_learning_curves, plot_metric_bars,
                    plot_param_importance)
from .stats import counted_trials, failed_trials, summarize
from .submission import labels_withheld, write_submissions
from .tables import LATEX_PREAMBLE, latex_table, markdown_failed, markdown_table

LATEX_PREAMBLE_FILE = "preamble.tex"  # what table.tex needs, for the paper's preamble: \input{preamble.tex}
SERVER = "MA-52 evaluation server"


class ReportError(ValueError):
    """The report was asked for something that cannot be done (unknown metric or format, nowhere to write)."""


def _default_out(run: str, split: str = "val") -> Path:
    parsed = urlparse(run)
    if "://" not in run:
        folder = Path(run)
    elif parsed.scheme == "file":
        folder = Path(unquote(parsed.path))
    else:
        raise ReportError(f"{run} is not a local folder: say where the report goes with --out")
    return folder / REPORT if split == "val" else folder / REPORT / split


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
           formats: list[str], phase: str, split: str, prefix: str) -> tuple[list[tuple[Path, str]], list[str]]:
    """Every figure of one experiment: (file, what it shows) pairs, and a note for each figure left out."""
    metric = _metric_name(info)
    header = METRICS[metric].header
    on = "" if split == "val" else f" on the {split} split"
    jobs = [
        ("bars", f"mean over seeds per variant with 95% CI and single seeds{on}, one panel per metric "
                 f"({', '.join(metrics)})",
         lambda stem: plot_metric_bars(table, summary, info, out, metrics, phase=phase, split=split, formats=formats,
                                       stem=stem)),
        ("learning_curves", f"{METRICS[metric].key} by epoch per variant, mean over seeds with 95% CI band",
         lambda stem: plot_learning_curves(table, info, out, metric, formats=formats, stem=stem)),
        ("cost_accuracy", f"{header}{on} against GFLOPs per clip and against parameters, Pareto front dashed",
         lambda stem: plot_cost_accuracy(summary, info, out, metric, formats=formats, stem=stem)),
        ("param_importance", "hyperparameter importance (PED-ANOVA) in each tuned Optuna study",
         lambda stem: plot_param_importance(info, out, formats=formats, stem=stem)),
        ("confusion", f"row-normalised confusion matrix{on} of the best trial",
         lambda stem: plot_confusion(table, info, out, split=split, formats=formats, stem=stem)),
    ]
    written, notes = [], []
    for name, shows, plot in jobs:
        if split != "val" and name in ("learning_curves", "param_importance"):
            notes.append(f"{prefix + name} ({info.name}) not drawn: it shows training on the val split (see the val "
                         f"report)")
            continue
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


def _one_setting(table: pd.DataFrame, experiments: Sequence[ExperimentInfo],
                 number: int) -> tuple[pd.DataFrame, pd.Series, list[str]]:
    """`table` with each trial's setting number (column "setting"), which rows tables and plots use (setting
    `number` of each experiment), and a line for each experiment whose folder holds several settings."""
    table = table.assign(setting=pd.Series(pd.NA, index=table.index, dtype="Int64"))
    keep = pd.Series(False, index=table.index)
    lines = []
    for info in experiments:
        found = settings(table, info)
        if not found:
            keep |= table["experiment"] == info.name
            continue
        if number > len(found):
            raise ReportError(f"{info.location} holds trials of {len(found)} setting{'s' * (len(found) > 1)}; "
                              f"--group {number} does not exist (1 is the newest)")
        mine = table["experiment"] == info.name
        for setting in found:
            table.loc[mine & table["trial_dir"].isin(setting.trial_dirs), "setting"] = setting.number
        keep |= setting_rows(table, info, found[number - 1])
        if len(found) > 1:
            lines.append(describe_settings(info, found, found[number - 1]))
    return table, keep, lines


def _not_evaluated(table: pd.DataFrame, info: ExperimentInfo, split: str) -> tuple[list[str], list[str]]:
    """A line saying how many finished trials lack the split's evaluation and how to make it, and one per trial;
    ReportError if none has it."""
    trials = counted_trials(table)
    trials = trials[(trials["experiment"] == info.name) & (trials["row"] == "summary")]
    missing = trials[~trials["evaluated"].fillna(False).astype(bool)]
    command = f"python -m ablations.evaluate {info.location} --split {split}"
    if len(trials) and len(missing) == len(trials):
        raise ReportError(f"no trial of {info.location} was evaluated on {split} (no {split_result_file(split)}): "
                          f"run {command}")
    if missing.empty:
        return [], []
    line = (f"{len(missing)} of {len(trials)} finished trials of {info.name} were not evaluated on {split} and are "
            f"left out: run {command}")
    listed = [f"{variant_label(json.loads(row['variant']), info.factor_labels)}, seed {row['seed']}: "
              f"{row['trial_dir']}" for _, row in missing.iterrows()]
    return [line], listed


def _ensembles_and_submissions(table: pd.DataFrame, experiments: Sequence[ExperimentInfo],
                               withheld: list[ExperimentInfo], split: str, phase: str, fusion: str, out: Path,
                               messages: list[str]) -> tuple[list[pd.DataFrame], list[str], list[tuple[Path, str]]]:
    """The ensemble rows of the experiments whose split has labels, with the caption notes saying what they are;
    the server files of those whose labels are withheld (variants and ensembles). Adds what to tell to `messages`."""
    rows, caption_notes, fused_of = [], [], {}
    for info in experiments:
        if not info.ensembles:
            continue
        if phase != "best":
            messages.append(f"{info.name}: ensembles fuse the best epoch's predictions: no ensemble rows with "
                            f"--phase {phase}")
            continue
        fused, notes = fuse_streams(table, info, split, fusion)
        fused_of[info.name] = fused
        messages += notes
        if fused and info not in withheld:
            rows.append(ensemble_rows(fused, info, split))
            caption_notes.append(ensembles_note(info, fusion) if len(experiments) == 1
                                 else f"{info.name}: {ensembles_note(info, fusion)}")
    files = []
    for info in withheld:
        prefix = "" if len(experiments) == 1 else re.sub(r"[^\w.-]+", "_", info.name) + "_"
        try:
            written = write_submissions(table, info, split, out, fused_of.get(info.name, []), prefix)
        except EnsembleError:
            raise
        except ValueError as error:  # e.g. not MA-52: the server takes MA-52's 52 classes only
            raise ReportError(f"cannot write the server files of {info.name}: {error}") from None
        files += written
        messages.append(f"{info.name}: {split} labels are withheld: upload these to the {SERVER}: "
                        + ", ".join(path.name for path, _ in written) + f" (in {out})")
    return rows, caption_notes, files


def _summary_markdown(experiments: Sequence[ExperimentInfo], table: pd.DataFrame, metrics: list[str], phase: str,
                      split: str, withheld: int, files: list[tuple[Path, str]], notes: list[str],
                      messages: list[str], not_evaluated: list[str], out: Path) -> str:
    trials = table[table["row"] == "summary"]
    lines = [f"# Report: {', '.join(info.name for info in experiments)}", ""]
    for info in experiments:
        status = trials.loc[trials["experiment"] == info.name, "status"].value_counts()
        counts = ", ".join(f"{count} {name}" for name, count in status.items()) or "no trials"
        lines.append(f"- **{info.name}** ({info.location}): {info.description or 'no description'}; "
                     f"trials: {counts}.")
    if split == "val":
        measured = (f"Metrics: {', '.join(metrics)}, validation values at the {phase} epoch "
                    f"({'best epoch of each trial' if phase == 'best' else 'last epoch'}).")
    elif withheld == len(experiments):
        measured = f"No metrics: the {split} labels are withheld."
    else:
        measured = (f"Metrics: {', '.join(metrics)}, {split} values of each trial's best-validation weights "
                    f"(python -m ablations.evaluate).")
    lines += ["", measured, ""]
    lines += [f"- {message}" for message in messages] + ([""] if messages else [])
    if not_evaluated:
        lines += [f"Not evaluated on {split}:", *[f"- {entry}" for entry in not_evaluated], ""]
    lines += ["| File | What it shows |", "|:---|:---|"]
    lines += [f"| {path.relative_to(out).as_posix()} | {shows} |" for path, shows in files]
    if notes:
        lines += ["", "Not written or drawn:", *[f"- {note}" for note in notes]]
    return "\n".join(lines) + "\n"


def build_report(run_dirs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                 metrics: Sequence[str] | None = None, formats: Sequence[str] | None = None,
                 out_dir: str | os.PathLike[str] | None = None, *, phase: str = "best", split: str = "val",
                 group: int = 1, fusion: str = "probabilities", latex_fit: str = "auto",
                 say: Callable[[str], None] = print) -> Path:
    """Write the report of the experiments in `run_dirs` and return its folder.

    metrics: short names (see analysis.columns.METRICS); by default the paper's (top1, top5, body_top1, f1_mean)
    that the runs recorded. formats: any of latex, md, png, pdf (default all). out_dir: default <first run>/report,
    or <first run>/report/<split> for a split other than val. phase: "best" (best-epoch values, the default) or
    "final". split: "val" (the trial records' metrics) or another split that ablations.evaluate evaluated. group: which
    setting of each experiment the tables use, 1 the newest (analysis.groups). fusion: how ensembles fuse their
    streams (analysis.ensembles.FUSIONS). latex_fit: how table.tex fits the page (analysis.tables.LATEX_FITS); its
    preamble goes to preamble.tex. `say` gets each line worth telling on the console (several settings,
    trials not evaluated, server files). ReportError, ExperimentError or EnsembleError on bad input.
    """
    runs = [os.fspath(run_dirs)] if isinstance(run_dirs, (str, os.PathLike)) else [os.fspath(r) for r in run_dirs]
    if not runs:
        raise ReportError("no experiment folder given")
    formats = _check_choices(formats, FORMATS, "format")
    phase = _check_choices([phase], PHASES, "phase")[0]
    fusion = _check_choices([fusion], FUSIONS, "fusion")[0]
    latex_fit = _check_choices([latex_fit], LATEX_FITS, "LaTeX fit")[0]
    if not re.fullmatch(r"[A-Za-z0-9_-]+", split):
        raise ReportError(f"split must be a name such as val or test, got {split!r}")
    if split != "val" and phase != "best":
        raise ReportError(f"--phase {phase} has no {split} values: ablations.evaluate evaluates each trial's best "
                          f"weights only")
    if group < 1:
        raise ReportError(f"--group counts settings from 1 (the newest), got {group}")
    try:
        metrics = None if metrics is None else check_metrics(list(metrics))
    except ValueError as error:
        raise ReportError(str(error)) from None
    if split != "val" and metrics and "train_loss" in metrics:
        raise ReportError(f"train_loss is measured on the training data: it has no {split} value")
    out = Path(out_dir) if out_dir is not None else _default_out(runs[0], split)  # before any remote read
    experiments = [read_experiment(run) for run in runs]
    names = [info.name for info in experiments]
    if len(set(names)) < len(names):
        raise ReportError(f"several runs share an experiment name ({', '.join(names)}); their rows would mix")

    collected, keep, messages = _one_setting(
        pd.concat([collect(run, split) for run in runs], ignore_index=True), experiments, group)
    table = collected[keep]
    not_evaluated: list[str] = []
    if split != "val":
        for info in experiments:
            line, listed = _not_evaluated(table, info, split)
            messages += line
            not_evaluated += listed
    withheld = [info for info in experiments if split != "val" and labels_withheld(table, info)]
    extra_rows, caption_notes, submitted = _ensembles_and_submissions(table, experiments, withheld, split, phase,
                                                                      fusion, out, messages)
    for message in messages:
        say(message)

    collected = pd.concat([collected, *(rows.assign(setting=group) for rows in extra_rows)], ignore_index=True)
    table = pd.concat([table, *extra_rows], ignore_index=True)
    if metrics is None:
        recorded = [name for name in DEFAULT_METRICS
                    if table.get(metric_column(name, phase, split), pd.Series()).notna().any()]
        metrics = recorded or ["top1"]
    summary = summarize(table, experiments, metrics, phase, split)

    kinds = "one row per trial and epoch plus a summary row per trial" + (
        ", and one per ensemble and seed" if any(len(rows) for rows in extra_rows) else "")
    files = [(path, f"the collected table: {kinds}; column setting numbers the settings of the trials, the tables "
                    f"use setting {group}") for path in save_table(collected, out)] + submitted
    notes: list[str] = []
    for name, wanted, write, shows in [
            ("table.tex", "latex", partial(latex_table, fit=latex_fit),
             f"the ablation table in LaTeX (booktabs; --latex-fit {latex_fit}); put "
             f"`\\input{{{LATEX_PREAMBLE_FILE}}}` in the document's preamble"),
            ("table.md", "md", markdown_table, "the ablation table in Markdown")]:
        path = out / name
        if wanted not in formats:
            continue
        if len(withheld) < len(experiments):  # with every experiment's labels withheld there is nothing to tabulate
            write_text(path, write(summary, experiments, metrics, phase=phase, split=split, notes=caption_notes))
            files.append((path, shows))
            if wanted == "latex":
                write_text(out / LATEX_PREAMBLE_FILE, LATEX_PREAMBLE)
                files.append((out / LATEX_PREAMBLE_FILE, "the lines table.tex needs in the document's preamble "
                                                         "(article, acmart, IEEEtran)"))
        else:
            path.unlink(missing_ok=True)  # left from an earlier report, no longer true
            if wanted == "latex":
                (out / LATEX_PREAMBLE_FILE).unlink(missing_ok=True)
            notes.append(f"{name} not written: the {split} labels are withheld; the {SERVER} scores the server files")
    failed = failed_trials(table)
    failed_path = out / "failed.md"
    if len(failed):
        write_text(failed_path, markdown_failed(failed, experiments))
        files.append((failed_path, f"trials that did not finish ({len(failed)}), with their errors"))
    else:
        failed_path.unlink(missing_ok=True)  # left from an earlier report, no longer true
    images = [extension for extension in formats if extension in IMAGE_FORMATS]
    if images:
        for info in experiments:
            prefix = "" if len(experiments) == 1 else re.sub(r"[^\w.-]+", "_", info.name) + "_"
            if info in withheld:
                notes.append(f"{info.name}: no plots, the {split} labels are withheld")
                continue
            written, skipped = _plots(table, summary, info, out, metrics, images, phase, split, prefix)
            files += written
            notes += skipped
    write_text(out / "summary.md", _summary_markdown(experiments, table, metrics, phase, split, len(withheld), files,
                                                     notes, messages, not_evaluated, out))
    return out


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [part.strip() for part in text.split(",") if part.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (2 on bad input)."""
    args = report_parser().parse_args(argv)
    try:
        out = build_report(args.runs, metrics=_split(args.metrics), formats=_split(args.format), out_dir=args.out,
                           phase=args.phase, split=args.split, group=args.group, fusion=args.fusion,
                           latex_fit=args.latex_fit)
    except (ReportError, ExperimentError, EnsembleError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"report written to {out} (see {out / 'summary.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
