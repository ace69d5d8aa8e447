"""Trial packs: K trials of one architecture trained as one fused computation.

Each member stays an ordinary `MMN` with its own torch optimizer and LR scheduler, exactly what mmn/train.py builds
for a solo trial. Per step, the members' parameters and buffers are stacked along a new leading member dim
(`torch.stack` keeps autograd flowing back to each member's own leaf parameters) and one `torch.func.vmap` over
`functional_call` runs every member's forward on its own batch: linear maps become batched matrix products,
convolutions grouped convolutions, so one kernel launch serves the whole pack. The summed loss's backward gives each
member its own gradient, since no member's loss depends on another's parameters.

Random layers (dropout, DropPath) draw, under vmap, from the process's one stream ("different" randomness), not
from each member's own: a pack with such rates above zero trains correctly but is not step-for-step its members run
alone. Without them (the default drop_path 0 and dropout 0 configs) a pack equals its solo runs.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch.func import functional_call, vmap

from mmn.model.kernels import plain_ops


def _loss(logits: torch.Tensor, labels: torch.Tensor, smoothing: torch.Tensor) -> torch.Tensor:
    """Cross entropy with label smoothing `smoothing` (a 0-d tensor, so each member has its own), as
    torch.nn.CrossEntropyLoss computes it: (1 - s) * NLL + s * mean over classes of -log p."""
    log_p = torch.log_softmax(logits, dim=-1)
    nll = -log_p.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return ((1 - smoothing) * nll - smoothing * log_p.mean(dim=-1)).mean()


class Pack:
    """K same-shaped models stepped together; `step` takes member-stacked batches and returns each member's loss."""

    def __init__(self, models: Sequence[torch.nn.Module], optimizers: Sequence[torch.optim.Optimizer],
                 schedulers: Sequence[torch.optim.lr_scheduler.LRScheduler], label_smoothing: Sequence[float]) -> None:
        if not (len(models) == len(optimizers) == len(schedulers) == len(label_smoothing)) or not models:
            raise ValueError("a pack needs one optimizer, scheduler and label smoothing per model, and a model")
        shapes = [{name: tuple(t.shape) for name, t in m.state_dict().items()} for m in models]
        if any(s != shapes[0] for s in shapes[1:]):
            raise ValueError("pack members must have the same tensor shapes: pack only trials of one model variant")
        self.models, self.optimizers, self.schedulers = list(models), list(optimizers), list(schedulers)
        self.label_smoothing = list(label_smoothing)
        self._template = self.models[0]

    def __len__(self) -> int:
        return len(self.models)

    def drop(self, index: int) -> None:
        """Remove member `index` (a failed or stopped trial); the others continue."""
        for members in (self.models, self.optimizers, self.schedulers, self.label_smoothing):
            del members[index]
        if self.models:
            self._template = self.models[0]

    def step(self, x: torch.Tensor, index_t: torch.Tensor, labels: torch.Tensor) -> list[float]:
        """One training step of every member on its own batch (inputs stacked along dim 0, one slice per member).

        Members whose loss is not finite take no optimizer step; the caller fails and drops them.
        """
        member_params = [dict(m.named_parameters()) for m in self.models]
        member_buffers = [dict(m.named_buffers()) for m in self.models]
        params = {name: torch.stack([p[name] for p in member_params]) for name in member_params[0]}
        buffers = {name: torch.stack([b[name] for b in member_buffers]) for name in member_buffers[0]}
        smoothing = torch.tensor(self.label_smoothing, dtype=x.dtype, device=x.device)
        for model in self.models:
            model.train()

        def member_loss(p: dict, b: dict, x_m: torch.Tensor, t_m: torch.Tensor, y_m: torch.Tensor,
                        s_m: torch.Tensor) -> torch.Tensor:
            return _loss(functional_call(self._template, (p, b), (x_m, t_m)), y_m, s_m)

        with plain_ops():
            losses = vmap(member_loss, randomness="different")(params, buffers, x, index_t, labels, smoothing)
        with torch.no_grad():  # BatchNorm statistics the vmapped forward updated in the stacked copies
            for name, stacked in buffers.items():
                for i, own in enumerate(member_buffers):
                    own[name].copy_(stacked[i])
        values = losses.tolist()
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        for value, optimizer, scheduler in zip(values, self.optimizers, self.schedulers):
            if math.isfinite(value):
                optimizer.step()
                scheduler.step()
        return values
