"""MMN, faithful to the released implementation, with every ablation switch as a `ModelConfig` field."""
from __future__ import annotations

import os

import torch

from ..checkpoint import WeightsError, read_weights
from ..runtime import resolve_device
from .config import ConfigError, ModelConfig
from .inference import InferenceMMN, fuse_for_inference
from .network import MMN
from .released import from_released


def build_model(config: ModelConfig | None = None, **overrides) -> MMN:
    """An MMN from a config (the release's MA-52 joint model by default) with optional field overrides."""
    base = (config or ModelConfig()).to_dict()
    return MMN(ModelConfig(**{**base, **overrides}))


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> MMN:
    """The model of a best_weights.pt (`mmn.train.fit` writes one per run), in eval mode on `device`.

    The model is rebuilt from the config recorded beside the weights; a missing, truncated, foreign or newer file
    raises `mmn.checkpoint.WeightsError` (a ValueError) with one line saying which.
    """
    record = read_weights(path)
    try:
        model = MMN(ModelConfig.from_dict(record["config"]["model"]))
        model.load_state_dict(record["model"])
    except (ConfigError, RuntimeError, TypeError) as error:  # options or tensors this MMN does not have
        raise WeightsError(f"{path} does not fit this version's MMN ({type(error).__name__}: "
                           f"{' '.join(str(error).split())[:200]})") from None
    return model.to(resolve_device(str(device))).eval()


__all__ = ["ConfigError", "InferenceMMN", "MMN", "ModelConfig", "build_model", "from_released", "fuse_for_inference",
           "load"]
