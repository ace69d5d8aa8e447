"""Small building blocks shared by the MMN modules, and the BatchNorm folding that their `fuse` methods use.

Each takes `members` (K, default 1): a fused model of K same-shaped members (trial packs, `mmn.pack`) holds member
k's channels at [k·C, (k+1)·C) of the last axis, and each parameter as the members' tensors stacked along dim 0
(member k's is `fused.view(K, *solo_shape)[k]`). With K = 1 every shape, the state dict and the code path are the
solo model's.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from . import kernels


def split_members(x: torch.Tensor, widths: Sequence[int], members: int) -> list[torch.Tensor]:
    """Each member's channels split into `widths`, as x.split(widths, dim=-1) splits one member's: part i holds
    every member's i-th piece, members-major. With K > 1 the parts are copies."""
    if members == 1:
        return list(x.split(widths, dim=-1))
    return [part.flatten(-2) for part in x.unflatten(-1, (members, -1)).split(widths, dim=-1)]


def cat_members(parts: Sequence[torch.Tensor], members: int) -> torch.Tensor:
    """Each member's pieces side by side (the inverse of split_members), as torch.cat(parts, dim=-1) for one."""
    if members == 1:
        return torch.cat(parts, dim=-1)
    return torch.cat([part.unflatten(-1, (members, -1)) for part in parts], dim=-1).flatten(-2)


class Linear(nn.Linear):
    """nn.Linear (same parameters and state dict) followed by `activation`, run by `kernels.linear`: on a CPU the
    product runs on oneDNN, and with autograd off the bias, activation and a residual add run inside it. With K
    members, each member's own product (`kernels.grouped_linear`)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "none",
                 members: int = 1) -> None:
        super().__init__(in_features, members * out_features, bias=bias)
        self.in_features = members * in_features  # what the fused model's inputs hold, as nn.Linear reports it
        self.members = members
        self.activation = activation

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """residual + activation(x @ weight.T + bias)."""
        if self.members == 1:
            return kernels.linear(x, self.weight, self.bias, self.activation, residual)
        out = kernels.ACTIVATIONS[self.activation](kernels.grouped_linear(x, self.weight, self.bias, self.members))
        return out if residual is None else residual + out

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation={self.activation}, members={self.members}"


class TemporalConv(nn.Conv2d):
    """A (kernel, 1) convolution over the frames of a channels-last (N, T, V, C) tensor, followed by `activation`.

    A contiguous (N, T, V, C) tensor viewed as (N, C, T, V) is exactly Conv2d's channels_last memory format, so
    oneDNN convolves it in place of layout round trips. The weight keeps Conv2d's (out, in/groups, kernel, 1)
    layout, so released checkpoints load unchanged.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, padding: int = 0,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", activation: str = "none",
                 members: int = 1) -> None:
        if padding_mode not in ("zeros", "replicate"):
            raise ValueError(f"padding_mode must be zeros or replicate, got {padding_mode!r}")
        # K members are K times the groups: member k's groups see only its own channels.
        super().__init__(members * in_channels, members * out_channels, (kernel, 1), stride=(stride, 1),
                         padding=(padding, 0) if padding_mode == "zeros" else 0, groups=members * groups, bias=bias)
        self.replicate = padding if padding_mode == "replicate" else 0
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.replicate:
            pad = self.replicate
            x = torch.cat((x[:, :1].expand(-1, pad, -1, -1), x, x[:, -1:].expand(-1, pad, -1, -1)), dim=1)
        return kernels.temporal_conv(x, self.weight, self.bias, self.padding[0], self.stride[0], self.groups,
                                     self.activation)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation={self.activation}"


class ChannelsLastBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the last axis of a channels-last tensor, then `activation`: BatchNorm2d's statistics and
    state-dict layout. K members' channels side by side have each member's own statistics."""

    def __init__(self, channels: int, activation: str = "none", members: int = 1) -> None:
        super().__init__(members * channels)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.ACTIVATIONS[self.activation](super().forward(x.reshape(-1, x.shape[-1])).view_as(x))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation={self.activation}"


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm over the last axis (same parameters and state dict); with K members, over each member's own
    channels."""

    def __init__(self, channels: int, members: int = 1) -> None:
        super().__init__(members * channels)
        self.members = members

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.members == 1:
            return super().forward(x)
        k = self.members
        normed = F.layer_norm(x.unflatten(-1, (k, -1)), (x.shape[-1] // k,), eps=self.eps)
        return torch.addcmul(self.bias.view(k, -1), normed, self.weight.view(k, -1)).flatten(-2)


def batch_norm_affine(norm: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as y = x·scale + shift, in float64 so that folding adds no rounding of its own."""
    if norm.running_var is None or norm.running_mean is None:
        raise ValueError("cannot fold a BatchNorm without running statistics (track_running_stats=False)")
    scale = torch.rsqrt(norm.running_var.double() + norm.eps)
    shift = -norm.running_mean.double() * scale
    if norm.weight is not None:
        scale, shift = scale * norm.weight.double(), shift * norm.weight.double() + norm.bias.double()
    return scale, shift


@torch.no_grad()
def fold_batch_norm(layer: Linear | TemporalConv, norm: ChannelsLastBatchNorm) -> nn.Identity:
    """In place: `layer` becomes norm(layer(x)) as eval mode computes it, the norm's activation included.

    Returns the identity that takes the norm's place."""
    if layer.activation != "none":
        raise ValueError(f"cannot fold a BatchNorm past the {layer.activation} that ends {layer}")
    scale, shift = batch_norm_affine(norm)
    weight = layer.weight.double() * scale.view(-1, *(1,) * (layer.weight.ndim - 1))
    bias = shift if layer.bias is None else layer.bias.double() * scale + shift
    layer.weight = nn.Parameter(weight.to(layer.weight.dtype))
    layer.bias = nn.Parameter(bias.to(layer.weight.dtype))
    layer.activation = norm.activation
    return nn.Identity()


class Concat:
    """Tensors side by side along the last axis, as torch.cat(parts, dim=-1) lays them out (`cat_members` for K
    members).

    Where it can, the output is allocated first and `slots` are its slices, for the producers of the parts to write
    into (`out=`): that saves the pass over memory that concatenating them afterwards costs. It cannot with autograd
    on (out= has no gradient), under autocast (the parts' dtype is not known in advance) or for K members (a
    member's slices are not one slice); there `slots` are None.
    """

    def __init__(self, like: torch.Tensor, widths: list[int], members: int = 1) -> None:
        preallocate = members == 1 and not (torch.is_grad_enabled() or kernels.autocast_on(like))
        self.members = members
        self.output = like.new_empty(*like.shape[:-1], sum(widths)) if preallocate else None
        self.slots = list(self.output.split(widths, dim=-1)) if preallocate else [None] * len(widths)

    def join(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """The parts side by side; those already written into their slots are not copied again."""
        if self.output is None:
            return cat_members(parts, self.members)
        for part, slot in zip(parts, self.slots, strict=True):
            if part is not slot:
                slot.copy_(part)
        return self.output


class _MemberRates:
    """Each member's rate of a random layer, and the keep probabilities 1 − rate as a (K,) tensor, made once per
    device and dtype: made from the floats at each call, it would be a copy from the host that on a GPU waits for
    the queue.

    `generators` (set by `MMN.use_generators`): one per member, for each member to draw its own mask from its own
    stream, in its solo layer's shape and order; None draws every member's from the process's stream."""

    rates: tuple[float, ...]
    _keep_cache: dict
    generators: list[torch.Generator] | None = None

    def _keep(self, x: torch.Tensor) -> torch.Tensor:
        key = (x.device, x.dtype, self.rates)
        if key not in self._keep_cache:
            self._keep_cache.clear()
            self._keep_cache[key] = torch.tensor([1.0 - rate for rate in self.rates], dtype=x.dtype, device=x.device)
        return self._keep_cache[key]

    def _own_masks(self, x: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
        """Each member's mask of `shape` from its own generator, as its solo layer draws it (bernoulli_, then
        div_ by the keep probability), side by side along the last axis; a member at rate 0 draws nothing."""
        masks = []
        for rate, generator in zip(self.rates, self.generators, strict=True):
            keep = 1.0 - rate
            masks.append(x.new_ones(shape) if rate == 0.0
                         else x.new_empty(shape).bernoulli_(keep, generator=generator).div_(keep))
        return masks[0] if len(masks) == 1 else torch.cat(masks, dim=-1)


class DropPath(_MemberRates, nn.Module):
    """Stochastic depth: drops the whole residual branch of a sample with probability `rate` while training; with
    K members, `rates` holds each member's and a sample's branch is dropped per member."""

    def __init__(self, rates: float | Sequence[float]) -> None:
        super().__init__()
        self.rates = (rates,) if isinstance(rates, (int, float)) else tuple(rates)
        self._keep_cache = {}

    @property
    def rate(self) -> float:
        """The highest member's rate (a solo model's rate); setting it sets every member's."""
        return max(self.rates)

    @rate.setter
    def rate(self, value: float) -> None:
        self.rates = (value,) * len(self.rates)

    def _mask(self, x: torch.Tensor) -> torch.Tensor:
        k = len(self.rates)
        if self.generators is not None:  # each member's (N, 1, ..., 1), spread over its channels
            mask = self._own_masks(x, (x.shape[0],) + (1,) * (x.ndim - 1))
            return mask if k == 1 else mask.repeat_interleave(x.shape[-1] // k, dim=-1)
        if k == 1:
            keep = 1.0 - self.rates[0]
            return x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep).div_(keep)
        # One draw per sample and member, spread over the member's channels; a member at rate 0 keeps exactly 1.
        keep = self._keep(x)
        mask = torch.bernoulli(keep.expand(x.shape[0], -1)).div_(keep)
        return mask.repeat_interleave(x.shape[-1] // k, dim=1).view(x.shape[0], *(1,) * (x.ndim - 2), x.shape[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rate == 0.0 or not self.training:
            return x
        return x * self._mask(x)

    def add_to(self, residual: torch.Tensor, branch: Callable[..., torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """residual + self(branch(x)) in one pass over memory: `branch` adds the residual inside its last product
        where nothing is dropped, and the mask multiplies during the add where something is."""
        if self.rate == 0.0 or not self.training:
            return branch(x, residual=residual)
        out = branch(x)
        return torch.addcmul(residual, out, self._mask(out))

    def extra_repr(self) -> str:
        return "rate=" + ", ".join(f"{rate:.3f}" for rate in self.rates)


class Dropout(_MemberRates, nn.Dropout):
    """nn.Dropout (`p` is a solo model's rate); with K members, `rates` holds each member's, for its channels."""

    def __init__(self, rates: float | Sequence[float]) -> None:
        rates = (rates,) if isinstance(rates, (int, float)) else tuple(rates)
        super().__init__(max(rates))
        self.rates = rates
        self._keep_cache = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.generators is not None and self.p > 0.0 and self.training:
            # each member's mask shaped as its own channels, as its solo F.dropout draws it
            return x * self._own_masks(x, (*x.shape[:-1], x.shape[-1] // len(self.rates)))
        if len(self.rates) == 1 or self.p == 0.0 or not self.training:
            return super().forward(x)
        keep = self._keep(x).repeat_interleave(x.shape[-1] // len(self.rates))  # per channel
        return x * torch.bernoulli(keep.expand_as(x)).div_(keep)


def sinusoid(index_t: torch.Tensor, channels: int) -> torch.Tensor:
    """(B, T) positions → (B, T, channels) with sin at even and cos at odd channels, w_k = 10000^(-2k/channels)."""
    k = torch.arange(channels // 2, device=index_t.device, dtype=torch.float32)
    freqs = torch.exp(k * (-2.0 * math.log(10000.0) / channels))
    angles = index_t.float().unsqueeze(-1) * freqs  # (B, T, channels/2)
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)
