"""Trial packs (`mmn.pack.Pack`): K members stepped as one vmapped computation equal K solo trainings."""
from __future__ import annotations

import math

import pytest
import torch

from mmn.config import RunConfig, apply_overrides, with_budget
from mmn.model import MMN
from mmn.pack import Pack
from mmn.schedule import warmup_cosine
from mmn.train import _make_optimizer, _seed_everything

# One scale of one block 16 wide on 8 frames (tests/test_evaluate.py SMALL); random layers off, since under vmap
# they draw from the process's stream, not each member's (mmn/pack.py).
SMALL = {"model.embed_dim": 16, "model.depth": 1, "model.num_scales": 1, "model.num_frames": 8,
         "model.drop_path": 0.0, "model.fusion_dropout": 0.0, "model.head_dropout": 0.0}
BATCH = 4


def _config(seed: int, lr: float, smoothing: float, optimizer: str = "sgd") -> RunConfig:
    return apply_overrides(with_budget(RunConfig(), "quick"), {**SMALL, "train.seed": seed, "train.lr": lr,
                                                               "train.label_smoothing": smoothing,
                                                               "train.optimizer": optimizer})


def _member(config: RunConfig, dtype: torch.dtype, device: str, steps: int):
    """What mmn/train.py builds for a solo trial: model, optimizer, scheduler."""
    _seed_everything(config.train.seed)
    model = MMN(config.model).to(device=device, dtype=dtype)
    optimizer = _make_optimizer(model, config)
    train = config.train
    return model, optimizer, warmup_cosine(optimizer, steps, 2, train.warmup_lr, train.min_lr)


def _batches(config: RunConfig, steps: int, dtype: torch.dtype, device: str) -> list[tuple[torch.Tensor, ...]]:
    """Each member's own batches, drawn from its own seed."""
    m = config.model
    g = torch.Generator().manual_seed(1000 + config.train.seed)
    x = torch.randn(steps, BATCH, m.in_channels, m.num_frames, m.num_joints, m.num_persons, generator=g)
    index_t = torch.linspace(-1, 1, m.num_frames + 1)[:-1].expand(steps, BATCH, -1)
    labels = torch.randint(0, m.num_classes, (steps, BATCH), generator=g)
    return [(x[s].to(device, dtype), index_t[s].to(device, dtype), labels[s].to(device)) for s in range(steps)]


def check_pack_equals_solo(device: str, dtype: torch.dtype, steps: int, rtol: float, optimizer: str = "sgd") -> None:
    """A pack mixing seeds, learning rates and label smoothing equals its members trained alone: per-step losses
    and every parameter and buffer afterwards, to rtol."""
    configs = [_config(0, 1e-3, 0.0, optimizer), _config(1, 3e-3, 0.1, optimizer), _config(2, 5e-4, 0.2, optimizer)]
    data = [_batches(c, steps, dtype, device) for c in configs]

    solo_losses, solo_models = [], []
    for config, batches in zip(configs, data):
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
        solo_losses.append(losses)
        solo_models.append(model)

    members = [_member(c, dtype, device, steps) for c in configs]
    pack = Pack([m for m, _, _ in members], [o for _, o, _ in members], [s for _, _, s in members],
                [c.train.label_smoothing for c in configs])
    pack_losses: list[list[float]] = [[] for _ in configs]
    for s in range(steps):
        stacked = [torch.stack([data[k][s][i] for k in range(len(configs))]) for i in range(3)]
        for k, value in enumerate(pack.step(*stacked)):
            pack_losses[k].append(value)

    for k in range(len(configs)):
        assert pack_losses[k] == pytest.approx(solo_losses[k], rel=rtol)
        solo_state, pack_state = solo_models[k].state_dict(), pack.models[k].state_dict()
        # near-zero tensors (biases before a BatchNorm, whose gradient is rounding noise) are judged on the
        # scale of the whole model's parameters
        scale = max(value.abs().max().item() for value in solo_state.values() if value.is_floating_point())
        for name, value in solo_state.items():
            torch.testing.assert_close(pack_state[name], value, rtol=rtol, atol=rtol * scale, msg=name)


def test_pack_equals_solo_float64() -> None:
    check_pack_equals_solo("cpu", torch.float64, steps=20, rtol=1e-9)


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


def test_members_of_different_shapes_are_refused() -> None:
    small = _member(_config(0, 1e-3, 0.0), torch.float64, "cpu", 1)
    wide = _member(apply_overrides(_config(0, 1e-3, 0.0), {"model.embed_dim": 32}), torch.float64, "cpu", 1)
    with pytest.raises(ValueError, match="same tensor shapes"):
        Pack([small[0], wide[0]], [small[1], wide[1]], [small[2], wide[2]], [0.0, 0.0])
