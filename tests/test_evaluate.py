"""Best weights evaluated after training: `mmn.model.load` and `python -m ablations.evaluate` on val and test.

Trial folders come from real training runs (`mmn.train.fit`, and one real experiment on Ray) on tiny budgets.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from ablations import evaluate as ablations_evaluate
from ablations import run as ablations_run
from mmn.checkpoint import WeightsError, read_weights, save_weights
from mmn.config import RunConfig, apply_overrides, with_budget
from mmn.data.synthetic import ensure_synthetic
from mmn.folders import BEST_WEIGHTS, RESULT
from mmn.metrics import METRIC_NAMES
from mmn.model import MMN, load
from mmn import train as mmn_train
from mmn.train import fit, load_split

# The smallest real trials (as in tests/test_reliability.py): one scale of one block 16 wide on 8 frames.
SMALL = {"model.embed_dim": 16, "model.depth": 1, "model.num_scales": 1, "data.synthetic_clips_per_class": 1,
         "model.num_frames": 8, "train.batch_size": 8}


def _config(seed: int) -> RunConfig:
    return apply_overrides(with_budget(RunConfig(), "quick"), {**SMALL, "train.epochs": 2, "train.warmup_epochs": 1,
                                                               "train.threads": 1, "train.seed": seed})


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """An experiment folder of two finished trials (seeds 1 and 2), trained without Ray."""
    folder = tmp_path_factory.mktemp("trained") / "exp"
    for seed in (1, 2):
        fit(_config(seed), checkpoint_dir=folder / f"trial-{seed}", progress=False)
    return folder


@pytest.fixture
def experiment(trained, tmp_path) -> Path:
    """A copy of the trained experiment that a test may change."""
    return Path(shutil.copytree(trained, tmp_path / "exp"))


def _trial_folders(experiment: Path) -> list[Path]:
    return sorted(path.parent for path in experiment.rglob(RESULT)
                  if json.loads(path.read_text()).get("status") == "finished")


def _weights(folder: Path) -> Path:
    """A best_weights.pt of an untrained tiny model, for the file format tests."""
    config = _config(1)
    return save_weights(folder, config.to_dict(), config.hash(), 1, {"epoch": 1}, MMN(config.model).state_dict())


# --- mmn.model.load ------------------------------------------------------------------------------------------------

def test_load_refuses_missing_truncated_foreign_and_newer_files_with_one_line(tmp_path):
    path = _weights(tmp_path)
    assert isinstance(load(path), MMN)
    whole = path.read_bytes()
    cases = {"missing": None, "truncated": whole[: len(whole) // 2], "text": b"not a torch file at all"}
    for name, data in cases.items():
        if data is not None:
            (tmp_path / name).write_bytes(data)
    torch.save({"state_dict": MMN(_config(1).model).state_dict()}, tmp_path / "foreign")  # a bare state dict
    record = read_weights(path)
    torch.save({**record, "format_version": 2}, tmp_path / "newer")
    torch.save({**record, "model": {"stem.weight": torch.zeros(1)}}, tmp_path / "other_model")
    expected = {"missing": "no such file", "truncated": "is not a readable MMN weights file",
                "text": "is not a readable MMN weights file", "foreign": "is not an MMN best-weights file",
                "newer": "written by a newer mmn-ablate (format 2, this one reads 1)",
                "other_model": "does not fit this version's MMN"}
    for name, message in expected.items():
        with pytest.raises(WeightsError) as error:
            load(tmp_path / name)
        assert isinstance(error.value, ValueError)
        assert message in str(error.value) and "\n" not in str(error.value), name


# --- python -m ablations.evaluate, trials trained without Ray ---------------------------------------------------------

def test_val_reproduces_the_recorded_best_and_test_loads_the_split_once(experiment, monkeypatch, capsys):
    loads = []

    def counting(*args, **kwargs):
        loads.append(args)
        return load_split(*args, **kwargs)

    monkeypatch.setattr(mmn_train, "load_split", counting)  # evaluate imports it when it evaluates
    assert ablations_evaluate.main([str(experiment), "--split", "val"]) == 0
    for folder in _trial_folders(experiment):
        result = json.loads((folder / RESULT).read_text())
        record = json.loads((folder / "val_result.json").read_text())
        assert record["metrics"] == {key: value for key, value in result["best"].items() if key.startswith("val_")}
        assert (record["weights_epoch"], record["config_hash"]) == (result["best_epoch"], result["config_hash"])
    assert ablations_evaluate.main([str(experiment), "--split", "test"]) == 0
    assert len(loads) == 2  # once per split: both trials share their data config
    out = capsys.readouterr().out
    assert "2 evaluated, 0 already evaluated, 0 failed, of 2 finished trials" in out


def test_a_trial_without_best_weights_fails_and_the_others_are_evaluated(experiment, capsys):
    first, second = _trial_folders(experiment)
    (first / BEST_WEIGHTS).unlink()  # a run from before best weights were kept
    assert ablations_evaluate.main([str(experiment), "--split", "test"]) == 1
    out = capsys.readouterr().out
    assert f"FAILED {first}: {first / BEST_WEIGHTS}: no such file" in out
    assert "1 evaluated, 0 already evaluated, 1 failed" in out
    assert not (first / "test_result.json").exists() and (second / "test_result.json").exists()


def test_recorded_data_folder_gone_is_a_usage_error_and_data_root_replaces_it(experiment, capsys):
    """Results moved to another machine: the data folder the trials recorded is not there."""
    for folder in _trial_folders(experiment):
        record = read_weights(folder / BEST_WEIGHTS)
        record["config"]["data"]["root"] = str(experiment / "gone")
        torch.save(record, folder / BEST_WEIGHTS)
    assert ablations_evaluate.main([str(experiment), "--split", "test"]) == 2
    assert f"error: data folder {experiment / 'gone'} does not exist; pass --data-root" in capsys.readouterr().err
    data = _config(1).data
    root = ensure_synthetic(seed=data.synthetic_seed, clips_per_class=data.synthetic_clips_per_class,
                            long_tail=data.synthetic_long_tail)
    assert ablations_evaluate.main([str(experiment), "--split", "test", "--data-root", str(root)]) == 0


def test_usage_errors_exit_2_with_one_line(experiment, tmp_path, capsys):
    cases = [([str(tmp_path / "nothing"), "--split", "test"], "no experiment folder"),
             ([str(tmp_path / "empty"), "--split", "test"], "holds no trials"),
             ([str(experiment), "--split", "tset"], "unknown split 'tset' (did you mean test?); choose val or test"),
             ([str(experiment), "--split", "train"], "--split train is not evaluated"),
             ([str(experiment), "--split", "test", "--data-root", str(tmp_path / "nodata")], "is not a folder")]
    (tmp_path / "empty").mkdir()
    for argv, message in cases:
        assert ablations_evaluate.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert not list(experiment.rglob("test_*"))  # nothing was evaluated


# --- a real experiment on Ray ----------------------------------------------------------------------------------------

@pytest.mark.ray
def test_experiment_evaluated_on_test_then_skipped_and_val_reproduces_best(ray_session, tmp_path, capsys,
                                                                          monkeypatch):
    monkeypatch.setattr(ablations_run, "_report", lambda outcome: None)  # the report is not under test here
    spec = tmp_path / "mini.yaml"
    spec.write_text("name: mini\nfactors:\n  model.mtm: [true, false]\nseeds: 1\n")
    sets = [arg for key, value in SMALL.items() for arg in ("--set", f"{key}={value}")]
    assert ablations_run.main([str(spec), "--storage", str(tmp_path / "runs"), "--epochs", "1", *sets]) == 0
    experiment = tmp_path / "runs" / "mini"
    folders = _trial_folders(experiment)
    assert len(folders) == 2 and all((folder / BEST_WEIGHTS).exists() for folder in folders)  # beside result.json
    capsys.readouterr()

    assert ablations_evaluate.main([str(experiment), "--split", "test"]) == 0
    first = capsys.readouterr().out
    assert "2 evaluated, 0 already evaluated, 0 failed, of 2 finished trials" in first
    assert "mtm=true seed 1: test_top1 " in first and "mtm=false seed 1: test_top1 " in first
    test_set = load_split(_config(1).data, "test", SMALL["model.num_frames"], 0)
    for folder in folders:
        predictions = np.load(folder / "test_predictions.npz")
        assert list(predictions["names"]) == test_set.names and predictions["logits"].shape == (len(test_set), 52)
        np.testing.assert_array_equal(predictions["labels"], test_set.labels)  # the synthetic test set has labels
        record = json.loads((folder / "test_result.json").read_text())
        assert (record["format_version"], record["split"], record["clips"], record["device"]) == (
            1, "test", len(test_set), "cpu")
        assert set(record["metrics"]) == {f"test_{name}" for name in METRIC_NAMES}
    mtime = (folders[0] / "test_result.json").stat().st_mtime_ns

    assert ablations_evaluate.main([str(experiment), "--split", "test"]) == 0
    assert "0 evaluated, 2 already evaluated" in capsys.readouterr().out
    assert (folders[0] / "test_result.json").stat().st_mtime_ns == mtime

    assert ablations_evaluate.main([str(experiment), "--split", "val"]) == 0
    for folder in folders:
        best = json.loads((folder / RESULT).read_text())["best"]
        assert json.loads((folder / "val_result.json").read_text())["metrics"]["val_top1"] == best["val_top1"]
