"""One driver per experiment folder, and experiment names that stay inside --storage: each checked before anything is
written (issue 16, items 1 and 2)."""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest

from ablations import run as ablations_run
from ablations import runner
from ablations.lock import ExperimentLocked, driver_lock
from ablations.runner import RunOptions
from ablations.spec import load_spec
from ablations.storage import Location, StorageError, check_experiment_name, locate
from mmn.folders import DRIVER_LOCK

ROOT = Path(__file__).resolve().parents[1]

BAD_NAMES = ["../x", "../../escape", "a/b", "/abs/path", "..", ".", "", ".hidden", "a..b", "a\\b", "a\0b",
             "C:x", "a b", "~x", "s3://bucket/x", "a/../b"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_name_that_could_leave_storage_is_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="not a valid experiment name"):
        locate(str(tmp_path / "runs"), name)
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("name", ["msm_mtm", "run-2.v1", "A1", "_x", "x.y_z-1"])
def test_plain_names_are_kept(name: str, tmp_path: Path) -> None:
    check_experiment_name(name)
    assert locate(str(tmp_path), name).path == str(tmp_path.resolve() / name)


@pytest.mark.parametrize("name", ["../x", "a/b", "/abs/x", "..", ".", "", "a\\b"])
def test_the_cli_refuses_a_bad_name_in_one_line(name: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    storage = tmp_path / "a" / "b"
    code = ablations_run.main(["msm_mtm", "--storage", str(storage), "--name", name])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.count("\n") == 0 and "--name" in err and "not a valid experiment name" in err
    assert not any(tmp_path.rglob("*")), "nothing may be written anywhere"



# One driver per experiment folder (issue 16, item 1): the lock, its takeover, and a spec that changed.

def _spec(folder: Path, name: str = "locked", factor: str = "model.depth: [1, 2]") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(f"name: {name}\nfactors:\n  {factor}\nseeds: 1\n")
    return path


def _hold(experiment: Path, pid: int, host: str | None = None) -> dict:
    experiment.mkdir(parents=True, exist_ok=True)
    holder = {"host": host or socket.gethostname(), "pid": pid, "started": "2026-12-04T10:00:00+00:00",
              "token": "t", "lease_until": 0}
    (experiment / DRIVER_LOCK).write_text(json.dumps(holder))
    return holder


def test_a_second_driver_stops_in_one_line_naming_the_holder(tmp_path: Path) -> None:
    # A real driver process meets the lock the test holds (its own, live PID): exit 2 before Ray or any file.
    experiment = tmp_path / "runs" / "locked"
    _hold(experiment, os.getpid())
    done = subprocess.run([sys.executable, "-m", "ablations.run", str(_spec(tmp_path)), "--storage",
                           str(tmp_path / "runs")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (f"error: {experiment} is being run by another driver (PID {os.getpid()} on "
                                   f"{socket.gethostname()} since 2026-12-04T10:00:00+00:00): wait for it, or stop "
                                   f"it, or run under another --name")
    assert sorted(p.name for p in experiment.iterdir()) == [DRIVER_LOCK]  # nothing else written


def test_another_hosts_lock_says_how_to_free_it_by_hand(tmp_path: Path, capsys) -> None:
    experiment = tmp_path / "runs" / "locked"
    _hold(experiment, 1, host="node-7")
    assert ablations_run.main([str(_spec(tmp_path)), "--storage", str(tmp_path / "runs")]) == 2
    assert f"if that driver is gone (its machine is down), delete {experiment / DRIVER_LOCK}" in capsys.readouterr().err


def test_a_dead_drivers_lock_is_taken_over_and_released(tmp_path: Path, caplog) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # its PID is free now: the lock's holder is gone
    experiment = tmp_path / "runs" / "locked"
    _hold(experiment, gone.pid)
    location = locate(str(tmp_path / "runs"), "locked")
    with caplog.at_level(logging.WARNING, logger="ablations"), driver_lock(location):
        held = json.loads((experiment / DRIVER_LOCK).read_text())
        assert (held["pid"], held["host"]) == (os.getpid(), socket.gethostname())
        with pytest.raises(ExperimentLocked):  # the same folder twice: the second refuses while the first runs
            with driver_lock(location):
                pass
    assert f"taking over the lock of a driver that is gone (PID {gone.pid} on" in caplog.text
    assert not (experiment / DRIVER_LOCK).exists()  # released on leaving, as on an error


def test_a_torn_lock_file_is_stale(tmp_path: Path) -> None:
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / DRIVER_LOCK).write_text('{"host": "x", "pi')  # a driver killed while writing it
    with driver_lock(locate(str(tmp_path), "exp")):
        assert json.loads((tmp_path / "exp" / DRIVER_LOCK).read_text())["pid"] == os.getpid()


def test_an_object_store_lease_refuses_until_it_expires(tmp_path: Path) -> None:
    # Any pyarrow filesystem but the local one takes the lease path (an s3:// bucket in practice).
    fs = pafs.SubTreeFileSystem(str(tmp_path), pafs.LocalFileSystem())
    fs.create_dir("exp")
    experiment = Location(fs, "exp", "mock://bucket/exp")
    lease = {"host": "node-7", "pid": 1, "started": "2026-12-04T10:00:00+00:00", "token": "t"}
    (tmp_path / "exp" / DRIVER_LOCK).write_text(json.dumps({**lease, "lease_until": time.time() + 60}))
    with pytest.raises(ExperimentLocked, match="PID 1 on node-7"):
        with driver_lock(experiment):
            pass
    (tmp_path / "exp" / DRIVER_LOCK).write_text(json.dumps({**lease, "lease_until": time.time() - 1}))
    with driver_lock(experiment):
        assert json.loads((tmp_path / "exp" / DRIVER_LOCK).read_text())["pid"] == os.getpid()
    assert not (tmp_path / "exp" / DRIVER_LOCK).exists()


def test_a_name_holding_another_spec_is_refused_unless_forced(tmp_path: Path, capsys) -> None:
    runs = tmp_path / "runs"
    first = load_spec(_spec(tmp_path))
    experiment = locate(str(runs), "locked")
    runner._record_experiment(experiment, first, RunOptions(storage=str(runs)), "locked", {})
    (tmp_path / "other").mkdir()
    changed = _spec(tmp_path / "other", factor="model.mtm: [true, false]")
    assert ablations_run.main([str(changed), "--storage", str(runs)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "holds another experiment" in err and "(factors, reference differ)" in err
    assert "--force-spec" in err and not (runs / "locked" / DRIVER_LOCK).exists()
    # More seeds or another budget is the same experiment; --force-spec replaces the record explicitly.
    more_seeds = tmp_path / "more_seeds.yaml"
    more_seeds.write_text("name: locked\nfactors:\n  model.depth: [1, 2]\nseeds: 3\n")
    runner._check_same_experiment(experiment, runner._previous_record(experiment), load_spec(more_seeds), False)
    runner._check_same_experiment(experiment, runner._previous_record(experiment), load_spec(changed), True)


def test_a_spec_whose_name_escapes_storage_is_refused(tmp_path: Path, capsys) -> None:
    spec = tmp_path / "escape.yaml"
    spec.write_text("name: ../../escape\nfactors:\n  model.depth: [1, 2]\nseeds: 1\n")
    assert ablations_run.main([str(spec), "--storage", str(tmp_path / "a" / "b")]) == 2
    assert "the spec's name:" in capsys.readouterr().err
    assert not any(tmp_path.rglob("*escape*")) or [p.name for p in tmp_path.rglob("*escape*")] == ["escape.yaml"]
