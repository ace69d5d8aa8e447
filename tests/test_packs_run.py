"""Trial packs through Ray Tune (`--pack`): one Tune trial per pack, each member a trial folder of its own that the
runner and the analysis count like a solo trial's, skipped when finished and resumed from the pack's checkpoint."""
from __future__ import annotations

import json
import textwrap
from dataclasses import replace
from pathlib import Path

import optuna
import pytest

from ablations.pack_search import MemberRungs
from ablations.packing import pack_size, plan_packs
from ablations.runner import RunOptions, plan_experiment, run_experiment
from ablations.spec import load_spec
from analysis.collect import collect, load_studies
from mmn.folders import BEST_PREDICTIONS, BEST_WEIGHTS, HISTORY, RESULT
from tests.helpers.events import scalars
from tests.helpers.records import read_history

pytestmark = pytest.mark.ray

TINY_SET = {"data.synthetic_clips_per_class": 4, "model.num_frames": 16, "train.batch_size": 16}


def _spec(tmp_path: Path) -> Path:
    path = tmp_path / "packed.yaml"
    path.write_text(textwrap.dedent("""\
        name: packed
        factors:
          model.mtm: [true, false]
        reference: {model.mtm: true}
        seeds: 2
        metric: val_top1
        """))
    return path


def test_seeds_of_a_variant_share_a_pack_and_only_they(tmp_path: Path) -> None:
    plans = plan_experiment(load_spec(_spec(tmp_path)), RunOptions(epochs=1, overrides=dict(TINY_SET)))
    packs = plan_packs(plans, 2)
    assert [[m.trial_key for m in p.members] for p in packs] == [["mtm=true,seed=1", "mtm=true,seed=2"],
                                                                   ["mtm=false,seed=1", "mtm=false,seed=2"]]
    assert [p.name for p in packs] == ["pack-mtm=true,seeds=1-2", "pack-mtm=false,seeds=1-2"]
    assert len(plan_packs(plans, 8)) == 2 and len(plan_packs(plans, 1)) == 4
    # variants that differ in a per-member setting share a pack too; a pack of one seed is named by it
    rates = tmp_path / "rates.yaml"
    rates.write_text("name: rates\nfactors:\n  train.lr: [0.01, 0.02]\nseeds: 1\n")
    (pack,) = plan_packs(plan_experiment(load_spec(rates), RunOptions(epochs=1)), 2)
    assert pack.name == "pack-lr=0.01+1,seed=1" and [m.trial_key for m in pack.members] == ["lr=0.01,seed=1",
                                                                                            "lr=0.02,seed=1"]
    assert (pack_size("auto", True), pack_size("auto", False), pack_size("off", True), pack_size(3, False)) == \
        (8, 1, 1, 3)


@pytest.mark.slow
def test_a_packed_experiment_writes_solo_trial_folders_and_resumes_members(ray_session, tmp_path: Path,
                                                                          monkeypatch) -> None:
    spec = load_spec(_spec(tmp_path))
    options = RunOptions(storage=str(tmp_path / "runs"), epochs=2, overrides=dict(TINY_SET), pack=2)
    outcome = run_experiment(spec, options)
    assert (outcome.planned, len(outcome.finished), len(outcome.failed)) == (4, 4, 0)

    folder = tmp_path / "runs" / "packed"
    records = {p.parent: json.loads(p.read_text()) for p in folder.rglob(RESULT)}
    assert len(records) == 4
    for member, record in records.items():
        assert member.parent.name == record["pack"]["name"]  # inside its pack's Tune trial folder
        assert record["pack"]["name"] == f"pack-{record['variant_key']},seeds=1-2"
        assert {RESULT, HISTORY, BEST_WEIGHTS, BEST_PREDICTIONS} <= {p.name for p in member.iterdir()}
        assert record["status"] == "finished" and record["epochs_completed"] == 2
        # its own TensorBoard file, as a solo trial's, with its own epochs
        (events,) = member.glob("events.out.tfevents.*")
        history = read_history(member)
        assert scalars(events)["ray/tune/val_top1"] == [(r["epoch"], pytest.approx(r["val_top1"])) for r in history]
        # and Tune hears it: each member's metrics in its pack's results, by its place in the pack
        place = record["pack"]["members"].index(member.name)
        reported = [json.loads(line) for line in (member.parent / "result.json").read_text().splitlines()]
        assert [r["member"][str(place)]["val_top1"] for r in reported] == \
            pytest.approx([r["val_top1"] for r in history])
    table = collect(str(folder))
    assert sorted(table.groupby("trial_dir").first()["seed"].tolist()) == [1, 1, 2, 2]
    # The invocation's Optuna study holds the members as a solo run's holds its trials: the factors and the seed as
    # parameters, each member's own last value (optuna-dashboard and the report's importances read these).
    (study,) = load_studies(folder)
    last = {(r["variant"]["model.mtm"], r["seed"]): read_history(m)[-1]
            for m, r in records.items()}
    told = {(t.params["model.mtm"], t.params["train.seed"]): t.value for t in study.trials
            if t.state == optuna.trial.TrialState.COMPLETE}
    assert told == {key: pytest.approx(history["val_top1"]) for key, history in last.items()} and len(study.trials) == 4

    # Members stopped after their last checkpoint (the driver died before their records said finished) resume from
    # their pack's checkpoint, in a pack again, with nothing left to train; the finished members are skipped. Their
    # values still reach the rerun's study and their MLflow runs (no epoch reports them: the pack's last report does).
    stopped = {member: record for member, record in records.items() if record["variant_key"] == "mtm=true"}
    for member, record in stopped.items():
        (member / RESULT).write_text(json.dumps({**record, "status": "running"}))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    again = run_experiment(spec, replace(options, log=("mlflow",)))
    assert (again.skipped, len(again.finished)) == (2, 4)
    hashes = {record["config_hash"] for record in stopped.values()}
    resumed = [r for r in map(json.loads, (p.read_text() for p in folder.rglob(RESULT)))
               if r["config_hash"] in hashes and r["started"] > max(s["started"] for s in stopped.values())]
    assert sorted((r["seed"], r["status"], r["resumed_after_epochs"]) for r in resumed) == [
        (1, "finished", [2]), (2, "finished", [2])]
    rerun = max(load_studies(folder), key=lambda study: study.study_name)  # the rerun's: the members it resumed
    by_seed = sorted(rerun.trials, key=lambda trial: trial.params["train.seed"])
    assert [(t.state, t.params["train.seed"], t.value) for t in by_seed] == [
        (optuna.trial.TrialState.COMPLETE, r["seed"], pytest.approx(r["final"]["val_top1"]))
        for r in sorted(stopped.values(), key=lambda r: r["seed"])]
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("packed").experiment_id])
    assert sorted((run.info.run_name, run.info.status, run.data.metrics["val_top1"]) for run in runs) == [
        (member.name, "FINISHED", pytest.approx(record["final"]["val_top1"]))
        for member, record in sorted(stopped.items(), key=lambda item: item[0].name)]


@pytest.mark.slow
def test_tuning_samples_train_in_packs_and_asha_stops_single_members(ray_session, tmp_path: Path,
                                                                     monkeypatch) -> None:
    """A variant's tuning samples, asked of the constant-liar TPE K at a time, train as one pack; each member's value
    reaches its Optuna trial; ASHA's rungs stop members one by one, as its rule says for the values they reached;
    each sample is an MLflow run of its own, as it would be unpacked."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    path = tmp_path / "tuned.yaml"
    path.write_text(textwrap.dedent("""\
        name: tuned
        factors:
          model.mtm: [true]
        seeds: 1
        metric: train_loss
        search: {space: regularisation, samples: 4, scheduler: {type: asha, grace_period: 1, reduction_factor: 2}}
        """))
    outcome = run_experiment(load_spec(path), RunOptions(storage=str(tmp_path / "runs"), epochs=2,
                                                         overrides=dict(TINY_SET), pack=4, log=("mlflow",)))
    assert len(outcome.finished) == 1 and not outcome.failed  # the best configuration's final run

    folder = tmp_path / "runs" / "tuned"
    members = sorted(((p.parent, json.loads(p.read_text())) for p in folder.rglob(RESULT)
                      if json.loads(p.read_text())["search"]["phase"] == "tune"),
                     key=lambda item: int(item[0].name.rsplit("=", 1)[1]))
    assert [m.name for m, _ in members] == [f"mtm=true,sample={n}" for n in range(4)]
    assert {m.parent.name for m, _ in members} == {"pack-mtm=true,samples=0+1+2+3"}  # one pack, one Tune trial

    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(
        str(folder / "study.journal")))
    study = optuna.load_study(study_name="tuned/tune/mtm=true", storage=storage)
    rungs = MemberRungs(epochs=2, grace_period=1, reduction_factor=2, mode="min")
    stopped_at = {}
    for epoch in (1, 2):  # the rungs' rule, replayed in the order the pack asked: member order
        for number, (member, record) in enumerate(members):
            history = read_history(member)
            if number not in stopped_at and len(history) >= epoch and not rungs.keep(epoch,
                                                                                    history[epoch - 1]["train_loss"]):
                stopped_at[number] = epoch
    assert stopped_at, "no member was stopped"
    for number, (member, record) in enumerate(members):
        trial = study.trials[number]
        assert trial.state == optuna.trial.TrialState.COMPLETE
        assert trial.value == record["final"]["train_loss"]  # its own value, not the pack's mean
        assert trial.params == pytest.approx(record["search"]["sampled"])
        if number in stopped_at:
            assert (record["status"], record["stopped_after_epoch"], record["epochs_completed"]) == \
                ("stopped", stopped_at[number], stopped_at[number])
        else:
            assert (record["status"], record["epochs_completed"]) == ("finished", 2)
    (final,) = outcome.finished
    assert final["search"]["sampled"] == pytest.approx(study.best_trial.params)

    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    experiment = client.get_experiment_by_name("tuned").experiment_id
    runs = {run.info.run_name: run for run in client.search_runs([experiment])}
    assert sorted(runs) == sorted([m.name for m, _ in members] + ["mtm=true,seed=1"])  # the pack itself is no run
    for number, (member, record) in enumerate(members):
        run = runs[member.name]
        assert run.info.status == "FINISHED"  # a stopped member's too, as a stopped solo trial's run
        logged = client.get_metric_history(run.info.run_id, "train_loss")
        assert len(logged) == record["epochs_completed"] and run.data.params["variant_key"] == "mtm=true"
        assert {key: float(run.data.params[key]) for key in record["search"]["sampled"]} == \
            pytest.approx(record["search"]["sampled"])


# A user module (--import) that makes the first epoch 2 recorded under `marker`'s folder raise an I/O error once, as a
# flaky disk would: Tune retries the trial (max_failures).
_FLAKY_DISK = """\
import errno
from pathlib import Path

import mmn.train

MARKER = Path({marker!r})
record_epoch = mmn.train._Trial.end_epoch


def end_epoch(self, epoch, *args, **kwargs):
    if epoch == 2 and MARKER.parent in Path(self.out_dir).parents and not MARKER.exists():
        MARKER.touch()
        raise OSError(errno.EIO, "injected I/O error")
    return record_epoch(self, epoch, *args, **kwargs)


mmn.train._Trial.end_epoch = end_epoch
"""


@pytest.mark.slow
def test_a_pack_retried_after_an_error_trains_its_members_on(ray_session, tmp_path: Path) -> None:
    """An error fails the members still training, as it fails a solo trial; Tune retries the pack, and they resume
    from its last checkpoint instead of counting as ended (only a diverged member stays failed)."""
    flaky = tmp_path / "flaky_disk.py"
    flaky.write_text(_FLAKY_DISK.format(marker=str(tmp_path / "runs" / "io-error-raised")))
    spec = tmp_path / "one.yaml"
    spec.write_text("name: one\nfactors:\n  model.mtm: [true]\nseeds: 2\n")
    smallest = {"model.embed_dim": 16, "model.depth": 1, "model.num_scales": 1, "data.synthetic_clips_per_class": 1,
                "model.num_frames": 8, "train.batch_size": 8}
    outcome = run_experiment(load_spec(spec), RunOptions(storage=str(tmp_path / "runs"), epochs=3, pack=2,
                                                         overrides=smallest, max_failures=1, imports=(str(flaky),)))
    assert (tmp_path / "runs" / "io-error-raised").exists()  # the error happened
    assert (len(outcome.finished), len(outcome.failed)) == (2, 0)
    for record in outcome.finished:
        assert record["resumed_after_epochs"] == [1] and len(read_history(record["_dir"])) == 3
