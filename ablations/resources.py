"""What one trial asks Ray for, and where it trains.

A trial asks for its budget's GPU share (the spec's, else `DEFAULT_GPUS_PER_TRIAL`: half a GPU under paper, none
under quick) only on a cluster that has GPUs, and not when it is set to train.device=cpu, so the same spec runs on a
laptop and on a GPU cluster. A share given on the command line (`--gpus-per-trial`) is asked for as given, on any
cluster: an autoscaler starts GPU workers for trials that wait for them. Ray makes the GPU it assigns the only one a
trial sees, and train.device=auto trains on it.
"""
from __future__ import annotations

from dataclasses import dataclass

from mmn.config import RunConfig
from mmn.profile import measure_throughput

from .spec import DEFAULT_GPUS_PER_TRIAL, Spec

_ESTIMATE_BATCH = 4  # clips per timed step: a paper-sized step on one CPU thread takes about a second


@dataclass(frozen=True)
class TrialResources:
    cpu: float
    gpu: float  # a share of one GPU, or whole GPUs
    device: str  # where the trial trains with this share: train.device, with auto resolved

    def request(self) -> dict[str, float]:
        """What tune.with_resources takes."""
        return {"cpu": self.cpu, "gpu": self.gpu}

    def __str__(self) -> str:
        return f"{self.cpu:g} CPU, {self.gpu:g} GPU, device {self.device}"


def trial_resources(spec: Spec, budget: str, device: str, cluster_has_gpus: bool, cpus: float | None = None,
                    gpus: float | None = None) -> TrialResources:
    """The resources of each trial of `spec` under `budget` on a cluster with or without GPUs; `cpus` and `gpus`
    are the command line's, `device` the trials' train.device."""
    wanted = spec.resources[budget]
    if gpus is None:
        share = wanted.gpus if wanted.gpus is not None else DEFAULT_GPUS_PER_TRIAL.get(budget, 0.0)
        gpus = share if cluster_has_gpus and device != "cpu" else 0.0
    if device == "auto":
        device = "cuda" if gpus > 0 else "cpu"  # Ray hides every GPU from a trial that asks for none
    return TrialResources(cpu=cpus or wanted.cpus, gpu=gpus, device=device)


def meant_for_gpus(budget: str) -> bool:
    """Whether trials of `budget` ask for a GPU by default (paper): on CPUs such a run says so, with a time."""
    return DEFAULT_GPUS_PER_TRIAL.get(budget, 0.0) > 0


def cpu_epoch_estimate(config: RunConfig, clips: tuple[int, int] | None, cpus: float) -> str:
    """'one epoch takes roughly 40 min (...)' for a trial of `config` on `cpus` CPUs, from one training and one
    evaluation step timed here (after a warm-up step each); `clips` are the train and val clips, if known."""
    threads = max(1, int(cpus))
    speed = measure_throughput(config.model, batch_size=min(config.train.batch_size, _ESTIMATE_BATCH),
                               threads=threads, steps=1)
    plural = "s" if threads > 1 else ""
    timed = f"{speed['train_clips_per_s']:.1f} train clips/s on {threads} thread{plural}, timed here"
    if clips is None:
        return f"one epoch takes roughly {_duration(1000 / speed['train_clips_per_s'])} per 1000 train clips ({timed})"
    train, val = clips
    seconds = train / speed["train_clips_per_s"] + val / speed["eval_clips_per_s"]
    return f"one epoch takes roughly {_duration(seconds)} ({train} train and {val} val clips at {timed})"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"
