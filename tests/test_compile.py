"""train.compile: the solo training forward under torch.compile, and its fallback to the eager model.

The runs are real `fit`s traced by Dynamo; the compiled graphs run on a backend of these tests (the eager
interpreter, counting its calls or failing on purpose) instead of inductor, whose compile takes about a minute here.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmn import compiled
from mmn.config import ConfigError, RunConfig, apply_overrides, check_value, config_hash, with_budget
from mmn.folders import BEST_WEIGHTS, CHECKPOINT, HISTORY, RESULT
from mmn.model import MMN
from mmn.train import fit, main

# The smallest real trials (tests/test_evaluate.py), two steps an epoch; drop-path keeps the random streams busy.
SMALL = {"model.embed_dim": 16, "model.depth": 1, "model.num_scales": 1, "data.synthetic_clips_per_class": 1,
         "model.num_frames": 8, "train.batch_size": 8, "train.epochs": 2, "train.warmup_epochs": 1,
         "train.threads": 1, "train.max_steps": 2}


def _config(setting: str) -> RunConfig:
    return apply_overrides(with_budget(RunConfig(), "quick"), {**SMALL, "train.compile": setting})


def _losses(folder: Path) -> list[float]:
    return [json.loads(line)["train_loss"] for line in (folder / HISTORY).read_text().splitlines()]


def _state(folder: Path, name: str) -> dict[str, torch.Tensor]:
    return torch.load(folder / name, map_location="cpu", weights_only=True)["model"]


@pytest.fixture(scope="module")
def eager(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("eager")
    fit(_config("off"), checkpoint_dir=folder, progress=False)
    return folder


def test_compiled_training_equals_the_eager_run_and_saves_the_eager_state(eager, tmp_path, monkeypatch, capsys):
    graphs = []

    def counting(graph: torch.fx.GraphModule, example_inputs: list) -> object:
        graphs.append(graph)
        return graph.forward

    monkeypatch.setattr(compiled, "BACKEND", counting)
    result = fit(_config("on"), checkpoint_dir=tmp_path, progress=False)
    assert graphs, "the forward was never compiled"
    assert result["compiled"] is True and "compile_error" not in result
    assert "[mmn]" not in capsys.readouterr().err
    assert _losses(tmp_path) == pytest.approx(_losses(eager), abs=1e-6)
    for name in (BEST_WEIGHTS, CHECKPOINT):  # the eager module's keys: loadable into an MMN as they are
        state = _state(tmp_path, name)
        assert not [key for key in state if "_orig_mod" in key]
        MMN(_config("on").model).load_state_dict(state)
    assert result["config_hash"] == _config("off").hash()  # how a run executes, not what it computes


def _fails_at_compile(graph: torch.fx.GraphModule, example_inputs: list) -> object:
    raise RuntimeError("no C compiler")


def _fails_late_in_its_forward(graph: torch.fx.GraphModule, example_inputs: list) -> object:
    """Graphs up to the one that draws the head's dropout run, and that one fails after running: BatchNorm
    statistics and the random streams have moved on, as a capture failing late in a step may leave them."""
    if not any(node.target is torch.nn.functional.dropout for node in graph.graph.nodes):
        return graph.forward

    def run(*args):
        graph.forward(*args)
        raise RuntimeError("CUDA graph capture failed")
    return run


@pytest.mark.parametrize("backend, reason", [(_fails_at_compile, "no C compiler"),
                                             (_fails_late_in_its_forward, "CUDA graph capture failed")])
def test_a_failing_compile_falls_back_to_the_same_run(eager, tmp_path, monkeypatch, capsys, backend, reason):
    monkeypatch.setattr(compiled, "BACKEND", backend)
    result = fit(_config("on"), checkpoint_dir=tmp_path, progress=False)
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("[mmn]")]
    assert len(lines) == 1 and lines[0].startswith("[mmn] train.compile: ")
    assert lines[0].endswith("; training eagerly") and reason in lines[0]
    assert result["compiled"] is False and reason in result["compile_error"]
    assert json.loads((tmp_path / RESULT).read_text())["compiled"] is False
    # no step lost or repeated: the same losses and weights, bit for bit
    assert _losses(tmp_path) == _losses(eager)
    ours, theirs = _state(tmp_path, CHECKPOINT), _state(eager, CHECKPOINT)
    assert all(torch.equal(ours[name], theirs[name]) for name in theirs)


def test_torch_compile_raising_falls_back(tmp_path, monkeypatch, capsys):
    def unsupported(*args, **kwargs):
        raise RuntimeError("Dynamo is not supported on this Python")

    monkeypatch.setattr(torch, "compile", unsupported)
    forward = compiled.TrainingForward(MMN(_config("on").model), "on", torch.device("cpu"))
    assert forward.step(lambda f: f) is forward.model
    assert forward.record() == {"compiled": False,
                                "compile_error": "RuntimeError: Dynamo is not supported on this Python"}
    assert capsys.readouterr().err == ("[mmn] train.compile: RuntimeError: Dynamo is not supported on this Python; "
                                       "training eagerly\n")


def test_steps_run_unguarded_once_a_few_in_a_row_compiled_nothing(monkeypatch):
    monkeypatch.setattr(compiled, "BACKEND", "eager")
    forward = compiled.TrainingForward(torch.nn.Linear(3, 2), "on", torch.device("cpu"))
    x = torch.ones(4, 3)
    for _ in range(compiled.SETTLED_STEPS + 1):  # the first compiles
        forward.step(lambda f: f(x))

    def out_of_memory(f):
        f(x)
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError, match="out of memory"):  # an error of the run, not of compiling: no fallback
        forward.step(out_of_memory)
    assert forward.record() == {"compiled": True}


def test_auto_compiles_on_cuda_only_and_off_never():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert [compiled.wanted(s, cpu) for s in ("off", "on", "auto")] == [False, True, False]
    assert [compiled.wanted(s, cuda) for s in ("off", "on", "auto")] == [False, True, True]
    forward = compiled.TrainingForward(MMN(_config("auto").model), "auto", cpu)
    assert forward.record() == {"compiled": False}
    assert compiled.TrainingForward(forward.model, "off", cpu).record() == {}  # a record as before the setting


def test_the_setting_is_checked_and_leaves_every_hash_as_it_was(capsys):
    with pytest.raises(ConfigError, match=r"^train.compile='maybe' is not one of off, on, auto$"):
        check_value("train.compile", "maybe")
    assert main(["train.compile=maybe", "--print-config"]) == 2
    assert "train.compile='maybe' is not one of off, on, auto" in capsys.readouterr().err
    recorded = RunConfig().to_dict()
    del recorded["train"]["compile"]  # a record written before the setting existed
    assert config_hash(recorded) == RunConfig().hash() == apply_overrides(RunConfig(), {"train.compile": "on"}).hash()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_paper_path_compiles_with_cuda_graphs_and_trains_as_eagerly(tmp_path, capsys):
    """Real inductor and CUDA graphs: no fallback, and without dropout the losses of the eager run."""
    plain = {"train.device": "cuda", "train.max_steps": 1, "model.drop_path": 0.0, "model.fusion_dropout": 0.0,
             "model.head_dropout": 0.0}
    results = {setting: fit(apply_overrides(_config(setting), plain), checkpoint_dir=tmp_path / setting,
                            progress=False) for setting in ("off", "on")}
    assert "[mmn]" not in capsys.readouterr().err
    assert results["on"]["compiled"] is True and "compiled" not in results["off"]
    assert _losses(tmp_path / "on") == pytest.approx(_losses(tmp_path / "off"), abs=1e-3)
    assert not [key for key in _state(tmp_path / "on", CHECKPOINT) if "_orig_mod" in key]
