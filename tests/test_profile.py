"""Profiling: parameter and FLOP counts of known models, throughput on a tiny one, and the command line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mmn.config import parse_value
from mmn.model import MMN, ConfigError, ModelConfig
from mmn.profile import (
    build_config,
    count_gflops,
    count_parameters,
    main,
    measure_throughput,
    parse_overrides,
    profile_model,
)

pytestmark = pytest.mark.usefixtures("one_thread")

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(embed_dim=16, num_frames=8, num_joints=6, num_classes=3, depth=1, num_scales=2)
TINY_ARGS = [f"model.{key}={value}" for key, value in TINY.items()]




def test_parameters_of_the_release_models() -> None:
    assert count_parameters(ModelConfig()) == 1_325_186
    assert count_parameters(ModelConfig(num_joints=22, num_classes=32)) == 1_234_014
    assert count_parameters(MMN(ModelConfig())) == 1_325_186


def test_gflops_of_the_release_model() -> None:
    # docs/spec-mmn.md: about 2.73 GFLOP per clip for MA-52 (2 FLOPs per multiply-add).
    assert 2.6 < count_gflops(ModelConfig()) < 3.0


def test_gflops_grow_with_depth() -> None:
    shallow = count_gflops(ModelConfig(**{**TINY, "depth": 1}))
    deep = count_gflops(ModelConfig(**{**TINY, "depth": 4}))
    assert 0 < shallow < deep


def test_gflops_of_a_model_equal_those_of_its_config_and_leave_it_alone() -> None:
    config = ModelConfig(**TINY)
    model = MMN(config).train()
    before = {name: t.clone() for name, t in model.state_dict().items()}
    assert count_gflops(model) == count_gflops(config)
    assert model.training
    assert all(torch.equal(t, before[name]) for name, t in model.state_dict().items())


def test_gflops_need_a_config() -> None:
    with pytest.raises(TypeError, match="ModelConfig"):
        count_gflops(torch.nn.Linear(2, 2))


def test_profile_model_reports_every_column() -> None:
    result = profile_model(ModelConfig(**TINY), batch_size=2, threads=1, steps=1)
    assert set(result) == {"params", "gflops", "train_clips_per_s", "eval_clips_per_s"}
    assert result["params"] == count_parameters(ModelConfig(**TINY))
    assert all(value > 0 for value in result.values())


def test_throughput_restores_threads_and_mode() -> None:
    model = MMN(ModelConfig(**TINY)).eval()
    torch.set_num_threads(2)
    try:
        measure_throughput(model, batch_size=2, threads=1, steps=1)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
    assert not model.training


@pytest.mark.parametrize(("text", "value"), [
    ("3", 3), ("-2", -2), ("0.25", 0.25), ("1e-3", 1e-3), ("true", True), ("False", False), ("graph", "graph"),
])
def test_parse_value(text: str, value) -> None:
    parsed = parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_parse_overrides() -> None:
    assert parse_overrides(["msm=graph", "depth=2", "mtm=false", "drop_path=0.1"]) == {
        "msm": "graph", "depth": 2, "mtm": False, "drop_path": 0.1}
    with pytest.raises(ValueError, match="unknown model option 'dpeth'; did you mean depth?"):
        parse_overrides(["dpeth=2"])
    with pytest.raises(ValueError, match="expected key=value"):
        parse_overrides(["depth"])


def test_build_config_uses_the_dataset_then_the_overrides() -> None:
    assert (build_config("imigue", {}).num_joints, build_config("imigue", {}).num_classes) == (22, 32)
    assert (build_config("ma52", {}).num_joints, build_config("ma52", {}).num_classes) == (44, 52)
    assert build_config("imigue", {"num_classes": 10}).num_classes == 10
    with pytest.raises(ConfigError, match="mlp_ratio must be a number, got 'wide'"):
        build_config("ma52", {"mlp_ratio": "wide"})


def test_main_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json", "--no-throughput", "--dataset", "imigue"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["params"] == 1_234_014
    assert set(result) == {"params", "gflops"}


@pytest.mark.parametrize(("args", "message"), [
    (["model.num_frames=60"], "num_frames=60 must be divisible by 2^(num_scales-1)=8"),
    (["model.msm=full"], "msm='full' is not one of released, graph, off"),
    (["model.mtm=maybe"], "mtm expects true or false (or on/off), got 'maybe'"),
    (["model.drop_path=high"], "drop_path expects a number, got 'high'"),
])
def test_main_bad_value_exits_2(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.slow
def test_cli_tiny_config() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mmn.profile", "--batch", "2", "--steps", "1", "--threads", "1", *TINY_ARGS],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    params = count_parameters(ModelConfig(**TINY))
    assert "parameters" in done.stdout and f"{params:,}" in done.stdout
    assert "train clips/s" in done.stdout and "eval clips/s" in done.stdout


def test_main_unknown_key_exits_2_with_a_suggestion(capsys: pytest.CaptureFixture[str]) -> None:
    # In-process: `python -m mmn.profile` exits with main's return value, and a subprocess costs a torch import.
    assert main(["model.embed_dims=64"]) == 2
    out, err = capsys.readouterr()
    assert err == "error: unknown config key 'model.embed_dims' (did you mean model.embed_dim?)\n"
    assert out == ""


def test_members_measures_a_trial_pack_all_members_together(capsys: pytest.CaptureFixture[str]) -> None:
    small = ["model.embed_dim=16", "model.depth=1", "model.num_scales=1", "model.num_frames=8"]
    assert main([*small, "--members", "2", "--batch", "4", "--steps", "1", "--threads", "1"]) == 0
    table = capsys.readouterr().out
    assert "a trial pack of 2 members, all together; batch 4 each" in table
    assert main([*small, "--members", "2", "--batch", "4", "--steps", "1", "--threads", "1", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["train_clips_per_s"] > 0 and result["eval_clips_per_s"] > 0
    with pytest.raises(SystemExit) as usage:
        main(["--members", "0"])
    assert usage.value.code == 2
