"""The motion-guided spatio-temporal block (the release's `MGSTFormer`), on channels-last (N, T, V, C) tensors.

The block splits its channels into a skeleton branch (joint mixing), a temporal branch (temporal conv) and a motion
branch (frame differences). Motion guides the other two: MSM modulates the skeleton branch, MTM the temporal branch.
A learned gate weighs the branches before they are merged back into the residual stream.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import ModelConfig
from .layers import ChannelsLastBatchNorm, DropPath, Linear, TemporalConv
from .modulation import modulate


def _trunc_normal(*shape: int) -> nn.Parameter:
    return nn.Parameter(nn.init.trunc_normal_(torch.empty(*shape), std=0.02))


class _FrameDifference(torch.autograd.Function):
    """D[t] = x[t+1] − x[t], D[T−1] = D[T−2], written straight into its output. Composed from slices, a
    subtraction and a concatenation, autograd's backward would zero-fill and add three frame-sized buffers."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.new_empty(x.shape)
        torch.sub(x[:, 1:], x[:, :-1], out=out[:, :-1])
        out[:, -1] = out[:, -2]
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        # Fold the repeated last difference into the one it copies: g[t] is then the gradient of x[t+1] − x[t].
        g = grad[:, :-1].clone()
        g[:, -1] += grad[:, -1]
        grad_x = grad.new_empty(grad.shape)
        grad_x[:, 0] = -g[:, 0]
        torch.sub(g[:, :-1], g[:, 1:], out=grad_x[:, 1:-1])
        grad_x[:, -1] = g[:, -1]
        return grad_x


def frame_difference(x: torch.Tensor) -> torch.Tensor:
    """D[t] = x[t+1] − x[t] along frames (axis 1), the last difference repeated to keep T frames."""
    return _FrameDifference.apply(x)


def mix_joints(u: torch.Tensor, matrices: torch.Tensor) -> torch.Tensor:
    """Channel group h of u (N, T, V, C) is mixed over joints by its own V×V matrix A_h: Σ_u A_h[v, u]·u[u]."""
    n, t, v, c = u.shape
    groups = matrices.shape[0]
    grouped = u.reshape(n, t, v, groups, c // groups)
    return torch.einsum("ntugc,gvu->ntvgc", grouped, matrices).reshape(n, t, v, c)


class MotionBranch(nn.Module):
    """Depthwise temporal conv, BatchNorm and GELU over the frame differences."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = TemporalConv(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.norm = ChannelsLastBatchNorm(channels)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return nn.functional.gelu(self.norm(self.conv(frame_difference(u))))


class SkeletalModulation(nn.Module):
    """MSM: motion features → [γ_s, β_s] (concatenated along channels) for the skeleton branch.

    `released` scales joint w of the motion features by the column sum Σ_v adj[v, w] (no joint mixing, as the
    release computes it); `graph` mixes joints, Σ_w adj[v, w]·M[w], as the paper describes.
    """

    def __init__(self, channels: int, num_joints: int, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.adjacency = nn.Parameter(torch.eye(num_joints))
        self.fc = Linear(channels, channels)
        self.norm = ChannelsLastBatchNorm(channels)

    def forward(self, motion: torch.Tensor) -> torch.Tensor:
        if self.mode == "released":
            guided = motion * self.adjacency.sum(0).unsqueeze(-1)
        else:
            guided = torch.einsum("ntwc,vw->ntvc", motion, self.adjacency)
        return self.norm(torch.tanh(self.fc(guided)))


class TemporalModulation(nn.Module):
    """MTM: motion features → [γ_t, β_t] for the temporal branch, through a temporal conv, tanh and BatchNorm."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = TemporalConv(channels, channels, 3, padding=1)
        self.norm = ChannelsLastBatchNorm(channels)

    def forward(self, motion: torch.Tensor) -> torch.Tensor:
        return self.norm(torch.tanh(self.conv(motion)))


class BranchGate(nn.Module):
    """Per-position sigmoid weights, one per active branch, from the concatenated branch outputs."""

    def __init__(self, channels: int, num_branches: int, hidden: int) -> None:
        super().__init__()
        self.reduce = Linear(channels, hidden, bias=False)
        self.norm = ChannelsLastBatchNorm(hidden)
        self.expand = Linear(hidden, num_branches, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.expand(torch.relu(self.norm(self.reduce(x)))))


class MLP(nn.Module):
    def __init__(self, channels: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = Linear(channels, hidden)
        self.fc2 = Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(nn.functional.gelu(self.fc1(x)))


class MotionGuidedBlock(nn.Module):
    def __init__(self, config: ModelConfig, drop_path: float) -> None:
        super().__init__()
        channels = config.embed_dim
        quarter = channels // 4
        self.config = config
        self.quarter = quarter
        self.norm1 = nn.LayerNorm(channels)
        self.mapping = Linear(channels, channels)
        if config.skeleton_branch:
            self.joint_mixing = _trunc_normal(config.groups, config.graph_joints, config.graph_joints)
        if config.temporal_branch:
            k = config.temporal_kernel
            self.temporal_conv = TemporalConv(quarter, quarter, k, padding=k // 2, groups=config.groups)
        needs_motion = config.motion_branch or config.msm != "off" or config.mtm
        self.motion = MotionBranch(2 * quarter) if needs_motion else None
        self.msm = SkeletalModulation(2 * quarter, config.graph_joints, config.msm) if config.msm != "off" else None
        self.mtm = TemporalModulation(2 * quarter) if config.mtm else None

        # Branch order in the gate and the merge is the release's: temporal, skeleton, motion.
        widths = [quarter if config.temporal_branch else 0, quarter if config.skeleton_branch else 0,
                  2 * quarter if config.motion_branch else 0]
        merged = sum(widths)
        self.gate = BranchGate(merged, sum(w > 0 for w in widths), channels // 4)
        self.merge = Linear(merged, channels, bias=False)
        self.merge_norm = ChannelsLastBatchNorm(channels)
        self.proj = Linear(channels, channels)
        self.norm2 = nn.LayerNorm(channels)
        self.mlp = MLP(channels, int(channels * config.mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.quarter
        # split, not three slices: its backward is one concatenation, where each slice's zero-fills a full buffer.
        u_skeleton, u_temporal, u_motion = self.mapping(self.norm1(x)).split((q, q, 2 * q), dim=-1)
        branches: list[torch.Tensor] = []  # what the gate sees (modulated where modulation is on)
        raw: list[torch.Tensor] = []  # what the gate weights multiply in the release (unmodulated)
        motion = self.motion(u_motion) if self.motion is not None else None

        if self.config.temporal_branch:
            temporal = self.temporal_conv(u_temporal)
            raw.append(temporal)
            branches.append(modulate(temporal, self.mtm(motion)) if self.mtm is not None else temporal)
        if self.config.skeleton_branch:
            skeleton = mix_joints(u_skeleton, self.joint_mixing)
            raw.append(skeleton)
            branches.append(modulate(skeleton, self.msm(motion)) if self.msm is not None else skeleton)
        if self.config.motion_branch:
            raw.append(motion)
            branches.append(motion)

        weights = self.gate(torch.cat(branches, dim=-1))
        chosen = branches if self.config.modulated_fusion else raw
        merged = torch.cat([w.unsqueeze(-1) * b for w, b in zip(weights.unbind(-1), chosen)], dim=-1)
        merged = nn.functional.gelu(self.merge_norm(self.merge(merged)))

        x = self.drop_path.add_to(x, self.proj(merged))
        return self.drop_path.add_to(x, self.mlp(self.norm2(x)))
