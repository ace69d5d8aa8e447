"""One training run with the release's protocol: `fit(config)` and `python -m mmn.train [key=value ...]`.

The run knows nothing of Ray or Optuna: it reports each epoch through `on_epoch(metrics, checkpoint_dir)`, so
the same run works from the command line, a notebook or a Ray trial. Each epoch leaves an atomic checkpoint; a run
started again on the same folder resumes from it and continues bit-exactly on the CPU.
"""
from __future__ import annotations

if __name__ == "__main__":  # --help answers before torch loads (the parser needs none)
    from mmn.cli import answer_help_early, train_parser

    answer_help_early(train_parser)

import contextlib
import errno
import functools
import json
import math
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml
from tqdm import tqdm

from .atomic import atomic_write, write_json
from .checkpoint import CheckpointMismatch, load_checkpoint, save_checkpoint, save_weights
from .cli import train_parser
from .config import (BUDGETS, ConfigError, DataConfig, RunConfig, apply_overrides, flatten, parse_assignments,
                     with_budget)
from .data import SkeletonDataset
from .data.formats import DataFormatError
from .data.safe_pickle import CorruptPickleError, UnsafePickleError
from .data.synthetic import ensure_synthetic
from .folders import HISTORY, RECORDED_METRICS, RESULT, RESULT_FORMAT, VALIDATION_PREFIX, predictions_file
from .metrics import evaluate
from .model import MMN, fuse_for_inference
from .profile import count_gflops
from .provenance import provenance
from .runtime import hardware, num_threads, peak_memory_mib, resolve_device, tune_cpu_allocator
from .schedule import warmup_cosine
from .yamlfile import YamlError, kind, load_yaml

_WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EDQUOT, errno.EFBIG}
EpochCallback = Callable[[dict[str, Any], Path | None], None]
# The paper model evaluates at 34-36 clips/s in batches of 32-64 on 2 CPU cores, 23-24 in batches of 256 (whose
# activations no longer fit in cache), 2026-12-04, AMD EPYC: train.eval_batch_size (256) is sized for GPUs.
CPU_EVAL_BATCH = 64


class TrainingDiverged(RuntimeError):
    """The loss stopped being a finite number."""


@functools.lru_cache(maxsize=8)
def load_split(data: DataConfig, split: str, num_frames: int, seed: int) -> SkeletonDataset:
    """A preprocessed split, kept for the life of the process: a Ray worker running many trials loads it once."""
    root = data.root or ensure_synthetic(seed=data.synthetic_seed, clips_per_class=data.synthetic_clips_per_class,
                                         long_tail=data.synthetic_long_tail)
    return SkeletonDataset(root, dataset=data.dataset, split=split, modality=data.modality, num_frames=num_frames,
                           augment=data.augment, bones=data.bones, format=data.format, seed=seed)


class _Progress:
    """One status line per epoch; within an epoch a tqdm bar that redraws in place when the output is a terminal."""

    def __init__(self, enabled: bool, epochs: int) -> None:
        self.enabled, self.epochs = enabled, epochs
        self.live = enabled and sys.stderr.isatty()
        self.bar: tqdm | None = None

    def step(self, epoch: int, step: int, steps: int, loss: float) -> None:
        if not self.live:
            return
        if self.bar is None:
            self.bar = tqdm(total=steps, desc=f"epoch {epoch}/{self.epochs}", unit="step", leave=False,
                            file=sys.stderr, dynamic_ncols=True)
        self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        self.bar.update(1)

    def epoch(self, record: dict[str, Any]) -> None:
        if self.bar is not None:  # gone before the epoch's line, which stays
            self.bar.close()
            self.bar = None
        if self.enabled:
            print(f"epoch {record['epoch']}/{self.epochs}  loss {record['train_loss']:.4f}  "
                  f"val top1 {record['val_top1']:.2f}  top5 {record['val_top5']:.2f}  lr {record['lr']:.2e}  "
                  f"{record['time_s']:.1f}s", file=sys.stderr, flush=True)


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def _shuffle(size: int, seed: int, epoch: int) -> np.ndarray:
    """This epoch's order, a function of (seed, epoch) alone so a resumed run draws the same batches."""
    return np.random.Generator(np.random.Philox(key=seed, counter=[1, 0, 0, epoch])).permutation(size)


def _make_optimizer(model: torch.nn.Module, config: RunConfig) -> torch.optim.Optimizer:
    train = config.train
    if train.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=train.lr, momentum=train.momentum,
                               weight_decay=train.weight_decay, nesterov=True)
    return torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)


def _to_device(batch: tuple[torch.Tensor, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    if device.type != "cuda":
        return batch
    return tuple(t.pin_memory().to(device, non_blocking=True) for t in batch)


def predict(model: torch.nn.Module, dataset: SkeletonDataset, device: torch.device, batch_size: int,
            autocast: contextlib.AbstractContextManager | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels of a whole split in eval mode.

    On a CPU an MMN is folded for inference first (`fuse_for_inference`: same logits, faster), from its current
    weights, and batches hold at most `CPU_EVAL_BATCH` clips. On a GPU it runs as trained: there the folding is
    neither measured faster nor tested under autocast.
    """
    model.eval()
    if device.type == "cpu":
        batch_size = min(batch_size, CPU_EVAL_BATCH)
        if isinstance(model, MMN):
            model = fuse_for_inference(model)
    logits = []
    with torch.inference_mode(), (autocast or contextlib.nullcontext()):
        for start in range(0, len(dataset), batch_size):
            x, index_t, _ = _to_device(dataset.get_batch(np.arange(start, min(start + batch_size, len(dataset)))),
                                       device)
            logits.append(model(x, index_t).float().cpu())
    return torch.cat(logits).numpy(), dataset.labels


def save_predictions(path: str | Path, logits: np.ndarray, labels: np.ndarray, names: list[str]) -> Path:
    """A split's predictions as an .npz: logits float32 (N, K), labels int64 (N,; -1 where withheld), and the clips'
    names (str, N), so rows can be matched to clips (e.g. for MA-52's server file)."""
    return atomic_write(path, lambda f: np.savez_compressed(
        f, logits=logits.astype(np.float32), labels=labels.astype(np.int64), names=np.asarray(names, dtype=str)))


def fit(config: RunConfig, on_epoch: EpochCallback | None = None, checkpoint_dir: str | Path | None = None,
        out_dir: str | Path | None = None, extra: dict[str, Any] | None = None, progress: bool = True) -> dict[str, Any]:
    """Train one model; returns the result (also written to `out_dir`/RESULT, default `checkpoint_dir`).

    `extra` is merged into that record (a Ray trial adds its experiment, variant and trial id). A checkpoint
    already in `checkpoint_dir` is resumed from; one of another configuration is an error.
    """
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
    out_dir = Path(out_dir) if out_dir else checkpoint_dir
    resolved = config.to_dict()
    config_hash = config.hash()
    extra = extra or {}
    origin = extra.get("provenance") or provenance(config.train.device)  # a Ray trial's has its driver's argv
    result: dict[str, Any] = {
        "format_version": RESULT_FORMAT, "status": "running", "error": None, "provenance": origin, **extra,
        "seed": config.train.seed, "config": resolved, "config_hash": config_hash,
        "epochs_planned": config.train.epochs, "epochs_completed": 0, "versions": origin["versions"],
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    started = time.perf_counter()
    try:
        with num_threads(config.train.threads):  # the caller's setting comes back when the run ends
            return _train(config, result, on_epoch, checkpoint_dir, out_dir, progress, started)
    except BaseException as error:
        result.update(status="failed", error=f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}",
                      wall_time_s=round(time.perf_counter() - started, 3))
        if out_dir:
            write_json(out_dir / RESULT, result)
        raise


def _train(config: RunConfig, result: dict[str, Any], on_epoch: EpochCallback | None, checkpoint_dir: Path | None,
           out_dir: Path | None, show_progress: bool, started: float) -> dict[str, Any]:
    train = config.train
    device = resolve_device(train.device)
    if device.type == "cpu":
        tune_cpu_allocator()
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if train.amp and device.type == "cuda"
                else contextlib.nullcontext())
    result["hardware"] = hardware(device)

    train_set = load_split(config.data, "train", config.model.num_frames, train.seed)
    val_set = load_split(config.data, "val", config.model.num_frames, train.seed)
    steps_per_epoch = len(train_set) // train.batch_size
    if train.max_steps:
        steps_per_epoch = min(steps_per_epoch, train.max_steps)
    if steps_per_epoch == 0:
        raise ConfigError(f"train.batch_size={train.batch_size} exceeds the {len(train_set)} training clips")

    _seed_everything(train.seed)
    model = MMN(config.model)
    result["params"] = sum(p.numel() for p in model.parameters())
    result["gflops"] = round(count_gflops(model), 4)
    model.to(device)
    optimizer = _make_optimizer(model, config)
    scheduler = warmup_cosine(optimizer, train.epochs * steps_per_epoch, train.warmup_epochs * steps_per_epoch,
                              train.warmup_lr, train.min_lr)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {}
    best_epoch = 0
    elapsed_before = 0.0
    resumes: list[int] = []  # epochs after which an interrupted run was resumed
    state = load_checkpoint(checkpoint_dir, config.to_dict(), config.hash()) if checkpoint_dir else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng_torch"])
        if device.type == "cuda" and state.get("rng_cuda") is not None:
            torch.cuda.set_rng_state(state["rng_cuda"], device)
        history, best, best_epoch = state["history"], state["best"], state["best_epoch"]
        elapsed_before = state["elapsed_s"]
        resumes = [*state.get("resumes", []), len(history)]
        # what the run holds already, in case no epoch is left to train (it was stopped after its last checkpoint)
        result.update(_summary(history, best, best_epoch), wall_time_s=round(elapsed_before, 3))
    first_epoch = len(history) + 1
    result["resumed_after_epochs"] = resumes

    progress = _Progress(show_progress, train.epochs)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=train.label_smoothing)
    run_started = time.perf_counter()
    for epoch in range(first_epoch, train.epochs + 1):
        epoch_started = time.perf_counter()
        model.train()
        train_set.set_epoch(epoch)
        order = _shuffle(len(train_set), train.seed, epoch)
        total_loss = data_time = 0.0
        for step in range(1, steps_per_epoch + 1):
            data_started = time.perf_counter()
            batch = train_set.get_batch(order[(step - 1) * train.batch_size:step * train.batch_size])
            x, index_t, labels = _to_device(batch, device)
            data_time += time.perf_counter() - data_started
            with autocast:
                loss = loss_fn(model(x, index_t), labels)
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                raise TrainingDiverged(f"loss became {loss_value} at epoch {epoch}, step {step}: lower train.lr "
                                       f"(now {train.lr:g}) or check the data for NaN coordinates")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total_loss += loss_value
            progress.step(epoch, step, steps_per_epoch, total_loss / step)
        train_time = time.perf_counter() - epoch_started

        eval_started = time.perf_counter()
        logits, labels = predict(model, val_set, device, train.eval_batch_size, autocast)
        eval_time = time.perf_counter() - eval_started
        metrics = {VALIDATION_PREFIX + name: round(value, 4)
                   for name, value in evaluate(logits, labels, config.data.dataset).items()}
        record = {"epoch": epoch, "train_loss": round(total_loss / steps_per_epoch, 6),
                  "lr": optimizer.param_groups[0]["lr"], **metrics,
                  "train_clips_per_s": round(steps_per_epoch * train.batch_size / train_time, 2),
                  "data_share": round(data_time / train_time, 4),  # of the training time, spent making batches
                  "eval_clips_per_s": round(len(val_set) / eval_time, 2),
                  "time_s": round(time.perf_counter() - epoch_started, 3)}
        history.append(record)
        improved = not best or record["val_top1"] > best["val_top1"]
        if improved:
            best, best_epoch = record, epoch
        progress.epoch(record)

        result.update(_summary(history, best, best_epoch))
        result["wall_time_s"] = round(elapsed_before + time.perf_counter() - run_started, 3)
        if out_dir:
            _write_history(out_dir, history)
            if improved:  # only then: a resumed run keeps the files of the best epoch it resumes with
                save_predictions(out_dir / predictions_file("val"), logits, labels, val_set.names)
                save_weights(out_dir, config.to_dict(), config.hash(), epoch, record, model.state_dict())
            write_json(out_dir / RESULT, result)  # last: the best epoch it names has its files in place
        if checkpoint_dir:
            save_checkpoint(checkpoint_dir, {
                "config": config.to_dict(), "config_hash": config.hash(), "epoch": epoch,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "rng_torch": torch.get_rng_state(),
                "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "history": history, "best": best, "best_epoch": best_epoch, "elapsed_s": result["wall_time_s"],
                "resumes": resumes,
            })
        if on_epoch:
            on_epoch(record, checkpoint_dir)

    result.update(status="finished", ended=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    result["throughput"] = {"train_clips_per_s": history[-1]["train_clips_per_s"],
                            "eval_clips_per_s": history[-1]["eval_clips_per_s"]}
    result["peak_memory_mib"] = peak_memory_mib(device)  # of the process: a Ray worker's over all its trials
    if out_dir:
        write_json(out_dir / RESULT, result)
    return result


def _summary(history: list[dict[str, Any]], best: dict[str, Any], best_epoch: int) -> dict[str, Any]:
    def metrics(record: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in record.items() if k in RECORDED_METRICS}

    return {"final": metrics(history[-1]), "best": metrics(best), "best_epoch": best_epoch,
            "epochs_completed": len(history)}


def _write_history(out_dir: Path, history: list[dict[str, Any]]) -> None:
    atomic_write(out_dir / HISTORY, lambda f: f.write("".join(json.dumps(r) + "\n" for r in history)), binary=False)


def load_config(path: str | Path | None, budget: str | None, assignments: list[str]) -> RunConfig:
    """Defaults, then a budget, then a JSON/YAML config file, then key=value overrides: later wins."""
    config = RunConfig()
    if budget:
        config = with_budget(config, budget)
    if path:
        text = Path(path).read_text()
        try:
            values = json.loads(text) if str(path).endswith(".json") else load_yaml(path, text)
        except json.JSONDecodeError as error:
            raise ConfigError(f"{path}:{error.lineno}: JSON syntax error: {error.msg}") from None
        except YamlError as error:
            raise ConfigError(str(error)) from None
        if not isinstance(values, (dict, type(None))):
            raise ConfigError(f"{path}: expected a mapping of config keys to values, got {kind(values)}")
        config = apply_overrides(config, flatten(values or {}))
    return apply_overrides(config, parse_assignments(assignments))


def main(argv: list[str] | None = None) -> int:
    args = train_parser().parse_intermixed_args(argv)
    budget = None
    assignments = []
    for item in args.overrides:
        if item.startswith("budget="):
            budget = item.partition("=")[2]
        else:
            assignments.append(item)
    try:
        config = load_config(args.config, budget, assignments)
    except (ConfigError, OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        if budget and budget not in BUDGETS:
            print(f"budgets: {', '.join(BUDGETS)}", file=sys.stderr)
        return 2
    if args.print_config:
        print(yaml.safe_dump(config.to_dict(), sort_keys=False), end="")
        return 0
    if config.data.root and "://" not in config.data.root and not Path(config.data.root).exists():
        print(f"error: data folder {config.data.root} does not exist; set data.root=FOLDER to the folder that "
              f"holds {config.data.dataset}'s files (or leave it out to train on the built-in synthetic set)",
              file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path("runs") / "train" / config.hash()
    print(f"training {config.hash()} into {out}", file=sys.stderr)
    try:
        result = fit(config, checkpoint_dir=out, progress=not args.quiet)
    except (ConfigError, DataFormatError, CorruptPickleError, UnsafePickleError, CheckpointMismatch) as error:
        # bad options, data files or checkpoint folder
        print(f"error: {error}", file=sys.stderr)
        return 2
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # e.g. the disk is full: the last complete epoch's files are intact (atomic writes)
        reason = error.strerror or str(error) or type(error).__name__
        where = f"cannot write to {out}" if error.errno in _WRITE_ERRNOS else (error.filename or str(out))
        print(f"error: {where}: {reason[:1].lower()}{reason[1:]}", file=sys.stderr)
        return 1
    best = result["best"]
    print(f"best val top1 {best['val_top1']:.2f} (epoch {result['best_epoch']}), final "
          f"{result['final']['val_top1']:.2f}; results in {out / RESULT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
