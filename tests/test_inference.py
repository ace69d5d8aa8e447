"""`fuse_for_inference`: the folded eval-only copy gives the unfolded model's eval logits, for every variant; each
module's own `fuse` keeps its eval output."""
from __future__ import annotations


import pytest
import torch

from mmn.model import MMN, InferenceMMN, ModelConfig, from_released, fuse_for_inference
from mmn.model.block import BranchGate, MotionBranch, MotionGuidedBlock
from mmn.model.modulation import SkeletalModulation, TemporalModulation
from mmn.model.network import Downsample, ScaleFusion
from tests.helpers.model_variants import VARIANTS as MODEL_VARIANTS, variant_id

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(embed_dim=32, num_frames=16, num_joints=10, num_classes=5, depth=2)

# The shared variants, plus combinations that only the folding treats specially, and two persons.
VARIANTS = MODEL_VARIANTS + [
    {"msm": "off", "mtm": False},
    {"modulated_fusion": True, "msm": "graph", "mtm": False},
    {"num_persons": 2},
]


def trained_like(**overrides) -> MMN:
    """A small model whose norms are far from their initial identity, so that every fold changes numbers."""
    torch.manual_seed(0)
    return perturbed(MMN(ModelConfig(**{**SMALL, **overrides})))


def perturbed(model: torch.nn.Module) -> torch.nn.Module:
    """`model` in eval mode with its norms and adjacencies moved away from their initial values."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (torch.nn.modules.batchnorm._BatchNorm, torch.nn.LayerNorm)):
                module.weight.copy_(1 + 0.3 * torch.randn_like(module.weight))
                module.bias.copy_(0.2 * torch.randn_like(module.bias))
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.running_mean.copy_(0.3 * torch.randn_like(module.running_mean))
                module.running_var.copy_(0.5 + torch.rand_like(module.running_var))
        for name, param in model.named_parameters():
            if name.endswith("adjacency"):
                param.add_(0.2 * torch.rand_like(param))
    return model.eval()


# One module of each kind that folds itself, and inputs for it (N 3, T 16, V 10, C 32).
def _branch_and_motion() -> list[torch.Tensor]:
    return [torch.randn(3, 16, 10, 8), torch.randn(3, 16, 10, 16)]


MODULES = {
    "motion_branch": lambda: (MotionBranch(16), [torch.randn(3, 16, 10, 16)]),
    "msm_released": lambda: (SkeletalModulation(16, 10, "released"), _branch_and_motion()),
    "msm_graph": lambda: (SkeletalModulation(16, 10, "graph"), _branch_and_motion()),
    "mtm": lambda: (TemporalModulation(16), _branch_and_motion()),
    "branch_gate": lambda: (BranchGate(32, 3, 8), [torch.randn(3, 16, 10, 32)]),
    "block": lambda: (MotionGuidedBlock(ModelConfig(**SMALL), 0.1), [torch.randn(3, 16, 10, 32)]),
    "downsample": lambda: (Downsample(32), [torch.randn(3, 16, 10, 32)]),
    "scale_fusion": lambda: (ScaleFusion(ModelConfig(**{**SMALL, "num_scales": 3})),
                             [[torch.randn(3, 16 // 2 ** i, 10, 32) for i in range(3)]]),
}


@pytest.mark.parametrize("kind", MODULES)
def test_each_module_folds_to_its_own_eval_output(kind: str) -> None:
    torch.manual_seed(0)
    module, args = MODULES[kind]()
    module = perturbed(module)
    with torch.no_grad():
        expected = module(*args)
        for part in list(module.modules()):  # a block's branches, gate and MLP fold themselves too
            if hasattr(part, "fuse"):
                part.fuse()
    norms = [m for m in module.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    assert norms == ([module.last_norm] if kind == "scale_fusion" else [])  # no linear map precedes last_norm
    with torch.inference_mode():
        torch.testing.assert_close(module(*args), expected, atol=1e-5, rtol=0)


def inputs(config: ModelConfig, batch: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 2, config.num_frames, config.num_joints, config.num_persons, generator=generator)
    return x, torch.rand(batch, config.num_frames, generator=generator) * 2 - 1


@pytest.mark.parametrize("overrides", VARIANTS, ids=variant_id)
@pytest.mark.parametrize("mode", ["inference_mode", "grad_enabled"])
def test_fused_matches_unfused_eval(overrides: dict, mode: str) -> None:
    # inference_mode takes the fused oneDNN kernels on a CPU; with autograd on, the same code runs plain PyTorch ops.
    model = trained_like(**overrides)
    x, index_t = inputs(model.config)
    with torch.no_grad():
        expected = model(x, index_t)
    context = torch.inference_mode() if mode == "inference_mode" else torch.enable_grad()
    with context:
        actual = fuse_for_inference(model)(x, index_t)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=0)


def test_fused_release_model_matches_the_reference(reference: dict) -> None:
    model = from_released(reference["state_dict"]).eval()
    with torch.inference_mode():
        unfused = model(reference["x"], reference["index_t"])
        fused = fuse_for_inference(model)(reference["x"], reference["index_t"])
    torch.testing.assert_close(fused, reference["logits_eval"], atol=1e-4, rtol=0)
    torch.testing.assert_close(fused, unfused, atol=1e-5, rtol=0)


def test_fused_copy_refuses_training_and_leaves_the_model_alone() -> None:
    model = trained_like().train()
    before = {name: t.clone() for name, t in model.state_dict().items()}
    fused = fuse_for_inference(model)
    assert isinstance(fused, InferenceMMN) and not fused.training
    with pytest.raises(RuntimeError, match="evaluation only.*fuse_for_inference again"):
        fused.train()
    fused.eval()  # eval mode stays allowed
    assert not any(p.requires_grad for p in fused.parameters())  # nothing for an optimizer to train
    fused.network.head.register_forward_hook(lambda *args: None)
    assert not model.head._forward_hooks  # a deep copy: no hook registry is shared either
    assert model.training
    assert all(torch.equal(t, before[name]) for name, t in model.state_dict().items())


def test_folding_again_picks_up_new_weights() -> None:
    model = trained_like()
    x, index_t = inputs(model.config)
    first = fuse_for_inference(model)
    with torch.inference_mode():
        before = first(x, index_t)
    with torch.no_grad():
        model.stages["0"][0].merge_norm.running_mean.add_(1.0)  # what a training step's BatchNorm update does
        expected = model(x, index_t)
    with torch.inference_mode():
        torch.testing.assert_close(first(x, index_t), before, rtol=0, atol=0)  # a fused copy is a snapshot
        torch.testing.assert_close(fuse_for_inference(model)(x, index_t), expected, atol=1e-5, rtol=0)
    assert not torch.allclose(before, expected, atol=1e-4)
