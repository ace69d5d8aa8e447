"""Ctrl-C and SIGTERM on a real driver process (issue 16, item 5): the trials stop, one line says what was kept and
how to go on, the exit status is the signal's, and a rerun of the same command continues where it stopped."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmn.folders import DRIVER_LOCK, RESULT

pytestmark = [pytest.mark.ray, pytest.mark.slow]  # each test starts a driver with a Ray instance of its own

ROOT = Path(__file__).resolve().parents[1]
TINY = ["data.synthetic_clips_per_class=4", "model.num_frames=16", "train.batch_size=16"]
WHAT_RAY_WOULD_SAY = ("FAILED", "Tuner.restore", "Traceback", "SystemExit", "no trial_result.json")


def _driver(tmp_path: Path) -> list[str]:
    spec = tmp_path / "stopped.yaml"
    spec.write_text("name: stopped\nfactors:\n  model.mtm: [true, false]\nseeds: 1\nmetric: val_top1\n")
    return [sys.executable, "-m", "ablations.run", str(spec), "--storage", str(tmp_path / "runs"), "--epochs", "3",
            "--max-concurrent", "1", "--set", *TINY]


def _start(command: list[str]) -> subprocess.Popen:
    environment = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    environment.pop("RAY_ADDRESS", None)
    # A session of its own, as a terminal's foreground job: Ctrl-C reaches the driver and every process it started.
    return subprocess.Popen(command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def _records(experiment: Path) -> list[dict]:
    records = []
    for path in experiment.glob(f"*/*/{RESULT}"):
        try:
            records.append({**json.loads(path.read_text()), "_dir": path.parent})
        except (OSError, json.JSONDecodeError):
            pass  # being replaced right now
    return records


def _wait_for(condition, driver: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert driver.poll() is None, driver.communicate()[0]
        assert time.monotonic() < deadline, "the driver did not get there in time"
        time.sleep(0.2)


def test_ctrl_c_keeps_finished_trials_and_a_rerun_resumes_the_stopped_one(tmp_path: Path) -> None:
    experiment = tmp_path / "runs" / "stopped"
    driver = _start(_driver(tmp_path))

    def one_finished_one_checkpointed() -> bool:  # the second trial (one at a time) has saved its first epoch
        records = _records(experiment)
        return (any(r["status"] == "finished" for r in records)
                and any(r["status"] == "running" and list(r["_dir"].glob("checkpoint_*")) for r in records))

    _wait_for(one_finished_one_checkpointed, driver)
    os.killpg(driver.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: to the whole foreground group
    output = driver.communicate(timeout=120)[0]
    assert driver.returncode == 130, output
    assert output.rstrip().splitlines()[-1] == ("interrupted: 1 finished trials kept; 1 will resume from their last "
                                                "checkpoint; rerun the same command (or with --resume)")
    assert not any(text in output for text in WHAT_RAY_WOULD_SAY), output
    assert not (experiment / DRIVER_LOCK).exists()
    stopped = next(r for r in _records(experiment) if r["status"] == "running")
    assert stopped["error"] is None and 1 <= stopped["epochs_completed"] < 3  # stopped, not failed

    rerun = subprocess.run(_driver(tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=300,
                           env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"})
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "2 of 2 trials finished (1 from earlier runs)" in rerun.stdout
    resumed = [r for r in _records(experiment) if r["config_hash"] == stopped["config_hash"]
               and r["status"] == "finished"]
    assert len(resumed) == 1 and resumed[0]["resumed_after_epochs"] == [stopped["epochs_completed"]]


def test_sigterm_stops_the_driver_with_143_and_releases_the_lock(tmp_path: Path) -> None:
    # A cluster scheduler or `kill` sends SIGTERM to the driver alone, here before any trial finished.
    experiment = tmp_path / "runs" / "stopped"
    driver = _start(_driver(tmp_path))
    _wait_for(lambda: any(r["status"] == "running" for r in _records(experiment)), driver)
    driver.send_signal(signal.SIGTERM)
    output = driver.communicate(timeout=120)[0]
    assert driver.returncode == 143, output
    assert output.rstrip().splitlines()[-1].startswith("interrupted: 0 finished trials kept; ")
    assert not any(text in output for text in WHAT_RAY_WOULD_SAY), output
    assert not (experiment / DRIVER_LOCK).exists()
