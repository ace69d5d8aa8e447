"""Trial packs: K trials of one architecture trained as one fused model.

Each member stays an ordinary `MMN` with its own torch optimizer and LR scheduler, exactly what mmn/train.py builds
for a solo trial. The pack builds one fused MMN of K members (`MMN(configs)`, mmn/model/network.py): every parameter
and buffer is the members' tensors stacked along dim 0, every activation holds member k's channels at
[k·C, (k+1)·C), linear maps are per-member batched products and convolutions grouped convolutions, BatchNorm and
LayerNorm statistics are per member. One forward and one backward then serve the whole pack, with one kernel launch
per layer rather than K.

The members' parameters and buffers are views of the fused storage (member k's tensor is
`fused.view(K, *shape)[k]`): after the fused backward each member's gradient is the matching view of the fused
gradient, and each member's own optimizer steps its own parameters in place, which updates the fused model. The
summed loss's backward gives each member its own gradient, since no member's loss depends on another's parameters.
A member's state dict is therefore its own tensors, but views: `torch.save` of a view writes the whole fused
storage, so clone a member's state dict before saving it.

Random layers (dropout, DropPath) use each member's own rates (members may differ in them). Given one generator
per member (`generators`), each member draws its own masks from its own stream, in its solo layers' shapes and
order, and a member at rate 0 draws nothing: a member whose generator starts where its solo run's process stream
stands after building the model (mmn.train does that) draws exactly its solo run's masks, so on the CPU it is step
for step its solo run, whoever else is in the pack. That costs K small draws per random layer and step, not one.
(On CUDA each member still has its own stream, but a solo run's CUDA dropout is a fused kernel that draws
differently, so it is not bit-equal there.) Without generators every member draws from the process's one stream:
a member with rates above zero then trains correctly but is not its solo run.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence

import torch

from mmn.config import RunConfig, flatten
from mmn.model import MMN


def _loss(logits: torch.Tensor, labels: torch.Tensor, smoothing: torch.Tensor) -> torch.Tensor:
    """Each member's cross entropy (K,) of logits (K, N, classes), with its own label smoothing (K,), as
    torch.nn.CrossEntropyLoss computes it: (1 - s) * NLL + s * mean over classes of -log p, averaged over N."""
    log_p = torch.log_softmax(logits, dim=-1)
    nll = -log_p.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    s = smoothing.unsqueeze(-1)
    return ((1 - s) * nll - s * log_p.mean(dim=-1)).mean(dim=-1)


def _tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer by name."""
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


class Pack:
    """K same-shaped models stepped together; `step` takes member-stacked batches and returns each member's loss."""

    def __init__(self, models: Sequence[MMN], optimizers: Sequence[torch.optim.Optimizer],
                 schedulers: Sequence[torch.optim.lr_scheduler.LRScheduler], label_smoothing: Sequence[float],
                 generators: Sequence[torch.Generator] | None = None) -> None:
        """`generators`: one per member for its random layers to draw from (module docstring); None: the process's
        stream."""
        if not (len(models) == len(optimizers) == len(schedulers) == len(label_smoothing)) or not models:
            raise ValueError("a pack needs one optimizer, scheduler and label smoothing per model, and a model")
        if generators is not None and len(generators) != len(models):
            raise ValueError(f"a pack of {len(models)} models got {len(generators)} generators: give one per model")
        shapes = [{name: tuple(t.shape) for name, t in m.state_dict().items()} for m in models]
        if any(s != shapes[0] for s in shapes[1:]):
            raise ValueError("pack members must have the same tensor shapes: pack only trials of one model variant")
        self.models, self.optimizers, self.schedulers = list(models), list(optimizers), list(schedulers)
        self.label_smoothing = list(label_smoothing)
        self.generators = None if generators is None else list(generators)
        self._fuse()

    def _fuse(self) -> None:
        """(Re)build the fused model from the members' current tensors and make theirs views of its storage."""
        k = len(self.models)
        with torch.random.fork_rng(devices=[]):  # its random init, replaced next, leaves the process stream alone
            self.fused = MMN([m.config for m in self.models])
        self.fused.use_generators(self.generators)
        members = [_tensors(m) for m in self.models]
        with torch.no_grad():
            for name, fused in _tensors(self.fused).items():
                own = [m[name] for m in members]
                if fused.ndim == 0:  # a BatchNorm's batch count: one for the pack, added to each member's
                    fused.data = own[0].detach().clone()
                    continue
                fused.data = torch.stack([t.detach() for t in own]).flatten(0, 1)
                for i, tensor in enumerate(own):
                    tensor.data = fused.data.view(k, *tensor.shape)[i]

    def __len__(self) -> int:
        return len(self.models)

    def drop(self, index: int) -> None:
        """Remove member `index` (a failed or stopped trial); the others continue."""
        with torch.no_grad():  # the dropped model keeps its weights, no longer in the pack's storage
            for tensor in _tensors(self.models[index]).values():
                tensor.data = tensor.data.clone()
        for members in (self.models, self.optimizers, self.schedulers, self.label_smoothing):
            del members[index]
        if self.generators is not None:
            del self.generators[index]
        if self.models:
            self._fuse()

    def _forward(self, x: torch.Tensor, index_t: torch.Tensor) -> torch.Tensor:
        """Logits (K, N, classes) of the fused model for member-stacked inputs."""
        if len(self.models) == 1:  # a fused model of one is a solo MMN, with its solo input and output
            return self.fused(x[0], index_t[0]).unsqueeze(0)
        return self.fused(x, index_t)

    def step(self, x: torch.Tensor, index_t: torch.Tensor, labels: torch.Tensor) -> list[float]:
        """One training step of every member on its own batch (inputs stacked along dim 0, one slice per member).

        Members whose loss is not finite take no optimizer step; the caller fails and drops them.
        """
        self.fused.train()
        # BatchNorm batch counts: one per layer for the pack; each member's own count gains what the pack's did.
        # foreach ops: a few kernel launches for all of them, not a few per layer.
        counts = [b for b in self.fused.buffers() if b.ndim == 0]
        before = torch._foreach_add(counts, 0)
        smoothing = torch.tensor(self.label_smoothing, dtype=x.dtype).to(x.device, non_blocking=True)
        losses = _loss(self._forward(x, index_t), labels, smoothing)
        self.fused.zero_grad(set_to_none=True)
        for optimizer in self.optimizers:
            optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()
        k = len(self.models)
        members = [dict(m.named_parameters()) for m in self.models]
        for name, fused in self.fused.named_parameters():
            if fused.grad is not None:
                for i, own in enumerate(members):
                    own[name].grad = fused.grad.view(k, *own[name].shape)[i]
        with torch.no_grad():
            added = torch._foreach_sub(counts, before)
            for model in self.models:
                torch._foreach_add_([b for b in model.buffers() if b.ndim == 0], added)
        values = losses.tolist()  # only now, so that the backward is queued before waiting for the device
        for value, optimizer, scheduler in zip(values, self.optimizers, self.schedulers):
            if math.isfinite(value):
                optimizer.step()
                scheduler.step()
        return values

    @torch.no_grad()
    def eval_logits(self, x: torch.Tensor, index_t: torch.Tensor) -> torch.Tensor:
        """Every member's eval-mode logits (K, N, classes) for member-stacked inputs, for validating all at once."""
        self.fused.eval()
        return self._forward(x, index_t)


# Settings each member of a pack may have its own: they change no tensor shape, no data and no step count.
PER_MEMBER = ("train.seed", "train.lr", "train.weight_decay", "train.label_smoothing", "train.optimizer",
              "train.momentum", "train.warmup_epochs", "train.warmup_lr", "train.min_lr", "model.drop_path",
              "model.fusion_dropout", "model.head_dropout")


def pack_key(config: RunConfig) -> str:
    """What trials must share to train in one pack: every setting but the PER_MEMBER ones, as a short hash."""
    shared = {key: value for key, value in flatten(config.to_dict()).items() if key not in PER_MEMBER}
    return hashlib.sha256(json.dumps(shared, sort_keys=True, default=str).encode()).hexdigest()[:12]


def check_packable(configs: Sequence[RunConfig]) -> None:
    """A ValueError naming the first setting in which `configs` differ that a pack cannot give each member."""
    first = flatten(configs[0].to_dict())
    for config in configs[1:]:
        for key, value in flatten(config.to_dict()).items():
            if key not in PER_MEMBER and value != first[key]:
                raise ValueError(f"trials that differ in {key} ({first[key]!r} and {value!r}) cannot share a pack: "
                                 f"pack only trials that differ in {', '.join(PER_MEMBER)}")


MEMORY_FRACTION = 0.8  # of the GPU memory free when a pack starts, what its members may take together


def members_that_fit(config: RunConfig, device: torch.device, fraction: float = MEMORY_FRACTION,
                     share: float = 1.0) -> int:
    """How many members of `config` one pack may have on the CUDA `device`, measured: one training step of a pack
    of 1 and of 2 (batch, frames and autocast as `config` trains) gives the memory a member adds (weights, optimizer
    state, activations) and what the pack takes besides; the pack then stays within `fraction` of the memory free,
    and of its `share` of the GPU's memory (a Ray trial given half a GPU shares it with another, which may be
    measuring at the same moment)."""
    free, total = torch.cuda.mem_get_info(device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=config.train.amp)
    m, batch = config.model, config.train.batch_size
    peaks = []
    for members in (1, 2):
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        models = [MMN(m).to(device) for _ in range(members)]
        optimizers = [torch.optim.AdamW(model.parameters()) for model in models]
        schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lambda step: 1.0) for o in optimizers]
        pack = Pack(models, optimizers, schedulers, [0.0] * members)
        x = torch.zeros(members, batch, m.in_channels, m.num_frames, m.num_joints, m.num_persons, device=device)
        index_t = torch.zeros(members, batch, m.num_frames, device=device)
        with autocast:
            pack.step(x, index_t, torch.zeros(members, batch, dtype=torch.long, device=device))
        peaks.append(torch.cuda.max_memory_allocated(device) - base)
        del pack, models, optimizers, schedulers, x, index_t
    return members_within(peaks, fraction * min(free, share * total))


def members_within(peaks: Sequence[int], budget: float) -> int:
    """How many members fit in `budget` bytes, from the peak memory of a pack of 1 and of 2 (`peaks`): the second
    member's addition is what each member takes, the rest what the pack takes besides; at least one."""
    per_member = max(peaks[1] - peaks[0], 1)
    besides = max(peaks[0] - per_member, 0)
    return max(1, int((budget - besides) // per_member))
