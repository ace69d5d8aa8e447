"""MSM and MTM: motion features modulate a branch output y as standardise(y)·(1 + γ) + β.

[γ, β] = BatchNorm(tanh(guidance map of the motion features)); MSM's map mixes or scales joints and then channels,
MTM's is a temporal conv. The modulation itself is one autograd function: composed from PyTorch ops, autograd
records a dozen nodes for it (mean, centring, square, sum, sqrt, division, the products) and its backward makes
about thirty passes over a (N, T, V, C/4) tensor; written by hand, forward and backward together make about fifteen.

With ŷ = (y − μ)/s, s = σ + ε and σ the unbiased std over the n = T·V positions of a sample and channel, the
gradient of the loss with respect to y, given g = ∂L/∂ŷ, is

    ∂L/∂y = (g − mean(g))/s − ŷ·Σ(g·ŷ)/((n − 1)·σ)

where mean and Σ run over the same n positions.

With K members (trial packs), y holds member k's q channels at [k·q, (k+1)·q) and [γ, β] member k's 2q at
[k·2q, (k+1)·2q): the standardisation is per channel anyway, and γ and β are each member's halves.
"""
from __future__ import annotations

import torch
from torch import nn

from .kernels import autocast_on
from .layers import ChannelsLastBatchNorm, Linear, TemporalConv, batch_norm_affine

EPS = 1e-6  # the release's, added to the std


def centre(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """y − mean, flattened to (N, T·V, C), and the unbiased std (N, 1, C), per sample and channel over (T, V).

    Two passes (centre, then sum squares) keep std_mean's accuracy at a fraction of its cost: its Welford pass over
    a (N, T·V, C) tensor reduced along the middle axis runs unvectorised.
    """
    flat = y.flatten(1, 2)
    centred = flat - flat.mean(dim=1, keepdim=True)
    return centred, (centred.square().sum(dim=1, keepdim=True) / (flat.shape[1] - 1)).sqrt()


def standardise(y: torch.Tensor) -> torch.Tensor:
    """(y − mean) / (std + eps) per sample and channel over (T, V), std unbiased; y is channels-last (N, T, V, C)."""
    centred, std = centre(y)
    return (centred / (std + EPS)).view_as(y)


def _halves(gamma_beta: torch.Tensor, members: int) -> tuple[torch.Tensor, torch.Tensor]:
    """γ and β of [γ, β] (N, T, V, K·2q), each (N, T, V, K, q): every member's own halves."""
    per_member = gamma_beta.unflatten(-1, (members, -1))
    return per_member.chunk(2, dim=-1)


class _Modulate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, y: torch.Tensor, gamma_beta: torch.Tensor, members: int) -> torch.Tensor:
        centred, std = centre(y)
        inv = (std + EPS).reciprocal()
        y_hat = centred.mul_(inv).view_as(y)
        gamma, beta = _halves(gamma_beta, members)
        gain = gamma + 1.0
        ctx.save_for_backward(y_hat, gain, std, inv)
        ctx.members = members
        return torch.addcmul(beta, y_hat.unflatten(-1, (members, -1)), gain).flatten(-2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        y_hat, gain, std, inv = ctx.saved_tensors
        n, t, v, c = y_hat.shape
        k = ctx.members
        grad = grad.contiguous()
        grad_y = grad_gamma_beta = None
        if ctx.needs_input_grad[1]:
            grad_gamma_beta = grad.new_empty(n, t, v, k, 2 * (c // k))
            per_member = grad.view(n, t, v, k, -1)
            torch.mul(per_member, y_hat.view_as(per_member), out=grad_gamma_beta[..., :c // k])
            grad_gamma_beta[..., c // k:] = per_member
            grad_gamma_beta = grad_gamma_beta.flatten(-2)
        if ctx.needs_input_grad[0]:
            g = (grad.view_as(gain) * gain).view(n, t * v, c)
            flat_hat = y_hat.view(n, t * v, c)
            g_mean = g.mean(dim=1, keepdim=True)
            g_dot = (g * flat_hat).sum(dim=1, keepdim=True)
            grad_y = torch.addcmul(-g_mean * inv, g, inv)
            grad_y.addcmul_(flat_hat, g_dot / ((t * v - 1) * std), value=-1.0)
            grad_y = grad_y.view(n, t, v, c)
        return grad_y, grad_gamma_beta, None


def modulate(y: torch.Tensor, gamma_beta: torch.Tensor, members: int = 1) -> torch.Tensor:
    """standardise(y)·(1 + γ) + β for y (N, T, V, q) and gamma_beta = [γ, β] (N, T, V, 2q); with K members, y
    (N, T, V, K·q) and gamma_beta (N, T, V, K·2q), each member's [γ, β] side by side."""
    if autocast_on(y):  # mixed dtypes: autograd tracks the composed ops instead
        gamma, beta = _halves(gamma_beta, members)
        return (standardise(y).unflatten(-1, (members, -1)) * (1.0 + gamma) + beta).flatten(-2)
    return _Modulate.apply(y.contiguous(), gamma_beta, members)


class Modulation(nn.Module):
    """What MSM and MTM share: the BatchNorm after the guidance, the modulation, and their folded form.

    Subclasses define `guidance_map` and `guidance`, and create `norm` after the map (the release's order of the
    state dict).

    Folded (`fuse`), the BatchNorm is a fixed affine map and joins the modulation's arithmetic. tanh(z) =
    2·sigmoid(2z) − 1, and the fused kernel's sigmoid costs less than its tanh, so the map's weights double and its
    activation becomes a sigmoid h. BatchNorm then makes γ = a·(2h − 1) + c = 2a·h + (c − a) on the first half of
    the channels and β likewise on the second, and 1/(std + eps) goes into γ's coefficients: the gain and β are one
    fused multiply-add each.
    """

    norm: ChannelsLastBatchNorm | None
    members: int

    @property
    def guidance_map(self) -> Linear | TemporalConv:
        """The linear map of the motion features that ends in the tanh."""
        raise NotImplementedError

    def guidance(self, motion: torch.Tensor) -> torch.Tensor:
        """tanh of the guidance map of the motion features (folded: sigmoid of twice the map)."""
        raise NotImplementedError

    def forward(self, y: torch.Tensor, motion: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """y (N, T, V, q) modulated by [γ, β] from the motion features (N, T, V, 2q); the folded form writes it
        into `out` where one is given."""
        h = self.guidance(motion)
        if self.norm is not None:
            return modulate(y, self.norm(h), self.members)
        q = y.shape[-1]
        centred, std = centre(y)
        inv = (std + EPS).reciprocal().unsqueeze(1)  # (N, 1, 1, q), per sample and channel
        gain = torch.addcmul(self.gain_shift * inv, h[..., :q], self.gain_scale * inv)
        beta = torch.addcmul(self.beta_shift, h[..., q:], self.beta_scale)
        return torch.addcmul(beta, centred.view_as(y), gain, out=out)

    @torch.no_grad()
    def fuse(self) -> None:
        """Folds the eval-mode BatchNorm into the modulation and the tanh into a sigmoid (see the class)."""
        if self.members != 1:
            raise ValueError("cannot fold a fused model of several members: fold each member's own MMN")
        layer = self.guidance_map
        layer.weight.mul_(2.0)
        layer.bias.mul_(2.0)
        layer.activation = "sigmoid"
        scale, shift = batch_norm_affine(self.norm)
        scale, shift = (2 * scale).to(layer.weight.dtype), (shift - scale).to(layer.weight.dtype)
        q = scale.shape[0] // 2
        self.register_buffer("gain_scale", scale[:q].clone())
        self.register_buffer("gain_shift", 1.0 + shift[:q])
        self.register_buffer("beta_scale", scale[q:].clone())
        self.register_buffer("beta_shift", shift[q:].clone())
        self.norm = None


class SkeletalModulation(Modulation):
    """MSM: the skeleton branch's modulation.

    `released` scales joint w of the motion features by the column sum Σ_v adj[v, w] (no joint mixing, as the
    release computes it); `graph` mixes joints, Σ_w adj[v, w]·M[w], as the paper describes. A Linear over channels
    follows.
    """

    def __init__(self, channels: int, num_joints: int, mode: str, members: int = 1) -> None:
        super().__init__()
        self.mode = mode
        self.members = members
        self.adjacency = nn.Parameter(torch.eye(num_joints).repeat(members, 1))  # K members' (V, V) stacked
        self.fc = Linear(channels, channels, activation="tanh", members=members)
        self.norm = ChannelsLastBatchNorm(channels, members=members)

    @property
    def guidance_map(self) -> Linear:
        return self.fc

    def guidance(self, motion: torch.Tensor) -> torch.Tensor:
        k, joints = self.members, self.adjacency.shape[1]
        per_member = motion.unflatten(-1, (k, -1))  # (N, T, V, K, C)
        adjacency = self.adjacency.view(k, joints, joints)
        if self.mode == "released":
            guided = per_member * adjacency.sum(1).t().unsqueeze(-1)  # member k's column sums (V, K, 1)
        else:
            guided = torch.einsum("ntwkc,kvw->ntvkc", per_member, adjacency)
        return self.fc(guided.flatten(-2))


class TemporalModulation(Modulation):
    """MTM: the temporal branch's modulation, guided through a temporal conv."""

    def __init__(self, channels: int, members: int = 1) -> None:
        super().__init__()
        self.members = members
        self.conv = TemporalConv(channels, channels, 3, padding=1, activation="tanh", members=members)
        self.norm = ChannelsLastBatchNorm(channels, members=members)

    @property
    def guidance_map(self) -> TemporalConv:
        return self.conv

    def guidance(self, motion: torch.Tensor) -> torch.Tensor:
        return self.conv(motion)
