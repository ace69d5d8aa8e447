"""One command syntax: key=value overrides, --print-config, --version and lean --help on every command line, and
the `mmn-ablate` console script that forwards to them."""
from __future__ import annotations

import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import yaml

from ablations import cli
from ablations import evaluate as ablations_evaluate
from ablations import run as ablations_run
from analysis import report as analysis_report
from mmn import profile as mmn_profile
from mmn import train as mmn_train
from mmn.data import __main__ as mmn_data

ROOT = Path(__file__).resolve().parents[1]
VERSION = f"mmn-ablate {metadata.version('mmn-ablate')}"
MAINS = {"run": ablations_run.main, "report": analysis_report.main, "evaluate": ablations_evaluate.main,
         "train": mmn_train.main, "profile": mmn_profile.main, "data": mmn_data.main, "mmn-ablate": cli.main}
BAD_KEY = "error: unknown config key 'model.msn' (did you mean model.msm?)\n"


def test_run_takes_key_value_arguments_and_set(capsys: pytest.CaptureFixture[str]) -> None:
    assert ablations_run.main(["msm_mtm", "train.epochs=3", "--print-config", "--set", "model.depth=2",
                               "data.synthetic_clips_per_class=4"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    shared = printed["shared"]
    assert (shared["train"]["epochs"], shared["model"]["depth"], shared["data"]["synthetic_clips_per_class"]) == \
        (3, 2, 4)
    # the factors vary, so they are each variant's, not shared
    assert "msm" not in shared["model"] and "seed" not in shared["train"]
    assert printed["variants"]["msm=off,mtm=false"] == {"model.msm": "off", "model.mtm": False}
    assert len(printed["variants"]) == 4 and printed["seeds"] == [1, 2, 3, 4, 5]  # seeds until decided: up to max


def test_run_wants_the_experiment_before_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    assert ablations_run.main(["train.epochs=3", "msm_mtm"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: name an experiment before the key=value overrides") and err.count("\n") == 1


@pytest.mark.parametrize(("command", "argv"), [
    ("run", ["msm_mtm", "model.msn=graph"]),
    ("run", ["msm_mtm", "--set", "model.msn=graph"]),
    ("train", ["--quiet", "model.msn=graph"]),
    ("profile", ["model.msn=graph"]),
])
def test_a_bad_key_is_the_same_error_everywhere(command: str, argv: list[str], capsys: pytest.CaptureFixture[str],
                                                tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may be written anywhere
    assert MAINS[command](argv) == 2
    captured = capsys.readouterr()
    assert captured.err == BAD_KEY and captured.out == ""
    assert list(tmp_path.iterdir()) == []


def test_train_prints_the_resolved_config_without_training(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run.yaml").write_text("train: {lr: 0.05}\n")
    assert mmn_train.main(["budget=quick", "--config", "run.yaml", "model.msm=graph", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["msm"] == "graph" and printed["train"]["lr"] == 0.05
    assert printed["train"]["epochs"] == 16  # the quick budget's
    assert set(printed) == {"model", "data", "train"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.yaml"]  # no runs/ folder: nothing trained


def test_profile_takes_dotted_model_keys(capsys: pytest.CaptureFixture[str]) -> None:
    assert mmn_profile.main(["--dataset", "imigue", "model.depth=2", "--print-config"]) == 0
    captured = capsys.readouterr()
    model = yaml.safe_load(captured.out)["model"]
    assert (model["depth"], model["num_joints"], model["num_classes"]) == (2, 22, 32)
    assert captured.err == ""


def test_profile_still_takes_bare_fields_with_a_warning(capsys: pytest.CaptureFixture[str]) -> None:
    assert mmn_profile.main(["msm=graph", "--print-config"]) == 0
    captured = capsys.readouterr()
    assert yaml.safe_load(captured.out)["model"]["msm"] == "graph"
    assert captured.err == "warning: msm=graph is deprecated; write model.msm=graph\n"


def test_profile_refuses_keys_of_other_sections(capsys: pytest.CaptureFixture[str]) -> None:
    assert mmn_profile.main(["train.lr=0.1"]) == 2
    assert capsys.readouterr().err == ("error: train.lr: mmn.profile measures the model alone and takes model.* "
                                       "keys only, e.g. model.depth=2\n")


@pytest.mark.parametrize("command", list(MAINS))
def test_every_command_has_version_and_examples(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        MAINS[command](["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out == VERSION + "\n"
    with pytest.raises(SystemExit) as exit_:
        MAINS[command](["--help"])
    assert exit_.value.code == 0 and "examples:\n" in capsys.readouterr().out


# One interpreter answers every case in turn: none of them may load torch or Ray, so a case that does is caught
# right after it (and a fresh interpreter per case would only cost a second each).
LEAN_HELP = """
import contextlib, importlib, io, sys
for module, argv in {cases!r}:
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            importlib.import_module(module).main(argv)
        except SystemExit as exit_:
            assert exit_.code == 0, (module, argv, exit_.code)
    heavy = sorted(name for name in ("torch", "ray") if name in sys.modules)
    print(module, *argv, "loaded:", ",".join(heavy) or "neither")
"""
LEAN_CASES = [
    ("ablations.run", ["--help"]),
    ("analysis.report", ["--help"]),
    ("mmn.data.__main__", ["--help"]),
    ("ablations.evaluate", ["--help"]),
    ("ablations.cli", ["--help"]),
    ("ablations.cli", ["--version"]),
    ("ablations.cli", ["run", "--help"]),
    ("ablations.cli", ["report", "--help"]),
    ("ablations.cli", ["data", "--help"]),
    ("ablations.cli", ["evaluate", "--help"]),
    ("ablations.cli", ["train", "--help"]),
    ("ablations.cli", ["train", "--version"]),
    ("ablations.cli", ["profile", "--help"]),
]


def test_help_loads_neither_ray_nor_torch() -> None:
    done = subprocess.run([sys.executable, "-c", LEAN_HELP.format(cases=LEAN_CASES)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == len(LEAN_CASES) and all(line.endswith("loaded: neither") for line in lines), lines


def _console(*args: str) -> subprocess.CompletedProcess[str]:
    script = shutil.which("mmn-ablate")
    assert script, "the console script is missing: pip install -e ."
    return subprocess.run([script, *args], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_console_script_runs_its_subcommands() -> None:
    assert _console("--version").stdout == VERSION + "\n"
    listed = _console("run", "--list")
    assert listed.returncode == 0 and "msm_mtm" in listed.stdout
    wrong = _console("rn", "--list")
    assert wrong.returncode == 2
    assert wrong.stderr.splitlines()[-1] == ("error: unknown command 'rn' (did you mean run?); choose one of run, "
                                             "report, evaluate, train, profile, data")


def test_console_script_forwards_arguments_and_exit_status(capsys: pytest.CaptureFixture[str]) -> None:
    # in-process: the same main(argv) as python -m mmn.profile, with its exit status
    assert cli.main(["profile", "model.msn=graph"]) == 2
    assert capsys.readouterr().err == BAD_KEY
    assert cli.main(["train", "--print-config", "budget=quick", "train.epochs=7"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["train"]["epochs"] == 7


@pytest.mark.parametrize(("module", "heavy"), [("mmn.train", "torch"), ("mmn.profile", "torch"),
                                             ("analysis.report", "pandas"), ("analysis", "pandas")])
def test_python_m_help_answers_before_heavy_imports(module: str, heavy: str) -> None:
    # run as scripts these modules import torch or pandas at the top; --help must answer before that line
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", module, "--help"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "examples:\n" in done.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if "|" in line}
    assert "mmn.cli" in imported and heavy not in imported
