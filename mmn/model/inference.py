"""`fuse_for_inference`: an eval-only copy of an MMN that computes the same logits with fewer passes over memory.

In eval mode a BatchNorm is a fixed per-channel affine map. Every module that owns one folds it into the linear
map before it (`fuse`, timm's way of re-parameterising a block): the pyramid's and the fusion's convs, the motion
branch's depthwise conv, the gate's reduction, the merge, the fusion gate's first layer; MSM and MTM fold theirs
into the modulation's arithmetic. The same forwards then run with the bias and activation inside oneDNN's products
(`kernels`), and the branch outputs written straight into the gate's and the merge's inputs (`layers.Concat`), as
they do wherever autograd is off.

Folding copies the weights as they are now: fold again before each evaluation so that trained weights are used.
The copy refuses train mode and has nothing for an optimizer to train.
"""
from __future__ import annotations

import copy
from collections import OrderedDict

import torch
from torch import nn

from .network import MMN


class InferenceMMN(nn.Module):
    """What `fuse_for_inference` returns: the folded model's eval-mode logits, and only those."""

    def __init__(self, network: MMN) -> None:
        super().__init__()
        self.network = network
        self.config = network.config
        super().train(False)

    def train(self, mode: bool = True) -> "InferenceMMN":
        if mode:
            raise RuntimeError("this model was folded by fuse_for_inference for evaluation only; train the model it "
                               "was built from and call fuse_for_inference again to evaluate the new weights")
        return super().train(False)

    def forward(self, x: torch.Tensor, index_t: torch.Tensor) -> torch.Tensor:
        return self.network(x, index_t)


def _copy(model: MMN) -> MMN:
    """copy.deepcopy(model) without the weights' gradients, handed what it would make of the weights and of every
    module's empty hook containers: copying those through deepcopy's generic path takes most of its time."""
    memo = {id(p): nn.Parameter(p.detach().clone(), requires_grad=False) for p in model.parameters()}
    memo.update({id(b): b.clone() for b in model.buffers()})
    for module in model.modules():
        memo.update({id(v): type(v)() for v in vars(module).values() if type(v) in (dict, OrderedDict, set) and not v})
    return copy.deepcopy(model, memo)


@torch.no_grad()
def fuse_for_inference(model: MMN) -> InferenceMMN:
    """An eval-only copy of `model` with its current weights folded; `model` itself is left untouched."""
    if isinstance(model, InferenceMMN):
        return model
    if model.members != 1:
        raise ValueError(f"cannot fold a fused model of {model.members} members: fold each member's own MMN")
    network = _copy(model).eval()
    for module in list(network.modules()):  # listed first: folding replaces BatchNorms
        if hasattr(module, "fuse"):
            module.fuse()
    network.requires_grad_(False)
    return InferenceMMN(network)
