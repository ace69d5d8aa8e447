"""The release's learning-rate schedule: per-iteration linear warmup, then cosine over the whole run.

The warmup is not a prefix: once it ends, the cosine continues from where it would have been at that iteration
had it started at iteration 0 (timm's CosineLRScheduler with warmup_prefix=False, stepped per update).
"""
from __future__ import annotations

import math

import torch


def learning_rate(step: int, total_steps: int, warmup_steps: int, base_lr: float, warmup_lr: float,
                  min_lr: float) -> float:
    if step < warmup_steps:
        return warmup_lr + step * (base_lr - warmup_lr) / warmup_steps
    progress = min(step, total_steps) / max(total_steps, 1)
    return min_lr + 0.5 * (base_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, warmup_lr: float,
                  min_lr: float) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR to step after every optimizer update; the optimizer's lr is the peak (base) rate."""
    base_lr = optimizer.param_groups[0]["lr"]

    def factor(step: int) -> float:
        return learning_rate(step, total_steps, warmup_steps, base_lr, warmup_lr, min_lr) / base_lr

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
