"""Faults survived, nothing lost: the driver killed mid-sweep, a diverging trial, an unwritable or full results
disk, and an experiment of many small trials; and finished results of other code or data are not mixed with new
ones. Real processes, a real Ray instance, real files.

A trial *worker* killed mid-trial and retried from its checkpoint is tested in tests/test_ablations_run.py.
"""
from __future__ import annotations

import errno
import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
import torch

from ablations import run as ablations_run
from ablations import runner as ablations_runner
from ablations.runner import RunOptions, _latest_checkpoint, _loads, plan_experiment
from ablations.spec import load_spec
from analysis import report as analysis_report
from mmn import atomic as mmn_atomic
from mmn import checkpoint as mmn_checkpoint
from mmn import train as mmn_train
from mmn.config import DataConfig, parse_assignments
from mmn.folders import RESULT
from mmn.provenance import code_fingerprint, data_fingerprint, git_state
from tests.helpers.processes import trial_workers
from tests.helpers.records import live_paths

ROOT = Path(__file__).resolve().parents[1]
# The smallest real trials: one scale of one block 16 wide on 8 frames, one clip per class (52 train clips).
SMALL = {"model.embed_dim": 16, "model.depth": 1, "model.num_scales": 1, "data.synthetic_clips_per_class": 1,
         "model.num_frames": 8, "train.batch_size": 8}
SETS = [arg for key, value in SMALL.items() for arg in ("--set", f"{key}={value}")]


def _records(folder: Path) -> list[tuple[Path, dict]]:
    """Every trial record below `folder`, also while a run writes there."""
    found = []
    for path in live_paths(folder, RESULT):
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            continue  # gone since it was listed
        except ValueError:
            continue  # a record torn by a killed write
        if isinstance(record, dict) and "config_hash" in record:
            found.append((path, record))
    return found


def _finished_by_hash(folder: Path) -> dict[str, list[Path]]:
    by_hash: dict[str, list[Path]] = {}
    for path, record in _records(folder):
        if record["status"] == "finished":
            by_hash.setdefault(record["config_hash"], []).append(path)
    return by_hash


def _snapshot(paths) -> dict[Path, tuple[bytes, int]]:
    return {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in paths}


def _planned_hashes(spec_path: Path, epochs: int, seeds=None) -> set[str]:
    options = RunOptions(epochs=epochs, seeds=seeds, overrides=parse_assignments([f"{k}={v}" for k, v in SMALL.items()]))
    return {plan.config_hash for plan in plan_experiment(load_spec(spec_path), options)}


# --- the driver killed -------------------------------------------------------------------------------------------

def _loadable(path: Path) -> bool:
    """Whether a checkpoint is one to resume from (not missing, not torn), as the runner decides it."""
    return path.exists() and _loads(str(path))


def _alive(pid: int) -> bool:
    try:
        return not Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="walks /proc to find Ray's worker processes")
@pytest.mark.ray
def test_driver_killed_mid_sweep_then_resume_finishes_without_repeating(ray_session, tmp_path, capsys):
    spec = tmp_path / "three.yaml"
    spec.write_text("name: three\nfactors:\n  model.msm: [released, graph, 'off']\nseeds: 1\n")
    folder = tmp_path / "runs" / "three"
    command = [sys.executable, "-m", "ablations.run", str(spec), "--storage", str(tmp_path / "runs"), "--epochs", "5",
               "--address", ray_session.get_runtime_context().gcs_address, *SETS]
    before = trial_workers()
    with open(tmp_path / "first.log", "w") as log:
        driver = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        # Kill once a trial has finished while another is mid-flight: it has recorded an epoch and has two or more
        # to go (one in its last epoch completes its record before it reports, and would end finished).
        deadline, statuses = time.time() + 240, []
        while time.time() < deadline and driver.poll() is None:
            records = [record for _, record in _records(folder)]
            statuses = [record["status"] for record in records]
            if "finished" in statuses and any(r["status"] == "running" and r["epochs_completed"] <= 3 for r in records):
                break
            time.sleep(0.05)
        workers = trial_workers() - before
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    assert "finished" in statuses and "running" in statuses, (statuses, (tmp_path / "first.log").read_text()[-3000:])
    assert workers, "no trial process found"

    # The trial actors belong to the shared Ray instance, but Ray kills the actors of a job whose driver died: the
    # trials that were mid-flight stop within moments instead of running on beside the resumed experiment.
    deadline = time.time() + 60
    while time.time() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers), "trial workers outlived their driver"
    # A trial stopped with its driver reads "running", or "failed" where its worker caught the stop.
    mid_flight = {record["config_hash"]: path.parent for path, record in _records(folder)
                  if record["status"] != "finished"}
    assert mid_flight
    had_checkpoint = {config_hash for config_hash, trial in mid_flight.items()
                      if any(_loadable(c / "checkpoint.pt") for c in trial.glob("checkpoint_*"))}
    finished_before = _snapshot(p for paths in _finished_by_hash(folder).values() for p in paths)
    assert finished_before

    # The same command again with --resume (in this process, which is connected to the same Ray instance).
    capsys.readouterr()
    assert ablations_run.main([*command[3:], "--resume"]) == 0
    assert f"{len(finished_before)} of 3 trials already finished" in capsys.readouterr().err
    assert _snapshot(finished_before) == finished_before  # finished trials untouched: not rerun, not rewritten
    finished = _finished_by_hash(folder)
    assert set(finished) == _planned_hashes(spec, epochs=5)
    assert all(len(paths) == 1 for paths in finished.values()), finished  # none duplicated
    for config_hash in had_checkpoint:  # continued from the last checkpoint, not started over
        (path,) = finished[config_hash]
        assert json.loads(path.read_text())["resumed_after_epochs"], path


# --- a diverging trial ---------------------------------------------------------------------------------------------

@pytest.mark.ray
def test_diverging_trial_fails_once_with_its_reason_and_the_others_finish(ray_session, tmp_path, capsys,
                                                                          monkeypatch):
    monkeypatch.setattr(ablations_run, "_report", lambda outcome: None)  # built below, by python -m analysis.report
    spec = tmp_path / "lr.yaml"
    spec.write_text("name: lr\nfactors:\n  train.lr: [0.002, 1.0e+30]\nseeds: 1\n")
    folder = tmp_path / "runs" / "lr"
    status = ablations_run.main([str(spec), "--storage", str(tmp_path / "runs"), "--epochs", "2", *SETS])
    out = capsys.readouterr().out
    assert status == 1
    assert "1 of 2 trials finished" in out
    assert re.search(r"FAILED lr=1e\+30 seed 1: TrainingDiverged: loss became (nan|inf) at epoch 1, step \d+: "
                     r"lower train.lr \(now 1e\+30\)", out), out[-2000:]
    records = {record["variant_key"]: (path, record) for path, record in _records(folder)}
    assert records["lr=0.002"][1]["status"] == "finished"
    path, diverged = records["lr=1e+30"]
    assert diverged["status"] == "failed" and "loss became" in diverged["error"]
    # Not retried: the trial ended normally for Ray (no error file), and only once for Optuna, as a failure.
    assert not list(path.parent.glob("error*.txt"))
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(folder / "study.journal")))
    (summary,) = optuna.get_all_study_summaries(storage)
    trials = optuna.load_study(study_name=summary.study_name, storage=storage).trials
    assert sorted((t.params["train.lr"], t.params["train.seed"], t.state.name) for t in trials) == [
        (0.002, 1, "COMPLETE"), (1e30, 1, "FAIL")]

    assert analysis_report.main([str(folder), "--format", "md"]) == 0
    failed = (folder / "report" / "failed.md").read_text()
    assert "1e+30" in failed and "loss became" in failed


# --- the results disk unwritable or full ---------------------------------------------------------------------------

def test_results_folder_that_cannot_be_written_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "afile"
    blocker.write_text("a regular file where a folder should be")
    status = ablations_run.main(["msm_mtm", "--storage", str(blocker / "runs"), *SETS])
    assert status == 2
    assert capsys.readouterr().err == f"error: cannot write to {blocker}/runs/msm_mtm: not a directory\n"
    assert blocker.read_text() == "a regular file where a folder should be"


class _FullDisk:
    """Stands in for `os` inside mmn.atomic, the one writer of every file: once a checkpoint has been written, every later write gets half
    its bytes out and then fails with ENOSPC, like a disk filling up mid-run."""

    def __init__(self) -> None:
        self.full = False

    def __getattr__(self, name):
        return getattr(os, name)

    def fdopen(self, fd, mode="r", *args, **kwargs):
        handle = os.fdopen(fd, mode, *args, **kwargs)
        if self.full:
            return _TornFile(handle)
        if "checkpoint.pt" in os.readlink(f"/proc/self/fd/{fd}"):
            self.full = True  # epoch 1's files are all written; from the next one on, the disk is full
        return handle


class _TornFile:
    def __init__(self, handle) -> None:
        self._handle = handle

    def write(self, data):
        self._handle.write(data[:len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._handle.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/fd")
@pytest.mark.slow
def test_disk_full_mid_training_keeps_the_last_complete_epoch(tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    args = ["--quiet", "--out", str(out), "budget=quick", "train.epochs=3", "train.warmup_epochs=0",
            "train.threads=1", *[f"{key}={value}" for key, value in SMALL.items()]]
    disk = _FullDisk()
    monkeypatch.setattr(mmn_atomic, "os", disk)
    assert mmn_train.main(args) == 1
    assert capsys.readouterr().err.splitlines()[-1] == f"error: cannot write to {out}: no space left on device"
    assert disk.full
    # Every file is epoch 1's, whole: the torn writes went to temporary files, which are gone.
    result = json.loads((out / RESULT).read_text())
    assert (result["status"], result["epochs_completed"]) == ("running", 1)
    assert [json.loads(line)["epoch"] for line in (out / "history.jsonl").read_text().splitlines()] == [1]
    state = mmn_checkpoint.load_checkpoint(out, result["config"], result["config_hash"])
    assert state["epoch"] == 1
    assert sorted(p.name for p in out.iterdir()) == ["best_val_predictions.npz", "best_weights.pt", "checkpoint.pt",
                                                     "history.jsonl", RESULT]
    # Space again: the same command continues after epoch 1 and finishes.
    monkeypatch.setattr(mmn_atomic, "os", os)
    assert mmn_train.main(args) == 0
    result = json.loads((out / RESULT).read_text())
    assert (result["status"], result["epochs_completed"], result["resumed_after_epochs"]) == ("finished", 3, [1])


@pytest.fixture
def small_disk():
    """A 8 MB tmpfs (needs root and permission to mount; skipped where there is none)."""
    mount = Path(tempfile.mkdtemp(prefix="mmnfull", dir="/tmp"))
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        mount.rmdir()
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)
    shutil.rmtree(mount, ignore_errors=True)


def _fill(disk: Path, leave_kib: int) -> Path:
    """Fill `disk` up to `leave_kib` KiB of free space with one file."""
    filler = disk / "filler"
    free = os.statvfs(disk).f_bavail * os.statvfs(disk).f_frsize
    size = max(0, free - leave_kib * 1024)
    with open(filler, "ab") as handle:
        try:
            handle.write(b"\0" * size)
        except OSError:
            pass
    return filler


@pytest.mark.ray
def test_disk_full_before_and_during_an_experiment(ray_session, small_disk, tmp_path, capsys, monkeypatch):
    # No retries of trials that fail for lack of space and no plots, to keep this quick; the rest as on the command
    # line.
    monkeypatch.setattr(ablations_runner, "RunOptions", functools.partial(RunOptions, max_failures=0))
    monkeypatch.setattr(ablations_run, "_report", lambda outcome: None)
    spec = tmp_path / "seeds.yaml"
    spec.write_text("name: seeds\nfactors:\n  model.mtm: [true]\nseeds: 1\n")
    runs, folder = small_disk / "runs", small_disk / "runs" / "seeds"
    args = [str(spec), "--storage", str(runs), "--epochs", "1", *SETS]
    assert ablations_run.main([*args, "--seeds", "2"]) == 0
    capsys.readouterr()
    kept = _snapshot(p for name in (RESULT, "checkpoint.pt", "history.jsonl")
                     for p in folder.rglob(name))
    assert len(kept) >= 6

    # Full before anything is written: refused with one line.
    filler = _fill(small_disk, 0)
    assert ablations_run.main([*args, "--seeds", "4"]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"error: cannot write to {folder}: no space left on device"
    assert _snapshot(kept) == kept

    # Full during the run: the new trials fail, the command says why, the finished ones are intact.
    filler.unlink()
    _fill(small_disk, 96)
    assert ablations_run.main([*args, "--seeds", "4"]) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines()[-1] == (
        f"error: cannot write to {folder}: no space left on device; finished trials are kept: free space or fix "
        f"permissions, then rerun with --resume")
    assert "2 of 4 trials finished (2 from earlier runs)" in captured.out
    assert captured.out.count("FAILED mtm=true seed") == 2
    assert _snapshot(kept) == kept

    # Space again: --resume finishes the rest and repeats nothing.
    (small_disk / "filler").unlink()
    assert ablations_run.main([*args, "--seeds", "4", "--resume"]) == 0
    assert _snapshot(kept) == kept
    finished = _finished_by_hash(folder)
    assert set(finished) == _planned_hashes(spec, epochs=1, seeds=4)
    assert all(len(paths) == 1 for paths in finished.values())


# --- many small trials ---------------------------------------------------------------------------------------------

LOAD_TRIALS = 10  # benchmarks/load_500.py runs the same with 500; each trial pays a fresh worker's start-up (~3 s)


@pytest.mark.ray
def test_many_small_trials_all_recorded_and_reported(ray_session, tmp_path, capsys):
    spec = tmp_path / "load.yaml"
    spec.write_text("name: load\nfactors:\n  model.mtm: [true]\nseeds: 1\n")
    started = time.perf_counter()
    status = ablations_run.main([str(spec), "--storage", str(tmp_path / "runs"), "--epochs", "1",
                                 "--seeds", str(LOAD_TRIALS), *SETS])
    seconds = time.perf_counter() - started
    out = capsys.readouterr().out
    assert status == 0, out[-3000:]
    folder = tmp_path / "runs" / "load"
    finished = _finished_by_hash(folder)
    assert set(finished) == _planned_hashes(spec, epochs=1, seeds=LOAD_TRIALS)
    assert all(len(paths) == 1 for paths in finished.values())
    assert f"{LOAD_TRIALS} of {LOAD_TRIALS} trials finished" in out
    summary = (folder / "report" / "summary.md").read_text()
    assert f"trials: {LOAD_TRIALS} finished" in summary
    assert (folder / "report" / "table.tex").exists() and not (folder / "report" / "failed.md").exists()
    print(f"{LOAD_TRIALS} trials in {seconds:.1f} s ({seconds / LOAD_TRIALS:.2f} s per trial, report included)")


def test_a_torn_last_record_of_the_optuna_journal_is_cut_before_the_next_run_appends(tmp_path):
    """A run that died mid-append (full disk, SIGKILL) leaves half a line; appending after it would make every
    later read of the journal fail."""
    from ablations.runner import _journal
    from ablations.storage import locate
    from mmn.folders import STUDY

    experiment = locate(str(tmp_path), "exp")
    optuna.create_study(study_name="earlier", storage=_journal(experiment))
    journal = tmp_path / "exp" / STUDY
    whole = journal.read_bytes()
    journal.write_bytes(whole + b'{"op_code": 4, "worker_id": "cut-sh')
    study = optuna.create_study(study_name="next", storage=_journal(experiment))
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    assert journal.read_bytes().startswith(whole)
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(_journal(experiment)))
    assert names == ["earlier", "next"]


# --- results that know their code and data -------------------------------------------------------------------------

@pytest.mark.ray
@pytest.mark.slow
def test_results_of_other_code_or_data_are_refused_then_kept_or_trained_again(ray_session, tmp_path, capsys,
                                                                                monkeypatch):
    monkeypatch.setattr(ablations_run, "_report", lambda outcome: None)
    # The code fingerprint the runner uses, pinned: the package is not edited in a test (and nobody else's edit
    # during the test should count). The data fingerprint is the real one until the data "changes".
    monkeypatch.setattr(ablations_runner, "code_fingerprint", lambda **_: "code-a")
    spec = tmp_path / "fp.yaml"
    spec.write_text("name: fp\nfactors:\n  model.mtm: [true]\nseeds: 1\n")
    folder = tmp_path / "runs" / "fp"
    args = [str(spec), "--storage", str(tmp_path / "runs"), "--epochs", "1", *SETS]
    assert ablations_run.main(args) == 0
    assert ablations_run.main(args) == 0
    assert "1 of 1 trials already finished" in capsys.readouterr().err
    ((first_path, first),) = _records(folder)
    assert first["code_fingerprint"] == "code-a"
    assert first["data_fingerprint"] == data_fingerprint(DataConfig(synthetic_clips_per_class=1))
    kept = _snapshot([first_path])

    # Other code and data: refused with one line, nothing run or written.
    monkeypatch.setattr(ablations_runner, "code_fingerprint", lambda **_: "code-b")
    monkeypatch.setattr(ablations_runner, "data_fingerprint", lambda data: "data-b")
    assert ablations_run.main(args) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"error: 1 of 1 finished trials in {folder} were trained on other code or data than this run's (code "
        f"differs: 1, data differs: 1); pass --rerun-stale to train them again, or --keep-stale to reuse them")
    assert len(_records(folder)) == 1

    # --keep-stale: reused, and experiment.json says so for the report.
    assert ablations_run.main([*args, "--keep-stale"]) == 0
    assert "1 of 1 trials finished (1 from earlier runs, 1 of them of other code or data (--keep-stale))" in \
        capsys.readouterr().out
    assert json.loads((folder / "experiment.json").read_text())["kept_stale"] == 1
    assert len(_records(folder)) == 1 and _snapshot(kept) == kept

    # --rerun-stale: trained again into a new trial folder; the old result stays, superseded.
    assert ablations_run.main([*args, "--rerun-stale"]) == 0
    by_code = {record["code_fingerprint"]: (path, record) for path, record in _records(folder)}
    assert set(by_code) == {"code-a", "code-b"} and _snapshot(kept) == kept
    new_path, new = by_code["code-b"]
    assert new["status"] == "finished" and new["data_fingerprint"] == "data-b" and new_path.parent != first_path.parent
    assert json.loads((folder / "experiment.json").read_text())["kept_stale"] == 0
    capsys.readouterr()
    assert ablations_run.main(args) == 0
    assert "1 of 1 trials already finished" in capsys.readouterr().err

    # A result written before fingerprints were recorded is stale too.
    del new["code_fingerprint"], new["data_fingerprint"]
    new_path.write_text(json.dumps(new))
    assert ablations_run.main(args) == 2
    assert "(not recorded (older results): 1); pass --rerun-stale" in capsys.readouterr().err.splitlines()[-1]


def test_code_fingerprint_follows_the_python_sources_of_the_three_packages(tmp_path):
    for package in ("mmn", "ablations", "search_spaces"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "a.py").write_text("x = 1\n")
    first = code_fingerprint(tmp_path)
    (tmp_path / "mmn" / "notes.yaml").write_text("not code\n")
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_a.py").write_text("assert True\n")
    assert code_fingerprint(tmp_path) == first
    (tmp_path / "search_spaces" / "a.py").write_text("x = 2\n")
    assert code_fingerprint(tmp_path) != first
    assert re.fullmatch(r"[0-9a-f]{16}", code_fingerprint())  # the installed packages'


def test_data_fingerprint_follows_the_files_or_the_generator_settings(tmp_path):
    assert data_fingerprint(DataConfig()) == data_fingerprint(DataConfig())
    assert data_fingerprint(DataConfig()) != data_fingerprint(DataConfig(synthetic_seed=1))
    split = tmp_path / "train_data.pkl"
    split.write_bytes(b"12345")
    real = DataConfig(root=str(tmp_path))
    first = data_fingerprint(real)
    (tmp_path / ".lock").write_text("")  # hidden files are not data
    assert data_fingerprint(real) == first
    os.utime(split, (1e9, 1e9))  # touched, or copied to another node without its times: the same data
    assert data_fingerprint(real) == first
    split.write_bytes(b"12346")  # same size, other bytes
    assert data_fingerprint(real) != first
    second = data_fingerprint(real)
    (tmp_path / "val_data.pkl").write_bytes(b"")  # another file
    assert data_fingerprint(real) != second


def test_git_state_of_a_checkout_and_none_without_git(tmp_path, monkeypatch):
    git = ["git", "-C", str(tmp_path), "-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "a.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "a.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    state = git_state.__wrapped__  # uncached: git_state asks git once per process
    assert state(tmp_path) == {"commit": commit, "dirty": False}
    (tmp_path / "a.py").write_text("x = 2\n")
    assert state(tmp_path) == {"commit": commit, "dirty": True}
    (tmp_path / "sub").mkdir()
    assert state(tmp_path / "sub") is None  # inside a checkout is not a checkout of these packages
    monkeypatch.setenv("PATH", "")
    assert state(tmp_path) is None  # no git at all: no git fields, no failure


def test_a_rerun_continues_from_the_newest_checkpoint_that_loads(tmp_path):
    # Ray copies checkpoints without a rename: a driver killed mid-copy leaves the newest torn (seen under load).
    from ablations.storage import locate

    experiment = locate(str(tmp_path), "exp")
    trial = Path(experiment.path) / "grid" / "trial"
    for name, size in (("checkpoint_000001", None), ("checkpoint_000002", 100)):
        (trial / name).mkdir(parents=True)
        torch.save({"epoch": 1}, trial / name / "checkpoint.pt")
        if size:  # cut short, as a killed copy leaves it
            (trial / name / "checkpoint.pt").write_bytes((trial / name / "checkpoint.pt").read_bytes()[:size])
    assert _latest_checkpoint(experiment, str(trial)) == str(trial / "checkpoint_000001")
    (trial / "state").mkdir()
    torch.save({"epoch": 2}, trial / "state" / "checkpoint.pt")  # the trial's own, written atomically, newest
    assert _latest_checkpoint(experiment, str(trial)) == str(trial / "state")
    # A pack's member: its part of the pack's checkpoint.
    member = trial / "member=a"
    member.mkdir()
    (trial / "checkpoint_000001" / "member=a").mkdir()
    torch.save({"epoch": 1}, trial / "checkpoint_000001" / "member=a" / "checkpoint.pt")
    assert _latest_checkpoint(experiment, str(member)) == str(trial / "checkpoint_000001" / "member=a")
