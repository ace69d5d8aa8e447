"""The motion-guided spatio-temporal block (the release's `MGSTFormer`), on channels-last (N, T, V, C) tensors.

The block splits its channels into a skeleton branch (joint mixing), a temporal branch (temporal conv) and a motion
branch (frame differences). Motion guides the other two: MSM modulates the skeleton branch, MTM the temporal branch.
A learned gate weighs the branches before they are merged back into the residual stream.

Each module that owns a BatchNorm folds it for inference (`fuse`) into the linear map before it; the same forward
then runs the folded form.

With K members (trial packs; `mmn.model.layers`), member k's channels are [k·C, (k+1)·C) of every activation:
the branch split, the gate's weights and the merge's inputs are taken per member.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from . import registry
from .config import ModelConfig
from .layers import (ChannelsLastBatchNorm, Concat, DropPath, LayerNorm, Linear, TemporalConv, fold_batch_norm,
                     split_members)
from .modulation import SkeletalModulation, TemporalModulation


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
    """Channel group h of u (N, T, V, C) is mixed over joints by its own V×V matrix A_h: Σ_u A_h[v, u]·u[u]. K
    members' G groups each are K·G groups, members-major, as their channels are."""
    n, t, v, c = u.shape
    groups = matrices.shape[0]
    grouped = u.reshape(n, t, v, groups, c // groups)
    return torch.einsum("ntugc,gvu->ntvgc", grouped, matrices).reshape(n, t, v, c)


class MotionBranch(nn.Module):
    """Depthwise temporal conv, BatchNorm and GELU over the frame differences."""

    def __init__(self, channels: int, members: int = 1) -> None:
        super().__init__()
        self.conv = TemporalConv(channels, channels, 3, padding=1, groups=channels, bias=False, members=members)
        self.norm = ChannelsLastBatchNorm(channels, activation="gelu", members=members)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(frame_difference(u)))

    def fuse(self) -> None:
        self.norm = fold_batch_norm(self.conv, self.norm)


class BranchGate(nn.Module):
    """Per-position sigmoid weights, one per active branch, from the concatenated branch outputs."""

    def __init__(self, channels: int, num_branches: int, hidden: int, members: int = 1) -> None:
        super().__init__()
        self.reduce = Linear(channels, hidden, bias=False, members=members)
        self.norm = ChannelsLastBatchNorm(hidden, activation="relu", members=members)
        self.expand = Linear(hidden, num_branches, bias=False, activation="sigmoid", members=members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.expand(self.norm(self.reduce(x)))

    def fuse(self) -> None:
        self.norm = fold_batch_norm(self.reduce, self.norm)


class MLP(nn.Module):
    """fc2(GELU(fc1(x))), plus a residual added inside fc2's product."""

    def __init__(self, channels: int, hidden: int, members: int = 1) -> None:
        super().__init__()
        self.fc1 = Linear(channels, hidden, activation="gelu", members=members)
        self.fc2 = Linear(hidden, channels, members=members)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        return self.fc2(self.fc1(x), residual=residual)


class MotionGuidedBlock(nn.Module):
    def __init__(self, config: ModelConfig, drop_path: float | Sequence[float], members: int = 1) -> None:
        """`drop_path`: the block's rate, or each of the K members' rates."""
        super().__init__()
        channels = config.embed_dim
        quarter = channels // 4
        k = members
        self.config = config
        self.quarter = quarter
        self.members = members
        self.norm1 = LayerNorm(channels, members=k)
        self.mapping = Linear(channels, channels, members=k)
        if config.skeleton_branch:
            self.joint_mixing = _trunc_normal(k * config.groups, config.graph_joints, config.graph_joints)
        if config.temporal_branch:
            kernel = config.temporal_kernel
            self.temporal_conv = TemporalConv(quarter, quarter, kernel, padding=kernel // 2, groups=config.groups,
                                              members=k)
        needs_motion = config.motion_branch or config.msm != "off" or config.mtm
        self.motion = MotionBranch(2 * quarter, members=k) if needs_motion else None
        self.msm = (None if config.msm == "off"
                    else SkeletalModulation(2 * quarter, config.graph_joints, config.msm, members=k)
                    if config.msm in ("released", "graph")
                    else registry.build("msm", config.msm, members=k, channels=2 * quarter,
                                        num_joints=config.graph_joints))
        self.mtm = (TemporalModulation(2 * quarter, members=k) if config.mtm is True
                    else registry.build("mtm", config.mtm, members=k, channels=2 * quarter) if config.mtm else None)

        # Branch order in the gate and the merge is the release's: temporal, skeleton, motion.
        widths = [quarter if config.temporal_branch else 0, quarter if config.skeleton_branch else 0,
                  2 * quarter if config.motion_branch else 0]
        self.widths = [w for w in widths if w]
        self.gate = BranchGate(sum(widths), len(self.widths), channels // 4, members=k)
        self.merge = Linear(sum(widths), channels, bias=False, members=k)
        self.merge_norm = ChannelsLastBatchNorm(channels, activation="gelu", members=k)
        self.proj = Linear(channels, channels, members=k)
        self.norm2 = LayerNorm(channels, members=k)
        self.mlp = MLP(channels, int(channels * config.mlp_ratio), members=k)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k = self.quarter, self.members
        # split, not three slices: its backward is one concatenation, where each slice's zero-fills a full buffer.
        u_skeleton, u_temporal, u_motion = split_members(self.mapping(self.norm1(x)), (q, q, 2 * q), k)
        motion = self.motion(u_motion) if self.motion is not None else None
        gate_in, merge_in = Concat(x, self.widths, k), Concat(x, self.widths, k)
        slots = iter(gate_in.slots)
        branches: list[torch.Tensor] = []  # what the gate sees (modulated where modulation is on)
        raw: list[torch.Tensor] = []  # what the gate weights multiply in the release (unmodulated)

        if self.config.temporal_branch:
            temporal, out = self.temporal_conv(u_temporal), next(slots)
            raw.append(temporal)
            branches.append(self.mtm(temporal, motion, out=out) if self.mtm is not None else temporal)
        if self.config.skeleton_branch:
            skeleton, out = mix_joints(u_skeleton, self.joint_mixing), next(slots)
            raw.append(skeleton)
            branches.append(self.msm(skeleton, motion, out=out) if self.msm is not None else skeleton)
        if self.config.motion_branch:
            raw.append(motion)
            branches.append(motion)

        weights = self.gate(gate_in.join(branches))
        chosen = branches if self.config.modulated_fusion else raw
        if k == 1:
            weighted = [torch.mul(w.unsqueeze(-1), b, out=out)
                        for w, b, out in zip(weights.unbind(-1), chosen, merge_in.slots)]
        else:  # member k's weight of branch b multiplies member k's channels of b
            weighted = [(w.unsqueeze(-1) * b.unflatten(-1, (k, -1))).flatten(-2)
                        for w, b in zip(weights.unflatten(-1, (k, -1)).unbind(-1), chosen)]
        merged = merge_in.join(weighted)
        merged = self.merge_norm(self.merge(merged))
        x = self.drop_path.add_to(x, self.proj, merged)
        return self.drop_path.add_to(x, self.mlp, self.norm2(x))

    def fuse(self) -> None:
        self.merge_norm = fold_batch_norm(self.merge, self.merge_norm)
