"""`python -m ablations.evaluate RUN --split test`: the best weights of every finished trial, evaluated on a split.

For each trial of the experiment folder RUN whose record (mmn.folders.RESULT) says finished, the trial's
best_weights.pt (`mmn.model.load`) runs over the split with the trial's own data config (`mmn.train.predict`), and
the trial folder gets the predictions (`mmn.folders.predictions_file`: logits, labels, clip names) and a record of
the metrics (`mmn.folders.split_result_file`). A trial already evaluated with the same weights is skipped. No Ray
is started: this reads and writes files only, so it runs wherever the experiment folder was copied to.

Exit status: 0 when every finished trial is evaluated (now or before), 1 when some could not be (each is named,
with why), 2 for usage errors (no experiment there, unknown split, data folder missing, no such device).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any


from mmn.atomic import write_json
from mmn.config import DataConfig, RunConfig
from mmn.folders import (BEST_WEIGHTS, RESULT, SPLIT_RESULT_FORMAT, NewerFormat, check_version, predictions_file,
                         split_result_file)
from mmn.metrics import evaluate
from mmn.suggest import closest

from .storage import check_format, locate

if TYPE_CHECKING:  # the heavy imports (torch, Ray) wait until a split is evaluated: --help stays instant
    import torch

    from mmn.data import SkeletonDataset

SPLITS = ("val", "test")  # the train split samples frames at random: there is nothing fixed to evaluate
DEVICES = ("auto", "cpu", "cuda")


class UsageError(Exception):
    """Nothing can be evaluated as asked (exit status 2); the message says what to pass instead."""


@dataclass
class _Pending:
    """A finished trial whose best weights have not been evaluated on the split yet."""

    name: str
    folder: Path
    config: RunConfig
    config_hash: str
    epoch: int


@dataclass
class _Tally:
    evaluated: int = 0
    skipped: int = 0
    failed: int = 0

    def fail(self, name: str, reason: str) -> None:
        self.failed += 1
        print(f"  FAILED {name}: {reason}", flush=True)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m ablations.evaluate",
        description="Evaluate the best weights of every finished trial of an experiment on a split; writes "
                    "<split>_predictions.npz and <split>_result.json into each trial folder.")
    parser.add_argument("run", help="experiment folder, as python -m ablations.run wrote it (e.g. runs/msm_mtm)")
    parser.add_argument("--split", required=True, help=f"split to evaluate: {' or '.join(SPLITS)}")
    parser.add_argument("--data-root", help="folder holding the data set's files, for every trial (default: each "
                                            "trial's own data.root; needed when the results moved machines)")
    parser.add_argument("--batch-size", type=_positive, help="clips per forward pass (default: each trial's "
                                                             "train.eval_batch_size)")
    parser.add_argument("--device", default="auto", choices=DEVICES, help="auto takes the GPU if there is one")
    parser.add_argument("--force", action="store_true", help="evaluate again trials already evaluated")
    return parser


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text}")
    return value


def _check_split(split: str) -> None:
    if split == "train":
        raise UsageError(f"--split train is not evaluated (its frames are drawn at random); choose "
                         f"{' or '.join(SPLITS)}")
    if split not in SPLITS:
        close = closest(split, SPLITS)
        raise UsageError(f"unknown split {split!r}{f' (did you mean {close}?)' if close else ''}; "
                         f"choose {' or '.join(SPLITS)}")


def _finished_trials(run: str) -> tuple[list[dict[str, Any]], int]:
    """The finished trials' records (each with `_dir`), in folder order, and how many did not finish."""
    if "://" in run and not run.startswith("file://"):
        raise UsageError(f"{run} is not a local folder; copy the experiment here first (evaluation writes into it)")
    path = Path(run.removeprefix("file://")).expanduser()
    if not path.is_dir():
        raise UsageError(f"no experiment folder {run}; pass the folder python -m ablations.run wrote, e.g. "
                         "runs/msm_mtm")
    experiment = locate(str(path.resolve().parent), path.resolve().name)
    check_format(experiment)
    from .runner import scan_results

    records = list(scan_results(experiment).values())
    if not records:
        raise UsageError(f"{run} holds no trials (no {RESULT} below it); pass an experiment folder, e.g. "
                         "runs/msm_mtm")
    finished = sorted((r for r in records if r.get("status") == "finished"), key=lambda r: r["_dir"])
    return finished, len(records) - len(finished)


def _name(record: dict[str, Any]) -> str:
    key = record.get("variant_key")
    return f"{key} seed {record.get('seed')}" if key else record["_dir"]


def _already_evaluated(folder: Path, split: str, config_hash: str, epoch: int) -> bool:
    """Whether the split's record in `folder` was made from these weights (and its predictions are there)."""
    try:
        record = json.loads((folder / split_result_file(split)).read_text())
    except (OSError, ValueError):
        return False  # none yet, or damaged: evaluate again
    check_version(record, SPLIT_RESULT_FORMAT, str(folder / split_result_file(split)))
    return (isinstance(record, dict) and record.get("config_hash") == config_hash
            and record.get("weights_epoch") == epoch and (folder / predictions_file(split)).is_file())


def _plan(records: list[dict[str, Any]], split: str, force: bool, tally: _Tally) -> list[_Pending]:
    """The trials to evaluate; those that cannot be, or need not be, are told and counted here."""
    from mmn.checkpoint import read_weights

    pending = []
    for record in records:
        name, folder = _name(record), Path(record["_dir"])
        try:
            weights = read_weights(folder / BEST_WEIGHTS)
            if weights.get("config_hash") != record.get("config_hash"):
                raise ValueError(f"{folder / BEST_WEIGHTS} belongs to another configuration than the trial's "
                                 f"record ({weights.get('config_hash')} vs {record.get('config_hash')})")
            if not force and _already_evaluated(folder, split, weights["config_hash"], weights["epoch"]):
                tally.skipped += 1
                print(f"  {name}: already evaluated on {split} (weights of epoch {weights['epoch']}); --force "
                      "evaluates it again", flush=True)
                continue
            config = RunConfig.from_dict(weights["config"])
        except ValueError as error:  # no weights (a run from before they were kept), foreign, unreadable
            tally.fail(name, str(error))
            continue
        pending.append(_Pending(name, folder, config, weights["config_hash"], weights["epoch"]))
    return pending


def _data(trial: _Pending, data_root: str | None) -> tuple[DataConfig, int]:
    """What the split's preprocessed clips depend on: the data config (root replaced when given) and frames."""
    data = trial.config.data if data_root is None else replace(trial.config.data, root=data_root)
    return data, trial.config.model.num_frames


def _check_data_roots(pending: list[_Pending]) -> None:
    """The data folders the trials recorded, which exist only on the machine they trained on."""
    for root in sorted({trial.config.data.root for trial in pending} - {None}):
        if "://" not in root and not Path(root).exists():
            raise UsageError(f"data folder {root} does not exist; pass --data-root with the folder holding the "
                             "data set's files (trials record the path of the machine they trained on)")


def _metrics(logits: Any, labels: Any, split: str, dataset: Any) -> dict[str, float] | None:
    """The split's metrics, named like f"{split}_top1"; None when its labels are withheld (all -1, MA-52 test)."""
    withheld = labels < 0
    if withheld.all():
        return None
    if withheld.any():
        raise ValueError(f"{withheld.sum()} of the {split} split's {len(labels)} labels are withheld (-1) and the "
                         "others are not; check the data files")
    return {f"{split}_{name}": round(value, 4) for name, value in evaluate(logits, labels, dataset).items()}


def _evaluate(trial: _Pending, dataset: SkeletonDataset, split: str, device: torch.device,
              batch_size: int | None) -> dict[str, Any]:
    """Run the trial's best weights over the split; write its predictions, then its record (last: it marks done)."""
    import torch

    from mmn.model import load
    from mmn.train import predict, save_predictions

    model = load(trial.folder / BEST_WEIGHTS, device)
    # as in training: bf16 autocast on CUDA when the trial trained with it, so val reproduces the recorded best
    amp = trial.config.train.amp and device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if amp else None
    logits, labels = predict(model, dataset, device, batch_size or trial.config.train.eval_batch_size, autocast)
    metrics = _metrics(logits, labels, split, trial.config.data.skeleton())  # data.layout's classes, if it names some
    save_predictions(trial.folder / predictions_file(split), logits, labels, dataset.names)
    record = {"format_version": SPLIT_RESULT_FORMAT, "split": split, "config_hash": trial.config_hash,
              "weights_epoch": trial.epoch, "metrics": metrics, "clips": len(labels),
              "evaluated": datetime.now(timezone.utc).isoformat(timespec="seconds"), "device": str(device)}
    write_json(trial.folder / split_result_file(split), record)
    return record


def _describe(record: dict[str, Any], split: str) -> str:
    metrics = record["metrics"]
    shown = (f"{split}_top1", f"{split}_top5")
    scores = ("labels withheld: predictions only" if metrics is None
              else " ".join(f"{name} {metrics[name]:.2f}" for name in shown))
    return f"{scores} ({record['clips']} clips, weights of epoch {record['weights_epoch']})"


def evaluate_experiment(run: str, split: str, data_root: str | None = None, batch_size: int | None = None,
                        device: str = "auto", force: bool = False) -> int:
    """Evaluate every finished trial of `run` on `split`, one line each; the exit status (0 or 1).

    Raises `UsageError` (before evaluating anything) when nothing can be evaluated as asked."""
    from mmn.runtime import resolve_device
    from mmn.train import load_split

    _check_split(split)
    if data_root and "://" not in data_root and not Path(data_root).is_dir():
        raise UsageError(f"--data-root {data_root} is not a folder; pass the folder holding the data set's files")
    try:
        chosen = resolve_device(device)
    except RuntimeError:
        raise UsageError(f"--device {device} but no CUDA device is visible; use --device cpu or auto") from None
    records, unfinished = _finished_trials(run)
    if not records:
        print(f"no finished trial in {run} to evaluate ({unfinished} unfinished)")
        return 1
    tally = _Tally()
    print(f"evaluating {len(records)} finished trials of {run} on {split} ({chosen})", flush=True)
    pending = _plan(records, split, force, tally)
    if not data_root:
        _check_data_roots(pending)
    groups: dict[tuple[DataConfig, int], list[_Pending]] = {}
    for trial in pending:  # trials that share a data config share one load of the split
        groups.setdefault(_data(trial, data_root), []).append(trial)
    for (data, num_frames), trials in groups.items():
        try:
            # the seed only draws training samples: val and test clips are the same for every seed
            dataset = load_split(data, split, num_frames, seed=0)
        except (ValueError, OSError) as error:  # bad data files, e.g. a corrupt pickle
            for trial in trials:
                tally.fail(trial.name, f"cannot load the {split} split of {data.root or 'the built-in set'}: {error}")
            continue
        for trial in trials:
            try:
                record = _evaluate(trial, dataset, split, chosen, batch_size)
            except (ValueError, OSError, RuntimeError) as error:  # e.g. weights that do not fit, a full disk
                tally.fail(trial.name, f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
                continue
            tally.evaluated += 1
            print(f"  {trial.name}: {_describe(record, split)}", flush=True)
    print(f"{tally.evaluated} evaluated, {tally.skipped} already evaluated, {tally.failed} failed, of "
          f"{len(records)} finished trials" + (f" ({unfinished} unfinished, not evaluated)" if unfinished else "")
          + f"; files {predictions_file(split)} and {split_result_file(split)} in each trial folder")
    return 1 if tally.failed else 0


EXAMPLES = """examples:
  python -m ablations.evaluate runs/msm_mtm --split test
  python -m ablations.evaluate runs/msm_mtm --split val --data-root /data/ma52 --device cpu --force
  mmn-ablate evaluate runs/msm_mtm --split test
"""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.epilog, parser.formatter_class = EXAMPLES, argparse.RawDescriptionHelpFormatter
    parser.add_argument("--version", action="version", version=f"mmn-ablate {metadata.version('mmn-ablate')}")
    args = parser.parse_args(argv)
    try:
        return evaluate_experiment(args.run, args.split, args.data_root, args.batch_size, args.device, args.force)
    except (UsageError, NewerFormat) as error:  # NewerFormat: an experiment folder of a newer mmn-ablate
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
