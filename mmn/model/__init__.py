"""MMN, faithful to the released implementation, with every ablation switch as a `ModelConfig` field."""
from .config import ConfigError, ModelConfig
from .inference import InferenceMMN, fuse_for_inference
from .network import MMN
from .released import from_released


def build_model(config: ModelConfig | None = None, **overrides) -> MMN:
    """An MMN from a config (the release's MA-52 joint model by default) with optional field overrides."""
    base = (config or ModelConfig()).to_dict()
    return MMN(ModelConfig(**{**base, **overrides}))


__all__ = ["ConfigError", "InferenceMMN", "MMN", "ModelConfig", "build_model", "from_released", "fuse_for_inference"]
