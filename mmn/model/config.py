"""`ModelConfig`: every switch of MMN as plain data. The defaults are the release's MA-52 joint model."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from . import registry

MSM_CHOICES = ("released", "graph", "off")
POS_ENC_CHOICES = ("stpe", "learned", "sinusoidal", "none")
FUSION_CHOICES = ("gated", "mean", "last")


class ConfigError(ValueError):
    """A configuration that cannot build a model; the message says what to change."""


class IncompatibleOptions(ConfigError):
    """Options each valid on its own that cannot work together. `keys` names them (dotted), so that a caller can
    tell whether a variant that sets one of them may still resolve the conflict."""

    def __init__(self, message: str, keys: tuple[str, ...]) -> None:
        super().__init__(message)
        self.keys = keys


def is_integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def need(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


_POSITIVE_INTEGERS = ("num_joints", "num_classes", "num_frames", "in_channels", "num_persons", "embed_dim", "depth",
                      "groups", "temporal_kernel")
_CHOICES = {"msm": MSM_CHOICES, "pos_enc": POS_ENC_CHOICES, "fusion": FUSION_CHOICES}
_SWITCHES = ("mtm", "modulated_fusion", "skeleton_branch", "temporal_branch", "motion_branch")
_RATES = ("drop_path", "fusion_dropout", "head_dropout")


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
    mtm: bool | str = True  # or the name of a registered module (mmn.model.registry)
    modulated_fusion: bool = False  # the release gates the unmodulated branch outputs
    skeleton_branch: bool = True
    temporal_branch: bool = True
    motion_branch: bool = True  # whether the motion features are fused; MSM/MTM may still use them as guidance
    pos_enc: str = "stpe"
    fusion: str = "gated"

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Every field on its own, then the conditions between fields."""
        for f in fields(self):
            self.check_field(f.name, getattr(self, f.name))
        self._check_combination()

    @staticmethod
    def check_field(name: str, value: Any) -> None:
        """One field's type and range, whatever the other fields are; ConfigError says what is wrong."""
        if name in _POSITIVE_INTEGERS:
            need(is_integer(value) and value >= 1, f"model.{name} must be a positive integer, got {value!r}")
            need(name != "temporal_kernel" or value % 2 == 1, f"model.temporal_kernel must be odd, got {value}")
        elif name in registry.SLOTS and registry.is_registered(name, value):
            pass  # a user's module (mmn.model.registry), imported because the user asked for it
        elif name in _CHOICES:
            need(value in _CHOICES[name], f"model.{name}={value!r} is not one of {', '.join(_CHOICES[name])}"
                 + registry.hint(name, value))
        elif name in _SWITCHES:
            need(isinstance(value, bool),
                 f"model.{name} must be true or false, got {value!r}" + registry.hint(name, value))
        elif name == "num_scales":
            need(is_integer(value) and 1 <= value <= 4, f"model.num_scales must be 1, 2, 3 or 4, got {value!r}")
        else:  # mlp_ratio and the rates
            need(is_number(value), f"model.{name} must be a number, got {value!r}")
            need(name != "mlp_ratio" or value > 0, f"model.mlp_ratio must be positive, got {value}")
            need(name not in _RATES or 0.0 <= value < 1.0, f"model.{name} must lie in [0, 1), got {value}")

    def _check_combination(self) -> None:
        def need_together(ok: bool, message: str, *names: str) -> None:
            if not ok:
                raise IncompatibleOptions(message, tuple(f"model.{name}" for name in names))

        stride = 2 ** (self.num_scales - 1)
        need_together(self.num_frames % stride == 0,
                      f"model.num_frames={self.num_frames} must be divisible by 2^(num_scales-1)={stride}; "
                      f"use num_frames={max(2 * stride, self.num_frames // stride * stride)} or fewer scales",
                      "num_frames", "num_scales")
        # Frame differences need two frames, at the coarsest scale too.
        need_together(self.num_frames >= 2 * stride,
                      f"model.num_frames={self.num_frames} leaves the coarsest of {self.num_scales} scales under 2 "
                      f"frames, too few for frame differences; use num_frames >= {2 * stride} or fewer scales",
                      "num_frames", "num_scales")
        need_together(self.embed_dim % 4 == 0 and (self.embed_dim // 4) % self.groups == 0,
                      f"model.embed_dim={self.embed_dim} must split into 4 quarters each divisible by "
                      f"groups={self.groups}; use a multiple of {4 * self.groups}", "embed_dim", "groups")
        need_together(self.skeleton_branch or self.temporal_branch or self.motion_branch,
                      "at least one of model.skeleton_branch, temporal_branch, motion_branch must be on",
                      "skeleton_branch", "temporal_branch", "motion_branch")
        need_together(self.skeleton_branch or self.msm == "off",
                      "model.msm modulates the skeleton branch: with skeleton_branch=false set msm=off",
                      "msm", "skeleton_branch")
        need_together(self.temporal_branch or not self.mtm,
                      "model.mtm modulates the temporal branch: with temporal_branch=false set mtm=false",
                      "mtm", "temporal_branch")

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


def fused_config(configs: Sequence[ModelConfig]) -> ModelConfig:
    """The first of K configs that one fused model (trial packs) can run: all but their rates must agree, since the
    members share every shape and code path; the rates (`drop_path`, `fusion_dropout`, `head_dropout`) are each
    member's own."""
    if not configs:
        raise ValueError("a fused model needs at least one config")
    first = configs[0].to_dict()
    for config in configs[1:]:
        for name, value in config.to_dict().items():
            if name not in _RATES and value != first[name]:
                raise ConfigError(f"pack members differ in model.{name} ({first[name]!r} vs {value!r}); pack only "
                                  f"trials that differ in {', '.join(_RATES)} or in training options")
    return configs[0]
