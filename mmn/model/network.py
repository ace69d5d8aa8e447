"""MMN: embedding, temporal pyramid, one stack of motion-guided blocks per scale, multi-scale fusion, head.

Tensors are channels-last (N, T, V, C) inside the network; the input is the release's (N, 2, T, V, M).

`MMN(configs, members=K)` is K same-shaped members fused into one model (trial packs, `mmn.pack`): every parameter
is the members' tensors stacked along dim 0, member k's channels are [k·C, (k+1)·C) of every activation, and one
forward runs every member on its own batch, x (K, N, 2, T, V, M) → logits (K, N, classes). Members may differ only
in the rates of their random layers (`config.fused_config`).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .block import MotionGuidedBlock
from . import registry
from .config import POS_ENC_CHOICES, ModelConfig, fused_config
from .layers import (ChannelsLastBatchNorm, DropPath, Dropout, Linear, TemporalConv, cat_members, fold_batch_norm,
                     sinusoid)


class PositionalEncoding(nn.Module):
    """stpe: te[b, t, c]·table[c, v] with te a sinusoid of the source-frame position index_t (the release);
    learned: a (T, V, C) table; sinusoidal: te alone, shared by all joints; none: nothing is added."""

    def __init__(self, config: ModelConfig, members: int = 1) -> None:
        super().__init__()
        self.mode = config.pos_enc
        self.members = members
        channels, joints = config.embed_dim, config.graph_joints
        if self.mode == "stpe":
            self.table = nn.Parameter(nn.init.trunc_normal_(torch.empty(members * channels, joints), std=0.02))
        elif self.mode == "learned":
            self.table = nn.Parameter(nn.init.trunc_normal_(torch.empty(members * config.num_frames, joints, channels),
                                                            std=0.02))

    def _sinusoid(self, index_t: torch.Tensor, channels: int) -> torch.Tensor:
        """(N, T, 1, K·C): each member's sinusoid of its own index_t, (N, T) or, for K members, (K, N, T)."""
        if self.members == 1:
            return sinusoid(index_t, channels).unsqueeze(2)
        return sinusoid(index_t, channels).movedim(0, 2).flatten(-2).unsqueeze(2)

    def forward(self, x: torch.Tensor, index_t: torch.Tensor) -> torch.Tensor:
        channels = x.shape[-1] // self.members
        if self.mode == "stpe":
            return x + self._sinusoid(index_t, channels) * self.table.t()
        if self.mode == "sinusoidal":
            return x + self._sinusoid(index_t, channels)
        if self.mode == "learned":  # member k's (T, V, C) table is rows [k·T, (k+1)·T) of the (K·T, V, C) one
            return x + self.table.unflatten(0, (self.members, -1)).movedim(0, 2).flatten(-2)
        return x


class Downsample(nn.Module):
    """Halves the frames: conv (3, 1), stride 2, replicate padding, then BatchNorm."""

    def __init__(self, channels: int, members: int = 1) -> None:
        super().__init__()
        self.conv = TemporalConv(channels, channels, 3, stride=2, padding=1, padding_mode="replicate",
                                 members=members)
        self.norm = ChannelsLastBatchNorm(channels, members=members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))

    def fuse(self) -> None:
        self.norm = fold_batch_norm(self.conv, self.norm)


class ScaleFusion(nn.Module):
    """Brings every scale to the coarsest frame rate and combines them.

    gated (the release): softmax weights over scales per (t, v) from a small conv gate; mean: equal weights;
    last: the coarsest scale alone. The coarsest scale also feeds a residual 1×1 conv.
    """

    def __init__(self, config: ModelConfig, fusion_dropout: Sequence[float] = (), members: int = 1) -> None:
        """`fusion_dropout`: each member's rate (config.fusion_dropout if none are given)."""
        super().__init__()
        channels, scales = config.embed_dim, config.num_scales
        k = members
        self.mode = config.fusion
        self.members = members
        used = range(scales - 1) if self.mode != "last" else range(0)
        self.downsample = nn.ModuleList(
            nn.ModuleDict({
                "conv": TemporalConv(channels, channels, 2 ** (scales - 1 - i), stride=2 ** (scales - 1 - i),
                                     members=k),
                "norm": ChannelsLastBatchNorm(channels, activation="relu", members=k),
            })
            for i in used
        )
        self.last_norm = ChannelsLastBatchNorm(channels, activation="relu", members=k)
        if self.mode == "gated":
            self.gate = nn.Sequential(
                Linear(scales * channels, channels, members=k), ChannelsLastBatchNorm(channels, members=k), nn.ReLU(),
                Linear(channels, scales, members=k),
            )
        self.dropout = Dropout(fusion_dropout or config.fusion_dropout)
        self.residual = Linear(channels, channels, members=k)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        last = self.last_norm(features[-1])
        if self.mode == "last":
            fused = last
        else:
            aligned = [d["norm"](d["conv"](f)) for d, f in zip(self.downsample, features[:-1])]
            aligned.append(last)
            if self.mode == "gated":  # each member's softmax over its own scales weighs its own channels
                k = self.members
                weights = torch.softmax(self.gate(cat_members(aligned, k)).unflatten(-1, (k, -1)), dim=-1)
                fused = sum(w.unsqueeze(-1) * f.unflatten(-1, (k, -1))
                            for w, f in zip(weights.unbind(-1), aligned)).flatten(-2)
            else:
                fused = torch.stack(aligned).mean(0)
        return self.dropout(fused) + self.residual(last)

    def fuse(self) -> None:
        for level in self.downsample:
            level["norm"] = fold_batch_norm(level["conv"], level["norm"])
        if self.mode == "gated":
            self.gate[1] = fold_batch_norm(self.gate[0], self.gate[1])


class MMN(nn.Module):
    def __init__(self, config: ModelConfig | Sequence[ModelConfig] | None = None, members: int = 1) -> None:
        """One MMN from `config`, or K members fused (module docstring): from K configs, or `members` copies of one.

        Configs that disagree on anything but drop_path, fusion_dropout and head_dropout raise a ValueError.
        """
        super().__init__()
        configs = [config or ModelConfig()] * members if config is None or isinstance(config, ModelConfig) \
            else list(config)
        if members not in (1, len(configs)):
            raise ValueError(f"MMN got {len(configs)} configs for members={members}: give one config, or one each")
        config = fused_config(configs)
        k = self.members = len(configs)
        self.config = config
        channels = config.embed_dim
        self.projection = nn.Sequential(
            Linear(config.in_channels, 4, members=k), nn.GELU(), Linear(4, 6, members=k), nn.GELU(),
            Linear(6, channels, members=k),
        )
        self.pos_enc = (PositionalEncoding(config, members=k) if config.pos_enc in POS_ENC_CHOICES
                        else registry.build("pos_enc", config.pos_enc, members=k, config=config))
        self.downsamplers = nn.ModuleList(Downsample(channels, members=k) for _ in range(config.num_scales - 1))
        # scale-major, as released; each member's own
        rates = [torch.linspace(0, c.drop_path, config.num_blocks).tolist() for c in configs]
        first_scale = config.num_scales - 1 if config.fusion == "last" else 0
        self.stages = nn.ModuleDict({
            str(scale): nn.Sequential(*(
                MotionGuidedBlock(config, [r[scale * config.depth + j] for r in rates] if k > 1
                                  else rates[0][scale * config.depth + j], members=k)
                for j in range(config.depth)
            ))
            for scale in range(first_scale, config.num_scales)
        })
        self.fusion = ScaleFusion(config, [c.fusion_dropout for c in configs], members=k)
        self.head_dropout = Dropout([c.head_dropout for c in configs])
        self.head = Linear(channels, config.num_classes, members=k)

    def use_generators(self, generators: Sequence[torch.Generator] | None) -> None:
        """Each member's random layers (DropPath, Dropout) draw from its own generator, one per member on the
        model's device, in its solo model's shapes and order: member k's masks are then those its solo run draws
        from a process stream in the generator's state. None: every member draws from the process's stream."""
        if generators is not None and len(generators) != self.members:
            raise ValueError(f"use_generators got {len(generators)} generators for {self.members} members: give "
                             "one per member")
        for module in self.modules():
            if isinstance(module, (DropPath, Dropout)):
                module.generators = None if generators is None else list(generators)

    def forward(self, x: torch.Tensor, index_t: torch.Tensor) -> torch.Tensor:
        """x: (N, C_in, T, V, M) or (N, C_in, T, V); index_t: (N, T) source-frame positions in [−1, 1).

        With K members, x (K, N, C_in, T, V, M) or (K, N, C_in, T, V) and index_t (K, N, T), each member's own
        batch; the logits are (K, N, classes).
        """
        k = self.members
        if x.ndim == 4 + (k > 1):
            x = x.unsqueeze(-1)
        if k == 1:
            n, c, t, v, m = x.shape
            # Persons fold into the joint axis person-major; channels go last.
            x = x.permute(0, 2, 4, 3, 1).reshape(n, t, m * v, c)
        else:  # ... and members before the channels, members-major
            _, n, c, t, v, m = x.shape
            x = x.permute(1, 3, 5, 4, 0, 2).reshape(n, t, m * v, k * c)
        x = self.pos_enc(self.projection(x), index_t)

        scales = [x]
        for downsample in self.downsamplers:
            scales.append(downsample(scales[-1]))
        features = [stage(scales[int(i)]) for i, stage in self.stages.items()]
        fused = self.fusion(features)
        logits = self.head(self.head_dropout(fused.mean(dim=(1, 2))))
        return logits if k == 1 else logits.unflatten(-1, (k, -1)).transpose(0, 1)
