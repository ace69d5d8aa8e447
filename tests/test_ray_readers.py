"""Our folders as Ray Tune and Optuna read them: ExperimentAnalysis on a real run folder (our record has its own
name, so Ray's result.json is Ray's), the factors and seed as Optuna parameters and Tune config, trial folders named
by their planned key; the journal published to remote storage; our readers on folders of older versions."""
from __future__ import annotations

import json
import textwrap
import warnings
from pathlib import Path

import optuna
import pyarrow.fs as pafs
import pytest
from ray.tune import ExperimentAnalysis

from ablations import runner
from ablations.runner import RunOptions, run_experiment, scan_results
from ablations.spec import load_spec
from ablations.storage import Location, locate
from analysis.collect import collect, load_studies
from mmn.folders import LEGACY_RESULT, RESULT, STUDY
from tests.helpers.experiment_factory import make_experiment

TINY = {"model.embed_dim": 16, "model.depth": 1, "model.num_scales": 1, "data.synthetic_clips_per_class": 1,
        "model.num_frames": 8, "train.batch_size": 8}
PLANNED = ["msm=off,mtm=true,seed=1", "msm=released,mtm=false,seed=1", "msm=released,mtm=true,seed=1"]


@pytest.fixture(scope="module")
def experiment(ray_session, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """msm_mtm less one excluded variant (the plan is a subset of the grid), one seed, one epoch, a tiny model."""
    root = tmp_path_factory.mktemp("readers")
    (root / "readers.yaml").write_text(textwrap.dedent("""\
        name: readers
        factors:
          model.msm: {values: [released, "off"]}
          model.mtm: {values: [true, false]}
        exclude: [{model.msm: "off", model.mtm: false}]
        seeds: 1
        metric: val_top1
        """))
    outcome = run_experiment(load_spec(root / "readers.yaml"),
                             RunOptions(storage=str(root / "runs"), epochs=1, overrides=dict(TINY)))
    assert (outcome.planned, len(outcome.finished)) == (3, 3)
    return root / "runs" / "readers"


@pytest.mark.ray
@pytest.mark.slow
def test_experiment_analysis_reads_a_run_folder(experiment: Path) -> None:
    (run,) = experiment.glob("grid-*")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Ray says nothing of unreadable files
        frame = ExperimentAnalysis(str(run)).dataframe()
    assert len(frame) == 3 and frame["val_top1"].notna().all() and (frame["epoch"] == 1).all()
    settings = sorted(zip(frame["config/model.msm"], frame["config/model.mtm"], frame["config/train.seed"]))
    assert settings == [("off", True, 1), ("released", False, 1), ("released", True, 1)]
    # Trial folders are named by their planned key; each holds Ray's files and our record, apart.
    assert sorted(p.name for p in run.iterdir() if p.is_dir()) == PLANNED
    for folder in (run / key for key in PLANNED):
        reports = [json.loads(line) for line in (folder / LEGACY_RESULT).read_text().splitlines()]
        assert [r["epoch"] for r in reports] == [1] and "config_hash" not in reports[0]
        assert (folder / "progress.csv").is_file()
        record = json.loads((folder / RESULT).read_text())
        assert f"{record['variant_key']},seed={record['seed']}" == folder.name
        assert json.loads((folder / "params.json").read_text()) == {**record["variant"], "train.seed": 1}


@pytest.mark.ray
@pytest.mark.slow
def test_factors_and_seed_are_the_study_parameters(experiment: Path) -> None:
    (study,) = load_studies(experiment)  # as our report reads it
    assert study.study_name.startswith("readers/grid-")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3
    params = sorted((t.params["model.msm"], t.params["model.mtm"], t.params["train.seed"]) for t in study.trials)
    assert params == [("off", True, 1), ("released", False, 1), ("released", True, 1)]  # each planned one once
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # equal scores (a one-epoch run): "importances will be equal"
        importances = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.PedAnovaImportanceEvaluator())
    assert {"model.msm", "model.mtm"} <= set(importances) <= {"model.msm", "model.mtm", "train.seed"}
    # Ray's result.json beside each record is not mistaken for one: three trials, none unreadable.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        summary = collect(experiment).query("row == 'summary'")
    assert sorted(summary["status"]) == ["finished"] * 3


def test_trial_folder_names_are_safe_and_unique() -> None:
    assert runner._folder_name("msm=off,mtm=true,seed=1", "ab12_00001") == "msm=off,mtm=true,seed=1"
    assert runner._folder_name("data.root=/d/x,seed=1", "ab12_00001") == "data.root=_d_x,seed=1_ab12_00001"
    long = runner._folder_name("x" * 300, "ab12_00001")
    assert long == "x" * 160 + "_ab12_00001"


def _remote(tmp_path: Path) -> Location:
    """An experiment folder on a filesystem that is not the local one (as s3:// is), stored under tmp_path."""
    (tmp_path / "bucket" / "runs" / "exp").mkdir(parents=True)  # the runner wrote experiment.json there first
    filesystem = pafs.SubTreeFileSystem(str(tmp_path / "bucket"), pafs.LocalFileSystem())
    return Location(filesystem, "runs/exp", "bucket://runs/exp")


def test_journal_is_published_to_remote_storage_after_each_tune_invocation(tmp_path: Path, monkeypatch) -> None:
    """The journal is written locally while running (runs/<name>/ here) and copied to the storage when the Tune
    invocation ends, also when it fails; a report read from the storage has the studies."""
    experiment = _remote(tmp_path)
    monkeypatch.chdir(tmp_path)

    def fit_then_fail(*args: object) -> None:
        study = optuna.create_study(study_name="exp/grid-1", storage=runner._journal(experiment))
        study.enqueue_trial({"model.mtm": True})
        raise RuntimeError("the Tune invocation failed")

    monkeypatch.setattr(runner, "_fit", fit_then_fail)
    with pytest.raises(RuntimeError, match="failed"):
        runner._tune(None, None, 1, None, None, experiment, "grid-1")
    published = tmp_path / "bucket" / "runs" / "exp" / STUDY
    assert published.read_bytes() == (tmp_path / "runs" / "exp" / STUDY).read_bytes()
    (study,) = load_studies(published.parent)
    assert study.study_name == "exp/grid-1" and study.trials[0].state == optuna.trial.TrialState.WAITING


def test_a_rerun_elsewhere_starts_from_the_published_journal(tmp_path: Path, monkeypatch) -> None:
    """Without a local journal (another machine, a cleaned working folder), the storage's copy is fetched first, so
    publishing again keeps the earlier studies."""
    experiment = _remote(tmp_path)
    monkeypatch.chdir(tmp_path)
    optuna.create_study(study_name="exp/grid-1", storage=runner._journal(experiment))
    runner._publish_journal(experiment)
    (tmp_path / "runs" / "exp" / STUDY).unlink()
    optuna.create_study(study_name="exp/grid-2", storage=runner._journal(experiment))
    runner._publish_journal(experiment)
    studies = load_studies(tmp_path / "bucket" / "runs" / "exp")
    assert [study.study_name for study in studies] == ["exp/grid-1", "exp/grid-2"]


def test_runner_reads_records_of_old_folders(tmp_path: Path) -> None:
    """A rerun or `python -m ablations.evaluate` over folders written when our record was result.json finds every
    trial; a new folder's result.json is Ray's."""
    make_experiment(tmp_path, seeds=(0, 1), legacy=True)
    make_experiment(tmp_path, seeds=(2,), run=1)
    records = scan_results(locate(str(tmp_path), "msm_mtm"))
    assert len(records) == 4 * 3 and sorted({r["seed"] for r in records.values()}) == [0, 1, 2]
