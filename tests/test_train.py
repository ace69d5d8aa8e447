"""One training run: protocol, determinism, bit-exact resume, NaN handling, result files, the CLI."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from mmn import model as mmn_model
from mmn import train as mmn_train
from mmn.checkpoint import CheckpointMismatch
from mmn.folders import RESULT
from mmn.config import (ConfigError, IncompatibleOptions, RunConfig, apply_overrides, check_value, suggest_key,
                        with_budget)
from mmn.schedule import learning_rate
from mmn.train import TrainingDiverged, fit, load_split, predict

TINY = {"data.synthetic_clips_per_class": 2, "model.num_frames": 16, "model.embed_dim": 16, "model.depth": 1,
        "model.num_scales": 2, "train.epochs": 3, "train.warmup_epochs": 1, "train.batch_size": 16,
        "train.threads": 1}

# Smaller still, for tests that only need a few real epochs: one scale on 8 frames, one clip per class.
SMALLER = {"data.synthetic_clips_per_class": 1, "model.num_frames": 8, "model.num_scales": 1, "train.batch_size": 8}


def tiny(**extra) -> RunConfig:
    return apply_overrides(with_budget(RunConfig(), "quick"), {**TINY, **extra})


def test_schedule_warmup_is_not_a_prefix():
    kwargs = dict(total_steps=100, warmup_steps=20, base_lr=1e-3, warmup_lr=1e-7, min_lr=1e-5)
    assert learning_rate(0, **kwargs) == pytest.approx(1e-7)
    assert learning_rate(10, **kwargs) == pytest.approx(1e-7 + 10 * (1e-3 - 1e-7) / 20)
    # after warmup the cosine is where it would be at step 20 of 100, not restarted at its peak
    expected = 1e-5 + 0.5 * (1e-3 - 1e-5) * (1 + math.cos(math.pi * 20 / 100))
    assert learning_rate(20, **kwargs) == pytest.approx(expected)
    assert learning_rate(100, **kwargs) == pytest.approx(1e-5)


@pytest.mark.slow
def test_fit_writes_results_and_is_deterministic(tmp_path):
    umask = os.umask(0o022)  # the usual one: files come out readable by group and others (shared storage)
    try:
        first = fit(tiny(), checkpoint_dir=tmp_path / "a", progress=False)
    finally:
        os.umask(umask)
    second = fit(tiny(), checkpoint_dir=tmp_path / "b", progress=False)
    assert first["status"] == "finished" and first["epochs_completed"] == 3
    assert first["final"] == second["final"]  # same seed, same numbers on the CPU
    on_disk = json.loads((tmp_path / "a" / RESULT).read_text())
    assert on_disk["config_hash"] == tiny().hash() and on_disk["best_epoch"] in (1, 2, 3)
    assert on_disk["params"] > 0 and on_disk["gflops"] > 0
    history = [json.loads(line) for line in (tmp_path / "a" / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    predictions = np.load(tmp_path / "a" / "best_val_predictions.npz")
    assert predictions["logits"].shape == (len(predictions["labels"]), 52)
    assert len(predictions["names"]) == len(predictions["labels"])
    files = sorted((tmp_path / "a").iterdir())
    assert [(f.name, f.stat().st_mode & 0o777) for f in files] == [
        (name, 0o644) for name in ("best_val_predictions.npz", "best_weights.pt", "checkpoint.pt", "history.jsonl",
                                   RESULT)]


def test_best_weights_are_written_on_improvement_only_and_load_gives_the_best_model_back(tmp_path, monkeypatch):
    scripted = iter([10.0, 30.0, 20.0])  # val top1 of epochs 1, 2, 3: epoch 2 is the best, epoch 3 is not
    real = mmn_train.evaluate
    monkeypatch.setattr(mmn_train, "evaluate", lambda *args: {**real(*args), "top1": next(scripted)})
    weights = tmp_path / "best_weights.pt"
    seen = []

    def watch(record, folder):
        seen.append((torch.load(weights, weights_only=True)["epoch"], weights.stat().st_mtime_ns))

    config = tiny(**SMALLER)
    result = fit(config, checkpoint_dir=tmp_path, progress=False, on_epoch=watch)
    assert result["best_epoch"] == 2
    assert [epoch for epoch, _ in seen] == [1, 2, 2] and seen[2][1] == seen[1][1]  # epoch 3 left it alone
    record = torch.load(weights, weights_only=True)  # tensors and plain data only
    assert (record["format_version"], record["config_hash"], record["epoch"]) == (1, config.hash(), 2)
    assert record["config"] == config.to_dict() and record["metrics"]["epoch"] == 2
    assert {key: record["metrics"][key] for key in result["best"]} == result["best"]  # that epoch's record
    assert record["metrics"]["val_top1"] == 30.0

    model = mmn_model.load(weights)
    assert isinstance(model, mmn_model.MMN) and not model.training
    recorded = np.load(tmp_path / "best_val_predictions.npz")
    val = load_split(config.data, "val", config.model.num_frames, config.train.seed)
    logits, labels = predict(model, val, torch.device("cpu"), 64)
    np.testing.assert_allclose(logits, recorded["logits"], rtol=0, atol=1e-5)
    assert recorded["logits"].dtype == np.float32 and recorded["labels"].dtype == np.int64
    np.testing.assert_array_equal(recorded["labels"], labels)
    assert recorded["names"].dtype.kind == "U" and list(recorded["names"]) == val.names


class Interrupted(Exception):
    pass


def _interrupt_after(epochs: int):
    def callback(record, folder):
        if record["epoch"] == epochs:
            raise Interrupted()

    return callback


@pytest.mark.slow
def test_resume_continues_bit_exactly(tmp_path):
    whole = fit(tiny(), checkpoint_dir=tmp_path / "whole", progress=False)
    with pytest.raises(Interrupted):
        fit(tiny(), checkpoint_dir=tmp_path / "cut", progress=False, on_epoch=_interrupt_after(1))
    assert json.loads((tmp_path / "cut" / RESULT).read_text())["status"] == "failed"
    resumed = fit(tiny(), checkpoint_dir=tmp_path / "cut", progress=False)
    assert resumed["resumed_after_epochs"] == [1]
    assert resumed["final"] == whole["final"]
    a = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    # the best weights too: the resumed run kept or replaced them exactly as the whole run did
    a, b = (torch.load(tmp_path / run / "best_weights.pt", weights_only=True) for run in ("whole", "cut"))
    assert a["epoch"] == b["epoch"] == resumed["best_epoch"] == whole["best_epoch"]
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])


def test_run_stopped_after_its_last_checkpoint_resumes_to_the_same_record(tmp_path):
    """Killed after the last epoch's checkpoint but before its record said finished: the rerun trains nothing and
    records the same metrics (a Ray trial reports them from this record)."""
    whole = fit(tiny(**{"train.epochs": 1}), checkpoint_dir=tmp_path, progress=False)
    again = fit(tiny(**{"train.epochs": 1}), checkpoint_dir=tmp_path, progress=False)
    assert again["resumed_after_epochs"] == [1] and again["status"] == "finished"
    assert (again["final"], again["best"], again["best_epoch"]) == (whole["final"], whole["best"], whole["best_epoch"])
    assert json.loads((tmp_path / RESULT).read_text())["best"] == whole["best"]


def test_checkpoint_of_another_variant_is_refused(tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fit(tiny(**{"train.epochs": 1}), checkpoint_dir=tmp_path, progress=False)  # trains on train.threads=1
        assert torch.get_num_threads() == 2  # and gives the caller's setting back
    finally:
        torch.set_num_threads(threads)
    with pytest.raises(CheckpointMismatch, match=r"another configuration \(model.msm: 'released' → 'off'"):
        fit(tiny(**{"train.epochs": 1, "model.msm": "off"}), checkpoint_dir=tmp_path, progress=False)


def test_nan_loss_stops_with_epoch_and_step(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"loss became (nan|inf) at epoch \d+, step \d+: lower train.lr"):
        fit(tiny(**{"train.lr": 1e30, "train.warmup_epochs": 0}), checkpoint_dir=tmp_path, progress=False)
    record = json.loads((tmp_path / RESULT).read_text())
    assert record["status"] == "failed" and "loss became nan" in record["error"]


# One step an epoch, the first at a rate of 1e-30 (the warmup's start), the next at 1e30: epoch 2's loss is taken
# before its step and stays finite, and the step after it leaves the weights infinite.
BLOWS_UP_AFTER_A_STEP = {"train.lr": 1e30, "train.warmup_lr": 1e-30, "train.warmup_epochs": 1, "train.max_steps": 1}


def test_weights_made_infinite_by_an_epochs_last_step_fail_the_run_as_diverged(tmp_path):
    with pytest.raises(TrainingDiverged, match=r"validation logits became NaN or inf after epoch 2: lower train.lr"):
        fit(tiny(**SMALLER, **BLOWS_UP_AFTER_A_STEP), checkpoint_dir=tmp_path, progress=False)
    record = json.loads((tmp_path / RESULT).read_text())
    assert record["status"] == "failed" and record["error"].startswith("TrainingDiverged: validation logits")
    assert record["epochs_completed"] == 1  # epoch 2 is not recorded: its weights are no model's


@pytest.mark.slow
def test_cli_trains_and_rejects_bad_keys(tmp_path):
    args = [f"{k}={v}" for k, v in {**TINY, "train.epochs": 1}.items()]
    done = subprocess.run([sys.executable, "-m", "mmn.train", "budget=quick", "--out", str(tmp_path), *args],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "best val top1" in done.stdout and (tmp_path / RESULT).exists()
    assert "epoch 1/1" in done.stderr  # progress output
    bad = subprocess.run([sys.executable, "-m", "mmn.train", "model.msn=off"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode == 2
    assert "unknown config key 'model.msn' (did you mean model.msm?)" in bad.stderr


def test_options_are_checked_alone_then_together():
    assert check_value("train.lr", 1) == 1.0 and isinstance(check_value("train.lr", 1), float)
    assert check_value("model.num_frames", 4) == 4  # too few frames for 4 scales, but that is between two options
    with pytest.raises(ConfigError, match=r"model.num_frames must be a positive integer, got 0"):
        check_value("model.num_frames", 0)
    with pytest.raises(IncompatibleOptions) as conflict:
        apply_overrides(RunConfig(), {"model.num_frames": 4})
    assert conflict.value.keys == ("model.num_frames", "model.num_scales")
    with pytest.raises(IncompatibleOptions) as conflict:
        apply_overrides(RunConfig(), {"train.warmup_epochs": 30, "train.epochs": 20})
    assert conflict.value.keys == ("train.warmup_epochs", "train.epochs")
    # names people bring from elsewhere, and names given without their section
    assert [suggest_key(key) for key in ("train.learning_rate", "lr", "wd", "width", "blocks", "msm")] == [
        f" (did you mean {key}?)" for key in ("train.lr", "train.lr", "train.weight_decay", "model.embed_dim",
                                              "model.depth", "model.msm")]

