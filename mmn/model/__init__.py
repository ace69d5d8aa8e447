"""MMN, faithful to the released implementation, with every ablation switch as a `ModelConfig` field."""
from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

from .config import ConfigError, ModelConfig

if TYPE_CHECKING:
    import torch

    from .inference import InferenceMMN, fuse_for_inference
    from .network import MMN
    from .released import from_released

# The network needs torch; the config does not. These load on first use, so that mmn.config (and every command
# line's --help) stays free of torch.
_LAZY = {"InferenceMMN": ".inference", "fuse_for_inference": ".inference", "MMN": ".network",
         "from_released": ".released"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_model(config: ModelConfig | None = None, **overrides) -> MMN:
    """An MMN from a config (the release's MA-52 joint model by default) with optional field overrides."""
    from .network import MMN

    base = (config or ModelConfig()).to_dict()
    return MMN(ModelConfig(**{**base, **overrides}))


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> MMN:
    """The model of a best_weights.pt (`mmn.train.fit` writes one per run), in eval mode on `device`.

    The model is rebuilt from the config recorded beside the weights; a missing, truncated, foreign or newer file
    raises `mmn.checkpoint.WeightsError` (a ValueError) with one line saying which.
    """
    from ..checkpoint import WeightsError, read_weights
    from ..runtime import resolve_device
    from .network import MMN

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
