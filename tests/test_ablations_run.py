"""The ablation engine on a real Ray instance with real Optuna studies, on tiny budgets."""
from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pyarrow.fs as pafs
import pytest
import ray

from ablations import run as ablations_run
from ablations.runner import RunOptions, run_experiment, scan_results
from ablations.spec import load_spec
from ablations.storage import locate
from ablations.trainable import EarlyStopped
from mmn.config import DataConfig
from mmn.folders import RESULT
from mmn.provenance import data_fingerprint, git_state
from tests.helpers.processes import trial_workers
from tests.helpers.records import live_paths

pytestmark = pytest.mark.ray  # every test here runs trials on the session's Ray instance

TINY_SET = {"data.synthetic_clips_per_class": 4, "model.num_frames": 16, "train.batch_size": 16}


def _spec(tmp_path: Path) -> Path:
    path = tmp_path / "mini.yaml"
    path.write_text(textwrap.dedent("""\
        name: mini
        description: MTM on and off, tiny.
        factors:
          model.mtm: {values: [true, false], label: MTM}
        reference: {model.mtm: true}
        seeds: 1
        metric: val_top1
        """))
    return path


def _results(folder: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in folder.rglob(RESULT)]


def test_experiment_runs_records_everything_and_a_rerun_skips_finished_trials(ray_session, tmp_path):
    spec = load_spec(_spec(tmp_path))
    options = RunOptions(storage=str(tmp_path / "runs"), epochs=1, overrides=dict(TINY_SET))
    environment, level = dict(os.environ), logging.getLogger("ray.tune.analysis.experiment_analysis").level
    outcome = run_experiment(spec, options)
    # A notebook that runs an experiment is left as it was: no environment variable or logger level changed.
    assert dict(os.environ) == environment
    assert logging.getLogger("ray.tune.analysis.experiment_analysis").level == level
    assert (outcome.planned, outcome.skipped, len(outcome.finished), len(outcome.failed)) == (2, 0, 2, 0)
    folder = tmp_path / "runs" / "mini"
    experiment = json.loads((folder / "experiment.json").read_text())
    assert experiment["format_version"] == 1 and experiment["reference"] == {"model.mtm": True}
    assert experiment["variants"] == [{"model.mtm": True}, {"model.mtm": False}]
    record = outcome.finished[0]
    for key in ("config", "config_hash", "final", "best", "params", "gflops", "throughput", "seed", "versions",
                "hardware", "wall_time_s", "variant", "trial_id", "resources", "code_fingerprint", "data_fingerprint",
                "provenance"):
        assert record.get(key) is not None, key
    assert record["epochs_completed"] == 1 and record["variant"] in ({"model.mtm": True}, {"model.mtm": False})
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(folder / "study.journal")))
    (name,) = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    assert name.startswith("mini/grid-")
    study = optuna.load_study(study_name=name, storage=storage)
    # The factors and the seed are the study's parameters; each planned trial ran once.
    assert sorted((t.params["model.mtm"], t.params["train.seed"]) for t in study.trials) == [(False, 1), (True, 1)]

    # A rerun with one more seed runs only the new trials: nothing finished is repeated or lost.
    again = run_experiment(spec, RunOptions(storage=str(tmp_path / "runs"), epochs=1, seeds=[1, 2],
                                            overrides=dict(TINY_SET)))
    assert (again.planned, again.skipped, len(again.finished)) == (4, 2, 4)
    finished = [r for r in _results(folder) if r["status"] == "finished"]
    assert len(finished) == 4 and len({r["config_hash"] for r in finished}) == 4
    rerun = optuna.load_study(study_name=max(optuna.get_all_study_names(storage)), storage=storage)
    assert sorted((t.params["model.mtm"], t.params["train.seed"]) for t in rerun.trials) == [(False, 2), (True, 2)]


def test_killed_trial_worker_is_retried_from_its_checkpoint(ray_session, tmp_path):
    """SIGKILL the process running a trial after its first epoch: Ray retries it and it resumes, ending with the
    planned epochs, each trained once."""
    spec_path = tmp_path / "one.yaml"
    spec_path.write_text("name: one\nfactors:\n  model.mtm: [true]\nseeds: 1\n")
    address = ray_session.get_runtime_context().gcs_address
    sets = [arg for key, value in TINY_SET.items() for arg in ("--set", f"{key}={value}")]
    driver = subprocess.Popen(
        [sys.executable, "-m", "ablations.run", str(spec_path), "--storage", str(tmp_path / "runs"), "--epochs", "4",
         "--address", address, *sets], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    folder = tmp_path / "runs" / "one"
    deadline = time.time() + 240
    while time.time() < deadline and not live_paths(folder, "checkpoint_*"):
        time.sleep(0.5)
    assert live_paths(folder, "checkpoint_*"), "no checkpoint appeared"
    workers = trial_workers()  # this session's only: other Ray instances on the machine are left alone
    assert workers, "no trial process found"
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    output, _ = driver.communicate(timeout=300)
    assert driver.returncode == 0, output[-3000:]
    (record,) = _results(folder)
    assert record["status"] == "finished" and record["epochs_completed"] == 4
    assert record["resumed_after_epochs"], "the retried trial started over instead of resuming"
    history = [json.loads(line) for line in next(folder.rglob("history.jsonl")).read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]


def test_tuning_gives_every_variant_the_same_budget_then_reruns_the_best(ray_session, tmp_path):
    path = tmp_path / "tiny_tune.yaml"
    path.write_text(textwrap.dedent("""\
        name: tiny_tune
        factors:
          model.mtm: {values: [true, false]}
        seeds: 1
        search: {space: regularisation, samples: 2, scheduler: {type: asha, grace_period: 1}}
        """))
    outcome = run_experiment(load_spec(path), RunOptions(storage=str(tmp_path / "runs"), epochs=1,
                                                         overrides=dict(TINY_SET)))
    records = scan_results(locate(str(tmp_path / "runs"), "tiny_tune"))
    phases = [r["search"]["phase"] for r in records.values() if r.get("search")]
    assert phases.count("tune") == 4 and phases.count("final") == 2
    # ASHA stops every trial on hearing its last epoch (max_t): each record says finished all the same
    assert {(r["status"], r["epochs_completed"]) for r in records.values()} == {("finished", 1)}
    assert len(outcome.finished) == 2
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(tmp_path / "runs" / "tiny_tune" / "study.journal")))
    names = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
    assert names[0].startswith("tiny_tune/final-") and names[1:] == ["tiny_tune/tune/mtm=false",
                                                                      "tiny_tune/tune/mtm=true"]
    for final in outcome.finished:
        tuned = optuna.load_study(study_name=f"tiny_tune/tune/{final['variant_key']}", storage=storage)
        for key, value in tuned.best_trial.params.items():
            section, name = key.split(".")
            assert final["config"][section][name] == pytest.approx(value)


def test_a_trial_the_scheduler_stopped_is_marked_stopped_and_others_are_left_alone(tmp_path):
    """Tune completes a trial that ASHA stopped inside its report, with its record still `running`: the callback
    marks it; a finished or failed record is not touched."""
    storage = SimpleNamespace(storage_filesystem=pafs.LocalFileSystem(), trial_fs_path=str(tmp_path))
    for status, after in (("running", "stopped"), ("finished", "finished"), ("failed", "failed")):
        (tmp_path / RESULT).write_text(json.dumps({"status": status, "epochs_completed": 3}))
        EarlyStopped().on_trial_complete(0, [], SimpleNamespace(storage=storage))
        record = json.loads((tmp_path / RESULT).read_text())
        assert record["status"] == after
        assert record.get("stopped_after_epoch") == (3 if after == "stopped" else None)


def _reports_five_epochs(config: dict) -> None:
    """A trial writing its record as ours does: `running` with each epoch before reporting it, then `finished`."""
    from ablations.trainable import _result_dir  # on an object store: the worker's folder that Ray uploads

    folder = _result_dir()
    for epoch in range(1, 6):
        (folder / RESULT).write_text(json.dumps({"status": "running", "epochs_completed": epoch}))
        ray.tune.report({"epoch": epoch})
    (folder / RESULT).write_text(json.dumps({"status": "finished", "epochs_completed": 5}))


def test_a_trial_stopped_early_on_an_object_store_is_marked_after_its_last_upload(ray_session, tmp_path):
    """On an object store a stopped trial's worker uploads its folder, `running` record included, after the driver
    heard the trial end; the callback marks the record when the Tune invocation ends, so it stays marked. The
    storage is a pyarrow filesystem that is not the local one, as s3:// is."""
    (tmp_path / "bucket").mkdir()
    bucket = pafs.SubTreeFileSystem(str(tmp_path / "bucket"), pafs.LocalFileSystem())
    callback = EarlyStopped()
    tuner = ray.tune.Tuner(_reports_five_epochs, run_config=ray.tune.RunConfig(
        storage_path="runs", storage_filesystem=bucket, name="exp", stop={"training_iteration": 2},
        callbacks=[callback], verbose=0))
    (result,) = tuner.fit()
    with bucket.open_input_stream(f"{result.path}/{RESULT}") as stream:
        record = json.loads(stream.read())
    assert (record["status"], record["stopped_after_epoch"]) == ("stopped", 2) and callback.remote == []


@pytest.mark.slow
def test_paper_run_without_gpus_says_it_trains_on_cpu_and_records_what_it_was_given(ray_session, tmp_path, capsys,
                                                                                       monkeypatch):
    """The session's Ray has no GPUs: a paper trial asks for none, the run says in one line that it trains on CPU
    and roughly how long an epoch takes, and the result records the resources, fingerprints and provenance."""
    monkeypatch.setattr(ablations_run, "_report", lambda outcome: None)
    spec = tmp_path / "one.yaml"
    spec.write_text("name: one\nfactors:\n  model.mtm: [true]\nseeds: 1\n")
    tiny = {"model.embed_dim": 16, "model.depth": 1, "model.num_scales": 1, "data.synthetic_clips_per_class": 1,
            "model.num_frames": 8, "train.batch_size": 8}
    sets = [arg for key, value in tiny.items() for arg in ("--set", f"{key}={value}")]
    assert ablations_run.main([str(spec), "--budget", "paper", "--storage", str(tmp_path / "runs"), "--epochs", "1",
                               *sets]) == 0
    (line,) = [line for line in capsys.readouterr().err.splitlines() if "trains on CPU" in line]
    assert re.fullmatch(r"\[ablations\] the cluster has no GPUs: each trial trains on CPU \(1 CPU\); one epoch "
                        r"takes roughly \d+ s \(52 train and 104 val clips at [\d.]+ train clips/s on 1 thread, "
                        r"timed here\); to wait for GPU workers that an autoscaler starts, pass --gpus-per-trial",
                        line), line
    (record,) = _results(tmp_path / "runs" / "one")
    assert record["status"] == "finished"
    assert record["resources"] == {"cpu": 1, "gpu": 0, "gpu_ids": []} and record["hardware"]["device"] == "cpu"
    assert record["data_fingerprint"] == data_fingerprint(DataConfig(synthetic_clips_per_class=1))
    assert re.fullmatch(r"[0-9a-f]{16}", record["code_fingerprint"])
    provenance = record["provenance"]
    assert provenance["command"] == sys.argv  # the driver's command line (pytest's here), not the Ray worker's
    assert provenance.get("git") == git_state()  # a commit and whether the tree is dirty, in a checkout
    assert provenance["gpu"] is None
    versions = provenance["versions"]
    assert (versions["ray"], versions["optuna"]) == (ray.__version__, optuna.__version__)
    assert {"python", "torch", "cuda", "cudnn", "numpy"} <= set(versions)


def test_a_variant_whose_tuning_samples_all_failed_stops_the_run_saying_what_to_do() -> None:
    from ablations.runner import TuningFailed, best_sample

    study = optuna.create_study(direction="maximize")
    for _ in range(3):  # diverged: told failed (ablations.pack_search, Ray's OptunaSearch on a NaN metric)
        study.tell(study.ask({"train.lr": optuna.distributions.FloatDistribution(1e3, 1e5)}),
                   state=optuna.trial.TrialState.FAIL)
    with pytest.raises(TuningFailed, match=r"^tuning mtm=true: none of its samples finished \(3 failed: they diverged "
                                           r"or errored, and their records say why\); narrow search space 'hot' "
                                           r"\(a lower train.lr range, say\) or check the data, then rerun"):
        best_sample(study, "mtm=true", "hot")
    trial = study.ask({"train.lr": optuna.distributions.FloatDistribution(1e3, 1e5)})
    study.tell(trial, 12.5)
    assert best_sample(study, "mtm=true", "hot") == trial.params
