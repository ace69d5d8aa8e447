"""Logging integrations and the driver's console: TensorBoard event files in every trial folder, W&B (offline) and
MLflow (a local SQLite store) runs through --log, one per trial and one per member of a trial pack, one line per ended
trial with an ETA, a failed trial's error and last output lines, no repeated Ray warnings, and tqdm's bar in a
training run on a terminal."""
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
from typing import Any

import pytest

from ablations import run as ablations_run
from ablations.console import LOG, console
from ablations.progress import TrialProgress, duration
from ablations.loggers import tracker_callbacks
from ablations.runner import RunOptions, plan_experiment, run_experiment
from ablations.spec import load_spec
from analysis.collect import load_studies
from ablations.trainable import DIVERGED, TrialContext
from mmn.folders import RESULT
from mmn.train import _Progress
from tests.helpers.events import scalars
from tests.helpers.records import read_history

SMALL = {"model.embed_dim": 16, "model.depth": 1, "model.num_scales": 1, "data.synthetic_clips_per_class": 1,
         "model.num_frames": 8, "train.batch_size": 8}
DIVERGE_IN_EPOCH_2 = {"train.warmup_epochs": 1, "train.warmup_lr": 1e-30, "train.max_steps": 1}  # at train.lr 1e30
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
    """Two tiny experiments logged to W&B (offline) and MLflow (a SQLite file). `tracked`, solo trials: one that
    finishes after two epochs and one that fails at its start (a batch larger than the training set); what the
    driver logged. `packs`, one trial pack of four members (two seeds of two learning rates, --pack 4), three
    epochs of one step: the two with a sane rate finish, the two with an absurd one diverge in epoch 2 (the warmup's
    first step is at 1e-30, its second at the absurd rate: their weights become infinite, their epoch-2 validation
    shows it)."""
    tmp = tmp_path_factory.mktemp("trackers")  # not the project's name, which the W&B test finds in its files
    spec, packs = tmp / "spec.yaml", tmp / "packs.yaml"
    spec.write_text(textwrap.dedent("""\
        name: tracked
        factors:
          train.batch_size: [8, 4096]
        seeds: 1
        """))
    packs.write_text(textwrap.dedent("""\
        name: packs
        factors:
          train.lr: [0.001, 1.0e+30]
        seeds: 2
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
        with contextlib.redirect_stdout(io.StringIO()) as packed_printed:
            packed = run_experiment(load_spec(packs), RunOptions(
                storage=str(tmp / "runs"), epochs=3, overrides={**SMALL, **DIVERGE_IN_EPOCH_2}, max_failures=0,
                log=("wandb", "mlflow"), pack=4))
        after = dict(os.environ)
    return {"tmp": tmp, "outcome": outcome, "packed": packed, "log": handler, "snapshots": snapshots,
            "before": before, "after": after, "printed": printed.getvalue(),
            "packed_printed": packed_printed.getvalue()}


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
    history = read_history(folder)
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


def _wandb_runs(tracked) -> dict[str, tuple[bytes, list[float]]]:
    """Every offline W&B run of the fixture's experiments by its name (a trial key; one in each run's file): its
    file's bytes and the val_top1 values it logged."""
    runs = {}
    for path in (tracked["tmp"] / "wandb" / "wandb").glob("offline-run-*/*.wandb"):
        data = path.read_bytes()
        (name,) = set(re.findall(rb"(?:batch_size|lr)=[\w.+]+,seed=\d", data))  # the trial's name is the run's
        assert name.decode() not in runs, name  # one run per trial
        runs[name.decode()] = (data, _wandb_history(path, "val_top1"))
    return runs


@pytest.mark.ray
@pytest.mark.slow
def test_wandb_offline_records_a_run_per_trial_in_the_experiment_project(tracked):
    runs = {name: run for name, run in _wandb_runs(tracked).items() if name.startswith("batch_size=")}
    for data, _ in runs.values():
        assert b"tracked" in data and re.search(rb"grid-\d{8}-\d{6}", data)  # the project, the group
    history = read_history(_finished_folder(tracked))
    # each epoch's value, in the run's history and its summary; none for the trial that failed before its first
    assert sorted(runs) == ["batch_size=4096,seed=1", "batch_size=8,seed=1"] and runs["batch_size=4096,seed=1"][1] == []
    logged = runs["batch_size=8,seed=1"][1]
    assert len(logged) >= len(history) and set(logged) == {r["val_top1"] for r in history}


@pytest.mark.ray
@pytest.mark.slow
def test_wandb_logs_each_member_of_a_trial_pack_as_the_run_its_solo_trial_would_be(tracked):
    runs = _wandb_runs(tracked)
    members = {name: run for name, run in runs.items() if name.startswith("lr=")}
    assert sorted(members) == ["lr=0.001,seed=1", "lr=0.001,seed=2", "lr=1e+30,seed=1", "lr=1e+30,seed=2"]
    assert len(runs) == 2 + 4  # the solo trials' and the members': the pack itself is no run
    for data, _ in members.values():
        assert b"packs" in data and re.search(rb"grid-\d{8}-\d{6}", data)  # the project, the group
    packed = tracked["packed"]
    assert sorted(Path(r["_dir"]).name for r in packed.finished) == ["lr=0.001,seed=1", "lr=0.001,seed=2"]
    for record in packed.finished:  # each member's own values, not the pack's mean
        history, logged = read_history(record["_dir"]), members[Path(record["_dir"]).name][1]
        assert len(logged) >= len(history) and set(logged) == {r["val_top1"] for r in history}
    for record in packed.failed:  # epoch 1, then diverged in epoch 2
        (epoch_1,) = read_history(record["_dir"])
        assert set(members[Path(record["_dir"]).name][1]) == {epoch_1["val_top1"]}  # in its history and summary


def _mlflow_runs(tracked, experiment: str) -> tuple[Any, dict[str, Any]]:
    """A client of the fixture's MLflow store, and the runs of `experiment` by their names."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tracked['tmp'] / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len({run.info.run_name for run in runs}) == len(runs)  # one run per trial
    return client, {run.info.run_name: run for run in runs}


@pytest.mark.ray
@pytest.mark.slow
def test_mlflow_records_a_run_per_trial_with_each_epochs_metric(tracked):
    client, runs = _mlflow_runs(tracked, "tracked")
    assert {name: run.info.status for name, run in runs.items()} == {"batch_size=8,seed=1": "FINISHED",
                                                                      "batch_size=4096,seed=1": "FAILED"}
    finished = runs["batch_size=8,seed=1"]
    history = client.get_metric_history(finished.info.run_id, "val_top1")
    assert sorted(metric.step for metric in history) == [1, 2]
    assert finished.data.tags["invocation"].startswith("grid-")
    assert finished.data.params == {"train.batch_size": "8", "train.seed": "1"}  # its factors and seed


@pytest.mark.ray
@pytest.mark.slow
def test_mlflow_logs_each_member_of_a_trial_pack_as_a_run_that_ends_as_the_member_did(tracked):
    client, runs = _mlflow_runs(tracked, "packs")
    # the members that diverged (their records say failed) end FAILED; the pack itself is no run
    assert {name: run.info.status for name, run in runs.items()} == {
        "lr=0.001,seed=1": "FINISHED", "lr=0.001,seed=2": "FINISHED", "lr=1e+30,seed=1": "FAILED",
        "lr=1e+30,seed=2": "FAILED"}
    assert sorted(r["status"] for r in tracked["packed"].failed) == ["failed", "failed"]
    for record in tracked["packed"].failed:  # the one epoch it trained; its run ends as the pack hears of it
        run = runs[Path(record["_dir"]).name]
        assert [m.step for m in client.get_metric_history(run.info.run_id, "val_top1")] == [1]
        assert record["error"].startswith("TrainingDiverged: validation logits became NaN or inf after epoch 2")
        assert run.info.end_time < min(runs[Path(r["_dir"]).name].info.end_time for r in tracked["packed"].finished)
    # Tune's TensorBoard logger hears no NaN of a diverged member's (it would warn at every report)
    assert "NaN or Inf" not in tracked["packed_printed"]
    # the packed grid's study: each member a trial, the diverged ones failed
    (study,) = load_studies(tracked["tmp"] / "runs" / "packs")
    assert sorted((t.params["train.lr"], t.params["train.seed"], t.state.name) for t in study.trials) == [
        (0.001, 1, "COMPLETE"), (0.001, 2, "COMPLETE"), (1e30, 1, "FAIL"), (1e30, 2, "FAIL")]
    for record in tracked["packed"].finished:
        run = runs[Path(record["_dir"]).name]
        logged = sorted(client.get_metric_history(run.info.run_id, "val_top1"), key=lambda metric: metric.step)
        assert [(m.step, m.value) for m in logged] == [(r["epoch"], pytest.approx(r["val_top1"]))
                                                       for r in read_history(record["_dir"])]
        assert run.data.params == {"train.lr": "0.001", "train.seed": str(record["seed"])}
        assert run.data.tags["invocation"].startswith("grid-")


def test_a_retried_pack_keeps_its_members_mlflow_runs_and_opens_none_twice(tmp_path, monkeypatch):
    """Tune's events for a pack trial, by hand, into the MLflow callback: a member stopped at epoch 1 (its run ends
    then); an error, for which Tune ends the trial's runs failed and then retries it: the members still training go
    on in their runs, as a retried solo trial does in its one; then a member that finishes, one that diverged in
    epoch 2 (the report says so: its run ends failed then), and one absent from the reports (its run ends failed with
    the trial)."""
    from mlflow.tracking import MlflowClient
    from ray.tune.experiment import Trial

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    spec = tmp_path / "retried.yaml"
    spec.write_text("name: retried\nfactors:\n  train.lr: [0.001]\nseeds: 4\n")
    plans = plan_experiment(load_spec(spec), RunOptions(epochs=2))
    context = TrialContext(experiment="retried", budget="quick", common={}, variants={}, variant_values={},
                           packs={"pack-lr=0.001,seeds=1-4": tuple(plans)})
    (callback,) = tracker_callbacks(["mlflow"], context, "grid-1")
    callback.setup()
    trial = Trial("run_trial", config={"pack": "pack-lr=0.001,seeds=1-4"}, trial_id="t1", stub=True)
    epoch_1 = {"training_iteration": 1, "epoch": 1, "val_top1": 20.0, "member": {
        "0": {"val_top1": 10.0}, "1": {"val_top1": 20.0}, "2": {"val_top1": 30.0}, "3": {"val_top1": 40.0}},
               "ended": {"1": "stopped"}}
    epoch_2 = {"training_iteration": 2, "epoch": 2, "val_top1": 15.0, "member": {"0": {"val_top1": 15.0}},
               "ended": {"0": "finished", "2": "failed"}}
    client = MlflowClient()

    def statuses() -> dict[str, str]:
        return {run.info.run_name: run.info.status for run in client.search_runs(
            [client.get_experiment_by_name("retried").experiment_id])}

    callback.on_trial_start(0, [trial], trial)
    callback.on_trial_result(1, [trial], trial, epoch_1)
    callback.on_trial_error(2, [trial], trial)  # as Tune tells of an error it then retries
    assert set(statuses().values()) == {"FAILED", "FINISHED"}  # the stopped member's FINISHED, the others' FAILED
    callback.on_trial_start(3, [trial], trial)  # retried: the members still training go on in their own runs
    # MLflow keeps a run's end status until it ends again; the runs are the same (none opened twice, below)
    assert statuses()["lr=0.001,seed=2"] == "FINISHED"
    callback.on_trial_result(4, [trial], trial, epoch_2)
    after_epoch_2 = statuses()
    assert {name: after_epoch_2[name] for name in ("lr=0.001,seed=1", "lr=0.001,seed=3")} == {
        "lr=0.001,seed=1": "FINISHED", "lr=0.001,seed=3": "FAILED"}
    callback.on_trial_complete(5, [trial], trial)

    runs = {run.info.run_name: run for run in client.search_runs(
        [client.get_experiment_by_name("retried").experiment_id])}
    assert len(runs) == 4 and statuses()["lr=0.001,seed=4"] == "FAILED"  # no run opened twice
    logged = {name: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_top1")]
              for name, run in runs.items()}
    assert logged == {"lr=0.001,seed=1": [(1, 10.0), (2, 15.0)], "lr=0.001,seed=2": [(1, 20.0)],
                      "lr=0.001,seed=3": [(1, 30.0)], "lr=0.001,seed=4": [(1, 40.0)]}  # its own, not the mean
    assert runs["lr=0.001,seed=2"].data.params == {"train.lr": "0.001", "train.seed": "2"}
    assert runs["lr=0.001,seed=2"].data.tags["invocation"] == "grid-1"


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


def test_a_diverged_trial_is_a_warning_that_says_why(caplog):
    """A diverged trial (or a pack whose members all diverged) ends normally for Tune, with NaN metrics; the console
    says it diverged and why, not that it finished."""
    class Ended:
        trial_id, config = "t1", {}
        last_result = {"val_top1": float("nan"), DIVERGED: "TrainingDiverged: loss became nan at epoch 1, step 6: "
                                                            "lower train.lr (now 2195) or check the data"}

        def __str__(self) -> str:
            return "lr=2195,seed=1"

    progress, trial = TrialProgress(2, "val_top1"), Ended()
    with caplog.at_level(logging.INFO, logger="ablations"):
        progress.on_trial_start(0, [trial], trial)
        progress.on_trial_complete(1, [trial], trial)
    (line,) = [record for record in caplog.records if record.name == "ablations"]
    assert line.levelno == logging.WARNING
    assert re.fullmatch(r"trial lr=2195,seed=1 diverged after \d+s: TrainingDiverged: loss became nan at epoch 1, "
                        r"step 6: lower train.lr \(now 2195\) or check the data; 1/2 done \(1 failed\), about \d+s "
                        r"left", line.getMessage()), line.getMessage()


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
