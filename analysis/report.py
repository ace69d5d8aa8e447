"""The report of one or more experiments: the collected table, LaTeX and Markdown tables, plots, the list of trials
that did not finish, and summary.md saying what each file shows.

    python -m analysis.report RUN [RUN ...] [--metrics top1,top5,...] [--format latex,md,png,pdf] [--out DIR]
                              [--phase best|final] [--split val|test] [--group N] [--fusion probabilities|logits]
                              [--latex-fit auto|span|column|none] [--test t|wilcoxon|bootstrap]
                              [--margin POINTS] [--no-delta]

RUN is an experiment folder: a path, a file:// URI or the storage URI it ran with (s3://..., which needs --out).
Everything goes to <first RUN>/report/ for the val split and to <first RUN>/report/<split>/ for another one (so the
val report stays), unless --out says otherwise. Bad input exits with status 2 and one line. Damaged trial files are
listed in failed.md and the report is built from the rest; when no readable finished trial remains, one line and
exit status 1. The report is built in a folder beside its place and renamed in at the end.

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
import shutil
import sys
import uuid
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterable, Sequence
from urllib.parse import unquote, urlparse

import pandas as pd

from mmn.atomic import write_text
from mmn.folders import EXPERIMENT, REPORT, predictions_file, split_result_file

from .cli import DEFAULT_MARGIN, FORMATS, FUSIONS, IMAGE_FORMATS, LATEX_FITS, TESTS, report_parser
from .collect import (Damage, DamagedFile, ExperimentError, ExperimentInfo, check_predictions, collect_checked,
                      read_bytes, read_experiment, save_table)
from .columns import DEFAULT_METRICS, METRICS, PHASES, check_metrics, metric_column, variant_key, variant_label
from .ensembles import EnsembleError, ensemble_rows, ensembles_note, fuse_streams
from .groups import describe_settings, setting_rows, settings
from .plots import (NothingToPlot, plot_confusion, plot_cost_accuracy, plot_learning_curves, plot_metric_bars,
                    plot_paired_differences, plot_param_importance)
from .stats import counted_trials, failed_trials, rank_agreement, summarize
from .tables import TEST_NAMES
from .submission import labels_withheld, write_submissions
from .tables import LATEX_PREAMBLE, latex_table, markdown_damaged, markdown_failed, markdown_table

LATEX_PREAMBLE_FILE = "preamble.tex"  # what table.tex needs, for the paper's preamble: \input{preamble.tex}
SERVER = "MA-52 evaluation server"


class ReportError(ValueError):
    """The report was asked for something that cannot be done (unknown metric or format, nowhere to write)."""


class NothingToReport(ReportError):
    """Every trial record of the folders is damaged or unfinished and some are damaged: no report to build."""


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
           formats: list[str], phase: str, split: str, prefix: str, test: str,
           margin: float) -> tuple[list[tuple[Path, str]], list[str]]:
    """Every figure of one experiment: (file, what it shows) pairs, and a note for each figure left out."""
    metric = _metric_name(info)
    header = METRICS[metric].header
    on = "" if split == "val" else f" on the {split} split"
    jobs = [
        ("paired_differences", f"{header}{on}: each variant minus the reference on the same seed (dots), their mean "
                               f"and 95% interval ({TEST_NAMES[test]}), zero and ±{margin:g} equivalence band",
         lambda stem: plot_paired_differences(table, summary, info, out, metric, phase=phase, split=split,
                                              margin=margin, formats=formats, stem=stem)),
        ("bars", f"mean over seeds per variant with 95% CI and single seeds{on}, one panel per metric "
                 f"({', '.join(metrics)})",
         lambda stem: plot_metric_bars(table, summary, info, out, metrics, phase=phase, split=split, formats=formats,
                                       stem=stem)),
        ("learning_curves", f"{METRICS[metric].key} by epoch per variant, mean over seeds with 95% CI band (single "
                            f"seeds, faint, below 5 seeds)",
         lambda stem: plot_learning_curves(table, info, out, metric, formats=formats, stem=stem)),
        ("cost_accuracy", f"{header}{on} against GFLOPs per clip and against parameters, Pareto front dashed (or "
                          f"the variant that dominates)",
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
        except (NothingToPlot, DamagedFile) as reason:
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
                               messages: list[str], final: Path) -> tuple[list[pd.DataFrame], list[str],
                                                                          list[tuple[Path, str]]]:
    """The ensemble rows of the experiments whose split has labels, with the caption notes saying what they are;
    the server files of those whose labels are withheld (variants and ensembles), written into `out` (the report
    being built, which becomes `final`). Adds what to tell to `messages`."""
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
                        + ", ".join(path.name for path, _ in written) + f" (in {final})")
    return rows, caption_notes, files


def _summary_markdown(experiments: Sequence[ExperimentInfo], table: pd.DataFrame, metrics: list[str], phase: str,
                      split: str, withheld: int, files: list[tuple[Path, str]], notes: list[str],
                      messages: list[str], not_evaluated: list[str], out: Path) -> str:
    trials = table[table["row"] == "summary"]
    lines = [f"# Report: {', '.join(info.name for info in experiments)}", ""]
    for info in experiments:
        runs = trials[trials["experiment"] == info.name]
        counted = _once_per_configuration(runs)
        counts = ", ".join(f"{count} {name}" for name, count in counted["status"].value_counts().items())
        earlier = len(runs) - len(counted)
        also = f" ({earlier} earlier runs of them, interrupted or run again, not counted)" if earlier else ""
        lines.append(f"- **{info.name}** ({info.location}): {info.description or 'no description'}; "
                     f"trials: {counts or 'no trials'}{also}.")
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


def _once_per_configuration(runs: pd.DataFrame) -> pd.DataFrame:
    """Each configuration's run that counts (a trial resumed by a later run leaves its interrupted copy `running`):
    one that finished if any did, else the newest; a record without a config hash counts on its own."""
    ordered = runs.assign(done=runs["status"] == "finished").sort_values(["done", "started"], kind="stable",
                                                                         na_position="first")
    keyed = ordered[ordered["config_hash"].notna()].drop_duplicates("config_hash", keep="last")
    return pd.concat([keyed, ordered[ordered["config_hash"].isna()]])


def _set_aside_duplicates(collected: pd.DataFrame, keep: pd.Series,
                          experiments: Sequence[ExperimentInfo]) -> tuple[pd.Series, pd.Series, list[str]]:
    """Of the used rows (`keep`), the finished trials that ran a configuration (config_hash) another used finished
    trial ran too: only the one that ended last counts, as in stats.counted_trials, so tables, plots and the CSV use
    the same trials. Returns the rows still used, which are set aside (column set_aside of the CSV) and a caption
    note per experiment that set some aside."""
    summary = collected[keep & (collected["row"] == "summary") & (collected["status"] == "finished")
                        & collected["config_hash"].notna()]
    older = summary.sort_values("ended", kind="stable").duplicated(["experiment", "config_hash"], keep="last")
    dropped = summary.loc[older[older].index, ["experiment", "trial_dir"]]
    set_aside = pd.Series(pd.MultiIndex.from_frame(collected[["experiment", "trial_dir"]]).isin(
        pd.MultiIndex.from_frame(dropped)), index=collected.index)
    notes = []
    for info in experiments:
        count = int((dropped["experiment"] == info.name).sum())
        if count:
            note = (f"{count} older finished run{'s' * (count > 1)} of a configuration that ran twice set aside: the "
                    f"newest counts")
            notes.append(note if len(experiments) == 1 else f"{info.name}: {note}")
    return keep & ~set_aside, set_aside, notes


def _damaged_predictions(collected: pd.DataFrame, keep: pd.Series, experiments: Sequence[ExperimentInfo],
                         split: str) -> dict[str, list[Damage]]:
    """Check the predictions file of every used finished trial: one that does not load is marked as missing
    (has_predictions false) in `collected`, and returned as damage per experiment."""
    damaged: dict[str, list[Damage]] = {}
    location = {info.name: info.location for info in experiments}
    rows = collected[keep & (collected["row"] == "summary") & (collected["status"] == "finished")
                     & collected["has_predictions"].fillna(False).astype(bool)]
    for index, row in rows.iterrows():
        problem = check_predictions(location[row["experiment"]], row["trial_dir"], split)
        if problem is not None:
            mine = (collected["experiment"] == row["experiment"]) & (collected["trial_dir"] == row["trial_dir"])
            collected.loc[mine, "has_predictions"] = False
            damaged.setdefault(row["experiment"], []).append(
                Damage(row["trial_dir"], predictions_file(split), problem, False))
    return damaged


def _nothing_usable(table: pd.DataFrame, damaged: dict[str, list[Damage]]) -> str | None:
    """Why no report can be built: no trial finished and some trial records are damaged (None otherwise; an
    experiment whose trials all failed still gets its report, with failed.md)."""
    left_out = [(name, entry) for name, entries in damaged.items() for entry in entries if entry.left_out]
    if not left_out or (table["status"] == "finished").any():
        return None
    first = left_out[0]
    count = sum(len(entries) for entries in damaged.values())
    return (f"nothing to report: no finished trial is readable, {count} trial file{'s' * (count > 1)} damaged "
            f"(first: {first[0]} {first[1].trial_dir}/{first[1].file}: {first[1].problem})")


def _report_files(folder: Path) -> set[str]:
    """The files an earlier report in `folder` wrote, from its summary.md's file table (empty if none)."""
    summary = folder / "summary.md"
    if not summary.is_file():
        return set()
    listed = re.findall(r"^\| ([^|]+?) \| ", summary.read_text(errors="replace"), flags=re.MULTILINE)
    return {"summary.md", *(name for name in listed if name not in ("File", ":---"))}


def _move_into_place(staging: Path, out: Path) -> None:
    """Replace `out` with the finished report in `staging` by renames, so `out` is never half old, half new.
    What `out` holds besides an earlier report's own files (another split's report, a user's files) moves over."""
    if out.exists():
        ours = _report_files(out)
        for entry in out.iterdir():
            if entry.name not in ours and not (staging / entry.name).exists() and not entry.name.startswith("."):
                entry.rename(staging / entry.name)
        old = out.with_name(f".{out.name}.{uuid.uuid4().hex[:12]}.old")
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(out)


def build_report(run_dirs: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
                 metrics: Sequence[str] | None = None, formats: Sequence[str] | None = None,
                 out_dir: str | os.PathLike[str] | None = None, *, phase: str = "best", split: str = "val",
                 group: int = 1, fusion: str = "probabilities", latex_fit: str = "auto", test: str = "t",
                 margin: float | None = None, delta: bool | None = None,
                 say: Callable[[str], None] = print) -> Path:
    """Write the report of the experiments in `run_dirs` and return its folder.

    metrics: short names (see analysis.columns.METRICS); by default the paper's (top1, top5, body_top1, f1_mean)
    that the runs recorded. formats: any of latex, md, png, pdf (default all). out_dir: default <first run>/report,
    or <first run>/report/<split> for a split other than val. phase: "best" (best-epoch values, the default) or
    "final". split: "val" (the trial records' metrics) or another split that ablations.evaluate evaluated. group: which
    setting of each experiment the tables use, 1 the newest (analysis.groups). fusion: how ensembles fuse their
    streams (analysis.ensembles.FUSIONS). latex_fit: how table.tex fits the page (analysis.tables.LATEX_FITS); its
    preamble goes to preamble.tex. test, margin: how variants are compared with the reference and the equivalence
    margin of the decisions (analysis.stats.compare; margin by default the one the experiments ran their seeds
    until decided with, else DEFAULT_MARGIN); delta: the tables' Δ columns (default: with a reference).
    Experiments of one grid run under two budgets also get the rank agreement of their variants. `say` gets each
    line worth telling on the console (several settings, trials not evaluated, server files). ReportError,
    ExperimentError or EnsembleError on bad input; NothingToReport (a ReportError) when damaged files leave no
    finished trial. Other damaged trial files never raise: they are listed in failed.md.
    """
    runs = [os.fspath(run_dirs)] if isinstance(run_dirs, (str, os.PathLike)) else [os.fspath(r) for r in run_dirs]
    if not runs:
        raise ReportError("no experiment folder given")
    formats = _check_choices(formats, FORMATS, "format")
    phase = _check_choices([phase], PHASES, "phase")[0]
    fusion = _check_choices([fusion], FUSIONS, "fusion")[0]
    latex_fit = _check_choices([latex_fit], LATEX_FITS, "LaTeX fit")[0]
    test = _check_choices([test], TESTS, "test")[0]
    if margin is not None and not 0 < margin < float("inf"):
        raise ReportError(f"--margin must be a positive number of points, got {margin}")
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
    if margin is None:
        recorded = {_recorded(info)[1] for info in experiments} - {None}
        margin = recorded.pop() if len(recorded) == 1 else DEFAULT_MARGIN
    # Built beside its place and moved in at the end: a failure midway leaves the previous report as it was.
    created = not out.parent.exists()  # report/ itself, for another split's report
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.{uuid.uuid4().hex[:12]}.tmp")
    staging.mkdir()
    try:
        _write_report(runs, experiments, staging, out, metrics, formats, phase, split, group, fusion, latex_fit,
                      _Comparing(test, margin, delta), say)
        _move_into_place(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(out.parent.iterdir()):
            out.parent.rmdir()
    return out


@dataclass(frozen=True)
class _Comparing:
    """How the report compares variants with the reference: build_report's test, margin and delta."""

    test: str
    margin: float
    delta: bool | None


def _write_report(runs: list[str], experiments: list[ExperimentInfo], out: Path, final: Path,
                  metrics: list[str] | None, formats: list[str], phase: str, split: str, group: int, fusion: str,
                  latex_fit: str, comparing: _Comparing, say: Callable[[str], None]) -> None:
    """build_report's work, into the empty folder `out` that then becomes `final`."""
    checked = [collect_checked(run, split) for run in runs]
    damaged = {info.name: found for info, (_, found) in zip(experiments, checked)}
    collected, keep, messages = _one_setting(pd.concat([table for table, _ in checked], ignore_index=True),
                                             experiments, group)
    keep, set_aside, duplicate_notes = _set_aside_duplicates(collected, keep, experiments)
    collected = collected.assign(set_aside=set_aside)
    for name, found in _damaged_predictions(collected, keep, experiments, split).items():
        damaged[name] += found
    table = collected[keep].drop(columns="set_aside")
    reason = _nothing_usable(table, damaged)
    if reason is not None:
        raise NothingToReport(reason)
    not_evaluated: list[str] = []
    if split != "val":
        for info in experiments:
            line, listed = _not_evaluated(table, info, split)
            messages += line
            not_evaluated += listed
    withheld = [info for info in experiments if split != "val" and labels_withheld(table, info)]
    extra_rows, caption_notes, submitted = _ensembles_and_submissions(table, experiments, withheld, split, phase,
                                                                      fusion, out, messages, final)
    caption_notes += duplicate_notes
    damaged_count = sum(len(found) for found in damaged.values())
    if damaged_count:
        messages.append(f"{damaged_count} damaged trial file{'s' * (damaged_count > 1)} (see failed.md): the report "
                        f"is built from the rest")

    collected = pd.concat([collected, *(rows.assign(setting=group, set_aside=False) for rows in extra_rows)],
                          ignore_index=True)
    table = pd.concat([table, *extra_rows], ignore_index=True)
    if metrics is None:
        recorded = [name for name in DEFAULT_METRICS
                    if table.get(metric_column(name, phase, split), pd.Series()).notna().any()]
        metrics = recorded or ["top1"]
    # the paired-differences figure compares on each experiment's own metric, which --metrics may leave out
    own = [name for name in dict.fromkeys(_metric_name(info) for info in experiments) if name not in metrics]
    summary = summarize(table, experiments, [*metrics, *own], phase, split, test=comparing.test,
                        margin=comparing.margin)
    messages += _budget_agreement(summary, experiments)
    for message in messages:
        say(message)

    kinds = "one row per trial and epoch plus a summary row per trial" + (
        ", and one per ensemble and seed" if any(len(rows) for rows in extra_rows) else "")
    files = [(path, f"the collected table: {kinds}; column setting numbers the settings of the trials, the tables "
                    f"use setting {group}; set_aside marks older runs of a configuration that ran twice, which they "
                    f"leave out") for path in save_table(collected, out)] + submitted
    notes: list[str] = []
    for name, wanted, write, shows in [
            ("table.tex", "latex", partial(latex_table, fit=latex_fit, delta=comparing.delta, test=comparing.test,
                                           margin=comparing.margin),
             f"the ablation table in LaTeX (booktabs; --latex-fit {latex_fit}); put "
             f"`\\input{{{LATEX_PREAMBLE_FILE}}}` in the document's preamble"),
            ("table.md", "md", partial(markdown_table, delta=comparing.delta, test=comparing.test,
                                       margin=comparing.margin), "the ablation table in Markdown")]:
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
            notes.append(f"{name} not written: the {split} labels are withheld; the {SERVER} scores the server files")
    failed = failed_trials(table)
    if len(failed) or damaged_count:
        text = markdown_failed(failed, experiments) if len(failed) else ""
        if damaged_count:
            text += ("\n" if text else "") + markdown_damaged(damaged)
        write_text(out / "failed.md", text)
        files.append((out / "failed.md", f"trials that did not finish ({len(failed)}), with their errors"
                      + (f", and damaged trial files ({damaged_count})" if damaged_count else "")))
    images = [extension for extension in formats if extension in IMAGE_FORMATS]
    if images:
        for info in experiments:
            prefix = "" if len(experiments) == 1 else re.sub(r"[^\w.-]+", "_", info.name) + "_"
            if info in withheld:
                notes.append(f"{info.name}: no plots, the {split} labels are withheld")
                continue
            written, skipped = _plots(table, summary, info, out, metrics, images, phase, split, prefix,
                                      comparing.test, comparing.margin)
            files += written
            notes += skipped
    write_text(out / "summary.md", _summary_markdown(experiments, table, metrics, phase, split, len(withheld), files,
                                                     notes, messages, not_evaluated, out))


def _recorded(info: ExperimentInfo) -> tuple[str | None, float | None]:
    """From experiment.json: the budget the experiment last ran under, and the margin its seeds until decided used
    (the budget's rule, else the spec's; ablations.spec.SeedsUntilDecided); None where not recorded."""
    data = read_bytes(info.location, EXPERIMENT)
    try:
        record = json.loads(data) if data else {}
        budget = record.get("budget")
        spec = record.get("spec") or {}
        own = (spec.get("budgets") or {}).get(budget) or {}
        until = own.get("until") or (spec.get("until") if not own.get("seeds") else None) or {}
        margin = until.get("margin")
    except (ValueError, AttributeError):
        return None, None
    return (budget if isinstance(budget, str) else None,
            float(margin) if isinstance(margin, (int, float)) and not isinstance(margin, bool) else None)


def _budget_agreement(summary: pd.DataFrame, experiments: Sequence[ExperimentInfo]) -> list[str]:
    """For each two experiments of the same variants run under different budgets (e.g. a quick and a paper run, each
    under its own --name), one line: Kendall's tau between their variants' ranks by the metric each optimised, with
    its p-value; whether the cheap run predicts the expensive one."""
    lines = []
    for index, first in enumerate(experiments):
        for second in experiments[index + 1:]:
            budgets = _recorded(first)[0], _recorded(second)[0]
            same = (first.factors == second.factors
                    and sorted(map(variant_key, first.variants())) == sorted(map(variant_key, second.variants())))
            if not same or None in budgets or budgets[0] == budgets[1] or first.metric != second.metric:
                continue
            metric = _metric_name(first)
            tau, p, n = rank_agreement(summary, first.name, second.name, metric)
            if n < 3:
                lines.append(f"{first.name} ({budgets[0]}) and {second.name} ({budgets[1]}): {n} variants with "
                             f"results in both, too few to compare their ranks")
                continue
            lines.append(f"{first.name} ({budgets[0]}) and {second.name} ({budgets[1]}) rank their {n} variants by "
                         f"{METRICS[metric].header.replace(' (%)', '')} with Kendall's tau = {tau:.2f} "
                         f"(p = {p:.3g}): {_agreement(tau, p)}")
    return lines


def _agreement(tau: float, p: float) -> str:
    if pd.isna(tau):
        return "no ranking to compare (ties throughout)"
    if p < 0.05:
        return "the cheaper run predicts the order" if tau > 0 else "the orders are reversed"
    return "no agreement beyond chance"


def _split(text: str | None) -> list[str] | None:
    return None if text is None else [part.strip() for part in text.split(",") if part.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (2 on bad input)."""
    args = report_parser().parse_args(argv)
    try:
        out = build_report(args.runs, metrics=_split(args.metrics), formats=_split(args.format), out_dir=args.out,
                           phase=args.phase, split=args.split, group=args.group, fusion=args.fusion,
                           latex_fit=args.latex_fit, test=args.test, margin=args.margin, delta=args.delta)
    except NothingToReport as error:  # the input was read, and holds nothing usable: not a usage error
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (ReportError, ExperimentError, EnsembleError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"report written to {out} (see {out / 'summary.md'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
