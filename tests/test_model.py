"""MMN against the release: the reference logits, checkpoint loading, parameter counts, input forms, config errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmn.model import MMN, ConfigError, ModelConfig, from_released

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def released_sd(reference: dict) -> dict[str, torch.Tensor]:
    return reference["state_dict"]


@pytest.fixture(scope="module")
def loaded_sd(released_sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict after loading the release's, the yardstick for every other way of passing it."""
    return from_released(released_sd).state_dict()


def assert_same_state(model: MMN, expected: dict[str, torch.Tensor]) -> None:
    actual = model.state_dict()
    assert actual.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(actual[name], tensor), name


# --- reproducing the release ---------------------------------------------------------------------------------

def test_eval_logits_match_release(reference: dict) -> None:
    model = from_released(reference["state_dict"]).eval()
    with torch.no_grad():
        logits = model(reference["x"], reference["index_t"])
    torch.testing.assert_close(logits, reference["logits_eval"], atol=1e-4, rtol=0)


def test_train_logits_match_release(reference: dict) -> None:
    # Every dropout off, BatchNorm on batch statistics: the release's train-mode forward is deterministic.
    model = from_released(reference["state_dict"], drop_path=0.0, fusion_dropout=0.0, head_dropout=0.0).train()
    with torch.no_grad():
        logits = model(reference["x"], reference["index_t"])
    torch.testing.assert_close(logits, reference["logits_train"], atol=1e-4, rtol=0)


def test_inferred_config_is_the_release_default(released_sd: dict[str, torch.Tensor]) -> None:
    assert from_released(released_sd).config == ModelConfig()


# --- checkpoint forms ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("wrap", ["model", "state_dict", "module_prefix", "model_and_prefix"])
def test_from_released_accepts_wrapped_checkpoints(released_sd, loaded_sd, wrap: str) -> None:
    prefixed = {f"module.{name}": tensor for name, tensor in released_sd.items()}
    checkpoint = {
        "model": {"model": released_sd, "epoch": 3},
        "state_dict": {"state_dict": released_sd, "optimizer": {}},
        "module_prefix": prefixed,
        "model_and_prefix": {"model": prefixed},
    }[wrap]
    assert_same_state(from_released(checkpoint), loaded_sd)


@pytest.mark.parametrize("as_str", [True, False])
def test_from_released_accepts_a_path(released_sd, loaded_sd, tmp_path: Path, as_str: bool) -> None:
    path = tmp_path / "best.pth"
    torch.save({"state_dict": released_sd}, path)
    assert_same_state(from_released(str(path) if as_str else path), loaded_sd)


def test_from_released_overrides_reach_the_config(released_sd) -> None:
    model = from_released(released_sd, drop_path=0.0, head_dropout=0.0, modulated_fusion=True)
    assert (model.config.drop_path, model.config.head_dropout, model.config.modulated_fusion) == (0.0, 0.0, True)
    assert all(block.drop_path.rate == 0.0 for stage in model.stages.values() for block in stage)


# --- strictness ----------------------------------------------------------------------------------------------

def test_extra_tensor_is_named(released_sd) -> None:
    checkpoint = {**released_sd, "MFM.0.blocks.0.aux_head.weight": torch.zeros(3)}
    with pytest.raises(ValueError, match=r"MFM\.0\.blocks\.0\.aux_head\.weight"):
        from_released(checkpoint)


def test_missing_tensor_is_named(released_sd) -> None:
    checkpoint = {name: t for name, t in released_sd.items() if name != "MFM.2.blocks.1.MTM.0.bias"}
    # The message names the tensor by our name for it (stages.<scale>.<block>.mtm.conv).
    with pytest.raises(ValueError, match=r"lacks.*stages\.2\.1\.mtm\.conv\.bias"):
        from_released(checkpoint)


def test_missing_architecture_tensor_is_named(released_sd) -> None:
    checkpoint = {name: t for name, t in released_sd.items() if name != "head.weight"}
    with pytest.raises(ValueError, match=r"head\.weight"):
        from_released(checkpoint)


def test_wrong_shape_is_named(released_sd) -> None:
    checkpoint = dict(released_sd)
    checkpoint["MFM.1.blocks.2.mapping.weight"] = torch.zeros(96, 95)
    with pytest.raises(ValueError, match=r"MFM\.1\.blocks\.2\.mapping\.weight.*\(96, 95\)"):
        from_released(checkpoint)


def test_same_numel_wrong_shape_is_rejected(released_sd) -> None:
    checkpoint = dict(released_sd)
    checkpoint["DSs.0.reduction.weight"] = released_sd["DSs.0.reduction.weight"].reshape(96, 96, 1, 3)
    with pytest.raises(ValueError, match=r"DSs\.0\.reduction\.weight"):
        from_released(checkpoint)


# --- sizes and inputs ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("config", "expected"), [
    (ModelConfig(), 1_325_186),  # MA-52
    (ModelConfig(num_joints=22, num_classes=32), 1_234_014),  # iMiGUE
])
def test_parameter_counts(config: ModelConfig, expected: int) -> None:
    assert sum(p.numel() for p in MMN(config).parameters()) == expected


def test_four_dim_input_equals_one_person() -> None:
    torch.manual_seed(0)
    config = ModelConfig(num_joints=10, num_classes=5, num_frames=16, embed_dim=32, depth=1)
    model = MMN(config).eval()
    x, index_t = torch.randn(2, 2, 16, 10), torch.rand(2, 16) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(model(x, index_t), model(x.unsqueeze(-1), index_t), rtol=0, atol=0)


def test_two_persons_run() -> None:
    config = ModelConfig(num_joints=10, num_classes=5, num_frames=16, embed_dim=32, depth=1, num_persons=2)
    model = MMN(config).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 2, 16, 10, 2), torch.rand(2, 16)).shape == (2, 5)


# --- configuration errors ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("overrides", "message"), [
    ({"num_frames": 60}, "num_frames=60 must be divisible by 2^(num_scales-1)=8; use num_frames=56"),
    ({"num_frames": 6, "num_scales": 3}, "divisible by 2^(num_scales-1)=4"),
    ({"num_frames": 8}, "num_frames=8 leaves the coarsest of 4 scales under 2 frames, too few for frame differences; "
                        "use num_frames >= 16 or fewer scales"),
    ({"pos_enc": "rope"}, "pos_enc='rope' is not one of stpe, learned, sinusoidal, none"),
    ({"msm": "full"}, "msm='full' is not one of released, graph, off"),
    ({"fusion": "max"}, "fusion='max' is not one of gated, mean, last"),
    ({"num_scales": 0}, "num_scales must be 1, 2, 3 or 4, got 0"),
    ({"num_scales": 5}, "num_scales must be 1, 2, 3 or 4, got 5"),
    ({"embed_dim": 90}, "embed_dim=90 must split into 4 quarters each divisible by groups=4; use a multiple of 16"),
    ({"embed_dim": 96, "groups": 5}, "use a multiple of 20"),
    ({"skeleton_branch": False}, "with skeleton_branch=false set msm=off"),
    ({"temporal_branch": False, "msm": "off"}, "with temporal_branch=false set mtm=false"),
    ({"skeleton_branch": False, "temporal_branch": False, "motion_branch": False, "msm": "off", "mtm": False},
     "at least one of model.skeleton_branch, temporal_branch, motion_branch must be on"),
    ({"temporal_kernel": 4}, "temporal_kernel must be odd, got 4"),
    ({"depth": 0}, "depth must be a positive integer, got 0"),
    ({"embed_dim": 96.0}, "embed_dim must be a positive integer, got 96.0"),
    ({"num_joints": True}, "num_joints must be a positive integer, got True"),
    ({"mtm": "yes"}, "mtm must be true or false, got 'yes'"),
    ({"drop_path": 1.0}, "drop_path must lie in [0, 1), got 1.0"),
    ({"head_dropout": -0.1}, "head_dropout must lie in [0, 1), got -0.1"),
    ({"mlp_ratio": 0}, "mlp_ratio must be positive, got 0"),
])
def test_invalid_configs_say_what_to_change(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        ModelConfig(**overrides)
    assert message in str(error.value)


def test_unknown_option_in_from_dict() -> None:
    with pytest.raises(ConfigError, match="unknown model option.*dpeth"):
        ModelConfig.from_dict({"dpeth": 2})


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_non_numeric_rate_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="drop_path"):
        ModelConfig(drop_path="0.3")
