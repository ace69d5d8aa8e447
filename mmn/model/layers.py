"""Small building blocks shared by the MMN modules."""
from __future__ import annotations

import math

import torch
from torch import nn


class DropPath(nn.Module):
    """Stochastic depth: drops the whole residual branch of a sample with probability `rate` while training."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rate == 0.0 or not self.training:
            return x
        keep = 1.0 - self.rate
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask.div_(keep)

    def extra_repr(self) -> str:
        return f"rate={self.rate:.3f}"


def sinusoid(index_t: torch.Tensor, channels: int) -> torch.Tensor:
    """(B, T) positions → (B, T, channels) with sin at even and cos at odd channels, w_k = 10000^(-2k/channels)."""
    k = torch.arange(channels // 2, device=index_t.device, dtype=torch.float32)
    freqs = torch.exp(k * (-2.0 * math.log(10000.0) / channels))
    angles = index_t.float().unsqueeze(-1) * freqs  # (B, T, channels/2)
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(-2)


def standardise(y: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """(y − mean) / (std + eps) per sample and channel over (T, V), std unbiased; y is channels-last (N, T, V, C)."""
    flat = y.flatten(1, 2)
    std, mean = torch.std_mean(flat, dim=1, keepdim=True)
    return ((flat - mean) / (std + eps)).view_as(y)


class ChannelsLastBatchNorm(nn.BatchNorm1d):
    """BatchNorm over the last axis of a channels-last tensor: BatchNorm2d's statistics and state-dict layout."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).view_as(x)


class TemporalConv(nn.Module):
    """A (kernel, 1) convolution over frames of a channels-last (N, T, V, C) tensor.

    The weight keeps Conv2d's (out, in/groups, kernel, 1) layout so released checkpoints load unchanged; the
    computation is one matmul over the frames gathered by `unfold`, which avoids layout round trips.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, padding: int = 0,
                 groups: int = 1, bias: bool = True, padding_mode: str = "zeros") -> None:
        super().__init__()
        if padding_mode not in ("zeros", "replicate"):
            raise ValueError(f"padding_mode must be zeros or replicate, got {padding_mode!r}")
        reference = nn.Conv2d(in_channels, out_channels, (kernel, 1), groups=groups, bias=bias)
        self.weight = reference.weight
        self.bias = reference.bias
        self.kernel, self.stride, self.padding, self.groups = kernel, stride, padding, groups
        self.padding_mode = padding_mode

    def dense_weight(self) -> torch.Tensor:
        """(out, in·kernel) matrix; grouped weights become block-diagonal."""
        out_channels, in_per_group, kernel, _ = self.weight.shape
        if self.groups == 1:
            return self.weight.reshape(out_channels, in_per_group * kernel)
        out_per_group = out_channels // self.groups
        dense = self.weight.new_zeros(out_channels, in_per_group * self.groups, kernel)
        for g in range(self.groups):
            rows = slice(g * out_per_group, (g + 1) * out_per_group)
            cols = slice(g * in_per_group, (g + 1) * in_per_group)
            dense[rows, cols] = self.weight[rows, :, :, 0]
        return dense.reshape(out_channels, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding:
            if self.padding_mode == "replicate":
                first = x[:, :1].expand(-1, self.padding, -1, -1)
                last = x[:, -1:].expand(-1, self.padding, -1, -1)
            else:
                first = last = x.new_zeros(x.shape[0], self.padding, *x.shape[2:])
            x = torch.cat((first, x, last), dim=1)
        windows = x.unfold(1, self.kernel, self.stride)  # (N, T', V, C, kernel)
        windows = windows.reshape(*windows.shape[:3], -1)
        return nn.functional.linear(windows, self.dense_weight(), self.bias)

    def extra_repr(self) -> str:
        out_channels, in_per_group, kernel, _ = self.weight.shape
        return (f"{in_per_group * self.groups}, {out_channels}, kernel={kernel}, stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}, padding_mode={self.padding_mode}")
