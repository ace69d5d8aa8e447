"""Trial packs through Ray Tune (`--pack`): one Tune trial per pack, each member a trial folder of its own that the
runner and the analysis count like a solo trial's, skipped when finished and resumed from the pack's checkpoint."""
from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from ablations.packing import pack_size, plan_packs
from ablations.runner import RunOptions, plan_experiment, run_experiment
from ablations.spec import load_spec
from analysis.collect import collect
from mmn.folders import BEST_PREDICTIONS, BEST_WEIGHTS, HISTORY, RESULT

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
    assert (pack_size("auto", True), pack_size("auto", False), pack_size("off", True), pack_size(3, False)) == \
        (8, 1, 1, 3)


@pytest.mark.slow
def test_a_packed_experiment_writes_solo_trial_folders_and_resumes_members(ray_session, tmp_path: Path) -> None:
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
    table = collect(str(folder))
    assert sorted(table.groupby("trial_dir").first()["seed"].tolist()) == [1, 1, 2, 2]

    # A member stopped after its last checkpoint (its record not yet finished) resumes from its pack's checkpoint,
    # in a pack of its own; the finished members are skipped.
    member, record = next(iter(records.items()))
    (member / RESULT).write_text(json.dumps({**record, "status": "running"}))
    again = run_experiment(spec, options)
    assert (again.skipped, len(again.finished)) == (3, 4)
    resumed = [json.loads(p.read_text()) for p in folder.rglob(RESULT)
               if json.loads(p.read_text())["config_hash"] == record["config_hash"]]
    newest = max(resumed, key=lambda r: r["started"])
    assert newest["status"] == "finished" and newest["resumed_after_epochs"] == [2]
