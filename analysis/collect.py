"""Read an experiment folder into one tidy table, and the other files analysis needs from it. Reads only.

The folder may be given as a local path, a file:// URI or any URI pyarrow.fs understands (s3://...), i.e. the
storage URI the experiment ran with; all access goes through pyarrow.fs, never Ray.

The table has two kinds of row, told apart by the column "row":
- "summary": one per trial, from its record (mmn.folders.RESULT, or result.json in folders written before it had
  its own name; mmn.folders.record_paths); "epoch" is <NA>. These come first, ordered by trial folder.
- "epoch": one per trial and epoch, from the history.jsonl beside it; then these, in the same trial order.
Trial identity (experiment, trial_dir, trial_id, config_hash, variant, one column per factor named by its dotted
key, seed, status, search_phase) is filled on both kinds. Measurements are filled on their own kind only: summary
rows hold error, params, gflops, throughput_*, final_*, best_*, best_epoch, epochs_*, wall_time_s, started, ended,
search_study, search_trial, config and search_sampled (canonical JSON of the record's resolved config and of the
values a search chose) and has_predictions; epoch rows hold history's keys (train_loss, lr, val_top1, ...).
`variant` is the canonical JSON of the variant's settings (see columns.variant_key); trial_dir is the trial's folder
relative to the experiment folder.

Collected for another split than val (`collect(folder, split="test")`), summary rows also hold what
`python -m ablations.evaluate` wrote beside the record (mmn.folders.split_result_file): evaluated (whether the
trial has that file, for its own configuration), labels_withheld (its metrics are null: the split's labels are not
public), weights_epoch and the metrics test_top1, test_top5, ...; has_predictions then says whether the split's
predictions file (mmn.folders.predictions_file) is there.
"""
from __future__ import annotations

import io
import itertools
import json
import math
import os
import posixpath
import tempfile
import warnings
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import optuna
import pandas as pd
import pyarrow.fs as pafs

from mmn.atomic import atomic_write
from mmn.folders import (EXPERIMENT, EXPERIMENT_FORMAT, HISTORY, RESULT, RESULT_FORMAT, SPLIT_RESULT_FORMAT, STUDY,
                         check_version, predictions_file, record_paths, split_result_file)
from mmn.metrics import METRIC_NAMES

from .columns import variant_key

# Reads are I/O bound (local disk or object store); threads overlap them while the main thread parses.
_READ_THREADS = 8
_INTEGER_COLUMNS = ("seed", "epoch", "best_epoch", "epochs_completed", "epochs_planned", "search_trial", "params")


class ExperimentError(ValueError):
    """The folder is not an experiment this version can read (missing, malformed or from a newer version)."""


class DamagedFile(ExperimentError):
    """One file of a trial folder (or the study journal) is truncated, hand-edited or of a newer format."""


@dataclass(frozen=True)
class ExperimentInfo:
    """experiment.json, with defaults filled in."""

    location: str  # the path or URI it was read from
    name: str
    description: str
    factors: dict[str, list[Any]]
    factor_labels: dict[str, str]
    reference: dict[str, Any] | None  # the full model's settings
    metric: str  # result key that selects the best trial, e.g. "val_top1"
    mode: str  # "max" or "min"
    seeds: list[int]
    dataset: str
    planned_variants: list[dict[str, Any]] | None = None  # the variants the experiment ran (its spec's exclude applied)
    ensembles: dict[str, dict[str, float]] = field(default_factory=dict)  # name → {stream: weight} (spec's ensembles)
    rule_keys: tuple[str, ...] = ()  # config keys the spec's rules set per variant
    kept_stale: int = 0  # results of older code that a rerun reused (experiment.json's kept_stale)

    def variants(self) -> list[dict[str, Any]]:
        """Every variant the experiment ran, in spec order, the reference first. Folders written before the list was
        recorded give the whole factor grid."""
        grid = self.planned_variants
        if grid is None:
            grid = [dict(zip(self.factors, values)) for values in itertools.product(*self.factors.values())]
        if self.reference is not None:
            grid = sorted(grid, key=lambda variant: variant_key(variant) != variant_key(self.reference))
        return grid


def _filesystem(location: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    text = os.fspath(location)
    if "://" not in text:
        text = os.path.abspath(text)  # FileSystem.from_uri takes URIs and absolute paths only
    filesystem, root = pafs.FileSystem.from_uri(text)
    return filesystem, root.rstrip("/")


def _read(filesystem: pafs.FileSystem, path: str) -> bytes | None:
    try:
        with filesystem.open_input_stream(path) as stream:
            return stream.read()
    except FileNotFoundError:
        return None


def _check_format(record: dict[str, Any], newest: int, where: str,
                  error: type[ExperimentError] = ExperimentError) -> None:
    if not isinstance(record.get("format_version"), int):
        raise error(f"{where} has no integer format_version; it was not written by mmn-ablate")
    check_version(record, newest, where, error=error)


def read_experiment(location: str | os.PathLike[str]) -> ExperimentInfo:
    """Read and check `location`/experiment.json; ExperimentError if missing, invalid or newer than this version."""
    filesystem, root = _filesystem(location)
    where = f"{os.fspath(location)}/{EXPERIMENT}"
    data = _read(filesystem, f"{root}/{EXPERIMENT}")
    if data is None:
        raise ExperimentError(f"no experiment at {os.fspath(location)}: {EXPERIMENT} not found")
    try:
        meta = json.loads(data)
    except ValueError as error:
        raise ExperimentError(f"{where} is not valid JSON ({error})") from None
    if not isinstance(meta, dict):
        raise ExperimentError(f"{where} must hold a JSON object")
    _check_format(meta, EXPERIMENT_FORMAT, where)
    try:
        return _experiment_info(meta, location, root)
    except (TypeError, ValueError, AttributeError) as error:  # hand-edited: a field of the wrong type
        raise ExperimentError(f"{where} is damaged ({type(error).__name__}: {error}); restore it from the spec "
                              f"(rerun python -m ablations.run with the same spec and --name)") from None


def _experiment_info(meta: dict[str, Any], location: str | os.PathLike[str], root: str) -> ExperimentInfo:
    factors = {str(key): _unique(values) for key, values in dict(meta.get("factors") or {}).items()}
    spec = meta.get("spec") or {}  # the spec as run; folders written before it was recorded lack it
    variants = meta.get("variants")
    if variants is not None:
        variants = list({variant_key(dict(variant)): dict(variant) for variant in variants}.values())
    return ExperimentInfo(
        location=os.fspath(location),
        name=str(meta.get("name") or posixpath.basename(root)),
        description=str(meta.get("description") or ""),
        factors=factors,
        factor_labels={key: str((meta.get("factor_labels") or {}).get(key, key)) for key in factors},
        reference=meta.get("reference"),
        metric=str(meta.get("metric") or "val_top1"),
        mode=str(meta.get("mode") or "max"),
        seeds=list(meta.get("seeds") or []),
        dataset=str(meta.get("dataset") or ""),
        planned_variants=variants,
        ensembles={str(name): dict(streams) for name, streams in (spec.get("ensembles") or {}).items()},
        rule_keys=tuple(dict.fromkeys(key for rule in spec.get("rules") or [] for key in rule.get("set") or {})),
        kept_stale=int(meta.get("kept_stale") or 0),
    )


def _unique(values: Any) -> list[Any]:
    """A factor's values without repeats (a hand-edited or older experiment.json may list one twice)."""
    if not isinstance(values, list):
        raise TypeError(f"a factor's values must be a list, got {type(values).__name__}")
    return list({json.dumps(value, sort_keys=True): value for value in values}.values())


def _read_all(filesystem: pafs.FileSystem, paths: list[str]) -> list[bytes | None]:
    # A few large chunks, not a future per file: on a local disk the per-future overhead outweighs the overlap.
    size = max(1, -(-len(paths) // (4 * _READ_THREADS)))
    chunks = [paths[start:start + size] for start in range(0, len(paths), size)]
    with ThreadPoolExecutor(_READ_THREADS) as pool:
        return [data for chunk in pool.map(lambda chunk: [_read(filesystem, path) for path in chunk], chunks)
                for data in chunk]


def _is_foreign(data: bytes, beside_history: bool) -> bool:
    """Whether an unparseable record of an old folder (named result.json) is someone else's: Ray Tune writes its
    own result.json, one JSON object per line."""
    if beside_history:
        return False  # our trial folder: the file is our own, cut short
    first_line = data.split(b"\n", 1)[0]
    if not first_line.strip():
        return True  # Ray creates its result.json empty before a trial's first report
    try:
        first = json.loads(first_line)
    except ValueError:
        return False
    return isinstance(first, dict) and "config_hash" not in first


class Damage(NamedTuple):
    """A file of a trial folder that is cut short, of a newer format or hand-edited."""

    trial_dir: str  # relative to the experiment folder
    file: str  # its name, e.g. trial_result.json
    problem: str  # what is wrong with it, for failed.md
    left_out: bool  # whether the trial is left out of tables and plots because of it


_INTEGER_FIELDS = ("seed", "best_epoch", "epochs_completed", "epochs_planned", "params")
_NUMBER_FIELDS = ("gflops", "wall_time_s")
_TEXT_FIELDS = ("trial_id", "config_hash", "status", "error", "started", "ended")


def _is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    # Any int is finite (math.isfinite would overflow on a huge one); a float must not be NaN or infinite.
    return _is_integer(value) or (isinstance(value, float) and math.isfinite(value))


def _record_problem(record: dict[str, Any]) -> str | None:
    """What makes a parsed trial record unusable (hand-edited, cut down, newer), or None if it can be read."""
    version = record.get("format_version")
    if not _is_integer(version):
        return "no integer format_version"
    if version > RESULT_FORMAT:
        return f"written by a newer mmn-ablate (format {version}, this one reads {RESULT_FORMAT}); upgrade mmn-ablate"
    wrong = [key for key in _TEXT_FIELDS if record.get(key) is not None and not isinstance(record[key], str)]
    wrong += [key for key in _INTEGER_FIELDS if record.get(key) is not None
              and not (_is_integer(record[key]) and abs(record[key]) < 2 ** 63)]  # the table's Int64 columns
    wrong += [key for key in _NUMBER_FIELDS if record.get(key) is not None and not _is_number(record[key])]
    wrong += [key for key in ("variant", "search", "throughput", "final", "best")
              if record.get(key) is not None and not isinstance(record[key], dict)]
    if wrong:
        return f"wrong type or value for {', '.join(wrong)}"
    for phase in ("final", "best", "throughput"):
        bad = [key for key, value in (record.get(phase) or {}).items() if value is not None and not _is_number(value)]
        if bad:
            return f"{phase} holds values that are not finite numbers: {', '.join(f'{phase}.{key}' for key in bad)}"
    if record.get("status") == "finished" and not (record.get("best") and record.get("final")):
        return "marked finished but holds no metrics (best, final)"
    return None


def _damaged_record(record: Any, problem: str, name: str) -> dict[str, Any]:
    """A failed-trial record keeping what can still be trusted of `record` to name the trial in failed.md."""
    record = record if isinstance(record, dict) else {}
    kept: dict[str, Any] = {"format_version": RESULT_FORMAT, "status": "damaged", "error": f"{name}: {problem}"}
    for key, check in (("config_hash", lambda v: isinstance(v, str)), ("trial_id", lambda v: isinstance(v, str)),
                       ("seed", _is_integer), ("variant", lambda v: isinstance(v, dict) and all(
                           isinstance(x, (str, int, float, bool)) or x is None for x in v.values()))):
        kept[key] = record.get(key) if check(record.get(key)) else None
    return kept


def _summary_row(record: dict[str, Any], trial_dir: str, has_predictions: bool) -> dict[str, Any]:
    search = record.get("search") or {}
    variant = record.get("variant")
    row: dict[str, Any] = {
        "trial_dir": trial_dir,
        "trial_id": record.get("trial_id"),
        "config_hash": record.get("config_hash"),
        "variant": None if variant is None else variant_key(variant),
        "seed": record.get("seed"),
        "status": record.get("status"),
        "error": record.get("error"),
        "search_study": search.get("study"),
        "search_trial": search.get("optuna_trial"),
        "search_phase": search.get("phase"),
        "row": "summary",
        "params": record.get("params"),
        "gflops": record.get("gflops"),
        "best_epoch": record.get("best_epoch"),
        "epochs_completed": record.get("epochs_completed"),
        "epochs_planned": record.get("epochs_planned"),
        "wall_time_s": record.get("wall_time_s"),
        "started": record.get("started"),
        "ended": record.get("ended"),
        "config": _canonical(record.get("config")),
        "search_sampled": _canonical(search.get("sampled")),
        "has_predictions": has_predictions,
    }
    row.update({f"throughput_{key}": value for key, value in (record.get("throughput") or {}).items()})
    for phase in ("final", "best"):
        row.update({f"{phase}_{key}": value for key, value in (record.get(phase) or {}).items()})
    row.update(variant or {})
    return row


def _canonical(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


def _split_columns(data: bytes | None, path: str, config_hash: Any, split: str) -> dict[str, Any]:
    """The columns of one trial's split_result_file(split); not evaluated when missing or made for another config."""
    columns: dict[str, Any] = {"evaluated": False, "labels_withheld": None, "weights_epoch": None}
    if data is None:
        return columns
    try:
        record = json.loads(data)
    except ValueError:
        raise DamagedFile("not valid JSON (cut short?); rerun python -m ablations.evaluate") from None
    if not isinstance(record, dict):
        raise DamagedFile("does not hold a JSON object; rerun python -m ablations.evaluate")
    _check_format(record, SPLIT_RESULT_FORMAT, path, error=DamagedFile)
    if record.get("config_hash") != config_hash:
        return columns  # the trial folder now holds another configuration's run: its evaluation is stale
    metrics = record.get("metrics")
    if metrics is not None and not (isinstance(metrics, dict) and all(
            value is None or _is_number(value) for value in metrics.values())):
        raise DamagedFile("its metrics are not finite numbers; rerun python -m ablations.evaluate")
    columns.update(evaluated=True, labels_withheld=metrics is None, weights_epoch=record.get("weights_epoch"))
    columns.update({key: value for key, value in (metrics or {}).items() if key.startswith(f"{split}_")})
    return columns


def _parse_history(data: bytes, path: str, bad: list[str]) -> list[dict[str, Any]]:
    lines = [line for line in data.splitlines() if line.strip()]
    try:
        # One parse per file, as a JSON array: about three times faster than a json.loads per line.
        return json.loads(b"[" + b",".join(lines) + b"]")
    except ValueError:
        pass
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            bad.append(path)  # a running trial may be mid-write on its last line
    return parsed


def collect(location: str | os.PathLike[str], split: str = "val") -> pd.DataFrame:
    """The tidy table of the experiment at `location` (see the module docstring for its rows and columns); a `split`
    other than "val" adds each trial's evaluation on that split.

    A record that is not valid JSON counts as a failed trial with error "unreadable trial_result.json" (its file
    name), and one warning lists every such file; one that is hand-edited, cut down or newer than this version
    counts as a trial with status "damaged" whose error says what is wrong (`collect_checked` lists every damaged
    file). Records without "format_version" and "config_hash" are not ours (Ray's own result.json in an old folder)
    and are skipped. ExperimentError if experiment.json is missing, damaged or from a newer version.
    """
    table, _ = collect_checked(location, split)
    return table


def collect_checked(location: str | os.PathLike[str], split: str = "val") -> tuple[pd.DataFrame, list[Damage]]:
    """`collect`'s table, and every damaged file it met, each trial's once per file (see Damage)."""
    info = read_experiment(location)
    filesystem, root = _filesystem(location)
    files = {entry.path for entry in filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
             if entry.type == pafs.FileType.File}
    result_paths = record_paths(files)

    summaries: list[dict[str, Any]] = []
    folders: list[str] = []
    split_paths: list[str] = []
    damaged: list[Damage] = []
    factors = dict.fromkeys(info.factors)  # ordered set: the spec's factors, then any others the trials name
    unreadable: list[str] = []
    for path, data in zip(result_paths, _read_all(filesystem, result_paths)):
        folder = posixpath.dirname(path)
        # Paths listed under root start with root + "/": slicing is far cheaper than posixpath.relpath.
        trial_dir = folder[len(root) + 1:] or "."
        name = posixpath.basename(path)
        try:
            record = json.loads(data or b"")
        except ValueError:
            if _is_foreign(data or b"", f"{folder}/{HISTORY}" in files):
                continue
            unreadable.append(path)
            damaged.append(Damage(trial_dir, name, "not valid JSON (cut short or hand-edited)", True))
            record = {"format_version": RESULT_FORMAT, "config_hash": None, "status": "failed",
                      "error": f"unreadable {name}"}
        ours = f"{folder}/{HISTORY}" in files or name == RESULT
        if not isinstance(record, dict) or "format_version" not in record or "config_hash" not in record:
            if not ours:
                continue  # Ray's own result.json in an old folder
            problem = ("does not hold a JSON object" if not isinstance(record, dict)
                       else "lacks format_version or config_hash")
        else:
            problem = _record_problem(record)
        if problem is not None:
            damaged.append(Damage(trial_dir, name, problem, True))
            record = _damaged_record(record, problem, name)
        factors.update(dict.fromkeys(record.get("variant") or {}))
        summaries.append(_summary_row(record, trial_dir, f"{folder}/{predictions_file(split)}" in files))
        folders.append(folder)
        split_paths.append(f"{folder}/{split_result_file(split)}")
    if unreadable:
        warnings.warn(f"{len(unreadable)} unreadable trial records (invalid JSON), counted as failed trials: "
                      + ", ".join(unreadable), stacklevel=2)

    split_columns: list[str] = []
    if split != "val":
        present = [path for path in split_paths if path in files]
        contents = dict(zip(present, _read_all(filesystem, present)))
        for row, path in zip(summaries, split_paths):
            try:
                row.update(_split_columns(contents.get(path), path, row["config_hash"], split))
            except DamagedFile as error:
                row.update(_split_columns(None, path, None, split))
                damaged.append(Damage(row["trial_dir"], split_result_file(split), str(error), True))
        split_columns = [*_split_columns(None, "", None, split), *(f"{split}_{name}" for name in METRIC_NAMES)]

    identity = ["experiment", "trial_dir", "trial_id", "config_hash", "variant", *factors, "seed", "status",
                "search_phase"]
    summary = pd.DataFrame.from_records(summaries)
    summary["experiment"] = info.name
    # Every documented column exists even when no trial does, so callers can filter without checking.
    columns = [*identity, "row", "epoch", *_summary_row({}, "", False), *split_columns]
    summary = summary.reindex(columns=list(dict.fromkeys([*columns, *summary.columns])))
    epochs = _epoch_rows(filesystem, files, folders, summary[identity], damaged)
    table = pd.concat([summary, epochs], ignore_index=True)
    for column in _INTEGER_COLUMNS:
        table[column] = table[column].astype("Int64")
    for column in ("has_predictions", *(["evaluated", "labels_withheld"] if split_columns else [])):
        table[column] = table[column].astype("boolean")
    return table, damaged


def _epoch_rows(filesystem: pafs.FileSystem, files: set[str], folders: list[str], identity: pd.DataFrame,
                damaged: list[Damage]) -> pd.DataFrame:
    """history.jsonl of each trial (row i of `identity` lives in folders[i]), one row per line; lines that are not
    an epoch's record of numbers are left out and their file added to `damaged`."""
    owners = [i for i, folder in enumerate(folders) if f"{folder}/{HISTORY}" in files]
    paths = [f"{folders[i]}/{HISTORY}" for i in owners]
    records: list[dict[str, Any]] = []
    record_owner: list[int] = []
    bad: list[str] = []
    for owner, path, data in zip(owners, paths, _read_all(filesystem, paths)):
        lines = _parse_history(data or b"", path, bad)
        usable = [line for line in lines if _is_epoch(line)]
        if len(usable) < len(lines) or path in bad:
            wrong = len(lines) - len(usable) + bad.count(path)
            damaged.append(Damage(identity["trial_dir"].iloc[owner], HISTORY,
                                  f"{wrong} line{'s' * (wrong > 1)} unreadable or not an epoch's numbers, left out "
                                  f"of the learning curves", False))
        records.extend(usable)
        record_owner.extend([owner] * len(usable))
    if bad:
        warnings.warn(f"skipped unreadable lines in {len(set(bad))} {HISTORY}: {', '.join(sorted(set(bad)))}",
                      stacklevel=3)
    # Built column-wise once: repeating the trial's identity by index is far cheaper than per-row dicts.
    epochs = pd.DataFrame.from_records(records) if records else pd.DataFrame({"epoch": []})
    owned = identity.iloc[record_owner].reset_index(drop=True)
    return pd.concat([owned, epochs.assign(row="epoch")], axis=1)


def _is_epoch(line: Any) -> bool:
    """Whether a parsed history line is an epoch's record: an integer epoch and finite numbers (or null)."""
    return (isinstance(line, dict) and _is_integer(line.get("epoch")) and 0 <= line["epoch"] < 2 ** 63
            and all(value is None or _is_number(value) for value in line.values()))


def _parquet_ready(table: pd.DataFrame) -> pd.DataFrame:
    """Parquet columns hold one type: a factor mixing e.g. strings and booleans is stored as text."""
    mixed = [column for column in table.columns if table[column].dtype == object
             and len({type(value) for value in table[column].dropna()}) > 1]
    return table.assign(**{column: table[column].map(str, na_action="ignore") for column in mixed})


def save_table(table: pd.DataFrame, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Write `table` as out_dir/results.parquet and out_dir/results.csv, each atomically; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [
        atomic_write(out / "results.parquet", lambda handle: _parquet_ready(table).to_parquet(handle, index=False)),
        atomic_write(out / "results.csv", lambda handle: table.to_csv(handle, index=False), binary=False),
    ]


def read_bytes(location: str | os.PathLike[str], relative_path: str) -> bytes | None:
    """The content of `relative_path` inside the experiment folder, or None if there is no such file."""
    filesystem, root = _filesystem(location)
    return _read(filesystem, f"{root}/{relative_path}")


class Predictions(NamedTuple):
    """A trial's predictions on one split, in the split's clip order."""

    logits: np.ndarray  # (N, classes)
    labels: np.ndarray  # (N,), -1 where the split's labels are withheld
    names: np.ndarray | None  # (N,) clip names; None in files written before names were recorded
    where: str  # the file, relative to the experiment folder, for messages


def load_predictions(location: str | os.PathLike[str], trial_dir: str, split: str = "val") -> Predictions | None:
    """The predictions on `split` of the trial in `trial_dir` (val: at its best epoch), or None if it saved none."""
    where = f"{trial_dir}/{predictions_file(split)}"
    data = read_bytes(location, where)
    if data is None:
        return None
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            names = arrays["names"].astype(str) if "names" in arrays.files else None
            predictions = Predictions(arrays["logits"], arrays["labels"], names, where)
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as error:
        raise DamagedFile(f"{where} is unreadable, cut short or hand-edited ({type(error).__name__}: {error}); "
                          f"copy it again or rerun the trial") from None
    logits, labels = predictions.logits, predictions.labels
    if (logits.ndim != 2 or labels.ndim != 1 or len(labels) != len(logits) or logits.dtype.kind not in "fiu"
            or labels.dtype.kind not in "iu" or (names is not None and len(names) != len(labels))):
        raise DamagedFile(f"{where} does not hold (N, classes) logits with N labels and clip names; copy it again "
                          f"or rerun the trial")
    return predictions


def check_predictions(location: str | os.PathLike[str], trial_dir: str, split: str = "val") -> str | None:
    """What is wrong with a trial's predictions file on `split` (see load_predictions), or None if it loads."""
    try:
        load_predictions(location, trial_dir, split)
    except DamagedFile as error:
        return str(error)
    return None


def load_studies(location: str | os.PathLike[str]) -> list[optuna.Study]:
    """Every Optuna study in the experiment's study.journal (none without one), copied into memory.

    The journal is copied to a temporary file first: Optuna's file backend opens its file for appending, which
    would fail on a read-only copy and must never touch a journal a running experiment is writing.
    """
    data = read_bytes(location, STUDY)
    if data is None:
        return []
    try:
        return _copy_studies(data)
    except Exception as error:  # noqa: BLE001 - Optuna raises many kinds on a torn or hand-edited journal
        raise DamagedFile(f"{STUDY} is cut short or hand-edited ({type(error).__name__}: {error})") from None


def _copy_studies(data: bytes) -> list[optuna.Study]:
    studies = []
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # copying would log "A new study created" per study
    try:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder, STUDY)
            path.write_bytes(data)
            journal = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
            for name in optuna.study.get_all_study_names(journal):
                memory = optuna.storages.InMemoryStorage()
                optuna.copy_study(from_study_name=name, from_storage=journal, to_storage=memory)
                studies.append(optuna.load_study(study_name=name, storage=memory))
    finally:
        optuna.logging.set_verbosity(verbosity)
    return studies
