"""Small building blocks shared by the MMN modules, and the BatchNorm folding that their `fuse` methods use."""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from . import kernels


class Linear(nn.Linear):
    """nn.Linear (same parameters and state dict) followed by `activation`, run by `kernels.linear`: on a CPU the
    product runs on oneDNN, and with autograd off the bias, activation and a residual add run inside it."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, activation: str = "none") -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.activation = activation

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """residual + activation(x @ weight.T + bias)."""
        return kernels.linear(x, self.weight, self.bias, self.activation, residual)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation={self.activation}"


class TemporalConv(nn.Conv2d):
    """A (kernel, 1) convolution over the frames of a channels-last (N, T, V, C) tensor, followed by `activation`.

    A contiguous (N, T, V, C) tensor viewed as (N, C, T, V) is exactly Conv2d's channels_last memory format, so
    oneDNN convolves it in place of layout round trips. The weight keeps Conv2d's (out, in/groups, kernel, 1)
    layout, so released checkpoints load unchanged.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, padding: int = 0,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros", activation: str = "none") -> None:
        if padding_mode not in ("zeros", "replicate"):
            raise ValueError(f"padding_mode must be zeros or replicate, got {padding_mode!r}")
        super().__init__(in_channels, out_channels, (kernel, 1), stride=(stride, 1),
                         padding=(padding, 0) if padding_mode == "zeros" else 0, groups=groups, bias=bias)
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
    state-dict layout."""

    def __init__(self, channels: int, activation: str = "none") -> None:
        super().__init__(channels)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return kernels.ACTIVATIONS[self.activation](super().forward(x.reshape(-1, x.shape[-1])).view_as(x))

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, activation={self.activation}"


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
    """Tensors side by side along the last axis, as torch.cat(parts, dim=-1) lays them out.

    Where it can, the output is allocated first and `slots` are its slices, for the producers of the parts to write
    into (`out=`): that saves the pass over memory that concatenating them afterwards costs. It cannot with autograd
    on (out= has no gradient) or under autocast (the parts' dtype is not known in advance); there `slots` are None.
    """

    def __init__(self, like: torch.Tensor, widths: list[int]) -> None:
        preallocate = not (torch.is_grad_enabled() or kernels.autocast_on(like))
        self.output = like.new_empty(*like.shape[:-1], sum(widths)) if preallocate else None
        self.slots = list(self.output.split(widths, dim=-1)) if preallocate else [None] * len(widths)

    def join(self, parts: list[torch.Tensor]) -> torch.Tensor:
        """The parts side by side; those already written into their slots are not copied again."""
        if self.output is None:
            return torch.cat(parts, dim=-1)
        for part, slot in zip(parts, self.slots, strict=True):
            if part is not slot:
                slot.copy_(part)
        return self.output


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch of a sample with probability `rate` while training."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def _mask(self, x: torch.Tensor) -> torch.Tensor:
        keep = 1.0 - self.rate
        return x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep).div_(keep)

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
        return f"rate={self.rate:.3f}"


def sinusoid(index_t: torch.Tensor, channels: int) -> torch.Tensor:
    """(B, T) positions → (B, T, channels) with sin at even and cos at odd channels, w_k = 10000^(-2k/channels)."""
    k = torch.arange(channels // 2, device=index_t.device, dtype=torch.float32)
    freqs = torch.exp(k * (-2.0 * math.log(10000.0) / channels))
    angles = index_t.float().unsqueeze(-1) * freqs  # (B, T, channels/2)
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)
