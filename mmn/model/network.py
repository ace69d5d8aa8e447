"""MMN: embedding, temporal pyramid, one stack of motion-guided blocks per scale, multi-scale fusion, head.

Tensors are channels-last (N, T, V, C) inside the network; the input is the release's (N, 2, T, V, M).
"""
from __future__ import annotations

import torch
from torch import nn

from .block import MotionGuidedBlock
from .config import ModelConfig
from .layers import ChannelsLastBatchNorm, Linear, TemporalConv, fold_batch_norm, sinusoid


class PositionalEncoding(nn.Module):
    """stpe: te[b, t, c]·table[c, v] with te a sinusoid of the source-frame position index_t (the release);
    learned: a (T, V, C) table; sinusoidal: te alone, shared by all joints; none: nothing is added."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.mode = config.pos_enc
        channels, joints = config.embed_dim, config.graph_joints
        if self.mode == "stpe":
            self.table = nn.Parameter(nn.init.trunc_normal_(torch.empty(channels, joints), std=0.02))
        elif self.mode == "learned":
            self.table = nn.Parameter(nn.init.trunc_normal_(torch.empty(config.num_frames, joints, channels), std=0.02))

    def forward(self, x: torch.Tensor, index_t: torch.Tensor) -> torch.Tensor:
        channels = x.shape[-1]
        if self.mode == "stpe":
            return x + sinusoid(index_t, channels).unsqueeze(2) * self.table.t()
        if self.mode == "sinusoidal":
            return x + sinusoid(index_t, channels).unsqueeze(2)
        if self.mode == "learned":
            return x + self.table
        return x


class Downsample(nn.Module):
    """Halves the frames: conv (3, 1), stride 2, replicate padding, then BatchNorm."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = TemporalConv(channels, channels, 3, stride=2, padding=1, padding_mode="replicate")
        self.norm = ChannelsLastBatchNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))

    def fuse(self) -> None:
        self.norm = fold_batch_norm(self.conv, self.norm)


class ScaleFusion(nn.Module):
    """Brings every scale to the coarsest frame rate and combines them.

    gated (the release): softmax weights over scales per (t, v) from a small conv gate; mean: equal weights;
    last: the coarsest scale alone. The coarsest scale also feeds a residual 1×1 conv.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        channels, scales = config.embed_dim, config.num_scales
        self.mode = config.fusion
        used = range(scales - 1) if self.mode != "last" else range(0)
        self.downsample = nn.ModuleList(
            nn.ModuleDict({
                "conv": TemporalConv(channels, channels, 2 ** (scales - 1 - i), stride=2 ** (scales - 1 - i)),
                "norm": ChannelsLastBatchNorm(channels, activation="relu"),
            })
            for i in used
        )
        self.last_norm = ChannelsLastBatchNorm(channels, activation="relu")
        if self.mode == "gated":
            self.gate = nn.Sequential(
                Linear(scales * channels, channels), ChannelsLastBatchNorm(channels), nn.ReLU(),
                Linear(channels, scales),
            )
        self.dropout = nn.Dropout(config.fusion_dropout)
        self.residual = Linear(channels, channels)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        last = self.last_norm(features[-1])
        if self.mode == "last":
            fused = last
        else:
            aligned = [d["norm"](d["conv"](f)) for d, f in zip(self.downsample, features[:-1])]
            aligned.append(last)
            if self.mode == "gated":
                weights = torch.softmax(self.gate(torch.cat(aligned, dim=-1)), dim=-1)
                fused = sum(w.unsqueeze(-1) * f for w, f in zip(weights.unbind(-1), aligned))
            else:
                fused = torch.stack(aligned).mean(0)
        return self.dropout(fused) + self.residual(last)

    def fuse(self) -> None:
        for level in self.downsample:
            level["norm"] = fold_batch_norm(level["conv"], level["norm"])
        if self.mode == "gated":
            self.gate[1] = fold_batch_norm(self.gate[0], self.gate[1])


class MMN(nn.Module):
    def __init__(self, config: ModelConfig | None = None) -> None:
        super().__init__()
        config = config or ModelConfig()
        self.config = config
        channels = config.embed_dim
        self.projection = nn.Sequential(
            Linear(config.in_channels, 4), nn.GELU(), Linear(4, 6), nn.GELU(), Linear(6, channels),
        )
        self.pos_enc = PositionalEncoding(config)
        self.downsamplers = nn.ModuleList(Downsample(channels) for _ in range(config.num_scales - 1))
        rates = torch.linspace(0, config.drop_path, config.num_blocks).tolist()  # scale-major, as released
        first_scale = config.num_scales - 1 if config.fusion == "last" else 0
        self.stages = nn.ModuleDict({
            str(scale): nn.Sequential(*(
                MotionGuidedBlock(config, rates[scale * config.depth + j]) for j in range(config.depth)
            ))
            for scale in range(first_scale, config.num_scales)
        })
        self.fusion = ScaleFusion(config)
        self.head_dropout = nn.Dropout(config.head_dropout)
        self.head = Linear(channels, config.num_classes)

    def forward(self, x: torch.Tensor, index_t: torch.Tensor) -> torch.Tensor:
        """x: (N, C_in, T, V, M) or (N, C_in, T, V); index_t: (N, T) source-frame positions in [−1, 1)."""
        if x.ndim == 4:
            x = x.unsqueeze(-1)
        n, c, t, v, m = x.shape
        # Persons fold into the joint axis person-major; channels go last.
        x = x.permute(0, 2, 4, 3, 1).reshape(n, t, m * v, c)
        x = self.pos_enc(self.projection(x), index_t)

        scales = [x]
        for downsample in self.downsamplers:
            scales.append(downsample(scales[-1]))
        features = [stage(scales[int(i)]) for i, stage in self.stages.items()]
        fused = self.fusion(features)
        return self.head(self.head_dropout(fused.mean(dim=(1, 2))))
