"""Trial packs (`mmn.pack.Pack`): K members trained as one fused model (a member dimension in MMN's layers) equal K
solo trainings, dropout and drop-path included (each member draws from its own stream); the fused forward equals the
members' own for every model variant."""
from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Sequence

import pytest
import torch

from mmn.config import RunConfig, apply_overrides, with_budget
from mmn.model import MMN, ModelConfig, fuse_for_inference, kernels
from mmn.model.layers import DropPath, Dropout
from mmn.pack import Pack
from mmn.schedule import warmup_cosine
from mmn.train import _make_optimizer, _seed_everything
from tests.helpers.model_variants import VARIANTS, variant_id

pytestmark = pytest.mark.usefixtures("one_thread")

# One scale of one block 16 wide on 8 frames (tests/test_evaluate.py SMALL); random layers off but where a test
# turns them on (MEMBER_RATES).
SMALL = {"model.embed_dim": 16, "model.depth": 1, "model.num_scales": 1, "model.num_frames": 8,
         "model.drop_path": 0.0, "model.fusion_dropout": 0.0, "model.head_dropout": 0.0}
RATES = {"model.drop_path": 0.5, "model.fusion_dropout": 0.5, "model.head_dropout": 0.5}
# Three members' random layers: all off, all at 0.5, each at its own rate; two blocks, since the first block's
# drop-path rate is always 0 (a linear rise from 0).
MEMBER_RATES = [{"model.depth": 2}, {**RATES, "model.depth": 2},
                {"model.drop_path": 0.2, "model.fusion_dropout": 0.3, "model.head_dropout": 0.1, "model.depth": 2}]
BATCH = 4


def _config(seed: int, lr: float, smoothing: float, optimizer: str = "sgd", **overrides) -> RunConfig:
    return apply_overrides(with_budget(RunConfig(), "quick"), {**SMALL, "train.seed": seed, "train.lr": lr,
                                                               "train.label_smoothing": smoothing,
                                                               "train.optimizer": optimizer, **overrides})


def _member(config: RunConfig, dtype: torch.dtype, device: str, steps: int):
    """What mmn/train.py builds for a solo trial: model, optimizer, scheduler."""
    _seed_everything(config.train.seed)
    model = MMN(config.model).to(device=device, dtype=dtype)
    optimizer = _make_optimizer(model, config)
    train = config.train
    return model, optimizer, warmup_cosine(optimizer, steps, 2, train.warmup_lr, train.min_lr)


def _stream_now(device: str) -> torch.Generator:
    """A generator where the process's stream on `device` stands now: right after a member's `_member`, where its
    solo run's random layers start drawing (as mmn.train._Trial.build makes a member's own stream)."""
    generator = torch.Generator(device)
    generator.set_state(torch.cuda.get_rng_state(device) if torch.device(device).type == "cuda"
                        else torch.get_rng_state())
    return generator


def _batches(config: RunConfig, steps: int, dtype: torch.dtype, device: str) -> list[tuple[torch.Tensor, ...]]:
    """Each member's own batches, drawn from its own seed."""
    m = config.model
    g = torch.Generator().manual_seed(1000 + config.train.seed)
    x = torch.randn(steps, BATCH, m.in_channels, m.num_frames, m.num_joints, m.num_persons, generator=g)
    index_t = torch.linspace(-1, 1, m.num_frames + 1)[:-1].expand(steps, BATCH, -1)
    labels = torch.randint(0, m.num_classes, (steps, BATCH), generator=g)
    return [(x[s].to(device, dtype), index_t[s].to(device, dtype), labels[s].to(device)) for s in range(steps)]


def _solo_run(config: RunConfig, batches: list, dtype: torch.dtype, device: str, steps: int) -> tuple[list, MMN]:
    """mmn/train.py's solo steps over `batches`: the per-step losses and the trained model."""
    model, optimizer, scheduler = _member(config, dtype, device, steps)
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.train.label_smoothing)
    losses = []
    model.train()
    for x, index_t, labels in batches:
        loss = loss_fn(model(x, index_t), labels)
        losses.append(loss.item())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
    return losses, model


def _pack(configs: list[RunConfig], dtype: torch.dtype, device: str, steps: int) -> Pack:
    """A pack of `configs` built as mmn.train builds one: each member with its own stream for its random layers."""
    members, generators = [], []
    for config in configs:
        members.append(_member(config, dtype, device, steps))
        generators.append(_stream_now(device))
    return Pack([m for m, _, _ in members], [o for _, o, _ in members], [s for _, _, s in members],
                [c.train.label_smoothing for c in configs], generators)


def _stacked(data: list[list[tuple[torch.Tensor, ...]]], step: int) -> list[torch.Tensor]:
    """Step `step` of each member's batches, stacked along a leading member dim."""
    return [torch.stack([batches[step][i] for batches in data]) for i in range(3)]


def _assert_same_state(got: MMN, expected: MMN, rtol: float) -> None:
    """Every parameter and buffer of `got` equals `expected`'s, to rtol."""
    solo_state, pack_state = expected.state_dict(), got.state_dict()
    # near-zero tensors (biases before a BatchNorm, whose gradient is rounding noise) are judged on the scale of the
    # whole model's parameters
    scale = max(value.abs().max().item() for value in solo_state.values() if value.is_floating_point())
    for name, value in solo_state.items():
        torch.testing.assert_close(pack_state[name], value, rtol=rtol, atol=rtol * scale, msg=name)


def check_pack_equals_solo(device: str, dtype: torch.dtype, steps: int, rtol: float, optimizer: str = "sgd",
                           rates: Sequence[dict] = ({}, {}, {})) -> None:
    """A pack mixing seeds, learning rates, label smoothing and the members' `rates` (MEMBER_RATES) equals its
    members trained alone: per-step losses and every parameter and buffer afterwards, to rtol."""
    configs = [_config(0, 1e-3, 0.0, optimizer, **rates[0]), _config(1, 3e-3, 0.1, optimizer, **rates[1]),
               _config(2, 5e-4, 0.2, optimizer, **rates[2])]
    data = [_batches(c, steps, dtype, device) for c in configs]
    solo = [_solo_run(c, batches, dtype, device, steps) for c, batches in zip(configs, data)]

    pack = _pack(configs, dtype, device, steps)
    pack_losses: list[list[float]] = [[] for _ in configs]
    for s in range(steps):
        for k, value in enumerate(pack.step(*_stacked(data, s))):
            pack_losses[k].append(value)

    for k, (solo_losses, solo_model) in enumerate(solo):
        assert pack_losses[k] == pytest.approx(solo_losses, rel=rtol)
        _assert_same_state(pack.models[k], solo_model, rtol)


def test_pack_equals_solo_float64() -> None:
    check_pack_equals_solo("cpu", torch.float64, steps=20, rtol=1e-9)


@pytest.mark.parametrize("implementation", ["bmm_out", "bmm_mm"])
def test_pack_with_its_own_product_backward_equals_solo_float64(implementation: str, monkeypatch) -> None:
    """The candidates for the pack's GPU step (kernels._MemberProducts, with a backward of their own) train as bmm's
    autograd does."""
    monkeypatch.setattr(kernels, "GROUPED_LINEAR", implementation)
    check_pack_equals_solo("cpu", torch.float64, steps=10, rtol=1e-9)


def test_pack_with_dropout_and_drop_path_equals_solo_float64() -> None:
    """Each member draws its own masks, exactly its solo run's, whatever the others' rates: one member with every
    rate 0, one at 0.5, one at its own rates."""
    check_pack_equals_solo("cpu", torch.float64, steps=12, rtol=1e-9, rates=MEMBER_RATES)


def test_pack_equals_solo_float32() -> None:
    check_pack_equals_solo("cpu", torch.float32, steps=5, rtol=1e-4)


def test_pack_equals_solo_adamw_losses() -> None:
    """AdamW normalises the rounding noise in analytically zero gradients (biases before a BatchNorm) into
    lr-sized steps, so only losses, not those biases, can match to 1e-9 under it: checked to 1e-6 here."""
    check_pack_equals_solo("cpu", torch.float64, steps=5, rtol=1e-6, optimizer="adamw")


def test_diverged_member_is_dropped_others_continue() -> None:
    configs = [_config(0, 1e-3, 0.0), _config(1, 1e-3, 0.0)]
    members = [_member(c, torch.float64, "cpu", 3) for c in configs]
    pack = Pack([m for m, _, _ in members], [o for _, o, _ in members], [s for _, _, s in members], [0.0, 0.0])
    data = [_batches(c, 2, torch.float64, "cpu") for c in configs]
    x, index_t, labels = (torch.stack([data[k][0][i] for k in range(2)]) for i in range(3))
    x[1, 0, 0, 0, 0, 0] = float("nan")
    before = {n: p.clone() for n, p in pack.models[0].named_parameters()}
    losses = pack.step(x, index_t, labels)
    assert math.isfinite(losses[0]) and math.isnan(losses[1])
    assert any(not torch.equal(before[n], p) for n, p in pack.models[0].named_parameters())
    pack.drop(1)
    assert len(pack) == 1
    x, index_t, labels = (torch.stack([data[0][1][i]]) for i in range(3))
    assert math.isfinite(pack.step(x, index_t, labels)[0])


def test_one_generator_per_member_is_required() -> None:
    configs = [_config(0, 1e-3, 0.0), _config(1, 1e-3, 0.0)]
    members = [_member(c, torch.float64, "cpu", 1) for c in configs]
    with pytest.raises(ValueError, match="a pack of 2 models got 1 generators: give one per model"):
        Pack([m for m, _, _ in members], [o for _, o, _ in members], [s for _, _, s in members], [0.0, 0.0],
             [torch.Generator()])
    with pytest.raises(ValueError, match="use_generators got 3 generators for 1 members: give one per member"):
        members[0][0].use_generators([torch.Generator()] * 3)


def test_members_of_different_shapes_are_refused() -> None:
    small = _member(_config(0, 1e-3, 0.0), torch.float64, "cpu", 1)
    wide = _member(apply_overrides(_config(0, 1e-3, 0.0), {"model.embed_dim": 32}), torch.float64, "cpu", 1)
    with pytest.raises(ValueError, match="same tensor shapes"):
        Pack([small[0], wide[0]], [small[1], wide[1]], [small[2], wide[2]], [0.0, 0.0])


# --- the fused model ------------------------------------------------------------------------------------------

TINY = dict(embed_dim=16, num_frames=16, num_joints=6, num_classes=5, depth=1, drop_path=0.0, fusion_dropout=0.0,
            head_dropout=0.0)


def _fused_from(models: list[MMN]) -> MMN:
    """A fused model holding `models`' tensors, stacked along dim 0 (the layout mmn.pack builds)."""
    fused = MMN([m.config for m in models]).to(torch.float64)
    states = [m.state_dict() for m in models]
    fused.load_state_dict({name: torch.stack([s[name] for s in states]).flatten(0, 1) if value.ndim else value
                           for name, value in states[0].items()})
    return fused


def _check_fused_equals_solos(overrides: dict, members: int = 3) -> None:
    """Float64: the fused forward equals each member's own, in train and eval mode, and so do the gradients."""
    config = ModelConfig(**{**TINY, **overrides})
    models = []
    for seed in range(members):
        torch.manual_seed(seed)
        models.append(MMN(config).double())
    fused = _fused_from(models)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(members, 2, 2, 16, 6, config.num_persons, generator=g, dtype=torch.float64)
    index_t = torch.rand(members, 2, 16, generator=g, dtype=torch.float64) * 2 - 1
    for training in (True, False):
        fused.train(training)
        out = fused(x, index_t)
        assert out.shape == (members, 2, 5)
        for k, model in enumerate(models):
            model.train(training)
            expected = model(x[k], index_t[k])
            torch.testing.assert_close(out[k], expected, rtol=1e-10, atol=1e-12)
            if training:
                expected.square().sum().backward()
        if training:
            out.square().sum().backward()
            solo_grads = [dict(m.named_parameters()) for m in models]
            for name, p in fused.named_parameters():
                per_member = p.grad.view(members, *solo_grads[0][name].shape)
                for k in range(members):
                    torch.testing.assert_close(per_member[k], solo_grads[k][name].grad, rtol=1e-9, atol=1e-12,
                                               msg=name)


@pytest.mark.parametrize("overrides", VARIANTS + [{"num_persons": 2}],
                         ids=[variant_id(v) for v in VARIANTS] + ["num_persons=2"])
def test_fused_forward_equals_the_members_for_every_variant(overrides: dict) -> None:
    _check_fused_equals_solos(overrides)


@pytest.mark.parametrize("implementation", sorted(kernels.GROUPED_LINEARS))
def test_every_grouped_linear_gives_each_members_product(implementation: str, monkeypatch) -> None:
    monkeypatch.setattr(kernels, "GROUPED_LINEAR", implementation)
    g = torch.Generator().manual_seed(0)
    # a channels-last activation sliced on its channels, as the block feeds its branches: not contiguous
    x = torch.randn(2, 3, 5, 40, generator=g, dtype=torch.float64)[..., 4:28].requires_grad_()
    weight = torch.randn(3 * 6, 8, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3 * 6, generator=g, dtype=torch.float64, requires_grad=True)
    out = kernels.grouped_linear(x, weight, bias, 3)
    expected = torch.cat([torch.nn.functional.linear(x[..., 8 * k:8 * (k + 1)], weight[6 * k:6 * (k + 1)],
                                                     bias[6 * k:6 * (k + 1)]) for k in range(3)], dim=-1)
    torch.testing.assert_close(out, expected)
    grads = torch.autograd.grad(out, (x, weight, bias), torch.ones_like(out))
    expected_grads = torch.autograd.grad(expected, (x, weight, bias), torch.ones_like(out))
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(kernels.grouped_linear(x, weight, None, 3), expected - bias.view(1, 1, 1, -1)
                               .unflatten(-1, (3, 6)).flatten(-2))
    _check_fused_equals_solos({}, members=2)


def test_member_products_under_autocast_equal_the_batched_products(monkeypatch) -> None:
    """bmm_out's and bmm_mm's own backward under bf16 autocast (a pack with train.amp): the output and gradients
    bmm's autograd gives, each gradient in its input's dtype."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 40, generator=g)[..., 4:28].requires_grad_()
    weight, bias = torch.randn(18, 8, generator=g, requires_grad=True), torch.randn(18, generator=g, requires_grad=True)
    outs, grads = {}, {}
    for implementation in ("bmm", "bmm_out", "bmm_mm"):
        monkeypatch.setattr(kernels, "GROUPED_LINEAR", implementation)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            outs[implementation] = kernels.grouped_linear(x, weight, bias, 3)
        grads[implementation] = torch.autograd.grad(outs[implementation].float().square().sum(), (x, weight, bias))
    for implementation in ("bmm_out", "bmm_mm"):
        assert outs[implementation].dtype == torch.bfloat16
        torch.testing.assert_close(outs[implementation], outs["bmm"])
        for got, want in zip(grads[implementation], grads["bmm"]):
            assert got.dtype == want.dtype == torch.float32
            torch.testing.assert_close(got, want)


def test_unknown_grouped_linear_is_named(monkeypatch) -> None:
    monkeypatch.setattr(kernels, "GROUPED_LINEAR", "fastest")
    with pytest.raises(ValueError, match="GROUPED_LINEAR='fastest' is not one of bmm"):
        kernels.grouped_linear(torch.ones(2, 4), torch.ones(4, 2), None, 2)


def test_one_member_is_the_solo_model() -> None:
    config = ModelConfig(**TINY)
    solo, fused = MMN(config).state_dict(), MMN([config, config, config]).state_dict()
    assert MMN(config, members=1).state_dict().keys() == solo.keys() == fused.keys()
    for name, value in solo.items():
        assert fused[name].shape == ((3 * value.shape[0], *value.shape[1:]) if value.ndim else ()), name


@pytest.mark.parametrize(("field", "value"), [("msm", "graph"), ("embed_dim", 32), ("modulated_fusion", True)])
def test_members_must_agree_on_all_but_their_rates(field: str, value) -> None:
    config = ModelConfig(**TINY)
    MMN([config, dataclasses.replace(config, drop_path=0.2, fusion_dropout=0.1, head_dropout=0.3)])
    with pytest.raises(ValueError, match=f"pack members differ in model.{field} "):
        MMN([config, dataclasses.replace(config, **{field: value})])
    with pytest.raises(ValueError, match="MMN got 2 configs for members=3"):
        MMN([config, config], members=3)


def test_fused_model_is_not_folded_for_inference() -> None:
    with pytest.raises(ValueError, match="cannot fold a fused model of 2 members"):
        fuse_for_inference(MMN(ModelConfig(**TINY), members=2))


def test_random_layers_use_each_members_rate() -> None:
    """Members at rate 0 and 0.5 side by side: the first's channels pass untouched, the second's are dropped about
    half the time (DropPath per sample, dropout per element) and scaled by 2 where kept."""
    torch.manual_seed(0)
    x = torch.ones(4000, 3, 2 * 8, dtype=torch.float64)
    for layer in (DropPath([0.0, 0.5]), Dropout([0.0, 0.5])):
        layer.train()
        out = layer(x)
        assert torch.equal(out[..., :8], x[..., :8])
        second = out[..., 8:]
        assert set(second.unique().tolist()) == {0.0, 2.0}
        assert 0.45 < (second == 0).double().mean().item() < 0.55
        if isinstance(layer, DropPath):  # one draw per sample and member, over all of its positions and channels
            assert torch.all(second == second[:, :1, :1])
        layer.eval()
        assert torch.equal(layer(x), x)


def test_member_without_random_layers_equals_its_solo_run_beside_one_with_them() -> None:
    steps = 3
    configs = [_config(0, 1e-3, 0.0), _config(1, 1e-3, 0.0, **RATES)]
    data = [_batches(c, steps, torch.float64, "cpu") for c in configs]
    solo_losses, solo_model = _solo_run(configs[0], data[0], torch.float64, "cpu", steps)
    pack = _pack(configs, torch.float64, "cpu", steps)
    block = pack.fused.stages["0"][0]
    assert (block.drop_path.rates, pack.fused.fusion.dropout.rates, pack.fused.head_dropout.rates) == (
        (0.0, 0.0), (0.0, 0.5), (0.0, 0.5))  # one block: its drop-path rate is the lowest of the linear rise
    losses = [pack.step(*_stacked(data, s)) for s in range(steps)]
    assert [step[0] for step in losses] == pytest.approx(solo_losses, rel=1e-9)
    _assert_same_state(pack.models[0], solo_model, 1e-9)


def test_drop_continues_exactly() -> None:
    """Three members for 2 steps, then the middle one dropped: the other two go on as their solo runs do, each
    drawing from its own stream."""
    steps = 4
    configs = [_config(0, 1e-3, 0.0, **MEMBER_RATES[0]), _config(1, 3e-3, 0.1, **MEMBER_RATES[1]),
               _config(2, 5e-4, 0.2, **MEMBER_RATES[2])]
    data = [_batches(c, steps, torch.float64, "cpu") for c in configs]
    pack = _pack(configs, torch.float64, "cpu", steps)
    losses = [pack.step(*_stacked(data, s)) for s in range(2)]
    dropped = pack.models[1]
    pack.drop(1)
    assert len(pack) == 2 and pack.fused.members == 2
    before = {n: p.clone() for n, p in dropped.named_parameters()}
    losses += [[first, None, last] for first, last in (pack.step(*_stacked([data[0], data[2]], s))
                                                      for s in range(2, steps))]
    assert all(torch.equal(p, before[n]) for n, p in dropped.named_parameters())  # no longer in the pack's storage
    for k, member in ((0, pack.models[0]), (2, pack.models[1])):
        solo_losses, solo_model = _solo_run(configs[k], data[k], torch.float64, "cpu", steps)
        assert [step[k] for step in losses] == pytest.approx(solo_losses, rel=1e-9)
        _assert_same_state(member, solo_model, 1e-9)


def test_member_state_dict_after_packed_training_loads_into_a_solo_mmn() -> None:
    configs = [_config(0, 1e-3, 0.0), _config(1, 3e-3, 0.1)]
    data = [_batches(c, 2, torch.float64, "cpu") for c in configs]
    pack = _pack(configs, torch.float64, "cpu", 2)
    for s in range(2):
        pack.step(*_stacked(data, s))
    x, index_t, _ = _stacked(data, 0)
    logits = pack.eval_logits(x, index_t)
    assert logits.shape == (2, BATCH, configs[0].model.num_classes) and not logits.requires_grad
    for k, member in enumerate(pack.models):
        buffer = io.BytesIO()
        torch.save({name: value.clone() for name, value in member.state_dict().items()}, buffer)
        solo = MMN(configs[k].model).double()
        solo.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
        assert solo.stages["0"][0].merge_norm.num_batches_tracked.item() == 2
        with torch.no_grad():
            torch.testing.assert_close(solo.eval()(x[k], index_t[k]), logits[k], rtol=1e-12, atol=1e-12)


def test_pack_of_one_runs_the_solo_model() -> None:
    config = _config(0, 1e-3, 0.0)
    data = [_batches(config, 2, torch.float64, "cpu")]
    solo_losses, solo_model = _solo_run(config, data[0], torch.float64, "cpu", 2)
    pack = _pack([config], torch.float64, "cpu", 2)
    assert pack.fused.members == 1
    assert [pack.step(*_stacked(data, s))[0] for s in range(2)] == pytest.approx(solo_losses, rel=1e-12)
    _assert_same_state(pack.models[0], solo_model, 1e-12)


def test_loading_into_a_member_reaches_the_pack() -> None:
    """A member's tensors are views of the pack's: loading a checkpoint into it (a resume) changes what the pack
    computes for that member, and only for it."""
    configs = [_config(0, 1e-3, 0.0), _config(1, 1e-3, 0.0)]
    pack = _pack(configs, torch.float64, "cpu", 1)
    x, index_t, _ = _stacked([_batches(c, 1, torch.float64, "cpu") for c in configs], 0)
    before = pack.eval_logits(x, index_t)
    torch.manual_seed(5)
    other = MMN(configs[1].model).double()
    pack.models[1].load_state_dict(other.state_dict())
    after = pack.eval_logits(x, index_t)
    torch.testing.assert_close(after[0], before[0], rtol=0, atol=0)
    with torch.no_grad():
        torch.testing.assert_close(after[1], other.eval()(x[1], index_t[1]), rtol=1e-12, atol=1e-12)


def test_fused_forward_under_autocast_matches_the_members() -> None:
    """Under bf16 autocast (`train.amp`) the modulation runs as composed ops, per member: still each member's own
    logits, to bf16's precision."""
    config = ModelConfig(**TINY)
    models = []
    for seed in range(2):
        torch.manual_seed(seed)
        models.append(MMN(config))
    fused = _fused_from(models).float()
    g = torch.Generator().manual_seed(3)
    x, index_t = torch.randn(2, 3, 2, 16, 6, 1, generator=g), torch.rand(2, 3, 16, generator=g) * 2 - 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fused(x, index_t)
        for k, model in enumerate(models):
            # bf16 rounding leaves about 0.004 here; a member given another's [γ, β] is off by 0.02
            torch.testing.assert_close(out[k].float(), model(x[k], index_t[k]).float(), rtol=0, atol=0.01)


def test_members_within_a_budget_count_the_packs_own_memory_once() -> None:
    from mmn.pack import members_within

    # a pack of 1 peaks at 10 units, of 2 at 16: each member takes 6, the pack 4 besides
    assert members_within([10, 16], 40) == 6  # (40 - 4) // 6
    assert members_within([10, 16], 0.5 * 40) == 2  # half a GPU's budget: (20 - 4) // 6
    assert members_within([10, 16], 3) == 1  # never fewer than one
