"""Every ModelConfig switch does what its name says, on small models (10 joints, 16 frames, width 32)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from mmn.model import MMN, ModelConfig
from mmn.model.modulation import SkeletalModulation
from tests.helpers.model_variants import VARIANTS, variant_id

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(embed_dim=32, num_frames=16, num_joints=10, num_classes=5, depth=1)
N, T, V, CLASSES = 2, 16, 10, 5


def small(**overrides) -> ModelConfig:
    return ModelConfig(**{**SMALL, **overrides})


def build(seed: int = 0, **overrides) -> MMN:
    torch.manual_seed(seed)
    return MMN(small(**overrides)).eval()


def inputs(seed: int = 1, batch: int = N) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, 2, T, V, 1, generator=generator)
    return x, torch.rand(batch, T, generator=generator) * 2 - 1


def run(model: MMN, x: torch.Tensor, index_t: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x, index_t)


def blocks(model: MMN) -> list:
    return [block for stage in model.stages.values() for block in stage]


def names(model: MMN) -> tuple[set[str], set[str]]:
    return {n for n, _ in model.named_modules()}, {n for n, _ in model.named_parameters()}


# --- MSM -----------------------------------------------------------------------------------------------------

def test_msm_off_has_no_msm() -> None:
    model = build(msm="off")
    modules, params = names(model)
    assert not any("msm" in n for n in modules | params)
    assert not any(isinstance(m, SkeletalModulation) for m in model.modules())
    assert all(block.msm is None for block in blocks(model))


def test_msm_released_output_depends_on_its_adjacency() -> None:
    # The counterpart of msm=off having nothing to perturb: with MSM on, its adjacency reaches the logits.
    model = build(msm="released")
    x, index_t = inputs()
    before = run(model, x, index_t)
    with torch.no_grad():
        for block in blocks(model):
            block.msm.adjacency.add_(5 * torch.rand(V, V))
    # Released fusion: MSM reaches the logits only through the branch gate, so the change is small but real.
    assert not torch.allclose(before, run(model, x, index_t), rtol=0, atol=1e-6)


@pytest.mark.parametrize(("mode", "mixes_joints"), [("graph", True), ("released", False)])
def test_msm_joint_mixing(mode: str, mixes_joints: bool) -> None:
    torch.manual_seed(0)
    msm = SkeletalModulation(8, V, mode).eval()
    with torch.no_grad():
        msm.adjacency.copy_(torch.rand(V, V) + 0.1)  # every joint linked to every other
    motion = torch.randn(N, T, V, 8)
    changed = motion.clone()
    changed[:, :, 3] += 1.0
    before, after = msm.guidance(motion), msm.guidance(changed)
    others = [v for v in range(V) if v != 3]
    assert not torch.allclose(before[:, :, 3], after[:, :, 3])
    assert torch.allclose(before[:, :, others], after[:, :, others]) is not mixes_joints


@pytest.mark.parametrize("mode", ["graph", "released"])
def test_msm_guidance_formula(mode: str) -> None:
    # What reaches MSM's channel mixing: graph Σ_w adj[v, w]·M[w]; released M[w]·Σ_v adj[v, w] (SPEC step 6).
    torch.manual_seed(0)
    msm = SkeletalModulation(8, V, mode).eval()
    with torch.no_grad():
        msm.adjacency.copy_(torch.rand(V, V))
    seen = []
    msm.fc.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    motion = torch.randn(N, T, V, 8)
    msm(torch.randn(N, T, V, 4), motion)
    adj = msm.adjacency.detach()
    expected = (torch.einsum("vw,ntwc->ntvc", adj, motion) if mode == "graph"
                else motion * adj.sum(0)[:, None])
    torch.testing.assert_close(seen[0], expected)


def test_msm_identity_adjacency_graph_equals_released() -> None:
    released, graph = build(msm="released"), build(msm="graph")
    graph.load_state_dict(released.state_dict())  # adjacency starts as the identity: both modes agree
    x, index_t = inputs()
    torch.testing.assert_close(run(released, x, index_t), run(graph, x, index_t))
    assert all(block.msm.mode == "graph" for block in blocks(graph))


# --- MTM and modulated fusion --------------------------------------------------------------------------------

def test_mtm_off_has_no_mtm() -> None:
    model = build(mtm=False)
    modules, params = names(model)
    assert not any("mtm" in n for n in modules | params)
    assert all(block.mtm is None for block in blocks(model))


def test_mtm_on_output_depends_on_its_weights() -> None:
    model = build(mtm=True)
    x, index_t = inputs()
    before = run(model, x, index_t)
    with torch.no_grad():
        for block in blocks(model):
            block.mtm.conv.weight.add_(torch.randn_like(block.mtm.conv.weight))
    assert not torch.allclose(before, run(model, x, index_t), rtol=0, atol=1e-6)


def test_modulated_fusion_changes_output_from_identical_weights() -> None:
    released, modulated = build(), build(seed=1, modulated_fusion=True)
    modulated.load_state_dict(released.state_dict())  # strict: the switch adds or removes no weights
    x, index_t = inputs()
    assert not torch.allclose(run(released, x, index_t), run(modulated, x, index_t), atol=1e-5)


def test_modulated_fusion_is_a_no_op_without_modulation() -> None:
    released, modulated = build(msm="off", mtm=False), build(seed=1, msm="off", mtm=False, modulated_fusion=True)
    modulated.load_state_dict(released.state_dict())
    x, index_t = inputs()
    torch.testing.assert_close(run(released, x, index_t), run(modulated, x, index_t), rtol=0, atol=0)


# --- branches ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("overrides", "gate_outputs", "merged", "present", "absent"), [
    ({}, 3, 32, {"joint_mixing", "temporal_conv", "motion"}, set()),
    ({"skeleton_branch": False, "msm": "off"}, 2, 24, {"temporal_conv", "motion"}, {"joint_mixing", "msm"}),
    ({"temporal_branch": False, "mtm": False}, 2, 24, {"joint_mixing", "motion"}, {"temporal_conv", "mtm"}),
    # Motion still guides MSM and MTM when it is not fused.
    ({"motion_branch": False}, 2, 16, {"joint_mixing", "temporal_conv", "motion", "msm", "mtm"}, set()),
    ({"motion_branch": False, "msm": "off", "mtm": False}, 2, 16, {"joint_mixing", "temporal_conv"}, {"motion"}),
    ({"temporal_branch": False, "motion_branch": False, "mtm": False}, 1, 8, {"joint_mixing", "msm", "motion"},
     {"temporal_conv"}),
])
def test_branch_switches(overrides: dict, gate_outputs: int, merged: int, present: set, absent: set) -> None:
    model = build(**overrides)
    _, params = names(model)
    for block in blocks(model):
        assert block.gate.expand.out_features == gate_outputs
        assert block.merge.in_features == merged
        for name in present:
            assert getattr(block, name, None) is not None, name
        for name in absent:
            assert getattr(block, name, None) is None, name
    for name in absent:
        assert not any(f".{name}" in p for p in params), name
    x, index_t = inputs()
    assert run(model, x, index_t).shape == (N, CLASSES)


# --- positional encoding -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("pos_enc", "uses_index_t", "table_shape"), [
    ("none", False, None),
    ("learned", False, (T, V, 32)),
    ("sinusoidal", True, None),
    ("stpe", True, (32, V)),
])
def test_positional_encoding(pos_enc: str, uses_index_t: bool, table_shape: tuple | None) -> None:
    model = build(pos_enc=pos_enc)
    tables = [p.shape for p in model.pos_enc.parameters()]
    assert tables == ([] if table_shape is None else [torch.Size(table_shape)])
    x, index_t = inputs()
    shifted = torch.flip(index_t, dims=[1])
    same = torch.allclose(run(model, x, index_t), run(model, x, shifted), rtol=0, atol=1e-6)
    assert same is not uses_index_t


def test_positional_encodings_differ_from_none() -> None:
    x, index_t = inputs()
    reference = build(pos_enc="none")
    for pos_enc in ("learned", "sinusoidal", "stpe"):
        model = build(pos_enc=pos_enc)
        model.load_state_dict(reference.state_dict(), strict=False)  # all but the table
        assert not torch.allclose(run(reference, x, index_t), run(model, x, index_t), rtol=0, atol=1e-6), pos_enc


# --- pyramid and fusion --------------------------------------------------------------------------------------

@pytest.mark.parametrize("fusion", ["gated", "mean", "last"])
@pytest.mark.parametrize("num_scales", [1, 2, 3, 4])
def test_scales_and_fusion(num_scales: int, fusion: str) -> None:
    model = build(num_scales=num_scales, fusion=fusion)
    x, index_t = inputs()
    assert run(model, x, index_t).shape == (N, CLASSES)
    assert len(model.downsamplers) == num_scales - 1  # the pyramid is needed to reach the coarsest scale
    if fusion == "last":
        assert len(model.fusion.downsample) == 0
        assert list(model.stages) == [str(num_scales - 1)]
    else:
        assert list(model.stages) == [str(s) for s in range(num_scales)]
        # Scale i is brought to the coarsest frame rate by a conv of kernel and stride 2^(S-1-i).
        kernels = [d["conv"].kernel_size[0] for d in model.fusion.downsample]
        assert kernels == [2 ** (num_scales - 1 - i) for i in range(num_scales - 1)]
    if fusion == "gated":
        assert model.fusion.gate[-1].out_features == num_scales
    else:
        assert not hasattr(model.fusion, "gate")


def test_drop_path_rises_linearly_scale_major() -> None:
    model = build(drop_path=0.2, depth=2, num_scales=3)
    rates = [block.drop_path.rate for block in blocks(model)]
    assert rates == pytest.approx(torch.linspace(0, 0.2, 6).tolist())
    assert [block.drop_path.rate for block in model.stages["0"]] == pytest.approx([0.0, 0.04])


def test_drop_path_with_last_fusion_keeps_the_coarsest_scales_rates() -> None:
    model = build(drop_path=0.2, depth=2, num_scales=3, fusion="last")
    assert [block.drop_path.rate for block in blocks(model)] == pytest.approx([0.16, 0.2])


def test_drop_path_only_while_training() -> None:
    model = build(drop_path=0.5, fusion_dropout=0.0, head_dropout=0.0)
    x, index_t = inputs(batch=4)
    torch.testing.assert_close(run(model, x, index_t), run(model, x, index_t), rtol=0, atol=0)
    model.train()  # the only randomness left in training is stochastic depth
    torch.manual_seed(0)
    first = run(model, x, index_t)
    torch.manual_seed(1)
    assert not torch.allclose(first, run(model, x, index_t))


# --- sizes ---------------------------------------------------------------------------------------------------

def expected_params(c: int, v: int, classes: int, depth: int, scales: int = 4, kernel: int = 3, groups: int = 4,
                    mlp_ratio: float = 2.0) -> int:
    """Parameters of the default architecture, written out term by term from docs/spec-mmn.md."""
    q, hidden = c // 4, int(c * mlp_ratio)
    embedding = (2 * 4 + 4) + (4 * 6 + 6) + (6 * c + c) + c * v  # projection 2→4→6→C, STPE table
    pyramid = (scales - 1) * (3 * c * c + c + 2 * c)  # conv (3, 1) with bias, BatchNorm
    block = (2 * c + c * c + c  # norm_1, mapping
             + groups * v * v  # gconv
             + q * (q // groups) * kernel + q  # tconv
             + 2 * q * 3 + 2 * 2 * q  # motion: depthwise conv, BatchNorm
             + v * v + (2 * q) ** 2 + 2 * q + 2 * 2 * q  # MSM: adjacency, fc, BatchNorm
             + (2 * q) ** 2 * 3 + 2 * q + 2 * 2 * q  # MTM: conv, BatchNorm
             + c * (c // 4) + 2 * (c // 4) + (c // 4) * 3  # aggregation gate
             + c * c + 2 * c  # aggregation conv (no bias), BatchNorm
             + c * c + c + 2 * c  # proj, norm_2
             + c * hidden + hidden + hidden * c + c)  # MLP
    fusion = (sum(c * c * 2 ** (scales - 1 - i) + c + 2 * c for i in range(scales - 1)) + 2 * c
              + scales * c * c + c + 2 * c + c * scales + scales  # gate_conv
              + c * c + c)  # res_conv
    return embedding + pyramid + scales * depth * block + fusion + c * classes + classes


def test_parameter_formula_matches_the_release() -> None:
    assert expected_params(96, 44, 52, depth=3) == 1_325_186
    assert expected_params(96, 22, 32, depth=3) == 1_234_014


@pytest.mark.parametrize("embed_dim", [16, 32, 64, 128])
def test_width_changes_parameters_as_expected(embed_dim: int) -> None:
    count = sum(p.numel() for p in MMN(small(embed_dim=embed_dim)).parameters())
    assert count == expected_params(embed_dim, V, CLASSES, depth=1)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_depth_is_blocks_per_stage(depth: int) -> None:
    model = MMN(small(depth=depth, num_scales=3))
    assert [len(stage) for stage in model.stages.values()] == [depth] * 3
    assert sum(p.numel() for p in model.parameters()) == expected_params(32, V, CLASSES, depth=depth, scales=3)


@pytest.mark.parametrize(("groups", "kernel"), [(1, 1), (2, 5), (8, 3), (4, 7)])
def test_groups_and_temporal_kernel_shapes(groups: int, kernel: int) -> None:
    model = build(groups=groups, temporal_kernel=kernel)
    quarter = 32 // 4
    for block in blocks(model):
        assert block.joint_mixing.shape == (groups, V, V)
        assert block.temporal_conv.weight.shape == (quarter, quarter // groups, kernel, 1)
        assert block.temporal_conv.groups == groups
    x, index_t = inputs()
    out = run(model, x, index_t)
    assert out.shape == (N, CLASSES)


def test_mlp_ratio_sets_the_hidden_width() -> None:
    model = build(mlp_ratio=3.0)
    assert all(block.mlp.fc1.out_features == 96 for block in blocks(model))


def test_dropout_rates_reach_their_modules() -> None:
    model = build(fusion_dropout=0.25, head_dropout=0.4)
    assert (model.fusion.dropout.p, model.head_dropout.p) == (0.25, 0.4)


# --- every variant trains ------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides", VARIANTS, ids=variant_id)
def test_backward_gives_finite_gradients(overrides: dict) -> None:
    model = build(**overrides).train()
    x, index_t = inputs(batch=4)
    labels = torch.tensor([0, 1, 2, 3])
    torch.nn.functional.cross_entropy(model(x, index_t), labels, label_smoothing=0.1).backward()
    for name, param in model.named_parameters():
        assert param.grad is not None, f"{name} gets no gradient (unused in this variant?)"
        assert torch.isfinite(param.grad).all(), name


def test_variants_cover_every_switch() -> None:
    switched = {key for overrides in VARIANTS for key in overrides}
    switches = {"msm", "mtm", "modulated_fusion", "skeleton_branch", "temporal_branch", "motion_branch", "pos_enc",
                "num_scales", "fusion", "depth", "groups", "temporal_kernel", "mlp_ratio"}
    assert switches <= switched
    assert switches <= {f.name for f in dataclasses.fields(ModelConfig)}
