"""The bad-input catalogue: every kind of bad input, given the way a user gives it (the two command lines), is
refused with exit status 2 and one line saying what is wrong and what to do; never a traceback, never code run.

Also the security checks: data and checkpoints are never unpickled without restriction, and configuration values
are never evaluated as code.

Where the same check exists closer to the code (tests/test_ablations_spec.py, test_data_formats.py, test_train.py,
test_model.py), that test pins the function's exception; here each case goes end to end through
`python -m ablations.run` / `python -m mmn.train` (their `main`, in-process, which is what the module runs; two
cases also as real subprocesses) and pins the exact line on stderr.
"""
from __future__ import annotations

import ast
import json
import pickle
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ablations import run as ablations_run
from ablations.spec import list_specs
from analysis import report as analysis_report
from mmn import train as mmn_train
from mmn.checkpoint import CheckpointMismatch, load_checkpoint
from mmn.folders import RESULT
from mmn.model import from_released
from tests.helpers.fixtures import load_reference
from tests.helpers.malicious import RunsCode

ROOT = Path(__file__).resolve().parents[1]
# Tiny training for the one case that needs a real checkpoint: seconds on a CPU.
TINY_TRAIN = ["budget=quick", "data.synthetic_clips_per_class=2", "model.num_frames=8", "model.embed_dim=16",
              "model.depth=1", "model.num_scales=1", "train.epochs=1", "train.warmup_epochs=0",
              "train.batch_size=16", "train.threads=1"]


def _one_line(captured) -> str:
    """The error line on stderr, checked to be the only thing there and no traceback."""
    assert "Traceback" not in captured.err
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    return lines[0]


def ablate(capsys, *args: str) -> tuple[int, str]:
    status = ablations_run.main(list(args))
    return status, _one_line(capsys.readouterr())


def train(capsys, *args: str) -> tuple[int, str]:
    status = mmn_train.main(["--quiet", *args])
    captured = capsys.readouterr()
    # mmn.train announces where it trains before it starts; an error is the line after that
    err = "\n".join(line for line in captured.err.splitlines() if not line.startswith("training "))
    return status, _one_line(type(captured)(captured.out, err))


def spec_file(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(textwrap.dedent(body))
    return path


# --- experiments and specs ---------------------------------------------------------------------------------------

def test_unknown_experiment(capsys):
    names = ", ".join(name for name, _ in list_specs())
    assert ablate(capsys, "msm_mtmm", "--dry-run") == (2, (
        f"error: unknown experiment 'msm_mtmm': did you mean msm_mtm? choose one of {names} (or pass a path to a "
        f"spec .yaml; `--list` describes them)"))


def test_spec_yaml_syntax_error_names_the_line(capsys, tmp_path):
    path = spec_file(tmp_path, "name: x\nfactors:\n  model.msm: [released\n")
    assert ablate(capsys, str(path), "--dry-run") == (
        2, f"error: {path}:4: YAML syntax error: expected ',' or ']', but got '<stream end>'")


def test_config_file_yaml_syntax_error_names_the_line(capsys, tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("model:\n  msm: [released\n")
    assert train(capsys, "--config", str(path)) == (
        2, f"error: {path}:3: YAML syntax error: expected ',' or ']', but got '<stream end>'")
    path.write_text("- model.msm\n- off\n")
    assert train(capsys, "--config", str(path)) == (
        2, f"error: {path}: expected a mapping of config keys to values, got a list")
    broken = tmp_path / "my.json"
    broken.write_text('{"model": {"msm": }}')
    assert train(capsys, "--config", str(broken)) == (2, f"error: {broken}:1: JSON syntax error: Expecting value")


def test_unknown_key_names_the_nearest_valid_one(capsys, tmp_path):
    path = spec_file(tmp_path, "name: x\nfactors:\n  model.msn: [released]\n")
    assert ablate(capsys, str(path), "--dry-run") == (
        2, f"error: {path}:3: factors: unknown config key 'model.msn' (did you mean model.msm?)")
    assert ablate(capsys, "msm_mtm", "--dry-run", "model.deph=2") == (
        2, "error: unknown config key 'model.deph' (did you mean model.depth?)")
    assert train(capsys, "model.msn=off") == (2, "error: unknown config key 'model.msn' (did you mean model.msm?)")


# The model's slots take a user's registered module too (mmn.model.registry): their errors say how to add one.
REGISTER = (", nor a registered module (none is registered): for your own, import the file that registers it "
            "(--import FILE, or the spec's `imports:`)")


@pytest.mark.parametrize(("assignment", "message"), [
    ("model.msm=sideways", "model.msm='sideways' is not one of released, graph, off" + REGISTER),
    ("model.pos_enc=rope", "model.pos_enc='rope' is not one of stpe, learned, sinusoidal, none" + REGISTER),
    ("train.optimizer=lion", "train.optimizer='lion' is not one of adamw, sgd"),
    ("model.depth=two", "model.depth expects an integer, got 'two'"),
    ("model.mtm=maybe", "model.mtm expects true or false (or on/off), got 'maybe'" + REGISTER),
])
def test_wrong_value_for_a_switch(capsys, assignment, message):
    # model.msm and model.mtm are factors of msm_mtm: a bad override is refused even though the variant wins
    assert ablate(capsys, "msm_mtm", "--dry-run", assignment) == (2, f"error: {message}")
    assert train(capsys, assignment) == (2, f"error: {message}")


def test_incompatible_switches(capsys):
    assert ablate(capsys, "msm_mtm", "--dry-run", "model.skeleton_branch=false") == (2, (
        f"error: {ROOT / 'ablations' / 'msm_mtm.yaml'}: variant msm=released,mtm=true (add a rule or an exclude "
        "entry): model.msm modulates the skeleton branch: with skeleton_branch=false set msm=off"))
    status, line = train(capsys, "model.skeleton_branch=false")
    assert (status, line) == (2, "error: model.msm modulates the skeleton branch: with skeleton_branch=false set "
                                 "msm=off")


def test_experiment_folder_of_a_newer_format(capsys, tmp_path):
    folder = tmp_path / "runs" / "msm_mtm"
    folder.mkdir(parents=True)
    (folder / "experiment.json").write_text(json.dumps({"format_version": 99, "name": "msm_mtm"}))
    assert ablate(capsys, "msm_mtm", "--storage", str(tmp_path / "runs")) == (2, (
        f"error: {folder}/experiment.json was written by a newer mmn-ablate (format 99, this one reads 1); "
        "upgrade mmn-ablate or use another --name"))
    assert analysis_report.main([str(folder)]) == 2
    assert _one_line(capsys.readouterr()) == (
        f"error: {folder}/experiment.json was written by a newer mmn-ablate (format 99, this one reads 1); "
        "upgrade mmn-ablate")


# --- data ----------------------------------------------------------------------------------------------------------

def _clip(frames: int = 6, joints: int = 44, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(1, frames, joints, 2)).astype(np.float32)


def write_split(root: Path, split: str, keypoints: list[np.ndarray], labels: list[int]) -> None:
    """MMN's released format: <split>_data.pkl and <split>_label.pkl."""
    root.mkdir(parents=True, exist_ok=True)
    names = [f"{split}{i:04d}" for i in range(len(keypoints))]
    (root / f"{split}_data.pkl").write_bytes(pickle.dumps(
        {"annotations": [{"frame_dir": n, "keypoint": k} for n, k in zip(names, keypoints)]}))
    (root / f"{split}_label.pkl").write_bytes(pickle.dumps(
        [{"file_name": n, "length": k.shape[1], "label": label} for n, k, label in zip(names, keypoints, labels)]))


def good_data(root: Path) -> Path:
    write_split(root, "train", [_clip(seed=i) for i in range(4)], [0, 1, 2, 3])
    write_split(root, "val", [_clip(seed=9)], [0])
    return root


def _truncated(root: Path) -> str:
    good_data(root)
    path = root / "train_data.pkl"
    path.write_bytes(path.read_bytes()[:-40])
    return f"{path} is truncated or corrupt: pickle data was truncated"


def _wrong_joints(root: Path) -> str:
    good_data(root)
    write_split(root, "train", [_clip(), _clip(joints=22)], [0, 1])
    return (f"{root}/train_data.pkl: clip 'train0001' has 22 joints, expected 44 for the ma52 layout (is the dataset "
            "option right?)")


def _empty_split(root: Path) -> str:
    good_data(root)
    write_split(root, "val", [], [])
    return f"{root}: the val split has no clips"


def _label_out_of_range(root: Path) -> str:
    good_data(root)
    write_split(root, "train", [_clip(), _clip()], [3, 52])
    return f"{root}/train_data.pkl: clip 'train0001' has label 52, expected an integer in [0, 52)"


def _runs_code(root: Path) -> str:
    good_data(root)
    (root / "train_data.pkl").write_bytes(pickle.dumps({"annotations": [RunsCode(root.parent / "pwned")]}))
    return (f"{root}/train_data.pkl: refusing to load global posix.system: data pickles may hold only numpy arrays "
            "and builtin containers, and nothing from this file was executed")


BAD_DATA = {"truncated pickle": _truncated, "wrong joint count": _wrong_joints, "empty split": _empty_split,
            "label out of range": _label_out_of_range, "pickle that runs code": _runs_code}


def test_missing_data_folder(capsys, tmp_path):
    assert ablate(capsys, "msm_mtm", "--data-root", "/nonexistent", "--storage", str(tmp_path / "runs")) == (
        2, "error: data folder /nonexistent does not exist; pass --data-root with the folder holding ma52's files")
    assert train(capsys, "data.root=/nonexistent") == (
        2, "error: data folder /nonexistent does not exist; set data.root=FOLDER to the folder that holds ma52's "
           "files (or leave it out to train on the built-in synthetic set)")


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_files_stop_the_experiment_before_any_trial(capsys, tmp_path, case):
    """Checked once by the driver: one line and exit 2, not every trial failing on every retry."""
    root = tmp_path / "data"
    message = BAD_DATA[case](root)
    assert ablate(capsys, "msm_mtm", "--data-root", str(root), "--storage", str(tmp_path / "runs")) == (
        2, f"error: {message}")
    assert not (tmp_path / "pwned").exists()
    assert not list((tmp_path / "runs").rglob(RESULT))


@pytest.mark.parametrize("case", ["truncated pickle", "pickle that runs code"])
def test_bad_data_files_stop_a_training_run(capsys, tmp_path, case):
    root = tmp_path / "data"
    message = BAD_DATA[case](root)
    assert train(capsys, f"data.root={root}", "--out", str(tmp_path / "out")) == (2, f"error: {message}")
    assert not (tmp_path / "pwned").exists()


def test_good_data_folder_is_accepted_by_the_check(tmp_path):
    """The driver's data check passes valid files (the cases above fail for their defect, not for the check)."""
    from ablations.runner import _prepare_data
    from ablations.expand import build_config
    from ablations.runner import TrialPlan

    config = build_config("quick", {"data.root": str(good_data(tmp_path / "data"))}, "test")
    _prepare_data(TrialPlan("k", {}, "k", 1, {}, config, config.hash()))


# --- checkpoints -----------------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_checkpoint_of_another_variant(capsys, tmp_path):
    out = tmp_path / "out"
    assert mmn_train.main(["--quiet", "--out", str(out), *TINY_TRAIN]) == 0
    capsys.readouterr()
    assert train(capsys, "--out", str(out), *TINY_TRAIN, "model.msm=off") == (2, (
        f"error: {out}/checkpoint.pt was written for another configuration (model.msm: 'released' → 'off'); use "
        "another checkpoint folder or the matching config"))


def test_checkpoint_that_runs_code_is_refused_without_running_it(capsys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    torch.save({"format_version": 1, "model": RunsCode(tmp_path / "pwned")}, out / "checkpoint.pt")
    with pytest.raises(CheckpointMismatch, match=r"checkpoint.pt is not a readable MMN checkpoint \(UnpicklingError"):
        load_checkpoint(out, {}, "0")
    status, line = train(capsys, "--out", str(out), *TINY_TRAIN)
    assert status == 2 and line.startswith(f"error: {out}/checkpoint.pt is not a readable MMN checkpoint "
                                           "(UnpicklingError: ") and line.endswith("; delete it to start over")
    assert not (tmp_path / "pwned").exists()


@pytest.fixture(scope="module")
def released_state_dict() -> dict[str, torch.Tensor]:
    return load_reference()["state_dict"]


def test_released_checkpoint_of_another_shape(released_state_dict, tmp_path):
    path = tmp_path / "best.pth"
    torch.save({"state_dict": released_state_dict}, path)
    with pytest.raises(ValueError, match=r"^released tensor STPE has shape \(96, 44\) but the model built from this "
                                         r"config expects \(96, 22\) for pos_enc.table$"):
        from_released(path, num_joints=22)
    with pytest.raises(ValueError, match=r"^released checkpoint has tensors this model does not: "
                                         r"MFM.0.blocks.2.gconv, .* \.\.\.$"):
        from_released(path, depth=2)


def test_released_checkpoint_that_runs_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": RunsCode(tmp_path / "pwned")}, path)
    with pytest.raises(ValueError, match=r"evil\.pth: the checkpoint holds objects other than tensors") as error:
        from_released(path)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "pwned").exists()


def test_truncated_released_checkpoint_is_one_line(tmp_path):
    whole = tmp_path / "whole.pth"
    torch.save({"head.weight": torch.zeros(52, 96)}, whole)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(whole.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"cut\.pth: not a readable PyTorch checkpoint") as error:
        from_released(cut)
    assert "\n" not in str(error.value)


# --- the same, as real processes -------------------------------------------------------------------------------------

def _process(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)


@pytest.mark.slow
def test_command_lines_refuse_bad_data_with_one_line(tmp_path):
    root = tmp_path / "data"
    message = _runs_code(root)
    done = _process("ablations.run", "msm_mtm", "--data-root", str(root), "--storage", str(tmp_path / "runs"))
    assert (done.returncode, done.stderr) == (2, f"error: {message}\n")
    message = _truncated(root)
    done = _process("mmn.train", "--quiet", f"data.root={root}", "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == f"error: {message}"
    assert not (tmp_path / "pwned").exists()


# --- security: nothing untrusted is unpickled or evaluated -----------------------------------------------------------

SOURCE_DIRS = ("mmn", "ablations", "analysis", "search_spaces", "benchmarks")


def _python_files(*dirs: str) -> list[Path]:
    return sorted(p for d in dirs for p in (ROOT / d).rglob("*.py"))


def _calls(path: Path):
    """(dotted name of the called function, call node) of every call in a file."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Call):
            yield ast.unparse(node.func), node


def _keyword(call: ast.Call, name: str):
    for keyword in call.keywords:
        if keyword.arg == name:
            return keyword.value
    return None


def test_every_torch_load_is_weights_only():
    seen = 0
    for path in _python_files(*SOURCE_DIRS, "tests"):
        for name, call in _calls(path):
            if name == "torch.load":
                seen += 1
                flag = _keyword(call, "weights_only")
                assert isinstance(flag, ast.Constant) and flag.value is True, \
                    f"{path.relative_to(ROOT)}:{call.lineno}: torch.load without weights_only=True"
    assert seen >= 3  # checkpoint.py, released.py and tests: the scan sees them


# `python -m mmn.data synth` reads back the label files it has just written with plain pickle.load: its own
# output, but the one unrestricted unpickling left in the code (mmn.data.load_pickle would do). Pinned below.
def _unpickling_problems() -> list[str]:
    unsafe = {"pickle.load", "pickle.loads", "pickle.Unpickler", "cloudpickle.load", "cloudpickle.loads",
              "dill.load", "dill.loads", "joblib.load", "pd.read_pickle", "pandas.read_pickle", "marshal.loads",
              "shelve.open", "yaml.unsafe_load", "yaml.full_load"}
    allowed = ROOT / "mmn" / "data" / "safe_pickle.py"
    problems = []
    for path in _python_files(*SOURCE_DIRS):
        for name, call in _calls(path):
            where = f"{path.relative_to(ROOT)}:{call.lineno}"
            if name in unsafe and path != allowed:
                problems.append(f"{path.relative_to(ROOT)}: {name}")
            if name in ("np.load", "numpy.load"):
                flag = _keyword(call, "allow_pickle")
                if not (isinstance(flag, ast.Constant) and flag.value is False):
                    problems.append(f"{where}: np.load without allow_pickle=False")
            if name == "yaml.load":
                loader = _keyword(call, "Loader")
                if loader is None or ast.unparse(loader) not in ("yaml.SafeLoader", "SafeLineLoader"):
                    problems.append(f"{where}: yaml.load with a loader that is not safe")
        text = path.read_text()
        if path != allowed and re.search(r"^\s*from (c?pickle|dill|cloudpickle) import .*\bloads?\b", text, re.M):
            problems.append(f"{path.relative_to(ROOT)}: imports an unpickling function")
    return problems


def test_nothing_unpickles_outside_the_restricted_unpickler():
    problems = _unpickling_problems()
    assert not problems, problems
    from mmn.yamlfile import SafeLineLoader
    assert issubclass(SafeLineLoader, yaml.SafeLoader)


def test_no_eval_or_exec_in_the_code():
    problems = [f"{path.relative_to(ROOT)}:{call.lineno}: {name}(...)"
                for path in _python_files(*SOURCE_DIRS) for name, call in _calls(path)
                if name in ("eval", "exec", "compile", "__import__", "builtins.eval", "builtins.exec")]
    assert not problems, problems


def test_config_values_are_never_evaluated(capsys, tmp_path):
    marker = tmp_path / "X"
    code = f"__import__('os').system('touch {marker}')"
    assert ablate(capsys, "msm_mtm", "--dry-run", f"model.msm={code}") == (
        2, f"error: model.msm=\"{code}\" is not one of released, graph, off")
    assert train(capsys, f"model.msm={code}") == (2, f"error: model.msm=\"{code}\" is not one of released, graph, off")
    assert train(capsys, f"train.lr={code}") == (2, f"error: train.lr expects a number, got \"{code}\"")
    assert not marker.exists()


def test_yaml_tags_that_would_run_code_are_refused(capsys, tmp_path):
    marker = tmp_path / "X"
    tag = f"!!python/object/apply:os.system ['touch {marker}']"
    spec = spec_file(tmp_path, f"name: x\nfactors:\n  model.msm: [{tag}]\n")
    assert ablate(capsys, str(spec), "--dry-run") == (2, (
        f"error: {spec}:3: YAML syntax error: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object/apply:os.system'"))
    config = tmp_path / "my.yaml"
    config.write_text(f"model:\n  msm: {tag}\n")
    assert train(capsys, "--config", str(config)) == (2, (
        f"error: {config}:2: YAML syntax error: could not determine a constructor for the tag "
        "'tag:yaml.org,2002:python/object/apply:os.system'"))
    assert not marker.exists()


def _deployment_files() -> list[Path]:
    files = [p for p in ROOT.glob("*.y*ml")] + [p for p in (ROOT / "deploy").rglob("*") if p.is_file()]
    files += [p for p in (ROOT / "ablations").glob("*.yaml")] + [p for p in (ROOT / "search_spaces").glob("*.yaml")]
    return files + _python_files(*SOURCE_DIRS) + [ROOT / ".ci" / "run"]


def test_ray_token_auth_is_never_turned_off():
    """Ray 2.5x+ authenticates clients of a cluster with a token by default; nothing here opts out."""
    for path in _deployment_files():
        assert not re.search(r"RAY_AUTH_MODE\W+disabled", path.read_text(errors="replace")), path


def test_no_credentials_in_cluster_files():
    secret = re.compile(r"AKIA[0-9A-Z]{16}|-----BEGIN [A-Z ]*PRIVATE KEY-----|"
                        r"(aws_secret_access_key|aws_session_token|secret_key|password|api_key|auth_token)"
                        r"\s*[:=]\s*['\"]?[A-Za-z0-9/+=_\-]{8,}", re.I)
    problems = [f"{path.relative_to(ROOT)}: {match.group(0)[:30]}..." for path in _deployment_files()
                for match in [secret.search(path.read_text(errors="replace"))] if match]
    assert not problems, problems
