"""The pack searchers (planned packs; the tuning phase's) and ASHA's rungs for pack members (ablations.pack_search),
on a real Optuna study; packs through Ray are in tests/test_packs_run.py."""
from __future__ import annotations

import json
import math

import optuna
import pytest
from ray.tune.search import Searcher

from ablations.pack_search import MemberRungs, PackSearch, PlannedPackSearch, fail_abandoned, liar_sampler
from ablations.packing import plan_packs
from ablations.runner import (ABANDONED, RunOptions, _interrupted_message, _PlannedOnly, abandon_records,
                             plan_experiment)
from ablations.storage import locate
from ablations.spec import load_spec
from ablations.trainable import MEMBER_VALUES, PACK, SAMPLES, TrialContext, _ended
from mmn.folders import RESULT
from search_spaces import load_search_space

KEY = "mtm=true"
CONTEXT = TrialContext(experiment="t", budget="quick", common={"train.epochs": 2, "train.warmup_epochs": 0},
                       variants={KEY: {"model.mtm": True}}, variant_values={KEY: {"model.mtm": True}}, tune_seed=0)


def _search(study: optuna.Study, samples: int, size: int) -> PackSearch:
    return PackSearch(study, load_search_space("tune"), KEY, samples, size, CONTEXT, "val_top1", "max")


def test_every_sample_is_handed_out_once_in_packs_of_one_shape() -> None:
    study = optuna.create_study(direction="maximize", sampler=liar_sampler(3))
    search = _search(study, samples=7, size=3)
    packs = []
    while (config := search.suggest(f"trial{len(packs)}")) != Searcher.FINISHED:
        packs.append(config)
    numbers = [sample["number"] for pack in packs for sample in pack[SAMPLES]]
    assert sorted(numbers) == list(range(7))
    for pack in packs:
        assert 1 <= len(pack[SAMPLES]) <= 3
        # the `tune` space samples the width: only samples of one width share a pack
        assert len({sample["params"]["model.embed_dim"] for sample in pack[SAMPLES]}) == 1
        assert pack["pack"] == f"pack-{KEY},samples=" + "+".join(str(s["number"]) for s in pack[SAMPLES])
    assert all(trial.state == optuna.trial.TrialState.RUNNING for trial in study.trials)

    first = [sample["number"] for sample in packs[0][SAMPLES]]
    values = [61.5, math.nan, 40.0][:len(first)]  # NaN: the report leaves the member out (it diverged)
    # the pack's last report, flattened as Tune hands it to a searcher
    search.on_trial_complete("trial0", {f"{MEMBER_VALUES}/{place}": value for place, value in enumerate(values)
                                        if not math.isnan(value)})
    for number, value in zip(first, values):
        trial = study.trials[number]
        if math.isnan(value):
            assert trial.state == optuna.trial.TrialState.FAIL
        else:
            assert (trial.state, trial.value) == (optuna.trial.TrialState.COMPLETE, value)
    search.on_trial_complete("trial1", None, error=True)  # a pack that failed as a whole: its members failed
    assert {study.trials[s["number"]].state for s in packs[1][SAMPLES]} == {optuna.trial.TrialState.FAIL}


def test_a_member_is_told_its_value_as_soon_as_a_report_says_it_ended() -> None:
    """A sample that ASHA's rungs stop (or that diverges) is told at once, while its pack trains on: an interrupted
    run then leaves it complete in the study, not running (a rerun would count it failed and sample it again)."""
    study = optuna.create_study(direction="maximize", sampler=liar_sampler(3))
    search = PackSearch(study, load_search_space("regularisation"), KEY, 3, 3, CONTEXT, "val_top1", "max")
    pack = search.suggest("pack")  # the regularisation space samples no shape: one pack of three
    assert [sample["number"] for sample in pack[SAMPLES]] == [0, 1, 2]
    # epoch 2's report, as Tune hands it to a searcher (flattened): member 1 stopped, member 2 diverged
    search.on_trial_result("pack", {"ended/1": "stopped", "ended/2": "failed", f"{MEMBER_VALUES}/0": 50.0,
                                    f"{MEMBER_VALUES}/1": 31.0})
    assert [(t.state.name, t.value) for t in study.trials] == [("RUNNING", None), ("COMPLETE", 31.0), ("FAIL", None)]
    search.on_trial_complete("pack", {"ended/0": "finished", f"{MEMBER_VALUES}/0": 55.0, f"{MEMBER_VALUES}/1": 31.0})
    assert [(t.state.name, t.value) for t in study.trials] == [("COMPLETE", 55.0), ("COMPLETE", 31.0),
                                                              ("FAIL", None)]  # each told once


def test_planned_packs_keep_a_trial_per_member_in_the_study(tmp_path) -> None:
    """Each member is an Optuna trial with its factors and seed while its pack trains, then told its own value; a
    member that diverged (NaN) or a pack that failed as a whole: failed."""
    spec = tmp_path / "s.yaml"
    spec.write_text("name: s\nfactors:\n  model.mtm: [true, false]\nseeds: 2\n")
    packs = plan_packs(plan_experiment(load_spec(spec), RunOptions(epochs=1)), 2)
    study = optuna.create_study(direction="maximize", sampler=_PlannedOnly())
    search = PlannedPackSearch(study, packs, "val_top1", "max")
    assert [search.suggest("a"), search.suggest("b"), search.suggest("c")] == \
        [{PACK: "pack-mtm=true,seeds=1-2"}, {PACK: "pack-mtm=false,seeds=1-2"}, Searcher.FINISHED]
    assert [(t.state, t.params) for t in study.trials] == [
        (optuna.trial.TrialState.RUNNING, {"model.mtm": mtm, "train.seed": seed})
        for mtm in (True, False) for seed in (1, 2)]
    search.on_trial_complete("a", {f"{MEMBER_VALUES}/0": 55.0})  # (flattened, as Tune hands it) the second diverged
    search.on_trial_complete("b", None, error=True)
    assert [(t.state.name, t.value) for t in study.trials] == [("COMPLETE", 55.0), ("FAIL", None), ("FAIL", None),
                                                              ("FAIL", None)]


def test_samples_left_running_by_an_interrupted_run_count_as_failed() -> None:
    study = optuna.create_study(direction="maximize", sampler=liar_sampler(3))
    search = _search(study, samples=2, size=2)
    search.suggest("lost")  # the driver died: its samples stay RUNNING in the journal
    assert fail_abandoned(study) == 2 and fail_abandoned(study) == 0
    assert {t.state for t in study.trials} == {optuna.trial.TrialState.FAIL}


def test_rungs_keep_the_best_share_of_what_reached_them_before() -> None:
    rungs = MemberRungs(epochs=8, grace_period=1, reduction_factor=2, mode="max")
    assert list(rungs.recorded) == [1, 2, 4]  # a rung at the last epoch would stop nothing
    assert rungs.keep(1, 50.0)  # the first at a rung always goes on
    assert not rungs.keep(1, 40.0)  # below the median of [50]
    assert rungs.keep(1, 45.0)  # the median of [50, 40] is 45: within the best half
    assert not rungs.keep(1, math.nan)
    assert rungs.keep(3, 0.0) and rungs.keep(8, 0.0)  # not rungs
    lowest = MemberRungs(epochs=4, grace_period=1, reduction_factor=3, mode="min")
    assert list(lowest.recorded) == [1, 3]
    assert lowest.keep(3, 2.0) and lowest.keep(3, 3.0) is False
    # the best third for a loss: at most the 33.3rd percentile, 2.333 of [2, 3], then 2.2 of [2, 3, 2.3]
    assert lowest.keep(3, 2.3) and not lowest.keep(3, 2.4)


@pytest.mark.parametrize("epochs, expected", [(1, []), (2, [1]), (9, [1, 2, 4, 8])])
def test_rungs_lie_below_the_last_epoch(epochs: int, expected: list[int]) -> None:
    assert list(MemberRungs(epochs, 1, 2, "max").recorded) == expected


def test_a_retried_pack_leaves_members_that_stopped_or_diverged_as_they_ended(tmp_path) -> None:
    assert _ended(tmp_path, "val_top1") is None  # no record yet: it trains
    diverged = "TrainingDiverged: loss became nan at epoch 2, step 3: lower train.lr (now 1e+30) or ..."
    for status, error, expected in (("running", None, None), ("finished", None, None), ("stopped", None, 41.5),
                                    ("failed", diverged, "nan"),
                                    ("failed", "OSError: [Errno 5] Input/output error", None)):  # failed with its pack
        (tmp_path / RESULT).write_text(json.dumps({"status": status, "error": error, "final": {"val_top1": 41.5}}))
        value = _ended(tmp_path, "val_top1")
        assert (math.isnan(value) if expected == "nan" else value == expected), (status, error)


def test_a_rerun_says_in_their_records_that_abandoned_tuning_samples_failed(tmp_path) -> None:
    trials = {"a": ("running", "tune", "mtm=true"), "b": ("running", "tune", "mtm=false"),
              "c": ("finished", "tune", "mtm=true"), "d": ("running", None, "mtm=true")}
    for name, (status, phase, key) in trials.items():
        (tmp_path / "tuned" / name).mkdir(parents=True)
        (tmp_path / "tuned" / name / RESULT).write_text(json.dumps({
            "config_hash": name, "status": status, "search": {"phase": phase} if phase else None, "variant_key": key}))
    assert abandon_records(locate(str(tmp_path), "tuned"), "mtm=true") == 1
    records = {name: json.loads((tmp_path / "tuned" / name / RESULT).read_text()) for name in trials}
    assert (records["a"]["status"], records["a"]["error"]) == ("failed", ABANDONED)
    assert "_dir" not in records["a"] and records["a"]["variant_key"] == "mtm=true"
    # another variant's sample (tuned later), a finished one and a planned trial (resumed, not replaced) stay
    assert [records[name]["status"] for name in "bcd"] == ["running", "finished", "running"]


def test_an_interrupted_tuning_run_says_its_unfinished_samples_are_replaced_not_resumed(tmp_path) -> None:
    trials = {"a": ("finished", "tune"), "b": ("stopped", "tune"), "c": ("running", "tune"), "d": ("running", None)}
    for name, (status, phase) in trials.items():
        (tmp_path / "tuned" / name).mkdir(parents=True)
        search = {"phase": phase} if phase else None
        (tmp_path / "tuned" / name / RESULT).write_text(json.dumps({"config_hash": name, "status": status,
                                                                      "search": search}))
    assert _interrupted_message(locate(str(tmp_path), "tuned")) == (
        "interrupted: 1 finished trials kept (and 1 that ASHA stopped); 0 will resume from their last checkpoint, 1 "
        "will start over, 1 tuning samples will be replaced by new ones; rerun the same command (or with --resume)")
