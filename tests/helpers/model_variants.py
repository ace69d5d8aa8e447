"""The model variants that several test files run: every ModelConfig switch at least once, and a few combinations."""
from __future__ import annotations

VARIANTS: list[dict] = [
    {},
    {"msm": "off"},
    {"msm": "graph"},
    {"mtm": False},
    {"modulated_fusion": True},
    {"skeleton_branch": False, "msm": "off"},
    {"temporal_branch": False, "mtm": False},
    {"motion_branch": False},
    {"motion_branch": False, "msm": "off", "mtm": False},
    {"pos_enc": "none"},
    {"pos_enc": "learned"},
    {"pos_enc": "sinusoidal"},
    {"num_scales": 1},
    {"num_scales": 2, "fusion": "mean"},
    {"num_scales": 3, "fusion": "last"},
    {"depth": 2, "groups": 2, "temporal_kernel": 5, "mlp_ratio": 1.5},
]


def variant_id(overrides: dict) -> str:
    return ",".join(f"{key}={value}" for key, value in overrides.items()) or "default"
