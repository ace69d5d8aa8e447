"""`mmn.train.fit_pack`: each member of a pack is still a trial, with the files, record and resumption of a solo one."""
from __future__ import annotations

import contextlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mmn.checkpoint import read_weights
from mmn.config import RunConfig, apply_overrides, with_budget
from mmn.folders import BEST_PREDICTIONS, BEST_WEIGHTS, CHECKPOINT, HISTORY, RESULT
from mmn.model import MMN
from mmn.pack import check_packable, pack_key
from mmn.train import PackMember, fit, fit_pack
from tests.helpers.records import read_history

# One scale of one block 16 wide on 8 frames; random layers off but where a test turns them on (RATES); SGD, since
# AdamW's normalised step turns float32 rounding in near-zero gradients into whole steps of the learning rate.
SMALL = {"train.optimizer": "sgd", "data.synthetic_clips_per_class": 2, "model.num_frames": 8, "model.embed_dim": 16, "model.depth": 1,
         "model.num_scales": 1, "model.drop_path": 0.0, "model.fusion_dropout": 0.0, "model.head_dropout": 0.0,
         "train.epochs": 2, "train.warmup_epochs": 1, "train.batch_size": 16, "train.threads": 1}
# What an epoch's record says of training, in numbers that move continuously: on so small a model the logits of
# many classes nearly tie, and float32 rounding may flip an argmax, and with it a discrete metric such as macro F1.
VARYING = ["train_loss", "lr"]
# Each member's own random layers (two blocks: the first block's drop-path rate is always 0), 3 steps an epoch. A
# member drawing any other masks than its solo run's would be off by far more than _same_training allows.
RATES = {"model.depth": 2, "model.drop_path": 0.4, "model.fusion_dropout": 0.3, "model.head_dropout": 0.5,
         "train.max_steps": 3}


def _config(seed: int, lr: float = 1e-3, **extra) -> RunConfig:
    return apply_overrides(with_budget(RunConfig(), "quick"),
                           {**SMALL, "train.seed": seed, "train.lr": lr, **extra})


def _same_training(packed: list[dict], solo: list[dict]) -> None:
    assert len(packed) == len(solo)
    for a, b in zip(packed, solo):
        for key in VARYING:
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-5), key


def test_members_write_what_solo_trials_write_and_train_alike(tmp_path: Path) -> None:
    configs = [_config(1, 1e-3), _config(2, 3e-3, **{"train.label_smoothing": 0.2})]
    for i, config in enumerate(configs):
        fit(config, checkpoint_dir=tmp_path / f"solo{i}", progress=False)
    results = fit_pack([PackMember(c, checkpoint_dir=tmp_path / f"packed{i}") for i, c in enumerate(configs)])

    for i, (config, result) in enumerate(zip(configs, results)):
        packed, solo = tmp_path / f"packed{i}", tmp_path / f"solo{i}"
        assert sorted(p.name for p in packed.iterdir()) == sorted(p.name for p in solo.iterdir())
        assert {BEST_PREDICTIONS, BEST_WEIGHTS, CHECKPOINT, HISTORY, RESULT} <= {p.name for p in packed.iterdir()}
        record, alone = json.loads((packed / RESULT).read_text()), json.loads((solo / RESULT).read_text())
        assert record.keys() == alone.keys() and record == result
        assert (record["status"], record["config_hash"], record["seed"]) == ("finished", config.hash(),
                                                                            config.train.seed)
        _same_training(read_history(packed), read_history(solo))
        with np.load(packed / BEST_PREDICTIONS) as a, np.load(solo / BEST_PREDICTIONS) as b:
            np.testing.assert_allclose(a["logits"], b["logits"], rtol=1e-3, atol=1e-4)
        weights = read_weights(packed / BEST_WEIGHTS)
        model = MMN(config.model)
        model.load_state_dict(weights["model"])  # a member's weights are an ordinary MMN's
        # each member's files hold its own tensors, not the whole fused storage
        assert (packed / BEST_WEIGHTS).stat().st_size < 1.5 * (solo / BEST_WEIGHTS).stat().st_size


def test_a_diverging_member_fails_alone_and_the_others_finish(tmp_path: Path) -> None:
    configs = [_config(1), _config(2, 1e30)]
    results = fit_pack([PackMember(c, checkpoint_dir=tmp_path / f"m{i}") for i, c in enumerate(configs)])
    assert results[0]["status"] == "finished" and results[0]["epochs_completed"] == 2
    assert results[1]["status"] == "failed"
    assert results[1]["error"].startswith("TrainingDiverged: loss became nan at epoch 1, step ")
    assert json.loads((tmp_path / "m1" / RESULT).read_text())["status"] == "failed"
    fit(configs[0], checkpoint_dir=tmp_path / "alone", progress=False)
    _same_training(read_history(tmp_path / "m0"), read_history(tmp_path / "alone"))


def test_a_member_whose_weights_become_infinite_between_its_loss_and_validation_fails_alone(tmp_path: Path) -> None:
    """One step an epoch; the diverging member's second step, at 1e30 after a warmup from 1e-30, leaves its weights
    infinite while its loss, taken before the step, is finite: only its validation shows it."""
    blows_up = {"train.warmup_lr": 1e-30, "train.max_steps": 1, "train.epochs": 3}
    configs = [_config(1, **{"train.max_steps": 1, "train.epochs": 3}), _config(2, 1e30, **blows_up)]
    heard = []
    results = fit_pack([PackMember(c, checkpoint_dir=tmp_path / f"m{i}") for i, c in enumerate(configs)],
                       on_epoch_end=lambda epoch, records: heard.append((epoch, sorted(records))))
    assert heard == [(1, [0, 1]), (2, [0]), (3, [0])]
    assert results[0]["status"] == "finished" and results[0]["epochs_completed"] == 3
    assert (results[1]["status"], results[1]["epochs_completed"]) == ("failed", 1)
    assert results[1]["error"].startswith("TrainingDiverged: validation logits became NaN or inf after epoch 2")
    fit(configs[0], checkpoint_dir=tmp_path / "alone", progress=False)
    _same_training(read_history(tmp_path / "m0"), read_history(tmp_path / "alone"))


def test_an_interrupted_pack_resumes_each_member_from_its_checkpoint(tmp_path: Path) -> None:
    configs = [_config(1), _config(2, 2e-3)]

    def stop_after_first_epoch(record: dict, folder: Path | None) -> None:
        if record["epoch"] == 1 and folder is not None and folder.name == "m1":  # both members have saved epoch 1
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_pack([PackMember(c, checkpoint_dir=tmp_path / f"m{i}", on_epoch=stop_after_first_epoch)
                  for i, c in enumerate(configs)])
    assert [json.loads((tmp_path / f"m{i}" / RESULT).read_text())["status"] for i in range(2)] == ["running"] * 2

    results = fit_pack([PackMember(c, checkpoint_dir=tmp_path / f"m{i}") for i, c in enumerate(configs)])
    assert [r["resumed_after_epochs"] for r in results] == [[1], [1]]
    uninterrupted = fit_pack([PackMember(c, checkpoint_dir=tmp_path / f"u{i}") for i, c in enumerate(configs)])
    for i in range(2):
        assert results[i]["status"] == uninterrupted[i]["status"] == "finished"
        _same_training(read_history(tmp_path / f"m{i}"), read_history(tmp_path / f"u{i}"))


def test_members_with_random_layers_resume_their_own_streams_alone_or_in_another_pack(tmp_path: Path) -> None:
    """Members with dropout and drop-path on train as their solo runs do; a member's checkpoint resumes alone, or in a
    pack of other members, and a solo run's checkpoint in a pack: each continues its own stream."""
    configs = [_config(1, 1e-3, **RATES), _config(2, 3e-3, **{**RATES, "model.drop_path": 0.2}),
               _config(3, 2e-3, **{**RATES, "model.head_dropout": 0.0})]
    for i, config in enumerate(configs):
        fit(config, checkpoint_dir=tmp_path / f"solo{i}", progress=False)

    def stop_after_first_epoch(record: dict, folder: Path | None) -> None:
        if record["epoch"] == 1 and folder is not None and folder.name in ("m1", "m2"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # members 0 and 1 packed, stopped after epoch 1
        fit_pack([PackMember(c, checkpoint_dir=tmp_path / f"m{i}", on_epoch=stop_after_first_epoch)
                  for i, c in enumerate(configs[:2])])
    with pytest.raises(KeyboardInterrupt):  # member 2 alone, stopped after epoch 1
        fit(configs[2], checkpoint_dir=tmp_path / "m2", on_epoch=stop_after_first_epoch, progress=False)
    _same_training(read_history(tmp_path / "m0"), read_history(tmp_path / "solo0")[:1])

    fit(configs[0], checkpoint_dir=tmp_path / "m0", progress=False)  # a member's checkpoint, resumed alone
    # a member's and a solo run's checkpoint resumed together: member 1 is now first in its pack
    results = fit_pack([PackMember(configs[i], checkpoint_dir=tmp_path / f"m{i}") for i in (1, 2)])
    assert [r["resumed_after_epochs"] for r in results] == [[1], [1]]
    for i in range(3):
        _same_training(read_history(tmp_path / f"m{i}"), read_history(tmp_path / f"solo{i}"))


def test_on_epoch_end_stops_a_member_the_others_go_on(tmp_path: Path) -> None:
    off = {**RATES, "model.drop_path": 0.0, "model.fusion_dropout": 0.0, "model.head_dropout": 0.0}
    configs = [_config(1, **RATES), _config(2, 2e-3, **RATES), _config(3, 5e-4, **off)]
    heard: list[tuple[int, list[int]]] = []

    def stop_member_1(epoch: int, records: dict[int, dict]) -> list[int]:
        heard.append((epoch, sorted(records)))
        assert all(record["epoch"] == epoch for record in records.values())
        return [1] if epoch == 1 else []

    results = fit_pack([PackMember(c, checkpoint_dir=tmp_path / f"m{i}") for i, c in enumerate(configs)],
                       on_epoch_end=stop_member_1)
    assert heard == [(1, [0, 1, 2]), (2, [0, 2])]
    stopped = json.loads((tmp_path / "m1" / RESULT).read_text())
    assert stopped == results[1]
    assert (stopped["status"], stopped["stopped_after_epoch"], stopped["epochs_completed"]) == ("stopped", 1, 1)
    assert stopped["error"] is None and stopped["ended"] and stopped["throughput"]["train_clips_per_s"] > 0
    assert len(read_history(tmp_path / "m1")) == 1
    assert {BEST_PREDICTIONS, BEST_WEIGHTS, CHECKPOINT, HISTORY} <= {p.name for p in (tmp_path / "m1").iterdir()}
    assert read_weights(tmp_path / "m1" / BEST_WEIGHTS)["epoch"] == 1
    for i in (0, 2):
        assert (results[i]["status"], results[i]["epochs_completed"]) == ("finished", 2)
        assert "stopped_after_epoch" not in results[i]
        fit(configs[i], checkpoint_dir=tmp_path / f"solo{i}", progress=False)
        _same_training(read_history(tmp_path / f"m{i}"), read_history(tmp_path / f"solo{i}"))


def test_on_epoch_end_stopping_a_member_not_training_is_an_error(tmp_path: Path) -> None:
    configs = [_config(1, **{"train.epochs": 1}), _config(2, **{"train.epochs": 1})]
    with pytest.raises(ValueError, match=r"on_epoch_end returned members \[5\], which are not training"):
        fit_pack([PackMember(c, checkpoint_dir=tmp_path / f"m{i}") for i, c in enumerate(configs)],
                 on_epoch_end=lambda epoch, records: [5])
    assert [json.loads((tmp_path / f"m{i}" / RESULT).read_text())["status"] for i in range(2)] == ["failed"] * 2


def test_members_resumed_at_different_epochs_train_in_turn(tmp_path: Path) -> None:
    configs = [_config(1), _config(2)]
    fit(apply_overrides(configs[0], {}), checkpoint_dir=tmp_path / "m0", progress=False)  # already finished
    results = fit_pack([PackMember(c, checkpoint_dir=tmp_path / f"m{i}") for i, c in enumerate(configs)])
    assert [r["status"] for r in results] == ["finished", "finished"]
    assert results[0]["resumed_after_epochs"] == [2] and results[1]["resumed_after_epochs"] == []


def test_a_member_that_leaves_its_group_is_not_trained_again_by_a_later_group(tmp_path: Path) -> None:
    """Member 0 starts afresh, member 1 resumes after epoch 2 of 4. Stopped at epoch 2, member 0 must not join the
    group of members at epoch 2, which then trains member 1 alone."""
    configs = [_config(1, **{"train.epochs": 4}), _config(2, **{"train.epochs": 4})]

    def interrupt_after_epoch_2(record: dict, folder: Path | None) -> None:
        if record["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit(configs[1], checkpoint_dir=tmp_path / "m1", on_epoch=interrupt_after_epoch_2, progress=False)
    heard = []

    def stop_member_0_at_epoch_2(epoch: int, records: dict) -> list[int]:
        heard.append((epoch, sorted(records)))
        return [0] if epoch == 2 and 0 in records else []

    results = fit_pack([PackMember(c, checkpoint_dir=tmp_path / f"m{i}") for i, c in enumerate(configs)],
                       on_epoch_end=stop_member_0_at_epoch_2)
    assert heard == [(1, [0]), (2, [0]), (3, [1]), (4, [1])]
    assert [(r["status"], r["epochs_completed"]) for r in results] == [("stopped", 2), ("finished", 4)]
    assert len(read_history(tmp_path / "m0")) == 2


def test_errors_fail_only_the_members_they_concern(tmp_path: Path) -> None:
    # Member 1's folder holds another config's checkpoint: it fails alone, and member 0, finished before, stays so.
    configs = [_config(1, **{"train.epochs": 1}), _config(2, **{"train.epochs": 1})]
    fit(configs[0], checkpoint_dir=tmp_path / "m0", progress=False)
    fit(_config(2, 5e-3, **{"train.epochs": 1}), checkpoint_dir=tmp_path / "m1", progress=False)
    results = fit_pack([PackMember(c, checkpoint_dir=tmp_path / f"m{i}") for i, c in enumerate(configs)])
    assert results[0]["status"] == "finished"
    assert (results[1]["status"], results[1]["error"].split(":")[0]) == ("failed", "CheckpointMismatch")
    # An error while others train (the callback's, here) fails them, not a member finished before it began.
    fresh = _config(3, **{"train.epochs": 1})
    with pytest.raises(ValueError, match=r"on_epoch_end returned members \[7\]"):
        fit_pack([PackMember(configs[0], checkpoint_dir=tmp_path / "m0"),
                  PackMember(fresh, checkpoint_dir=tmp_path / "m2")], on_epoch_end=lambda epoch, records: [7])
    assert json.loads((tmp_path / "m0" / RESULT).read_text())["status"] == "finished"
    assert json.loads((tmp_path / "m2" / RESULT).read_text())["status"] == "failed"


def test_bad_arguments_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    members = [PackMember(_config(seed, **{"train.epochs": 1}), checkpoint_dir=tmp_path / f"m{seed}")
               for seed in (1, 2)]
    with pytest.raises(ValueError, match=r"max_members must be at least 1 \(or None: as many as fit\), got 0"):
        fit_pack(members, max_members=0)
    assert not (tmp_path / "m1").exists()
    with pytest.raises(TypeError, match=r"on_epoch_end must return the indices of the members to stop \(a list, "
                                        r"maybe empty\) or None, got 0"):
        fit_pack(members, on_epoch_end=lambda epoch, records: 0)


def test_only_trials_that_differ_in_per_member_settings_share_a_pack() -> None:
    a, b = _config(1, 1e-3), _config(7, 5e-3, **{"model.drop_path": 0.2, "train.weight_decay": 0.01})
    assert pack_key(a) == pack_key(b)
    check_packable([a, b])
    deeper = _config(1, **{"model.depth": 2})
    assert pack_key(deeper) != pack_key(a)
    with pytest.raises(ValueError, match=r"differ in model.depth \(1 and 2\) cannot share a pack"):
        check_packable([a, deeper])
    with pytest.raises(ValueError, match="differ in model.depth"):
        fit_pack([PackMember(a), PackMember(deeper)])


def test_max_members_trains_a_pack_in_groups_that_train_alike(tmp_path: Path) -> None:
    # On a GPU mmn.pack.members_that_fit sets the limit from measured memory; here it is given.
    configs = [_config(1), _config(2, 2e-3), _config(3, 5e-4)]
    together = fit_pack([PackMember(c, checkpoint_dir=tmp_path / f"all{i}") for i, c in enumerate(configs)])
    grouped = fit_pack([PackMember(c, checkpoint_dir=tmp_path / f"two{i}") for i, c in enumerate(configs)],
                       max_members=2)
    assert [r["status"] for r in grouped] == ["finished"] * 3
    for i in range(3):
        assert grouped[i]["config_hash"] == together[i]["config_hash"]
        _same_training(read_history(tmp_path / f"two{i}"), read_history(tmp_path / f"all{i}"))


def test_one_fused_forward_predicts_what_each_members_folded_model_does() -> None:
    # What a pack validates with on a GPU (_predict_pack) against what each member's folded model gives (a CPU).
    from mmn.pack import Pack
    from mmn.train import _predict_pack, load_split, predict

    configs = [_config(1), _config(2)]
    models = [MMN(c.model) for c in configs]
    optimizers = [torch.optim.SGD(m.parameters(), lr=0.1) for m in models]
    schedulers = [torch.optim.lr_scheduler.LambdaLR(o, lambda step: 1.0) for o in optimizers]
    pack = Pack(models, optimizers, schedulers, [0.0, 0.0])
    val = load_split(configs[0].data, "val", configs[0].model.num_frames, 1)
    fused, seconds = _predict_pack(pack, val, torch.device("cpu"), 32, contextlib.nullcontext())
    assert fused.shape == (2, len(val), configs[0].model.num_classes) and seconds > 0
    for i, model in enumerate(models):
        alone, labels = predict(model, val, torch.device("cpu"), 32)
        np.testing.assert_allclose(fused[i], alone, rtol=1e-4, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_pack_trains_on_cuda_with_amp_validating_all_members_at_once(tmp_path: Path) -> None:
    from mmn.pack import members_that_fit

    configs = [_config(seed, **{"train.device": "cuda", "train.amp": True}) for seed in (1, 2, 3)]
    fits = members_that_fit(configs[0], torch.device("cuda"))
    assert fits >= 3  # a model this small: hundreds fit in a GPU's memory
    # a trial given a quarter of the GPU keeps within a quarter of its memory
    assert members_that_fit(configs[0], torch.device("cuda"), share=0.25) < fits
    results = fit_pack([PackMember(c, checkpoint_dir=tmp_path / f"m{i}") for i, c in enumerate(configs)])
    for result in results:
        assert result["status"] == "finished" and result["hardware"]["device"].startswith("cuda")
        assert 0 <= result["best"]["val_top1"] <= 100


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pack_members_resume_their_own_cuda_streams(tmp_path: Path) -> None:
    """On CUDA each member draws from its own device generator, which its checkpoint keeps (`rng_cuda`): a pack
    interrupted after epoch 1 and resumed trains as one that was not."""
    configs = [_config(seed, **{**RATES, "train.device": "cuda"}) for seed in (1, 2)]

    def stop_after_first_epoch(record: dict, folder: Path | None) -> None:
        if record["epoch"] == 1 and folder is not None and folder.name == "m1":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_pack([PackMember(c, checkpoint_dir=tmp_path / f"m{i}", on_epoch=stop_after_first_epoch)
                  for i, c in enumerate(configs)])
    assert torch.load(tmp_path / "m0" / CHECKPOINT, weights_only=True)["rng_cuda"] is not None
    fit_pack([PackMember(c, checkpoint_dir=tmp_path / f"m{i}") for i, c in enumerate(configs)])
    fit_pack([PackMember(c, checkpoint_dir=tmp_path / f"u{i}") for i, c in enumerate(configs)])
    for i in range(2):
        _same_training(read_history(tmp_path / f"m{i}"), read_history(tmp_path / f"u{i}"))
