"""Logging integrations and the driver's console: TensorBoard event files in every trial folder, W&B (offline) and
MLflow (a local SQLite store) runs through --log, one line per ended trial with an ETA, a failed trial's error and
last output lines, no repeated Ray warnings, and tqdm's bar in a training run on a terminal."""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import sys
import textwrap
from pathlib import Path

import pytest

from ablations import run as ablations_run
from ablations.console import LOG, console
from ablations.progress import TrialProgress, duration
from ablations.runner import RunOptions, run_experiment
from ablations.spec import load_spec
from mmn.folders import RESULT
from mmn.train import _Progress
from tests.helpers.events import scalars

SMALL = {"model.embed_dim": 16, "model.depth": 1, "model.num_scales": 1, "data.synthetic_clips_per_class": 1,
         "model.num_frames": 8, "train.batch_size": 8}
SNAPSHOT_LOGGER = "ray.tune.execution.experiment_state"  # where Ray warns of snapshots in quick succession


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int = logging.DEBUG) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]


@pytest.fixture(scope="module")
def tracked(ray_session, tmp_path_factory):
    """One tiny experiment logged to W&B (offline) and MLflow (a SQLite file): a trial that finishes after two
    epochs and one that fails at its start (a batch larger than the training set); what the driver logged."""
    tmp = tmp_path_factory.mktemp("trackers")  # not the project's name, which the W&B test finds in its files
    spec = tmp / "spec.yaml"
    spec.write_text(textwrap.dedent("""\
        name: tracked
        factors:
          train.batch_size: [8, 4096]
        seeds: 1
        """))
    overrides = {key: value for key, value in SMALL.items() if key != "train.batch_size"}
    handler, snapshots = _Records(), _Records()
    environment = {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp / "wandb"), "WANDB_SILENT": "true",
                   "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}"}
    (tmp / "wandb").mkdir()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        before = dict(os.environ)
        LOG.addHandler(handler)
        logging.getLogger(SNAPSHOT_LOGGER).addHandler(snapshots)
        try:
            with console(logging.INFO), contextlib.redirect_stdout(io.StringIO()) as printed:
                outcome = run_experiment(load_spec(spec), RunOptions(
                    storage=str(tmp / "runs"), epochs=2, overrides=overrides, max_failures=0,
                    log=("wandb", "mlflow")))
        finally:
            LOG.removeHandler(handler)
            logging.getLogger(SNAPSHOT_LOGGER).removeHandler(snapshots)
        after = dict(os.environ)
    return {"tmp": tmp, "outcome": outcome, "log": handler, "snapshots": snapshots, "before": before,
            "after": after, "printed": printed.getvalue()}


def _finished_folder(tracked) -> Path:
    (record,) = tracked["outcome"].finished
    return Path(record["_dir"])


@pytest.mark.ray
@pytest.mark.slow
def test_every_trial_folder_has_tensorboard_scalars_beside_our_record(tracked):
    assert (len(tracked["outcome"].finished), len(tracked["outcome"].failed)) == (1, 1)
    folder = _finished_folder(tracked)
    (events,) = folder.glob("events.out.tfevents.*")
    logged = scalars(events)
    assert [step for step, _ in logged["ray/tune/val_top1"]] == [1, 2]
    history = [json.loads(line) for line in (folder / "history.jsonl").read_text().splitlines()]
    assert [value for _, value in logged["ray/tune/val_top1"]] == pytest.approx([r["val_top1"] for r in history])
    # Tune's own JSON logger writes its result.json; our record keeps its own name and content.
    assert json.loads((folder / RESULT).read_text())["status"] == "finished"
    assert RESULT != "result.json" and (folder / "result.json").exists()


def _wandb_history(path: Path, key: str) -> list[float]:
    """The values logged under `key` in an offline W&B run file: each history item is a protobuf message (field 2
    the key, field 16 its JSON value). wandb ships no Python reader of these files, so the bytes are matched."""
    pattern = re.compile(rb"\x12" + bytes([len(key)]) + re.escape(key.encode()) + rb"\x82\x01(.)", re.DOTALL)
    data = path.read_bytes()
    return [float(data[m.end():m.end() + m.group(1)[0]]) for m in pattern.finditer(data)]


@pytest.mark.ray
@pytest.mark.slow
def test_wandb_offline_records_a_run_per_trial_in_the_experiment_project(tracked):
    runs = {}
    for path in (tracked["tmp"] / "wandb" / "wandb").glob("offline-run-*/*.wandb"):
        data = path.read_bytes()
        (name,) = set(re.findall(rb"batch_size=\d+,seed=1", data))  # the trial's name is the run's
        assert b"tracked" in data and re.search(rb"grid-\d{8}-\d{6}", data)  # the project, the group
        runs[name.decode()] = _wandb_history(path, "val_top1")
    history = [json.loads(line) for line in (_finished_folder(tracked) / "history.jsonl").read_text().splitlines()]
    # each epoch's value, in the run's history and its summary; none for the trial that failed before its first
    assert sorted(runs) == ["batch_size=4096,seed=1", "batch_size=8,seed=1"] and runs["batch_size=4096,seed=1"] == []
    logged = runs["batch_size=8,seed=1"]
    assert len(logged) >= len(history) and set(logged) == {r["val_top1"] for r in history}


@pytest.mark.ray
@pytest.mark.slow
def test_mlflow_records_a_run_per_trial_with_each_epochs_metric(tracked):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tracked['tmp'] / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(run.info.status for run in runs) == ["FAILED", "FINISHED"]
    (finished,) = [run for run in runs if run.info.status == "FINISHED"]
    history = client.get_metric_history(finished.info.run_id, "val_top1")
    assert sorted(metric.step for metric in history) == [1, 2]
    assert finished.data.tags["invocation"].startswith("grid-")


@pytest.mark.ray
@pytest.mark.slow
def test_console_counts_trials_says_why_one_failed_and_repeats_no_warning(tracked):
    messages = tracked["log"].messages()
    (done,) = [m for m in messages if " finished in " in m]
    (failed,) = [m for m in tracked["log"].messages(logging.WARNING)]
    assert re.fullmatch(r"trial \S*batch_size=8\S* finished in \d+s: val_top1 [\d.]+; [12]/2 done.*", done), done
    assert re.match(r"trial \S*batch_size=4096\S* failed after \d+s: .*ConfigError: train\.batch_size=4096 "
                    r"exceeds the \d+ training clips; [12]/2 done \(1 failed\)", failed), failed
    assert any(re.search(r"1/2 done(?: \(1 failed\))?, about \d+s left", m) for m in messages), messages
    assert tracked["snapshots"].messages(logging.WARNING) == []  # Ray's "snapshotting triggered multiple times"
    # Tune's own console output (its experiment box, a TensorBoard hint into Ray's temp folder) is off without -v.
    assert "Configuration for experiment" not in tracked["printed"], tracked["printed"]
    assert "tensorboard --logdir" not in tracked["printed"], tracked["printed"]
    # What the run set in the environment (Ray's snapshot warning threshold, usage stats) is gone again.
    assert tracked["after"] == tracked["before"]


@pytest.mark.ray
def test_a_failed_trials_last_output_lines_reach_the_driver(ray_session, tmp_path, caplog):
    """Through Tune itself: the trial prints, then raises; its output went to files on the worker, not the
    console, and the driver's line shows the error and the last lines."""
    from ray import tune

    def noisy(config):
        for line in range(15):
            print(f"line {line}")
        print("about to fail", file=sys.stderr)
        raise RuntimeError("the data went away")

    tuner = tune.Tuner(noisy, run_config=tune.RunConfig(
        storage_path=str(tmp_path), name="noisy", callbacks=[TrialProgress(1, "val_top1")], log_to_file=True,
        verbose=0, failure_config=tune.FailureConfig(max_failures=0)))
    with caplog.at_level(logging.INFO, logger="ablations"):
        tuner.fit()
    failed, output = [r.getMessage() for r in caplog.records if r.name == "ablations"]
    assert re.fullmatch(r"trial \S+ failed after \d+s: RuntimeError: the data went away; 1/1 done \(1 failed\)",
                        failed), failed
    lines = output.splitlines()
    assert re.fullmatch(r"trial \S+ failed; its output ended with", lines[0]), lines[0]
    assert lines[1].startswith("  last lines of ") and lines[1].endswith("stdout:")
    assert lines[2:12] == [f"  | line {n}" for n in range(5, 15)]  # the last ten
    assert lines[12].endswith("stderr:") and lines[13] == "  | about to fail"


def test_a_missing_tracker_package_is_one_line_and_exit_2(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    status = ablations_run.main(["msm_mtm", "--log", "wandb", "--storage", str(tmp_path / "runs")])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.err == "error: --log wandb needs the wandb package: pip install 'mmn-ablate[wandb]'\n"
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_quiet_and_verbose_choose_what_the_console_shows(capsys):
    for level, shown in ((logging.WARNING, ["[ablations] a warning"]),
                         (logging.INFO, ["[ablations] a status line", "[ablations] a warning"]),
                         (logging.DEBUG, ["[ablations] detail", "[ablations] a status line", "[ablations] a warning"])):
        with console(level):
            LOG.debug("detail")
            LOG.info("a status line")
            LOG.warning("a warning")
        assert capsys.readouterr().err.splitlines() == shown
    assert (LOG.level, LOG.handlers, LOG.propagate) == (logging.NOTSET, [], True)  # left as it was
    parser = ablations_run.build_parser()
    assert parser.parse_args(["x", "-q"]).level == logging.WARNING
    assert parser.parse_args(["x", "-v"]).level == logging.DEBUG
    assert parser.parse_args(["x", "--log", "wandb", "--log", "mlflow"]).log == ["wandb", "mlflow"]


def test_durations_read_at_a_glance():
    assert [duration(s) for s in (4.6, 59, 185, 7620)] == ["5s", "59s", "3m05s", "2h07m"]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_training_run_on_a_terminal_draws_a_tqdm_bar_per_epoch(monkeypatch):
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    progress = _Progress(True, epochs=2)
    for step in range(1, 4):
        progress.step(1, step, 3, loss=2.5 / step)
    assert (progress.bar.n, progress.bar.total, progress.bar.postfix) == (3, 3, "loss=0.833")
    progress.epoch({"epoch": 1, "train_loss": 1.5, "val_top1": 12.0, "val_top5": 40.0, "lr": 0.1, "time_s": 2.0})
    output = terminal.getvalue()
    assert re.match(r"\repoch 1/2: +0%\| +\| 0/3 ", output), output  # tqdm draws at most every 0.1 s
    # the bar is wiped, and the epoch's line stays
    assert re.search(r"\r +\repoch 1/2  loss 1\.5000  val top1 12\.00  top5 40\.00  lr 1\.00e-01  2\.0s\n$",
                     output), output
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # not a terminal: the epoch lines only
    progress = _Progress(True, epochs=2)
    progress.step(1, 1, 3, loss=1.0)
    assert sys.stderr.getvalue() == ""
