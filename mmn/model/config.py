"""`ModelConfig`: every switch of MMN as plain data. The defaults are the release's MA-52 joint model."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

MSM_CHOICES = ("released", "graph", "off")
POS_ENC_CHOICES = ("stpe", "learned", "sinusoidal", "none")
FUSION_CHOICES = ("gated", "mean", "last")


class ConfigError(ValueError):
    """A configuration that cannot build a model; the message says what to change."""


@dataclass(frozen=True)
class ModelConfig:
    num_joints: int = 44
    num_classes: int = 52
    num_frames: int = 64
    in_channels: int = 2
    num_persons: int = 1
    embed_dim: int = 96  # width
    depth: int = 3  # blocks per scale
    num_scales: int = 4  # temporal pyramid levels T, T/2, ...
    groups: int = 4  # joint-mixing matrices in the skeleton branch, and groups of its temporal conv
    temporal_kernel: int = 3  # kernel of the temporal branch's conv
    mlp_ratio: float = 2.0
    drop_path: float = 0.3  # highest stochastic-depth rate; rates rise linearly over the blocks
    fusion_dropout: float = 0.1
    head_dropout: float = 0.1
    msm: str = "released"  # released: per-joint gain; graph: true joint mixing; off
    mtm: bool = True
    modulated_fusion: bool = False  # the release gates the unmodulated branch outputs
    skeleton_branch: bool = True
    temporal_branch: bool = True
    motion_branch: bool = True  # whether the motion features are fused; MSM/MTM may still use them as guidance
    pos_enc: str = "stpe"
    fusion: str = "gated"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(message)

        for name in ("num_joints", "num_classes", "num_frames", "in_channels", "num_persons", "embed_dim", "depth",
                     "groups", "temporal_kernel"):
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool) and value >= 1,
                 f"model.{name} must be a positive integer, got {value!r}")
        need(self.msm in MSM_CHOICES, f"model.msm={self.msm!r} is not one of {', '.join(MSM_CHOICES)}")
        need(self.pos_enc in POS_ENC_CHOICES,
             f"model.pos_enc={self.pos_enc!r} is not one of {', '.join(POS_ENC_CHOICES)}")
        need(self.fusion in FUSION_CHOICES, f"model.fusion={self.fusion!r} is not one of {', '.join(FUSION_CHOICES)}")
        for name in ("mtm", "modulated_fusion", "skeleton_branch", "temporal_branch", "motion_branch"):
            need(isinstance(getattr(self, name), bool), f"model.{name} must be true or false, got {getattr(self, name)!r}")
        need(isinstance(self.num_scales, int) and not isinstance(self.num_scales, bool) and 1 <= self.num_scales <= 4,
             f"model.num_scales must be 1, 2, 3 or 4, got {self.num_scales!r}")
        stride = 2 ** (self.num_scales - 1)
        need(self.num_frames % stride == 0,
             f"model.num_frames={self.num_frames} must be divisible by 2^(num_scales-1)={stride}; "
             f"use num_frames={max(2 * stride, self.num_frames // stride * stride)} or fewer scales")
        # Frame differences need two frames, at the coarsest scale too.
        need(self.num_frames >= 2 * stride,
             f"model.num_frames={self.num_frames} leaves the coarsest of {self.num_scales} scales under 2 frames, "
             f"too few for frame differences; use num_frames >= {2 * stride} or fewer scales")
        need(self.embed_dim % 4 == 0 and (self.embed_dim // 4) % self.groups == 0,
             f"model.embed_dim={self.embed_dim} must split into 4 quarters each divisible by groups={self.groups}; "
             f"use a multiple of {4 * self.groups}")
        need(self.temporal_kernel % 2 == 1, f"model.temporal_kernel must be odd, got {self.temporal_kernel}")
        for name in ("mlp_ratio", "drop_path", "fusion_dropout", "head_dropout"):
            value = getattr(self, name)
            need(isinstance(value, (int, float)) and not isinstance(value, bool),
                 f"model.{name} must be a number, got {value!r}")
        need(self.mlp_ratio > 0, f"model.mlp_ratio must be positive, got {self.mlp_ratio}")
        for name in ("drop_path", "fusion_dropout", "head_dropout"):
            need(0.0 <= getattr(self, name) < 1.0, f"model.{name} must lie in [0, 1), got {getattr(self, name)}")
        need(self.skeleton_branch or self.temporal_branch or self.motion_branch,
             "at least one of model.skeleton_branch, temporal_branch, motion_branch must be on")
        need(self.skeleton_branch or self.msm == "off",
             "model.msm modulates the skeleton branch: with skeleton_branch=false set msm=off")
        need(self.temporal_branch or not self.mtm,
             "model.mtm modulates the temporal branch: with temporal_branch=false set mtm=false")

    @property
    def graph_joints(self) -> int:
        """Joints the blocks mix over: persons fold into the joint axis, person-major."""
        return self.num_joints * self.num_persons

    @property
    def num_blocks(self) -> int:
        return self.depth * self.num_scales

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown model option(s) {', '.join(unknown)}; valid: {', '.join(sorted(known))}")
        return cls(**values)
