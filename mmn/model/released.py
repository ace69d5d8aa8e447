"""Loading the release's checkpoints: its parameter names map onto ours, strictly, tensor by tensor."""
from __future__ import annotations

import pickle
import re
from os import PathLike
from typing import Any, Mapping

import torch

from .config import ModelConfig
from .network import MMN

# (release pattern, our replacement), applied in order to every release name.
_RENAMES: tuple[tuple[str, str], ...] = (
    (r"^STPE$", "pos_enc.table"),
    (r"^DSs\.(\d+)\.reduction\.", r"downsamplers.\1.conv."),
    (r"^DSs\.(\d+)\.bn\.", r"downsamplers.\1.norm."),
    (r"^MFM\.(\d+)\.blocks\.(\d+)\.", r"stages.\1.\2."),
    (r"\.norm_1\.", ".norm1."),
    (r"\.norm_2\.", ".norm2."),
    (r"\.gconv$", ".joint_mixing"),
    (r"\.tconv\.", ".temporal_conv."),
    (r"\.Motion\.0\.", ".motion.conv."),
    (r"\.Motion\.1\.", ".motion.norm."),
    (r"\.MSM\.adj$", ".msm.adjacency"),
    (r"\.MSM\.fc\.", ".msm.fc."),
    (r"\.MSM\.bn\.", ".msm.norm."),
    (r"\.MTM\.0\.", ".mtm.conv."),
    (r"\.MTM\.2\.", ".mtm.norm."),
    (r"\.aggregation_gate\.0\.", ".gate.reduce."),
    (r"\.aggregation_gate\.1\.", ".gate.norm."),
    (r"\.aggregation_gate\.3\.", ".gate.expand."),
    (r"\.aggregation\.0\.", ".merge."),
    (r"\.aggregation\.1\.", ".merge_norm."),
    (r"^fusion\.f4_proc\.0\.", "fusion.last_norm."),
    (r"^fusion\.gate_conv\.", "fusion.gate."),
    (r"^fusion\.res_conv\.", "fusion.residual."),
)
_FUSION_DOWN = re.compile(r"^fusion\.down(\d+)\.([01])\.")


def released_to_ours(name: str) -> str:
    """Our parameter name for one of the release's."""
    match = _FUSION_DOWN.match(name)
    if match:  # down1 is the finest scale, our downsample.0
        part = "conv" if match.group(2) == "0" else "norm"
        return f"fusion.downsample.{int(match.group(1)) - 1}.{part}." + name[match.end():]
    for pattern, replacement in _RENAMES:
        name = re.sub(pattern, replacement, name)
    return name


def _unwrap(checkpoint: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    for key in ("model", "state_dict"):
        if key in checkpoint and isinstance(checkpoint[key], Mapping):
            checkpoint = checkpoint[key]
            break
    return {name.removeprefix("module."): tensor for name, tensor in checkpoint.items()}


def infer_config(state_dict: Mapping[str, torch.Tensor], **overrides: Any) -> ModelConfig:
    """The release's architecture read off its tensor shapes; `overrides` set any other ModelConfig field."""
    try:
        num_classes, embed_dim = state_dict["head.weight"].shape
        groups, num_joints, _ = state_dict["MFM.0.blocks.0.gconv"].shape
        hidden = state_dict["MFM.0.blocks.0.mlp.fc1.weight"].shape[0]
        temporal_kernel = state_dict["MFM.0.blocks.0.tconv.weight"].shape[2]
    except KeyError as missing:
        raise ValueError(f"not a released MMN checkpoint: tensor {missing} is missing") from None
    scales = {int(m.group(1)) for m in map(re.compile(r"^MFM\.(\d+)\.").match, state_dict) if m}
    blocks = {int(m.group(1)) for m in map(re.compile(r"^MFM\.0\.blocks\.(\d+)\.").match, state_dict) if m}
    inferred = dict(
        num_joints=num_joints, num_classes=num_classes, embed_dim=embed_dim, groups=groups,
        num_scales=len(scales), depth=len(blocks), mlp_ratio=hidden / embed_dim,
        temporal_kernel=temporal_kernel,
        msm="released" if "MFM.0.blocks.0.MSM.adj" in state_dict else "off",
        mtm="MFM.0.blocks.0.MTM.0.weight" in state_dict,
    )
    return ModelConfig(**{**inferred, **overrides})


def convert_state_dict(released: Mapping[str, torch.Tensor], model: MMN) -> dict[str, torch.Tensor]:
    """Rename and reshape the release's tensors to ours; any missing, extra or misshapen tensor is an error."""
    ours = model.state_dict()
    converted: dict[str, torch.Tensor] = {}
    extra = []
    for name, tensor in released.items():
        target = released_to_ours(name)
        if target not in ours:
            extra.append(name)
            continue
        expected = ours[target].shape
        if tensor.shape != expected:
            if tensor.shape != expected + (1, 1):  # only the release's 1×1 convs change shape: they are our Linears
                raise ValueError(f"released tensor {name} has shape {tuple(tensor.shape)} but the model built "
                                 f"from this config expects {tuple(expected)} for {target}")
            tensor = tensor.reshape(expected)
        converted[target] = tensor
    if extra:
        raise ValueError(f"released checkpoint has tensors this model does not: {', '.join(extra[:5])}"
                         f"{' ...' if len(extra) > 5 else ''}")
    missing = sorted(set(ours) - set(converted))
    if missing:
        raise ValueError(f"released checkpoint lacks tensors this model needs (our names): {', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''}")
    return converted


def _load_tensors_only(path: str | PathLike) -> Any:
    """torch.load with weights_only=True, its multi-paragraph refusals turned into one line naming the file."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(f"{path}: the checkpoint holds objects other than tensors and containers, which are not "
                         "loaded since unpickling them could run code; save its state dict alone "
                         "(torch.save(model.state_dict(), ...)) where you trust it, and load that") from None
    except RuntimeError as error:
        first_line = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {first_line}") from None


def from_released(state_dict_or_path: Mapping[str, Any] | str | PathLike, **overrides: Any) -> MMN:
    """Our model with the release's weights.

    Accepts a bare state dict, one under a "model" or "state_dict" key, names with a "module." prefix, or a
    path to any of these (loaded with weights_only=True: nothing in the file is executed). Joints, classes, width,
    depth and scales are inferred from the tensor shapes; keyword overrides set other ModelConfig fields, e.g.
    `from_released(sd, drop_path=0.0, fusion_dropout=0.0, head_dropout=0.0)`.
    """
    if isinstance(state_dict_or_path, (str, PathLike)):
        state_dict_or_path = _load_tensors_only(state_dict_or_path)
    released = _unwrap(state_dict_or_path)
    model = MMN(infer_config(released, **overrides))
    model.load_state_dict(convert_state_dict(released, model), strict=True)
    return model

