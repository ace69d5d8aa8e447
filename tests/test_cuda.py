"""The CUDA paths: fp32 reproduces the release on the GPU, bf16 autocast stays close, a training run uses them.

These run wherever a CUDA device is present (they were run on an H200) and are skipped on CPU-only machines such as
CI's, whose tests cover the same code on the CPU.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmn.config import BUDGETS, RunConfig, apply_overrides
from mmn.folders import RESULT
from mmn.model import from_released
from mmn.train import fit

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture
def strict_fp32():
    """TF32 convolutions and matmuls round to 10-bit mantissas: off, so fp32 means fp32."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_fp32_on_cuda_matches_release(reference: dict, strict_fp32, mode: str) -> None:
    model = from_released(reference["state_dict"], drop_path=0.0, fusion_dropout=0.0, head_dropout=0.0).cuda()
    model.train(mode == "train")
    with torch.no_grad():
        logits = model(reference["x"].cuda(), reference["index_t"].cuda()).cpu()
    torch.testing.assert_close(logits, reference[f"logits_{mode}"], atol=1e-4, rtol=0)


def test_bf16_autocast_stays_close_to_fp32(reference: dict, strict_fp32) -> None:
    model = from_released(reference["state_dict"]).cuda().eval()
    x, index_t = reference["x"].cuda(), reference["index_t"].cuda()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(x, index_t).float().cpu()
    expected = reference["logits_eval"]
    # bf16 keeps 8 mantissa bits: logits move by a few hundredths of their spread, never past the argmax margin.
    spread = (expected.max() - expected.min()).item()
    assert (logits - expected).abs().max().item() < 0.05 * spread
    assert torch.equal(logits.argmax(1), expected.argmax(1))


def test_amp_training_step_keeps_fp32_weights_and_learns() -> None:
    torch.manual_seed(0)
    config = apply_overrides(RunConfig(), BUDGETS["quick"]).model
    from mmn.model import MMN

    model = MMN(config).cuda().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    x = torch.randn(16, 2, config.num_frames, 44, 1, device="cuda")
    index_t = torch.linspace(-1, 1, config.num_frames, device="cuda").expand(16, -1)
    labels = torch.randint(0, 52, (16,), device="cuda")
    losses = []
    for _ in range(30):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x, index_t), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert losses[-1] < 0.5 * losses[0]  # memorising one batch: a broken bf16 backward would not


def test_fit_on_cuda_with_amp(tmp_path: Path) -> None:
    config = apply_overrides(RunConfig(), {**BUDGETS["quick"], "data.synthetic_clips_per_class": 4,
                                           "train.epochs": 2, "train.device": "cuda", "train.amp": True})
    result = fit(config, out_dir=tmp_path, progress=False)
    written = json.loads((tmp_path / RESULT).read_text())
    assert written["hardware"]["device"].startswith("cuda")
    assert 0.0 <= result["final"]["val_top1"] <= 100.0
    assert all(record["train_loss"] == record["train_loss"] for record in
               map(json.loads, (tmp_path / "history.jsonl").read_text().splitlines()))


@pytest.mark.parametrize(("dtype", "steps", "rtol"), [(torch.float64, 20, 1e-9), (torch.float32, 5, 1e-4)])
def test_pack_equals_solo_on_cuda(strict_fp32, dtype: torch.dtype, steps: int, rtol: float) -> None:
    from tests.test_pack import check_pack_equals_solo
    check_pack_equals_solo("cuda", dtype, steps=steps, rtol=rtol)


@pytest.mark.parametrize("implementation", ["bmm_out", "bmm_mm"])
def test_pack_with_its_products_in_the_channel_layout_equals_solo_on_cuda(strict_fp32, implementation: str,
                                                                          monkeypatch) -> None:
    """The candidates for the pack's GPU step (mmn.model.kernels._MemberProducts) train as bmm does: exactly."""
    from mmn.model import kernels
    from tests.test_pack import check_pack_equals_solo
    monkeypatch.setattr(kernels, "GROUPED_LINEAR", implementation)
    check_pack_equals_solo("cuda", torch.float64, steps=20, rtol=1e-9)
