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
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
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
from .compiled import TrainingForward
from .config import (BUDGETS, ConfigError, DataConfig, RunConfig, apply_overrides, flatten, parse_assignments,
                     with_budget)
from .data import SkeletonDataset
from .data.formats import DataFormatError
from .data.safe_pickle import CorruptPickleError, UnsafePickleError
from .data.synthetic import ensure_synthetic
from .folders import HISTORY, RECORDED_METRICS, RESULT, RESULT_FORMAT, VALIDATION_PREFIX, predictions_file
from .metrics import evaluate
from .pack import Pack, check_packable, members_that_fit
from .model import MMN, fuse_for_inference
from .model.registry import import_user_modules
from .profile import count_gflops
from .provenance import provenance
from .runtime import hardware, num_threads, peak_memory_mib, resolve_device, tune_cpu_allocator
from .schedule import warmup_cosine
from .yamlfile import YamlError, kind, load_yaml

_WRITE_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EDQUOT, errno.EFBIG}
EpochCallback = Callable[[dict[str, Any], Path | None], None]
# epoch, each still-training member's record by its index in fit_pack's `members` → the indices of members to stop
PackEpochCallback = Callable[[int, dict[int, dict[str, Any]]], Collection[int] | None]
# The paper model evaluates at 34-36 clips/s in batches of 32-64 on 2 CPU cores, 23-24 in batches of 256 (whose
# activations no longer fit in cache), 2026-12-04, AMD EPYC: train.eval_batch_size (256) is sized for GPUs.
CPU_EVAL_BATCH = 64


class TrainingDiverged(RuntimeError):
    """The loss stopped being a finite number."""


def load_split(data: DataConfig, split: str, num_frames: int, seed: int) -> SkeletonDataset:
    """A preprocessed split drawing from `seed`; the preprocessing is kept for the life of the process (a Ray worker
    running many trials, or a pack of many seeds, holds it once)."""
    return _preprocessed_split(data, split, num_frames).with_seed(seed)


@functools.lru_cache(maxsize=8)
def _preprocessed_split(data: DataConfig, split: str, num_frames: int) -> SkeletonDataset:
    root = data.root or ensure_synthetic(seed=data.synthetic_seed, clips_per_class=data.synthetic_clips_per_class,
                                         long_tail=data.synthetic_long_tail)
    return SkeletonDataset(root, dataset=data.skeleton(), split=split, modality=data.modality, num_frames=num_frames,
                           augment=data.augment, bones=data.bones, format=data.format)


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
    """The run's optimizer for `model`'s parameters, on the device they are on. On a GPU it is torch's fused one (one
    kernel for all parameters): the multi-tensor one took 20% of a paper-model step on an H200, and each member of a
    trial pack steps its own, so there it adds up (docs/performance.md)."""
    train = config.train
    fused = next(model.parameters()).is_cuda or None  # None: torch's default (multi-tensor) off a GPU
    if train.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=train.lr, momentum=train.momentum,
                               weight_decay=train.weight_decay, nesterov=True, fused=fused)
    return torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay, fused=fused)


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
    with torch.inference_mode(), (autocast or contextlib.nullcontext()):
        logits = [model(x, index_t).float().cpu() for x, index_t in _in_order(dataset, batch_size, device)]
    return torch.cat(logits).numpy(), dataset.labels


def _in_order(dataset: SkeletonDataset, batch_size: int, device: torch.device) -> Iterator[tuple[torch.Tensor, ...]]:
    """A split's clips in order, `batch_size` at a time, on `device`: (x, index_t) per batch, for evaluation."""
    for start in range(0, len(dataset), batch_size):
        x, index_t, _ = _to_device(dataset.get_batch(np.arange(start, min(start + batch_size, len(dataset)))), device)
        yield x, index_t


def save_predictions(path: str | Path, logits: np.ndarray, labels: np.ndarray, names: list[str]) -> Path:
    """A split's predictions as an .npz: logits float32 (N, K), labels int64 (N,; -1 where withheld), and the clips'
    names (str, N), so rows can be matched to clips (e.g. for MA-52's server file)."""
    return atomic_write(path, lambda f: np.savez_compressed(
        f, logits=logits.astype(np.float32), labels=labels.astype(np.int64), names=np.asarray(names, dtype=str)))


def _clone(state: dict[str, Any]) -> dict[str, Any]:
    """A state dict of tensors of its own: a pack member's are views of the fused model's storage, which torch.save
    would write whole."""
    return {name: tensor.detach().clone() for name, tensor in state.items()}


class _Trial:
    """One trial's model, optimizer and scheduler, and its bookkeeping: the record, history, best weights and
    checkpoint it writes after each epoch. Solo (`fit`) and packed (`fit_pack`) trials share it, so a member of a
    pack leaves exactly the files a solo trial does."""

    def __init__(self, config: RunConfig, checkpoint_dir: str | Path | None, out_dir: str | Path | None,
                 extra: dict[str, Any] | None, on_epoch: EpochCallback | None) -> None:
        self.config, self.on_epoch = config, on_epoch
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir else None
        self.out_dir = Path(out_dir) if out_dir else self.checkpoint_dir
        extra = extra or {}
        origin = extra.get("provenance") or provenance(config.train.device)  # a Ray trial's has its driver's argv
        self.result: dict[str, Any] = {
            "format_version": RESULT_FORMAT, "status": "running", "error": None, "provenance": origin, **extra,
            "seed": config.train.seed, "config": config.to_dict(), "config_hash": config.hash(),
            "epochs_planned": config.train.epochs, "epochs_completed": 0, "versions": origin["versions"],
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        self.started = time.perf_counter()
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] = {}
        self.best_epoch = 0
        self.elapsed_before = 0.0
        self.resumes: list[int] = []  # epochs after which an interrupted run was resumed
        self.generator: torch.Generator | None = None  # a pack member's own stream for its random layers

    def build(self, device: torch.device, steps_per_epoch: int, own_stream: bool = False) -> dict[str, Any] | None:
        """The model (seeded as a solo run seeds it), its optimizer and schedule, resumed from the checkpoint
        folder's state where there is one; returns that state.

        The random layers continue their stream from the checkpoint: the process's, or with `own_stream` (a pack
        member) the trial's own `generator`, which starts where a solo run's process stream would stand, so that
        the member draws its solo run's masks (mmn.pack)."""
        train = self.config.train
        self.result["hardware"] = hardware(device)
        _seed_everything(train.seed)
        self.model = MMN(self.config.model)
        self.result["params"] = sum(p.numel() for p in self.model.parameters())
        self.result["gflops"] = round(count_gflops(self.model), 4)
        self.model.to(device)
        self.optimizer = _make_optimizer(self.model, self.config)
        self.scheduler = warmup_cosine(self.optimizer, train.epochs * steps_per_epoch,
                                       train.warmup_epochs * steps_per_epoch, train.warmup_lr, train.min_lr)
        # where a solo run's streams stand when its training starts (on CUDA the random layers draw on the device)
        self.rng_torch = torch.get_rng_state()
        rng_cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
        state = (load_checkpoint(self.checkpoint_dir, self.config.to_dict(), self.config.hash())
                 if self.checkpoint_dir else None)
        if state is not None:
            self.rng_torch = state["rng_torch"]
            if device.type == "cuda" and state.get("rng_cuda") is not None:
                rng_cuda = state["rng_cuda"]
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.history, self.best, self.best_epoch = state["history"], state["best"], state["best_epoch"]
            self.elapsed_before = state["elapsed_s"]
            self.resumes = [*state.get("resumes", []), len(self.history)]
            # what the run holds already, in case no epoch is left to train (stopped after its last checkpoint)
            self.result.update(_summary(self.history, self.best, self.best_epoch),
                               wall_time_s=round(self.elapsed_before, 3))
        self.result["resumed_after_epochs"] = self.resumes
        if own_stream:
            self.generator = torch.Generator(device)
            self.generator.set_state(self.rng_torch if rng_cuda is None else rng_cuda)
        elif state is not None:  # bit-exact resumption: the random layers continue their streams
            torch.set_rng_state(self.rng_torch)
            if rng_cuda is not None:
                torch.cuda.set_rng_state(rng_cuda, device)
        self.run_started = time.perf_counter()
        return state

    def _streams(self, device: torch.device) -> dict[str, torch.Tensor | None]:
        """The random layers' streams as a checkpoint keeps them: the process's, or a pack member's own (on CUDA
        with the CPU stream its solo run would hold), so that either resumes into a solo run or a pack alike."""
        if self.generator is None:
            return {"rng_torch": torch.get_rng_state(),
                    "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
        if device.type == "cuda":
            return {"rng_torch": self.rng_torch, "rng_cuda": self.generator.get_state()}
        return {"rng_torch": self.generator.get_state(), "rng_cuda": None}

    def diverged(self, epoch: int, step: int | None = None, loss: float | None = None) -> TrainingDiverged:
        """The error of a run whose loss at `step` of `epoch` stopped being finite, or without a step, whose
        validation logits after `epoch` did (the epoch's last step left the weights infinite)."""
        what = (f"validation logits became NaN or inf after epoch {epoch}" if step is None else
                f"loss became {loss} at epoch {epoch}, step {step}")
        return TrainingDiverged(f"{what}: lower train.lr (now {self.config.train.lr:g}) or check the data for NaN "
                                f"coordinates")

    def end_epoch(self, epoch: int, record: dict[str, Any], logits: np.ndarray, val_set: SkeletonDataset,
                  device: torch.device) -> None:
        """Record the epoch: history, the best epoch's predictions and weights, the record, the checkpoint."""
        self.history.append(record)
        improved = not self.best or record["val_top1"] > self.best["val_top1"]
        if improved:
            self.best, self.best_epoch = record, epoch
        result, config, out_dir = self.result, self.config, self.out_dir
        result.update(_summary(self.history, self.best, self.best_epoch))
        result["wall_time_s"] = round(self.elapsed_before + time.perf_counter() - self.run_started, 3)
        weights = _clone(self.model.state_dict())
        if out_dir:
            _write_history(out_dir, self.history)
            if improved:  # only then: a resumed run keeps the files of the best epoch it resumes with
                save_predictions(out_dir / predictions_file("val"), logits, val_set.labels, val_set.names)
                save_weights(out_dir, config.to_dict(), config.hash(), epoch, record, weights)
            write_json(out_dir / RESULT, result)  # last: the best epoch it names has its files in place
        if self.checkpoint_dir:
            save_checkpoint(self.checkpoint_dir, {
                "config": config.to_dict(), "config_hash": config.hash(), "epoch": epoch,
                "model": weights, "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), **self._streams(device),
                "history": self.history, "best": self.best, "best_epoch": self.best_epoch,
                "elapsed_s": result["wall_time_s"], "resumes": self.resumes,
            })
        if self.on_epoch:
            self.on_epoch(record, self.checkpoint_dir)

    def finish(self, device: torch.device, stopped_after: int | None = None) -> dict[str, Any]:
        """The record of a trial that trained all its epochs, or with `stopped_after` one an early-stopping
        scheduler stopped after that epoch (status "stopped"; its files are those of the epochs it trained)."""
        result, history = self.result, self.history
        result.update(status="finished" if stopped_after is None else "stopped",
                      ended=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        if stopped_after is not None:
            result["stopped_after_epoch"] = stopped_after
        result["throughput"] = {"train_clips_per_s": history[-1]["train_clips_per_s"],
                                "eval_clips_per_s": history[-1]["eval_clips_per_s"]}
        result["peak_memory_mib"] = peak_memory_mib(device)  # of the process: a Ray worker's over all its trials
        if self.out_dir:
            write_json(self.out_dir / RESULT, result)
        return result

    def fail(self, error: BaseException) -> dict[str, Any]:
        self.result.update(status="failed", wall_time_s=round(time.perf_counter() - self.started, 3),
                           error=error_line(error))
        if self.out_dir:
            write_json(self.out_dir / RESULT, self.result)
        return self.result


def error_line(error: BaseException) -> str:
    """How a trial record says why its run failed: the exception's type and the first line of its message."""
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def fit(config: RunConfig, on_epoch: EpochCallback | None = None, checkpoint_dir: str | Path | None = None,
        out_dir: str | Path | None = None, extra: dict[str, Any] | None = None, progress: bool = True) -> dict[str, Any]:
    """Train one model; returns the result (also written to `out_dir`/RESULT, default `checkpoint_dir`).

    `extra` is merged into that record (a Ray trial adds its experiment, variant and trial id). A checkpoint
    already in `checkpoint_dir` is resumed from; one of another configuration is an error.
    """
    trial = _Trial(config, checkpoint_dir, out_dir, extra, on_epoch)
    try:
        with num_threads(config.train.threads):  # the caller's setting comes back when the run ends
            return _train(trial, progress)
    except (KeyboardInterrupt, SystemExit):
        raise  # stopped, not failed: the record stays "running", and a rerun continues from the last checkpoint
    except Exception as error:
        trial.fail(error)
        raise


def _device_and_autocast(config: RunConfig) -> tuple[torch.device, contextlib.AbstractContextManager]:
    device = resolve_device(config.train.device)
    if device.type == "cpu":
        tune_cpu_allocator()
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if config.train.amp and device.type == "cuda"
                else contextlib.nullcontext())
    return device, autocast


def _steps_per_epoch(config: RunConfig, train_set: SkeletonDataset) -> int:
    train = config.train
    steps = len(train_set) // train.batch_size
    if train.max_steps:
        steps = min(steps, train.max_steps)
    if steps == 0:
        raise ConfigError(f"train.batch_size={train.batch_size} exceeds the {len(train_set)} training clips")
    return steps


def _epoch_record(epoch: int, train_loss: float, lr: float, metrics: dict[str, float], clips: int, train_time: float,
                  data_time: float, eval_clips: int, eval_time: float, started: float) -> dict[str, Any]:
    return {"epoch": epoch, "train_loss": round(train_loss, 6), "lr": lr, **metrics,
            "train_clips_per_s": round(clips / train_time, 2),
            "data_share": round(data_time / train_time, 4),  # of the training time, spent making batches
            "eval_clips_per_s": round(eval_clips / eval_time, 2),
            "time_s": round(time.perf_counter() - started, 3)}


def _metrics(trial: _Trial, logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {VALIDATION_PREFIX + name: round(value, 4)
            for name, value in evaluate(logits, labels, trial.config.data.skeleton()).items()}


def _validate(trial: _Trial, val_set: SkeletonDataset, device: torch.device,
              autocast: contextlib.AbstractContextManager) -> tuple[np.ndarray, float]:
    """The model's logits on the validation split, and the seconds they took."""
    started = time.perf_counter()
    logits, _ = predict(trial.model, val_set, device, trial.config.train.eval_batch_size, autocast)
    return logits, time.perf_counter() - started


def _diverged_at_validation(trial: _Trial, logits: np.ndarray, epoch: int) -> TrainingDiverged | None:
    """A last step that made the weights (or BatchNorm's running statistics) infinite leaves the epoch's loss
    finite and shows first in the validation logits: the run diverged, as if its loss had."""
    if np.isfinite(logits).all():
        return None
    return trial.diverged(epoch)


def _predict_pack(pack: Pack, dataset: SkeletonDataset, device: torch.device, batch_size: int,
                  autocast: contextlib.AbstractContextManager) -> tuple[np.ndarray, float]:
    """Every member's logits (K, N, classes) of a whole split from one fused forward per batch, and the seconds it
    took: on a GPU one launch per layer serves all members (on a CPU each member's folded model is faster)."""
    started, members, logits = time.perf_counter(), len(pack), []
    with torch.inference_mode(), autocast:
        for batch in _in_order(dataset, batch_size, device):
            stacked = (t.unsqueeze(0).expand(members, *t.shape).contiguous() for t in batch)
            logits.append(pack.eval_logits(*stacked).float().cpu())
    return torch.cat(logits, dim=1).numpy(), time.perf_counter() - started


def _train(trial: _Trial, show_progress: bool) -> dict[str, Any]:
    config = trial.config
    train = config.train
    device, autocast = _device_and_autocast(config)
    train_set = load_split(config.data, "train", config.model.num_frames, train.seed)
    val_set = load_split(config.data, "val", config.model.num_frames, train.seed)
    steps_per_epoch = _steps_per_epoch(config, train_set)
    trial.build(device, steps_per_epoch)
    model, optimizer, scheduler = trial.model, trial.optimizer, trial.scheduler
    forward = TrainingForward(model, train.compile, device)  # trial.model stays the eager module: its state dict
    trial.result.update(forward.record())

    progress = _Progress(show_progress, train.epochs)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=train.label_smoothing)
    for epoch in range(len(trial.history) + 1, train.epochs + 1):
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
            loss_value = forward.step(functools.partial(_loss_backward, x, index_t, labels, loss_fn, optimizer,
                                                        autocast))
            if not math.isfinite(loss_value):
                raise trial.diverged(epoch, step, loss_value)
            optimizer.step()
            scheduler.step()
            total_loss += loss_value
            progress.step(epoch, step, steps_per_epoch, total_loss / step)
        train_time = time.perf_counter() - epoch_started

        logits, eval_time = _validate(trial, val_set, device, autocast)
        if error := _diverged_at_validation(trial, logits, epoch):
            raise error
        record = _epoch_record(epoch, total_loss / steps_per_epoch, optimizer.param_groups[0]["lr"],
                               _metrics(trial, logits, val_set.labels), steps_per_epoch * train.batch_size,
                               train_time, data_time, len(val_set), eval_time, epoch_started)
        progress.epoch(record)
        trial.result.update(forward.record())
        trial.end_epoch(epoch, record, logits, val_set, device)
    return trial.finish(device)


def _loss_backward(x: torch.Tensor, index_t: torch.Tensor, labels: torch.Tensor, loss_fn: torch.nn.Module,
                   optimizer: torch.optim.Optimizer, autocast: contextlib.AbstractContextManager,
                   forward: Callable[..., torch.Tensor]) -> float:
    """One solo step's loss through `forward`, and its gradients. The caller steps the optimizer: after a failed
    compiled attempt mmn.compiled runs this again eagerly from the same state."""
    with autocast:
        loss = loss_fn(forward(x, index_t), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    return loss.item()


@dataclass(frozen=True)
class PackMember:
    """One trial of a pack: what `fit` takes for a solo trial."""

    config: RunConfig
    checkpoint_dir: str | Path | None = None
    out_dir: str | Path | None = None
    extra: dict[str, Any] | None = None
    on_epoch: EpochCallback | None = None


def fit_pack(members: Sequence[PackMember], on_epoch_end: PackEpochCallback | None = None,
             max_members: int | None = None, gpu_share: float = 1.0) -> list[dict[str, Any]]:
    """Train `members` together as one fused model (mmn.pack); returns each member's result, as `fit` would.

    Their configs may differ only in mmn.pack.PER_MEMBER settings (seed, learning rate, ...); anything else is a
    ValueError. Each member draws its own batches from its own seed and writes exactly the files `fit` writes for a
    solo trial, and draws its dropout and drop-path masks from its own stream, the one its solo run draws from. A
    member whose loss becomes NaN fails (its record says why) and leaves the pack; the others go on; so does one
    whose checkpoint cannot be resumed (another config's). Members resumed from checkpoints of different epochs train
    in groups, one after another, each member once. Any other error fails the members still training, as it would a
    solo run, and is raised; a member resumed after its last epoch keeps its record.

    `on_epoch_end(epoch, records)` hears each epoch once every member still training has recorded it (a Ray pack
    trial reports then): `records` maps each such member's index in `members` to its epoch record. It returns the
    indices of members to stop now (an early-stopping scheduler's decision), or None: a stopped member leaves the
    pack with the files of the epochs it trained and status "stopped" (`stopped_after_epoch`); one stopped after
    its last epoch has simply finished.

    At most `max_members` train at once; by default, on a GPU as many as mmn.pack.members_that_fit measures within
    `gpu_share` of the GPU's memory (a Ray trial's share), on a CPU all; the rest follow in later groups.
    """
    if not members:
        raise ValueError("a pack needs at least one member")
    if max_members is not None and max_members < 1:
        raise ValueError(f"max_members must be at least 1 (or None: as many as fit), got {max_members}")
    check_packable([member.config for member in members])
    trials = [_Trial(m.config, m.checkpoint_dir, m.out_dir, m.extra, m.on_epoch) for m in members]
    config = members[0].config
    done_before: set[int] = set()  # resumed after their last epoch: an error in the others' training spares them
    try:
        with num_threads(config.train.threads):
            device, autocast = _device_and_autocast(config)
            val_set = load_split(config.data, "val", config.model.num_frames, config.train.seed)
            train_sets = [load_split(t.config.data, "train", config.model.num_frames, t.config.train.seed)
                          for t in trials]
            steps_per_epoch = _steps_per_epoch(config, train_sets[0])
            groups: dict[int, list[tuple[int, _Trial, SkeletonDataset]]] = {}  # by the epochs a member has done
            for i, (trial, train_set) in enumerate(zip(trials, train_sets)):
                try:
                    trial.build(device, steps_per_epoch, own_stream=True)
                except Exception as error:  # noqa: BLE001 - its own checkpoint (another config's, ...): it fails alone
                    trial.fail(error)
                    continue
                if trial.config.train.compile != "off":  # as a solo run's record says it, though packs never compile
                    trial.result["compiled"] = False
                if len(trial.history) >= trial.config.train.epochs:
                    done_before.add(i)
                groups.setdefault(len(trial.history), []).append((i, trial, train_set))
            if max_members is None:
                max_members = (members_that_fit(config, device, share=gpu_share) if device.type == "cuda"
                               else len(trials))
            for epochs_done in sorted(groups):
                group = groups[epochs_done]
                for start in range(0, len(group), max_members):
                    _train_pack(group[start:start + max_members], val_set, steps_per_epoch, device, autocast,
                                on_epoch_end)
    except (KeyboardInterrupt, SystemExit):
        raise  # stopped, not failed: the records stay "running", and a rerun continues from the last checkpoints
    except Exception as error:
        for i, trial in enumerate(trials):  # those still training fail with the pack, as a solo run would
            if trial.result["status"] == "running" and i not in done_before:
                trial.fail(error)
        raise
    return [trial.result for trial in trials]


def _train_pack(group: list[tuple[int, _Trial, SkeletonDataset]], val_set: SkeletonDataset, steps_per_epoch: int,
                device: torch.device, autocast: contextlib.AbstractContextManager,
                on_epoch_end: PackEpochCallback | None) -> None:
    """Members at the same epoch (with their indices in fit_pack's `members`), trained together to the end; a
    diverged or stopped member leaves, the others go on."""
    indices, trials, train_sets = [i for i, _, _ in group], [t for _, t, _ in group], [d for _, _, d in group]
    pack = Pack([t.model for t in trials], [t.optimizer for t in trials], [t.scheduler for t in trials],
                [t.config.train.label_smoothing for t in trials], [t.generator for t in trials])
    train = trials[0].config.train

    def leave(i: int, *also: list) -> None:
        """Member i (a position in the pack) leaves it, and the lists kept for it."""
        pack.drop(i)
        for members in (indices, trials, train_sets, *also):
            del members[i]

    for epoch in range(len(trials[0].history) + 1, train.epochs + 1):
        epoch_started = time.perf_counter()
        for dataset in train_sets:
            dataset.set_epoch(epoch)
        orders = [_shuffle(len(d), t.config.train.seed, epoch) for t, d in zip(trials, train_sets)]
        totals = [0.0] * len(trials)
        data_time = 0.0
        for step in range(1, steps_per_epoch + 1):
            data_started = time.perf_counter()
            window = slice((step - 1) * train.batch_size, step * train.batch_size)
            batches = [d.get_batch(order[window]) for d, order in zip(train_sets, orders)]
            x, index_t, labels = _to_device(tuple(torch.stack(parts) for parts in zip(*batches)), device)
            data_time += time.perf_counter() - data_started
            with autocast:
                losses = pack.step(x, index_t, labels)
            for i in reversed(range(len(trials))):  # from the end, so that dropping keeps the indices in step
                if math.isfinite(losses[i]):
                    totals[i] += losses[i]
                    continue
                trials[i].fail(trials[i].diverged(epoch, step, losses[i]))
                leave(i, orders, totals)
            if not trials:
                return
        train_time = time.perf_counter() - epoch_started
        records: dict[int, dict[str, Any]] = {}
        fused_logits, fused_time = (_predict_pack(pack, val_set, device, train.eval_batch_size, autocast)
                                    if device.type == "cuda" else (None, 0.0))
        evaluated = [_validate(trial, val_set, device, autocast) if fused_logits is None else
                     (fused_logits[i], fused_time) for i, trial in enumerate(trials)]
        for i in reversed(range(len(trials))):
            if error := _diverged_at_validation(trials[i], evaluated[i][0], epoch):
                trials[i].fail(error)
                leave(i, totals, evaluated)
        if not trials:
            return
        for i, (trial, total, (logits, eval_time)) in enumerate(zip(trials, totals, evaluated)):
            record = _epoch_record(epoch, total / steps_per_epoch, trial.optimizer.param_groups[0]["lr"],
                                   _metrics(trial, logits, val_set.labels), steps_per_epoch * train.batch_size,
                                   train_time, data_time, len(val_set), eval_time, epoch_started)
            trial.end_epoch(epoch, record, logits, val_set, device)
            records[indices[i]] = record
        stop = _to_stop(on_epoch_end(epoch, records) if on_epoch_end else None, records)
        if epoch < train.epochs:  # after the last epoch a stopped member has simply finished
            for i in reversed(range(len(trials))):
                if indices[i] in stop:
                    trials[i].finish(device, stopped_after=epoch)
                    leave(i)
            if not trials:
                return
    for trial in trials:
        trial.finish(device)


def _to_stop(returned: Any, records: dict[int, dict[str, Any]]) -> set[int]:
    """The members on_epoch_end said to stop, checked: indices among its records', in a collection, or None."""
    if returned is None:
        return set()
    try:
        stop = set(returned)
    except TypeError:
        raise TypeError(f"on_epoch_end must return the indices of the members to stop (a list, maybe empty) or None, "
                        f"got {returned!r}") from None
    if stop - set(records):
        raise ValueError(f"on_epoch_end returned members {sorted(stop - set(records))}, which are not training: "
                         f"return indices among those of its records ({sorted(records)})")
    return stop


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
        import_user_modules(args.imports)  # before the config: it may name the modules they register
        config = load_config(args.config, budget, assignments)
    except (ConfigError, OSError, ValueError) as error:  # RegistryError included
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
